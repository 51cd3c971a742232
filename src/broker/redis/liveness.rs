//! Which nodes are alive. Every node beats (this script) a few times per
//! `node_timeout`; each beat records the beating node's time, on Redis's
//! clock, and names the nodes whose last beat is older than `node_timeout`:
//! they are dead, once, and the node that learns it makes their members
//! leave. A node that beats after it was declared dead is told so, and
//! must close its clients (1012) and start again as a new node.
//!
//! No false deaths when Redis itself stops serving (paused, failing over,
//! busy): every beat also notes when the last beat of *any* node landed.
//! Live nodes beat several times per timeout, so a silence longer than half
//! the timeout means Redis was not serving beats, and nobody is judged for
//! one more timeout: the live nodes' beats, held up by the same stall,
//! land first.

use redis::Script;

const SCRIPT: &str = r#"#!lua flags=allow-oom
local alive, dead, last_any, amnesty, next = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local node, timeout = ARGV[1], tonumber(ARGV[2])
-- A Redis that lost its data must not hand out a live node's number again.
local number = tonumber(node)
if number and number > tonumber(redis.call('GET', next) or '0') then
    redis.call('SET', next, number)
end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
if redis.call('SISMEMBER', dead, node) == 1 then
    return {1}
end
local previous = tonumber(redis.call('GET', last_any) or '0')
redis.call('SET', last_any, now)
if previous > 0 and now - previous > timeout / 2 then
    redis.call('SET', amnesty, now + timeout)
end
redis.call('ZADD', alive, now, node)
local out = {0, 0}
if now >= tonumber(redis.call('GET', amnesty) or '0') then
    for _, other in ipairs(redis.call('ZRANGEBYSCORE', alive, '-inf', now - timeout)) do
        redis.call('ZREM', alive, other)
        redis.call('SADD', dead, other)
        out[#out + 1] = other
    end
end
out[2] = redis.call('ZCARD', alive)
return out
"#;

/// What one beat learned.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Beat {
    /// This node was declared dead before this beat: it must start again.
    pub declared_dead: bool,
    /// Nodes found dead by this beat (each is found by exactly one beat).
    pub dead: Vec<String>,
    /// Nodes alive after this beat.
    pub alive: usize,
}

fn script() -> &'static Script {
    static SCRIPT_ONCE: std::sync::OnceLock<Script> = std::sync::OnceLock::new();
    SCRIPT_ONCE.get_or_init(|| Script::new(SCRIPT))
}

/// The liveness keys of the cluster named by `prefix`.
#[derive(Debug, Clone)]
pub struct Liveness {
    alive: String,
    dead: String,
    last_any: String,
    amnesty: String,
    next: String,
}

impl Liveness {
    pub fn new(prefix: &str) -> Liveness {
        Liveness {
            alive: format!("{prefix}:nodes:alive"),
            dead: format!("{prefix}:nodes:dead"),
            last_any: format!("{prefix}:nodes:last-beat"),
            amnesty: format!("{prefix}:nodes:amnesty"),
            next: super::nodes::next_key(prefix),
        }
    }

    /// Records that `node` is alive now and judges the others.
    pub async fn beat<C: redis::aio::ConnectionLike>(
        &self,
        connection: &mut C,
        node: &str,
        timeout: std::time::Duration,
    ) -> redis::RedisResult<Beat> {
        let reply: Vec<redis::Value> = script()
            .key(&self.alive)
            .key(&self.dead)
            .key(&self.last_any)
            .key(&self.amnesty)
            .key(&self.next)
            .arg(node)
            .arg(timeout.as_millis() as u64)
            .invoke_async(connection)
            .await?;
        let mut values = reply.into_iter();
        let flag: u8 = match values.next() {
            Some(value) => redis::from_redis_value(value)?,
            None => 0,
        };
        let alive: usize = match values.next() {
            Some(value) => redis::from_redis_value(value)?,
            None => 0,
        };
        let dead = values.map(redis::from_redis_value).collect::<Result<Vec<String>, _>>()?;
        Ok(Beat { declared_dead: flag == 1, dead, alive })
    }

    /// Takes a node off the books on a graceful shutdown: nobody has to wait
    /// for it to time out (its members leave at once, by the node itself).
    pub async fn leave<C: redis::aio::ConnectionLike>(&self, connection: &mut C, node: &str) -> redis::RedisResult<()> {
        redis::cmd("ZREM").arg(&self.alive).arg(node).query_async(connection).await
    }
}
