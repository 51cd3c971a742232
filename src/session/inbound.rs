//! A session's input: the connection's bytes in, whole messages and control
//! frames out.
//!
//! It reads only as fast as its session handles what it yields: bytes are
//! taken from the connection when no whole frame is left to decode (so what
//! waits here is at most one frame and one chunk), and not at all while the
//! session's requests to the registry are past their bound. Every frame
//! header is scanned as the bytes arrive (see `scan`), so an oversized
//! message is refused from its header.
//!
//! Once the session is closing (a close was asked for on its handle, or the
//! input itself found the client at fault), the input discards: no payload
//! is kept or decoded, and the client's close frame (seen by the scanner)
//! ends the stream. A closing session thus keeps reading, which keeps Linux
//! from resetting the connection (and destroying the close frame on its
//! way) when the client's last frames arrive.

use std::borrow::Cow;
use std::pin::Pin;
use std::task::{Context, Poll};

use actix_http::ws::{CloseReason, OpCode, Parser, ProtocolError};
use actix_web::error::PayloadError;
use bytes::{Bytes, BytesMut};
use futures_core::Stream;

use super::assemble::{Assembler, Fragment, Message};
use super::scan::HeaderScanner;
use crate::outbox::SessionHandle;
use crate::protocol::close;

/// What the client sent.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound {
    Message(Message),
    Ping(Bytes),
    Pong,
    /// The client's close frame, with its code and reason when it gave one
    /// (`None` as well when it came while discarding).
    Close(Option<CloseReason>),
    /// The client broke the protocol: close with this code and reason.
    Fail(u16, Cow<'static, str>),
}

pub struct InboundStream<S> {
    payload: S,
    handle: SessionHandle,
    scanner: HeaderScanner,
    assembler: Assembler,
    limit: usize,
    /// Received and scanned, not yet decoded.
    buf: BytesMut,
    /// The input found the client at fault: decode nothing more.
    failed: bool,
    ended: bool,
}

impl<S> InboundStream<S> {
    pub fn new(payload: S, handle: SessionHandle, limit: usize) -> Self {
        InboundStream {
            payload,
            handle,
            scanner: HeaderScanner::new(limit),
            assembler: Assembler::new(limit),
            limit,
            buf: BytesMut::new(),
            failed: false,
            ended: false,
        }
    }

    fn discarding(&self) -> bool {
        self.failed || self.handle.close_request().is_some()
    }

    fn fail(&mut self, code: u16, reason: impl Into<Cow<'static, str>>) -> Inbound {
        self.failed = true;
        Inbound::Fail(code, reason.into())
    }

    /// The next whole message or control frame in `buf`, if there is one.
    fn decode(&mut self) -> Option<Inbound> {
        loop {
            // A control frame over 125 bytes is a protocol error whatever
            // the size limit; the parser would call it too big.
            if let [first, second, ..] = self.buf[..]
                && first & 0x08 != 0
                && second & 0x7F > 125
            {
                return Some(self.fail(close::PROTOCOL_ERROR, "control frame over 125 bytes"));
            }
            // Control frames may carry 125 bytes whatever the limit (the
            // assembler holds data messages to it).
            let (fin, opcode, payload) = match Parser::parse(&mut self.buf, true, self.limit.max(125)) {
                Ok(Some(frame)) => frame,
                Ok(None) => return None,
                Err(error) => {
                    let (code, reason) = refusal(error);
                    return Some(self.fail(code, reason));
                }
            };
            let payload = payload.map(BytesMut::freeze).unwrap_or_default();
            let fragment = match opcode {
                OpCode::Text => Fragment::Text,
                OpCode::Binary => Fragment::Binary,
                OpCode::Continue => Fragment::Continuation,
                OpCode::Ping | OpCode::Pong | OpCode::Close if !fin => {
                    return Some(self.fail(close::PROTOCOL_ERROR, "fragmented control frame"));
                }
                OpCode::Ping => return Some(Inbound::Ping(payload)),
                OpCode::Pong => return Some(Inbound::Pong),
                OpCode::Close => {
                    return Some(match close_reason(&payload) {
                        Ok(reason) => {
                            self.ended = true;
                            Inbound::Close(reason)
                        }
                        Err((code, reason)) => self.fail(code, reason),
                    });
                }
                OpCode::Bad => return Some(self.fail(close::PROTOCOL_ERROR, "unknown opcode")),
            };
            match self.assembler.push(fragment, fin, payload) {
                Ok(Some(message)) => return Some(Inbound::Message(message)),
                Ok(None) => {}
                Err(error) => {
                    let (code, reason) = error.close();
                    return Some(self.fail(code, reason));
                }
            }
        }
    }
}

impl<S> Stream for InboundStream<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    type Item = Inbound;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Inbound>> {
        let this = self.get_mut();
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            let discarding = this.discarding();
            if discarding {
                if !this.buf.is_empty() {
                    this.buf = BytesMut::new();
                }
                if this.scanner.saw_close() {
                    this.ended = true;
                    return Poll::Ready(Some(Inbound::Close(None)));
                }
            } else {
                if this.handle.poll_input_ready(cx).is_pending() {
                    return Poll::Pending;
                }
                if let Some(item) = this.decode() {
                    return Poll::Ready(Some(item));
                }
                // No whole frame is left, and the next one is too big.
                if this.scanner.over_limit() {
                    return Poll::Ready(Some(this.fail(close::TOO_BIG, "message too big")));
                }
            }
            match Pin::new(&mut this.payload).poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    this.scanner.scan(&chunk);
                    if !discarding {
                        this.buf.extend_from_slice(&chunk);
                    }
                }
                // The client went away (EOF or reset): the end of the
                // stream, not a protocol error to answer with a close frame.
                Poll::Ready(Some(Err(_)) | None) => {
                    this.ended = true;
                    return Poll::Ready(None);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// The close code and reason for a frame the parser refused.
fn refusal(error: ProtocolError) -> (u16, Cow<'static, str>) {
    match error {
        ProtocolError::Overflow => (close::TOO_BIG, "message too big".into()),
        ProtocolError::UnmaskedFrame => (close::PROTOCOL_ERROR, "frames from a client must be masked".into()),
        ProtocolError::InvalidOpcode(opcode) => (close::PROTOCOL_ERROR, format!("unknown opcode {opcode}").into()),
        ProtocolError::InvalidLength(len) => {
            (close::PROTOCOL_ERROR, format!("control frame of {len} bytes (at most 125)").into())
        }
        // actix-http reports set reserved bits as an I/O error.
        ProtocolError::Io(_) => (close::PROTOCOL_ERROR, "reserved bits set, but no extension was agreed".into()),
        other => (close::PROTOCOL_ERROR, other.to_string().into()),
    }
}

/// The code and reason of a close frame, or why it is invalid (RFC 6455
/// §5.5.1, §7.4).
fn close_reason(payload: &[u8]) -> Result<Option<CloseReason>, (u16, Cow<'static, str>)> {
    match payload {
        [] => Ok(None),
        [_] => Err((close::PROTOCOL_ERROR, "close frame with a 1-byte payload".into())),
        [high, low, reason @ ..] => {
            let code = u16::from_be_bytes([*high, *low]);
            if !matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999) {
                return Err((close::PROTOCOL_ERROR, format!("invalid close code {code}").into()));
            }
            let reason = std::str::from_utf8(reason)
                .map_err(|_| (close::INVALID_DATA, Cow::from("invalid UTF-8 in the close reason")))?;
            let description = (!reason.is_empty()).then(|| reason.to_string());
            Ok(Some(CloseReason { code: code.into(), description }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::{CloseRequest, OutboundLimits};
    use crate::protocol::SessionId;
    use crate::session::scan::tests::frame;
    use futures_util::StreamExt;

    /// Everything the stream yields for `bytes` delivered in `chunk`-byte
    /// pieces, with discarding switched on after `discard_after` items.
    fn read(bytes: &[u8], chunk: usize, discard_after: Option<usize>) -> Vec<Inbound> {
        let chunks: Vec<Result<Bytes, PayloadError>> =
            bytes.chunks(chunk).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        let limits = OutboundLimits { frames: 10, bytes: 1000, stall_ms: 1000 };
        let handle = SessionHandle::new(SessionId(1), limits, None);
        let mut stream = InboundStream::new(futures_util::stream::iter(chunks), handle.clone(), 100);
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        runtime.block_on(async {
            let mut items = Vec::new();
            while let Some(item) = stream.next().await {
                items.push(item);
                if Some(items.len()) == discard_after {
                    handle.request_close(CloseRequest::cause(1000));
                }
            }
            items
        })
    }

    fn text(s: &str) -> Inbound {
        Inbound::Message(Message::Text(s.into()))
    }

    #[test]
    fn messages_and_control_frames() {
        let mut bytes = frame(false, 1, b"he");
        bytes.extend(frame(true, 9, b"ping"));
        bytes.extend(frame(true, 0, b"llo"));
        bytes.extend(frame(true, 2, &[1, 2]));
        bytes.extend(frame(true, 8, &[0x03, 0xe8, b'o', b'k']));
        bytes.extend(frame(true, 1, b"after the close"));
        for chunk in [1, 3, 1000] {
            let items = read(&bytes, chunk, None);
            assert_eq!(items.len(), 4, "{items:?}");
            assert_eq!(items[0], Inbound::Ping(Bytes::from_static(b"ping")));
            assert_eq!(items[1], text("hello"));
            assert_eq!(items[2], Inbound::Message(Message::Binary(Bytes::from_static(&[1, 2]))));
            let Inbound::Close(Some(reason)) = &items[3] else { panic!("{:?}", items[3]) };
            assert_eq!((u16::from(reason.code), reason.description.as_deref()), (1000, Some("ok")));
        }
    }

    #[test]
    fn an_oversized_message_fails_after_what_came_before_and_then_discards() {
        let mut bytes = frame(true, 1, b"fine");
        bytes.extend(frame(false, 1, &[b'a'; 60]));
        bytes.extend(frame(false, 0, &[b'a'; 60]));
        bytes.extend(frame(true, 0, &[b'a'; 60]));
        bytes.extend(frame(true, 1, b"discarded"));
        bytes.extend(frame(true, 8, &1000u16.to_be_bytes()));
        for chunk in [1, 7, 1000] {
            let items = read(&bytes, chunk, None);
            assert_eq!(items[0], text("fine"), "{chunk}");
            assert_eq!(items[1], Inbound::Fail(1009, "message too big".into()), "{chunk}");
            assert_eq!(items[2], Inbound::Close(None), "{chunk}: the client's close ends the discarding");
            assert_eq!(items.len(), 3);
        }
    }

    #[test]
    fn discarding_waits_for_the_close_frame_only() {
        let mut bytes = frame(true, 1, b"one");
        bytes.extend(frame(true, 1, b"two"));
        bytes.extend(frame(true, 9, b""));
        bytes.extend(frame(true, 8, b""));
        let items = read(&bytes, 1000, Some(1));
        assert_eq!(items, vec![text("one"), Inbound::Close(None)]);
        // Without a close frame the stream ends with the connection.
        let items = read(&frame(true, 1, b"one"), 1000, Some(1));
        assert_eq!(items, vec![text("one")]);
    }

    #[test]
    fn every_refusal_has_its_code_and_reason() {
        let mut reserved = frame(true, 1, b"x");
        reserved[0] |= 0x40;
        let mut unmasked = frame(true, 1, b"x");
        unmasked[1] &= 0x7F;
        unmasked.drain(2..6);
        let cases: Vec<(Vec<u8>, u16, &str)> = vec![
            (unmasked, 1002, "masked"),
            (reserved, 1002, "reserved bits"),
            (frame(true, 3, b""), 1002, "unknown opcode 3"),
            (frame(false, 9, b""), 1002, "fragmented control frame"),
            (frame(true, 9, &[0; 126]), 1002, "control frame over 125 bytes"),
            (frame(true, 8, &[0; 300]), 1002, "control frame over 125 bytes"),
            (frame(true, 0, b"x"), 1002, "no message to continue"),
            (frame(true, 8, &[3]), 1002, "1-byte payload"),
            (frame(true, 8, &1005u16.to_be_bytes()), 1002, "invalid close code 1005"),
            (frame(true, 8, &[0x03, 0xe8, 0xff]), 1007, "invalid UTF-8 in the close reason"),
            (frame(true, 1, &[0xff]), 1007, "invalid UTF-8"),
            (frame(true, 2, &[0; 101]), 1009, "message too big"),
        ];
        for (bytes, code, reason) in cases {
            let items = read(&bytes, 1000, None);
            match items.first() {
                Some(Inbound::Fail(c, r)) => assert!(*c == code && r.contains(reason), "{reason}: {c} {r}"),
                other => panic!("{reason}: {other:?}"),
            }
        }
    }
}
