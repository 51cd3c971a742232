//! The hub: one actor that owns this node's sessions (id, nick, user,
//! handle), its members of each room and the fan-out to them, and asks a
//! broker (`broker`: memory in one process, Redis in a cluster) for what
//! rooms share: `seq`, history, publish ids, members' entries, rooms held.
//! Every request runs on one path whichever broker answers. With
//! authentication on it checks grants: private rooms on `join`, read-only
//! members on `publish`.
//!
//! - `rooms`: joins, leaves, and each room's feed to its members here.
//! - `requests`: publish, direct, members, rooms, nick, raw frames, the API.
//! - `queue`: each session's requests at the broker, kept in order.
//! - [`feed`]: what this node delivered of a room, and how gaps are filled.
//! - [`node`]: the broker's events, per-user counts, a graceful leave.
//!
//! Sessions reach it only through the messages in [`messages`]; it reaches
//! sessions only by queueing frames on their [`SessionHandle`]s, which never
//! waits. A broadcast is serialized once and every recipient's queue gets a
//! clone of the same bytes. A member whose queue is full is closed (1013)
//! and removed at once, so the others are never slowed down by it.

pub mod feed;
pub mod members;
pub mod messages;
pub mod node;
mod queue;
mod requests;
mod rooms;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Context, Handler, ResponseActFuture, WrapFuture};
use bytestring::ByteString;
use serde_json::value::RawValue;

use crate::auth::patterns::Patterns;
use crate::auth::{Access, Identity};
use crate::broker::Shared;
use crate::broker::log::HistoryLimits;
use crate::config::{AuthMode, Settings};
use crate::metrics::{AuthFailure, Metrics};
use crate::outbox::{OutFrame, Push, SessionHandle};
use crate::protocol::frame::{self};
use crate::protocol::{self, ErrorCode, PublishId, RoomName, SessionId};
use members::{Member, MemberKind};
use messages::{
    ApiPublish, ApiRefusal, Command, Connect, ConnectRaw, Disconnect, ListRooms, RawFrame, RawRefusal, Reauth,
    Reconfigure,
};
use queue::Requests;
use rooms::LocalRoom;

#[derive(Debug, Clone)]
pub struct Limits {
    pub history: HistoryLimits,
    pub max_rooms: usize,
    pub empty_ttl: Duration,
    pub max_rooms_per_session: usize,
    pub max_members_per_room: usize,
    /// Authentication is on: `user` goes on the wire (fixed at start).
    pub auth: bool,
    /// `auth.private_rooms`.
    pub private_rooms: Patterns,
    /// `limits.outbound_bytes`: in a cluster, also what may wait for a
    /// member whose `joined` is on its way.
    pub outbound_bytes: usize,
}

impl Limits {
    pub fn new(settings: &Settings) -> Self {
        Limits {
            history: HistoryLimits {
                messages: settings.rooms.history,
                bytes: settings.rooms.history_bytes.bytes(),
                ids: settings.rooms.publish_ids,
            },
            max_rooms: settings.rooms.max_rooms,
            empty_ttl: settings.rooms.empty_ttl,
            max_rooms_per_session: settings.limits.max_rooms_per_session,
            max_members_per_room: settings.limits.max_members_per_room,
            auth: settings.auth.mode != AuthMode::Off,
            // Validated with the rest of the settings.
            private_rooms: Patterns::parse(&settings.auth.private_rooms).unwrap_or_default(),
            outbound_bytes: settings.limits.outbound_bytes.bytes(),
        }
    }
}

/// A session in the directory.
struct Entry {
    handle: SessionHandle,
    kind: MemberKind,
    nick: Option<String>,
    /// `"from":..,"nick":..` (and `"user":..`) as spliced into its messages.
    sender: String,
    rooms: Vec<RoomName>,
    /// The user and grants of an authenticated session.
    identity: Option<Arc<Identity>>,
}

impl Entry {
    fn new(handle: SessionHandle, kind: MemberKind, identity: Option<Arc<Identity>>, auth: bool) -> Self {
        let nick = identity.as_ref().and_then(|identity| identity.name.as_deref().map(String::from));
        let mut entry = Entry { handle, kind, nick, sender: String::new(), rooms: Vec::new(), identity };
        entry.sender = frame::sender_fields(entry.handle.id(), entry.nick.as_deref(), entry.user(auth));
        entry
    }

    /// The `user` field of frames about this session (`auth`: authentication
    /// is on, `Limits::auth`).
    fn user(&self, auth: bool) -> frame::User<'_> {
        auth.then(|| self.identity.as_deref().map(|identity| &*identity.user))
    }
}

pub struct Registry {
    limits: Limits,
    metrics: Arc<Metrics>,
    sessions: HashMap<SessionId, Entry>,
    /// The rooms with members on this node, and what feeds them.
    rooms: HashMap<RoomName, LocalRoom>,
    /// Sessions whose queue overflowed while handling a message; closed and
    /// removed before the next message.
    slow: Vec<SessionId>,
    /// Each session's requests at the broker, in order.
    requests: Requests,
    /// What rooms share: in this process, or in a cluster's Redis.
    broker: Box<dyn Shared>,
    /// Sessions the broker counted under `max_connections_per_user`.
    counted: HashMap<SessionId, Arc<str>>,
    /// Publish replies whose wait for their message ended (a room dropped).
    acks_due: Vec<rooms::Ack>,
    /// Buffers used for every message, kept: the broker's events, a feed's steps.
    events: Vec<crate::broker::Event>,
    steps: Vec<feed::Step>,
}

impl Actor for Registry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.start_broker(ctx);
    }
}

/// Queues a frame for one session, noting it in `slow` if its queue is full.
fn deliver(handle: &SessionHandle, frame: OutFrame, slow: &mut Vec<SessionId>) {
    if handle.push(frame) == Push::Full {
        slow.push(handle.id());
    }
}

fn text(frame: String) -> OutFrame {
    OutFrame::Text(ByteString::from(frame))
}

/// A `publish` as the registry sees it.
pub(crate) struct Publish {
    room: RoomName,
    body: Box<RawValue>,
    /// Its idempotency key.
    id: Option<PublishId>,
}

impl Registry {
    /// A registry whose rooms share what `broker` holds (in this process,
    /// or in a cluster's Redis).
    pub fn new(limits: Limits, metrics: Arc<Metrics>, mut broker: Box<dyn Shared>) -> Self {
        broker.set_limits(limits.history, limits.empty_ttl);
        Registry {
            limits,
            metrics,
            sessions: HashMap::new(),
            rooms: HashMap::new(),
            slow: Vec::new(),
            requests: Requests::default(),
            broker,
            counted: HashMap::new(),
            acks_due: Vec::new(),
            events: Vec::new(),
            steps: Vec::new(),
        }
    }

    fn reply(&mut self, id: SessionId, frame: String) {
        if let Some(entry) = self.sessions.get(&id) {
            deliver(&entry.handle, text(frame), &mut self.slow);
        }
    }

    fn error(&mut self, id: SessionId, code: ErrorCode, message: &str, reference: Option<&RawValue>) {
        self.reply(id, frame::error(code, message, reference));
    }

    /// Runs after every message: closes and removes slow consumers (which
    /// can make more: presence events).
    fn settle(&mut self, ctx: &mut Context<Self>) {
        while let Some(id) = self.slow.pop() {
            if let Some(entry) = self.sessions.get(&id) {
                entry.handle.close_slow(&self.metrics);
            }
            self.remove_session(id, ctx);
        }
    }

    fn remove_session(&mut self, id: SessionId, ctx: &mut Context<Self>) {
        if let Some(entry) = self.sessions.remove(&id) {
            self.end_session(id, entry, ctx);
        }
    }

    /// What a session may do in `name`: everything in a public room; in a
    /// private one what its connection token or room token grants, if
    /// anything (`Write` wins).
    fn access(&self, entry: &Entry, name: &RoomName, grant: Option<Access>) -> Option<Access> {
        if !self.limits.auth || !self.limits.private_rooms.matches(name.as_str()) {
            return Some(Access::Write);
        }
        let token = entry.identity.as_deref().and_then(|identity| identity.access(name.as_str()));
        match (token, grant) {
            (Some(Access::Write), _) | (_, Some(Access::Write)) => Some(Access::Write),
            (None, None) => None,
            _ => Some(Access::Read),
        }
    }

    /// The member entry of session `id` in room `name` on this node.
    fn member_mut(&mut self, id: SessionId, name: &RoomName) -> Option<&mut Member> {
        self.rooms.get_mut(name)?.members.get_mut(id)
    }

    /// Works out again what member `id` may do in `name` from its token's
    /// grants and its room token's (`grant`, a new room token, adds to the
    /// one it joined with): read-only or not, or nothing at all (`None`).
    fn regrant(&mut self, id: SessionId, name: &RoomName, grant: Option<Access>) -> Option<Access> {
        let grant = strongest(self.member_mut(id, name)?.grant, grant);
        let access = self.access(self.sessions.get(&id)?, name, grant);
        if let Some(member) = self.member_mut(id, name) {
            member.grant = grant;
            member.read_only = access == Some(Access::Read);
        }
        access
    }

    /// A `join` of a room the session is in: its grants are checked again
    /// (a refresh may have changed them; a room token may add one).
    fn rejoin_refusal(&mut self, id: SessionId, name: &RoomName, grant: Option<Access>) -> Option<(ErrorCode, String)> {
        if self.regrant(id, name, grant).is_some() {
            return None;
        }
        self.metrics.auth_failure(AuthFailure::Forbidden);
        Some((ErrorCode::Forbidden, format!("room {name} is private: your token grants nothing in it")))
    }

    /// After an `auth` refresh: each room the session is in is checked
    /// against its new grants; it leaves those it may no longer read (a
    /// `left` with reason `revoked`) and is read-only where only `read`
    /// is left.
    fn regrant_all(&mut self, id: SessionId, ctx: &mut Context<Self>) {
        let rooms = self.sessions.get(&id).map(|entry| entry.rooms.clone()).unwrap_or_default();
        for name in rooms {
            if self.regrant(id, &name, None).is_none() {
                self.leave_room(id, &name, ctx);
                self.reply(id, frame::left_revoked(&name));
            }
        }
    }

    /// Why a session may not join `name` as a new member, on one node or a
    /// cluster alike: no grant in a private room, the session's most rooms,
    /// or one room more than may be held (`rooms`: whether this process
    /// holds `name`, and how many it holds; a cluster counts in Redis).
    fn new_member_refusal(
        &self,
        entry: &Entry,
        name: &RoomName,
        access: Option<Access>,
        rooms: Option<(bool, usize)>,
    ) -> Option<(ErrorCode, String)> {
        if access.is_none() {
            self.metrics.auth_failure(AuthFailure::Forbidden);
            let message =
                format!("room {name} is private: your token grants nothing in it (send a room token with the join)");
            return Some((ErrorCode::Forbidden, message));
        }
        if entry.rooms.len() >= self.limits.max_rooms_per_session {
            let message = format!("a session may join at most {} rooms", self.limits.max_rooms_per_session);
            return Some((ErrorCode::TooManyRooms, message));
        }
        if let Some((false, held)) = rooms
            && held >= self.limits.max_rooms
        {
            let message = format!("the server holds its most rooms ({}); try an existing room", self.limits.max_rooms);
            return Some((ErrorCode::TooManyRooms, message));
        }
        None
    }

    fn leave(&mut self, id: SessionId, name: RoomName, reference: Option<&RawValue>, ctx: &mut Context<Self>) {
        if !self.sessions.get(&id).is_some_and(|entry| entry.rooms.contains(&name)) {
            return self.error(id, ErrorCode::NotMember, &format!("not a member of {name}"), reference);
        }
        self.leave_room(id, &name, ctx);
        self.reply(id, frame::left(&name, reference));
    }

    /// Ends the session's membership of `name` (which it holds), with a
    /// presence leave to the others, on one node or a cluster.
    fn leave_room(&mut self, id: SessionId, name: &RoomName, ctx: &mut Context<Self>) {
        let Some(entry) = self.sessions.get_mut(&id) else {
            return;
        };
        entry.rooms.retain(|room| room != name);
        self.drop_local_member(id, name);
        self.leave_in_broker(ctx, id, name);
    }

    fn direct(&mut self, id: SessionId, to: &str, body: &RawValue, reference: Option<&RawValue>) {
        let Some(sender) = self.sessions.get(&id).map(|entry| entry.sender.clone()) else {
            return;
        };
        let Some(target) = SessionId::from_wire(to).and_then(|to| self.sessions.get(&to)) else {
            return self.error(id, ErrorCode::NotFound, &format!("no session {to:?}"), reference);
        };
        let frame = match target.kind {
            MemberKind::Json => frame::direct(&sender, body.get()),
            MemberKind::Raw => protocol::body_as_raw_text(body),
        };
        deliver(&target.handle, text(frame), &mut self.slow);
        if reference.is_some() {
            self.reply(id, frame::ok(None, reference));
        }
    }

    /// The session's nick, in its entry and in the messages it sends.
    fn rename(&mut self, id: SessionId, name: String) {
        let Some(entry) = self.sessions.get_mut(&id) else {
            return;
        };
        entry.nick = Some(name);
        entry.sender = frame::sender_fields(id, entry.nick.as_deref(), entry.user(self.limits.auth));
    }

    /// Whether the session may see `name` in a `rooms` list: a room it may
    /// join (a private one only with a grant), or one it is in (a room
    /// token's grant).
    fn may_list(&self, entry: &Entry, name: &RoomName) -> bool {
        entry.rooms.contains(name) || self.access(entry, name, None).is_some()
    }

    /// The `rooms` reply: the rooms `rooms` that the session may see.
    fn answer_rooms(&mut self, id: SessionId, mut rooms: Vec<(RoomName, usize)>, reference: Option<&RawValue>) {
        let Some(entry) = self.sessions.get(&id) else {
            return;
        };
        rooms.retain(|(name, _)| self.may_list(entry, name));
        let frame = frame::rooms(Some("rooms"), rooms.iter().map(|(n, c)| (n, *c)), reference);
        self.reply(id, frame);
    }
}

/// The stronger of two grants (`Write` over `Read` over none).
fn strongest(a: Option<Access>, b: Option<Access>) -> Option<Access> {
    match (a, b) {
        (Some(Access::Write), _) | (_, Some(Access::Write)) => Some(Access::Write),
        (Some(Access::Read), _) | (_, Some(Access::Read)) => Some(Access::Read),
        (None, None) => None,
    }
}

impl Handler<Connect> for Registry {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, msg: Connect, ctx: &mut Context<Self>) -> Self::Result {
        let id = msg.handle.id();
        self.sessions.insert(id, Entry::new(msg.handle, MemberKind::Json, msg.identity, self.limits.auth));
        // In a cluster, answered once other nodes can find the session
        // (`direct`): before the client has its `welcome`, and so its id.
        let (done, connected) = tokio::sync::oneshot::channel();
        self.connected(id, ctx, done);
        Box::pin(async move { connected.await.unwrap_or(()) }.into_actor(self))
    }
}

impl Handler<ConnectRaw> for Registry {
    type Result = ResponseActFuture<Self, Result<(), RawRefusal>>;

    fn handle(&mut self, msg: ConnectRaw, ctx: &mut Context<Self>) -> Self::Result {
        let outcome = self.connect_raw(msg, ctx);
        self.settle(ctx);
        outcome
    }
}

impl Handler<Disconnect> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Disconnect, ctx: &mut Context<Self>) {
        self.release_user(msg.id, ctx);
        self.remove_session(msg.id, ctx);
        self.settle(ctx);
    }
}

impl Handler<Command> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Command, ctx: &mut Context<Self>) {
        self.queue_command(msg, ctx);
        self.settle(ctx);
    }
}

impl Handler<RawFrame> for Registry {
    type Result = ();

    fn handle(&mut self, msg: RawFrame, ctx: &mut Context<Self>) {
        self.queue_raw_frame(msg, ctx);
        self.settle(ctx);
    }
}

impl Handler<ApiPublish> for Registry {
    type Result = ResponseActFuture<Self, Result<u64, ApiRefusal>>;

    fn handle(&mut self, msg: ApiPublish, ctx: &mut Context<Self>) -> Self::Result {
        let (done, outcome) = tokio::sync::oneshot::channel();
        let sender = frame::api_sender_fields(self.limits.auth);
        let body = requests::Body::Json(msg.body.get());
        self.publish_message(
            ctx,
            queue::Turn::Node,
            &msg.room,
            &sender,
            body,
            msg.id.as_ref(),
            move |_, published, _| {
                let _ = done.send(published.map_err(|failure| match failure {
                    requests::PublishFailure::Unavailable(why) => ApiRefusal::Unavailable(why),
                    requests::PublishFailure::TooManyRooms => ApiRefusal::TooManyRooms,
                    requests::PublishFailure::Unknown => ApiRefusal::Unknown,
                }));
            },
        );
        self.settle(ctx);
        let outcome = async move { outcome.await.unwrap_or_else(|_| Err(ApiRefusal::Unavailable("stopped".into()))) };
        Box::pin(outcome.into_actor(self))
    }
}

impl Handler<ListRooms> for Registry {
    type Result = ResponseActFuture<Self, Result<Vec<(RoomName, usize)>, String>>;

    fn handle(&mut self, _msg: ListRooms, ctx: &mut Context<Self>) -> Self::Result {
        let (done, listed) = tokio::sync::oneshot::channel();
        let rooms = match self.broker.down() {
            Some(why) => crate::broker::Done::Now(Err(redis::RedisError::from((redis::ErrorKind::Io, "down", why)))),
            None => self.broker.rooms(),
        };
        self.in_broker(ctx, queue::Turn::Node, rooms, move |_, rooms, _| {
            let _ = done.send(rooms.map_err(|error| error.to_string()));
        });
        Box::pin(async move { listed.await.unwrap_or_else(|_| Err("stopped".into())) }.into_actor(self))
    }
}

impl Handler<Reauth> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Reauth, ctx: &mut Context<Self>) {
        self.queue_reauth(msg, ctx);
        self.settle(ctx);
    }
}

impl Registry {
    /// The session's new token: its grants apply to the rooms it is in
    /// (`regrant_all`), then `ok`.
    fn reauth(&mut self, msg: Reauth, ctx: &mut Context<Self>) {
        let Some(entry) = self.sessions.get_mut(&msg.id) else {
            return;
        };
        entry.identity = Some(msg.identity);
        self.regrant_all(msg.id, ctx);
        self.reply(msg.id, frame::ok(None, msg.reference.as_deref()));
    }
}

impl Handler<Reconfigure> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Reconfigure, _ctx: &mut Context<Self>) {
        // On or off is fixed at start (`user` on the wire).
        let auth = self.limits.auth;
        self.limits = Limits { auth, ..msg.limits };
        self.broker.set_limits(self.limits.history, self.limits.empty_ttl);
    }
}
