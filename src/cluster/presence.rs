//! Who is in a room, across nodes. Per room, a hash of its members (session
//! id -> its `members` entry, `{"id":..,"nick":..}` plus `user` with auth
//! on); per node, the set of its memberships (so that a dead node's
//! members can be made to leave); per cluster, the rooms with members and
//! their counts (`rooms`, `GET /api/rooms`). Joins and leaves are scripts
//! that keep the three together and announce the change on the room's
//! channel as `P FRAME`, where FRAME is the `presence` event.

use redis::Script;

use super::keys::RoomKeys;

/// The prefix of a presence event on a room's channel (messages start with
/// their `seq`, a digit).
pub const PRESENCE_PREFIX: &str = "P ";

const JOIN: &str = r#"
local members, node_index, rooms, meta, history = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local room, id, entry, max_members, channel = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local fresh_epoch, since, client_epoch, recent = ARGV[6], tonumber(ARGV[7]), ARGV[8], tonumber(ARGV[9])
local count, outcome = redis.call('HLEN', members), 0
if redis.call('HEXISTS', members, id) == 0 then
    if count >= max_members then
        return {count, -1}
    end
    redis.call('HSET', members, id, entry)
    redis.call('SADD', node_index, room .. ' ' .. id)
    count, outcome = count + 1, 1
    redis.call('ZADD', rooms, count, room)
    redis.call('PERSIST', meta)
    redis.call('PERSIST', history)
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
const LEAVE_FUNCTION: &str = r#"
local function leave(members, node_index, rooms, meta, history, room, id, channel, empty_ttl)
    local entry = redis.call('HGET', members, id)
    if not entry then
        return -1
    end
    redis.call('HDEL', members, id)
    redis.call('SREM', node_index, room .. ' ' .. id)
    local count = redis.call('HLEN', members)
    if count == 0 then
        redis.call('ZREM', rooms, room)
        -- An empty room keeps its seq and history for empty_ttl, then goes.
        if empty_ttl > 0 then
            redis.call('PEXPIRE', meta, empty_ttl)
            redis.call('PEXPIRE', history, empty_ttl)
        else
            redis.call('DEL', meta, history)
        end
    else
        redis.call('ZADD', rooms, count, room)
    end
    redis.call('PUBLISH', channel, 'P {"type":"presence","room":"' .. room .. '","event":"leave",' .. string.sub(entry, 2))
    return count
end
"#;

/// KEYS members, node index, rooms, meta, history; ARGV room, id,
/// channel, empty_ttl ms.
const LEAVE: &str = r#"
return leave(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]))
"#;

/// Every membership of a dead node leaves. KEYS node index, rooms; ARGV
/// the cluster's prefix, empty_ttl ms. The room keys are derived here, as
/// `keys.rs` names them. Returns how many left.
const EVICT: &str = r#"
local node_index, rooms, prefix, empty_ttl = KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2])
local evicted = 0
for _, item in ipairs(redis.call('SMEMBERS', node_index)) do
    local room, id = string.match(item, '^(%S+) (%S+)$')
    local base = prefix .. ':{' .. room .. '}'
    if leave(base .. ':members', node_index, rooms, base .. ':meta', base .. ':history', room, id,
             base .. ':messages', empty_ttl) >= 0 then
        evicted = evicted + 1
    end
end
redis.call('DEL', node_index)
return evicted
"#;

fn script(source: &'static str, cell: &'static std::sync::OnceLock<Script>) -> &'static Script {
    cell.get_or_init(|| Script::new(source))
}

/// A script that uses the shared leave function.
fn with_leave(source: &'static str, cell: &'static std::sync::OnceLock<Script>) -> &'static Script {
    cell.get_or_init(|| Script::new(&format!("{LEAVE_FUNCTION}\n{source}")))
}

fn join_script() -> &'static Script {
    static CELL: std::sync::OnceLock<Script> = std::sync::OnceLock::new();
    script(JOIN, &CELL)
}

fn leave_script() -> &'static Script {
    static CELL: std::sync::OnceLock<Script> = std::sync::OnceLock::new();
    with_leave(LEAVE, &CELL)
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

/// A join's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joined {
    /// A new member: the room now has this many, on every node.
    Added(usize),
    /// Already a member (joining again changes nothing).
    Already(usize),
    /// The room has `max_members_per_room` members.
    Full(usize),
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

/// A join's outcome and what its `joined` reply carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinReply {
    pub joined: Joined,
    pub epoch: String,
    /// The room's last `seq` when the member joined.
    pub top: u64,
    /// History entries read, oldest first.
    pub entries: Vec<(u64, String)>,
    /// `since` was beyond the room's `seq` or of another epoch: `entries`
    /// is every kept message and nothing was recovered.
    pub reset: bool,
}

impl Default for JoinReply {
    fn default() -> Self {
        JoinReply { joined: Joined::Full(0), epoch: String::new(), top: 0, entries: Vec::new(), reset: false }
    }
}

impl JoinReply {
    /// `recovered` for a `since` join: every message after `since` is in
    /// `entries`.
    pub fn recovered(&self, since: u64) -> bool {
        !self.reset && self.entries.len() as u64 == self.top.saturating_sub(since)
    }
}

impl Presence {
    pub fn new(prefix: &str) -> Presence {
        Presence { prefix: prefix.to_string(), rooms: format!("{prefix}:rooms") }
    }

    fn node_index(&self, node: &str) -> String {
        format!("{}:node:{node}:members", self.prefix)
    }

    /// `script` with the keys a join or leave of `node`'s member touches.
    fn with_room_keys(&self, script: &'static Script, keys: &RoomKeys, node: &str) -> redis::ScriptInvocation<'static> {
        let mut invocation = script.prepare_invoke();
        invocation.key(&keys.members).key(self.node_index(node)).key(&self.rooms).key(&keys.meta).key(&keys.history);
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
        max_members: usize,
        read: Read<'_>,
    ) -> redis::RedisResult<JoinReply> {
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
            _ => return Ok(JoinReply { joined: Joined::Full(count), ..JoinReply::default() }),
        };
        let epoch: String = redis::from_redis_value(next()?)?;
        let top: u64 = redis::from_redis_value(next()?)?;
        let reset: u8 = redis::from_redis_value(next()?)?;
        let mut entries = Vec::new();
        while let Some(seq) = values.next() {
            let frame = values.next().ok_or_else(malformed)?;
            entries.push((redis::from_redis_value(seq)?, redis::from_redis_value(frame)?));
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
        let left: i64 = self
            .with_room_keys(leave_script(), keys, node)
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
        let _: i64 = script(RENAME, &CELL).key(&keys.members).arg(id).arg(entry).invoke_async(connection).await?;
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
        with_leave(EVICT, &CELL)
            .key(self.node_index(node))
            .key(&self.rooms)
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
