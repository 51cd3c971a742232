//! The hub's one seam to what rooms share: each call is answered by the
//! memory broker at once, or by Redis later ([`Done`]); the hub runs the
//! answer the same way either way (`in_broker`). Redis's own life (beats,
//! deaths, putting it right after an outage) stays in `cluster/`.

use std::sync::Arc;
use std::time::{Duration, Instant};

pub(super) use crate::broker::Done;
use crate::broker::memory::MemoryBroker;
use crate::broker::{Event, JoinRead, Message, MessageText};
use crate::cluster::history::Range;
use crate::cluster::keys::RoomKeys;
use crate::cluster::nodes;
use crate::cluster::presence::{JoinReply, Membership, Read};
use crate::cluster::publish::{self, Outcome, Publish, PublishError, RoomBounds};
use crate::protocol::{RoomName, SessionId};

use super::cluster::Cluster;

pub(super) enum Broker {
    Memory(MemoryBroker),
    Redis(Box<Cluster>),
}

/// A Redis answer, or the error that there is none.
pub(super) type Answer<T> = redis::RedisResult<T>;

fn now<T>(value: T) -> Done<Answer<T>> {
    Done::Now(Ok(value))
}

fn not_connected<T>() -> Done<Answer<T>> {
    Done::Now(Err(redis::RedisError::from((redis::ErrorKind::Io, "not connected to Redis"))))
}

/// A publish's outcome with the round trips it took, and how long.
pub(super) type Publishing = (Result<(Outcome, u32), PublishError>, Duration);

impl Broker {
    pub fn redis(&self) -> Option<&Cluster> {
        match self {
            Broker::Redis(cluster) => Some(cluster),
            Broker::Memory(_) => None,
        }
    }

    pub fn redis_mut(&mut self) -> Option<&mut Cluster> {
        match self {
            Broker::Redis(cluster) => Some(cluster),
            Broker::Memory(_) => None,
        }
    }

    /// What the room's channel carried (the memory broker's; Redis's come
    /// from its subscriber).
    pub fn take_events(&mut self, into: &mut Vec<Event>) {
        if let Broker::Memory(memory) = self {
            memory.take_events(into);
        }
    }

    /// A room's keys in Redis (made once per room on this node).
    pub fn keys(&self, room: &RoomName) -> Option<Arc<RoomKeys>> {
        self.redis().map(|cluster| Arc::new(RoomKeys::new(&cluster.settings.prefix, room)))
    }

    /// Session `id` (its `members` entry `entry`) joins `room`, after the
    /// node subscribes to its channel (`subscribe`).
    #[allow(clippy::too_many_arguments)]
    pub fn join(
        &mut self,
        room: &RoomName,
        keys: Option<Arc<RoomKeys>>,
        id: SessionId,
        entry: String,
        limits: (usize, usize),
        read: JoinRead,
        subscribe: bool,
    ) -> Done<Answer<JoinReply>> {
        let cluster = match self {
            Broker::Memory(memory) => return now(memory.join(room, id, &entry, limits, &read)),
            Broker::Redis(cluster) => cluster,
        };
        let (Some(link), Some(keys)) = (&cluster.link, keys) else {
            return not_connected();
        };
        let (mut connection, node) = (link.connection.clone(), link.node_name());
        let presence = cluster.presence.clone();
        let subscriber = subscribe.then(|| link.subscriber.clone());
        let name = room.clone();
        Done::Later(Box::pin(async move {
            if let Some(subscriber) = subscriber {
                subscriber.subscribe(&name).await?;
            }
            let id = id.to_string();
            let member = Membership { room: name.as_str(), node: &node, id: &id, entry: &entry };
            let read = match &read {
                JoinRead::Recent(count) => Read::Recent(*count),
                JoinRead::Since(seq, epoch) => Read::Since { seq: *seq, epoch: epoch.as_deref() },
            };
            presence.join(&mut connection, &keys, &member, limits, read).await
        }))
    }

    /// Session `id` leaves `room`; an emptied room is kept `empty_ttl`.
    pub fn leave(&mut self, room: &RoomName, id: SessionId, empty_ttl: Duration) -> Done<Answer<Option<usize>>> {
        let cluster = match self {
            Broker::Memory(memory) => return now(memory.leave(room, id, empty_ttl)),
            Broker::Redis(cluster) => cluster,
        };
        let Some(link) = &cluster.link else {
            return not_connected();
        };
        let mut connection = link.connection.clone();
        let keys = RoomKeys::new(&cluster.settings.prefix, room);
        let (presence, name) = (cluster.presence.clone(), room.clone());
        let node = nodes::node_of(id).to_string();
        Done::Later(Box::pin(async move {
            presence.leave(&mut connection, &keys, name.as_str(), &node, &id.to_string(), empty_ttl).await
        }))
    }

    /// Publishes `message` to `room` (`keys`: its keys in Redis; `min_seq`:
    /// a `seq` this node knows the room will pass; `occupied`: a member
    /// publishes), with the bounds Redis keeps it in.
    pub fn publish(
        &mut self,
        room: &RoomName,
        keys: Option<Arc<RoomKeys>>,
        message: &Message<'_>,
        bounds: RoomBounds,
        occupied: bool,
        min_seq: u64,
    ) -> Done<Publishing> {
        let cluster = match self {
            Broker::Memory(memory) => return Done::Now((Ok((memory.publish(room, message), 1)), Duration::ZERO)),
            Broker::Redis(cluster) => cluster,
        };
        let Some(link) = &cluster.link else {
            let error = redis::RedisError::from((redis::ErrorKind::Io, "not connected to Redis"));
            return Done::Now((Err(PublishError::Refused(error)), Duration::ZERO));
        };
        cluster.publishes += 1;
        let attempt = format!("{}-{}", link.node, cluster.publishes);
        let mut connection = link.connection.clone();
        let keys = keys.unwrap_or_else(|| Arc::new(RoomKeys::new(&cluster.settings.prefix, room)));
        let publish_id = message.id.map(|id| id.as_str().to_string());
        let (head, tail) = (message.head.to_string(), message.tail.to_string());
        let text = match message.text {
            MessageText::Json => None,
            MessageText::Raw(text) => Some(text.to_string()),
        };
        Done::Later(Box::pin(async move {
            let message = Publish {
                id: publish_id.as_deref(),
                attempt: &attempt,
                head: &head,
                tail: &tail,
                text: text.as_deref(),
                bounds,
                occupied,
                min_seq,
            };
            let started = Instant::now();
            let outcome = publish::publish_settled(&mut connection, &keys, &message).await;
            (outcome, started.elapsed())
        }))
    }

    /// The room's messages `from..=to` (`None`: to the newest) with its epoch.
    pub fn history(&mut self, room: &RoomName, keys: Arc<RoomKeys>, from: u64, to: Option<u64>) -> Done<Answer<Range>> {
        let cluster = match self {
            Broker::Memory(memory) => return now(memory.history(room, from, to)),
            Broker::Redis(cluster) => cluster,
        };
        let Some(link) = &cluster.link else {
            return not_connected();
        };
        let mut connection = link.connection.clone();
        Done::Later(Box::pin(async move { crate::cluster::history::range(&mut connection, &keys, from, to).await }))
    }

    /// The `members` entries of `room`, by session id.
    pub fn members(&mut self, room: &RoomName) -> Done<Answer<Vec<String>>> {
        let cluster = match self {
            Broker::Memory(memory) => return now(memory.members(room)),
            Broker::Redis(cluster) => cluster,
        };
        let Some(link) = &cluster.link else {
            return not_connected();
        };
        let (mut connection, presence) = (link.connection.clone(), cluster.presence.clone());
        let keys = RoomKeys::new(&cluster.settings.prefix, room);
        Done::Later(Box::pin(async move {
            let mut entries = presence.members(&mut connection, &keys).await?;
            entries.sort_by_key(|entry| entry_id(entry));
            Ok(entries)
        }))
    }

    /// Every room with members, with how many, by name.
    pub fn rooms(&mut self) -> Done<Answer<Vec<(RoomName, usize)>>> {
        let cluster = match self {
            Broker::Memory(memory) => return now(memory.rooms()),
            Broker::Redis(cluster) => cluster,
        };
        let Some(link) = &cluster.link else {
            return not_connected();
        };
        let (mut connection, presence) = (link.connection.clone(), cluster.presence.clone());
        Done::Later(Box::pin(async move { presence.rooms(&mut connection).await.map(parse_rooms) }))
    }

    /// Session `id`'s new `members` entry in each of `rooms`.
    pub fn rename(&mut self, rooms: Vec<RoomName>, id: SessionId, entry: String) -> Done<Answer<()>> {
        let cluster = match self {
            Broker::Memory(memory) => {
                memory.rename(&rooms, id, &entry);
                return now(());
            }
            Broker::Redis(cluster) => cluster,
        };
        let Some(link) = &cluster.link else {
            return not_connected();
        };
        let (mut connection, presence) = (link.connection.clone(), cluster.presence.clone());
        let prefix = cluster.settings.prefix.clone();
        Done::Later(Box::pin(async move {
            for room in rooms {
                let keys = RoomKeys::new(&prefix, &room);
                presence.rename(&mut connection, &keys, &id.to_string(), &entry).await?;
            }
            Ok(())
        }))
    }

    /// A session opened (`true`) or closed: other nodes find it by this.
    pub fn session(&mut self, id: SessionId, open: bool) -> Done<Answer<()>> {
        let Some(link) = self.redis().and_then(|cluster| cluster.link.as_ref().map(|link| (cluster, link))) else {
            return now(());
        };
        let (cluster, link) = link;
        let mut connection = link.connection.clone();
        let key = nodes::sessions_key(&cluster.settings.prefix, nodes::node_of(id));
        let command = if open { "SADD" } else { "SREM" };
        Done::Later(Box::pin(async move { redis::cmd(command).arg(key).arg(id.0).query_async(&mut connection).await }))
    }

    /// A `direct` for session `to` of another node (`None`: it would be
    /// this node's own, delivered by the hub).
    pub fn direct(&mut self, to: SessionId, payload: String) -> Option<Done<Answer<bool>>> {
        let cluster = self.redis()?;
        if Some(nodes::node_of(to)) == cluster.node() {
            return None;
        }
        let Some(link) = &cluster.link else {
            return Some(not_connected());
        };
        let (mut connection, prefix) = (link.connection.clone(), cluster.settings.prefix.clone());
        Some(Done::Later(Box::pin(async move { nodes::direct(&mut connection, &prefix, to, &payload).await })))
    }

    /// This node no longer has members of `room`.
    pub fn unsubscribe(&mut self, room: &RoomName) {
        if let Some(link) = self.redis().and_then(|cluster| cluster.link.as_ref()) {
            link.subscriber.unsubscribe(room);
        }
    }

    /// Why requests that need the broker fail now (Redis did not answer
    /// the last beat), if they do.
    pub fn down(&self, metrics: &crate::metrics::Metrics) -> Option<String> {
        let cluster = self.redis()?;
        let up = metrics.cluster.up.load(std::sync::atomic::Ordering::Relaxed) == 1;
        (!up || cluster.link.is_none()).then(|| "no answer to the last beat".to_string())
    }
}

fn parse_rooms(rooms: Vec<(String, usize)>) -> Vec<(RoomName, usize)> {
    rooms.into_iter().filter_map(|(name, count)| RoomName::parse(&name).ok().map(|name| (name, count))).collect()
}

/// The session id a `members` entry starts with, for a stable order.
fn entry_id(entry: &str) -> u64 {
    entry.strip_prefix("{\"id\":\"").and_then(|rest| rest.split('"').next()).and_then(|id| id.parse().ok()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame;

    #[test]
    fn entries_sort_by_their_session_id() {
        assert_eq!(entry_id(&frame::member_entry(SessionId(42), Some("a"), None)), 42);
        assert_eq!(entry_id("{}"), 0);
    }
}
