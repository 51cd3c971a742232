//! A node's identity in the cluster: a number Redis hands out once per
//! process start (an incarnation: a node that restarts, or that was
//! declared dead and comes back, is a new node), from which its session ids
//! are made unique cluster-wide and `direct` finds a session's node.

use crate::protocol::SessionId;

/// Session ids of one node: its number in the high 24 bits, and in the low
/// 40 its own count, scrambled ([`unguessable`]).
const LOCAL_BITS: u32 = 40;

/// The counter of node numbers.
pub fn next_key(prefix: &str) -> String {
    format!("{prefix}:nodes:next")
}

/// The next node number of the cluster named by `prefix`.
pub async fn register<C: redis::aio::ConnectionLike>(connection: &mut C, prefix: &str) -> redis::RedisResult<u64> {
    redis::cmd("INCR").arg(next_key(prefix)).query_async(connection).await
}

/// The set of node `node`'s open sessions (`direct` asks it).
pub fn sessions_key(prefix: &str, node: u64) -> String {
    format!("{prefix}:node:{node}:sessions")
}

const DIRECT: &str = r#"
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then
    return 0
end
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
"#;

/// Sends `payload` to the node holding session `to`, if it is open there;
/// returns whether it was.
pub async fn direct<C: redis::aio::ConnectionLike>(
    connection: &mut C,
    prefix: &str,
    to: SessionId,
    payload: &str,
) -> redis::RedisResult<bool> {
    static SCRIPT: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
    let node = node_of(to);
    let sent: u8 = SCRIPT
        .get_or_init(|| redis::Script::new(DIRECT))
        .key(sessions_key(prefix, node))
        .arg(to.0)
        .arg(direct_channel(prefix, node))
        .arg(payload)
        .invoke_async(connection)
        .await?;
    Ok(sent == 1)
}

/// The number of the `local`-th session of node `node`, as the node counts
/// them; `None` once the node has used its 2^40 (it must then register
/// again). The id on the wire is [`unguessable`] of it.
pub fn session_id(node: u64, local: u64) -> Option<SessionId> {
    (local < 1 << LOCAL_BITS && node < 1 << (64 - LOCAL_BITS)).then_some(SessionId(node << LOCAL_BITS | local))
}

/// Rounds of the Feistel network that scrambles a node's count.
const ROUNDS: u64 = 8;

/// The session id for the node's `counted`-th session ([`session_id`]):
/// the node's number stays in the high bits (so `direct` finds the node),
/// and the count below it goes through a permutation keyed at random when
/// the process starts. Ids stay unique (a permutation), but one session's
/// id says nothing about which others exist: `direct` cannot be used to
/// probe for them.
pub fn unguessable(counted: SessionId) -> SessionId {
    use std::hash::BuildHasher;
    static KEY: std::sync::OnceLock<std::hash::RandomState> = std::sync::OnceLock::new();
    // SipHash, keyed from the operating system's randomness.
    let key = KEY.get_or_init(std::hash::RandomState::new);
    const HALF: u32 = LOCAL_BITS / 2;
    const MASK: u64 = (1 << HALF) - 1;
    let local = counted.0 & ((1 << LOCAL_BITS) - 1);
    let (mut left, mut right) = (local >> HALF, local & MASK);
    for round in 0..ROUNDS {
        let mixed = left ^ (key.hash_one((round, right)) & MASK);
        (left, right) = (right, mixed);
    }
    SessionId((counted.0 & !((1 << LOCAL_BITS) - 1)) | left << HALF | right)
}

/// The node a session id belongs to.
pub fn node_of(id: SessionId) -> u64 {
    id.0 >> LOCAL_BITS
}

/// The channel on which node `node` receives `direct` messages for its
/// sessions.
pub fn direct_channel(prefix: &str, node: u64) -> String {
    format!("{prefix}:node:{node}:direct")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_their_node() {
        let id = session_id(7, 42).unwrap();
        assert_eq!((node_of(id), id.0 & 0xFF_FFFF_FFFF), (7, 42));
        assert_ne!(session_id(7, 1), session_id(8, 1));
        assert_eq!(session_id(7, 1 << 40), None, "a node's ids run out rather than wrap into another's");
        assert_eq!(SessionId::from_wire(&id.to_string()), Some(id), "ids stay canonical decimal on the wire");
    }

    #[test]
    fn unguessable_ids_keep_their_node_and_stay_unique() {
        let ids: Vec<SessionId> = (1..=5000).map(|local| unguessable(session_id(9, local).unwrap())).collect();
        assert!(ids.iter().all(|id| node_of(*id) == 9));
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), ids.len(), "a permutation: no two sessions share an id");
        let neighbours = ids.windows(2).filter(|pair| pair[1].0.abs_diff(pair[0].0) < 1 << 20).count();
        assert!(neighbours < 10, "consecutive sessions get scattered ids ({neighbours} close pairs)");
    }
}
