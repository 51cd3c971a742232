//! The Redis broker's side of the hub (`shared/spec/cluster.md`): the
//! connection the broker's calls use, and the node's life in the cluster.
//! Rooms themselves run on the hub's one path (`registry::rooms`,
//! `registry::requests`), whichever broker answers.
//!
//! - `link`: the node's connection and number, beats, deaths, the
//!   subscriber's events, and putting Redis right again after an outage.
//! - `users`: `max_connections_per_user` counted across nodes.

mod link;
mod users;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use actix::Context;

use super::Registry;
use super::queue::Turn;
use crate::broker::Done;
use crate::cluster::presence::Presence;
use crate::cluster::users::Users;
use crate::config::ClusterSettings;
use crate::protocol::SessionId;
pub use link::ClusterLeave;
use link::Link;
pub use users::AdmitUser;

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

/// A cluster's Redis: the broker's connection and the node's life in the
/// cluster (`link`).
pub struct Cluster {
    pub(super) settings: ClusterSettings,
    client: redis::Client,
    /// The runtime of the node's Redis connections and their work.
    pub(super) io: tokio::runtime::Handle,
    /// The session id counter the HTTP gate uses: set to the node's first
    /// id once the node has its number.
    next_id: Arc<AtomicU64>,
    pub(super) presence: Presence,
    users: Users,
    /// Sessions counted in Redis under `max_connections_per_user`.
    counted: HashMap<SessionId, Arc<str>>,
    /// `None` until Redis answered and gave this node a number.
    pub(super) link: Option<Link>,
    /// Counts publishes, for their ids.
    pub(super) publishes: u64,
    /// A beat is on its way.
    beating: bool,
    /// The last beat failed: when one succeeds, Redis is put right again.
    redis_was_down: bool,
    /// Whether the outage was logged.
    outage_logged: bool,
}

impl Cluster {
    pub fn new(
        settings: ClusterSettings,
        client: redis::Client,
        next_id: Arc<AtomicU64>,
        io: tokio::runtime::Handle,
    ) -> Cluster {
        // `rediss://`: the Redis client builds its TLS configuration from the
        // process's default provider, which must be one (the server's, ring)
        // whatever other crates enable.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let presence = Presence::new(&settings.prefix);
        let users = Users::new(&settings.prefix);
        Cluster {
            settings,
            client,
            io,
            next_id,
            presence,
            users,
            counted: HashMap::new(),
            link: None,
            publishes: 0,
            beating: false,
            redis_was_down: false,
            outage_logged: false,
        }
    }

    /// This node's number, once it has one.
    pub(in crate::registry) fn node(&self) -> Option<u64> {
        self.link.as_ref().map(|link| link.node)
    }
}

impl Registry {
    pub(in crate::registry) fn clustered(&mut self) -> Option<&mut Cluster> {
        self.broker.redis_mut()
    }

    /// Runs `work` (Redis I/O) and then `then` on the registry, in `turn`.
    pub(in crate::registry) fn in_redis<T: Send + 'static>(
        &mut self,
        ctx: &mut Context<Self>,
        turn: Turn,
        work: impl Future<Output = T> + Send + 'static,
        then: impl FnOnce(&mut Registry, T, &mut Context<Registry>) + 'static,
    ) {
        self.in_broker(ctx, turn, Done::Later(Box::pin(work)), then);
    }
}
