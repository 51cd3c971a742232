//! One publish, one script: Redis gives the message its `seq`, keeps it in
//! the room's history stream and publishes it on the room's channel,
//! atomically, so that every node sees the room's messages in `seq` order
//! and no `seq` is born anywhere else.
//!
//! The node builds the frame around the `seq` it does not know yet: the
//! script joins `head`, the `seq` and `tail`, so every node and every
//! history reader gets the same bytes. A raw text body is kept and sent as
//! it came ([`Stored`]), not as the JSON string it becomes in the frame
//! (text of control characters grows sixfold when escaped).
//!
//! What Redis holds for a room is bounded by the settings that bound one
//! process: the history by `rooms.history` messages and `rooms.history_bytes`
//! bytes (counted as frames), the room itself by `rooms.max_rooms` (rooms
//! nobody is in, an API publish's, count and are forgotten after
//! `rooms.empty_ttl`), and the ids of its publishes by `rooms.publish_ids`
//! and [`ID_WINDOW_MS`].
//!
//! Every publish has a record: the client's id (idempotent publish,
//! `protocol.md`), or else an id the node made. A publish whose record
//! exists is not run again; the outcome is the first one's. A publish that
//! reaches Redis after its deadline is not run at all: so when a node gets
//! no answer (a timeout, a dropped connection), it asks ([`settle`]) until
//! Redis tells it what happened, and says `unavailable` only for a publish
//! that did not happen and never will.

use std::time::Duration;

use redis::Script;

use super::keys::RoomKeys;
use crate::protocol::frame;

/// How long a publish's id is remembered, at most (`protocol.md`: five
/// minutes).
pub const ID_WINDOW_MS: u64 = 300_000;

/// What the publish and settle scripts share: Redis's clock in ms, and a
/// record's outcome (`code`, `seq`, epoch) if it has one.
const PRELUDE: &str = r#"
local function now_ms()
    local clock = redis.call('TIME')
    return tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
end
local function recorded(ids, record, code)
    local earlier = redis.call('HGET', ids, record)
    if earlier then
        local seq, epoch = string.match(earlier, '^(%d+) (.*)$')
        return {code, tonumber(seq), epoch}
    end
end
"#;

/// The publish. `#!lua` makes Redis refuse it before it starts when it is
/// out of memory or a read-only replica, so that a refusal never leaves
/// half a publish behind.
const SCRIPT: &str = r#"
local meta, history, ids, id_order, members, held = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local channel, record, deadline = ARGV[1], ARGV[2], tonumber(ARGV[3])
local head, tail, raw, fixed_len = ARGV[4], ARGV[5], ARGV[6], tonumber(ARGV[7])
local max_history, max_bytes = tonumber(ARGV[8]), tonumber(ARGV[9])
local max_ids, window, empty_ttl, max_rooms = tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13])
local room, fresh_epoch, is_raw = ARGV[14], ARGV[15], ARGV[16] == '1'
local earlier = recorded(ids, record, 1)
if earlier then
    return earlier
end
local now = now_ms()
if now > deadline then
    return {2}
end
-- A room nobody is in (an API publish's) is held for empty_ttl, and counts.
local forget_at = nil
if redis.call('EXISTS', members) == 0 then
    local score = tonumber(redis.call('ZSCORE', held, room) or '')
    if not score or score == math.huge then
        if not score then
            redis.call('ZREMRANGEBYSCORE', held, '-inf', now)
            if redis.call('ZCARD', held) >= max_rooms then
                return {3}
            end
        end
        score = now + empty_ttl
        redis.call('ZADD', held, score, room)
    end
    forget_at = score
end
local epoch = redis.call('HGET', meta, 'e')
if not epoch then
    epoch = fresh_epoch
    redis.call('HSET', meta, 'e', epoch)
end
local seq = redis.call('HINCRBY', meta, 's', 1)
local stored
if is_raw then
    stored = tail .. '\n' .. raw
else
    stored = head .. seq .. tail
end
local frame_len = fixed_len + string.len(tostring(seq))
local count = redis.call('XLEN', history)
if seq == 1 and count > 0 then
    -- A room that starts again must not mix old entries with the new numbering.
    redis.call('DEL', history)
    count = 0
end
local bytes = 0
if count > 0 then
    bytes = tonumber(redis.call('HGET', meta, 'b') or '0')
end
if max_history == 0 or frame_len > max_bytes then
    -- Too large to keep, and then nothing before it either: no gap.
    if count > 0 then
        redis.call('DEL', history)
    end
    bytes = 0
else
    local cursor, last = '-', nil
    while count > 0 and (count >= max_history or bytes + frame_len > max_bytes) do
        local oldest = redis.call('XRANGE', history, cursor, '+', 'COUNT', 1)[1]
        if not oldest then
            break
        end
        local fields = oldest[2]
        if fields[1] == 'r' then
            bytes = bytes - (tonumber(fields[4]) or string.len(fields[2]))
        else
            bytes = bytes - string.len(fields[2])
        end
        count = count - 1
        last = oldest[1]
        cursor = '(' .. last
    end
    if last then
        redis.call('XTRIM', history, 'MINID', (tonumber(string.match(last, '^(%d+)')) + 1) .. '-0')
    end
    if count == 0 then
        bytes = 0
    end
    if is_raw then
        redis.call('XADD', history, seq .. '-0', 'r', stored, 'l', frame_len)
    else
        redis.call('XADD', history, seq .. '-0', 'f', stored)
    end
    bytes = bytes + frame_len
end
redis.call('HSET', meta, 'b', bytes)
redis.call('PUBLISH', channel, seq .. ' ' .. epoch .. ' ' .. stored)
-- The record, and the oldest forgotten: beyond max_ids, or past the window
-- (a few each time). `w` keeps when the newest forgotten one was made.
redis.call('HSET', ids, record, seq .. ' ' .. epoch)
redis.call('RPUSH', id_order, now .. ' ' .. record)
local newest_gone = nil
local function forget(item)
    local at, gone = string.match(item, '^(%d+) (.*)$')
    redis.call('HDEL', ids, gone)
    newest_gone = at
end
local excess = redis.call('LLEN', id_order) - max_ids
if excess > 0 then
    for _, item in ipairs(redis.call('LPOP', id_order, excess)) do
        forget(item)
    end
end
for _ = 1, 8 do
    local oldest = redis.call('LINDEX', id_order, 0)
    if not oldest or tonumber(string.match(oldest, '^(%d+)')) > now - window then
        break
    end
    redis.call('LPOP', id_order)
    forget(oldest)
end
if newest_gone and tonumber(newest_gone) > tonumber(redis.call('HGET', meta, 'w') or '0') then
    redis.call('HSET', meta, 'w', newest_gone)
end
if forget_at then
    for _, key in ipairs({meta, history, ids, id_order}) do
        redis.call('PEXPIREAT', key, forget_at)
    end
end
return {0, seq, epoch}
"#;

/// What became of a publish whose answer was lost. Reads only, so Redis
/// answers it even when it refuses writes.
const SETTLE: &str = r#"
local ids, meta = KEYS[1], KEYS[2]
local record, deadline, earliest = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local earlier = recorded(ids, record, 0)
if earlier then
    return earlier
end
if now_ms() <= deadline then
    -- It may still run.
    return {4}
end
if tonumber(redis.call('HGET', meta, 'w') or '0') >= earliest then
    -- Records made when it could have run were forgotten since.
    return {5}
end
return {2}
"#;

/// What a publish (or the question what became of it) got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Published(Published),
    /// It reached Redis after its deadline and was not run: it never will.
    Expired,
    /// A room nobody is in, and `rooms.max_rooms` are held.
    TooManyRooms,
}

/// A publish that happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub seq: u64,
    pub epoch: String,
    /// Its record existed: an earlier attempt, or an earlier publish with
    /// the same id, had published it.
    pub repeated: bool,
}

/// The limits a room's data in Redis is kept within (the settings that
/// bound one process).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomBounds {
    /// `rooms.history` and `rooms.history_bytes`.
    pub history: usize,
    pub history_bytes: usize,
    /// `rooms.publish_ids`.
    pub publish_ids: usize,
    /// `rooms.empty_ttl` and `rooms.max_rooms`.
    pub empty_ttl: Duration,
    pub max_rooms: usize,
}

/// A message on its way to a room.
#[derive(Debug, Clone, Copy)]
pub struct Publish<'a> {
    /// The record of this publish: `c:` and the client's id, or `a:` and
    /// one the node made.
    pub record: &'a str,
    /// The frame up to its `seq`, and after it: the rest of the frame, or
    /// for a raw text body the fields up to `"body":`.
    pub head: &'a str,
    pub tail: &'a str,
    /// A raw text body, kept and sent as it came.
    pub text: Option<&'a str>,
    pub bounds: RoomBounds,
    /// On Redis's clock (ms): reaching Redis later, it is not run.
    pub deadline_ms: u64,
    /// On Redis's clock (ms): it cannot have run before (the node's
    /// estimate when it sent it, less the estimate's error).
    pub earliest_ms: u64,
}

impl Publish<'_> {
    /// The length of the frame without its `seq`'s digits: what counts
    /// against `history_bytes`, as in one process.
    fn frame_len_without_seq(&self) -> usize {
        match self.text {
            Some(text) => self.head.len() + self.tail.len() + crate::protocol::json_str_len(text) + 1,
            None => self.head.len() + self.tail.len(),
        }
    }
}

/// The record of a publish: the client's own id, or the node's.
pub fn record(client_id: Option<&str>, node_made: impl FnOnce() -> String) -> String {
    match client_id {
        Some(id) => format!("c:{id}"),
        None => format!("a:{}", node_made()),
    }
}

/// The scripts, loaded once per process (redis-rs sends its hash and loads
/// it again when a Redis does not know it).
pub fn script() -> &'static Script {
    static SCRIPT_ONCE: std::sync::OnceLock<Script> = std::sync::OnceLock::new();
    SCRIPT_ONCE.get_or_init(|| Script::new(&format!("#!lua\n{PRELUDE}{SCRIPT}")))
}

fn settle_script() -> &'static Script {
    static SCRIPT_ONCE: std::sync::OnceLock<Script> = std::sync::OnceLock::new();
    SCRIPT_ONCE.get_or_init(|| Script::new(&format!("#!lua flags=no-writes,allow-oom\n{PRELUDE}{SETTLE}")))
}

/// The publish and settle scripts (see [`super::load_scripts`]).
pub(super) fn scripts() -> [&'static Script; 2] {
    [script(), settle_script()]
}

/// A script's answer: a code, then for a publish its `seq` and epoch.
fn outcome(reply: Vec<redis::Value>) -> redis::RedisResult<Result<Outcome, u8>> {
    let malformed = || redis::RedisError::from((redis::ErrorKind::Parse, "a malformed publish reply"));
    let mut values = reply.into_iter();
    let code: u8 = redis::from_redis_value(values.next().ok_or_else(malformed)?)?;
    let published = |repeated, values: &mut std::vec::IntoIter<redis::Value>| -> redis::RedisResult<Outcome> {
        let seq: u64 = redis::from_redis_value(values.next().ok_or_else(malformed)?)?;
        let epoch: String = redis::from_redis_value(values.next().ok_or_else(malformed)?)?;
        Ok(Outcome::Published(Published { seq, epoch, repeated }))
    };
    Ok(match code {
        0 => Ok(published(false, &mut values)?),
        1 => Ok(published(true, &mut values)?),
        2 => Ok(Outcome::Expired),
        3 => Ok(Outcome::TooManyRooms),
        other => Err(other),
    })
}

/// Runs the publish script once for `message` in the room `keys` names.
pub async fn publish<C: redis::aio::ConnectionLike>(
    connection: &mut C,
    keys: &RoomKeys,
    message: &Publish<'_>,
) -> redis::RedisResult<Outcome> {
    let bounds = &message.bounds;
    let reply: Vec<redis::Value> = script()
        .key(&keys.meta)
        .key(&keys.history)
        .key(&keys.ids)
        .key(&keys.id_order)
        .key(&keys.members)
        .key(&keys.held)
        .arg(&keys.channel)
        .arg(message.record)
        .arg(message.deadline_ms)
        .arg(message.head)
        .arg(message.tail)
        .arg(message.text.unwrap_or(""))
        .arg(message.frame_len_without_seq())
        .arg(bounds.history)
        .arg(bounds.history_bytes)
        .arg(bounds.publish_ids)
        .arg(ID_WINDOW_MS)
        .arg(bounds.empty_ttl.as_millis() as u64)
        .arg(bounds.max_rooms)
        .arg(keys.room.as_str())
        .arg(format!("{:016x}", fastrand::u64(..)))
        .arg(if message.text.is_some() { "1" } else { "0" })
        .invoke_async(connection)
        .await?;
    outcome(reply)?
        .map_err(|code| redis::RedisError::from((redis::ErrorKind::Parse, "a publish reply", code.to_string())))
}

/// What [`settle`] learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    Known(Outcome),
    /// Not run yet, and it still may be (its deadline has not passed).
    Pending,
    /// Not known any more: the room forgot the ids of the time it could
    /// have run (`rooms.publish_ids` newer publishes, or the id window).
    Unknown,
}

/// Asks what became of `message`, whose answer was lost.
pub async fn settle<C: redis::aio::ConnectionLike>(
    connection: &mut C,
    keys: &RoomKeys,
    message: &Publish<'_>,
) -> redis::RedisResult<Settled> {
    let reply: Vec<redis::Value> = settle_script()
        .key(&keys.ids)
        .key(&keys.meta)
        .arg(message.record)
        .arg(message.deadline_ms)
        .arg(message.earliest_ms)
        .invoke_async(connection)
        .await?;
    Ok(match outcome(reply)? {
        Ok(Outcome::Published(published)) => {
            Settled::Known(Outcome::Published(Published { repeated: true, ..published }))
        }
        Ok(known) => Settled::Known(known),
        Err(4) => Settled::Pending,
        Err(_) => Settled::Unknown,
    })
}

/// Why a publish's outcome is not a [`Outcome`].
#[derive(Debug)]
pub enum PublishError {
    /// Redis answered with an error (out of memory, a read-only replica, a
    /// script error): it did not run the publish.
    Refused(redis::RedisError),
    /// Its answer was lost and Redis no longer knows (see [`Settled::Unknown`]).
    Unknown,
}

impl std::fmt::Display for PublishError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PublishError::Refused(error) => write!(f, "Redis refused the publish: {error}"),
            PublishError::Unknown => f.write_str("its answer was lost, and Redis no longer knows whether it ran"),
        }
    }
}

/// Whether `error` leaves it open whether the command ran: anything but
/// an error reply from Redis (a timeout, a dropped or refused connection, a
/// reply that could not be read).
pub fn unanswered(error: &redis::RedisError) -> bool {
    error.code().is_none()
}

/// [`publish`], and when its answer is lost, [`settle`] until Redis says
/// what happened (however long that takes: the real answer, never a
/// guess). Returns the outcome with the number of round trips it took.
pub async fn publish_settled<C: redis::aio::ConnectionLike>(
    connection: &mut C,
    keys: &RoomKeys,
    message: &Publish<'_>,
) -> Result<(Outcome, u32), PublishError> {
    match publish(connection, keys, message).await {
        Ok(outcome) => return Ok((outcome, 1)),
        Err(error) if unanswered(&error) => {}
        Err(error) => return Err(PublishError::Refused(error)),
    }
    let mut pause = Duration::from_millis(50);
    let mut attempts = 1;
    loop {
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
        attempts += 1;
        match settle(connection, keys, message).await {
            Ok(Settled::Known(outcome)) => return Ok((outcome, attempts)),
            Ok(Settled::Unknown) => return Err(PublishError::Unknown),
            Ok(Settled::Pending) | Err(_) => {}
        }
    }
}

/// A message as Redis keeps it (history entries) and sends it (the room's
/// channel): a whole `message` frame (a JSON body), or for a raw text body
/// the frame's fields after its `seq` up to `"body":`, a line break, and
/// the text as it came. Frames start with `{`, fields with `,`.
pub fn render(keys: &RoomKeys, seq: u64, stored: &str) -> String {
    match stored.split_once('\n').filter(|_| stored.starts_with(',')) {
        Some((fields, text)) => {
            let (head, _) = frame::message_text_parts(&keys.room, "", 0);
            frame::message_of_text(&head, seq, fields, text)
        }
        None => stored.to_string(),
    }
}

/// A message as it arrives on a room's channel: `SEQ EPOCH STORED`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered<'a> {
    pub seq: u64,
    pub epoch: &'a str,
    /// What [`render`] makes the frame from.
    pub stored: &'a str,
}

impl<'a> Delivered<'a> {
    pub fn parse(payload: &'a str) -> Option<Delivered<'a>> {
        let (seq, rest) = payload.split_once(' ')?;
        let (epoch, stored) = rest.split_once(' ')?;
        Some(Delivered { seq: seq.parse().ok()?, epoch, stored })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::RoomName;

    #[test]
    fn channel_payloads() {
        let delivered = Delivered::parse("12 00ff {\"seq\":12,\"body\":\"a b\"}").unwrap();
        assert_eq!(delivered, Delivered { seq: 12, epoch: "00ff", stored: "{\"seq\":12,\"body\":\"a b\"}" });
        assert_eq!(Delivered::parse("x 00ff {}"), None);
        assert_eq!(Delivered::parse("12"), None);
    }

    #[test]
    fn raw_text_is_rendered_into_the_frame_one_process_makes() {
        let room = RoomName::parse("r").unwrap();
        let keys = RoomKeys::new("p", &room);
        let text = "line\none\u{1}";
        let (head, fields) = frame::message_text_parts(&room, "\"from\":\"7\",\"nick\":null", 5);
        let stored = format!("{fields}\n{text}");
        let made_here = frame::message(&room, 9, "\"from\":\"7\",\"nick\":null", 5, &crate::protocol::json_str(text));
        assert_eq!(render(&keys, 9, &stored), made_here);
        assert_eq!(frame::message_of_text(&head, 9, &fields, text), made_here);
        assert_eq!(render(&keys, 9, "{\"whole\":1}"), "{\"whole\":1}");
        let message = Publish {
            record: "a:1",
            head: &head,
            tail: &fields,
            text: Some(text),
            bounds: RoomBounds {
                history: 1,
                history_bytes: 1,
                publish_ids: 1,
                empty_ttl: Duration::ZERO,
                max_rooms: 1,
            },
            deadline_ms: 0,
            earliest_ms: 0,
        };
        assert_eq!(message.frame_len_without_seq() + 1, made_here.len(), "what history_bytes counts");
    }
}
