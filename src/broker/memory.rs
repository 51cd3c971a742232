//! The broker of one process: what Redis holds for a cluster, held here,
//! with the same rules (the scripts of `redis/` say them for Redis).
//! A room is its log (`seq`, epoch, history, publish ids) and its members'
//! entries; an empty room is kept for `empty_ttl` and counts against
//! `rooms.max_rooms` meanwhile. Everything answers at once, and what Redis
//! would publish on a room's channel (messages, presence) becomes an
//! [`Event`] the hub takes after each call, through the same path as a
//! cluster's deliveries.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;

use super::log::{HistoryLimits, RoomLog};
use super::{
    Answer, Broker, Done, Event, Holdings, JoinRead, JoinReply, Joined, Joiner, Message, MessageText, Outcome,
    Presence, Published, Publishing, Range,
};
use crate::metrics::Metrics;
use crate::protocol::{RoomName, SessionId, frame};

struct MemoryRoom {
    log: RoomLog,
    /// Each member's `members` entry, by session id (the order `members`
    /// lists them in).
    members: BTreeMap<SessionId, String>,
    /// When the room, empty, is forgotten (`None` while it has members).
    forget_at: Option<Instant>,
    /// It has an entry in `expiring` (at most one, however often it empties).
    expiring: bool,
}

impl MemoryRoom {
    fn new(limits: HistoryLimits) -> MemoryRoom {
        MemoryRoom { log: RoomLog::new(limits), members: BTreeMap::new(), forget_at: None, expiring: false }
    }

    fn expired(&self, now: Instant) -> bool {
        self.forget_at.is_some_and(|at| at <= now)
    }
}

pub struct MemoryBroker {
    rooms: HashMap<RoomName, MemoryRoom>,
    /// Empty rooms by when they are forgotten, one entry per room at most
    /// (so at most `rooms.max_rooms` entries, however often a client empties
    /// a room): an entry whose room has members again is dropped, one whose
    /// room emptied again later goes back in at the new time.
    expiring: BinaryHeap<Reverse<(Instant, RoomName)>>,
    limits: HistoryLimits,
    events: Vec<Event>,
    metrics: Arc<Metrics>,
}

impl MemoryBroker {
    pub fn new(limits: HistoryLimits, metrics: Arc<Metrics>) -> MemoryBroker {
        MemoryBroker { rooms: HashMap::new(), expiring: BinaryHeap::new(), limits, events: Vec::new(), metrics }
    }

    /// What the room's channel carried since the last call.
    pub fn take_events(&mut self, into: &mut Vec<Event>) {
        into.append(&mut self.events);
    }

    /// Forgets the empty rooms whose `empty_ttl` has passed.
    pub fn expire(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((at, _))) = self.expiring.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, name))) = self.expiring.pop() else {
                break;
            };
            let Some(room) = self.rooms.get_mut(&name) else {
                continue;
            };
            room.expiring = false;
            match room.forget_at {
                Some(at) if at <= now => {
                    self.forget(&name);
                    log::debug!("room {name} forgotten after empty_ttl");
                }
                Some(at) => {
                    room.expiring = true;
                    self.expiring.push(Reverse((at, name)));
                }
                None => {}
            }
        }
        self.count();
    }

    fn forget(&mut self, name: &RoomName) {
        if let Some(room) = self.rooms.remove(name) {
            self.metrics.history_bytes.fetch_sub(room.log.history_bytes() as u64, Ordering::Relaxed);
        }
    }

    fn count(&self) {
        self.metrics.rooms_held.store(self.rooms.len() as u64, Ordering::Relaxed);
    }

    /// The room called `name` as it is now: one whose `empty_ttl` passed
    /// is gone (Redis expires its keys the same way).
    fn live_room(&mut self, name: &RoomName) -> Option<&mut MemoryRoom> {
        if self.rooms.get(name).is_some_and(|room| room.expired(Instant::now())) {
            self.forget(name);
        }
        self.rooms.get_mut(name)
    }

    /// Whether one more room may be made (`rooms.max_rooms`, empty rooms
    /// within `empty_ttl` counted).
    fn may_make_room(&mut self, max_rooms: usize) -> bool {
        self.expire();
        self.rooms.len() < max_rooms
    }

    fn empty_from_now(&mut self, name: &RoomName, empty_ttl: Duration) {
        if empty_ttl.is_zero() {
            self.forget(name);
            return;
        }
        let at = Instant::now() + empty_ttl;
        if let Some(room) = self.rooms.get_mut(name) {
            room.forget_at = Some(at);
            if !std::mem::replace(&mut room.expiring, true) {
                self.expiring.push(Reverse((at, name.clone())));
            }
        }
    }

    /// Session `id` joins `name` (its `members` entry `entry`) unless the
    /// room is full or would be one room too many, and the reply reads what
    /// `read` asks of the history, as the join script does.
    pub fn join(
        &mut self,
        name: &RoomName,
        id: SessionId,
        entry: &str,
        limits: (usize, usize),
        read: &JoinRead,
    ) -> JoinReply {
        let (max_members, max_rooms) = limits;
        let exists = self.live_room(name).is_some();
        let count = self.rooms.get(name).map_or(0, |room| room.members.len());
        let is_member = self.rooms.get(name).is_some_and(|room| room.members.contains_key(&id));
        let joined = match is_member {
            true => Joined::Already(count),
            false if count >= max_members => return JoinReply { joined: Joined::Full(count), ..JoinReply::default() },
            false if !exists && !self.may_make_room(max_rooms) => {
                return JoinReply { joined: Joined::TooManyRooms, ..JoinReply::default() };
            }
            false => Joined::Added(count + 1),
        };
        let limits = self.limits;
        let room = self.rooms.entry(name.clone()).or_insert_with(|| MemoryRoom::new(limits));
        if !is_member {
            room.forget_at = None;
            room.members.insert(id, entry.to_string());
            self.events.push(Event::Presence { room: name.clone(), frame: presence(name, "join", entry) });
        }
        let top = room.log.seq();
        let (entries, reset) = match read {
            JoinRead::Since(since, epoch) => {
                let other_epoch = epoch.as_deref().is_some_and(|epoch| epoch != room.log.epoch());
                match *since > top || other_epoch {
                    true => (room.log.range(0, top).collect::<Vec<_>>(), true),
                    false => (room.log.range(since + 1, top).collect(), false),
                }
            }
            JoinRead::Recent(count) => {
                let all: Vec<_> = room.log.range(0, top).collect();
                let skip = all.len().saturating_sub(*count);
                (all.into_iter().skip(skip).collect(), false)
            }
        };
        let entries = entries.into_iter().map(|(seq, frame)| (seq, frame.to_string())).collect();
        let reply = JoinReply { joined, epoch: room.log.epoch().to_string(), top, entries, reset };
        self.count();
        reply
    }

    /// Session `id` leaves `name`; an emptied room is forgotten after
    /// `empty_ttl`. Returns the members left (`None`: it was not one).
    pub fn leave(&mut self, name: &RoomName, id: SessionId, empty_ttl: Duration) -> Option<usize> {
        let room = self.rooms.get_mut(name)?;
        let entry = room.members.remove(&id)?;
        let left = room.members.len();
        self.events.push(Event::Presence { room: name.clone(), frame: presence(name, "leave", &entry) });
        if left == 0 {
            self.empty_from_now(name, empty_ttl);
        }
        self.count();
        Some(left)
    }

    /// Publishes `message` to `name`, unless its id is one of the room's
    /// last `rooms.publish_ids` publishes (then that one's `seq`); a room
    /// nobody is in (an API publish's) is made if one more may be, and
    /// kept for `empty_ttl` from now.
    pub fn publish(&mut self, name: &RoomName, message: &Message<'_>) -> Outcome {
        let exists = self.live_room(name).is_some();
        if !exists && !self.may_make_room(message.bounds.max_rooms) {
            return Outcome::TooManyRooms;
        }
        let limits = self.limits;
        let room = self.rooms.entry(name.clone()).or_insert_with(|| MemoryRoom::new(limits));
        let epoch = room.log.epoch().to_string();
        if let Some(seq) = message.id.and_then(|id| room.log.published(id)) {
            return Outcome::Published(Published { seq, epoch, repeated: true });
        }
        let before = room.log.history_bytes();
        let (seq, frame) = room.log.append(|seq| message.frame(seq));
        let after = room.log.history_bytes();
        if let Some(id) = message.id {
            room.log.remember(id.clone(), seq);
        }
        let empty = room.members.is_empty();
        let epoch_shared = room.log.shared_epoch();
        self.metrics.history_bytes.fetch_add(after as u64, Ordering::Relaxed);
        self.metrics.history_bytes.fetch_sub(before as u64, Ordering::Relaxed);
        if empty {
            self.empty_from_now(name, message.bounds.empty_ttl);
        }
        self.events.push(Event::Message { room: name.clone(), seq, epoch: epoch_shared, frame });
        self.count();
        Outcome::Published(Published { seq, epoch, repeated: false })
    }

    /// The room's epoch, last `seq` and the kept messages `from..=to`.
    pub fn history(&mut self, name: &RoomName, from: u64, to: Option<u64>) -> Range {
        let limits = self.limits;
        let room = self.rooms.entry(name.clone()).or_insert_with(|| MemoryRoom::new(limits));
        let top = room.log.seq();
        let entries = room.log.range(from, to.unwrap_or(top)).map(|(seq, frame)| (seq, frame.to_string())).collect();
        Range { epoch: room.log.epoch().to_string(), top, entries }
    }

    /// The `members` entries of a room, by session id.
    pub fn members(&self, name: &RoomName) -> Vec<String> {
        self.rooms.get(name).map(|room| room.members.values().cloned().collect()).unwrap_or_default()
    }

    /// Every room with members, and how many, by name.
    pub fn rooms(&self) -> Vec<(RoomName, usize)> {
        let mut rooms: Vec<_> = self
            .rooms
            .iter()
            .filter(|(_, room)| !room.members.is_empty())
            .map(|(name, room)| (name.clone(), room.members.len()))
            .collect();
        rooms.sort();
        rooms
    }

    /// Session `id`'s new `members` entry in each of `rooms`.
    pub fn rename(&mut self, rooms: &[RoomName], id: SessionId, entry: &str) {
        for name in rooms {
            if let Some(slot) = self.rooms.get_mut(name).and_then(|room| room.members.get_mut(&id)) {
                *slot = entry.to_string();
            }
        }
    }

    /// SIGHUP's history limits, for the rooms held too.
    pub fn set_limits(&mut self, limits: HistoryLimits) {
        self.limits = limits;
        let mut held = 0;
        for room in self.rooms.values_mut() {
            room.log.set_limits(limits);
            held += room.log.history_bytes() as u64;
        }
        self.metrics.history_bytes.store(held, Ordering::Relaxed);
    }
}

/// A `presence` frame from a `members` entry, as the join and leave scripts
/// make it.
fn presence(room: &RoomName, event: &str, entry: &str) -> String {
    let fields = entry.strip_prefix('{').unwrap_or(entry);
    format!("{{\"type\":\"presence\",\"room\":\"{room}\",\"event\":\"{event}\",{fields}")
}

impl Message<'_> {
    /// The frame with its `seq`.
    fn frame(&self, seq: u64) -> String {
        match self.text {
            MessageText::Json => format!("{}{seq}{}", self.head, self.tail),
            MessageText::Raw(text) => frame::message_of_text(self.head, seq, self.tail, text),
        }
    }
}

fn now<T>(value: T) -> Done<Answer<T>> {
    Done::Now(Ok(value))
}

impl Broker for MemoryBroker {
    fn runtime(&self) -> Option<tokio::runtime::Handle> {
        None
    }

    fn down(&self) -> Option<String> {
        None
    }

    fn publish(&mut self, room: &RoomName, message: &Message<'_>) -> Done<Publishing> {
        Done::Now((Ok((MemoryBroker::publish(self, room, message), 1)), Duration::ZERO))
    }

    fn history(&mut self, room: &RoomName, from: u64, to: Option<u64>) -> Done<Answer<Range>> {
        now(MemoryBroker::history(self, room, from, to))
    }

    fn relay_binary(&mut self, room: &RoomName, from: SessionId, bytes: Bytes) -> Done<Answer<()>> {
        self.events.push(Event::Binary { room: room.clone(), from: Some(from), bytes });
        now(())
    }

    fn direct(&mut self, _to: SessionId, _payload: String) -> Option<Done<Answer<bool>>> {
        None
    }

    fn unsubscribe(&mut self, _room: &RoomName) {}

    fn take_events(&mut self, into: &mut Vec<Event>) {
        MemoryBroker::take_events(self, into);
    }

    fn events(&mut self) -> Option<tokio::sync::mpsc::Receiver<Event>> {
        None
    }

    fn tick(&mut self) {
        self.expire();
    }

    fn set_limits(&mut self, history: HistoryLimits, _empty_ttl: Duration) {
        MemoryBroker::set_limits(self, history);
    }

    fn shut_down(&mut self, _empty_ttl: Duration) -> Done<()> {
        Done::Now(())
    }
}

impl Presence for MemoryBroker {
    fn join(&mut self, room: &RoomName, joiner: Joiner) -> Done<Answer<JoinReply>> {
        now(MemoryBroker::join(self, room, joiner.id, &joiner.entry, joiner.limits, &joiner.read))
    }

    fn leave(&mut self, room: &RoomName, id: SessionId, empty_ttl: Duration) -> Done<Answer<Option<usize>>> {
        now(MemoryBroker::leave(self, room, id, empty_ttl))
    }

    fn members(&mut self, room: &RoomName) -> Done<Answer<Vec<String>>> {
        now(MemoryBroker::members(self, room))
    }

    fn rooms(&mut self) -> Done<Answer<Vec<(RoomName, usize)>>> {
        now(MemoryBroker::rooms(self))
    }

    fn rename(&mut self, rooms: Vec<RoomName>, id: SessionId, entry: String) -> Done<Answer<()>> {
        MemoryBroker::rename(self, &rooms, id, &entry);
        now(())
    }

    fn session(&mut self, _id: SessionId, _open: bool) -> Done<Answer<()>> {
        now(())
    }

    fn admit(&mut self, _user: &Arc<str>, _max: usize) -> Option<Done<Answer<bool>>> {
        None
    }

    fn release(&mut self, _user: Arc<str>) -> Done<Answer<()>> {
        now(())
    }

    fn restore(&mut self, _holdings: Holdings, _empty_ttl: Duration) -> Done<()> {
        Done::Now(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::RoomBounds;

    fn broker(messages: usize) -> MemoryBroker {
        let limits = HistoryLimits { messages, bytes: usize::MAX, ids: 10 };
        MemoryBroker::new(limits, Arc::new(Metrics::default()))
    }

    fn room(name: &str) -> RoomName {
        RoomName::parse(name).unwrap()
    }

    fn message(max_rooms: usize) -> Message<'static> {
        Message {
            id: None,
            head: "{\"seq\":",
            tail: "}",
            text: MessageText::Json,
            bounds: RoomBounds {
                history: 10,
                history_bytes: usize::MAX,
                publish_ids: 10,
                empty_ttl: Duration::from_secs(60),
                max_rooms,
            },
            occupied: true,
            min_seq: 1,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_room_is_held_for_empty_ttl_then_forgotten() {
        let mut broker = broker(10);
        let entry = "{\"id\":\"1\",\"nick\":null}";
        let joined = broker.join(&room("a"), SessionId(1), entry, (10, 1), &JoinRead::Recent(0));
        assert_eq!(joined.joined, Joined::Added(1));
        let mut events = Vec::new();
        broker.take_events(&mut events);
        assert!(
            matches!(&events[..], [Event::Presence { frame, .. }] if frame.contains("\"event\":\"join\",\"id\":\"1\""))
        );
        assert!(matches!(broker.publish(&room("a"), &message(1)), Outcome::Published(Published { seq: 1, .. })));
        assert_eq!(broker.leave(&room("a"), SessionId(1), Duration::from_secs(5)), Some(0));
        let other = broker.join(&room("b"), SessionId(2), entry, (10, 1), &JoinRead::Recent(0));
        assert_eq!(other.joined, Joined::TooManyRooms, "the empty room still counts");
        tokio::time::advance(Duration::from_secs(5)).await;
        let again = broker.join(&room("b"), SessionId(2), entry, (10, 1), &JoinRead::Recent(0));
        assert_eq!(again.joined, Joined::Added(1), "a forgotten");
        let back = broker.join(&room("a"), SessionId(1), entry, (10, 2), &JoinRead::Since(1, None));
        assert_eq!((back.top, back.reset), (0, true), "a started again: nothing recovered");
    }

    #[tokio::test(start_paused = true)]
    async fn a_room_emptied_again_and_again_waits_once() {
        let mut broker = broker(10);
        for _ in 0..1000 {
            broker.join(&room("a"), SessionId(1), "{}", (10, 10), &JoinRead::Recent(0));
            broker.leave(&room("a"), SessionId(1), Duration::from_secs(5));
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        assert_eq!(broker.expiring.len(), 1, "one entry for the room, not one per emptying");
        tokio::time::advance(Duration::from_secs(4)).await;
        broker.expire();
        assert_eq!(broker.expiring.len(), 1, "waits for the last emptying's time");
        tokio::time::advance(Duration::from_secs(1)).await;
        broker.expire();
        assert!(broker.expiring.is_empty(), "{:?}", broker.expiring);
        assert_eq!(broker.metrics.rooms_held.load(Ordering::Relaxed), 0, "forgotten");
    }

    #[tokio::test(start_paused = true)]
    async fn joins_read_history_and_count_members() {
        let mut broker = broker(2);
        let entry = |id: u64| format!("{{\"id\":\"{id}\"}}");
        broker.join(&room("r"), SessionId(1), &entry(1), (2, 9), &JoinRead::Recent(0));
        for _ in 0..3 {
            broker.publish(&room("r"), &message(9));
        }
        let joined = broker.join(&room("r"), SessionId(2), &entry(2), (2, 9), &JoinRead::Recent(5));
        assert_eq!((joined.joined, joined.top), (Joined::Added(2), 3));
        assert_eq!(joined.entries, [(2, "{\"seq\":2}".to_string()), (3, "{\"seq\":3}".to_string())]);
        let full = broker.join(&room("r"), SessionId(3), &entry(3), (2, 9), &JoinRead::Recent(0));
        assert_eq!(full.joined, Joined::Full(2));
        let since = broker.join(&room("r"), SessionId(2), &entry(2), (2, 9), &JoinRead::Since(1, None));
        assert_eq!((since.joined, since.recovered(1)), (Joined::Already(2), true));
        assert!(!broker.join(&room("r"), SessionId(2), &entry(2), (2, 9), &JoinRead::Since(0, None)).recovered(0));
        assert_eq!(broker.members(&room("r")), [entry(1), entry(2)]);
        assert_eq!(broker.rooms(), [(room("r"), 2)]);
    }
}
