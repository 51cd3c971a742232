//! One publish, one script: Redis gives the message its `seq`, keeps it in
//! the room's history stream and publishes it on the room's channel,
//! atomically, so that every node sees the room's messages in `seq` order
//! and no `seq` is born anywhere else.
//!
//! The node builds the frame around the `seq` it does not know yet: the
//! script joins `head`, the `seq` and `tail`, so every node and every
//! history reader gets the same bytes. A raw text body is kept and sent as
//! it came (see [`render`]), not as the JSON string it becomes in the
//! frame (text of control characters grows sixfold when escaped).
//!
//! What Redis holds for a room is bounded by the settings that bound one
//! process: the history by `rooms.history` messages and `rooms.history_bytes`
//! bytes (counted as frames), the room itself by `rooms.max_rooms` (rooms
//! nobody is in, an API publish's, count and are forgotten after
//! `rooms.empty_ttl`), and the records of its publishes by
//! `rooms.publish_ids`.
//!
//! Every publish leaves a record: its client's id (idempotent publish,
//! `protocol.md`), or else its attempt's, which the node makes. A publish
//! whose record exists is not run again: the outcome is the first one's.
//! When a node gets no answer (a timeout, a dropped connection) it asks
//! ([`settle`]): a record says the publish ran; without one, the attempt
//! is *closed* (a tombstone it checks before it runs), so that the publish
//! did not happen and never will, and only then is it `unavailable`. No
//! clock takes part: on its connection an attempt runs before the question
//! that follows it, and elsewhere whichever Redis runs first decides.

use std::time::Duration;

use redis::Script;

use super::keys::RoomKeys;
pub use crate::broker::{Outcome, PublishError, Published, RoomBounds};
use crate::protocol::{RoomName, frame};

/// The publish. `#!lua` makes Redis refuse it before it starts when it is
/// out of memory or a read-only replica, so that a refusal never leaves
/// half a publish behind. The room's meta hash holds the counters, the
/// lengths of the history's entries (`L`, oldest first: what drops when)
/// and the records (see `RoomKeys::meta`); the common case is five
/// commands (`HMGET`, `XADD`, `RPUSH`, `HSET`, `PUBLISH`).
const SCRIPT: &str = r#"#!lua
local meta, history, id_order, members, held = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local channel, record, closed, head, tail = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local is_raw, occupied, max_ids = ARGV[12] == '1', ARGV[13] == '1', tonumber(ARGV[16])
local m = redis.call('HMGET', meta, 'e', 's', 'n', 'b', 'L', record, closed)
if m[6] then
    -- Published already, among the room's last max_ids publishes (this
    -- attempt, or a publish with its client's id): that is the answer.
    local seq, epoch = string.match(m[6], '^(%d+) (%S+)$')
    if tonumber(seq) > (tonumber(m[2]) or 0) - max_ids then
        return {1, tonumber(seq), epoch}
    end
    -- A client's id used again after that: a new publish, a new record.
    redis.call('LREM', id_order, 1, seq .. ' ' .. record)
end
if m[7] then
    -- Its node gave up on this attempt: it is never to run.
    return {2}
end
-- A room nobody is in (an API publish's) is held for empty_ttl, and counts.
local forget_at = nil
if not occupied and redis.call('EXISTS', members) == 0 then
    local room = ARGV[10]
    local score = tonumber(redis.call('ZSCORE', held, room) or '')
    if not score or score == math.huge then
        local clock = redis.call('TIME')
        local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
        if not score then
            redis.call('ZREMRANGEBYSCORE', held, '-inf', now)
            if redis.call('ZCARD', held) >= tonumber(ARGV[9]) then
                return {3}
            end
        end
        score = now + tonumber(ARGV[8])
        redis.call('ZADD', held, score, room)
    end
    forget_at = score
end
local epoch = m[1] or ARGV[11]
local seq = (tonumber(m[2]) or 0) + 1
local seq_s = tostring(seq)
local count, bytes, lengths = tonumber(m[3]) or 0, tonumber(m[4]) or 0, m[5] or ''
local stored
if is_raw then
    stored = tail .. '\n' .. ARGV[14]
else
    stored = head .. seq_s .. tail
end
local frame_len = tonumber(ARGV[6]) + string.len(seq_s)
local max_history, max_bytes = tonumber(ARGV[7]), tonumber(ARGV[15])
if seq == 1 then
    -- A room that starts again must not mix old entries with the new numbering.
    redis.call('DEL', history)
    count, bytes, lengths = 0, 0, ''
end
if max_history == 0 or frame_len > max_bytes then
    -- Too large to keep, and then nothing before it either: no gap.
    if count > 0 then
        redis.call('DEL', history)
    end
    count, bytes, lengths = 0, 0, ''
else
    -- The oldest go while either bound would be passed (one, when full).
    local from = 1
    while count > 0 and (count >= max_history or bytes + frame_len > max_bytes) do
        local comma = string.find(lengths, ',', from, true)
        if not comma then
            count, bytes, from, lengths = 0, 0, 1, ''
            break
        end
        bytes = bytes - tonumber(string.sub(lengths, from, comma - 1))
        from = comma + 1
        count = count - 1
    end
    count = count + 1
    bytes = bytes + frame_len
    lengths = string.sub(lengths, from) .. frame_len .. ','
    redis.call('XADD', history, 'MAXLEN', count, seq_s .. '-0', is_raw and 'r' or 'f', stored)
end
local pair = seq_s .. ' ' .. epoch
forget_oldest(meta, id_order, redis.call('RPUSH', id_order, seq_s .. ' ' .. record), max_ids)
if m[1] then
    redis.call('HSET', meta, 's', seq_s, 'n', count, 'b', bytes, 'L', lengths, record, pair)
else
    redis.call('HSET', meta, 'e', epoch, 's', seq_s, 'n', count, 'b', bytes, 'L', lengths, record, pair)
end
redis.call('PUBLISH', channel, pair .. ' ' .. stored)
if forget_at then
    for _, key in ipairs({meta, history, id_order}) do
        redis.call('PEXPIREAT', key, forget_at)
    end
end
return {0, seq, epoch}
"#;

/// What became of an attempt whose answer was lost; without a record it is
/// closed (a field holding the room's `seq` then), so that it never runs. Tiny writes: allowed when Redis is out
/// of memory.
const SETTLE: &str = r#"#!lua flags=allow-oom
local meta, id_order = KEYS[1], KEYS[2]
local record, closed, min_seq, max_ids = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local m = redis.call('HMGET', meta, record, closed, 's', 'w')
if m[1] then
    -- Its own record (an attempt's is unique), or its client id's within
    -- the room's last max_ids publishes (as the publish itself judges).
    local seq, epoch = string.match(m[1], '^(%d+) (%S+)$')
    if string.sub(record, 1, 4) == 'r:a:' or tonumber(seq) > tonumber(m[3] or '0') - max_ids then
        return {1, tonumber(seq), epoch}
    end
end
if not m[2] then
    redis.call('HSET', meta, closed, m[3] or '0')
    forget_oldest(meta, id_order, redis.call('RPUSH', id_order, (m[3] or '0') .. ' ' .. closed), max_ids)
end
if tonumber(m[4] or '0') >= min_seq then
    -- Records of publishes it could have been were forgotten since.
    return {5}
end
return {2}
"#;

/// What both scripts share: `id_order` lists the fields of the records
/// (and closed attempts) oldest first as `SEQ FIELD`; beyond `max` of them
/// the oldest go, a sixteenth at a time, and `w` keeps the newest `seq`
/// gone.
const FORGET_OLDEST: &str = r#"
local function forget_oldest(meta, id_order, length, max)
    local batch = math.min(256, math.max(1, math.floor(max / 16)))
    if length < max + batch then
        return
    end
    local gone = redis.call('LPOP', id_order, length - max)
    local newest = gone[#gone]
    for i, item in ipairs(gone) do
        gone[i] = string.sub(item, string.find(item, ' ', 1, true) + 1)
    end
    redis.call('HDEL', meta, unpack(gone))
    redis.call('HSET', meta, 'w', string.sub(newest, 1, string.find(newest, ' ', 1, true) - 1))
end
"#;

/// A message on its way to a room.
#[derive(Debug, Clone, Copy)]
pub struct Publish<'a> {
    /// The client's id, if it gave one.
    pub id: Option<&'a str>,
    /// The node's name for this attempt, unique in the cluster.
    pub attempt: &'a str,
    /// The frame up to its `seq`, and after it: the rest of the frame, or
    /// for a raw text body the fields up to `"body":`.
    pub head: &'a str,
    pub tail: &'a str,
    /// A raw text body, kept and sent as it came.
    pub text: Option<&'a str>,
    pub bounds: RoomBounds,
    /// A member publishes: the room has members (an API publish may not).
    pub occupied: bool,
    /// The least `seq` it can get: one more than the room's `seq` the node
    /// knew when it sent it (1 when it knew none).
    pub min_seq: u64,
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

    /// Its record in the room's meta hash: the client's id, else the attempt.
    fn record(&self) -> String {
        match self.id {
            Some(id) => format!("r:c:{id}"),
            None => format!("r:a:{}", self.attempt),
        }
    }

    /// The field that closes its attempt.
    fn closed(&self) -> String {
        format!("x:{}", self.attempt)
    }
}

fn publish_script() -> &'static Script {
    static CELL: std::sync::OnceLock<Script> = std::sync::OnceLock::new();
    super::script_once(&CELL, FORGET_OLDEST, SCRIPT)
}

fn settle_script() -> &'static Script {
    static CELL: std::sync::OnceLock<Script> = std::sync::OnceLock::new();
    super::script_once(&CELL, FORGET_OLDEST, SETTLE)
}

/// The publish and settle scripts (see [`super::load_scripts`]).
pub(super) fn scripts() -> [&'static Script; 2] {
    [publish_script(), settle_script()]
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
        2 => Ok(Outcome::Closed),
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
    let reply: Vec<redis::Value> = publish_script()
        .key(&keys.meta)
        .key(&keys.history)
        .key(&keys.id_order)
        .key(&keys.members)
        .key(&keys.held)
        .arg(&keys.channel)
        .arg(message.record())
        .arg(message.closed())
        .arg(message.head)
        .arg(message.tail)
        .arg(message.frame_len_without_seq())
        .arg(bounds.history)
        .arg(bounds.empty_ttl.as_millis() as u64)
        .arg(bounds.max_rooms)
        .arg(keys.room.as_str())
        .arg(format!("{:016x}", fastrand::u64(..)))
        .arg(if message.text.is_some() { "1" } else { "0" })
        .arg(if message.occupied { "1" } else { "0" })
        .arg(message.text.unwrap_or(""))
        .arg(bounds.history_bytes)
        .arg(bounds.publish_ids)
        .invoke_async(connection)
        .await?;
    outcome(reply)?
        .map_err(|code| redis::RedisError::from((redis::ErrorKind::Parse, "a publish reply", code.to_string())))
}

/// What [`settle`] learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    Known(Outcome),
    /// Not known any more: the attempt is closed now, but the room forgot
    /// the records of publishes it could have been (`rooms.publish_ids`
    /// newer publishes since), so it may have run before.
    Unknown,
}

/// Asks what became of `message`, whose answer was lost; an attempt that
/// has not run is closed (it never will).
pub async fn settle<C: redis::aio::ConnectionLike>(
    connection: &mut C,
    keys: &RoomKeys,
    message: &Publish<'_>,
) -> redis::RedisResult<Settled> {
    let reply: Vec<redis::Value> = settle_script()
        .key(&keys.meta)
        .key(&keys.id_order)
        .arg(message.record())
        .arg(message.closed())
        .arg(message.min_seq)
        .arg(message.bounds.publish_ids)
        .invoke_async(connection)
        .await?;
    Ok(match outcome(reply)? {
        Ok(known) => Settled::Known(known),
        Err(_) => Settled::Unknown,
    })
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
            Err(_) => {}
        }
    }
}

/// A message as Redis keeps it (history entries) and sends it (the room's
/// channel): a whole `message` frame (a JSON body), or for a raw text body
/// the frame's fields after its `seq` up to `"body":`, a line break, and
/// the text as it came. Frames start with `{`, fields with `,`.
pub fn render(room: &RoomName, seq: u64, stored: &str) -> String {
    match stored.starts_with(',').then(|| stored.split_once('\n')).flatten() {
        Some((fields, text)) => {
            let (head, _) = frame::message_text_parts(room, "", 0);
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
        assert_eq!(render(&keys.room, 9, &stored), made_here);
        assert_eq!(frame::message_of_text(&head, 9, &fields, text), made_here);
        assert_eq!(render(&keys.room, 9, "{\"whole\":1}"), "{\"whole\":1}");
        let message = Publish {
            id: None,
            attempt: "1-1",
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
            occupied: true,
            min_seq: 1,
        };
        assert_eq!(message.frame_len_without_seq() + 1, made_here.len(), "what history_bytes counts");
        assert_eq!((message.record(), message.closed()), ("r:a:1-1".to_string(), "x:1-1".to_string()));
        let with_id = Publish { id: Some("k"), ..message };
        assert_eq!(with_id.record(), "r:c:k", "a client's id names its record, whoever sends it");
    }
}
