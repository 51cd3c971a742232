//! What the rooms of a deployment share, behind one seam: a room's order
//! (`seq`, epoch), history, publish ids, members and the rooms held. The
//! hub (`registry`) owns this node's sessions, members and fan-out, and
//! asks a broker for the rest; one process has the [`memory`] broker, a
//! cluster has Redis (`cluster/`). Both say what happened to a room the
//! same way, as [`Event`]s the hub delivers through one path.
//!
//! - [`log`]: a room's `seq`, epoch, history ring and recent publish ids.
//! - [`memory`]: the broker of one process.

pub mod log;
pub mod memory;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytestring::ByteString;

use crate::protocol::{PublishId, RoomName};

/// A broker's answer: at once (one process), or when Redis has answered.
pub enum Done<T> {
    Now(T),
    Later(Pin<Box<dyn Future<Output = T> + Send>>),
}

/// What happened in a room, as its channel says it.
#[derive(Debug)]
pub enum Event {
    /// A message, in the room's order.
    Message { room: RoomName, seq: u64, epoch: Arc<str>, frame: ByteString },
    /// A `presence` frame (its `id` names who joined or left).
    Presence { room: RoomName, frame: String },
}

/// What a join's `joined` reply carries of the history.
#[derive(Debug, Clone)]
pub enum JoinRead {
    /// The newest `n` messages.
    Recent(usize),
    /// Every kept message after `seq`, of the epoch given.
    Since(u64, Option<String>),
}

/// How a message's body goes into its frame.
#[derive(Debug, Clone, Copy)]
pub enum MessageText<'a> {
    /// The body is JSON, already in `tail`.
    Json,
    /// A raw member's text, kept as it came: the frame holds it as a JSON
    /// string after `tail`.
    Raw(&'a str),
}

/// A message on its way to a room: its frame around the `seq` the broker
/// gives it.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// The client's idempotency key.
    pub id: Option<&'a PublishId>,
    pub head: &'a str,
    pub tail: &'a str,
    pub text: MessageText<'a>,
    /// `rooms.max_rooms`, for a room the publish would make.
    pub max_rooms: usize,
    /// `rooms.empty_ttl`: how long a room nobody is in is kept.
    pub empty_ttl: Duration,
}
