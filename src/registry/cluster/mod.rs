//! The registry's Redis side (`shared/spec/cluster.md`): with `[cluster]`
//! the registry still owns this node's sessions and the members it feeds,
//! but a room's order, history, presence and membership count live in
//! Redis, reached through [`crate::cluster`].
//!
//! - [`link`]: the node's connection and number, beats, deaths, the
//!   subscriber's events, and putting Redis right again after an outage.
//! - [`rooms`]: joins, leaves, the room feeds and fan-out to local members.
//! - [`requests`]: publish, direct, members, rooms, nick, raw frames and
//!   the HTTP API, each one Redis round trip.
//!
//! Every request that needs Redis is answered when Redis has answered. A
//! session's requests run one at a time, in order (later ones wait in
//! [`Cluster::busy`], bounded by the session's in-flight budget), so its
//! replies keep the order of its requests, as on one node.

mod link;
mod requests;
mod rooms;
mod users;

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use actix::{ActorFutureExt, AsyncContext, Context, WrapFuture};

use super::Registry;
use super::messages::{Command, RawFrame};
use crate::cluster::presence::Presence;
use crate::cluster::users::Users;
use crate::config::ClusterSettings;
use crate::protocol::{RoomName, SessionId};
pub use link::ClusterLeave;
use link::Link;
use rooms::LocalRoom;
pub use users::AdmitUser;

/// A request that waits for the session's previous one.
enum Deferred {
    Command(Command),
    Raw(RawFrame),
}

pub struct Cluster {
    settings: ClusterSettings,
    client: redis::Client,
    /// The session id counter the HTTP gate uses: set to the node's first
    /// id once the node has its number.
    next_id: Arc<AtomicU64>,
    presence: Presence,
    users: Users,
    /// Sessions counted in Redis under `max_connections_per_user`.
    counted: HashMap<SessionId, Arc<str>>,
    /// `None` until Redis answered and gave this node a number.
    link: Option<Link>,
    /// Rooms with members on this node.
    rooms: HashMap<RoomName, LocalRoom>,
    /// Sessions with a request in Redis, and what they sent after it.
    busy: HashMap<SessionId, VecDeque<Deferred>>,
    /// Counts publishes, for their ids.
    publishes: u64,
    /// A beat is on its way.
    beating: bool,
    /// The last beat failed: when one succeeds, Redis is put right again.
    redis_was_down: bool,
    /// Whether the outage was logged.
    outage_logged: bool,
}

impl Cluster {
    pub fn new(settings: ClusterSettings, next_id: Arc<AtomicU64>) -> Result<Cluster, redis::RedisError> {
        // `rediss://`: the Redis client builds its TLS configuration from the
        // process's default provider, which must be one (the server's, ring)
        // whatever other crates enable.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = redis::Client::open(settings.redis.as_str())?;
        let presence = Presence::new(&settings.prefix);
        let users = Users::new(&settings.prefix);
        Ok(Cluster {
            settings,
            client,
            next_id,
            presence,
            users,
            counted: HashMap::new(),
            link: None,
            rooms: HashMap::new(),
            busy: HashMap::new(),
            publishes: 0,
            beating: false,
            redis_was_down: false,
            outage_logged: false,
        })
    }

    /// This node's number, once it has one.
    fn node(&self) -> Option<u64> {
        self.link.as_ref().map(|link| link.node)
    }
}

impl Registry {
    pub(super) fn clustered(&mut self) -> Option<&mut Cluster> {
        self.cluster.as_deref_mut()
    }

    /// Runs `work` (Redis I/O) and then `then` on the registry. With `id`,
    /// the session is busy meanwhile: its later requests wait their turn.
    fn in_redis<T: 'static>(
        &mut self,
        ctx: &mut Context<Self>,
        id: Option<SessionId>,
        work: impl Future<Output = T> + 'static,
        then: impl FnOnce(&mut Registry, T, &mut Context<Registry>) + 'static,
    ) {
        if let (Some(id), Some(cluster)) = (id, self.clustered()) {
            cluster.busy.entry(id).or_default();
        }
        ctx.spawn(work.into_actor(self).map(move |out, registry, ctx| {
            then(registry, out, ctx);
            if let Some(id) = id {
                registry.run_deferred(id, ctx);
            }
            registry.settle(ctx);
        }));
    }

    fn is_busy(&self, id: SessionId) -> bool {
        self.cluster.as_ref().is_some_and(|cluster| cluster.busy.contains_key(&id))
    }

    /// Queues `deferred` behind the session's request in Redis, if any;
    /// gives it back when the session is free.
    fn defer(&mut self, id: SessionId, deferred: Deferred) -> Option<Deferred> {
        match self.clustered().and_then(|cluster| cluster.busy.get_mut(&id)) {
            Some(queue) => {
                queue.push_back(deferred);
                None
            }
            None => Some(deferred),
        }
    }

    /// The session's request in Redis is done: runs what it sent next, up
    /// to the next one that needs Redis.
    fn run_deferred(&mut self, id: SessionId, ctx: &mut Context<Self>) {
        let Some(mut queue) = self.clustered().and_then(|cluster| cluster.busy.remove(&id)) else {
            return;
        };
        while let Some(deferred) = queue.pop_front() {
            match deferred {
                Deferred::Command(command) => self.cluster_command(command, ctx),
                Deferred::Raw(frame) => self.cluster_raw_frame(frame, ctx),
            }
            if let Some(waiting) = self.clustered().and_then(|cluster| cluster.busy.get_mut(&id)) {
                waiting.extend(queue);
                return;
            }
        }
    }

    /// A request from a session, in cluster mode.
    pub(super) fn cluster_command(&mut self, command: Command, ctx: &mut Context<Self>) {
        let id = command.id;
        if let Some(command) = self.defer(id, Deferred::Command(command)) {
            let Deferred::Command(command) = command else { return };
            self.cluster_request(command, ctx);
        }
    }

    /// A raw member's frame, in cluster mode.
    pub(super) fn cluster_raw_frame(&mut self, frame: RawFrame, ctx: &mut Context<Self>) {
        let id = frame.id;
        if self.is_busy(id) {
            self.defer(id, Deferred::Raw(frame));
            return;
        }
        self.cluster_raw(frame, ctx);
    }
}

impl Registry {
    /// A raw connection's join, in cluster mode: answered (for the HTTP
    /// upgrade) when Redis has.
    pub(super) fn cluster_connect_raw(
        &mut self,
        msg: super::messages::ConnectRaw,
        ctx: &mut Context<Self>,
    ) -> actix::ResponseActFuture<Self, Result<(), super::messages::RawRefusal>> {
        use super::messages::RawRefusal;
        let (done, outcome) = tokio::sync::oneshot::channel();
        let refused = |refusal| Box::pin(actix::fut::ready(Err(refusal)));
        let holds = self.cluster.as_deref().is_some_and(|cluster| cluster.holds(&msg.room));
        let held = self.cluster.as_deref().map_or(0, |cluster| cluster.rooms.len());
        if !holds && held >= self.limits.max_rooms {
            return refused(RawRefusal::TooManyRooms);
        }
        if self.cluster.as_deref().is_none_or(|cluster| cluster.link.is_none()) {
            return refused(RawRefusal::Unavailable);
        }
        let id = msg.handle.id();
        let entry = super::Entry::new(msg.handle, super::members::MemberKind::Raw, msg.identity, self.limits.auth);
        self.sessions.insert(id, entry);
        self.cluster_connected(id, ctx);
        let join = rooms::ClusterJoin { room: msg.room, read: rooms::JoinRead::Recent(0), access: msg.access };
        self.cluster_join(ctx, id, join, move |_, outcome, _| {
            let result = match outcome {
                rooms::JoinOutcome::Joined(_) => Ok(()),
                rooms::JoinOutcome::Full(_) => Err(RawRefusal::RoomFull),
                rooms::JoinOutcome::Unavailable(_) => Err(RawRefusal::Unavailable),
            };
            let _ = done.send(result);
        });
        let outcome = async move { outcome.await.unwrap_or(Err(RawRefusal::Unavailable)) };
        Box::pin(outcome.into_actor(self))
    }
}
