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
}

pub struct Room {
    seq: u64,
    /// Insertion-ordered for `members` replies, O(1) removal.
    members: IndexMap<SessionId, Member>,
    raw_members: usize,
    /// Stored `message` frames, oldest first; their seqs are consecutive.
    history: VecDeque<(u64, ByteString)>,
    history_limit: usize,
    /// Counts how often the room became empty; a timer that forgets the
    /// room carries the epoch it was set in and does nothing if it changed.
    empty_epoch: u64,
}

impl Room {
    pub fn new(history_limit: usize) -> Self {
        Room {
            seq: 0,
            members: IndexMap::new(),
            raw_members: 0,
            history: VecDeque::with_capacity(history_limit.min(64)),
            history_limit,
            empty_epoch: 0,
        }
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

    pub fn add(&mut self, id: SessionId, member: Member) {
        if member.kind == MemberKind::Raw {
            self.raw_members += 1;
        }
        self.members.insert(id, member);
    }

    /// Removes a member; when that empties the room, starts a new empty
    /// epoch.
    pub fn remove(&mut self, id: SessionId) -> bool {
        match self.members.swap_remove(&id) {
            Some(member) => {
                if member.kind == MemberKind::Raw {
                    self.raw_members -= 1;
                }
                if self.members.is_empty() {
                    self.empty_epoch += 1;
                }
                true
            }
            None => false,
        }
    }

    pub fn empty_epoch(&self) -> u64 {
        self.empty_epoch
    }

    pub fn member_ids(&self) -> impl Iterator<Item = SessionId> + '_ {
        self.members.keys().copied()
    }

    pub fn has_raw_members(&self) -> bool {
        self.raw_members > 0
    }

    /// Gives the next message its `seq`, builds its frame once with `build`,
    /// and keeps it in the history.
    pub fn append(&mut self, build: impl FnOnce(u64) -> String) -> (u64, ByteString) {
        self.seq += 1;
        let frame = ByteString::from(build(self.seq));
        if self.history_limit > 0 {
            if self.history.len() == self.history_limit {
                self.history.pop_front();
            }
            self.history.push_back((self.seq, frame.clone()));
        }
        (self.seq, frame)
    }

    /// The last `count` stored messages, oldest first.
    pub fn recent(&self, count: usize) -> impl Iterator<Item = &str> {
        let skip = self.history.len().saturating_sub(count);
        self.history.iter().skip(skip).map(|(_, frame)| &**frame)
    }

    /// Recovery for `join` with `since`: the stored messages after `since`,
    /// and whether they are every message after it.
    pub fn after(&self, since: u64) -> (Vec<&str>, bool) {
        if since > self.seq {
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
        let mut room = Room::new(limit);
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
        assert_eq!(room.after(5), (vec![], true));
        assert_eq!(room.after(3), (vec!["m4", "m5"], true));
        assert_eq!(room.after(2), (vec!["m3", "m4", "m5"], true));
        assert_eq!(room.after(1), (vec!["m3", "m4", "m5"], false), "m2 was dropped");
        assert_eq!(room.after(9), (vec!["m3", "m4", "m5"], false), "the room restarted");
        let no_history = room_with_messages(0, 2);
        assert_eq!(no_history.after(2), (vec![], true));
        assert_eq!(no_history.after(1), (vec![], false));
    }

    #[test]
    fn emptying_starts_a_new_epoch() {
        let mut room = Room::new(1);
        let member = || Member { handle: SessionHandle::new(SessionId(1), 1, None), kind: MemberKind::Raw };
        room.add(SessionId(1), member());
        assert!(room.has_raw_members());
        assert!(room.remove(SessionId(1)));
        assert!(!room.remove(SessionId(1)));
        assert_eq!(room.empty_epoch(), 1);
        assert!(!room.has_raw_members());
    }
}
