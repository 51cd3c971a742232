//! [`RedisBroker`]: the hub's calls answered by Redis. Each call takes
//! what it needs of the node's link and returns its work as a future the
//! hub runs on the Redis thread ([`Done::Later`]); what Redis's channels
//! and the node's life say comes back as events ([`Broker::events`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::keys::RoomKeys;
use super::node::{self, Life, Link, SharedLink};
use super::presence::{Membership, Presence as RedisPresence, Read};
use super::publish::{self, Publish};
use super::subscriber::BINARY_PREFIX;
use super::users::Users;
use super::{history, nodes};
use crate::broker::{
    Answer, Broker, Done, Event, Holdings, JoinRead, JoinReply, Joiner, Message, MessageText, Outcome, Presence,
    PublishError, Publishing, Range,
};
use crate::config::ClusterSettings;
use crate::metrics::Metrics;
use crate::protocol::{RoomName, SessionId};

/// Events from Redis that may wait for the hub; beyond, the subscriber
/// stops reading and Redis cuts a lagging node off (it then repairs from
/// history).
const EVENT_QUEUE: usize = 1024;

/// Starts the thread that runs a node's Redis connections (a Tokio runtime
/// of its own).
pub fn start_io_thread() -> std::io::Result<tokio::runtime::Handle> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let handle = runtime.handle().clone();
    std::thread::Builder::new()
        .name("redis-io".into())
        .spawn(move || runtime.block_on(std::future::pending::<()>()))?;
    Ok(handle)
}

pub struct RedisBroker {
    prefix: String,
    io: tokio::runtime::Handle,
    metrics: Arc<Metrics>,
    link: SharedLink,
    presence: RedisPresence,
    users: Users,
    /// The keys of the rooms this node is subscribed to, made once.
    keys: HashMap<RoomName, Arc<RoomKeys>>,
    /// Counts publishes, for their ids.
    publishes: u64,
    events: Option<mpsc::Receiver<Event>>,
    /// `rooms.empty_ttl` (ms), for the node's task.
    empty_ttl: Arc<AtomicU64>,
}

fn not_connected() -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Io, "not connected to Redis"))
}

impl RedisBroker {
    /// The broker of a node of the cluster `settings` names, its Redis
    /// work on `io`; the node's task starts at once (connecting, then
    /// beating) and sets `next_id` to the node's first session id.
    pub fn start(
        settings: ClusterSettings,
        client: redis::Client,
        next_id: Arc<AtomicU64>,
        io: tokio::runtime::Handle,
        metrics: Arc<Metrics>,
    ) -> RedisBroker {
        // `rediss://`: the Redis client builds its TLS configuration from the
        // process's default provider, which must be one (the server's, ring)
        // whatever other crates enable.
        let _ = rustls::crypto::ring::default_provider().install_default();
        metrics.cluster.enabled.store(true, Ordering::Relaxed);
        metrics.cluster.writable.store(1, Ordering::Relaxed);
        let (sender, events) = mpsc::channel(EVENT_QUEUE);
        let link = SharedLink::default();
        let presence = RedisPresence::new(&settings.prefix);
        let users = Users::new(&settings.prefix);
        let empty_ttl = Arc::new(AtomicU64::new(0));
        let prefix = settings.prefix.clone();
        let life = Life {
            settings,
            client,
            link: link.clone(),
            presence: presence.clone(),
            users: users.clone(),
            metrics: metrics.clone(),
            next_id,
            events: sender,
            empty_ttl: empty_ttl.clone(),
        };
        io.spawn(node::run(life));
        RedisBroker {
            prefix,
            io,
            metrics,
            link,
            presence,
            users,
            keys: HashMap::new(),
            publishes: 0,
            events: Some(events),
            empty_ttl,
        }
    }

    fn link(&self) -> Answer<Arc<Link>> {
        node::current(&self.link).ok_or_else(not_connected)
    }

    fn keys(&self, room: &RoomName) -> Arc<RoomKeys> {
        match self.keys.get(room) {
            Some(keys) => keys.clone(),
            None => Arc::new(RoomKeys::new(&self.prefix, room)),
        }
    }

    /// Runs `work` with the link's connection, or fails at once without one.
    fn with_connection<T, F>(&self, work: impl FnOnce(redis::aio::ConnectionManager) -> F) -> Done<Answer<T>>
    where
        F: std::future::Future<Output = Answer<T>> + Send + 'static,
    {
        match self.link() {
            Ok(link) => Done::Later(Box::pin(work(link.connection.clone()))),
            Err(error) => Done::Now(Err(error)),
        }
    }
}

impl Broker for RedisBroker {
    fn runtime(&self) -> Option<tokio::runtime::Handle> {
        Some(self.io.clone())
    }

    fn down(&self) -> Option<String> {
        let up = self.metrics.cluster.up.load(Ordering::Relaxed) == 1;
        (!up || node::current(&self.link).is_none()).then(|| "no answer to the last beat".to_string())
    }

    fn publish(&mut self, room: &RoomName, message: &Message<'_>) -> Done<Publishing> {
        let link = match self.link() {
            Ok(link) => link,
            Err(error) => return Done::Now((Err(PublishError::Refused(error)), Duration::ZERO)),
        };
        self.publishes += 1;
        let attempt = format!("{}-{}", link.node, self.publishes);
        let mut connection = link.connection.clone();
        let keys = self.keys(room);
        let publish_id = message.id.map(|id| id.as_str().to_string());
        let (head, tail) = (message.head.to_string(), message.tail.to_string());
        let text = match message.text {
            MessageText::Json => None,
            MessageText::Raw(text) => Some(text.to_string()),
        };
        let (bounds, occupied, min_seq) = (message.bounds, message.occupied, message.min_seq);
        let metrics = self.metrics.clone();
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
            let took = started.elapsed();
            match &outcome {
                Ok((Outcome::Published(_), _)) => {
                    metrics.cluster.observe_publish(took);
                    node::writes_accepted(&metrics);
                    // Requests need not wait for the next beat to be let
                    // through again.
                    metrics.cluster.up.store(1, Ordering::Relaxed);
                }
                Err(PublishError::Refused(error)) if super::refuses_writes(error) => {
                    node::writes_refused(&metrics, error)
                }
                _ => {}
            }
            (outcome, took)
        }))
    }

    fn history(&mut self, room: &RoomName, from: u64, to: Option<u64>) -> Done<Answer<Range>> {
        let keys = self.keys(room);
        self.with_connection(|mut connection| async move { history::range(&mut connection, &keys, from, to).await })
    }

    fn relay_binary(&mut self, room: &RoomName, from: SessionId, bytes: Bytes) -> Done<Answer<()>> {
        let channel = self.keys(room).channel.clone();
        let mut message = Vec::with_capacity(BINARY_PREFIX.len() + 21 + bytes.len());
        message.extend_from_slice(BINARY_PREFIX);
        message.extend_from_slice(from.to_string().as_bytes());
        message.push(b' ');
        message.extend_from_slice(&bytes);
        self.with_connection(|mut connection| async move {
            redis::cmd("PUBLISH").arg(channel).arg(message).query_async::<()>(&mut connection).await
        })
    }

    fn direct(&mut self, to: SessionId, payload: String) -> Option<Done<Answer<bool>>> {
        let link = node::current(&self.link);
        if link.as_ref().is_some_and(|link| link.node == nodes::node_of(to)) {
            return None;
        }
        let prefix = self.prefix.clone();
        Some(self.with_connection(|mut connection| async move {
            nodes::direct(&mut connection, &prefix, to, &payload).await
        }))
    }

    fn unsubscribe(&mut self, room: &RoomName) {
        self.keys.remove(room);
        if let Some(link) = node::current(&self.link) {
            link.subscriber.unsubscribe(room);
        }
    }

    fn take_events(&mut self, _into: &mut Vec<Event>) {}

    fn events(&mut self) -> Option<mpsc::Receiver<Event>> {
        self.events.take()
    }

    fn set_limits(&mut self, _history: crate::broker::log::HistoryLimits, empty_ttl: Duration) {
        self.empty_ttl.store(empty_ttl.as_millis() as u64, Ordering::Relaxed);
    }

    fn shut_down(&mut self, empty_ttl: Duration) -> Done<()> {
        let Some(link) = node::current(&self.link) else {
            return Done::Now(());
        };
        let (presence, users) = (self.presence.clone(), self.users.clone());
        let sessions = nodes::sessions_key(&self.prefix, link.node);
        Done::Later(Box::pin(async move {
            let mut connection = link.connection.clone();
            let _ = users.forget_node(&mut connection, link.node).await;
            match presence.evict(&mut connection, &link.node_name(), empty_ttl).await {
                Ok(count) => log::info!("cluster: {count} memberships left their rooms"),
                Err(error) => log::warn!("cluster: leaving the rooms failed: {error}"),
            }
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(sessions).query_async(&mut connection).await;
            let _ = link.liveness.leave(&mut connection, &link.node_name()).await;
        }))
    }
}

impl Presence for RedisBroker {
    fn join(&mut self, room: &RoomName, joiner: Joiner) -> Done<Answer<JoinReply>> {
        let link = match self.link() {
            Ok(link) => link,
            Err(error) => return Done::Now(Err(error)),
        };
        let keys = self.keys.entry(room.clone()).or_insert_with(|| Arc::new(RoomKeys::new(&self.prefix, room))).clone();
        let (mut connection, node) = (link.connection.clone(), link.node_name());
        let presence = self.presence.clone();
        let Joiner { id, entry, limits, read, subscribe } = joiner;
        let subscriber = subscribe.then(|| link.subscriber.clone());
        let (name, metrics) = (room.clone(), self.metrics.clone());
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
            let reply = presence.join(&mut connection, &keys, &member, limits, read).await;
            match &reply {
                Ok(_) => node::writes_accepted(&metrics),
                Err(error) if super::refuses_writes(error) => node::writes_refused(&metrics, error),
                Err(_) => {}
            }
            reply
        }))
    }

    fn leave(&mut self, room: &RoomName, id: SessionId, empty_ttl: Duration) -> Done<Answer<Option<usize>>> {
        let keys = self.keys(room);
        let (presence, name) = (self.presence.clone(), room.clone());
        let node = nodes::node_of(id).to_string();
        self.with_connection(|mut connection| async move {
            presence.leave(&mut connection, &keys, name.as_str(), &node, &id.to_string(), empty_ttl).await
        })
    }

    fn members(&mut self, room: &RoomName) -> Done<Answer<Vec<String>>> {
        let (keys, presence) = (self.keys(room), self.presence.clone());
        self.with_connection(|mut connection| async move {
            let mut entries = presence.members(&mut connection, &keys).await?;
            entries.sort_by_key(|entry| entry_id(entry));
            Ok(entries)
        })
    }

    fn rooms(&mut self) -> Done<Answer<Vec<(RoomName, usize)>>> {
        let presence = self.presence.clone();
        self.with_connection(|mut connection| async move { presence.rooms(&mut connection).await.map(parse_rooms) })
    }

    fn rename(&mut self, rooms: Vec<RoomName>, id: SessionId, entry: String) -> Done<Answer<()>> {
        let (presence, prefix) = (self.presence.clone(), self.prefix.clone());
        self.with_connection(|mut connection| async move {
            for room in rooms {
                let keys = RoomKeys::new(&prefix, &room);
                presence.rename(&mut connection, &keys, &id.to_string(), &entry).await?;
            }
            Ok(())
        })
    }

    fn session(&mut self, id: SessionId, open: bool) -> Done<Answer<()>> {
        if node::current(&self.link).is_none() {
            return Done::Now(Ok(()));
        }
        let key = nodes::sessions_key(&self.prefix, nodes::node_of(id));
        let command = if open { "SADD" } else { "SREM" };
        self.with_connection(|mut connection| async move {
            redis::cmd(command).arg(key).arg(id.0).query_async(&mut connection).await
        })
    }

    fn admit(&mut self, user: &Arc<str>, max: usize) -> Option<Done<Answer<bool>>> {
        // Without Redis the cluster cannot count: the node's own count
        // (checked at the gate) is all there is.
        let link = node::current(&self.link)?;
        let (users, user) = (self.users.clone(), user.clone());
        let mut connection = link.connection.clone();
        Some(Done::Later(Box::pin(async move { users.admit(&mut connection, link.node, &user, max).await })))
    }

    fn release(&mut self, user: Arc<str>) -> Done<Answer<()>> {
        let users = self.users.clone();
        match self.link() {
            Ok(link) => {
                let mut connection = link.connection.clone();
                Done::Later(Box::pin(async move { users.release(&mut connection, link.node, &user).await }))
            }
            Err(_) => Done::Now(Ok(())),
        }
    }

    fn restore(&mut self, holdings: Holdings, empty_ttl: Duration) -> Done<()> {
        let Ok(link) = self.link() else {
            return Done::Now(());
        };
        let (presence, users, prefix) = (self.presence.clone(), self.users.clone(), self.prefix.clone());
        Done::Later(Box::pin(async move {
            restore(link, &presence, &users, &prefix, holdings, empty_ttl).await;
            log::info!("cluster: this node's sessions and members are in Redis again");
        }))
    }
}

/// After an outage: Redis holds what this node holds (its open sessions,
/// its members, its users' counts), which it may have lost, and nothing
/// more.
async fn restore(
    link: Arc<Link>,
    presence: &RedisPresence,
    users: &Users,
    prefix: &str,
    holdings: Holdings,
    empty_ttl: Duration,
) {
    let mut connection = link.connection.clone();
    // Redis may have restarted, without the scripts.
    let _ = super::load_scripts(&mut connection).await;
    let node = link.node_name();
    let key = nodes::sessions_key(prefix, link.node);
    let sessions: Vec<u64> = holdings.sessions.iter().map(|id| id.0).collect();
    let mut replace = redis::pipe();
    replace.atomic().del(&key).ignore();
    if !sessions.is_empty() {
        replace.sadd(&key, &sessions).ignore();
    }
    let _: redis::RedisResult<()> = replace.query_async(&mut connection).await;
    let _ = users.recount(&mut connection, link.node, &holdings.users).await;
    let recorded = presence.memberships(&mut connection, &node).await.unwrap_or_default();
    let held = &holdings.members;
    for (room, id) in recorded {
        let still = held.iter().any(|(name, held_id, _)| name.as_str() == room && held_id.to_string() == id);
        if !still && let Ok(name) = RoomName::parse(&room) {
            let keys = RoomKeys::new(prefix, &name);
            let _ = presence.leave(&mut connection, &keys, &room, &node, &id, empty_ttl).await;
        }
    }
    // What this node holds was admitted when it joined.
    let unlimited = (usize::MAX, usize::MAX);
    for (name, id, entry) in held {
        let keys = RoomKeys::new(prefix, name);
        let id = id.to_string();
        let member = Membership { room: name.as_str(), node: &node, id: &id, entry };
        let _ = presence.join(&mut connection, &keys, &member, unlimited, Read::Recent(0)).await;
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
