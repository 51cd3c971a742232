//! Starting the daemon, and the drain on SIGINT/SIGTERM.
//!
//! The drain: `/healthz` and new handshakes answer 503, every session gets
//! close 1001, and once they have all closed (or `shutdown_timeout` is
//! nearly up, or a second signal arrives) the server stops and the process
//! exits 0.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use actix::{Actor, Arbiter};
use actix_web::dev::ServerHandle;
use actix_web::{App, HttpServer, web};
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::config::Settings;
use crate::http::conn::ConnSocket;
use crate::http::origin::OriginCheck;
use crate::http::{self, AppState};
use crate::metrics::Metrics;
use crate::protocol::close;
use crate::registry::{self, Registry};
use crate::session::heartbeat::Watchdog;

/// Runs the daemon until it has drained after a signal.
pub fn run(settings: Settings) -> io::Result<()> {
    actix_rt::System::new().block_on(serve(settings))
}

/// SIGINT and SIGTERM, installed before the server announces itself.
struct Signals {
    interrupt: Signal,
    terminate: Signal,
}

impl Signals {
    fn install() -> io::Result<Self> {
        Ok(Signals { interrupt: signal(SignalKind::interrupt())?, terminate: signal(SignalKind::terminate())? })
    }

    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }
}

async fn serve(settings: Settings) -> io::Result<()> {
    let settings = Arc::new(settings);
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => log::debug!("file descriptor limit: {limit}"),
        Err(e) => log::warn!("cannot raise the file descriptor limit: {e}"),
    }
    let signals = Signals::install()?;
    let metrics = Arc::new(Metrics::default());
    let limits = registry::Limits::new(&settings);
    let registry_metrics = metrics.clone();
    let registry_thread = Arbiter::new();
    let registry =
        Registry::start_in_arbiter(&registry_thread.handle(), move |_| Registry::new(limits, registry_metrics));
    let state = AppState {
        settings: settings.clone(),
        origin: Arc::new(OriginCheck::new(&settings.origin)),
        registry,
        watchdog: Watchdog::start(&settings.heartbeat, metrics.clone()),
        metrics,
        draining: Arc::new(AtomicBool::new(false)),
        next_id: Arc::new(AtomicU64::new(1)),
    };

    let app_state = state.clone();
    let mut server =
        HttpServer::new(move || App::new().app_data(web::Data::new(app_state.clone())).configure(http::routes))
            // actix's own limit is per worker and silently stops accepting;
            // ours (max_connections) answers 503, so keep actix's out of the way.
            .max_connections(settings.server.max_connections.saturating_add(1024))
            .backlog(4096)
            .disable_signals()
            // Realtime traffic: no Nagle delay on small frames.
            .tcp_nodelay(true)
            .on_connect(ConnSocket::capture)
            .client_disconnect_timeout(Duration::from_secs(1));
    if settings.server.workers > 0 {
        server = server.workers(settings.server.workers);
    }
    let listen_on = (settings.server.host.as_str(), settings.server.port);
    let tls = &settings.server.tls;
    let (server, scheme) = if tls.cert.is_empty() {
        (server.bind(listen_on), "http")
    } else {
        // Validated at start-up; read again here because serving needs it.
        let tls_config = crate::tls::server_config(&tls.cert, &tls.key).map_err(io::Error::other)?;
        (server.bind_rustls_0_23(listen_on, tls_config), "https")
    };
    let server = server.map_err(|e| {
        io::Error::new(e.kind(), format!("cannot listen on {}:{}: {e}", settings.server.host, settings.server.port))
    })?;
    let addresses = server.addrs();
    let Some(address) = addresses.first() else {
        return Err(io::Error::other("bound to no address"));
    };
    println!("listening on {scheme}://{address}");
    log::info!("roomcast {} listening on {scheme}://{address}", env!("CARGO_PKG_VERSION"));

    let server = server.run();
    actix_rt::spawn(drain_on_signal(signals, state, server.handle()));
    server.await
}

async fn drain_on_signal(mut signals: Signals, state: AppState, server: ServerHandle) {
    let first = signals.next().await;
    let timeout = state.settings.server.shutdown_timeout;
    log::info!(
        "{first}: draining {} connections (at most {})",
        state.metrics.connections(),
        humantime::format_duration(timeout)
    );
    state.draining.store(true, Ordering::Release);
    state.watchdog.close_all(close::GOING_AWAY);
    // Leave time to stop the server itself within shutdown_timeout.
    let budget = timeout.saturating_sub((timeout / 10).min(Duration::from_millis(500)));
    tokio::select! {
        _ = state.metrics.all_connections_closed() => log::info!("all connections closed"),
        _ = tokio::time::sleep(budget) => {
            log::warn!("shutdown_timeout: dropping {} connections that did not close", state.metrics.connections());
        }
        second = signals.next() => log::warn!("{second}: stopping now"),
    }
    server.stop(false).await;
}
