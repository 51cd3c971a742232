//! `/ws/{room}`: the raw relay. Every data frame goes to the room as it is;
//! the membership was made by the registry before the upgrade.

use bytes::Bytes;
use bytestring::ByteString;

use super::ratelimit::TokenBucket;
use super::{Core, Endpoint};
use crate::metrics::Metrics;
use crate::outbox::OutFrame;
use crate::registry::messages::{RawFrame, Registration};

pub struct RawRelay {
    registration: Registration,
    bucket: TokenBucket,
}

impl RawRelay {
    pub fn new(registration: Registration, bucket: TokenBucket) -> Self {
        RawRelay { registration, bucket }
    }

    fn relay(&mut self, core: &Core, frame: OutFrame) {
        if self.bucket.take() {
            let ticket = core.handle.in_flight(frame.len());
            self.registration.registry().do_send(RawFrame { id: core.handle.id(), frame, ticket });
        } else {
            // Raw clients get no JSON, so a refused frame is only counted.
            Metrics::inc(&core.metrics.rate_limited);
        }
    }
}

impl Endpoint for RawRelay {
    const NAME: &'static str = "/ws/{room}";

    fn text(&mut self, core: &mut Core, text: ByteString) {
        self.relay(core, OutFrame::Text(text));
    }

    fn binary(&mut self, core: &mut Core, data: Bytes) {
        self.relay(core, OutFrame::Binary(data));
    }
}
