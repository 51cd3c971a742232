//! A connection that authentication refused (`auth.md`): upgraded anyway,
//! so that a browser can see why, then closed 1008 at once: on `/ws` after
//! an `error` frame, elsewhere with the reason in the close frame alone. It
//! never reaches the registry and ignores what the client sends.

use bytes::Bytes;
use bytestring::ByteString;

use super::{Core, Endpoint};
use crate::auth::Policy;
use crate::outbox::CloseRequest;
use crate::protocol::frame;

pub struct Refused {
    policy: Policy,
    /// For people, in the `error` frame.
    message: String,
    /// `/ws`: the client speaks JSON.
    json: bool,
}

impl Refused {
    pub fn new(policy: Policy, message: String, json: bool) -> Self {
        Refused { policy, message, json }
    }
}

impl Endpoint for Refused {
    const NAME: &'static str = "a refused connection";

    fn started(&mut self, core: &mut Core) {
        core.handle.request_close(CloseRequest::policy(self.policy));
    }

    fn text(&mut self, _core: &mut Core, _text: ByteString) {}

    fn binary(&mut self, _core: &mut Core, _data: Bytes) {}

    fn farewell(&self, policy: Policy) -> Option<String> {
        self.json.then(|| frame::error(policy.error_code(), &self.message, None))
    }
}
