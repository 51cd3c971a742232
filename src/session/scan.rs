//! Reads WebSocket frame headers as a connection's bytes arrive, before
//! anything is buffered or decoded.
//!
//! actix-http's frame parser checks a frame's length only once the whole
//! frame is in memory, so a client announcing a 1 GiB frame could make the
//! server buffer 1 GiB. The scanner sees every header as it passes, adds up
//! the lengths of a message's fragments, and reports a message announced
//! larger than the limit at once. It also notices the client's close frame,
//! which a session that is closing waits for without decoding anything
//! else.

pub struct HeaderScanner {
    limit: u64,
    header: [u8; 14],
    have: usize,
    /// Payload bytes of the current frame still to pass.
    skip: u64,
    /// Length so far of the data message being received.
    message: u64,
    /// A message was announced larger than the limit.
    over_limit: bool,
    /// A close frame's header went by.
    saw_close: bool,
}

impl HeaderScanner {
    pub fn new(limit: usize) -> Self {
        HeaderScanner {
            limit: limit as u64,
            header: [0; 14],
            have: 0,
            skip: 0,
            message: 0,
            over_limit: false,
            saw_close: false,
        }
    }

    /// Follows the frame boundaries through `chunk`.
    pub fn scan(&mut self, mut chunk: &[u8]) {
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
            self.frame(self.header[0], payload_len(&self.header));
        }
    }

    pub fn over_limit(&self) -> bool {
        self.over_limit
    }

    pub fn saw_close(&self) -> bool {
        self.saw_close
    }

    fn frame(&mut self, first: u8, len: u64) {
        let fin = first & 0x80 != 0;
        let opcode = first & 0x0F;
        self.skip = len;
        if opcode >= 0x8 {
            // Control frames (<= 125 bytes, checked by the decoder) may
            // come between fragments and are no part of the message.
            self.saw_close |= opcode == 0x8;
            return;
        }
        if opcode != 0x0 {
            self.message = 0;
        }
        self.message = self.message.saturating_add(len);
        self.over_limit |= self.message > self.limit;
        if fin {
            self.message = 0;
        }
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A masked client frame header (mask key zero; payload not included).
    pub fn header(fin: bool, opcode: u8, len: u64) -> Vec<u8> {
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

    /// A whole masked frame (mask key zero, so the payload reads as is).
    pub fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = header(fin, opcode, payload.len() as u64);
        f.extend_from_slice(payload);
        f
    }

    fn scanned(limit: usize, bytes: &[u8], chunk: usize) -> HeaderScanner {
        let mut s = HeaderScanner::new(limit);
        bytes.chunks(chunk).for_each(|c| s.scan(c));
        s
    }

    #[test]
    fn exactly_the_limit_passes_one_more_byte_fails() {
        assert!(!scanned(300, &frame(true, 1, &[b'x'; 300]), 1000).over_limit());
        assert!(scanned(300, &frame(true, 2, &[b'x'; 301]), 1000).over_limit());
    }

    #[test]
    fn refuses_on_the_header_alone() {
        assert!(scanned(65536, &header(true, 2, 1 << 40), 1000).over_limit());
    }

    #[test]
    fn fragments_add_up_and_control_frames_do_not_count() {
        let mut stream = Vec::new();
        stream.extend(frame(false, 1, &[b'x'; 60]));
        stream.extend(frame(true, 9, &[b'p'; 100]));
        stream.extend(frame(false, 0, &[b'x'; 40]));
        stream.extend(frame(true, 0, b""));
        stream.extend(frame(true, 1, &[b'x'; 100]));
        // Byte by byte, to cross every boundary.
        let s = scanned(100, &stream, 1);
        assert!(!s.over_limit() && !s.saw_close());
        stream.extend(frame(false, 2, &[b'x'; 60]));
        stream.extend(frame(true, 0, &[b'x'; 41]));
        stream.extend(frame(true, 8, &1000u16.to_be_bytes()));
        let s = scanned(100, &stream, 7);
        assert!(s.over_limit());
        assert!(s.saw_close(), "frames after the oversized one are still followed");
    }
}
