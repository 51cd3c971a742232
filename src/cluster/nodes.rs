//! A node's identity in the cluster: a number Redis hands out once per
//! process start (an incarnation: a node that restarts, or that was
//! declared dead and comes back, is a new node), from which its session ids
//! are made unique cluster-wide and `direct` finds a session's node.

use crate::protocol::SessionId;

/// Session ids of one node: its number in the high 32 bits, its own count
/// in the low ones.
const LOCAL_BITS: u32 = 32;

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

/// The id of the `local`-th session of node `node`; `None` once the node
/// has used its 2^32 ids (it must then register again).
pub fn session_id(node: u64, local: u64) -> Option<SessionId> {
    (local < 1 << LOCAL_BITS && node < 1 << (64 - LOCAL_BITS)).then_some(SessionId(node << LOCAL_BITS | local))
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
        assert_eq!((node_of(id), id.0 & 0xFFFF_FFFF), (7, 42));
        assert_ne!(session_id(7, 1), session_id(8, 1));
        assert_eq!(session_id(7, 1 << 32), None, "a node's ids run out rather than wrap into another's");
        assert_eq!(SessionId::from_wire(&id.to_string()), Some(id), "ids stay canonical decimal on the wire");
    }
}
