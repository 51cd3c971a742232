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
    return {1, 0, now}
end
local previous = tonumber(redis.call('GET', last_any) or '0')
redis.call('SET', last_any, now)
if previous > 0 and now - previous > timeout / 2 then
    redis.call('SET', amnesty, now + timeout)
end
redis.call('ZADD', alive, now, node)
local out = {0, 0, now}
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
    /// Redis's clock when it ran the beat (ms since the Unix epoch).
    pub redis_ms: u64,
}

/// This node's estimate of Redis's clock (what `TIME` says, in ms), from
/// round trips: the time Redis gave, against the middle of the round trip
/// on the node's monotonic clock. Scripts judge deadlines on Redis's clock
/// (`publish`), so the nodes' own clocks need not agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedisClock {
    /// Redis's clock minus the node's monotonic one.
    offset_ms: i64,
    /// Half the round trip of the sample: how far off it may be.
    error_ms: u64,
    /// When the sample was taken (monotonic ms).
    taken_ms: u64,
}

impl RedisClock {
    /// A round trip sent at `sent_ms` and answered at `received_ms` (the
    /// node's monotonic clock), in which Redis's clock said `redis_ms`.
    pub fn sample(sent_ms: u64, received_ms: u64, redis_ms: u64) -> RedisClock {
        let middle = sent_ms / 2 + received_ms / 2;
        RedisClock {
            offset_ms: redis_ms as i64 - middle as i64,
            error_ms: received_ms.saturating_sub(sent_ms).div_ceil(2),
            taken_ms: received_ms,
        }
    }

    /// Takes `sample` when it is as good (a round trip as short, or short
    /// enough), or when this estimate is old (Redis's clock was stepped,
    /// or another Redis took over).
    pub fn update(&mut self, sample: RedisClock) {
        let good = sample.error_ms <= self.error_ms.max(25);
        let stale = sample.taken_ms.saturating_sub(self.taken_ms) > 30_000;
        if good || stale {
            *self = sample;
        }
    }

    /// Redis's clock now (`now_ms` on the node's monotonic clock), and how
    /// far off that may be.
    pub fn at(&self, now_ms: u64) -> (u64, u64) {
        ((now_ms as i64).saturating_add(self.offset_ms).max(0) as u64, self.error_ms)
    }
}

/// One round trip to learn Redis's clock.
pub async fn time<C: redis::aio::ConnectionLike>(
    connection: &mut C,
    now_ms: impl Fn() -> u64,
) -> redis::RedisResult<RedisClock> {
    let sent = now_ms();
    let (seconds, micros): (u64, u64) = redis::cmd("TIME").query_async(connection).await?;
    Ok(RedisClock::sample(sent, now_ms(), seconds * 1000 + micros / 1000))
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
        let redis_ms: u64 = match values.next() {
            Some(value) => redis::from_redis_value(value)?,
            None => 0,
        };
        let dead = values.map(redis::from_redis_value).collect::<Result<Vec<String>, _>>()?;
        Ok(Beat { declared_dead: flag == 1, dead, alive, redis_ms })
    }

    /// Takes a node off the books on a graceful shutdown: nobody has to wait
    /// for it to time out (its members leave at once, by the node itself).
    pub async fn leave<C: redis::aio::ConnectionLike>(&self, connection: &mut C, node: &str) -> redis::RedisResult<()> {
        redis::cmd("ZREM").arg(&self.alive).arg(node).query_async(connection).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_estimate_keeps_short_round_trips() {
        let mut clock = RedisClock::sample(1000, 1010, 50_005);
        assert_eq!(clock.at(2000), (51_000, 5));
        clock.update(RedisClock::sample(3000, 3400, 99_999_999));
        assert_eq!(clock.at(2000), (51_000, 5), "a slow round trip says little");
        clock.update(RedisClock::sample(40_000, 40_400, 89_200));
        assert_eq!(clock.at(40_400).1, 200, "an old estimate gives way");
        clock.update(RedisClock::sample(41_000, 41_002, 90_001));
        assert_eq!(clock.at(41_001), (90_001, 1));
    }
}
