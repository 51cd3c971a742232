//! Joins continuation frames into whole messages.
//!
//! actix-web-actors hands fragments over one by one; the protocol's limits
//! apply to whole messages. UTF-8 is checked as fragments arrive, so a text
//! message that can no longer become valid fails at once (RFC 6455 §8.1).

use actix_http::ws::Item;
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;

/// A whole data message.
#[derive(Debug, PartialEq, Eq)]
pub enum Message {
    Text(ByteString),
    Binary(Bytes),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssembleError {
    /// Larger than the limit: close 1009.
    TooBig,
    /// Not UTF-8 in a text message: close 1007.
    InvalidUtf8,
    /// Fragments out of order: close 1002.
    OutOfOrder,
}

pub struct Assembler {
    limit: usize,
    /// `Some(is_text)` while a fragmented message is open.
    open: Option<bool>,
    buf: BytesMut,
    /// Bytes at the start of `buf` known to be valid UTF-8.
    valid_utf8: usize,
}

impl Assembler {
    pub fn new(limit: usize) -> Self {
        Assembler { limit, open: None, buf: BytesMut::new(), valid_utf8: 0 }
    }

    /// Takes one fragment; returns the message once its last fragment is in.
    pub fn push(&mut self, item: Item) -> Result<Option<Message>, AssembleError> {
        let (data, last) = match item {
            Item::FirstText(_) | Item::FirstBinary(_) if self.open.is_some() => {
                return Err(AssembleError::OutOfOrder);
            }
            Item::FirstText(data) => {
                self.open = Some(true);
                (data, false)
            }
            Item::FirstBinary(data) => {
                self.open = Some(false);
                (data, false)
            }
            Item::Continue(_) | Item::Last(_) if self.open.is_none() => {
                return Err(AssembleError::OutOfOrder);
            }
            Item::Continue(data) => (data, false),
            Item::Last(data) => (data, true),
        };
        if self.buf.len() + data.len() > self.limit {
            return Err(AssembleError::TooBig);
        }
        self.buf.extend_from_slice(&data);
        let is_text = self.open == Some(true);
        if is_text {
            self.check_utf8(last)?;
        }
        if !last {
            return Ok(None);
        }
        self.open = None;
        self.valid_utf8 = 0;
        let whole = self.buf.split().freeze();
        Ok(Some(if is_text {
            Message::Text(ByteString::try_from(whole).map_err(|_| AssembleError::InvalidUtf8)?)
        } else {
            Message::Binary(whole)
        }))
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

    fn b(s: &[u8]) -> Bytes {
        Bytes::copy_from_slice(s)
    }

    #[test]
    fn joins_text_split_inside_a_character() {
        let mut a = Assembler::new(100);
        let euro = "€".as_bytes();
        assert_eq!(a.push(Item::FirstText(b(&euro[..1]))), Ok(None));
        assert_eq!(a.push(Item::Continue(b(&euro[1..2]))), Ok(None));
        assert_eq!(a.push(Item::Last(b(&euro[2..]))), Ok(Some(Message::Text("€".into()))));
        // and is ready for the next message
        assert_eq!(a.push(Item::FirstBinary(b(&[0xff]))), Ok(None));
        assert_eq!(a.push(Item::Last(b(&[0xfe]))), Ok(Some(Message::Binary(b(&[0xff, 0xfe])))));
    }

    #[test]
    fn invalid_utf8_fails_on_the_fragment_that_breaks_it() {
        let mut a = Assembler::new(100);
        assert_eq!(a.push(Item::FirstText(b(b"ok"))), Ok(None));
        assert_eq!(a.push(Item::Continue(b(&[0xf4, 0x90]))), Err(AssembleError::InvalidUtf8));
    }

    #[test]
    fn truncated_character_at_the_end_is_invalid() {
        let mut a = Assembler::new(100);
        assert_eq!(a.push(Item::FirstText(b(b"ok"))), Ok(None));
        assert_eq!(a.push(Item::Last(b(&[0xe2, 0x82]))), Err(AssembleError::InvalidUtf8));
    }

    #[test]
    fn limit_applies_to_the_whole_message() {
        let mut a = Assembler::new(4);
        assert_eq!(a.push(Item::FirstBinary(b(b"12"))), Ok(None));
        assert_eq!(a.push(Item::Last(b(b"34"))), Ok(Some(Message::Binary(b(b"1234")))));
        assert_eq!(a.push(Item::FirstBinary(b(b"123"))), Ok(None));
        assert_eq!(a.push(Item::Last(b(b"45"))), Err(AssembleError::TooBig));
    }

    #[test]
    fn out_of_order_fragments() {
        let mut a = Assembler::new(10);
        assert_eq!(a.push(Item::Continue(b(b"x"))), Err(AssembleError::OutOfOrder));
        assert_eq!(a.push(Item::FirstText(b(b"x"))), Ok(None));
        assert_eq!(a.push(Item::FirstText(b(b"x"))), Err(AssembleError::OutOfOrder));
    }
}
