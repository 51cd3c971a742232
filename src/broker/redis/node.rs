//! The node's life in the cluster, as a task of its own on the Redis
//! thread: connecting (Redis may be down at start-up: the node keeps
//! trying), its number, its beats, the deaths it finds (their members
//! leave), being found dead itself, and noticing Redis is back after an
//! outage. What the hub must do about it reaches the hub as an [`Event`]
//! (`DeclaredDead`, `Restore`), on the same channel as the rooms' messages.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::mpsc;

use super::liveness::{Beat, Liveness};
use super::presence::Presence;
use super::subscriber::Subscriber;
use super::users::Users;
use super::{keys, nodes};
use crate::broker::Event;
use crate::config::ClusterSettings;
use crate::metrics::Metrics;

/// The Redis client's queue of commands not yet written (its pipeline
/// buffer): the hub keeps its work on the way below it.
pub const PIPELINE_BUFFER: usize = 4096;

/// How long one Redis command may take before it counts as unanswered.
fn response_timeout(node_timeout: Duration) -> Duration {
    (node_timeout / 2).min(Duration::from_secs(1))
}

/// This node's connection to Redis and its number there.
pub struct Link {
    pub connection: ConnectionManager,
    pub node: u64,
    pub subscriber: Subscriber,
    pub liveness: Liveness,
}

impl Link {
    pub fn node_name(&self) -> String {
        self.node.to_string()
    }
}

/// The link as the broker's calls see it: `None` until Redis answered and
/// gave this node a number, and again once the node was declared dead.
pub type SharedLink = Arc<Mutex<Option<Arc<Link>>>>;

/// The link now (one short lock, one reference count).
pub fn current(link: &SharedLink) -> Option<Arc<Link>> {
    link.lock().ok().and_then(|link| link.clone())
}

fn set(link: &SharedLink, value: Option<Arc<Link>>) {
    if let Ok(mut link) = link.lock() {
        *link = value;
    }
}

/// What the node's task needs.
pub struct Life {
    pub settings: ClusterSettings,
    pub client: redis::Client,
    pub link: SharedLink,
    pub presence: Presence,
    pub users: Users,
    pub metrics: Arc<Metrics>,
    /// The session id counter the HTTP gate uses: set to the node's first
    /// id once the node has its number (0: no session may open).
    pub next_id: Arc<AtomicU64>,
    pub events: mpsc::Sender<Event>,
    /// `rooms.empty_ttl` for the rooms a dead node's members leave.
    pub empty_ttl: Arc<AtomicU64>,
}

/// Whether the last beat failed, and whether that was logged.
#[derive(Default)]
struct Outage {
    redis_was_down: bool,
    logged: bool,
}

/// Beats every `node_timeout / 5` until the hub is gone.
pub async fn run(life: Life) {
    let mut every = tokio::time::interval(life.settings.node_timeout / 5);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut outage = Outage::default();
    loop {
        every.tick().await;
        if life.events.is_closed() {
            return;
        }
        match current(&life.link) {
            None => life.connect(&mut outage).await,
            Some(link) => life.beat(link, &mut outage).await,
        }
    }
}

async fn connect_to(
    client: redis::Client,
    prefix: &str,
    timeout: Duration,
) -> redis::RedisResult<(ConnectionManager, u64)> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(response_timeout(timeout * 2)))
        .set_number_of_retries(1)
        .set_pipeline_buffer_size(PIPELINE_BUFFER);
    let mut connection = ConnectionManager::new_with_config(client, config).await?;
    super::load_scripts(&mut connection).await?;
    let node = nodes::register(&mut connection, prefix).await?;
    Ok((connection, node))
}

/// A key each node writes every beat, to learn whether Redis takes writes
/// (out of memory, a read-only replica): beats themselves are let through
/// (`allow-oom`), so that a full Redis does not make nodes look dead.
fn probe_key(prefix: &str, node: u64) -> String {
    format!("{prefix}:node:{node}:probe")
}

impl Life {
    async fn connect(&self, outage: &mut Outage) {
        let prefix = &self.settings.prefix;
        let (connection, node) = match connect_to(self.client.clone(), prefix, self.settings.node_timeout).await {
            Ok(linked) => linked,
            Err(error) => return self.down(&error.to_string(), outage),
        };
        let subscriber = Subscriber::start(self.client.clone(), prefix.clone(), node, self.events.clone());
        let liveness = Liveness::new(prefix);
        let Some(first) = nodes::session_id(node, 1) else {
            log::error!("cluster: node number {node} is beyond what session ids can carry");
            return;
        };
        set(&self.link, Some(Arc::new(Link { connection, node, subscriber, liveness })));
        // Ready for requests before it says so.
        self.up(outage);
        self.next_id.store(first.0, Ordering::Release);
        log::info!("cluster: node {node} of {prefix:?}");
        // The first beat at once: the node is alive before its sessions come.
        if let Some(link) = current(&self.link) {
            self.beat(link, outage).await;
        }
    }

    async fn beat(&self, link: Arc<Link>, outage: &mut Outage) {
        let (beat, probed) = match self.beat_once(&link).await {
            Ok(beat) => beat,
            Err(error) => {
                // A read-only replica refuses the beat itself.
                if super::refuses_writes(&error) {
                    writes_refused(&self.metrics, &error);
                }
                return self.down(&error.to_string(), outage);
            }
        };
        // Up before writable: the hub reads both, from another thread, and
        // a request let through by one must not be stopped by the other.
        let recovering = std::mem::replace(&mut outage.redis_was_down, false);
        self.metrics.cluster.nodes.store(beat.alive as u64, Ordering::Relaxed);
        self.up(outage);
        match probed {
            Ok(()) => writes_accepted(&self.metrics),
            Err(error) if super::refuses_writes(&error) => writes_refused(&self.metrics, &error),
            Err(_) => {}
        }
        if beat.declared_dead {
            return self.declared_dead().await;
        }
        for dead in beat.dead {
            // Beside the beats, which must not wait for it.
            let empty_ttl = Duration::from_millis(self.empty_ttl.load(Ordering::Relaxed));
            let (presence, users) = (self.presence.clone(), self.users.clone());
            let work = evict(link.connection.clone(), presence, users, self.settings.prefix.clone(), dead, empty_ttl);
            tokio::spawn(work);
        }
        if recovering {
            let _ = self.events.send(Event::Restore).await;
        }
    }

    /// One beat, the probe of writes, and the rooms the cluster holds.
    async fn beat_once(&self, link: &Link) -> redis::RedisResult<(Beat, redis::RedisResult<()>)> {
        let mut connection = link.connection.clone();
        let timeout = self.settings.node_timeout;
        let beat = link.liveness.beat(&mut connection, &link.node_name(), timeout).await?;
        let ttl = timeout.as_millis() as u64;
        let probe = probe_key(&self.settings.prefix, link.node);
        let probed = redis::cmd("SET").arg(probe).arg(1).arg("PX").arg(ttl).query_async::<()>(&mut connection).await;
        // The rooms the cluster holds, as `rooms.max_rooms` counts them (an
        // entry's score is when it is forgotten).
        let mut count = redis::cmd("ZCOUNT");
        count.arg(keys::held_key(&self.settings.prefix)).arg(crate::protocol::now_epoch_ms()).arg("+inf");
        if let Ok(count) = count.query_async::<u64>(&mut connection).await {
            self.metrics.rooms_held.store(count, Ordering::Relaxed);
        }
        Ok((beat, probed))
    }

    /// The others found this node dead (it was cut off from Redis for
    /// longer than node_timeout) and made its members leave: the hub closes
    /// its clients, and the node starts again under a new number.
    async fn declared_dead(&self) {
        log::warn!("cluster: this node was declared dead; closing its clients (1012) and joining again as a new node");
        set(&self.link, None);
        self.next_id.store(0, Ordering::Release);
        let _ = self.events.send(Event::DeclaredDead).await;
    }

    fn down(&self, why: &str, outage: &mut Outage) {
        self.metrics.cluster.up.store(0, Ordering::Relaxed);
        outage.redis_was_down = true;
        if !std::mem::replace(&mut outage.logged, true) {
            log::warn!("cluster: Redis unavailable ({why}); retrying");
        }
    }

    fn up(&self, outage: &mut Outage) {
        self.metrics.cluster.up.store(1, Ordering::Relaxed);
        if std::mem::replace(&mut outage.logged, false) {
            log::info!("cluster: Redis answers again");
        }
    }
}

/// Another node was found dead: its members leave, with leave events, and
/// its sessions and user counts go.
async fn evict(
    mut connection: ConnectionManager,
    presence: Presence,
    users: Users,
    prefix: String,
    dead: String,
    empty_ttl: Duration,
) {
    let evicted = presence.evict(&mut connection, &dead, empty_ttl).await;
    if let Ok(number) = dead.parse::<u64>() {
        let sessions = nodes::sessions_key(&prefix, number);
        let _: redis::RedisResult<()> = redis::cmd("DEL").arg(sessions).query_async(&mut connection).await;
        let _ = users.forget_node(&mut connection, number).await;
    }
    match evicted {
        Ok(count) => log::warn!("cluster: node {dead} is dead: {count} memberships left its rooms"),
        Err(error) => log::warn!("cluster: node {dead} is dead; evicting its members failed: {error}"),
    }
}

/// Redis answered a write with a refusal (out of memory, read-only):
/// `/healthz` and `roomcast_cluster_writable` say so until one passes.
pub fn writes_refused(metrics: &Metrics, error: &redis::RedisError) {
    Metrics::inc(&metrics.cluster.write_refusals);
    if metrics.cluster.writable.swap(0, Ordering::Relaxed) == 1 {
        log::warn!("cluster: Redis refuses writes ({error}): publishes and joins fail until it takes them again");
    }
}

/// A write passed.
pub fn writes_accepted(metrics: &Metrics) {
    if metrics.cluster.writable.swap(1, Ordering::Relaxed) == 0 {
        log::info!("cluster: Redis takes writes again");
    }
}
