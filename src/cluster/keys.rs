//! Where a room lives in Redis. Every key of a room carries the room's name
//! as a hash tag (`{room}`), so a room's keys sit in one slot and its
//! scripts run unchanged on Redis Cluster; the prefix lets several clusters
//! share one Redis. (The script that evicts a dead node's members derives
//! these names itself: change both together.)

use crate::protocol::RoomName;

/// The keys and channel of one room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomKeys {
    /// Hash: `s` the last `seq`, `e` the epoch.
    pub meta: String,
    /// Stream of `message` frames; an entry's id is `SEQ-0`.
    pub history: String,
    /// Pub/sub channel: every message, in `seq` order, and presence events.
    pub channel: String,
    /// Hash: session id -> its `members` entry, on every node.
    pub members: String,
    /// Prefix of the results of publishes, by publish id (retries).
    pub done_prefix: String,
}

impl RoomKeys {
    pub fn new(prefix: &str, room: &RoomName) -> Self {
        let base = format!("{prefix}:{{{room}}}");
        RoomKeys {
            meta: format!("{base}:meta"),
            history: format!("{base}:history"),
            channel: format!("{base}:messages"),
            members: format!("{base}:members"),
            done_prefix: format!("{base}:done:"),
        }
    }

    /// The key that remembers the outcome of the publish `id`.
    pub fn done(&self, id: &str) -> String {
        format!("{}{id}", self.done_prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_room_s_keys_share_its_hash_tag() {
        let keys = RoomKeys::new("rc", &RoomName::parse("team:red").unwrap());
        assert_eq!(keys.meta, "rc:{team:red}:meta");
        assert_eq!(keys.history, "rc:{team:red}:history");
        assert_eq!(keys.channel, "rc:{team:red}:messages");
        assert_eq!(keys.members, "rc:{team:red}:members");
        assert_eq!(keys.done("n1-7"), "rc:{team:red}:done:n1-7");
    }
}
