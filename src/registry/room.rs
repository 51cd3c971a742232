//! One room: its members, its `seq`, its history ring, and fan-out.

use std::collections::VecDeque;

use bytestring::ByteString;
use indexmap::IndexMap;

use crate::protocol::SessionId;
use crate::session::handle::{OutFrame, Push, SessionHandle};

/// Which protocol a member speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberKind {
    /// `/ws`: JSON frames.
    Json,
    /// `/ws/{room}`: bare bodies, no JSON frames.
    Raw,
}

pub struct Member {
    pub handle: SessionHandle,
    pub kind: MemberKind,
    /// Granted `read` only (`auth.md`): may not publish.
    pub read_only: bool,
}

pub struct Room {
    seq: u64,
    /// Insertion-ordered for `members` replies, O(1) removal.
    members: IndexMap<SessionId, Member>,
    raw_members: usize,
    /// Stored `message` frames, oldest first; their seqs are consecutive.
    history: VecDeque<(u64, ByteString)>,
    /// Total length of the frames in `history`.
    history_bytes: usize,
    limits: HistoryLimits,
    /// Counts how often the room became empty; a timer that forgets the
    /// room carries the count it was set at and does nothing if it changed.
    empty_generation: u64,
    /// The protocol's `epoch`: new whenever a room starts at `seq` 1, so a
    /// client can tell a restarted room from the one it knew.
    epoch: Box<str>,
}

/// How much history a room keeps: `rooms.history` messages and
/// `rooms.history_bytes` bytes of them, whichever is less.
#[derive(Debug, Clone, Copy)]
pub struct HistoryLimits {
    pub messages: usize,
    pub bytes: usize,
}

impl Room {
    pub fn new(limits: HistoryLimits) -> Self {
        Room {
            seq: 0,
            members: IndexMap::new(),
            raw_members: 0,
            history: VecDeque::new(),
            history_bytes: 0,
            limits,
            empty_generation: 0,
            epoch: format!("{:016x}", fastrand::u64(..)).into(),
        }
    }

    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn contains(&self, id: SessionId) -> bool {
        self.members.contains_key(&id)
    }

    pub fn member_mut(&mut self, id: SessionId) -> Option<&mut Member> {
        self.members.get_mut(&id)
    }

    pub fn add(&mut self, id: SessionId, member: Member) {
        if member.kind == MemberKind::Raw {
            self.raw_members += 1;
        }
        self.members.insert(id, member);
    }

    /// Removes a member; when that empties the room, counts a new empty
    /// generation.
    pub fn remove(&mut self, id: SessionId) -> bool {
        match self.members.swap_remove(&id) {
            Some(member) => {
                if member.kind == MemberKind::Raw {
                    self.raw_members -= 1;
                }
                if self.members.is_empty() {
                    self.empty_generation += 1;
                }
                true
            }
            None => false,
        }
    }

    pub fn empty_generation(&self) -> u64 {
        self.empty_generation
    }

    pub fn member_ids(&self) -> impl Iterator<Item = SessionId> + '_ {
        self.members.keys().copied()
    }

    pub fn has_raw_members(&self) -> bool {
        self.raw_members > 0
    }

    /// New history limits (SIGHUP): drops the oldest messages beyond them.
    pub fn set_limits(&mut self, limits: HistoryLimits) {
        self.limits = limits;
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

    /// Queues `json` for JSON members and `raw` for raw members (either may
    /// be absent), skipping `except`. Clones share the bytes. Members whose
    /// queue is full are added to `slow`; nobody is waited for.
    pub fn fan_out(
        &self,
        except: Option<SessionId>,
        json: Option<&OutFrame>,
        raw: Option<&OutFrame>,
        slow: &mut Vec<SessionId>,
    ) {
        for (id, member) in &self.members {
            if Some(*id) == except {
                continue;
            }
            let frame = match member.kind {
                MemberKind::Json => json,
                MemberKind::Raw => raw,
            };
            if let Some(frame) = frame
                && member.handle.push(frame.clone()) == Push::Full
            {
                slow.push(*id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room_with_messages(limit: usize, count: u64) -> Room {
        let mut room = Room::new(HistoryLimits { messages: limit, bytes: usize::MAX });
        for _ in 0..count {
            room.append(|seq| format!("m{seq}"));
        }
        room
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
        room.set_limits(HistoryLimits { messages: 4, bytes: usize::MAX });
        assert_eq!(room.after(0, None).0.len(), 4);
        assert!(!room.after(1, None).1, "3..6 kept, not 2");
        assert!(room.after(2, None).1);
        let per_frame = room.history_bytes() / 4;
        room.set_limits(HistoryLimits { messages: 4, bytes: per_frame * 2 });
        assert_eq!(room.history_bytes(), per_frame * 2);
        room.set_limits(HistoryLimits { messages: 0, bytes: 100 });
        assert_eq!(room.history_bytes(), 0);
    }

    #[test]
    fn history_bytes_drop_the_oldest_and_never_leave_a_gap() {
        let mut room = Room::new(HistoryLimits { messages: 10, bytes: 10 });
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

    #[test]
    fn emptying_starts_a_new_epoch() {
        let mut room = Room::new(HistoryLimits { messages: 1, bytes: 100 });
        let limits = crate::session::handle::OutboundLimits { frames: 1, bytes: 1000, stall_ms: 1000 };
        let member = || Member {
            handle: SessionHandle::new(SessionId(1), limits, None),
            kind: MemberKind::Raw,
            read_only: false,
        };
        room.add(SessionId(1), member());
        assert!(room.has_raw_members());
        assert!(room.remove(SessionId(1)));
        assert!(!room.remove(SessionId(1)));
        assert_eq!(room.empty_generation(), 1);
        assert!(!room.has_raw_members());
    }
}
