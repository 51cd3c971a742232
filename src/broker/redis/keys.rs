//! Where a room lives in Redis. Every key of a room carries the room's name
//! as a hash tag (`{room}`), so a room's keys sit in one slot and its
//! scripts run unchanged on Redis Cluster; the prefix lets several clusters
//! share one Redis. (The script that evicts a dead node's members derives
//! these names itself: change both together.)

use crate::protocol::RoomName;

/// The keys and channel of one room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomKeys {
    pub room: RoomName,
    /// Hash: `e` the epoch, `s` the last `seq`; of the history `n` its
    /// entries, `b` their bytes (as frames) and `L` their lengths; the
    /// records of recent publishes (`r:ID` -> `SEQ EPOCH MS`) and `w` when
    /// the newest one forgotten was made (ms, Redis's clock).
    pub meta: String,
    /// Stream of messages (`publish::Stored`); an entry's id is `SEQ-0`.
    pub history: String,
    /// Pub/sub channel: every message, in `seq` order, and presence events.
    pub channel: String,
    /// Hash: session id -> its `members` entry, on every node.
    pub members: String,
    /// List of `MS ID`: the records in `meta`, oldest first, with when
    /// they were made, so that the oldest are forgotten first.
    pub id_order: String,
    /// The cluster's rooms held, empty ones included (`rooms.max_rooms`):
    /// room -> when it is forgotten (ms), `+inf` while it has members.
    pub held: String,
}

impl RoomKeys {
    pub fn new(prefix: &str, room: &RoomName) -> Self {
        let base = format!("{prefix}:{{{room}}}");
        RoomKeys {
            room: room.clone(),
            meta: format!("{base}:meta"),
            history: format!("{base}:history"),
            channel: format!("{base}:messages"),
            members: format!("{base}:members"),
            id_order: format!("{base}:id-order"),
            held: held_key(prefix),
        }
    }

    /// Every key of the room that lives as long as the room (the channel
    /// is not a key; `members` goes with its last member).
    pub fn lasting(&self) -> [&str; 3] {
        [&self.meta, &self.history, &self.id_order]
    }
}

/// The cluster's set of rooms held (see [`RoomKeys::held`]).
pub fn held_key(prefix: &str) -> String {
    format!("{prefix}:held")
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
        assert_eq!(keys.id_order, "rc:{team:red}:id-order");
        assert_eq!(keys.held, "rc:held", "one set for the cluster");
    }
}
