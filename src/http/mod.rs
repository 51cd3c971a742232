//! The HTTP surface: routes, the shared application state, and the
//! handshake gate (`upgrade`), which checks what [`Live`] holds: the names
//! the server answers to, the origin policy, tokens; and connections per
//! client address (`limit::peers`).

pub mod api;
pub mod status;
pub mod upgrade;

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};

use actix::Addr;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use arc_swap::ArcSwap;

use crate::auth::users::UserLimit;
use crate::limit::peers::PeerLimit;
pub use crate::live::Live;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::session::heartbeat::Watchdog;
use crate::session::ratelimit::RateLimit;

/// What every request handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub live: Arc<ArcSwap<Live>>,
    /// `limits.messages_per_second` and `burst`, shared by every session.
    pub rate: Arc<RateLimit>,
    /// `api.messages_per_second` and `api.burst`, and the bucket of the
    /// API's key (one key, one bucket).
    pub api_rate: Arc<RateLimit>,
    pub api_bucket: Arc<std::sync::Mutex<crate::session::ratelimit::TokenBucket>>,
    pub peer_limit: Arc<PeerLimit>,
    /// `auth.max_connections_per_user`.
    pub user_limit: Arc<UserLimit>,
    pub registry: Addr<Registry>,
    pub watchdog: Watchdog,
    pub metrics: Arc<Metrics>,
    /// Set on SIGINT/SIGTERM: refuse new connections, report unhealthy.
    pub draining: Arc<AtomicBool>,
    /// Counts sessions (`cluster::nodes::session_id`; the id on the wire is
    /// scrambled from it); in a cluster, without a node number (0) until
    /// the node has joined.
    pub next_id: Arc<AtomicU64>,
    /// `[cluster]` is on.
    pub clustered: bool,
}

impl AppState {
    /// The configuration in effect.
    pub fn live(&self) -> arc_swap::Guard<Arc<Live>> {
        self.live.load()
    }

    /// 421 unless the request's `Host` names this server (`server.hosts`).
    /// Everything but `/healthz` and `/metrics` asks, which load balancers
    /// and scrapers often reach by address.
    pub fn check_host(&self, req: &HttpRequest) -> Result<(), Refusal> {
        self.live().hosts.check(request_host(req)).map_err(|why| {
            log::info!("refused {} from {}: {why}", req.path(), peer(req));
            Refusal::new(StatusCode::MISDIRECTED_REQUEST, why)
        })
    }
}

/// The client's address, for the log.
pub fn peer(req: &HttpRequest) -> String {
    req.peer_addr().map_or_else(|| "an unknown address".into(), |addr| addr.to_string())
}

/// The name and port a request was sent to: its `Host` header, or over
/// HTTP/2 (which has none) its `:authority`. Forwarded headers are not
/// looked at: anyone can send them.
pub fn request_host(req: &HttpRequest) -> Option<&str> {
    match req.headers().get(header::HOST) {
        Some(host) => host.to_str().ok(),
        None => req.uri().authority().map(|authority| authority.as_str()),
    }
}

/// A refused request: a status and a one-line reason for people.
#[derive(Debug)]
pub struct Refusal {
    status: StatusCode,
    reason: Cow<'static, str>,
    header: Option<(HeaderName, HeaderValue)>,
}

impl Refusal {
    pub fn new(status: StatusCode, reason: impl Into<Cow<'static, str>>) -> Self {
        Refusal { status, reason: reason.into(), header: None }
    }

    pub fn with_header(mut self, name: HeaderName, value: &'static str) -> Self {
        self.header = Some((name, HeaderValue::from_static(value)));
        self
    }

    pub fn reason(&self) -> &str {
        &self.reason
    }

    pub fn response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if self.status == StatusCode::UNAUTHORIZED {
            response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        if let Some(header) = &self.header {
            response.insert_header(header.clone());
        }
        response.content_type("text/plain; charset=utf-8").body(format!("{}\n", self.reason))
    }
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    // Any method: a handshake that is not a GET is answered 400.
    cfg.route("/ws", web::route().to(upgrade::json))
        .route("/ws/{room}", web::route().to(upgrade::raw))
        .route("/echo", web::route().to(upgrade::echo))
        .route("/healthz", web::get().to(status::healthz))
        .route("/healthz", web::head().to(status::healthz))
        .route("/metrics", web::get().to(status::metrics))
        .route("/metrics", web::head().to(status::metrics))
        .route("/", web::get().to(status::page))
        .route("/", web::head().to(status::page))
        .route("/roomcast.js", web::get().to(status::client_library))
        .route("/roomcast.js", web::head().to(status::client_library))
        .service(
            web::scope("/api")
                .route("/rooms/{room}/publish", web::post().to(api::publish))
                .route("/rooms", web::get().to(api::rooms))
                .default_service(web::to(api::other)),
        );
}
