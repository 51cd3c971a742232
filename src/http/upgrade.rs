//! The WebSocket endpoints: `/ws`, `/ws/{room}`, `/echo`.
//!
//! Every handshake passes the same gate before it is upgraded, in this
//! order: 503 while draining; 431 for headers over 16 KiB; 421 for a
//! `Host` this server does not answer to; 403 for a refused Origin; 400 for
//! a request that is not a valid WebSocket handshake, 426 for a version
//! other than 13; 400 for a bad room name; 503 beyond `max_connections` or
//! `max_connections_per_ip`. Then authentication (`auth.md`), which refuses
//! after the upgrade (close 1008) so that a browser can see why. `/ws/{room}`
//! adds 403 for a private room its token grants nothing in, 409 for a full
//! room and 503 when the room would be one more than `rooms.max_rooms`.
//!
//! A session is registered with the registry before anything else can
//! refer to it, through a `Registration` that ends the registration when
//! dropped, however the upgrade ends.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use actix_web::http::{Method, StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use actix_web_actors::ws;

use super::{AppState, Refusal, peer};
use crate::auth::Policy;
use crate::auth::users::UserSlot;
use crate::auth::{Access, Admission, Identity, Verifier};
use crate::config::AuthMode;
use crate::limit::Full;
use crate::limit::peers::{Peer, PeerSlot};
use crate::metrics::{AuthFailure, ConnectionSlot, Metrics};
use crate::outbox::socket::{ConnSocket, SocketId};
use crate::outbox::{OutboundLimits, SessionHandle};
use crate::protocol::{RoomName, SUBPROTOCOL, SessionId};
use crate::registry::messages::{Connect, ConnectRaw, RawRefusal, Registration};
use crate::registry::node::AdmitUser;
use crate::session::echo::Echo;
use crate::session::json::JsonRoom;
use crate::session::ratelimit::TokenBucket;
use crate::session::raw::RawRelay;
use crate::session::refused::Refused;
use crate::session::{Endpoint, Session, SessionParts};

/// The most header bytes a handshake may carry (the sum of every header's
/// name and value).
const MAX_HEADER_BYTES: usize = 16 * 1024;

/// A handshake that passed the gate: its session's handle and the slots it
/// holds while open.
struct Admitted {
    handle: SessionHandle,
    slot: ConnectionSlot,
    peer_slot: Option<PeerSlot>,
    user_slot: Option<UserSlot>,
    max_message_bytes: usize,
    who: Who,
}

/// Who authentication says the connection is.
enum Who {
    /// Authentication is off, or optional and no token came.
    Anonymous,
    User(Arc<Identity>),
    /// Upgraded, then closed 1008.
    Refused(Policy, String),
}

impl Who {
    fn identity(&self) -> Option<Arc<Identity>> {
        match self {
            Who::User(identity) => Some(identity.clone()),
            _ => None,
        }
    }
}

#[derive(serde::Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// The connection token: `Authorization: Bearer TOKEN`, else `?token=`
/// (browsers cannot set headers on a WebSocket).
fn token(req: &HttpRequest) -> Result<Option<String>, &'static str> {
    let bearer = req.headers().get(header::AUTHORIZATION).and_then(|value| value.to_str().ok()).and_then(|value| {
        let (scheme, token) = value.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_string())
    });
    if bearer.is_some() {
        return Ok(bearer);
    }
    // `?token=` (empty) is no token: a page passes on what its URL has.
    match web::Query::<TokenQuery>::from_query(req.query_string()) {
        Ok(query) => Ok(query.into_inner().token.filter(|token| !token.is_empty())),
        Err(_) => Err("the query string does not parse (is `token` given twice?)"),
    }
}

/// Authentication's part of the gate: who the connection is, and its slot
/// under `max_connections_per_user`.
fn authenticate(
    req: &HttpRequest,
    state: &AppState,
    verifier: &Verifier,
    handle: &SessionHandle,
) -> (Who, Option<UserSlot>) {
    if verifier.mode() == AuthMode::Off {
        return (Who::Anonymous, None);
    }
    let admission = match token(req) {
        Ok(token) => verifier.admit(token.as_deref()),
        Err(why) => {
            Admission::Refused { policy: Policy::Unauthorized, failure: AuthFailure::Invalid, message: why.into() }
        }
    };
    let refuse = |policy, failure, message: String| {
        state.metrics.auth_failure(failure);
        log::info!("refused {} from {}: {message}", req.path(), peer(req));
        (Who::Refused(policy, message), None)
    };
    match admission {
        Admission::Anonymous => (Who::Anonymous, None),
        Admission::Refused { policy, failure, message } => refuse(policy, failure, message),
        Admission::User(claims) => {
            let identity = Arc::new(claims.identity);
            let Ok(user_slot) = state.user_limit.admit(identity.user.clone()) else {
                let message =
                    format!("user {:?} has its most connections open (auth.max_connections_per_user)", &*identity.user);
                return refuse(Policy::TooManyConnections, AuthFailure::Forbidden, message);
            };
            // The user, never the token.
            log::debug!("session {}: user {:?}", handle.id(), &*identity.user);
            handle.expire_in(verifier.lifetime_ms(claims.exp));
            (Who::User(identity), user_slot)
        }
    }
}

/// A header value for the log: clients choose them, so keep them short.
fn shown(value: Option<&str>) -> String {
    match value {
        Some(value) if value.len() > 80 => {
            format!("{:?}... ({} bytes)", crate::protocol::cut(value, 80), value.len())
        }
        Some(value) => format!("{value:?}"),
        None => "none".into(),
    }
}

/// Why `req` is not a WebSocket handshake roomcast accepts (RFC 6455
/// §4.2.1), if it is not.
fn handshake_refusal(req: &HttpRequest) -> Option<Refusal> {
    let bad = |why: &'static str| Some(Refusal::new(StatusCode::BAD_REQUEST, why));
    let headers = req.headers();
    let has_token = |name, token: &str| {
        headers
            .get_all(name)
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if req.method() != Method::GET {
        return bad("a WebSocket handshake is a GET request");
    }
    if !has_token(header::UPGRADE, "websocket") {
        return bad("not a WebSocket handshake: no \"Upgrade: websocket\" header");
    }
    if !has_token(header::CONNECTION, "upgrade") {
        return bad("not a WebSocket handshake: no \"Connection: Upgrade\" header");
    }
    match headers.get(header::SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) {
        None => return bad("no Sec-WebSocket-Version header"),
        Some(b"13") => {}
        Some(_) => {
            let refusal = Refusal::new(StatusCode::UPGRADE_REQUIRED, "only WebSocket version 13 is supported")
                .with_header(header::SEC_WEBSOCKET_VERSION, "13");
            return Some(refusal);
        }
    }
    let mut keys = headers.get_all(header::SEC_WEBSOCKET_KEY);
    let key_ok = match (keys.next(), keys.next()) {
        (Some(key), None) => is_websocket_key(key.as_bytes()),
        _ => false,
    };
    if !key_ok {
        return bad("Sec-WebSocket-Key must be one 16-byte value in base64");
    }
    None
}

/// 16 bytes in base64: 22 characters of the alphabet, then "==".
fn is_websocket_key(key: &[u8]) -> bool {
    let base64 = |b: &u8| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/';
    key.len() == 24 && key[..22].iter().all(base64) && &key[22..] == b"=="
}

/// The checks every WebSocket endpoint makes, in order; `bad_room` is why
/// the path's room name is refused, if it is.
fn admit(req: &HttpRequest, state: &AppState, bad_room: Option<&'static str>) -> Result<Admitted, Refusal> {
    if state.draining.load(Ordering::Acquire) {
        return Err(Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "server is shutting down"));
    }
    let header_bytes: usize = req.headers().iter().map(|(name, value)| name.as_str().len() + value.len()).sum();
    if header_bytes > MAX_HEADER_BYTES {
        log::info!("refused {} from {}: {header_bytes} bytes of headers", req.path(), peer(req));
        return Err(Refusal::new(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "headers over 16 KiB"));
    }
    let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    state.check_host(req)?;
    let live = state.live();
    if let Err(why) = live.origin.check(header(header::ORIGIN), super::request_host(req)) {
        Metrics::inc(&state.metrics.origin_rejections);
        log::info!("refused {} from {}: {why} (Origin {})", req.path(), peer(req), shown(header(header::ORIGIN)));
        return Err(Refusal::new(StatusCode::FORBIDDEN, why));
    }
    if let Some(refusal) = handshake_refusal(req) {
        log::info!("refused {} from {}: {}", req.path(), peer(req), refusal.reason());
        return Err(refusal);
    }
    if let Some(why) = bad_room {
        return Err(Refusal::new(StatusCode::BAD_REQUEST, why));
    }
    let Some(slot) = state.metrics.open_connection(live.settings.server.max_connections) else {
        log::info!("refused {} from {}: max_connections reached", req.path(), peer(req));
        return Err(Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "too many connections"));
    };
    let peer_slot = match req.peer_addr().map(|address| state.peer_limit.admit(Peer::of(address.ip()))) {
        Some(Ok(peer_slot)) => peer_slot,
        Some(Err(Full)) => {
            Metrics::inc(&state.metrics.connections_refused);
            log::info!("refused {} from {}: max_connections_per_ip reached", req.path(), peer(req));
            return Err(Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "too many connections from your address"));
        }
        None => None,
    };
    let counted = SessionId(state.next_id.fetch_add(1, Ordering::Relaxed));
    let id = crate::broker::redis::nodes::unguessable(counted);
    if state.clustered && crate::broker::redis::nodes::node_of(counted) == 0 {
        log::info!("refused {} from {}: not yet in the cluster (Redis)", req.path(), peer(req));
        return Err(Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "not yet connected to the cluster's Redis"));
    }
    let socket = req.conn_data::<SocketId>().copied().map(ConnSocket::new);
    let limits = &live.settings.limits;
    let outbound = OutboundLimits {
        frames: limits.outbound_queue,
        bytes: limits.outbound_bytes.bytes(),
        stall_ms: state.watchdog.timing().stall().as_millis() as u64,
    };
    let handle = SessionHandle::new(id, outbound, socket);
    log::debug!("session {id}: {} from {}", req.path(), peer(req));
    let (who, user_slot) = authenticate(req, state, &live.auth, &handle);
    let max_message_bytes = limits.max_message_bytes;
    Ok(Admitted { handle, slot, peer_slot, user_slot, max_message_bytes, who })
}

/// Upgrades the connection and starts the session actor.
fn start<E: Endpoint>(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    admitted: Admitted,
    endpoint: E,
    protocols: &'static [&'static str],
) -> HttpResponse {
    let mut response = match ws::handshake_with_protocols(req, protocols) {
        Ok(response) => response,
        Err(error) => return Refusal::new(StatusCode::BAD_REQUEST, error.to_string()).response(),
    };
    let parts = SessionParts {
        handle: admitted.handle,
        slot: admitted.slot,
        peer_slot: admitted.peer_slot,
        user_slot: admitted.user_slot,
        metrics: state.metrics.clone(),
        watchdog: state.watchdog.clone(),
        draining: state.draining.clone(),
        max_message_bytes: admitted.max_message_bytes,
        input: payload,
    };
    response.streaming(Session::body(parts, endpoint))
}

fn bucket(state: &AppState) -> TokenBucket {
    TokenBucket::new(state.rate.clone())
}

/// The endpoint for a connection authentication refused: upgraded, then
/// closed 1008.
fn refused(who: &Who, json: bool) -> Option<Refused> {
    match who {
        Who::Refused(policy, message) => Some(Refused::new(*policy, message.clone(), json)),
        _ => None,
    }
}

/// In a cluster, `max_connections_per_user` counts every node's
/// connections: Redis has the last word (the gate counted this node's).
/// `registration` gives the count back when the session ends.
async fn count_user_in_cluster(req: &HttpRequest, state: &AppState, admitted: &mut Admitted) {
    let Who::User(identity) = &admitted.who else {
        return;
    };
    let max = state.live().settings.auth.max_connections_per_user;
    if !state.clustered || max == 0 {
        return;
    }
    let ask = AdmitUser { id: admitted.handle.id(), user: identity.user.clone(), max };
    if state.registry.send(ask).await.unwrap_or(true) {
        return;
    }
    state.metrics.auth_failure(AuthFailure::Forbidden);
    let message = format!(
        "user {:?} has its most connections open across the cluster (auth.max_connections_per_user)",
        &*identity.user
    );
    log::info!("refused {} from {}: {message}", req.path(), peer(req));
    admitted.who = Who::Refused(Policy::TooManyConnections, message);
    admitted.user_slot = None;
}

/// `GET /ws`: the JSON room protocol.
pub async fn json(req: HttpRequest, payload: web::Payload, state: web::Data<AppState>) -> HttpResponse {
    let mut admitted = match admit(&req, &state, None) {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal.response(),
    };
    let protocols = &[SUBPROTOCOL];
    let registration = Registration::new(state.registry.clone(), admitted.handle.id());
    count_user_in_cluster(&req, &state, &mut admitted).await;
    if let Some(endpoint) = refused(&admitted.who, true) {
        return start(&req, payload, &state, admitted, endpoint, protocols);
    }
    let identity = admitted.who.identity();
    // In a cluster, answered once other nodes can find the session: its
    // `welcome` (and id) may not reach the client before.
    let connect = Connect { handle: admitted.handle.clone(), identity: identity.clone() };
    if let Err(error) = state.registry.send(connect).await {
        log::warn!("room registry unavailable: {error}");
        return Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "room registry unavailable").response();
    }
    let timing = state.watchdog.timing();
    let endpoint = JsonRoom::new(
        registration,
        bucket(&state),
        timing.interval.as_millis() as u64,
        timing.timeout.as_millis() as u64,
        identity,
        state.live.clone(),
    );
    start(&req, payload, &state, admitted, endpoint, protocols)
}

/// `GET /ws/{room}`: the raw relay.
pub async fn raw(
    req: HttpRequest,
    room: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let name = RoomName::parse(&room);
    let mut admitted = match admit(&req, &state, name.as_ref().err().copied()) {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal.response(),
    };
    let Ok(name) = name else {
        return Refusal::new(StatusCode::BAD_REQUEST, "bad room name").response();
    };
    // Before the registry hears of the session: if this future is dropped
    // while it waits (the client went away), the registration still ends.
    let registration = Registration::new(state.registry.clone(), admitted.handle.id());
    count_user_in_cluster(&req, &state, &mut admitted).await;
    if let Some(endpoint) = refused(&admitted.who, false) {
        return start(&req, payload, &state, admitted, endpoint, &[]);
    }
    let identity = admitted.who.identity();
    let verifier = state.live().auth.clone();
    let access = match identity.as_deref().and_then(|identity| identity.access(name.as_str())) {
        _ if verifier.mode() == AuthMode::Off || !verifier.is_private(name.as_str()) => Access::Write,
        Some(access) => access,
        None => {
            state.metrics.auth_failure(AuthFailure::Forbidden);
            log::info!("refused /ws/{name} from {}: a private room, and the token grants nothing in it", peer(&req));
            return Refusal::new(StatusCode::FORBIDDEN, "a private room: your token grants nothing in it").response();
        }
    };
    let connect = ConnectRaw { handle: admitted.handle.clone(), room: name.clone(), identity, access };
    let joined = state.registry.send(connect).await;
    let refusal = match joined {
        Ok(Ok(())) => None,
        Ok(Err(RawRefusal::RoomFull)) => Some(Refusal::new(StatusCode::CONFLICT, "room is full")),
        Ok(Err(RawRefusal::TooManyRooms)) => {
            Some(Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "the server holds its most rooms; try an existing room"))
        }
        Ok(Err(RawRefusal::Unavailable)) => {
            Some(Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "the cluster's Redis is unavailable; try again"))
        }
        Err(error) => {
            log::warn!("room registry unavailable: {error}");
            Some(Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "room registry unavailable"))
        }
    };
    if let Some(refusal) = refusal {
        log::info!("refused /ws/{name} from {}: {}", peer(&req), refusal.reason());
        return refusal.response();
    }
    let endpoint = RawRelay::new(registration, bucket(&state));
    start(&req, payload, &state, admitted, endpoint, &[])
}

/// `GET /echo`: echoes every message.
pub async fn echo(req: HttpRequest, payload: web::Payload, state: web::Data<AppState>) -> HttpResponse {
    let admitted = match admit(&req, &state, None) {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal.response(),
    };
    if let Some(endpoint) = refused(&admitted.who, false) {
        return start(&req, payload, &state, admitted, endpoint, &[]);
    }
    start(&req, payload, &state, admitted, Echo, &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_keys() {
        assert!(is_websocket_key(b"dGhlIHNhbXBsZSBub25jZQ=="));
        for bad in
            [&b"x"[..], b"dGhlIHNhbXBsZSBub25jZQ=", b"dGhlIHNhbXBsZSBub25jZQ!=", b"dGhlIHNhbXBsZSBub25jZ===", b""]
        {
            assert!(!is_websocket_key(bad), "{}", String::from_utf8_lossy(bad));
        }
    }
}
