//! What the rooms of a deployment share, behind one seam: a room's order
//! (`seq`, epoch), history, publish ids, members and the rooms held. The
//! hub (`registry`) owns this node's sessions, members and fan-out, and
//! asks a broker for the rest: a [`Broker`] for messages (publish with
//! `seq` and epoch, history, the room's channel) and a [`Presence`] for
//! members (join and leave, member lists, the rooms with members, per-user
//! counts). One process has the [`memory`] broker, a cluster the [`redis`]
//! one; both say what happened to a room the same way, as [`Event`]s the
//! hub delivers through one path (Centrifuge's `broker_memory.go` calls the
//! same publication handler as its Redis broker).
//!
//! - [`log`]: a room's `seq`, epoch, history ring and recent publish ids.
//! - [`memory`]: the broker of one process.
//! - [`redis`]: the broker of a cluster: Redis's scripts, the node's
//!   subscriber, and the node's life in the cluster (beats, deaths).

pub mod log;
pub mod memory;
pub mod redis;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use bytestring::ByteString;

use crate::protocol::{PublishId, RoomName, SessionId};

/// A broker's answer: at once (one process), or when Redis has answered.
pub enum Done<T> {
    Now(T),
    Later(Pin<Box<dyn Future<Output = T> + Send>>),
}

/// What a broker answers, or why it could not (Redis's error: the memory
/// broker never fails).
pub type Answer<T> = Result<T, ::redis::RedisError>;

/// A publish's outcome with the round trips it took, and how long.
pub type Publishing = (Result<(Outcome, u32), PublishError>, Duration);

/// What happened, as the broker tells the hub: what a room's channel
/// carried, and (in a cluster) what became of the node.
#[derive(Debug)]
pub enum Event {
    /// A message, in the room's order.
    Message { room: RoomName, seq: u64, epoch: Arc<str>, frame: ByteString },
    /// A `presence` frame (its `id` names who joined or left).
    Presence { room: RoomName, frame: String },
    /// A raw member's binary frame (not kept), for the room's raw members
    /// but its sender.
    Binary { room: RoomName, from: Option<SessionId>, bytes: Bytes },
    /// A `direct` from another node: `TO\nFROM\nBODY`.
    Direct(String),
    /// The channel was lost and is back: every room may have missed
    /// messages (repaired from history), a joiner its own join event.
    Resubscribed,
    /// The others found this node dead and made its members leave: its
    /// clients are closed (1012) to recover elsewhere; it starts again as a
    /// new node.
    DeclaredDead,
    /// Redis answers again after an outage and may have lost what this
    /// node holds: the hub gives it back ([`Presence::restore`]).
    Restore,
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
    pub bounds: RoomBounds,
    /// A member publishes: the room has members (only an API publish may
    /// make a room).
    pub occupied: bool,
    /// A `seq` the hub knows the room will pass (the newest it delivered,
    /// plus one).
    pub min_seq: u64,
}

/// Who joins a room, and what the join reads.
#[derive(Debug, Clone)]
pub struct Joiner {
    pub id: SessionId,
    /// Its `members` entry.
    pub entry: String,
    /// `limits.max_members_per_room` and `rooms.max_rooms`.
    pub limits: (usize, usize),
    pub read: JoinRead,
    /// This node had no member of the room: it subscribes to the room's
    /// channel first (and Redis confirms), so nothing after the read is
    /// missed.
    pub subscribe: bool,
}

/// What this node holds, for Redis to hold again after an outage.
#[derive(Debug, Default)]
pub struct Holdings {
    /// Its open sessions.
    pub sessions: Vec<SessionId>,
    /// Its members: room, session, `members` entry.
    pub members: Vec<(RoomName, SessionId, String)>,
    /// Its connections per user, as `admit` counted them.
    pub users: Vec<(Arc<str>, usize)>,
}

/// Messages: their order, their history, the room's channel.
pub trait Broker {
    /// The runtime a [`Done::Later`] runs on (Redis's own thread), if any.
    fn runtime(&self) -> Option<tokio::runtime::Handle>;

    /// Why requests that need the broker fail now, if they do.
    fn down(&self) -> Option<String>;

    /// Gives `message` the room's next `seq` and keeps it in history, then
    /// puts it on the room's channel; a message with a publish id already
    /// published is answered with its first `seq`.
    fn publish(&mut self, room: &RoomName, message: &Message<'_>) -> Done<Publishing>;

    /// The room's messages `from..=to` (`None`: to the newest) with its epoch.
    fn history(&mut self, room: &RoomName, from: u64, to: Option<u64>) -> Done<Answer<Range>>;

    /// A raw member's binary frame, to the room's other raw members.
    fn relay_binary(&mut self, room: &RoomName, from: SessionId, bytes: Bytes) -> Done<Answer<()>>;

    /// A `direct` for session `to` of another node (`None`: it would be
    /// this node's own, delivered by the hub).
    fn direct(&mut self, to: SessionId, payload: String) -> Option<Done<Answer<bool>>>;

    /// This node no longer has members of `room`.
    fn unsubscribe(&mut self, room: &RoomName);

    /// What the calls made so far put on rooms' channels, at once (the
    /// memory broker's; Redis's come through [`Broker::events`]).
    fn take_events(&mut self, into: &mut Vec<Event>);

    /// Where events that come later arrive (Redis's channels, the node's
    /// life), taken once.
    fn events(&mut self) -> Option<tokio::sync::mpsc::Receiver<Event>>;

    /// Called every quarter second: what waits for time (empty rooms whose
    /// `empty_ttl` passed) is done.
    fn tick(&mut self) {}

    /// The room settings now (SIGHUP may change them): `rooms.history`,
    /// `rooms.history_bytes`, `rooms.publish_ids`; `rooms.empty_ttl`.
    fn set_limits(&mut self, history: log::HistoryLimits, empty_ttl: Duration);

    /// A graceful shutdown: this node's members leave every room now, with
    /// leave events, and the node leaves the cluster.
    fn shut_down(&mut self, empty_ttl: Duration) -> Done<()>;
}

/// Members: who is in each room, on every node.
pub trait Presence {
    /// `joiner` joins `room` (unless it is full or would be one room too
    /// many), announced with a presence event, and reads what it asked of
    /// the history.
    fn join(&mut self, room: &RoomName, joiner: Joiner) -> Done<Answer<JoinReply>>;

    /// Session `id` leaves `room` (with a leave event); an emptied room is
    /// kept `empty_ttl`. Answers the members left, if it was a member.
    fn leave(&mut self, room: &RoomName, id: SessionId, empty_ttl: Duration) -> Done<Answer<Option<usize>>>;

    /// The `members` entries of `room`, by session id.
    fn members(&mut self, room: &RoomName) -> Done<Answer<Vec<String>>>;

    /// Every room with members, with how many, by name.
    fn rooms(&mut self) -> Done<Answer<Vec<(RoomName, usize)>>>;

    /// Session `id`'s new `members` entry in each of `rooms`.
    fn rename(&mut self, rooms: Vec<RoomName>, id: SessionId, entry: String) -> Done<Answer<()>>;

    /// A session opened (`true`) or closed: other nodes find it by this.
    fn session(&mut self, id: SessionId, open: bool) -> Done<Answer<()>>;

    /// May one more connection of `user` open (`max` across nodes)? `None`:
    /// the broker does not count (one process counts at its gate).
    fn admit(&mut self, user: &Arc<str>, max: usize) -> Option<Done<Answer<bool>>>;

    /// A connection of `user` that `admit` counted closed.
    fn release(&mut self, user: Arc<str>) -> Done<Answer<()>>;

    /// After an outage: the broker holds what this node holds, and nothing
    /// more of it.
    fn restore(&mut self, holdings: Holdings, empty_ttl: Duration) -> Done<()>;
}

/// A broker with its presence: what the hub holds.
pub trait Shared: Broker + Presence {}

impl<T: Broker + Presence> Shared for T {}

/// A join's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joined {
    /// A new member: the room now has this many, on every node.
    Added(usize),
    /// Already a member (joining again changes nothing).
    Already(usize),
    /// The room has `max_members_per_room` members.
    Full(usize),
    /// A room nobody was in, and `rooms.max_rooms` are held.
    TooManyRooms,
}

/// A join's outcome and what its `joined` reply carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinReply {
    pub joined: Joined,
    pub epoch: String,
    /// The room's last `seq` when the member joined.
    pub top: u64,
    /// History entries read, oldest first.
    pub entries: Vec<(u64, String)>,
    /// `since` was beyond the room's `seq` or of another epoch: `entries`
    /// is every kept message and nothing was recovered.
    pub reset: bool,
}

impl Default for JoinReply {
    fn default() -> Self {
        JoinReply { joined: Joined::Full(0), epoch: String::new(), top: 0, entries: Vec::new(), reset: false }
    }
}

impl JoinReply {
    /// `recovered` for a `since` join: every message after `since` is in
    /// `entries`.
    pub fn recovered(&self, since: u64) -> bool {
        !self.reset && self.entries.len() as u64 == self.top.saturating_sub(since)
    }
}

/// What a publish (or the question what became of it) got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Published(Published),
    /// Not run, and never to be: its attempt was closed.
    Closed,
    /// A room nobody is in, and `rooms.max_rooms` are held.
    TooManyRooms,
}

/// A publish that happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub seq: u64,
    pub epoch: String,
    /// Its record existed: an earlier attempt, or an earlier publish with
    /// the same id, had published it.
    pub repeated: bool,
}

/// The limits a room's data is kept within, in memory or in Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomBounds {
    /// `rooms.history` and `rooms.history_bytes`.
    pub history: usize,
    pub history_bytes: usize,
    /// `rooms.publish_ids`.
    pub publish_ids: usize,
    /// `rooms.empty_ttl` and `rooms.max_rooms`.
    pub empty_ttl: Duration,
    pub max_rooms: usize,
}

/// Why a publish's outcome is not an [`Outcome`].
#[derive(Debug)]
pub enum PublishError {
    /// Redis answered with an error (out of memory, a read-only replica, a
    /// script error): it did not run the publish.
    Refused(::redis::RedisError),
    /// Its answer was lost and Redis no longer knows (see `redis::publish::Settled::Unknown`).
    Unknown,
}

impl std::fmt::Display for PublishError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PublishError::Refused(error) => write!(f, "Redis refused the publish: {error}"),
            PublishError::Unknown => f.write_str("its answer was lost, and Redis no longer knows whether it ran"),
        }
    }
}

/// A room's epoch, its last `seq`, and the history entries asked for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Range {
    /// Made when the room had none (it was lost).
    pub epoch: String,
    pub top: u64,
    pub entries: Vec<(u64, String)>,
}
