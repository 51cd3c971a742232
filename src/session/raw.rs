//! `/ws/{room}`: the raw relay. Every data frame goes to the room as it is;
//! the membership was made by the registry before the upgrade.

use actix::Addr;
use bytes::Bytes;
use bytestring::ByteString;

use super::handle::OutFrame;
use super::ratelimit::TokenBucket;
use super::{Core, Endpoint, WsContext};
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::registry::messages::{Disconnect, RawFrame};

pub struct RawRelay {
    registry: Addr<Registry>,
    bucket: TokenBucket,
}

impl RawRelay {
    pub fn new(registry: Addr<Registry>, bucket: TokenBucket) -> Self {
        RawRelay { registry, bucket }
    }

    fn relay(&mut self, core: &Core, frame: OutFrame) {
        if self.bucket.take() {
            self.registry.do_send(RawFrame { id: core.handle.id(), frame });
        } else {
            // Raw clients get no JSON, so a refused frame is only counted.
            Metrics::inc(&core.metrics.rate_limited);
        }
    }
}

impl Endpoint for RawRelay {
    const NAME: &'static str = "/ws/{room}";

    fn text(&mut self, core: &mut Core, text: ByteString, _ctx: &mut WsContext<Self>) {
        self.relay(core, OutFrame::Text(text));
    }

    fn binary(&mut self, core: &mut Core, data: Bytes, _ctx: &mut WsContext<Self>) {
        self.relay(core, OutFrame::Binary(data));
    }

    fn stopped(&mut self, core: &Core) {
        self.registry.do_send(Disconnect { id: core.handle.id() });
    }
}
