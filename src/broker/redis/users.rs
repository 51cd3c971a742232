//! `auth.max_connections_per_user` across the cluster: a hash of open
//! connections per user for the whole cluster, and one per node, so that a
//! dead node's connections can be taken off the count.

use redis::Script;

const ADMIT: &str = r#"
local users, node_users, user, max = KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2])
if tonumber(redis.call('HGET', users, user) or '0') >= max then
    return 0
end
redis.call('HINCRBY', users, user, 1)
redis.call('HINCRBY', node_users, user, 1)
return 1
"#;

/// Adds `delta` to a user's counts (both hashes); a count that reaches 0 goes.
const ADD: &str = r#"
local function add(hash, user, delta)
    if redis.call('HINCRBY', hash, user, delta) <= 0 then
        redis.call('HDEL', hash, user)
    end
end
"#;

const RELEASE: &str = r#"
add(KEYS[1], ARGV[1], -1)
add(KEYS[2], ARGV[1], -1)
return 0
"#;

/// A node's counts leave the cluster's (it died, or it counts again).
const FORGET_NODE: &str = r#"
local counts = redis.call('HGETALL', KEYS[2])
for i = 1, #counts, 2 do
    add(KEYS[1], counts[i], -tonumber(counts[i + 1]))
end
redis.call('DEL', KEYS[2])
return 0
"#;

fn script(source: &'static str, cell: &'static std::sync::OnceLock<Script>) -> &'static Script {
    super::script_once(cell, ADD, source)
}

fn admit_script() -> &'static Script {
    static CELL: std::sync::OnceLock<Script> = std::sync::OnceLock::new();
    script(ADMIT, &CELL)
}

fn release_script() -> &'static Script {
    static CELL: std::sync::OnceLock<Script> = std::sync::OnceLock::new();
    script(RELEASE, &CELL)
}

/// The admit and release scripts (see [`super::load_scripts`]).
pub(super) fn scripts() -> [&'static Script; 2] {
    [admit_script(), release_script()]
}

/// The per-user keys of the cluster named by `prefix`.
#[derive(Debug, Clone)]
pub struct Users {
    prefix: String,
    users: String,
}

impl Users {
    pub fn new(prefix: &str) -> Users {
        Users { prefix: prefix.to_string(), users: format!("{prefix}:users") }
    }

    fn node_users(&self, node: u64) -> String {
        format!("{}:node:{node}:users", self.prefix)
    }

    /// Counts one more connection of `user` on `node`, unless the user has
    /// `max` open across the cluster; returns whether it was counted.
    pub async fn admit<C: redis::aio::ConnectionLike>(
        &self,
        connection: &mut C,
        node: u64,
        user: &str,
        max: usize,
    ) -> redis::RedisResult<bool> {
        let counted: u8 = admit_script()
            .key(&self.users)
            .key(self.node_users(node))
            .arg(user)
            .arg(max)
            .invoke_async(connection)
            .await?;
        Ok(counted == 1)
    }

    /// One connection of `user` on `node` closed.
    pub async fn release<C: redis::aio::ConnectionLike>(
        &self,
        connection: &mut C,
        node: u64,
        user: &str,
    ) -> redis::RedisResult<()> {
        release_script().key(&self.users).key(self.node_users(node)).arg(user).invoke_async(connection).await
    }

    /// Takes `node`'s connections off every user's count.
    pub async fn forget_node<C: redis::aio::ConnectionLike>(
        &self,
        connection: &mut C,
        node: u64,
    ) -> redis::RedisResult<()> {
        static CELL: std::sync::OnceLock<Script> = std::sync::OnceLock::new();
        script(FORGET_NODE, &CELL).key(&self.users).key(self.node_users(node)).invoke_async(connection).await
    }

    /// Sets `node`'s counts to `counts` (after an outage: Redis may have
    /// lost them, or still hold them).
    pub async fn recount<C: redis::aio::ConnectionLike>(
        &self,
        connection: &mut C,
        node: u64,
        counts: &[(std::sync::Arc<str>, usize)],
    ) -> redis::RedisResult<()> {
        self.forget_node(connection, node).await?;
        if counts.is_empty() {
            return Ok(());
        }
        let mut add = redis::pipe();
        for (user, count) in counts {
            add.hincr(&self.users, &**user, *count).ignore().hincr(self.node_users(node), &**user, *count).ignore();
        }
        let _: () = add.query_async(connection).await?;
        Ok(())
    }
}
