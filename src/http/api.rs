//! `/api`: server-side publish and the room list, behind a bearer key.
//!
//! Checks run in this order: a `Host` this server does not answer to is
//! 421 (`server.hosts`); the API is off (404) when `api.key` is empty;
//! a missing or wrong key is 401; then a bad room name or body is 400 and a
//! body over `max_message_bytes` 413. The body is read only after the key
//! was checked, so nobody without the key can make the server buffer it.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt;
use serde_json::value::RawValue;

use super::{AppState, Refusal};
use crate::metrics::Metrics;
use crate::protocol::frame;
use crate::protocol::{PublishId, RoomName};
use crate::registry::messages::{ApiPublish, ApiRefusal, ListRooms};

fn json(body: String) -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(body)
}

fn authorize(req: &HttpRequest, state: &AppState) -> Result<(), Refusal> {
    state.check_host(req)?;
    let live = state.live();
    let key = &live.settings.api.key;
    if key.is_empty() {
        return Err(Refusal::new(StatusCode::NOT_FOUND, "not found"));
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        // The scheme is case-insensitive (RFC 9110 §11.1).
        .and_then(|value| value.split_once(' ').filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer")))
        .map(|(_, key)| key.trim());
    match given {
        Some(given) if constant_time_eq::constant_time_eq(given.as_bytes(), key.as_bytes()) => Ok(()),
        _ => {
            log::info!("refused {} from {}: bad or missing API key", req.path(), super::peer(req));
            Err(Refusal::new(StatusCode::UNAUTHORIZED, "a valid Authorization: Bearer key is required"))
        }
    }
}

fn too_big(limit: usize) -> Refusal {
    Refusal::new(StatusCode::PAYLOAD_TOO_LARGE, format!("the body is limited to {limit} bytes"))
}

/// Reads the whole body, or answers 413 once it passes `limit`.
async fn read_body(mut payload: web::Payload, limit: usize) -> Result<web::BytesMut, Refusal> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, format!("cannot read the body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(too_big(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `api.messages_per_second` and `api.burst`: a publish beyond them gets
/// 429 and how long to wait (`Retry-After`, whole seconds, at least 1).
fn rate_limited(state: &AppState) -> Option<HttpResponse> {
    let mut bucket = state.api_bucket.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if bucket.take() {
        return None;
    }
    let wait = bucket.next_token_in().as_secs_f64().ceil().max(1.0) as u64;
    drop(bucket);
    Metrics::inc(&state.metrics.rate_limited);
    let why = "too many API publishes (api.messages_per_second, api.burst); try again later";
    let mut response = Refusal::new(StatusCode::TOO_MANY_REQUESTS, why).response();
    if let Ok(value) = header::HeaderValue::from_str(&wait.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    Some(response)
}

/// The request's `Idempotency-Key` (`protocol.md`): 1 to 64 bytes of
/// visible ASCII, else 400.
fn idempotency_key(req: &HttpRequest) -> Result<Option<PublishId>, Refusal> {
    let Some(value) = req.headers().get("idempotency-key") else {
        return Ok(None);
    };
    let bad = |why: &str| Refusal::new(StatusCode::BAD_REQUEST, format!("Idempotency-Key: {why}"));
    let text = value.to_str().map_err(|_| bad("must be visible ASCII"))?;
    PublishId::parse(text).map(Some).map_err(bad)
}

/// `POST /api/rooms/{room}/publish`
pub async fn publish(
    req: HttpRequest,
    room: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    if let Err(refusal) = authorize(&req, &state) {
        return refusal.response();
    }
    if let Some(wait) = rate_limited(&state) {
        return wait;
    }
    let room = match RoomName::parse(&room) {
        Ok(room) => room,
        Err(why) => return Refusal::new(StatusCode::BAD_REQUEST, why).response(),
    };
    let id = match idempotency_key(&req) {
        Ok(id) => id,
        Err(refusal) => return refusal.response(),
    };
    let limit = state.live().settings.limits.max_message_bytes;
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit) {
        return too_big(limit).response();
    }
    let body = match read_body(payload, limit).await {
        Ok(body) => body,
        Err(refusal) => return refusal.response(),
    };
    let body: Box<RawValue> = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(e) => {
            return Refusal::new(StatusCode::BAD_REQUEST, format!("the body must be one JSON value: {e}")).response();
        }
    };
    if let Err(poison) = crate::protocol::check_poison(body.get(), crate::protocol::MAX_BODY_DEPTH) {
        return Refusal::new(StatusCode::BAD_REQUEST, format!("the body is refused: {}", poison.describe())).response();
    }
    match state.registry.send(ApiPublish { room, body, id }).await {
        Ok(Ok(seq)) => json(format!("{{\"seq\":{seq}}}")),
        Ok(Err(ApiRefusal::TooManyRooms)) => {
            let why = "the server holds its most rooms (rooms.max_rooms); publish to an existing room";
            Refusal::new(StatusCode::SERVICE_UNAVAILABLE, why).response()
        }
        Ok(Err(ApiRefusal::Unavailable(why))) => Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not published: the cluster's Redis is unavailable ({why})"),
        )
        .response(),
        Ok(Err(ApiRefusal::Unknown)) => {
            let why = "whether it was published is unknown: Redis lost its answer and no longer remembers; \
                       send it again with an Idempotency-Key";
            Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, why).response()
        }
        Err(e) => {
            log::warn!("room registry unavailable: {e}");
            Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "room registry unavailable").response()
        }
    }
}

/// `GET /api/rooms`
pub async fn rooms(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if let Err(refusal) = authorize(&req, &state) {
        return refusal.response();
    }
    match state.registry.send(ListRooms).await {
        Ok(Ok(rooms)) => json(frame::rooms(None, rooms.iter().map(|(name, count)| (name, *count)), None)),
        Ok(Err(why)) => {
            Refusal::new(StatusCode::SERVICE_UNAVAILABLE, format!("the cluster's Redis is unavailable ({why})"))
                .response()
        }
        Err(e) => {
            log::warn!("room registry unavailable: {e}");
            Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "room registry unavailable").response()
        }
    }
}

/// Anything else under `/api`: 404 while the API is off, else 401 without
/// the key, else 404.
pub async fn other(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    authorize(&req, &state).err().unwrap_or_else(|| Refusal::new(StatusCode::NOT_FOUND, "not found")).response()
}
