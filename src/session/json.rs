//! `/ws`: the JSON room protocol. Parses and rate-limits requests, answers
//! `ping` itself, and hands everything else to the registry.

use bytes::Bytes;
use bytestring::ByteString;

use super::ratelimit::TokenBucket;
use super::{Core, Endpoint};
use crate::metrics::Metrics;
use crate::protocol::ErrorCode;
use crate::protocol::frame;
use crate::protocol::request::{self, Request, RequestKind};
use crate::registry::messages::{Command, Registration};

pub struct JsonRoom {
    registration: Registration,
    bucket: TokenBucket,
    heartbeat_ms: u64,
    timeout_ms: u64,
}

impl JsonRoom {
    pub fn new(registration: Registration, bucket: TokenBucket, heartbeat_ms: u64, timeout_ms: u64) -> Self {
        JsonRoom { registration, bucket, heartbeat_ms, timeout_ms }
    }

    /// Takes a token, or answers `rate_limited` and returns false.
    fn admit(&mut self, core: &Core, reference: Option<&serde_json::value::RawValue>) -> bool {
        if self.bucket.take() {
            return true;
        }
        Metrics::inc(&core.metrics.rate_limited);
        core.reply(frame::error(ErrorCode::RateLimited, "too many messages; slow down", reference));
        false
    }
}

impl Endpoint for JsonRoom {
    const NAME: &'static str = "/ws";

    fn started(&mut self, core: &mut Core) {
        core.reply(frame::welcome(core.handle.id(), self.heartbeat_ms, self.timeout_ms));
    }

    fn text(&mut self, core: &mut Core, text: ByteString) {
        let parsed = request::parse_request(&text);
        let reference = match &parsed {
            Ok(request) => request.reference.as_deref(),
            Err(error) => error.reference.as_deref(),
        };
        if !self.admit(core, reference) {
            return;
        }
        match parsed {
            Err(error) => core.reply(error.to_frame()),
            Ok(Request { reference, kind: RequestKind::Ping }) => core.reply(frame::pong(reference.as_deref())),
            Ok(request) => {
                let ticket = core.handle.in_flight(text.len());
                self.registration.registry().do_send(Command { id: core.handle.id(), request, ticket });
            }
        }
    }

    fn binary(&mut self, core: &mut Core, _data: Bytes) {
        if self.admit(core, None) {
            let message = "binary frames are not part of the JSON protocol; send text";
            core.reply(frame::error(ErrorCode::BadRequest, message, None));
        }
    }
}
