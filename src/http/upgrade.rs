//! The WebSocket endpoints: `/ws`, `/ws/{room}`, `/echo`.
//!
//! Every handshake passes the same gate before it is upgraded: 503 while
//! draining, 403 for a refused Origin, 400 for a request that is not a
//! valid WebSocket handshake, 503 beyond `max_connections`. `/ws/{room}`
//! adds 400 for a bad room name and 409 for a full room.

use std::sync::atomic::Ordering;

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use actix_web_actors::ws;

use super::conn::ConnSocket;
use super::{AppState, Refusal};
use crate::metrics::Metrics;
use crate::protocol::{RoomName, SUBPROTOCOL, SessionId};
use crate::registry::messages::{Connect, ConnectRaw, Disconnect};
use crate::session::echo::Echo;
use crate::session::guard::FrameGuard;
use crate::session::handle::SessionHandle;
use crate::session::json::JsonRoom;
use crate::session::ratelimit::TokenBucket;
use crate::session::raw::RawRelay;
use crate::session::{Endpoint, Session, SessionParts};

/// A handshake that passed the gate: its session id, handle and slot.
struct Admitted {
    handle: SessionHandle,
    slot: crate::metrics::ConnectionSlot,
}

fn peer(req: &HttpRequest) -> String {
    req.peer_addr().map_or_else(|| "?".into(), |addr| addr.to_string())
}

/// The checks every WebSocket endpoint makes, in order; `bad_room` is why
/// the path's room name is refused, if it is.
fn admit(req: &HttpRequest, state: &AppState, bad_room: Option<&'static str>) -> Result<Admitted, Refusal> {
    if state.draining.load(Ordering::Acquire) {
        return Err(Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "server is shutting down"));
    }
    let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    if let Err(why) = state.origin.check(header(header::ORIGIN), header(header::HOST)) {
        Metrics::inc(&state.metrics.origin_rejections);
        log::info!("refused {} from {}: {why} (Origin {:?})", req.path(), peer(req), header(header::ORIGIN));
        return Err(Refusal::new(StatusCode::FORBIDDEN, why));
    }
    if let Err(error) = ws::handshake(req) {
        log::info!("refused {} from {}: {error}", req.path(), peer(req));
        return Err(error.into());
    }
    if let Some(why) = bad_room {
        return Err(Refusal::new(StatusCode::BAD_REQUEST, why));
    }
    let Some(slot) = state.metrics.open_connection(state.settings.server.max_connections) else {
        log::info!("refused {} from {}: max_connections reached", req.path(), peer(req));
        return Err(Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "too many connections"));
    };
    let id = SessionId(state.next_id.fetch_add(1, Ordering::Relaxed));
    let socket = req.conn_data::<ConnSocket>().cloned();
    let handle = SessionHandle::new(id, state.settings.limits.outbound_queue, socket);
    log::debug!("session {id}: {} from {}", req.path(), peer(req));
    Ok(Admitted { handle, slot })
}

/// Upgrades the connection and starts the session actor.
fn start<E: Endpoint>(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    admitted: Admitted,
    endpoint: E,
    protocols: Option<&'static [&'static str]>,
) -> Result<HttpResponse, actix_web::Error> {
    let limit = state.settings.limits.max_message_bytes;
    let (payload, tripped) = FrameGuard::new(payload, limit);
    let parts = SessionParts {
        handle: admitted.handle,
        slot: admitted.slot,
        tripped,
        metrics: state.metrics.clone(),
        watchdog: state.watchdog.clone(),
        draining: state.draining.clone(),
        max_message_bytes: limit,
    };
    let mut builder = ws::WsResponseBuilder::new(Session::new(parts, endpoint), req, payload).frame_size(limit);
    if let Some(protocols) = protocols {
        builder = builder.protocols(protocols);
    }
    builder.start()
}

fn bucket(state: &AppState) -> TokenBucket {
    TokenBucket::new(state.settings.limits.messages_per_second, state.settings.limits.burst)
}

/// `GET /ws`: the JSON room protocol.
pub async fn json(req: HttpRequest, payload: web::Payload, state: web::Data<AppState>) -> HttpResponse {
    let admitted = match admit(&req, &state, None) {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal.response(),
    };
    let handle = admitted.handle.clone();
    state.registry.do_send(Connect { handle: handle.clone() });
    let heartbeat = &state.settings.heartbeat;
    let endpoint = JsonRoom::new(
        state.registry.clone(),
        bucket(&state),
        heartbeat.interval.as_millis() as u64,
        heartbeat.timeout.as_millis() as u64,
    );
    start(&req, payload, &state, admitted, endpoint, Some(&[SUBPROTOCOL])).unwrap_or_else(|error| {
        state.registry.do_send(Disconnect { id: handle.id() });
        error.error_response()
    })
}

/// `GET /ws/{room}`: the raw relay.
pub async fn raw(
    req: HttpRequest,
    room: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let name = RoomName::parse(&room);
    let admitted = match admit(&req, &state, name.as_ref().err().copied()) {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal.response(),
    };
    let Ok(name) = name else {
        return Refusal::new(StatusCode::BAD_REQUEST, "bad room name").response();
    };
    let handle = admitted.handle.clone();
    let joined = state.registry.send(ConnectRaw { handle: handle.clone(), room: name.clone() }).await;
    match joined {
        Ok(Ok(())) => {}
        Ok(Err(_full)) => {
            log::info!("refused /ws/{name} from {}: room is full", peer(&req));
            return Refusal::new(StatusCode::CONFLICT, "room is full").response();
        }
        Err(error) => {
            log::warn!("room registry unavailable: {error}");
            return Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "room registry unavailable").response();
        }
    }
    let endpoint = RawRelay::new(state.registry.clone(), bucket(&state));
    start(&req, payload, &state, admitted, endpoint, None).unwrap_or_else(|error| {
        state.registry.do_send(Disconnect { id: handle.id() });
        error.error_response()
    })
}

/// `GET /echo`: echoes every message.
pub async fn echo(req: HttpRequest, payload: web::Payload, state: web::Data<AppState>) -> HttpResponse {
    let admitted = match admit(&req, &state, None) {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal.response(),
    };
    start(&req, payload, &state, admitted, Echo, None).unwrap_or_else(|error| error.error_response())
}
