//! Rooms as this node sees them, on one process or a cluster alike: the
//! members it feeds, and a [`Feed`] per room that turns what the broker
//! says of the room (its channel, in Redis) into gapless delivery.
//!
//! A join, without a gap: in a cluster the node subscribes to the room's
//! channel (and Redis confirms) before the join script runs, so every message after the
//! script's read reaches the channel the node listens to. Until the reply,
//! the joiner is *joining*: what the feed delivers meanwhile waits for it;
//! after the reply it gets its `joined` (history up to the room's `seq` at
//! the join), then what waited beyond that `seq`. A joiner whose node has
//! not yet delivered up to that `seq` is *behind* and skips what it has
//! from history. Presence events the joiner's own join preceded are not
//! its to see: it waits for its own join event first.

use actix::Context;
use bytestring::ByteString;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::queue::Turn;
use crate::auth::Access;
use crate::broker::{JoinRead, JoinReply, Joined, Joiner};
use crate::metrics::Metrics;
use crate::outbox::{OutFrame, Push};
use crate::protocol::{self, ErrorCode, RoomName, SessionId, frame};
use crate::registry::feed::{Feed, Step};
use crate::registry::members::{Member, MemberKind, Members};
use crate::registry::{Entry, Registry};

/// A member whose `joined` is on its way, and what the feed delivered to
/// the room meanwhile (with the `seq` of messages), in order.
pub(in crate::registry) struct Joining {
    id: SessionId,
    waiting: Vec<(Option<u64>, OutFrame)>,
    bytes: usize,
}

impl Joining {
    /// Keeps `frame` (a message with its `seq`, or a presence event) for
    /// the joiner until its `joined` is sent. Past `limit` bytes it is
    /// slow, as if its queue had overflowed (closed 1013).
    fn hold(&mut self, seq: Option<u64>, frame: &OutFrame, limit: usize, slow: &mut Vec<SessionId>) {
        self.bytes += frame.cost();
        self.waiting.push((seq, frame.clone()));
        if self.bytes > limit {
            slow.push(self.id);
        }
    }
}

pub(in crate::registry) struct LocalRoom {
    pub members: Members,
    feed: Feed,
    /// Subscribed and confirmed, with the feed anchored.
    subscribed: bool,
    joining: Vec<Joining>,
    /// Members that joined at a `seq` the feed has not reached.
    behind: Vec<(SessionId, u64)>,
    /// Joiners that have not yet seen their own join event.
    awaiting_own: Vec<SessionId>,
    /// Replies to this node's publishes whose message the feed has not yet
    /// delivered here: a publisher gets its `message` before its `ok`, as
    /// on one process.
    acks: Vec<Ack>,
}

/// A publish's reply that waits for the feed to pass its `seq`: the
/// session's `n`-th publish (its place in the session's reply order).
pub(in crate::registry) struct Ack {
    pub seq: u64,
    pub id: SessionId,
    pub n: u64,
    pub reply: Option<String>,
    /// The request's in-flight bytes, held until the reply goes: what waits
    /// here counts against the session's budget, which stops its reading.
    pub _ticket: crate::outbox::InFlight,
}

impl LocalRoom {
    fn new() -> LocalRoom {
        LocalRoom {
            members: Members::default(),
            feed: Feed::unanchored(),
            subscribed: false,
            joining: Vec::new(),
            behind: Vec::new(),
            awaiting_own: Vec::new(),
            acks: Vec::new(),
        }
    }

    /// The newest `seq` this node delivered to the room (0 before any).
    pub(in crate::registry) fn delivered(&self) -> u64 {
        self.feed.last()
    }

    fn is_joining(&self, id: SessionId) -> bool {
        self.joining.iter().any(|joining| joining.id == id)
    }

    fn forget_member(&mut self, id: SessionId) -> bool {
        self.joining.retain(|joining| joining.id != id);
        self.behind.retain(|(behind, _)| *behind != id);
        self.awaiting_own.retain(|awaiting| *awaiting != id);
        self.members.remove(id)
    }
}

/// A join as the cluster runs it.
pub(in crate::registry) struct RoomJoin {
    pub room: RoomName,
    pub read: JoinRead,
    pub access: Access,
    /// What the join's room token grants.
    pub grant: Option<Access>,
}

/// How a join ended.
pub(in crate::registry) enum JoinOutcome {
    Joined(JoinReply),
    Full(usize),
    /// A room nobody was in, and the cluster holds `rooms.max_rooms`.
    TooManyRooms,
    Unavailable(String),
}

/// The parts of a `presence` frame a node needs.
#[derive(Deserialize)]
struct PresenceHead<'a> {
    event: &'a str,
    id: &'a str,
}

/// The parts of a `message` frame a raw member needs.
#[derive(Deserialize)]
struct MessageParts<'a> {
    from: &'a str,
    #[serde(borrow)]
    body: &'a RawValue,
}

fn text(frame: String) -> OutFrame {
    OutFrame::Text(ByteString::from(frame))
}

impl Registry {
    /// The session's `members` entry as Redis keeps it.
    pub(in crate::registry) fn member_entry(&self, entry: &Entry, id: SessionId) -> String {
        frame::member_entry(id, entry.nick.as_deref(), entry.user(self.limits.auth))
    }

    /// Starts a join: the member is added here at once (joining), then the
    /// node subscribes if it must and the join script runs. `done` gets the
    /// outcome once the joiner has its place.
    pub(in crate::registry) fn join_room(
        &mut self,
        ctx: &mut Context<Self>,
        id: SessionId,
        join: RoomJoin,
        done: impl FnOnce(&mut Registry, JoinOutcome, &mut Context<Registry>) + 'static,
    ) {
        let Some(entry) = self.sessions.get(&id) else {
            return;
        };
        let member_entry = self.member_entry(entry, id);
        let (kind, handle) = (entry.kind, entry.handle.clone());
        let limits = (self.limits.max_members_per_room, self.limits.max_rooms);
        if let Some(why) = self.broker.down() {
            return done(self, JoinOutcome::Unavailable(why), ctx);
        }
        let room = self.rooms.entry(join.room.clone()).or_insert_with(LocalRoom::new);
        let is_new = !room.members.contains(id);
        if is_new {
            let member = Member { handle, kind, read_only: join.access == Access::Read, grant: join.grant };
            room.members.add(id, member);
            room.joining.push(Joining { id, waiting: Vec::new(), bytes: 0 });
            room.awaiting_own.push(id);
            if room.members.len() == 1 {
                Metrics::inc(&self.metrics.rooms);
            }
            if let Some(entry) = self.sessions.get_mut(&id) {
                entry.rooms.push(join.room.clone());
            }
        }
        let subscribe = !room.subscribed;
        let joiner = Joiner { id, entry: member_entry, limits, read: join.read.clone(), subscribe };
        let work = self.broker.join(&join.room, joiner);
        self.in_broker(ctx, Turn::Alone(id), work, move |registry, reply, ctx| {
            let outcome = match reply {
                Ok(JoinReply { joined: Joined::Full(count), .. }) => JoinOutcome::Full(count),
                Ok(JoinReply { joined: Joined::TooManyRooms, .. }) => JoinOutcome::TooManyRooms,
                Ok(reply) => JoinOutcome::Joined(reply),
                Err(error) => JoinOutcome::Unavailable(error.to_string()),
            };
            match &outcome {
                JoinOutcome::Joined(reply) => registry.joined_in_broker(id, &join.room, reply, subscribe, ctx),
                _ if is_new => registry.join_failed(id, &join.room),
                _ => {}
            }
            let top = match &outcome {
                JoinOutcome::Joined(reply) => Some(reply.top),
                _ => None,
            };
            done(registry, outcome, ctx);
            if let Some(top) = top {
                registry.release_joiner(id, &join.room, top);
                // The session ended (or its node was found dead) while the
                // join was on its way: what the join added in Redis goes.
                let gone = !registry.sessions.get(&id).is_some_and(|entry| entry.rooms.contains(&join.room));
                if gone {
                    registry.leave_in_broker(ctx, id, &join.room);
                }
            }
        });
    }

    /// The join script ran: anchor the feed (the room's first join here).
    fn joined_in_broker(
        &mut self,
        id: SessionId,
        name: &RoomName,
        reply: &JoinReply,
        subscribed_now: bool,
        ctx: &mut Context<Self>,
    ) {
        let Some(room) = self.rooms.get_mut(name) else {
            return;
        };
        if subscribed_now {
            room.subscribed = true;
        }
        if !matches!(reply.joined, Joined::Added(_)) {
            room.awaiting_own.retain(|awaiting| *awaiting != id);
        }
        if !room.feed.is_anchored() {
            let mut steps = Vec::new();
            room.feed.anchor(&reply.epoch, reply.top, &mut steps);
            self.apply_steps(name, steps, ctx);
        }
    }

    /// After the `joined` reply: what waited for the joiner follows, and it
    /// is behind if the feed has not reached its `seq` yet.
    fn release_joiner(&mut self, id: SessionId, name: &RoomName, top: u64) {
        let Some(room) = self.rooms.get_mut(name) else {
            return;
        };
        let Some(at) = room.joining.iter().position(|joining| joining.id == id) else {
            return;
        };
        let joining = room.joining.swap_remove(at);
        if let Some(member) = room.members.get(id) {
            for (seq, frame) in joining.waiting {
                if seq.is_none_or(|seq| seq > top) && member.handle.push(frame) == Push::Full {
                    self.slow.push(id);
                    break;
                }
            }
        }
        if room.feed.last() < top {
            room.behind.push((id, top));
        }
    }

    /// A join that did not happen: the member made for it goes.
    fn join_failed(&mut self, id: SessionId, name: &RoomName) {
        if let Some(entry) = self.sessions.get_mut(&id) {
            entry.rooms.retain(|room| room != name);
        }
        self.drop_local_member(id, name);
    }

    /// Removes a member from this node's room; the room goes (and the node
    /// unsubscribes) when nobody is left.
    pub(in crate::registry) fn drop_local_member(&mut self, id: SessionId, name: &RoomName) {
        let Some(room) = self.rooms.get_mut(name) else {
            return;
        };
        if !room.forget_member(id) || !room.members.is_empty() {
            return;
        }
        let Some(room) = self.rooms.remove(name) else {
            return;
        };
        self.metrics.rooms.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        self.broker.unsubscribe(name);
        // Nobody here waits for the room's messages any more.
        self.acks_due.extend(room.acks);
    }

    /// The publish reply `ack` goes out once the room's feed has delivered
    /// its message here (at once if it has).
    pub(in crate::registry) fn ack_after_delivery(&mut self, name: &RoomName, ack: Ack, ctx: &mut Context<Self>) {
        match self.rooms.get_mut(name) {
            Some(room) if room.delivered() < ack.seq => room.acks.push(ack),
            _ => self.publish_done(ack.id, ack.n, ack.reply, ctx),
        }
    }

    /// The replies that waited for messages the feed has now delivered (all
    /// of them after a restart: the numbering they waited on is gone).
    fn release_acks(&mut self, name: &RoomName, all: bool) {
        let Some(room) = self.rooms.get_mut(name) else {
            return;
        };
        let delivered = room.delivered();
        let (due, waiting) = std::mem::take(&mut room.acks).into_iter().partition(|ack| all || ack.seq <= delivered);
        room.acks = waiting;
        self.acks_due.extend::<Vec<Ack>>(due);
    }

    /// Ends a membership in Redis (with its leave event), in order with
    /// whatever this node sent before.
    pub(in crate::registry) fn leave_in_broker(&mut self, ctx: &mut Context<Self>, id: SessionId, name: &RoomName) {
        let work = self.broker.leave(name, id, self.limits.empty_ttl);
        // A failed leave is put right when Redis answers again (reconcile).
        self.in_broker(ctx, Turn::After(id), work, |_, _, _| {});
    }

    /// A session ended: it leaves its rooms here and in Redis.
    pub(in crate::registry) fn end_session(&mut self, id: SessionId, entry: Entry, ctx: &mut Context<Self>) {
        for name in &entry.rooms {
            self.drop_local_member(id, name);
            self.leave_in_broker(ctx, id, name);
        }
        let work = self.broker.session(id, false);
        self.in_broker(ctx, Turn::After(id), work, |_, _, _| {});
        self.requests.forget(id);
    }

    /// What the broker said of rooms (in one process: everything it did).
    pub(in crate::registry) fn deliver_events(&mut self, ctx: &mut Context<Self>) {
        let mut events = std::mem::take(&mut self.events);
        self.broker.take_events(&mut events);
        for event in events.drain(..) {
            self.broker_event(event, ctx);
        }
        self.events = events;
    }

    /// A message of `name`, to its feed.
    pub(in crate::registry) fn message_arrived(
        &mut self,
        name: &RoomName,
        seq: u64,
        epoch: &str,
        frame: ByteString,
        ctx: &mut Context<Self>,
    ) {
        let Some(room) = self.rooms.get_mut(name) else {
            return;
        };
        // One buffer for every message's steps (`deliver_steps` gives it back).
        let mut steps = std::mem::take(&mut self.steps);
        room.feed.arrived(seq, epoch, frame, &mut steps);
        self.apply_steps(name, steps, ctx);
    }

    pub(in crate::registry) fn presence_arrived(&mut self, name: &RoomName, presence: &str) {
        let Ok(head) = serde_json::from_str::<PresenceHead>(presence) else {
            return;
        };
        let Some(room) = self.rooms.get_mut(name) else {
            return;
        };
        let subject = SessionId::from_wire(head.id);
        // A joiner's own join event is not its to see, but the others' on
        // this node, as on any other.
        if head.event == "join"
            && let Some(at) = room.awaiting_own.iter().position(|id| Some(*id) == subject)
        {
            room.awaiting_own.swap_remove(at);
        }
        let frame = text(presence.to_string());
        let room = &mut *room;
        let skip = |id: SessionId, _: &Member| {
            Some(id) == subject || room.awaiting_own.contains(&id) || room.joining.iter().any(|j| j.id == id)
        };
        room.members.fan_out_unless(skip, Some(&frame), None, &mut self.slow);
        for joining in &mut room.joining {
            let json = room.members.get(joining.id).is_some_and(|member| member.kind == MemberKind::Json);
            if json && Some(joining.id) != subject && !room.awaiting_own.contains(&joining.id) {
                joining.hold(None, &frame, self.limits.outbound_bytes, &mut self.slow);
            }
        }
    }

    /// A raw member's binary frame, to the room's other raw members here.
    pub(in crate::registry) fn binary_arrived(
        &mut self,
        name: &RoomName,
        from: Option<SessionId>,
        bytes: bytes::Bytes,
    ) {
        let frame = OutFrame::Binary(bytes);
        let Some(room) = self.rooms.get_mut(name) else {
            return;
        };
        let skip = |id: SessionId, _: &Member| Some(id) == from || room.is_joining(id);
        room.members.fan_out_unless(skip, None, Some(&frame), &mut self.slow);
    }

    /// Carries out what a room's feed says, in order.
    pub(in crate::registry) fn apply_steps(&mut self, name: &RoomName, steps: Vec<Step>, ctx: &mut Context<Self>) {
        let restarted = steps.iter().any(|step| matches!(step, Step::Restarted(_)));
        self.deliver_steps(name, steps, ctx);
        self.release_acks(name, restarted);
        if !self.acks_due.is_empty() {
            for ack in std::mem::take(&mut self.acks_due) {
                self.publish_done(ack.id, ack.n, ack.reply, ctx);
            }
        }
    }

    fn deliver_steps(&mut self, name: &RoomName, mut steps: Vec<Step>, ctx: &mut Context<Self>) {
        for step in steps.drain(..) {
            match step {
                Step::Deliver(seq, frame) => self.deliver_message(name, seq, frame),
                Step::Fetch { from, to } => {
                    Metrics::inc(&self.metrics.cluster.repairs);
                    self.fetch(name.clone(), from, to, ctx);
                }
                Step::Lost { from, to } => {
                    log::warn!(
                        "cluster: {name} messages {from}..={to} were gone from history before this node got them"
                    );
                    self.resync(name);
                }
                Step::Restarted(epoch) => {
                    log::info!("cluster: {name} started again (epoch {epoch})");
                    if let Some(room) = self.rooms.get_mut(name) {
                        room.behind.clear();
                    }
                    self.resync(name);
                }
            }
        }
        self.steps = steps;
    }

    /// A message in `seq` order to this node's members of the room.
    fn deliver_message(&mut self, name: &RoomName, seq: u64, frame: ByteString) {
        let Some(room) = self.rooms.get_mut(name) else {
            return;
        };
        // Raw members get the body alone, and not the messages they sent.
        let raw = match room.members.has_raw() {
            true => serde_json::from_str::<MessageParts>(&frame)
                .ok()
                .map(|parts| (SessionId::from_wire(parts.from), text(protocol::body_as_raw_text(parts.body)))),
            false => None,
        };
        let (from, raw) = match raw {
            Some((from, raw)) => (from, Some(raw)),
            None => (None, None),
        };
        let json = OutFrame::Text(frame);
        let room = &mut *room;
        if raw.is_none() && room.joining.is_empty() && room.behind.is_empty() {
            // Everyone here takes the same frame: nobody to skip.
            return room.members.fan_out(None, Some(&json), None, &mut self.slow);
        }
        let skip = |id: SessionId, member: &Member| {
            (member.kind == MemberKind::Raw && Some(id) == from)
                || room.joining.iter().any(|joining| joining.id == id)
                || room.behind.iter().any(|(behind, top)| *behind == id && seq <= *top)
        };
        room.members.fan_out_unless(skip, Some(&json), raw.as_ref(), &mut self.slow);
        for joining in &mut room.joining {
            let Some(member) = room.members.get(joining.id) else {
                continue;
            };
            let frame = match member.kind {
                MemberKind::Json => &json,
                MemberKind::Raw if Some(joining.id) == from => continue,
                MemberKind::Raw => match &raw {
                    Some(raw) => raw,
                    None => continue,
                },
            };
            joining.hold(Some(seq), frame, self.limits.outbound_bytes, &mut self.slow);
        }
        room.behind.retain(|(_, top)| *top > seq);
    }

    /// Tells the room's JSON members that messages are missing or the room
    /// started again: a `joined` with `recovered: false` and the epoch.
    fn resync(&mut self, name: &RoomName) {
        let Some(room) = self.rooms.get_mut(name) else {
            return;
        };
        let frame =
            text(frame::joined(name, room.members.len(), room.feed.epoch(), std::iter::empty(), Some(false), None));
        let room = &*room;
        room.members.fan_out_unless(|id, _| room.is_joining(id), Some(&frame), None, &mut self.slow);
    }

    /// Reads a gap of the room's history; tried again while Redis does not
    /// answer.
    fn fetch(&mut self, name: RoomName, from: u64, to: Option<u64>, ctx: &mut Context<Self>) {
        if !self.rooms.contains_key(&name) {
            return;
        }
        let work = self.broker.history(&name, from, to);
        self.in_broker(ctx, Turn::Node, work, move |registry, range, ctx| match range {
            Ok(range) => {
                let Some(room) = registry.rooms.get_mut(&name) else {
                    return;
                };
                let mut steps = Vec::new();
                room.feed.repaired(&range.epoch, range.entries, &mut steps);
                registry.apply_steps(&name, steps, ctx);
            }
            Err(error) => {
                log::debug!("cluster: reading {name}'s history failed ({error}); trying again");
                let retry = std::time::Duration::from_millis(200);
                actix::AsyncContext::run_later(ctx, retry, move |registry, ctx| registry.fetch(name, from, to, ctx));
            }
        });
    }

    /// The subscriber is back: every room may have missed messages, and
    /// joiners may have missed their own join event.
    pub(in crate::registry) fn resubscribed(&mut self, ctx: &mut Context<Self>) {
        let mut work = Vec::new();
        for (name, room) in &mut self.rooms {
            room.awaiting_own.clear();
            let mut steps = Vec::new();
            room.feed.reconnected(&mut steps);
            work.push((name.clone(), steps));
        }
        for (name, steps) in work {
            self.apply_steps(&name, steps, ctx);
        }
    }

    /// Whether `id` is a member of `name` here (and done joining).
    pub(in crate::registry) fn local_member(&mut self, id: SessionId, name: &RoomName) -> Option<&mut Member> {
        let room = self.rooms.get_mut(name)?;
        if room.is_joining(id) {
            return None;
        }
        room.members.get_mut(id)
    }

    /// The `joined` reply for a JSON session's join.
    pub(in crate::registry) fn joined_frame(
        name: &RoomName,
        read: &JoinRead,
        reply: &JoinReply,
        reference: Option<&RawValue>,
    ) -> String {
        let history = reply.entries.iter().map(|(_, frame)| frame.as_str());
        let recovered = match read {
            JoinRead::Since(since, _) => Some(reply.recovered(*since)),
            JoinRead::Recent(_) => None,
        };
        let count = match reply.joined {
            Joined::Added(count) | Joined::Already(count) | Joined::Full(count) => count,
            Joined::TooManyRooms => 0,
        };
        frame::joined(name, count, &reply.epoch, history, recovered, reference)
    }

    /// The error for a join that failed.
    pub(in crate::registry) fn join_error(name: &RoomName, outcome: &JoinOutcome) -> Option<(ErrorCode, String)> {
        match outcome {
            JoinOutcome::Joined(_) => None,
            JoinOutcome::Full(count) => {
                Some((ErrorCode::RoomFull, format!("room {name} has {count} members, the most allowed")))
            }
            JoinOutcome::TooManyRooms => {
                let message = "the server holds its most rooms (rooms.max_rooms); try an existing room";
                Some((ErrorCode::TooManyRooms, message.to_string()))
            }
            JoinOutcome::Unavailable(why) => Some((ErrorCode::Unavailable, unavailable(why))),
        }
    }
}

/// An `unavailable` error's message.
pub(in crate::registry) fn unavailable(why: &str) -> String {
    format!("the cluster's Redis is unavailable ({why}); try again")
}
