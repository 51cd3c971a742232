//! `/healthz`, `/metrics` and the page on `/`.

use std::sync::atomic::Ordering;

use actix_web::{HttpRequest, HttpResponse, web};

use super::AppState;

/// 200 `ok` while connections are accepted, 503 while draining or, in a
/// cluster, while Redis does not answer or refuses writes.
pub async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    if state.draining.load(Ordering::Acquire) {
        HttpResponse::ServiceUnavailable().content_type("text/plain").body("draining")
    } else if state.clustered && state.metrics.cluster.up.load(Ordering::Relaxed) == 0 {
        HttpResponse::ServiceUnavailable().content_type("text/plain").body("redis unavailable")
    } else if state.clustered && state.metrics.cluster.writable.load(Ordering::Relaxed) == 0 {
        HttpResponse::ServiceUnavailable().content_type("text/plain").body("redis refuses writes")
    } else {
        HttpResponse::Ok().content_type("text/plain").body("ok")
    }
}

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(state.metrics.render())
}

pub async fn page(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if let Err(refusal) = state.check_host(&req) {
        return refusal.response();
    }
    HttpResponse::Ok().content_type("text/html; charset=utf-8").body(include_str!("page.html"))
}

/// The JavaScript client library (`clients/js`, the npm package
/// `roomcast-client`) as an ES module, so a page needs no build step and
/// nothing from another host.
pub async fn client_library(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if let Err(refusal) = state.check_host(&req) {
        return refusal.response();
    }
    HttpResponse::Ok()
        .content_type("application/javascript; charset=utf-8")
        .insert_header(("Cache-Control", "no-cache"))
        .body(include_str!("../../clients/js/roomcast.js"))
}
