//! `/echo`: every text and binary message back, unchanged.

use bytes::Bytes;
use bytestring::ByteString;

use super::{Core, Endpoint, WsContext};

pub struct Echo;

impl Endpoint for Echo {
    const NAME: &'static str = "/echo";

    fn text(&mut self, core: &mut Core, text: ByteString, ctx: &mut WsContext<Self>) {
        core.reply(ctx, text);
    }

    fn binary(&mut self, core: &mut Core, data: Bytes, ctx: &mut WsContext<Self>) {
        core.reply_binary(ctx, data);
    }
}
