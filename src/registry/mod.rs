//! The room registry: one actor that owns every room (members, `seq`,
//! history, `empty_ttl`) and the session directory (id, nick, user, handle),
//! and relays messages. With authentication on it checks grants: private
//! rooms on `join`, read-only members on `publish`.
//!
//! Sessions reach it only through the messages in [`messages`]; it reaches
//! sessions only by queueing frames on their [`SessionHandle`]s, which never
//! waits. A broadcast is serialized once and every recipient's queue gets a
//! clone of the same bytes. A member whose queue is full is closed (1013)
//! and removed at once, so the others are never slowed down by it.

pub mod cluster;
pub mod history;
pub mod members;
pub mod messages;
pub mod room;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::{Actor, AsyncContext, Context, Handler, ResponseActFuture, WrapFuture};
use bytestring::ByteString;
use serde_json::value::RawValue;

use crate::auth::patterns::Patterns;
use crate::auth::{Access, Identity};
use crate::config::{AuthMode, Settings};
use crate::metrics::{AuthFailure, Metrics};
use crate::outbox::{OutFrame, Push, SessionHandle};
use crate::protocol::frame::{self, PresenceEvent};
use crate::protocol::request::RequestKind;
use crate::protocol::{self, ErrorCode, PublishId, RoomName, SessionId};
use cluster::Cluster;
use history::HistoryLimits;
use members::{Member, MemberKind};
use messages::{
    ApiPublish, ApiRefusal, Command, Connect, ConnectRaw, Disconnect, ListRooms, RawFrame, RawRefusal, Reauth,
    Reconfigure,
};
use room::Room;

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
    rooms: HashMap<RoomName, Room>,
    /// Sessions whose queue overflowed while handling a message; closed and
    /// removed before the next message.
    slow: Vec<SessionId>,
    /// Rooms that became empty while handling a message; each gets a timer.
    emptied: Vec<RoomName>,
    /// With `[cluster]`: rooms live in Redis (`rooms` stays empty).
    cluster: Option<Box<Cluster>>,
    /// Publish replies whose wait for their message ended (a room dropped).
    acks_due: Vec<cluster::Ack>,
}

impl Actor for Registry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.start_cluster(ctx);
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

/// A `join` as the registry sees it.
struct Join {
    room: RoomName,
    history: Option<u64>,
    since: Option<(u64, Option<String>)>,
    /// From a room token.
    grant: Option<Access>,
}

pub(crate) fn now_epoch_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Registry {
    /// A registry; with `cluster`, its rooms live in Redis.
    pub fn new(limits: Limits, metrics: Arc<Metrics>, cluster: Option<Cluster>) -> Self {
        Registry {
            limits,
            metrics,
            sessions: HashMap::new(),
            rooms: HashMap::new(),
            slow: Vec::new(),
            emptied: Vec::new(),
            cluster: cluster.map(Box::new),
            acks_due: Vec::new(),
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

    /// Adds a session to a room and tells the other members.
    fn add_member(&mut self, id: SessionId, name: &RoomName, access: Access, grant: Option<Access>) {
        let Some(entry) = self.sessions.get_mut(&id) else {
            return;
        };
        entry.rooms.push(name.clone());
        let member =
            Member { handle: entry.handle.clone(), kind: entry.kind, read_only: access == Access::Read, grant };
        let user = entry.user(self.limits.auth);
        let presence = text(frame::presence(name, PresenceEvent::Join, id, entry.nick.as_deref(), user));
        let room = room_entry(&mut self.rooms, name, self.limits.history);
        room.members.add(id, member);
        if room.members.len() == 1 {
            Metrics::inc(&self.metrics.rooms);
        }
        room.members.fan_out(Some(id), Some(&presence), None, &mut self.slow);
    }

    /// Removes a session from a room and tells the remaining members.
    fn remove_member(&mut self, id: SessionId, name: &RoomName, nick: Option<&str>, user: frame::User) {
        let Some(room) = self.rooms.get_mut(name) else {
            return;
        };
        if !room.members.remove(id) {
            return;
        }
        if room.members.is_empty() {
            self.metrics.rooms.fetch_sub(1, Ordering::Relaxed);
            self.emptied.push(name.clone());
            return;
        }
        let presence = text(frame::presence(name, PresenceEvent::Leave, id, nick, user));
        room.members.fan_out(None, Some(&presence), None, &mut self.slow);
    }

    fn remove_session(&mut self, id: SessionId, ctx: &mut Context<Self>) {
        let Some(entry) = self.sessions.remove(&id) else {
            return;
        };
        if self.cluster.is_some() {
            return self.cluster_remove_session(id, entry, ctx);
        }
        for name in &entry.rooms {
            self.remove_member(id, name, entry.nick.as_deref(), entry.user(self.limits.auth));
        }
    }

    /// Whether `name` is a room that exists, or one more may be made.
    fn room_allowed(&self, name: &RoomName) -> bool {
        self.rooms.len() < self.limits.max_rooms || self.rooms.contains_key(name)
    }

    /// Runs after every message: closes and removes slow consumers (which
    /// can make more: presence events), then starts `empty_ttl` timers.
    fn settle(&mut self, ctx: &mut Context<Self>) {
        while let Some(id) = self.slow.pop() {
            if let Some(entry) = self.sessions.get(&id) {
                entry.handle.close_slow(&self.metrics);
            }
            self.remove_session(id, ctx);
        }
        for name in std::mem::take(&mut self.emptied) {
            let Some(room) = self.rooms.get(&name) else {
                continue;
            };
            if !room.members.is_empty() {
                continue;
            }
            if self.limits.empty_ttl.is_zero() {
                self.forget(&name);
                continue;
            }
            let epoch = room.members.empty_generation();
            ctx.run_later(self.limits.empty_ttl, move |registry, _| {
                let forget = registry
                    .rooms
                    .get(&name)
                    .is_some_and(|r| r.members.is_empty() && r.members.empty_generation() == epoch);
                if forget {
                    registry.forget(&name);
                    log::debug!("room {name} forgotten after empty_ttl");
                }
            });
        }
        self.count_rooms_held();
    }

    /// `roomcast_rooms_held`: the rooms this process holds (a cluster's are
    /// counted in Redis, at each beat).
    fn count_rooms_held(&self) {
        if self.cluster.is_none() {
            self.metrics.rooms_held.store(self.rooms.len() as u64, Ordering::Relaxed);
        }
    }

    /// Drops a room and its history.
    fn forget(&mut self, name: &RoomName) {
        if let Some(room) = self.rooms.remove(name) {
            self.metrics.history_bytes.fetch_sub(room.log.history_bytes() as u64, Ordering::Relaxed);
        }
        self.count_rooms_held();
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
        match self.cluster.as_deref_mut() {
            Some(cluster) => cluster.member_mut(id, name),
            None => self.rooms.get_mut(name)?.members.get_mut(id),
        }
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

    fn join(&mut self, id: SessionId, join: Join, reference: Option<&RawValue>) {
        let Join { room: name, history, since, grant } = join;
        let Some(entry) = self.sessions.get(&id) else {
            return;
        };
        let access = self.access(entry, &name, grant);
        let is_member = self.rooms.get(&name).is_some_and(|room| room.members.contains(id));
        if is_member {
            if let Some((code, message)) = self.rejoin_refusal(id, &name, grant) {
                return self.error(id, code, &message, reference);
            }
        } else {
            let rooms = (self.rooms.contains_key(&name), self.rooms.len());
            if let Some((code, message)) = self.new_member_refusal(entry, &name, access, Some(rooms)) {
                return self.error(id, code, &message, reference);
            }
            let members = self.rooms.get(&name).map_or(0, |room| room.members.len());
            if members >= self.limits.max_members_per_room {
                let message = format!("room {name} has {members} members, the most allowed");
                return self.error(id, ErrorCode::RoomFull, &message, reference);
            }
            let access = access.unwrap_or(Access::Write);
            self.add_member(id, &name, access, grant);
        }
        let Some(room) = self.rooms.get(&name) else {
            return;
        };
        let frame = match since {
            Some((since, epoch)) => {
                let (kept, recovered) = room.log.after(since, epoch.as_deref());
                let members = room.members.len();
                frame::joined(&name, members, room.log.epoch(), kept.into_iter(), Some(recovered), reference)
            }
            None => {
                let count = history.unwrap_or(0).min(self.limits.history.messages as u64) as usize;
                frame::joined(&name, room.members.len(), room.log.epoch(), room.log.recent(count), None, reference)
            }
        };
        self.reply(id, frame);
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
        if self.cluster.is_some() {
            self.drop_local_member(id, name);
            return self.leave_in_redis(ctx, id, name);
        }
        let nick = entry.nick.clone();
        let user = entry.user(self.limits.auth).map(|user| user.map(String::from));
        self.remove_member(id, name, nick.as_deref(), user.as_ref().map(|user| user.as_deref()));
    }

    fn publish(&mut self, id: SessionId, publish: Publish, reference: Option<&RawValue>) {
        let Publish { room: name, body, id: publish_id } = publish;
        let Some(entry) = self.sessions.get(&id) else {
            return;
        };
        let Some(room) = self.rooms.get_mut(&name).filter(|room| room.members.contains(id)) else {
            return self.error(id, ErrorCode::NotMember, &format!("join {name} before publishing to it"), reference);
        };
        if room.members.get_mut(id).is_some_and(|member| member.read_only) {
            self.metrics.auth_failure(AuthFailure::Forbidden);
            let message = format!("your grant in {name} is read-only");
            return self.error(id, ErrorCode::Forbidden, &message, reference);
        }
        let seq = publish_once(room, &self.metrics, &name, &entry.sender, &body, publish_id, &mut self.slow);
        if let Some(reference) = reference {
            self.reply(id, frame::ok(Some(seq), Some(reference)));
        }
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

    fn nick(&mut self, id: SessionId, name: String, reference: Option<&RawValue>) {
        self.rename(id, name);
        self.reply(id, frame::ok(None, reference));
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

    fn occupied_rooms(&self) -> Vec<(RoomName, usize)> {
        let mut rooms: Vec<_> = self
            .rooms
            .iter()
            .filter(|(_, room)| !room.members.is_empty())
            .map(|(name, room)| (name.clone(), room.members.len()))
            .collect();
        rooms.sort();
        rooms
    }

    fn members(&mut self, id: SessionId, name: RoomName, reference: Option<&RawValue>) {
        let Some(room) = self.rooms.get(&name).filter(|room| room.members.contains(id)) else {
            return self.error(id, ErrorCode::NotMember, &format!("not a member of {name}"), reference);
        };
        let sessions = &self.sessions;
        let auth = self.limits.auth;
        // By session id, as a cluster lists them.
        let mut ids: Vec<SessionId> = room.members.ids().collect();
        ids.sort_unstable_by_key(|id| id.0);
        let list = ids.into_iter().map(|member| match sessions.get(&member) {
            Some(entry) => (member, entry.nick.as_deref(), entry.user(auth)),
            None => (member, None, auth.then_some(None)),
        });
        let frame = frame::members(&name, list, reference);
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

/// The room called `name`, made empty if it does not exist.
fn room_entry<'a>(rooms: &'a mut HashMap<RoomName, Room>, name: &RoomName, history: HistoryLimits) -> &'a mut Room {
    rooms.entry(name.clone()).or_insert_with(|| Room::new(history))
}

/// Appends a message to `room`, keeping `roomcast_history_bytes` up to date.
fn append(room: &mut Room, metrics: &Metrics, build: impl FnOnce(u64) -> String) -> (u64, ByteString) {
    let before = room.log.history_bytes() as u64;
    let appended = room.log.append(build);
    let after = room.log.history_bytes() as u64;
    if after >= before {
        metrics.history_bytes.fetch_add(after - before, Ordering::Relaxed);
    } else {
        metrics.history_bytes.fetch_sub(before - after, Ordering::Relaxed);
    }
    appended
}

/// [`publish_to`], unless the room already published `publish_id`: then
/// the `seq` it got.
fn publish_once(
    room: &mut Room,
    metrics: &Metrics,
    name: &RoomName,
    sender: &str,
    body: &RawValue,
    publish_id: Option<PublishId>,
    slow: &mut Vec<SessionId>,
) -> u64 {
    if let Some(seq) = publish_id.as_ref().and_then(|key| room.log.published(key)) {
        return seq;
    }
    let seq = publish_to(room, metrics, name, sender, body, slow);
    if let Some(key) = publish_id {
        room.log.remember(key, seq);
    }
    seq
}

/// Appends a message to `room` and fans it out: the JSON `message` frame to
/// JSON members, the bare body to raw members. Returns its `seq`.
fn publish_to(
    room: &mut Room,
    metrics: &Metrics,
    name: &RoomName,
    sender: &str,
    body: &RawValue,
    slow: &mut Vec<SessionId>,
) -> u64 {
    let ts = now_epoch_ms();
    let (seq, frame) = append(room, metrics, |seq| frame::message(name, seq, sender, ts, body.get()));
    let raw = room.members.has_raw().then(|| text(protocol::body_as_raw_text(body)));
    room.members.fan_out(None, Some(&OutFrame::Text(frame)), raw.as_ref(), slow);
    seq
}

impl Handler<Connect> for Registry {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, msg: Connect, ctx: &mut Context<Self>) -> Self::Result {
        let id = msg.handle.id();
        self.sessions.insert(id, Entry::new(msg.handle, MemberKind::Json, msg.identity, self.limits.auth));
        // In a cluster, answered once other nodes can find the session
        // (`direct`): before the client has its `welcome`, and so its id.
        let (done, connected) = tokio::sync::oneshot::channel();
        self.cluster_connected(id, ctx, done);
        Box::pin(async move { connected.await.unwrap_or(()) }.into_actor(self))
    }
}

impl Handler<ConnectRaw> for Registry {
    type Result = ResponseActFuture<Self, Result<(), RawRefusal>>;

    fn handle(&mut self, msg: ConnectRaw, ctx: &mut Context<Self>) -> Self::Result {
        if self.cluster.is_some() {
            return self.cluster_connect_raw(msg, ctx);
        }
        Box::pin(actix::fut::ready(self.connect_raw(msg, ctx)))
    }
}

impl Registry {
    fn connect_raw(&mut self, msg: ConnectRaw, ctx: &mut Context<Self>) -> Result<(), RawRefusal> {
        if !self.room_allowed(&msg.room) {
            return Err(RawRefusal::TooManyRooms);
        }
        let members = self.rooms.get(&msg.room).map_or(0, |room| room.members.len());
        if members >= self.limits.max_members_per_room {
            return Err(RawRefusal::RoomFull);
        }
        let id = msg.handle.id();
        self.sessions.insert(id, Entry::new(msg.handle, MemberKind::Raw, msg.identity, self.limits.auth));
        self.add_member(id, &msg.room, msg.access, None);
        self.settle(ctx);
        Ok(())
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
        if self.cluster.is_some() {
            self.cluster_command(msg, ctx);
            return self.settle(ctx);
        }
        let id = msg.id;
        let reference = msg.request.reference.as_deref();
        match msg.request.kind {
            RequestKind::Join { room, history, since, epoch, token: _ } => {
                let since = since.map(|since| (since, epoch));
                self.join(id, Join { room, history, since, grant: msg.grant }, reference)
            }
            RequestKind::Leave { room } => self.leave(id, room, reference, ctx),
            RequestKind::Publish { room, body, id: publish_id } => {
                self.publish(id, Publish { room, body, id: publish_id }, reference)
            }
            RequestKind::Direct { to, body } => self.direct(id, &to, &body, reference),
            RequestKind::Nick { name } => self.nick(id, name, reference),
            RequestKind::Rooms => {
                let rooms = self.occupied_rooms();
                self.answer_rooms(id, rooms, reference);
            }
            RequestKind::Members { room } => self.members(id, room, reference),
            // Answered by the session itself.
            RequestKind::Ping => self.reply(id, frame::pong(reference)),
            RequestKind::Auth { .. } => {}
        }
        self.settle(ctx);
    }
}

impl Handler<RawFrame> for Registry {
    type Result = ();

    fn handle(&mut self, msg: RawFrame, ctx: &mut Context<Self>) {
        if self.cluster.is_some() {
            self.cluster_raw_frame(msg, ctx);
            return self.settle(ctx);
        }
        let Some(entry) = self.sessions.get(&msg.id) else {
            return;
        };
        let Some(name) = entry.rooms.first() else {
            return;
        };
        let Some(room) = self.rooms.get_mut(name) else {
            return;
        };
        if room.members.get_mut(msg.id).is_some_and(|member| member.read_only) {
            // Raw clients get no JSON: a read-only member's frame is only counted.
            self.metrics.auth_failure(AuthFailure::Forbidden);
            return;
        }
        match msg.frame {
            OutFrame::Text(body) => {
                // JSON members get a `message` (with a seq, kept in history)
                // whose body is the text; raw members get the same bytes.
                let ts = now_epoch_ms();
                let sender = &entry.sender;
                let (_, frame) = append(room, &self.metrics, |seq| {
                    frame::message(name, seq, sender, ts, &protocol::json_str(&body))
                });
                let json = OutFrame::Text(frame);
                room.members.fan_out(Some(msg.id), Some(&json), Some(&OutFrame::Text(body)), &mut self.slow);
            }
            binary @ OutFrame::Binary(_) => room.members.fan_out(Some(msg.id), None, Some(&binary), &mut self.slow),
        }
        self.settle(ctx);
    }
}

impl Handler<ApiPublish> for Registry {
    type Result = ResponseActFuture<Self, Result<u64, ApiRefusal>>;

    fn handle(&mut self, msg: ApiPublish, ctx: &mut Context<Self>) -> Self::Result {
        if self.cluster.is_none() {
            return Box::pin(actix::fut::ready(self.api_publish(msg, ctx)));
        }
        let (done, outcome) = tokio::sync::oneshot::channel();
        let sender = frame::api_sender_fields(self.limits.auth);
        let body = cluster::Body::Json(msg.body.get());
        self.publish_in_redis(
            ctx,
            cluster::Turn::Node,
            &msg.room,
            &sender,
            body,
            msg.id.as_ref(),
            move |_, published, _| {
                let _ = done.send(published.map_err(|failure| match failure {
                    cluster::PublishFailure::Unavailable(why) => ApiRefusal::Unavailable(why),
                    cluster::PublishFailure::TooManyRooms => ApiRefusal::TooManyRooms,
                    cluster::PublishFailure::Unknown => ApiRefusal::Unknown,
                }));
            },
        );
        let outcome = async move { outcome.await.unwrap_or_else(|_| Err(ApiRefusal::Unavailable("stopped".into()))) };
        Box::pin(outcome.into_actor(self))
    }
}

impl Registry {
    fn api_publish(&mut self, msg: ApiPublish, ctx: &mut Context<Self>) -> Result<u64, ApiRefusal> {
        if !self.room_allowed(&msg.room) {
            return Err(ApiRefusal::TooManyRooms);
        }
        if !self.rooms.contains_key(&msg.room) {
            // Created empty by this publish: forgotten after empty_ttl like
            // any room nobody is in.
            self.emptied.push(msg.room.clone());
        }
        let room = room_entry(&mut self.rooms, &msg.room, self.limits.history);
        let sender = frame::api_sender_fields(self.limits.auth);
        let seq = publish_once(room, &self.metrics, &msg.room, &sender, &msg.body, msg.id, &mut self.slow);
        self.settle(ctx);
        Ok(seq)
    }
}

impl Handler<ListRooms> for Registry {
    type Result = ResponseActFuture<Self, Result<Vec<(RoomName, usize)>, String>>;

    fn handle(&mut self, _msg: ListRooms, _ctx: &mut Context<Self>) -> Self::Result {
        if self.cluster.is_none() {
            return Box::pin(actix::fut::ready(Ok(self.occupied_rooms())));
        }
        Box::pin(self.rooms_in_redis().into_actor(self))
    }
}

impl Handler<Reauth> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Reauth, ctx: &mut Context<Self>) {
        if self.cluster.is_some() {
            self.cluster_reauth(msg, ctx);
            return self.settle(ctx);
        }
        self.reauth(msg, ctx);
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
        let mut held = 0;
        for room in self.rooms.values_mut() {
            room.log.set_limits(self.limits.history);
            held += room.log.history_bytes() as u64;
        }
        self.metrics.history_bytes.store(held, Ordering::Relaxed);
    }
}
