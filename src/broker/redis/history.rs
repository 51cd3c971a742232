//! Reading a room's history from Redis: its epoch and the entries of a
//! `seq` range, in one script so that they belong together (a publish that
//! restarts the room cannot fall between the two reads).

use redis::Script;

use super::keys::RoomKeys;
pub use crate::broker::Range;

const SCRIPT: &str = r#"#!lua flags=allow-oom
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
    -- The room is gone (Redis lost it): it starts again, under a new epoch.
    epoch = ARGV[3]
    redis.call('HSET', KEYS[1], 'e', epoch)
end
local top = tonumber(redis.call('HGET', KEYS[1], 's') or '0')
local entries = redis.call('XRANGE', KEYS[2], ARGV[1] .. '-0', ARGV[2])
local out = {epoch, top}
for _, entry in ipairs(entries) do
    local seq = string.match(entry[1], '^(%d+)-')
    out[#out + 1] = tonumber(seq)
    out[#out + 1] = entry[2][2]
end
return out
"#;

fn script() -> &'static Script {
    static SCRIPT_ONCE: std::sync::OnceLock<Script> = std::sync::OnceLock::new();
    SCRIPT_ONCE.get_or_init(|| Script::new(SCRIPT))
}

/// The entries with `from <= seq <= to` (`to: None`: to the newest).
pub async fn range<C: redis::aio::ConnectionLike>(
    connection: &mut C,
    keys: &RoomKeys,
    from: u64,
    to: Option<u64>,
) -> redis::RedisResult<Range> {
    let end = to.map_or_else(|| "+".to_string(), |to| format!("{to}-0"));
    let reply: Vec<redis::Value> = script()
        .key(&keys.meta)
        .key(&keys.history)
        .arg(from.max(1))
        .arg(end)
        .arg(format!("{:016x}", fastrand::u64(..)))
        .invoke_async(connection)
        .await?;
    let mut values = reply.into_iter();
    let malformed = || redis::RedisError::from((redis::ErrorKind::Parse, "a malformed history reply"));
    let epoch: String = redis::from_redis_value(values.next().ok_or_else(malformed)?)?;
    let top: u64 = redis::from_redis_value(values.next().ok_or_else(malformed)?)?;
    let mut entries = Vec::new();
    while let Some(seq) = values.next() {
        let seq = redis::from_redis_value(seq)?;
        let stored: String = redis::from_redis_value(values.next().ok_or_else(malformed)?)?;
        entries.push((seq, super::publish::render(&keys.room, seq, &stored)));
    }
    Ok(Range { epoch, top, entries })
}
