//! The HTTP surface: routes, the shared application state, the origin
//! policy, and the per-connection socket capture.

pub mod api;
pub mod conn;
pub mod origin;
pub mod status;
pub mod upgrade;

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};

use actix::Addr;
use actix_web::http::{StatusCode, header};
use actix_web::{HttpResponse, ResponseError, web};

use crate::config::Settings;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::session::heartbeat::Watchdog;
use origin::OriginCheck;

/// What every request handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub origin: Arc<OriginCheck>,
    pub registry: Addr<Registry>,
    pub watchdog: Watchdog,
    pub metrics: Arc<Metrics>,
    /// Set on SIGINT/SIGTERM: refuse new connections, report unhealthy.
    pub draining: Arc<AtomicBool>,
    /// The next session id.
    pub next_id: Arc<AtomicU64>,
}

/// A refused request: a status and a one-line reason for people.
#[derive(Debug)]
pub struct Refusal {
    status: StatusCode,
    reason: Cow<'static, str>,
}

impl Refusal {
    pub fn new(status: StatusCode, reason: impl Into<Cow<'static, str>>) -> Self {
        Refusal { status, reason: reason.into() }
    }

    pub fn response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if self.status == StatusCode::UNAUTHORIZED {
            response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        response.content_type("text/plain; charset=utf-8").body(format!("{}\n", self.reason))
    }
}

impl<E: ResponseError> From<E> for Refusal {
    fn from(error: E) -> Self {
        Refusal::new(error.status_code(), error.to_string())
    }
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/ws", web::get().to(upgrade::json))
        .route("/ws/{room}", web::get().to(upgrade::raw))
        .route("/echo", web::get().to(upgrade::echo))
        .route("/healthz", web::get().to(status::healthz))
        .route("/metrics", web::get().to(status::metrics))
        .route("/", web::get().to(status::page))
        .service(
            web::scope("/api")
                .route("/rooms/{room}/publish", web::post().to(api::publish))
                .route("/rooms", web::get().to(api::rooms))
                .default_service(web::to(api::other)),
        );
}
