//! Who is in a room, across nodes. Per room, a hash of its members (session
//! id -> its `members` entry, `{"id":..,"nick":..}` plus `user` with auth
//! on); per node, the set of its memberships (so that a dead node's
//! members can be made to leave); per cluster, the rooms with members and
//! their counts (`rooms`, `GET /api/rooms`). Joins and leaves are scripts
//! that keep the three together and announce the change on the room's
//! channel as `P FRAME`, where FRAME is the `presence` event.

use redis::Script;

use super::keys::RoomKeys;
pub use crate::broker::{JoinReply, Joined};

/// The prefix of a presence event on a room's channel (messages start with
/// their `seq`, a digit).
pub const PRESENCE_PREFIX: &str = "P ";

const JOIN: &str = r#"#!lua
local members, node_index, rooms, meta, history, id_order, held =
    KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local room, id, entry, max_members, channel = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local fresh_epoch, since, client_epoch, recent = ARGV[6], tonumber(ARGV[7]), ARGV[8], tonumber(ARGV[9])
local max_rooms = tonumber(ARGV[10])
local count, outcome = redis.call('HLEN', members), 0
if redis.call('HEXISTS', members, id) == 0 then
    if count >= max_members then
        return {count, -1}
    end
    if count == 0 then
        -- The room's first member: held (counted by max_rooms) from now
        -- on, and kept for as long as it has members.
        local clock = redis.call('TIME')
        redis.call('ZREMRANGEBYSCORE', held, '-inf', tonumber(clock[1]) * 1000)
        if not redis.call('ZSCORE', held, room) and redis.call('ZCARD', held) >= max_rooms then
            return {0, -2}
        end
        redis.call('ZADD', held, '+inf', room)
        for _, key in ipairs({meta, history, id_order}) do
            redis.call('PERSIST', key)
        end
    end
    redis.call('HSET', members, id, entry)
    redis.call('SADD', node_index, room .. ' ' .. id)
    count, outcome = count + 1, 1
    redis.call('ZADD', rooms, count, room)
    redis.call('PUBLISH', channel, 'P {"type":"presence","room":"' .. room .. '","event":"join",' .. string.sub(entry, 2))
end
-- The room's epoch exists from its first join, so that joined can carry it.
local epoch = redis.call('HGET', meta, 'e')
if not epoch then
    epoch = fresh_epoch
    redis.call('HSET', meta, 'e', epoch)
end
local top = tonumber(redis.call('HGET', meta, 's') or '0')
local entries, reset = {}, 0
if since >= 0 then
    if since > top or (client_epoch ~= '' and client_epoch ~= epoch) then
        entries, reset = redis.call('XRANGE', history, '-', '+'), 1
    else
        entries = redis.call('XRANGE', history, (since + 1) .. '-0', '+')
    end
elseif recent > 0 then
    local newest = redis.call('XREVRANGE', history, '+', '-', 'COUNT', recent)
    for i = #newest, 1, -1 do
        entries[#entries + 1] = newest[i]
    end
end
local out = {count, outcome, epoch, top, reset}
for _, item in ipairs(entries) do
    out[#out + 1] = tonumber(string.match(item[1], '^(%d+)-'))
    out[#out + 1] = item[2][2]
end
return out
"#;

/// The body of a leave, shared by [`Presence::leave`] and
/// [`Presence::evict`]: removes one membership, starts `empty_ttl` when the
/// room empties, announces the leave. Returns the members left, or -1 when
/// the session was not a member.
/// `room` is the room's keys, by name: members, meta, history, id_order,
/// channel. Leaves free memory: they run when Redis refuses
/// writes (`allow-oom`).
const LEAVE_FUNCTION: &str = r#"
local function leave(room, node_index, rooms, held, name, id, empty_ttl)
    local entry = redis.call('HGET', room.members, id)
    if not entry then
        return -1
    end
    redis.call('HDEL', room.members, id)
    redis.call('SREM', node_index, name .. ' ' .. id)
    local count = redis.call('HLEN', room.members)
    if count == 0 then
        redis.call('ZREM', rooms, name)
        -- An empty room keeps its seq, history and publish ids for
        -- empty_ttl (and counts as held), then goes.
        local lasting = {room.meta, room.history, room.id_order}
        if empty_ttl > 0 then
            local clock = redis.call('TIME')
            local forget_at = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000) + empty_ttl
            redis.call('ZADD', held, forget_at, name)
            for _, key in ipairs(lasting) do
                redis.call('PEXPIREAT', key, forget_at)
            end
        else
            redis.call('ZREM', held, name)
            redis.call('DEL', unpack(lasting))
        end
    else
        redis.call('ZADD', rooms, count, name)
    end
    redis.call('PUBLISH', room.channel, 'P {"type":"presence","room":"' .. name .. '","event":"leave",' .. string.sub(entry, 2))
    return count
end
"#;

/// KEYS members, meta, history, id_order, node index, rooms, held; ARGV
/// room, id, channel, empty_ttl ms.
const LEAVE: &str = r#"#!lua flags=allow-oom
local room = {members = KEYS[1], meta = KEYS[2], history = KEYS[3], id_order = KEYS[4], channel = ARGV[3]}
return leave(room, KEYS[5], KEYS[6], KEYS[7], ARGV[1], ARGV[2], tonumber(ARGV[4]))
"#;

/// Every membership of a dead node leaves. KEYS node index, rooms, held;
/// ARGV the cluster's prefix, empty_ttl ms. The room keys are derived
/// here, as `keys.rs` names them. Returns how many left.
const EVICT: &str = r#"#!lua flags=allow-oom
local node_index, rooms, held, prefix, empty_ttl = KEYS[1], KEYS[2], KEYS[3], ARGV[1], tonumber(ARGV[2])
local evicted = 0
for _, item in ipairs(redis.call('SMEMBERS', node_index)) do
    local name, id = string.match(item, '^(%S+) (%S+)$')
    local base = prefix .. ':{' .. name .. '}'
    local room = {members = base .. ':members', meta = base .. ':meta', history = base .. ':history',
                  id_order = base .. ':id-order', channel = base .. ':messages'}
    if leave(room, node_index, rooms, held, name, id, empty_ttl) >= 0 then
        evicted = evicted + 1
    end
end
redis.call('DEL', node_index)
return evicted
"#;

fn join_script() -> &'static Script {
    static CELL: std::sync::OnceLock<Script> = std::sync::OnceLock::new();
    super::script_once(&CELL, "", JOIN)
}

fn leave_script() -> &'static Script {
    static CELL: std::sync::OnceLock<Script> = std::sync::OnceLock::new();
    super::script_once(&CELL, LEAVE_FUNCTION, LEAVE)
}

/// The join and leave scripts (see [`super::load_scripts`]).
pub(super) fn scripts() -> [&'static Script; 2] {
    [join_script(), leave_script()]
}

/// The cluster-wide presence keys of the cluster named by `prefix`.
#[derive(Debug, Clone)]
pub struct Presence {
    prefix: String,
    rooms: String,
}

/// Who joins: the room's name, the node holding the session, the session
/// id, and its `members` entry (a JSON object).
#[derive(Debug, Clone, Copy)]
pub struct Membership<'a> {
    pub room: &'a str,
    pub node: &'a str,
    pub id: &'a str,
    pub entry: &'a str,
}

/// What a join reads of the history.
#[derive(Debug, Clone, Copy)]
pub enum Read<'a> {
    /// The newest `n` messages (`history: n`).
    Recent(usize),
    /// Every kept message after `seq` (`since`), with the epoch it belongs to.
    Since { seq: u64, epoch: Option<&'a str> },
}

impl Presence {
    pub fn new(prefix: &str) -> Presence {
        Presence { prefix: prefix.to_string(), rooms: format!("{prefix}:rooms") }
    }

    fn node_index(&self, node: &str) -> String {
        format!("{}:node:{node}:members", self.prefix)
    }

    /// `script` with the keys a join of `node`'s member touches.
    fn with_room_keys(&self, script: &'static Script, keys: &RoomKeys, node: &str) -> redis::ScriptInvocation<'static> {
        let mut invocation = script.prepare_invoke();
        invocation.key(&keys.members).key(self.node_index(node)).key(&self.rooms);
        invocation.key(&keys.meta).key(&keys.history).key(&keys.id_order).key(&keys.held);
        invocation
    }

    /// Makes session `member.id` a member of `keys`' room on `member.node`
    /// unless the room is full, and reads what its `joined` reply needs, in
    /// the same step: nothing published after the read can be missing from
    /// the node's channel (the node subscribed before).
    pub async fn join<C: redis::aio::ConnectionLike>(
        &self,
        connection: &mut C,
        keys: &RoomKeys,
        member: &Membership<'_>,
        limits: (usize, usize),
        read: Read<'_>,
    ) -> redis::RedisResult<JoinReply> {
        let (max_members, max_rooms) = limits;
        let (since, client_epoch, recent) = match read {
            Read::Recent(count) => (-1, "", count),
            Read::Since { seq, epoch } => (i64::try_from(seq).unwrap_or(i64::MAX), epoch.unwrap_or(""), 0),
        };
        let reply: Vec<redis::Value> = self
            .with_room_keys(join_script(), keys, member.node)
            .arg(member.room)
            .arg(member.id)
            .arg(member.entry)
            .arg(max_members)
            .arg(&keys.channel)
            .arg(format!("{:016x}", fastrand::u64(..)))
            .arg(since)
            .arg(client_epoch)
            .arg(recent)
            .arg(max_rooms)
            .invoke_async(connection)
            .await?;
        let malformed = || redis::RedisError::from((redis::ErrorKind::Parse, "a malformed join reply"));
        let mut values = reply.into_iter();
        let mut next = || values.next().ok_or_else(malformed);
        let count: usize = redis::from_redis_value(next()?)?;
        let outcome: i8 = redis::from_redis_value(next()?)?;
        let joined = match outcome {
            1 => Joined::Added(count),
            0 => Joined::Already(count),
            -2 => return Ok(JoinReply { joined: Joined::TooManyRooms, ..JoinReply::default() }),
            _ => return Ok(JoinReply { joined: Joined::Full(count), ..JoinReply::default() }),
        };
        let epoch: String = redis::from_redis_value(next()?)?;
        let top: u64 = redis::from_redis_value(next()?)?;
        let reset: u8 = redis::from_redis_value(next()?)?;
        let mut entries = Vec::new();
        while let Some(seq) = values.next() {
            let seq = redis::from_redis_value(seq)?;
            let stored: String = redis::from_redis_value(values.next().ok_or_else(malformed)?)?;
            entries.push((seq, super::publish::render(&keys.room, seq, &stored)));
        }
        Ok(JoinReply { joined, epoch, top, entries, reset: reset == 1 })
    }

    /// Ends session `id`'s membership of `room`; returns the members left,
    /// or `None` when it was not a member.
    pub async fn leave<C: redis::aio::ConnectionLike>(
        &self,
        connection: &mut C,
        keys: &RoomKeys,
        room: &str,
        node: &str,
        id: &str,
        empty_ttl: std::time::Duration,
    ) -> redis::RedisResult<Option<usize>> {
        let left: i64 = leave_script()
            .key(&keys.members)
            .key(&keys.meta)
            .key(&keys.history)
            .key(&keys.id_order)
            .key(self.node_index(node))
            .key(&self.rooms)
            .key(&keys.held)
            .arg(room)
            .arg(id)
            .arg(&keys.channel)
            .arg(empty_ttl.as_millis() as u64)
            .invoke_async(connection)
            .await?;
        Ok(usize::try_from(left).ok())
    }

    /// Puts session `id`'s new `members` entry (a new nick) in the room,
    /// if it is still a member.
    pub async fn rename<C: redis::aio::ConnectionLike>(
        &self,
        connection: &mut C,
        keys: &RoomKeys,
        id: &str,
        entry: &str,
    ) -> redis::RedisResult<()> {
        static CELL: std::sync::OnceLock<Script> = std::sync::OnceLock::new();
        const RENAME: &str = r#"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
    redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
return 0
"#;
        let rename = super::script_once(&CELL, "", RENAME);
        let _: i64 = rename.key(&keys.members).arg(id).arg(entry).invoke_async(connection).await?;
        Ok(())
    }

    /// Every member of `room`: their `members` entries.
    pub async fn members<C: redis::aio::ConnectionLike>(
        &self,
        connection: &mut C,
        keys: &RoomKeys,
    ) -> redis::RedisResult<Vec<String>> {
        redis::cmd("HVALS").arg(&keys.members).query_async(connection).await
    }

    /// Every room with members, with its count, by name.
    pub async fn rooms<C: redis::aio::ConnectionLike>(
        &self,
        connection: &mut C,
    ) -> redis::RedisResult<Vec<(String, usize)>> {
        let mut rooms: Vec<(String, usize)> =
            redis::cmd("ZRANGE").arg(&self.rooms).arg(0).arg(-1).arg("WITHSCORES").query_async(connection).await?;
        rooms.sort();
        Ok(rooms)
    }

    /// Makes every member `node` had leave its rooms, with leave events:
    /// the node was found dead. Returns how many left.
    pub async fn evict<C: redis::aio::ConnectionLike>(
        &self,
        connection: &mut C,
        node: &str,
        empty_ttl: std::time::Duration,
    ) -> redis::RedisResult<usize> {
        static CELL: std::sync::OnceLock<Script> = std::sync::OnceLock::new();
        super::script_once(&CELL, LEAVE_FUNCTION, EVICT)
            .key(self.node_index(node))
            .key(&self.rooms)
            .key(super::keys::held_key(&self.prefix))
            .arg(&self.prefix)
            .arg(empty_ttl.as_millis() as u64)
            .invoke_async(connection)
            .await
    }

    /// Every membership `node` holds, as (room, session id): what must
    /// leave when the node is found dead.
    pub async fn memberships<C: redis::aio::ConnectionLike>(
        &self,
        connection: &mut C,
        node: &str,
    ) -> redis::RedisResult<Vec<(String, String)>> {
        let items: Vec<String> = redis::cmd("SMEMBERS").arg(self.node_index(node)).query_async(connection).await?;
        Ok(items
            .into_iter()
            .filter_map(|item| item.split_once(' ').map(|(r, i)| (r.to_string(), i.to_string())))
            .collect())
    }
}
