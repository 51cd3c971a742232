//! The registry's messages: the whole boundary between sessions (and the
//! HTTP API) and room state. A registry spanning several processes would
//! answer these same messages.

use std::sync::Arc;

use actix::{Addr, Message};
use serde_json::value::RawValue;

use super::Registry;
use crate::auth::{Access, Identity};
use crate::outbox::{InFlight, OutFrame, SessionHandle};
use crate::protocol::request::{Ref, Request};
use crate::protocol::{PublishId, RoomName, SessionId};

/// A session's place in the registry, taken before the registry hears of
/// the session: dropping it sends [`Disconnect`]. It lives in the session's
/// endpoint, so however the connection ends, even while the upgrade is
/// still being answered or before the session's actor ever ran, the
/// registry forgets the session and its memberships.
pub struct Registration {
    registry: Addr<Registry>,
    id: SessionId,
}

impl Registration {
    pub fn new(registry: Addr<Registry>, id: SessionId) -> Self {
        Registration { registry, id }
    }

    pub fn registry(&self) -> &Addr<Registry> {
        &self.registry
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.do_send(Disconnect { id: self.id });
    }
}

/// A `/ws` session is open: it may send [`Command`]s once this is answered
/// (in a cluster, when the other nodes can find it).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Connect {
    pub handle: SessionHandle,
    /// The session's user, when authenticated.
    pub identity: Option<Arc<Identity>>,
}

/// A `/ws/{room}` connection asks to be a member of `room` before its
/// upgrade, so a full room can still be answered with 409.
#[derive(Message)]
#[rtype(result = "Result<(), RawRefusal>")]
pub struct ConnectRaw {
    pub handle: SessionHandle,
    pub room: RoomName,
    pub identity: Option<Arc<Identity>>,
    /// What the connection may do in `room` (the gate checked private
    /// rooms): with `Read`, its frames are dropped.
    pub access: Access,
}

/// Why a raw connection was not let into its room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawRefusal {
    /// `max_members_per_room`: 409.
    RoomFull,
    /// A new room, and `rooms.max_rooms` are held: 503.
    TooManyRooms,
    /// The cluster's Redis does not answer: 503.
    Unavailable,
}

/// Why `POST /api/rooms/{room}/publish` did not publish (503 either way).
#[derive(Debug)]
pub enum ApiRefusal {
    /// A new room, and `rooms.max_rooms` are held.
    TooManyRooms,
    /// The cluster's Redis does not answer, or refused: not published.
    Unavailable(String),
    /// Its answer was lost and Redis no longer knows whether it ran.
    Unknown,
}

/// The session has ended: its memberships end with `presence` leave events.
/// Sent by [`Registration`] only.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Disconnect {
    pub id: SessionId,
}

/// A parsed request from a `/ws` session. Replies go to the session's
/// queue, in order with everything else the registry sends it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Command {
    pub id: SessionId,
    pub request: Request,
    /// What a `join`'s room token (verified by the session) grants.
    pub grant: Option<Access>,
    /// Released when the registry is done with the request.
    pub ticket: InFlight,
}

/// An `auth` request's new token, verified by the session (same user):
/// its grants apply to later joins. Answered `ok`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reauth {
    pub id: SessionId,
    pub identity: Arc<Identity>,
    pub reference: Ref,
    pub ticket: InFlight,
}

/// A data frame from a raw member, relayed to its room.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RawFrame {
    pub id: SessionId,
    pub frame: OutFrame,
    pub ticket: InFlight,
}

/// `POST /api/rooms/{room}/publish`: returns the message's `seq`.
#[derive(Message)]
#[rtype(result = "Result<u64, ApiRefusal>")]
pub struct ApiPublish {
    pub room: RoomName,
    pub body: Box<RawValue>,
    /// Its `Idempotency-Key`.
    pub id: Option<PublishId>,
}

/// `GET /api/rooms`: every room with at least one member, by name (an
/// error: the cluster's Redis does not answer).
#[derive(Message)]
#[rtype(result = "Result<Vec<(RoomName, usize)>, String>")]
pub struct ListRooms;

/// SIGHUP's new limits: they apply to the rooms held too (a smaller history
/// drops the oldest messages now); `empty_ttl` applies to rooms that become
/// empty from now on.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reconfigure {
    pub limits: super::Limits,
}
