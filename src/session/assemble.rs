//! Joins data frames into whole messages.
//!
//! The protocol's limits apply to whole messages. UTF-8 is checked as
//! fragments arrive, so a text message that can no longer become valid
//! fails at once (RFC 6455 §8.1). A message in one frame is passed on
//! without a copy.

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;

/// A whole data message.
#[derive(Debug, PartialEq, Eq)]
pub enum Message {
    Text(ByteString),
    Binary(Bytes),
}

/// Which data frame: the first of a message, or a continuation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fragment {
    Text,
    Binary,
    Continuation,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssembleError {
    /// Larger than the limit: close 1009.
    TooBig,
    /// Not UTF-8 in a text message: close 1007.
    InvalidUtf8,
    /// A continuation frame with no message to continue: close 1002.
    NothingToContinue,
    /// A new message began before the last one finished: close 1002.
    Unfinished,
}

impl AssembleError {
    /// The close code and reason this error calls for.
    pub fn close(self) -> (u16, &'static str) {
        use crate::protocol::close;
        match self {
            AssembleError::TooBig => (close::TOO_BIG, "message too big"),
            AssembleError::InvalidUtf8 => (close::INVALID_DATA, "invalid UTF-8 in a text message"),
            AssembleError::NothingToContinue => {
                (close::PROTOCOL_ERROR, "continuation frame with no message to continue")
            }
            AssembleError::Unfinished => (close::PROTOCOL_ERROR, "new message before the last one finished"),
        }
    }
}

pub struct Assembler {
    limit: usize,
    /// `Some(is_text)` while a fragmented message is open.
    open: Option<bool>,
    buf: BytesMut,
    /// Bytes at the start of `buf` known to be valid UTF-8.
    valid_utf8: usize,
}

fn text(data: Bytes) -> Result<Message, AssembleError> {
    ByteString::try_from(data).map(Message::Text).map_err(|_| AssembleError::InvalidUtf8)
}

impl Assembler {
    pub fn new(limit: usize) -> Self {
        Assembler { limit, open: None, buf: BytesMut::new(), valid_utf8: 0 }
    }

    /// Takes one data frame; returns the message once its last frame is in.
    pub fn push(&mut self, fragment: Fragment, fin: bool, data: Bytes) -> Result<Option<Message>, AssembleError> {
        let is_text = match (fragment, self.open) {
            (Fragment::Continuation, None) => return Err(AssembleError::NothingToContinue),
            (Fragment::Continuation, Some(is_text)) => is_text,
            (_, Some(_)) => return Err(AssembleError::Unfinished),
            (Fragment::Text | Fragment::Binary, None) if data.len() > self.limit => return Err(AssembleError::TooBig),
            (Fragment::Text, None) if fin => return text(data).map(Some),
            (Fragment::Binary, None) if fin => return Ok(Some(Message::Binary(data))),
            (fragment, None) => {
                let is_text = fragment == Fragment::Text;
                self.open = Some(is_text);
                is_text
            }
        };
        if self.buf.len() + data.len() > self.limit {
            return Err(AssembleError::TooBig);
        }
        self.buf.extend_from_slice(&data);
        if is_text {
            self.check_utf8(fin)?;
        }
        if !fin {
            return Ok(None);
        }
        self.open = None;
        self.valid_utf8 = 0;
        let whole = self.buf.split().freeze();
        if is_text { text(whole).map(Some) } else { Ok(Some(Message::Binary(whole))) }
    }

    fn check_utf8(&mut self, last: bool) -> Result<(), AssembleError> {
        match std::str::from_utf8(&self.buf[self.valid_utf8..]) {
            Ok(_) => self.valid_utf8 = self.buf.len(),
            // A sequence cut at the end of a fragment may still complete.
            Err(e) if e.error_len().is_none() && !last => self.valid_utf8 += e.valid_up_to(),
            Err(_) => return Err(AssembleError::InvalidUtf8),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Fragment::{Binary, Continuation, Text};

    fn b(s: &[u8]) -> Bytes {
        Bytes::copy_from_slice(s)
    }

    #[test]
    fn joins_text_split_inside_a_character() {
        let mut a = Assembler::new(100);
        let euro = "€".as_bytes();
        assert_eq!(a.push(Text, false, b(&euro[..1])), Ok(None));
        assert_eq!(a.push(Continuation, false, b(&euro[1..2])), Ok(None));
        assert_eq!(a.push(Continuation, true, b(&euro[2..])), Ok(Some(Message::Text("€".into()))));
        // and is ready for the next message
        assert_eq!(a.push(Binary, false, b(&[0xff])), Ok(None));
        assert_eq!(a.push(Continuation, true, b(&[0xfe])), Ok(Some(Message::Binary(b(&[0xff, 0xfe])))));
        assert_eq!(a.push(Text, true, b(b"whole")), Ok(Some(Message::Text("whole".into()))));
    }

    #[test]
    fn invalid_utf8_fails_on_the_fragment_that_breaks_it() {
        let mut a = Assembler::new(100);
        assert_eq!(a.push(Text, false, b(b"ok")), Ok(None));
        assert_eq!(a.push(Continuation, false, b(&[0xf4, 0x90])), Err(AssembleError::InvalidUtf8));
        assert_eq!(Assembler::new(9).push(Text, true, b(&[0xff])), Err(AssembleError::InvalidUtf8));
    }

    #[test]
    fn truncated_character_at_the_end_is_invalid() {
        let mut a = Assembler::new(100);
        assert_eq!(a.push(Text, false, b(b"ok")), Ok(None));
        assert_eq!(a.push(Continuation, true, b(&[0xe2, 0x82])), Err(AssembleError::InvalidUtf8));
    }

    #[test]
    fn limit_applies_to_the_whole_message() {
        let mut a = Assembler::new(4);
        assert_eq!(a.push(Binary, false, b(b"12")), Ok(None));
        assert_eq!(a.push(Continuation, true, b(b"34")), Ok(Some(Message::Binary(b(b"1234")))));
        assert_eq!(a.push(Binary, false, b(b"123")), Ok(None));
        assert_eq!(a.push(Continuation, true, b(b"45")), Err(AssembleError::TooBig));
        assert_eq!(Assembler::new(4).push(Text, true, b(b"12345")), Err(AssembleError::TooBig));
    }

    #[test]
    fn out_of_order_fragments() {
        let mut a = Assembler::new(10);
        assert_eq!(a.push(Continuation, true, b(b"x")), Err(AssembleError::NothingToContinue));
        assert_eq!(a.push(Text, false, b(b"x")), Ok(None));
        assert_eq!(a.push(Text, true, b(b"x")), Err(AssembleError::Unfinished));
    }
}
