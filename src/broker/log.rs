//! What a room is, whichever node asks: its `seq`, its `epoch`, its
//! history ring and the ids of its recent publishes. Members and fan-out
//! are each node's own (`members`).

use std::collections::{HashMap, VecDeque};

use bytestring::ByteString;

use crate::protocol::PublishId;

pub struct RoomLog {
    seq: u64,
    /// Stored `message` frames, oldest first; their seqs are consecutive.
    history: VecDeque<(u64, ByteString)>,
    /// Total length of the frames in `history`.
    history_bytes: usize,
    limits: HistoryLimits,
    /// The protocol's `epoch`: new whenever a room starts at `seq` 1, so a
    /// client can tell a restarted room from the one it knew.
    epoch: std::sync::Arc<str>,
    /// Idempotent publishes: id -> `seq`, and the ids oldest first.
    ids: HashMap<PublishId, u64>,
    id_order: VecDeque<(PublishId, u64)>,
}

/// How much history a room keeps: `rooms.history` messages and
/// `rooms.history_bytes` bytes of them, whichever is less; and how many
/// publish ids (`rooms.publish_ids`).
#[derive(Debug, Clone, Copy)]
pub struct HistoryLimits {
    pub messages: usize,
    pub bytes: usize,
    pub ids: usize,
}

impl RoomLog {
    pub fn new(limits: HistoryLimits) -> Self {
        RoomLog {
            seq: 0,
            history: VecDeque::new(),
            history_bytes: 0,
            limits,
            epoch: format!("{:016x}", fastrand::u64(..)).into(),
            ids: HashMap::new(),
            id_order: VecDeque::new(),
        }
    }

    /// The `seq` of the publish with `id`, if it is one of the room's last
    /// `rooms.publish_ids` publishes (a cluster's Redis keeps the same).
    pub fn published(&mut self, id: &PublishId) -> Option<u64> {
        self.forget_ids();
        self.ids.get(id).copied()
    }

    /// Remembers that the publish with `id` got `seq`.
    pub fn remember(&mut self, id: PublishId, seq: u64) {
        self.id_order.push_back((id.clone(), seq));
        self.ids.insert(id, seq);
        self.forget_ids();
    }

    /// Forgets the ids of publishes older than the last `ids` (by `seq`).
    fn forget_ids(&mut self) {
        while let Some((id, seq)) = self.id_order.front() {
            if *seq + self.limits.ids as u64 > self.seq {
                break;
            }
            if self.ids.get(id) == Some(seq) {
                self.ids.remove(id);
            }
            self.id_order.pop_front();
        }
    }

    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// The epoch, shared (each message's delivery carries it).
    pub fn shared_epoch(&self) -> std::sync::Arc<str> {
        self.epoch.clone()
    }

    /// New history limits (SIGHUP): drops the oldest messages (and ids)
    /// beyond them.
    pub fn set_limits(&mut self, limits: HistoryLimits) {
        self.limits = limits;
        self.forget_ids();
        while self.history.len() > limits.messages || self.history_bytes > limits.bytes {
            let Some((_, oldest)) = self.history.pop_front() else {
                break;
            };
            self.history_bytes -= oldest.len();
        }
    }

    /// Gives the next message its `seq`, builds its frame once with `build`,
    /// and keeps it in the history, dropping the oldest to stay within the
    /// limits. A frame larger than the byte limit is not kept, and then
    /// neither is anything before it: the history is always the newest
    /// messages without a gap.
    pub fn append(&mut self, build: impl FnOnce(u64) -> String) -> (u64, ByteString) {
        self.seq += 1;
        let frame = ByteString::from(build(self.seq));
        let fits = frame.len() <= self.limits.bytes && self.limits.messages > 0;
        while let Some((_, oldest)) = self.history.front() {
            let full = self.history.len() >= self.limits.messages
                || self.history_bytes + frame.len() > self.limits.bytes
                || !fits;
            if !full {
                break;
            }
            self.history_bytes -= oldest.len();
            self.history.pop_front();
        }
        if fits {
            self.history_bytes += frame.len();
            self.history.push_back((self.seq, frame.clone()));
        }
        (self.seq, frame)
    }

    /// The room's last `seq` (0 before any message).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The stored messages with `from <= seq <= to`, with their `seq`s.
    pub fn range(&self, from: u64, to: u64) -> impl Iterator<Item = (u64, &ByteString)> {
        self.history.iter().filter(move |(seq, _)| (from..=to).contains(seq)).map(|(seq, frame)| (*seq, frame))
    }

    /// Bytes of history kept.
    pub fn history_bytes(&self) -> usize {
        self.history_bytes
    }

    /// The last `count` stored messages, oldest first.
    pub fn recent(&self, count: usize) -> impl Iterator<Item = &str> {
        let skip = self.history.len().saturating_sub(count);
        self.history.iter().skip(skip).map(|(_, frame)| &**frame)
    }

    /// Recovery for `join` with `since` (and the epoch it belongs to): the
    /// stored messages after `since`, and whether they are every message
    /// after it.
    pub fn after(&self, since: u64, epoch: Option<&str>) -> (Vec<&str>, bool) {
        if since > self.seq || epoch.is_some_and(|epoch| epoch != &*self.epoch) {
            // The room was forgotten and started again.
            return (self.recent(usize::MAX).collect(), false);
        }
        let kept: Vec<&str> = self.history.iter().filter(|(seq, _)| *seq > since).map(|(_, f)| &**f).collect();
        let recovered = kept.len() as u64 == self.seq - since;
        (kept, recovered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room_with_messages(limit: usize, count: u64) -> RoomLog {
        let mut room = RoomLog::new(HistoryLimits { messages: limit, bytes: usize::MAX, ids: 2 });
        for _ in 0..count {
            room.append(|seq| format!("m{seq}"));
        }
        room
    }

    #[test]
    fn publish_ids_are_remembered_for_the_last_publishes() {
        let mut room = room_with_messages(3, 0);
        let id = |text: &str| PublishId::parse(text).unwrap();
        let publish = |room: &mut RoomLog, key: Option<&str>| {
            let (seq, _) = room.append(|seq| format!("m{seq}"));
            if let Some(key) = key {
                room.remember(id(key), seq);
            }
        };
        publish(&mut room, Some("a"));
        publish(&mut room, Some("b"));
        assert_eq!((room.published(&id("a")), room.published(&id("b"))), (Some(1), Some(2)));
        publish(&mut room, None);
        assert_eq!(room.published(&id("a")), None, "the last two publishes: a's is older");
        assert_eq!(room.published(&id("b")), Some(2));
    }

    #[test]
    fn history_keeps_the_last_messages() {
        let room = room_with_messages(3, 5);
        assert_eq!(room.recent(10).collect::<Vec<_>>(), ["m3", "m4", "m5"]);
        assert_eq!(room.recent(2).collect::<Vec<_>>(), ["m4", "m5"]);
        assert_eq!(room.recent(0).count(), 0);
    }

    #[test]
    fn recovery() {
        let room = room_with_messages(3, 5);
        assert_eq!(room.after(5, None), (vec![], true));
        assert_eq!(room.after(3, None), (vec!["m4", "m5"], true));
        assert_eq!(room.after(2, Some(room.epoch())), (vec!["m3", "m4", "m5"], true));
        assert_eq!(room.after(1, None), (vec!["m3", "m4", "m5"], false), "m2 was dropped");
        assert_eq!(room.after(9, None), (vec!["m3", "m4", "m5"], false), "the room restarted");
        assert_eq!(room.after(4, Some("another")), (vec!["m3", "m4", "m5"], false), "another epoch");
        let no_history = room_with_messages(0, 2);
        assert_eq!(no_history.after(2, None), (vec![], true));
        assert_eq!(no_history.after(1, None), (vec![], false));
        assert_ne!(room.epoch(), no_history.epoch(), "each room starts its own epoch");
    }

    #[test]
    fn smaller_limits_drop_the_oldest_at_once() {
        let mut room = room_with_messages(10, 6);
        room.set_limits(HistoryLimits { messages: 4, bytes: usize::MAX, ids: 2 });
        assert_eq!(room.after(0, None).0.len(), 4);
        assert!(!room.after(1, None).1, "3..6 kept, not 2");
        assert!(room.after(2, None).1);
        let per_frame = room.history_bytes() / 4;
        room.set_limits(HistoryLimits { messages: 4, bytes: per_frame * 2, ids: 2 });
        assert_eq!(room.history_bytes(), per_frame * 2);
        room.set_limits(HistoryLimits { messages: 0, bytes: 100, ids: 2 });
        assert_eq!(room.history_bytes(), 0);
    }

    #[test]
    fn history_bytes_drop_the_oldest_and_never_leave_a_gap() {
        let mut room = RoomLog::new(HistoryLimits { messages: 10, bytes: 10, ids: 2 });
        for _ in 0..3 {
            room.append(|seq| format!("msg{seq}"));
        }
        assert_eq!(room.recent(10).collect::<Vec<_>>(), ["msg2", "msg3"], "10 bytes hold two");
        assert_eq!(room.history_bytes(), 8);
        room.append(|seq| format!("a long message {seq}"));
        assert_eq!(room.recent(10).count(), 0, "too large to keep, and the older ones would leave a gap");
        assert_eq!(room.history_bytes(), 0);
        assert_eq!(room.after(3, None), (vec![], false), "seq 4 is lost");
        room.append(|seq| format!("m{seq}"));
        assert_eq!(room.recent(10).collect::<Vec<_>>(), ["m5"]);
        assert_eq!(room.after(4, None), (vec!["m5"], true));
    }
}
