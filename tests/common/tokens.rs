//! Connection and room tokens for the tests, signed by the `jsonwebtoken`
//! crate (not by roomcast).

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

pub const SECRET: &str = "tests-secret-of-at-least-thirty-two-bytes";

pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// A token signed with `key` by the jsonwebtoken crate.
pub fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, key).expect("sign")
}

pub fn hs_with(secret: &[u8], claims: &Value) -> String {
    sign(Algorithm::HS256, &EncodingKey::from_secret(secret).expect("secret"), claims)
}

/// `claims` with the fields of `extra` set.
pub fn with(mut claims: Value, extra: Value) -> Value {
    for (key, value) in extra.as_object().expect("an object") {
        claims[key] = value.clone();
    }
    claims
}

/// The environment of a server that checks tokens signed with [`SECRET`].
pub fn auth_env<'a>(mode: &'a str, private_rooms: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("ROOMCAST_AUTH__MODE", mode),
        ("ROOMCAST_AUTH__HMAC_SECRET", SECRET),
        ("ROOMCAST_AUTH__PRIVATE_ROOMS", private_rooms),
        ("ROOMCAST_AUTH__LEEWAY", "0s"),
    ]
}

/// A connection token for `sub`, an hour long, granting `rooms` and `read`.
pub fn grants(sub: &str, rooms: &[&str], read: &[&str]) -> String {
    hs_with(SECRET.as_bytes(), &json!({"sub": sub, "exp": now() + 3600, "rooms": rooms, "read": read}))
}

/// A room token for `sub` in `room`.
pub fn room_token(sub: &str, room: &str, read: bool) -> String {
    hs_with(SECRET.as_bytes(), &json!({"sub": sub, "exp": now() + 3600, "room": room, "read": read}))
}
