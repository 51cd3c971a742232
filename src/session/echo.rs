//! `/echo`: every text and binary message back, unchanged. Echoes wait in
//! the session's bounded queue like any outbound frame, so a client that
//! sends and does not read is a slow consumer like any other.

use bytes::Bytes;
use bytestring::ByteString;

use super::{Core, Endpoint};
use crate::outbox::OutFrame;

pub struct Echo;

impl Endpoint for Echo {
    const NAME: &'static str = "/echo";

    fn text(&mut self, core: &mut Core, text: ByteString) {
        core.send(OutFrame::Text(text));
    }

    fn binary(&mut self, core: &mut Core, data: Bytes) {
        core.send(OutFrame::Binary(data));
    }
}
