//! The node's life in the cluster: connecting (Redis may be down at
//! start-up: the node keeps trying), its number, its beats, the deaths it
//! finds, being found dead itself (close every client 1012, start again as
//! a new node), putting Redis right after an outage, the subscriber's
//! events, and leaving at once on a graceful shutdown.

use std::sync::atomic::Ordering;
use std::time::Duration;

use actix::{AsyncContext, Context, Handler, Message, ResponseActFuture, StreamHandler, WrapFuture};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::Turn;
use crate::cluster::liveness::Liveness;
use crate::cluster::nodes;
use crate::cluster::subscriber::{Event, Subscriber};
use crate::metrics::Metrics;
use crate::outbox::CloseRequest;
use crate::protocol::{SessionId, close};
use crate::registry::Registry;

/// Events from the subscriber that may wait for the registry; beyond, the
/// subscriber stops reading and Redis cuts a lagging node off (it then
/// repairs from history).
const EVENT_QUEUE: usize = 1024;

/// How long one Redis command may take before it counts as unanswered.
fn response_timeout(node_timeout: Duration) -> Duration {
    (node_timeout / 2).min(Duration::from_secs(1))
}

pub(in crate::registry) struct Link {
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

async fn connect(
    client: redis::Client,
    prefix: String,
    timeout: Duration,
) -> redis::RedisResult<(ConnectionManager, u64)> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(response_timeout(timeout * 2)))
        .set_number_of_retries(1)
        .set_pipeline_buffer_size(crate::registry::queue::PIPELINE_BUFFER);
    let mut connection = ConnectionManager::new_with_config(client, config).await?;
    crate::cluster::load_scripts(&mut connection).await?;
    let node = nodes::register(&mut connection, &prefix).await?;
    Ok((connection, node))
}

/// A key each node writes every beat, to learn whether Redis takes writes
/// (out of memory, a read-only replica): beats themselves are let through
/// (`allow-oom`), so that a full Redis does not make nodes look dead.
fn probe_key(prefix: &str, node: u64) -> String {
    format!("{prefix}:node:{node}:probe")
}

impl Registry {
    /// Starts the beats: the first connects.
    pub(in crate::registry) fn start_cluster(&mut self, ctx: &mut Context<Self>) {
        let Some(cluster) = self.broker.redis_mut() else {
            return;
        };
        self.metrics.cluster.enabled.store(true, Ordering::Relaxed);
        self.metrics.cluster.writable.store(1, Ordering::Relaxed);
        let every = cluster.settings.node_timeout / 5;
        self.beat(ctx);
        ctx.run_interval(every, |registry, ctx| registry.beat(ctx));
    }

    fn cluster_down(&mut self, why: &str) {
        self.metrics.cluster.up.store(0, Ordering::Relaxed);
        if let Some(cluster) = self.broker.redis_mut() {
            cluster.redis_was_down = true;
            if !std::mem::replace(&mut cluster.outage_logged, true) {
                log::warn!("cluster: Redis unavailable ({why}); retrying");
            }
        }
    }

    /// Redis answered a write with a refusal (out of memory, read-only):
    /// `/healthz` and `roomcast_cluster_writable` say so until one passes.
    pub(in crate::registry) fn writes_refused(&mut self, error: &redis::RedisError) {
        Metrics::inc(&self.metrics.cluster.write_refusals);
        if self.metrics.cluster.writable.swap(0, Ordering::Relaxed) == 1 {
            log::warn!("cluster: Redis refuses writes ({error}): publishes and joins fail until it takes them again");
        }
    }

    /// A write passed.
    pub(in crate::registry) fn writes_accepted(&mut self) {
        if self.broker.redis().is_some() && self.metrics.cluster.writable.swap(1, Ordering::Relaxed) == 0 {
            log::info!("cluster: Redis takes writes again");
        }
    }

    /// Redis ran a command of this node: requests need not wait for the
    /// next beat to be let through again (the beat still puts Redis right
    /// after an outage, and says so).
    pub(in crate::registry) fn redis_answered(&mut self) {
        self.metrics.cluster.up.store(1, Ordering::Relaxed);
    }

    fn cluster_up(&mut self) {
        self.metrics.cluster.up.store(1, Ordering::Relaxed);
        if let Some(cluster) = self.broker.redis_mut()
            && std::mem::replace(&mut cluster.outage_logged, false)
        {
            log::info!("cluster: Redis answers again");
        }
    }

    fn beat(&mut self, ctx: &mut Context<Self>) {
        let Some(cluster) = self.broker.redis_mut() else {
            return;
        };
        if std::mem::replace(&mut cluster.beating, true) {
            return;
        }
        let timeout = cluster.settings.node_timeout;
        let Some(link) = &cluster.link else {
            let work = connect(cluster.client.clone(), cluster.settings.prefix.clone(), timeout);
            return self.in_redis(ctx, Turn::Node, work, |registry, connected, ctx| {
                if let Some(cluster) = registry.clustered() {
                    cluster.beating = false;
                }
                match connected {
                    Ok((connection, node)) => registry.linked(connection, node, ctx),
                    Err(error) => registry.cluster_down(&error.to_string()),
                }
            });
        };
        let (mut connection, liveness, node) = (link.connection.clone(), link.liveness.clone(), link.node_name());
        let probe = probe_key(&cluster.settings.prefix, link.node);
        let held = crate::cluster::keys::held_key(&cluster.settings.prefix);
        let rooms_held = self.metrics.clone();
        let work = async move {
            let beat = liveness.beat(&mut connection, &node, timeout).await?;
            let ttl = timeout.as_millis() as u64;
            let probed =
                redis::cmd("SET").arg(probe).arg(1).arg("PX").arg(ttl).query_async::<()>(&mut connection).await;
            // The rooms the cluster holds, as `rooms.max_rooms` counts them
            // (an entry's score is when it is forgotten).
            let now = crate::registry::now_epoch_ms();
            let mut count = redis::cmd("ZCOUNT");
            count.arg(held).arg(now).arg("+inf");
            if let Ok(count) = count.query_async::<u64>(&mut connection).await {
                rooms_held.rooms_held.store(count, Ordering::Relaxed);
            }
            Ok::<_, redis::RedisError>((beat, probed))
        };
        self.in_redis(ctx, Turn::Node, work, |registry, beat, ctx| {
            let Some(cluster) = registry.clustered() else {
                return;
            };
            cluster.beating = false;
            let (beat, probed) = match beat {
                Ok(beat) => beat,
                Err(error) => {
                    // A read-only replica refuses the beat itself.
                    if crate::cluster::refuses_writes(&error) {
                        registry.writes_refused(&error);
                    }
                    return registry.cluster_down(&error.to_string());
                }
            };
            match probed {
                Ok(()) => registry.writes_accepted(),
                Err(error) if crate::cluster::refuses_writes(&error) => registry.writes_refused(&error),
                Err(_) => {}
            }
            let Some(cluster) = registry.clustered() else {
                return;
            };
            let recovering = std::mem::replace(&mut cluster.redis_was_down, false);
            registry.metrics.cluster.nodes.store(beat.alive as u64, Ordering::Relaxed);
            registry.cluster_up();
            if beat.declared_dead {
                return registry.declared_dead(ctx);
            }
            for dead in beat.dead {
                registry.evict(dead, ctx);
            }
            if recovering {
                registry.reconcile(ctx);
            }
        });
    }

    /// Redis gave this node `node`: sessions may come.
    fn linked(&mut self, connection: ConnectionManager, node: u64, ctx: &mut Context<Self>) {
        let Some(cluster) = self.broker.redis_mut() else {
            return;
        };
        let (events, receiver) = tokio::sync::mpsc::channel(EVENT_QUEUE);
        let (client, prefix) = (cluster.client.clone(), cluster.settings.prefix.clone());
        let subscriber = Subscriber::start_on(&cluster.io, client, prefix, node, events);
        let liveness = Liveness::new(&cluster.settings.prefix);
        cluster.link = Some(Link { connection, node, subscriber, liveness });
        let Some(first) = nodes::session_id(node, 1) else {
            log::error!("cluster: node number {node} is beyond what session ids can carry");
            return;
        };
        cluster.next_id.store(first.0, Ordering::Release);
        log::info!("cluster: node {node} of {:?}", cluster.settings.prefix);
        ctx.add_stream(futures_util::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|event| (event, receiver))
        }));
        self.cluster_up();
        if let Some(cluster) = self.broker.redis_mut() {
            cluster.beating = false;
        }
        self.beat(ctx);
    }

    /// Another node was found dead: its members leave, with leave events.
    fn evict(&mut self, dead: String, ctx: &mut Context<Self>) {
        let Some(cluster) = self.broker.redis_mut() else {
            return;
        };
        let Some(link) = &cluster.link else {
            return;
        };
        let mut connection = link.connection.clone();
        let (presence, empty_ttl) = (cluster.presence.clone(), self.limits.empty_ttl);
        let number: Option<u64> = dead.parse().ok();
        let sessions = number.map(|node| nodes::sessions_key(&cluster.settings.prefix, node));
        let users = cluster.users.clone();
        let work = async move {
            let evicted = presence.evict(&mut connection, &dead, empty_ttl).await;
            if let (Some(sessions), Some(number)) = (sessions, number) {
                let _: redis::RedisResult<()> = redis::cmd("DEL").arg(sessions).query_async(&mut connection).await;
                let _ = users.forget_node(&mut connection, number).await;
            }
            (dead, evicted)
        };
        self.in_redis(ctx, Turn::Node, work, |_, (dead, evicted), _| match evicted {
            Ok(count) => log::warn!("cluster: node {dead} is dead: {count} memberships left its rooms"),
            Err(error) => log::warn!("cluster: node {dead} is dead; evicting its members failed: {error}"),
        });
    }

    /// The others found this node dead (it was cut off from Redis for
    /// longer than node_timeout) and made its members leave: its clients
    /// would be ghosts, so they are closed (1012) to reconnect and recover,
    /// and the node starts again under a new number.
    fn declared_dead(&mut self, _ctx: &mut Context<Self>) {
        log::warn!("cluster: this node was declared dead; closing its clients (1012) and joining again as a new node");
        for entry in self.sessions.values() {
            entry.handle.request_close(CloseRequest::cause(close::SERVICE_RESTART));
        }
        // The others made its members leave and took its counts off.
        self.forget_memberships();
        self.requests.clear();
        if let Some(cluster) = self.broker.redis_mut() {
            cluster.link = None;
            cluster.next_id.store(0, Ordering::Release);
        }
    }

    /// This node's members and counted connections are gone from Redis (or
    /// about to be): nothing of them is left to leave or give back.
    fn forget_memberships(&mut self) {
        self.rooms.clear();
        if let Some(cluster) = self.broker.redis_mut() {
            cluster.counted.clear();
        }
        for entry in self.sessions.values_mut() {
            entry.rooms.clear();
        }
    }

    /// After an outage: Redis holds what this node holds (its open
    /// sessions, its members), which it may have lost, and nothing more.
    fn reconcile(&mut self, ctx: &mut Context<Self>) {
        let Some(cluster) = self.broker.redis() else {
            return;
        };
        let Some(link) = &cluster.link else {
            return;
        };
        let node = link.node;
        let mut connection = link.connection.clone();
        let prefix = cluster.settings.prefix.clone();
        let presence = cluster.presence.clone();
        // What this node holds was admitted when it joined.
        let (empty_ttl, unlimited) = (self.limits.empty_ttl, (usize::MAX, usize::MAX));
        let sessions: Vec<u64> = self.sessions.keys().map(|id| id.0).collect();
        let (users, user_counts) = (cluster.users.clone(), self.user_counts());
        let mut held = Vec::new();
        for (name, room) in &self.rooms {
            for id in room.members.ids() {
                if let Some(entry) = self.sessions.get(&id) {
                    held.push((name.clone(), id, self.member_entry(entry, id)));
                }
            }
        }
        let work = async move {
            // Redis may have restarted, without the scripts.
            let _ = crate::cluster::load_scripts(&mut connection).await;
            let node_name = node.to_string();
            let key = nodes::sessions_key(&prefix, node);
            let mut replace = redis::pipe();
            replace.atomic().del(&key).ignore();
            if !sessions.is_empty() {
                replace.sadd(&key, &sessions).ignore();
            }
            let _: redis::RedisResult<()> = replace.query_async(&mut connection).await;
            let _ = users.recount(&mut connection, node, &user_counts).await;
            let recorded = presence.memberships(&mut connection, &node_name).await.unwrap_or_default();
            for (room, id) in recorded {
                let still = held.iter().any(|(name, held_id, _)| name.as_str() == room && held_id.to_string() == id);
                if !still && let Ok(name) = crate::protocol::RoomName::parse(&room) {
                    let keys = crate::cluster::keys::RoomKeys::new(&prefix, &name);
                    let _ = presence.leave(&mut connection, &keys, &room, &node_name, &id, empty_ttl).await;
                }
            }
            for (name, id, entry) in &held {
                let keys = crate::cluster::keys::RoomKeys::new(&prefix, name);
                let id = id.to_string();
                let member =
                    crate::cluster::presence::Membership { room: name.as_str(), node: &node_name, id: &id, entry };
                let read = crate::cluster::presence::Read::Recent(0);
                let _ = presence.join(&mut connection, &keys, &member, unlimited, read).await;
            }
        };
        self.in_redis(ctx, Turn::Node, work, |_, (), _| {
            log::info!("cluster: this node's sessions and members are in Redis again")
        });
    }

    /// A session is open: `direct` from other nodes can find it once Redis
    /// has it (then `done`; at once without a cluster).
    pub(in crate::registry) fn connected(
        &mut self,
        id: SessionId,
        ctx: &mut Context<Self>,
        done: tokio::sync::oneshot::Sender<()>,
    ) {
        let Some(link) = self.broker.redis().and_then(|cluster| cluster.link.as_ref().map(|link| (cluster, link)))
        else {
            let _ = done.send(());
            return;
        };
        let (cluster, link) = link;
        let mut connection = link.connection.clone();
        let key = nodes::sessions_key(&cluster.settings.prefix, nodes::node_of(id));
        let work = async move { redis::cmd("SADD").arg(key).arg(id.0).query_async::<()>(&mut connection).await };
        self.in_redis(ctx, Turn::After(id), work, move |_, _, _| {
            let _ = done.send(());
        });
    }
}

impl StreamHandler<Event> for Registry {
    fn handle(&mut self, event: Event, ctx: &mut Context<Self>) {
        match event {
            Event::Arrived { room, payload } => self.arrived(room, payload, ctx),
            Event::Direct(payload) => self.direct_arrived(&payload),
            Event::Lost(why) => log::warn!("cluster: {why}; resubscribing"),
            Event::Reconnected => {
                log::info!("cluster: subscribed again; repairing every room from its history");
                self.resubscribed(ctx);
            }
        }
        self.settle(ctx);
    }

    /// A subscriber ends when its node is replaced; the registry goes on.
    fn finished(&mut self, _ctx: &mut Context<Self>) {}
}

/// A graceful shutdown: this node's members leave every room now, with
/// leave events, and the node leaves the cluster (nobody waits for it to
/// time out).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ClusterLeave;

impl Handler<ClusterLeave> for Registry {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _msg: ClusterLeave, _ctx: &mut Context<Self>) -> Self::Result {
        let link = self.broker.redis().and_then(|cluster| {
            let link = cluster.link.as_ref()?;
            let sessions = nodes::sessions_key(&cluster.settings.prefix, link.node);
            let leaving = (link.connection.clone(), link.liveness.clone(), link.node_name(), cluster.presence.clone());
            Some((leaving, sessions, cluster.users.clone(), link.node))
        });
        let empty_ttl = self.limits.empty_ttl;
        // What closes from now on has already left.
        self.forget_memberships();
        Box::pin(
            async move {
                let Some(((mut connection, liveness, node, presence), sessions, users, number)) = link else {
                    return;
                };
                let _ = users.forget_node(&mut connection, number).await;
                match presence.evict(&mut connection, &node, empty_ttl).await {
                    Ok(count) => log::info!("cluster: {count} memberships left their rooms"),
                    Err(error) => log::warn!("cluster: leaving the rooms failed: {error}"),
                }
                let _: redis::RedisResult<()> = redis::cmd("DEL").arg(sessions).query_async(&mut connection).await;
                let _ = liveness.leave(&mut connection, &node).await;
            }
            .into_actor(self),
        )
    }
}
