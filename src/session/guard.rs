//! Enforces `max_message_bytes` from frame headers, before payloads are
//! buffered.
//!
//! actix-http's WebSocket parser checks a frame's length only once the whole
//! frame is in memory, so a client announcing a 1 GiB frame could make the
//! server buffer 1 GiB. [`FrameGuard`] sits between the request payload and
//! the WebSocket decoder, reads each frame header as the bytes pass (it never
//! copies or changes them), adds up the lengths of a message's fragments,
//! and fails the stream as soon as a message is announced larger than the
//! limit. The session sees the failure through [`Tripped`] and closes 1009.
//! It also turns a connection that ended (EOF or reset) into a plain end of
//! stream, which the session treats as the client having gone.

use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use actix_web::error::PayloadError;
use bytes::Bytes;
use futures_core::Stream;

/// Set when the guard refused a message; shared with the session actor.
#[derive(Clone, Default)]
pub struct Tripped(Rc<Cell<bool>>);

impl Tripped {
    pub fn get(&self) -> bool {
        self.0.get()
    }
}

/// Reads WebSocket frame headers out of a byte stream.
struct HeaderScanner {
    limit: u64,
    header: [u8; 14],
    have: usize,
    /// Payload bytes of the current frame still to pass.
    skip: u64,
    /// Length so far of the data message being received.
    message: u64,
}

impl HeaderScanner {
    fn new(limit: usize) -> Self {
        HeaderScanner { limit: limit as u64, header: [0; 14], have: 0, skip: 0, message: 0 }
    }

    /// Returns false once a message is over the limit.
    fn scan(&mut self, mut chunk: &[u8]) -> bool {
        while !chunk.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(chunk.len() as u64);
                self.skip -= n;
                chunk = &chunk[n as usize..];
                continue;
            }
            self.header[self.have] = chunk[0];
            self.have += 1;
            chunk = &chunk[1..];
            if self.have < 2 || self.have < header_len(self.header[1]) {
                continue;
            }
            self.have = 0;
            if !self.frame(self.header[0], payload_len(&self.header)) {
                return false;
            }
        }
        true
    }

    fn frame(&mut self, first: u8, len: u64) -> bool {
        let fin = first & 0x80 != 0;
        let opcode = first & 0x0F;
        self.skip = len;
        if opcode >= 0x8 {
            // Control frames (<= 125 bytes, checked by the decoder) may
            // come between fragments and are no part of the message.
            return true;
        }
        if opcode != 0x0 {
            self.message = 0;
        }
        self.message = self.message.saturating_add(len);
        if self.message > self.limit {
            return false;
        }
        if fin {
            self.message = 0;
        }
        true
    }
}

/// Header length from its second byte: 2, plus 2 or 8 extended length
/// bytes, plus the 4-byte mask when the mask bit is set.
fn header_len(second: u8) -> usize {
    let extended = match second & 0x7F {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    2 + extended + if second & 0x80 != 0 { 4 } else { 0 }
}

fn payload_len(header: &[u8; 14]) -> u64 {
    match header[1] & 0x7F {
        126 => u64::from(u16::from_be_bytes([header[2], header[3]])),
        127 => {
            u64::from_be_bytes([header[2], header[3], header[4], header[5], header[6], header[7], header[8], header[9]])
        }
        len => u64::from(len),
    }
}

/// Wraps the request payload of a WebSocket connection.
pub struct FrameGuard<S> {
    inner: S,
    scanner: HeaderScanner,
    tripped: Tripped,
}

impl<S> FrameGuard<S> {
    pub fn new(inner: S, limit: usize) -> (Self, Tripped) {
        let tripped = Tripped::default();
        (FrameGuard { inner, scanner: HeaderScanner::new(limit), tripped: tripped.clone() }, tripped)
    }
}

impl<S> Stream for FrameGuard<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.tripped.get() {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) if !this.scanner.scan(&chunk) => {
                this.tripped.0.set(true);
                Poll::Ready(Some(Err(PayloadError::Overflow)))
            }
            // The client went away (EOF or reset): the end of the stream, not
            // a protocol error to answer with a close frame.
            Poll::Ready(Some(Err(PayloadError::Incomplete(_) | PayloadError::Io(_)))) => Poll::Ready(None),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame header (mask key zero; payload not included).
    fn header(fin: bool, opcode: u8, len: u64) -> Vec<u8> {
        let mut h = vec![if fin { 0x80 } else { 0 } | opcode];
        match len {
            0..=125 => h.push(0x80 | len as u8),
            126..=0xFFFF => {
                h.push(0x80 | 126);
                h.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                h.push(0x80 | 127);
                h.extend_from_slice(&len.to_be_bytes());
            }
        }
        h.extend_from_slice(&[0, 0, 0, 0]);
        h
    }

    fn frame(fin: bool, opcode: u8, len: usize) -> Vec<u8> {
        let mut f = header(fin, opcode, len as u64);
        f.extend(std::iter::repeat_n(b'x', len));
        f
    }

    #[test]
    fn exactly_the_limit_passes_one_more_byte_fails() {
        let mut s = HeaderScanner::new(300);
        assert!(s.scan(&frame(true, 1, 300)));
        assert!(!HeaderScanner::new(300).scan(&frame(true, 2, 301)));
    }

    #[test]
    fn refuses_on_the_header_alone() {
        let mut s = HeaderScanner::new(65536);
        assert!(!s.scan(&header(true, 2, 1 << 40)));
    }

    #[test]
    fn fragments_add_up_and_control_frames_do_not_count() {
        let mut stream = Vec::new();
        stream.extend(frame(false, 1, 60));
        stream.extend(frame(true, 9, 100));
        stream.extend(frame(false, 0, 40));
        stream.extend(frame(true, 0, 0));
        stream.extend(frame(true, 1, 100));
        // Byte by byte, to cross every boundary.
        let mut s = HeaderScanner::new(100);
        assert!(stream.chunks(1).all(|c| s.scan(c)));
        stream.extend(frame(false, 2, 60));
        stream.extend(frame(true, 0, 41));
        let mut s = HeaderScanner::new(100);
        assert!(!stream.chunks(7).all(|c| s.scan(c)));
    }
}
