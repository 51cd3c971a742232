//! `/ws`: the JSON room protocol. Parses and rate-limits requests, answers
//! `ping` itself, and hands everything else to the registry.

use actix::Addr;
use bytes::Bytes;
use bytestring::ByteString;

use super::ratelimit::TokenBucket;
use super::{Core, Endpoint, WsContext};
use crate::metrics::Metrics;
use crate::protocol::ErrorCode;
use crate::protocol::frame;
use crate::protocol::request::{self, Request, RequestKind};
use crate::registry::Registry;
use crate::registry::messages::{Command, Disconnect};

pub struct JsonRoom {
    registry: Addr<Registry>,
    bucket: TokenBucket,
    heartbeat_ms: u64,
    timeout_ms: u64,
}

impl JsonRoom {
    pub fn new(registry: Addr<Registry>, bucket: TokenBucket, heartbeat_ms: u64, timeout_ms: u64) -> Self {
        JsonRoom { registry, bucket, heartbeat_ms, timeout_ms }
    }

    /// Takes a token, or answers `rate_limited` and returns false.
    fn admit(
        &mut self,
        core: &Core,
        reference: Option<&serde_json::value::RawValue>,
        ctx: &mut WsContext<Self>,
    ) -> bool {
        if self.bucket.take() {
            return true;
        }
        Metrics::inc(&core.metrics.rate_limited);
        core.reply(ctx, frame::error(ErrorCode::RateLimited, "too many messages; slow down", reference));
        false
    }
}

impl Endpoint for JsonRoom {
    const NAME: &'static str = "/ws";

    fn started(&mut self, core: &mut Core, ctx: &mut WsContext<Self>) {
        core.reply(ctx, frame::welcome(core.handle.id(), self.heartbeat_ms, self.timeout_ms));
    }

    fn text(&mut self, core: &mut Core, text: ByteString, ctx: &mut WsContext<Self>) {
        let parsed = request::parse_request(&text);
        let reference = match &parsed {
            Ok(request) => request.reference.as_deref(),
            Err(error) => error.reference.as_deref(),
        };
        if !self.admit(core, reference, ctx) {
            return;
        }
        match parsed {
            Err(error) => core.reply(ctx, error.to_frame()),
            Ok(Request { reference, kind: RequestKind::Ping }) => core.reply(ctx, frame::pong(reference.as_deref())),
            Ok(request) => self.registry.do_send(Command { id: core.handle.id(), request }),
        }
    }

    fn binary(&mut self, core: &mut Core, _data: Bytes, ctx: &mut WsContext<Self>) {
        if self.admit(core, None, ctx) {
            let message = "binary frames are not part of the JSON protocol; send text";
            core.reply(ctx, frame::error(ErrorCode::BadRequest, message, None));
        }
    }

    fn stopped(&mut self, core: &Core) {
        self.registry.do_send(Disconnect { id: core.handle.id() });
    }
}
