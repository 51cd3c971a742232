//! One publish, one script: Redis gives the message its `seq`, keeps the
//! frame in the room's history stream and publishes it on the room's
//! channel, atomically, so that every node sees the room's messages in
//! `seq` order and no `seq` is born anywhere else.
//!
//! The node builds the frame around the `seq` it does not know yet: the
//! script joins `head`, the `seq` and `tail`, so every node and every
//! history reader gets the same bytes.
//!
//! A publish carries an id of its own. Its outcome is remembered for
//! [`DONE_TTL_SECONDS`], and a retry with the same id (after a timeout, when
//! the first attempt may have run) gets that outcome back instead of a
//! second `seq`.

use redis::Script;

use super::keys::RoomKeys;

/// How long a publish's outcome answers its retries.
pub const DONE_TTL_SECONDS: u64 = 300;

const SCRIPT: &str = r#"
local meta, history, done = KEYS[1], KEYS[2], KEYS[3]
local channel, max_history, head, tail, fresh_epoch, done_ttl =
    ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
local earlier = redis.call('GET', done)
if earlier then
    local seq, epoch = string.match(earlier, '^(%d+) (.*)$')
    return {tonumber(seq), epoch, 1}
end
local epoch = redis.call('HGET', meta, 'e')
if not epoch then
    epoch = fresh_epoch
    redis.call('HSET', meta, 'e', epoch)
end
local seq = redis.call('HINCRBY', meta, 's', 1)
if seq == 1 then
    -- A room that starts again must not mix old entries with the new numbering.
    redis.call('DEL', history)
end
local frame = head .. seq .. tail
if max_history > 0 then
    redis.call('XADD', history, 'MAXLEN', max_history, seq .. '-0', 'f', frame)
else
    redis.call('DEL', history)
end
redis.call('PUBLISH', channel, seq .. ' ' .. epoch .. ' ' .. frame)
redis.call('SET', done, seq .. ' ' .. epoch, 'EX', done_ttl)
return {seq, epoch, 0}
"#;

/// What a publish did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub seq: u64,
    pub epoch: String,
    /// An earlier attempt with the same id had already published it.
    pub repeated: bool,
}

/// A message on its way to a room.
pub struct Publish<'a> {
    /// Unique per publish, the same for its retries.
    pub id: &'a str,
    /// The frame up to its `seq` and from after it.
    pub head: &'a str,
    pub tail: &'a str,
    /// `rooms.history`.
    pub max_history: usize,
}

/// The script, loaded once per process (redis-rs sends its hash and loads
/// it again when a Redis does not know it).
pub fn script() -> &'static Script {
    static SCRIPT_ONCE: std::sync::OnceLock<Script> = std::sync::OnceLock::new();
    SCRIPT_ONCE.get_or_init(|| Script::new(SCRIPT))
}

/// Runs the publish script for `message` in the room `keys` names.
pub async fn publish<C: redis::aio::ConnectionLike>(
    connection: &mut C,
    keys: &RoomKeys,
    message: &Publish<'_>,
) -> redis::RedisResult<Published> {
    let fresh_epoch = format!("{:016x}", fastrand::u64(..));
    let (seq, epoch, repeated): (u64, String, u8) = script()
        .key(&keys.meta)
        .key(&keys.history)
        .key(keys.done(message.id))
        .arg(&keys.channel)
        .arg(message.max_history)
        .arg(message.head)
        .arg(message.tail)
        .arg(fresh_epoch)
        .arg(DONE_TTL_SECONDS)
        .invoke_async(connection)
        .await?;
    Ok(Published { seq, epoch, repeated: repeated == 1 })
}

/// Why a publish did not happen.
#[derive(Debug)]
pub enum PublishError {
    /// Redis did not answer any attempt within `within`; whether one of
    /// them ran later is unknown (a retry with the same id would tell).
    Unanswered { attempts: u32, last: redis::RedisError },
    /// Redis answered with an error: retrying will not help.
    Refused(redis::RedisError),
}

impl std::fmt::Display for PublishError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PublishError::Unanswered { attempts, last } => {
                write!(f, "no answer from Redis after {attempts} attempts ({last})")
            }
            PublishError::Refused(error) => write!(f, "Redis refused the publish: {error}"),
        }
    }
}

/// [`publish`], tried again while Redis does not answer (a timeout, a
/// dropped connection) until `within` has passed. Every attempt carries the
/// same id, so one that ran although its answer was lost is not run twice:
/// the retry gets its outcome. Returns it with the number of attempts.
pub async fn publish_retrying<C: redis::aio::ConnectionLike>(
    connection: &mut C,
    keys: &RoomKeys,
    message: &Publish<'_>,
    within: std::time::Duration,
) -> Result<(Published, u32), PublishError> {
    let deadline = tokio::time::Instant::now() + within;
    let mut pause = std::time::Duration::from_millis(20);
    let mut attempts = 0;
    loop {
        attempts += 1;
        match publish(connection, keys, message).await {
            Ok(published) => return Ok((published, attempts)),
            Err(error) if error.is_timeout() || error.is_io_error() || error.is_connection_dropped() => {
                if tokio::time::Instant::now() + pause >= deadline {
                    return Err(PublishError::Unanswered { attempts, last: error });
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_millis(500));
            }
            Err(error) => return Err(PublishError::Refused(error)),
        }
    }
}

/// A message as it arrives on a room's channel: `SEQ EPOCH FRAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered<'a> {
    pub seq: u64,
    pub epoch: &'a str,
    pub frame: &'a str,
}

impl<'a> Delivered<'a> {
    pub fn parse(payload: &'a str) -> Option<Delivered<'a>> {
        let (seq, rest) = payload.split_once(' ')?;
        let (epoch, frame) = rest.split_once(' ')?;
        Some(Delivered { seq: seq.parse().ok()?, epoch, frame })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_payloads() {
        let delivered = Delivered::parse("12 00ff {\"seq\":12,\"body\":\"a b\"}").unwrap();
        assert_eq!(delivered, Delivered { seq: 12, epoch: "00ff", frame: "{\"seq\":12,\"body\":\"a b\"}" });
        assert_eq!(Delivered::parse("x 00ff {}"), None);
        assert_eq!(Delivered::parse("12"), None);
    }
}
