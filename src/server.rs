//! Starting the daemon, the drain on SIGINT/SIGTERM, and reloads on SIGHUP
//! ([`crate::reload`]).
//!
//! The drain: `/healthz` and new handshakes answer 503, every session gets
//! close 1001, and once they have all closed (or `shutdown_timeout` is
//! nearly up, or a second signal arrives) the server stops and the process
//! exits 0.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use actix::{Actor, Arbiter};
use actix_web::dev::ServerHandle;
use actix_web::{App, HttpServer, web};
use arc_swap::ArcSwap;
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::auth::users::UserLimit;
use crate::broker::Shared;
use crate::broker::memory::MemoryBroker;
use crate::broker::redis::{RedisBroker, start_io_thread};
use crate::config::{ConfigError, Settings};
use crate::http::{self, AppState, Live};
use crate::limit::peers::PeerLimit;
use crate::metrics::Metrics;
use crate::protocol::close;
use crate::registry::node::Leave;
use crate::registry::{self, Registry};
use crate::reload::Reloader;
use crate::session::heartbeat::Watchdog;
use crate::session::ratelimit::{RateLimit, TokenBucket};
use crate::tls::ServerCertificate;

/// Why the daemon stopped other than by a signal.
#[derive(Debug)]
pub enum ServeError {
    /// The configuration cannot be served (such as a port in use): exit 2,
    /// like any configuration error.
    Config(ConfigError),
    Io(io::Error),
}

impl std::fmt::Display for ServeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServeError::Config(error) => write!(f, "configuration error: {error}"),
            ServeError::Io(error) => error.fmt(f),
        }
    }
}

impl From<io::Error> for ServeError {
    fn from(error: io::Error) -> Self {
        ServeError::Io(error)
    }
}

impl From<ConfigError> for ServeError {
    fn from(error: ConfigError) -> Self {
        ServeError::Config(error)
    }
}

/// Runs the daemon until it has drained after a signal. `config` is the
/// `--config` it was started with, read again on SIGHUP.
pub fn run(settings: Settings, config: Option<PathBuf>) -> Result<(), ServeError> {
    crate::metrics::install_panic_hook();
    actix_rt::System::new().block_on(serve(settings, config))
}

/// A bind failure, named by the key that would fix it.
fn bind_error(settings: &Settings, error: &io::Error) -> ConfigError {
    let key = match error.kind() {
        io::ErrorKind::AddrNotAvailable => "server.host",
        _ => "server.port",
    };
    let problem = match error.kind() {
        io::ErrorKind::AddrInUse => "the port is in use".to_string(),
        io::ErrorKind::AddrNotAvailable => "no interface of this machine has that address".to_string(),
        io::ErrorKind::PermissionDenied => "not allowed (ports below 1024 need CAP_NET_BIND_SERVICE)".to_string(),
        _ => error.to_string(),
    };
    ConfigError::key(key, format!("cannot listen on {}:{}: {problem}", settings.server.host, settings.server.port))
}

/// SIGINT, SIGTERM and SIGHUP, installed before the server announces
/// itself.
struct Signals {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
    reloader: Reloader,
}

impl Signals {
    fn install(reloader: Reloader) -> io::Result<Self> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
            reloader,
        })
    }

    /// The next SIGINT or SIGTERM; every SIGHUP until then reloads.
    async fn next_stop(&mut self, state: &AppState) -> &'static str {
        loop {
            tokio::select! {
                _ = self.interrupt.recv() => return "SIGINT",
                _ = self.terminate.recv() => return "SIGTERM",
                _ = self.hangup.recv() => self.reloader.reload(state),
            }
        }
    }
}

async fn serve(settings: Settings, config: Option<PathBuf>) -> Result<(), ServeError> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => log::debug!("file descriptor limit: {limit}"),
        Err(e) => log::warn!("cannot raise the file descriptor limit: {e}"),
    }
    if settings.auth.mode != crate::config::AuthMode::Off && settings.auth.private_rooms.is_empty() {
        log::warn!(
            "auth: auth.private_rooms is empty, so every room is open to every session: the grants in tokens \
             (`rooms`, `read`) change nothing; list the rooms they are for in auth.private_rooms"
        );
    }
    let tls = &settings.server.tls;
    // Validated at start-up; read again here because serving needs it.
    let certificate = match tls.cert.is_empty() {
        true => None,
        false => Some(ServerCertificate::new(crate::tls::certified_key(&tls.cert, &tls.key)?)),
    };
    let signals = Signals::install(Reloader::new(config, certificate.clone()))?;
    let metrics = Arc::new(Metrics::default());
    let limits = registry::Limits::new(&settings);
    let registry_metrics = metrics.clone();
    let registry_thread = Arbiter::new();
    let clustered = settings.cluster.enabled();
    // In a cluster, session ids carry the node's number: none is handed out
    // (the gate answers 503) until Redis has given the node one.
    let next_id = Arc::new(AtomicU64::new(if clustered { 0 } else { 1 }));
    let cluster = match clustered {
        true => Some((
            settings.cluster.clone(),
            redis::Client::open(settings.cluster.redis.as_str())
                .map_err(|e| ConfigError::key("cluster.redis", e.to_string()))?,
            next_id.clone(),
            start_io_thread()?,
        )),
        false => None,
    };
    if clustered {
        log::info!("cluster: connecting to Redis (prefix {:?})", settings.cluster.prefix);
    }
    let registry = Registry::start_in_arbiter(&registry_thread.handle(), move |_| {
        let broker: Box<dyn Shared> = match cluster {
            Some((settings, client, next_id, io)) => {
                Box::new(RedisBroker::start(settings, client, next_id, io, registry_metrics.clone()))
            }
            None => Box::new(MemoryBroker::new(limits.history, registry_metrics.clone())),
        };
        Registry::new(limits, registry_metrics, broker)
    });
    let api_rate = RateLimit::new(settings.api.messages_per_second, settings.api.burst);
    let state = AppState {
        rate: RateLimit::new(settings.limits.messages_per_second, settings.limits.burst),
        api_bucket: Arc::new(std::sync::Mutex::new(TokenBucket::new(api_rate.clone()))),
        api_rate,
        peer_limit: PeerLimit::new(settings.server.max_connections_per_ip),
        user_limit: UserLimit::new(settings.auth.max_connections_per_user),
        registry,
        watchdog: Watchdog::start(&settings.heartbeat, metrics.clone()),
        live: Arc::new(ArcSwap::from_pointee(Live::new(settings.clone())?)),
        metrics,
        draining: Arc::new(AtomicBool::new(false)),
        next_id,
        clustered,
    };

    let app_state = state.clone();
    let workers = match settings.server.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let mut server =
        HttpServer::new(move || App::new().app_data(web::Data::new(app_state.clone())).configure(http::routes))
            // actix's own limit is per worker and silently stops accepting;
            // ours (max_connections) answers 503. Leave it 1024 connections
            // of room per worker above ours, which bounds the connections
            // that never upgrade (docs/operations.md, Memory).
            .max_connections(settings.server.max_connections.div_ceil(workers).saturating_add(1024))
            .backlog(4096)
            .disable_signals()
            // Realtime traffic: no Nagle delay on small frames.
            .tcp_nodelay(true)
            .on_connect(crate::outbox::socket::capture)
            .client_disconnect_timeout(Duration::from_secs(1));
    server = server.workers(workers);
    let listen_on = (settings.server.host.as_str(), settings.server.port);
    let (server, scheme) = match certificate {
        None => (server.bind(listen_on), "http"),
        Some(certificate) => (server.bind_rustls_0_23(listen_on, crate::tls::server_config(certificate)?), "https"),
    };
    let server = server.map_err(|e| bind_error(&settings, &e))?;
    let addresses = server.addrs();
    let Some(address) = addresses.first() else {
        return Err(io::Error::other("bound to no address").into());
    };
    println!("listening on {scheme}://{address}");
    log::info!("roomcast {} listening on {scheme}://{address}", env!("CARGO_PKG_VERSION"));

    let server = server.run();
    actix_rt::spawn(drain_on_signal(signals, state, server.handle()));
    Ok(server.await?)
}

async fn drain_on_signal(mut signals: Signals, state: AppState, server: ServerHandle) {
    let first = signals.next_stop(&state).await;
    let timeout = state.live().settings.server.shutdown_timeout;
    let open = state.metrics.connections();
    log::info!(
        "{first}: draining {open} connection{} (at most {})",
        if open == 1 { "" } else { "s" },
        humantime::format_duration(timeout)
    );
    state.draining.store(true, Ordering::Release);
    if state.clustered {
        // The members here leave their rooms now, with leave events, before
        // their connections close.
        let leave = state.registry.send(Leave);
        if tokio::time::timeout(timeout / 2, leave).await.is_err() {
            log::warn!(
                "cluster: leaving took longer than half of shutdown_timeout; the others will time this node out"
            );
        }
    }
    state.watchdog.close_all(close::GOING_AWAY);
    // Leave time to stop the server itself within shutdown_timeout.
    let budget = timeout.saturating_sub((timeout / 10).min(Duration::from_millis(500)));
    tokio::select! {
        _ = state.metrics.all_connections_closed() => log::info!("all connections closed"),
        _ = tokio::time::sleep(budget) => {
            log::warn!("shutdown_timeout: dropping {} connections that did not close", state.metrics.connections());
        }
        second = signals.next_stop(&state) => log::warn!("{second}: stopping now"),
    }
    server.stop(false).await;
}
