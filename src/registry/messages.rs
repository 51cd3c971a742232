//! The registry's messages: the whole boundary between sessions (and the
//! HTTP API) and room state. A registry spanning several processes would
//! answer these same messages.

use actix::Message;
use serde_json::value::RawValue;

use crate::protocol::request::Request;
use crate::protocol::{RoomName, SessionId};
use crate::session::handle::{OutFrame, SessionHandle};

/// A `/ws` session is open: it may now send [`Command`]s.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Connect {
    pub handle: SessionHandle,
}

/// A `/ws/{room}` connection asks to be a member of `room` before its
/// upgrade, so a full room can still be answered with 409.
#[derive(Message)]
#[rtype(result = "Result<(), RoomFull>")]
pub struct ConnectRaw {
    pub handle: SessionHandle,
    pub room: RoomName,
}

#[derive(Debug)]
pub struct RoomFull;

/// The session has ended: its memberships end with `presence` leave events.
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
}

/// A data frame from a raw member, relayed to its room.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RawFrame {
    pub id: SessionId,
    pub frame: OutFrame,
}

/// `POST /api/rooms/{room}/publish`: returns the message's `seq`.
#[derive(Message)]
#[rtype(result = "u64")]
pub struct ApiPublish {
    pub room: RoomName,
    pub body: Box<RawValue>,
}

/// `GET /api/rooms`: every room with at least one member, by name.
#[derive(Message)]
#[rtype(result = "Vec<(RoomName, usize)>")]
pub struct ListRooms;
