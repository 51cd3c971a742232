//! `/ws`: the JSON room protocol. Parses and rate-limits requests, answers
//! `ping` itself, checks tokens (`auth`, a `join`'s room token), and hands
//! everything else to the registry.

use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use bytestring::ByteString;
use serde_json::value::RawValue;

use super::ratelimit::TokenBucket;
use super::{Core, Endpoint};
use crate::auth::Policy;
use crate::auth::{Access, Identity, TokenError, Verifier};
use crate::config::AuthMode;
use crate::live::Live;
use crate::metrics::{AuthFailure, Metrics};
use crate::protocol::ErrorCode;
use crate::protocol::frame;
use crate::protocol::request::{self, Request, RequestKind};
use crate::registry::messages::{Command, Reauth, Registration};

pub struct JsonRoom {
    registration: Registration,
    bucket: TokenBucket,
    heartbeat_ms: u64,
    timeout_ms: u64,
    /// The session's user, when its connection token was accepted.
    identity: Option<Arc<Identity>>,
    /// The configuration in effect, for its verifier (a reload may rotate
    /// keys).
    live: Arc<ArcSwap<Live>>,
}

/// A token refused by a request: the error to answer with.
struct Refusal {
    code: ErrorCode,
    failure: AuthFailure,
    message: String,
}

impl Refusal {
    fn unauthorized(message: impl Into<String>) -> Self {
        Refusal { code: ErrorCode::Unauthorized, failure: AuthFailure::Invalid, message: message.into() }
    }

    fn token(error: TokenError) -> Self {
        match error {
            TokenError::Expired => {
                Refusal { code: ErrorCode::TokenExpired, failure: AuthFailure::Expired, message: error.message() }
            }
            TokenError::Invalid(_) => Refusal::unauthorized(error.message()),
        }
    }
}

impl JsonRoom {
    pub fn new(
        registration: Registration,
        bucket: TokenBucket,
        heartbeat_ms: u64,
        timeout_ms: u64,
        identity: Option<Arc<Identity>>,
        live: Arc<ArcSwap<Live>>,
    ) -> Self {
        JsonRoom { registration, bucket, heartbeat_ms, timeout_ms, identity, live }
    }

    /// Takes a token, or answers `rate_limited` and returns false.
    fn admit(&mut self, core: &Core, reference: Option<&RawValue>) -> bool {
        if self.bucket.take() {
            return true;
        }
        Metrics::inc(&core.metrics.rate_limited);
        core.reply(frame::error(ErrorCode::RateLimited, "too many messages; slow down", reference));
        false
    }

    fn verifier(&self) -> Arc<Verifier> {
        self.live.load().auth.clone()
    }

    /// The user's name, when it has one.
    fn user(&self) -> Option<&str> {
        self.identity.as_deref().map(|identity| &*identity.user)
    }

    /// `auth`: a fresh connection token for the same user; it moves the
    /// expiry and its grants apply to later joins.
    fn reauth(&mut self, core: &Core, token: &str) -> Result<Arc<Identity>, Refusal> {
        let verifier = self.verifier();
        if verifier.mode() == AuthMode::Off {
            return Err(Refusal::unauthorized("authentication is off on this server"));
        }
        let Some(user) = self.user() else {
            return Err(Refusal::unauthorized("an anonymous session cannot take a token: reconnect with it"));
        };
        let claims = verifier.connection(token).map_err(Refusal::token)?;
        if *claims.identity.user != *user {
            return Err(Refusal::unauthorized("the token is for another user"));
        }
        core.handle.expire_in(verifier.lifetime_ms(claims.exp));
        let identity = Arc::new(claims.identity);
        self.identity = Some(identity.clone());
        Ok(identity)
    }

    /// What a `join`'s room token grants in `room`.
    fn room_grant(&self, room: &str, token: &str) -> Result<Access, Refusal> {
        let verifier = self.verifier();
        let claims =
            verifier.room(token).map_err(|error| Refusal::unauthorized(format!("room {}", error.message())))?;
        if Some(claims.user.as_str()) != self.user() {
            return Err(Refusal::unauthorized("the room token is for another user"));
        }
        if claims.room != room {
            return Err(Refusal::unauthorized(format!("the room token is for room {}", claims.room)));
        }
        Ok(claims.access)
    }

    fn refuse(core: &Core, refusal: Refusal, reference: Option<&RawValue>) {
        core.metrics.auth_failure(refusal.failure);
        core.reply(frame::error(refusal.code, &refusal.message, reference));
    }

    fn forward(&self, core: &Core, request: Request, grant: Option<Access>, bytes: usize) {
        let ticket = core.handle.in_flight(bytes);
        self.registration.registry().do_send(Command { id: core.handle.id(), request, grant, ticket });
    }
}

impl Endpoint for JsonRoom {
    const NAME: &'static str = "/ws";

    fn started(&mut self, core: &mut Core) {
        let auth = self.live.load().auth.mode() != AuthMode::Off;
        let user = auth.then(|| self.user());
        core.reply(frame::welcome(core.handle.id(), self.heartbeat_ms, self.timeout_ms, user));
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
            Ok(Request { reference, kind: RequestKind::Auth { token } }) => match self.reauth(core, &token) {
                Ok(identity) => {
                    let (id, ticket) = (core.handle.id(), core.handle.in_flight(text.len()));
                    self.registration.registry().do_send(Reauth { id, identity, reference, ticket });
                }
                Err(refusal) => Self::refuse(core, refusal, reference.as_deref()),
            },
            Ok(mut request) => {
                let mut grant = None;
                if let RequestKind::Join { room, token, .. } = &mut request.kind
                    && let Some(token) = token.take()
                    && self.verifier().mode() != AuthMode::Off
                {
                    match self.room_grant(room.as_str(), &token) {
                        Ok(access) => grant = Some(access),
                        Err(refusal) => return Self::refuse(core, refusal, request.reference.as_deref()),
                    }
                }
                self.forward(core, request, grant, text.len());
            }
        }
    }

    fn binary(&mut self, core: &mut Core, _data: Bytes) {
        if self.admit(core, None) {
            let message = "binary frames are not part of the JSON protocol; send text";
            core.reply(frame::error(ErrorCode::BadRequest, message, None));
        }
    }

    fn farewell(&self, policy: Policy) -> Option<String> {
        let message = match policy {
            Policy::TokenExpired => "the token has expired: reconnect with a new one (send `auth` before it expires)",
            Policy::Unauthorized => "unauthorized",
            Policy::TooManyConnections => "too many connections for this user",
        };
        Some(frame::error(policy.error_code(), message, None))
    }
}
