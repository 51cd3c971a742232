//! The members of a room on this node, and fan-out to them: what feeds
//! local sessions, whoever orders the room's messages (see `history`).

use indexmap::IndexMap;

use crate::auth::Access;
use crate::outbox::{OutFrame, Push, SessionHandle};
use crate::protocol::SessionId;

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
    /// Granted `read` only (`auth.md`): may not publish. Computed again
    /// whenever the session's grants may have changed (`auth`, a join).
    pub read_only: bool,
    /// What a room token gave with the join (it outlives a token refresh).
    pub grant: Option<Access>,
}

#[derive(Default)]
pub struct Members {
    /// Insertion-ordered for `members` replies, O(1) removal.
    members: IndexMap<SessionId, Member>,
    raw_members: usize,
    /// Counts how often the room became empty; a timer that forgets the
    /// room carries the count it was set at and does nothing if it changed.
    empty_generation: u64,
}

impl Members {
    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn contains(&self, id: SessionId) -> bool {
        self.members.contains_key(&id)
    }

    pub fn get(&self, id: SessionId) -> Option<&Member> {
        self.members.get(&id)
    }

    pub fn get_mut(&mut self, id: SessionId) -> Option<&mut Member> {
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

    pub fn ids(&self) -> impl Iterator<Item = SessionId> + '_ {
        self.members.keys().copied()
    }

    pub fn has_raw(&self) -> bool {
        self.raw_members > 0
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
        self.fan_out_unless(|id, _| Some(id) == except, json, raw, slow);
    }

    /// [`Members::fan_out`] to the members `skip` does not name.
    pub fn fan_out_unless(
        &self,
        skip: impl Fn(SessionId, &Member) -> bool,
        json: Option<&OutFrame>,
        raw: Option<&OutFrame>,
        slow: &mut Vec<SessionId>,
    ) {
        for (id, member) in &self.members {
            if skip(*id, member) {
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

    #[test]
    fn emptying_counts_a_generation() {
        let mut members = Members::default();
        let limits = crate::outbox::OutboundLimits { frames: 1, bytes: 1000, stall_ms: 1000 };
        let member = || Member {
            handle: SessionHandle::new(SessionId(1), limits, None),
            kind: MemberKind::Raw,
            read_only: false,
            grant: None,
        };
        members.add(SessionId(1), member());
        assert!(members.has_raw());
        assert!(members.remove(SessionId(1)));
        assert!(!members.remove(SessionId(1)));
        assert_eq!(members.empty_generation(), 1);
        assert!(!members.has_raw());
    }
}
