//! Who a session is, from the claims of its connection token: the user
//! (`sub`), the initial nick (`name`), and the rooms it may write (`rooms`)
//! or only read (`read`). Room tokens grant one room.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::Value;

use super::patterns::Patterns;
use crate::protocol::{RoomName, validate_nick};

/// The longest `sub`.
pub const MAX_USER_BYTES: usize = 128;

/// What a session may do in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Join and publish.
    Write,
    /// Join, not publish.
    Read,
}

/// An authenticated session's user and grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Shared with the per-user connection count.
    pub user: std::sync::Arc<str>,
    /// The `name` claim: the session's nick to begin with.
    pub name: Option<Box<str>>,
    pub rooms: Patterns,
    pub read: Patterns,
}

impl Identity {
    /// The grant the connection token gives for `room`, if any (`rooms`
    /// wins over `read`).
    pub fn access(&self, room: &str) -> Option<Access> {
        if self.rooms.matches(room) {
            Some(Access::Write)
        } else if self.read.matches(room) {
            Some(Access::Read)
        } else {
            None
        }
    }

    /// Bytes held beyond the struct, for the memory bound.
    pub fn bytes(&self) -> usize {
        self.user.len() + self.name.as_ref().map_or(0, |name| name.len()) + self.rooms.bytes() + self.read.bytes()
    }
}

/// A verified connection token.
#[derive(Debug)]
pub struct ConnectionClaims {
    pub identity: Identity,
    /// Seconds since the Unix epoch.
    pub exp: u64,
}

/// A verified room token: `sub` and `room` were checked by the caller's
/// request.
#[derive(Debug)]
pub struct RoomClaims {
    pub user: String,
    pub room: String,
    pub access: Access,
}

/// The claims roomcast reads; any others are skipped, not kept. `null`
/// counts as absent.
#[derive(Debug, Default, Deserialize)]
pub struct Claims {
    sub: Option<Value>,
    exp: Option<Value>,
    name: Option<Value>,
    rooms: Option<Value>,
    read: Option<Value>,
    room: Option<Value>,
    iss: Option<Value>,
}

impl Claims {
    /// Whether `iss` is exactly `issuer` (a string, not a list holding it).
    pub fn issued_by(&self, issuer: &str) -> bool {
        matches!(&self.iss, Some(Value::String(iss)) if iss == issuer)
    }

    fn get(&self, name: &str) -> Option<&Value> {
        match name {
            "sub" => self.sub.as_ref(),
            "exp" => self.exp.as_ref(),
            "name" => self.name.as_ref(),
            "rooms" => self.rooms.as_ref(),
            "read" => self.read.as_ref(),
            "room" => self.room.as_ref(),
            _ => None,
        }
    }
}

/// Seconds since the Unix epoch, now.
pub fn now_seconds() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `sub`: a string of 1 to 128 bytes.
fn user(claims: &Claims) -> Result<String, String> {
    match claims.get("sub") {
        Some(Value::String(sub)) if !sub.is_empty() && sub.len() <= MAX_USER_BYTES => Ok(sub.clone()),
        Some(Value::String(_)) => Err(format!("`sub` must be 1 to {MAX_USER_BYTES} bytes")),
        Some(_) => Err("`sub` must be a string".into()),
        None => Err("`sub` is required".into()),
    }
}

/// The last NumericDate accepted: 9999-12-31T23:59:59Z. A later one is a
/// mistake (or a token that wants to live forever).
pub const LAST_DATE: u64 = 253_402_300_799;

/// `exp` (or `nbf`): a NumericDate, which RFC 7519 lets be fractional.
/// Each refusal says what is wrong with it.
pub fn numeric_date(claims: &Claims, name: &str) -> Result<Option<u64>, String> {
    let seconds = match claims.get(name) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_f64().unwrap_or(f64::NAN),
        Some(Value::String(_)) => {
            return Err(format!("`{name}` is a string; it must be a number of seconds since 1970"));
        }
        Some(_) => return Err(format!("`{name}` must be a number of seconds since 1970")),
    };
    if seconds.is_nan() || seconds < 0.0 {
        return Err(format!("`{name}` is negative; it must be a number of seconds since 1970"));
    }
    if seconds > LAST_DATE as f64 {
        return Err(format!("`{name}` is after the year 9999; it must be a number of seconds since 1970"));
    }
    // Exact for integers (as_f64 is exact below 2^53, and LAST_DATE is).
    Ok(Some(seconds as u64))
}

fn patterns(claims: &Claims, name: &str) -> Result<Patterns, String> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(Patterns::default()),
        Some(Value::Array(items)) => {
            let texts: Option<Vec<&str>> = items.iter().map(Value::as_str).collect();
            let texts = texts.ok_or_else(|| format!("`{name}` must be an array of room patterns"))?;
            Patterns::parse(&texts).map_err(|problem| format!("`{name}`: {problem}"))
        }
        Some(_) => Err(format!("`{name}` must be an array of room patterns")),
    }
}

/// The claims of a connection token, whose signature, `aud`, `iss` and
/// `nbf` were checked. `exp` is left to the caller, which tells an expired
/// token from an invalid one.
pub fn connection(claims: &Claims) -> Result<ConnectionClaims, String> {
    if claims.room.is_some() {
        return Err("a connection token must not carry `room` (that makes it a room token)".into());
    }
    let user = user(claims)?;
    let exp = numeric_date(claims, "exp")?.ok_or("`exp` is required")?;
    let name = match claims.get("name") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => {
            validate_nick(name).map_err(|problem| format!("`name`: {problem}"))?;
            Some(name.as_str().into())
        }
        Some(_) => return Err("`name` must be a string".into()),
    };
    let identity =
        Identity { user: user.into(), name, rooms: patterns(claims, "rooms")?, read: patterns(claims, "read")? };
    Ok(ConnectionClaims { identity, exp })
}

/// The claims of a room token (see [`connection`] for what was checked).
pub fn room(claims: &Claims) -> Result<RoomClaims, String> {
    let room = match claims.get("room") {
        Some(Value::String(room)) => RoomName::parse(room).map_err(|problem| format!("`room`: {problem}"))?,
        Some(_) => return Err("`room` must be a room name".into()),
        None => return Err("a room token needs `room`".into()),
    };
    numeric_date(claims, "exp")?.ok_or("`exp` is required")?;
    let access = match claims.get("read") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => Access::Write,
        Some(Value::Bool(true)) => Access::Read,
        Some(_) => return Err("`read` must be true or false in a room token".into()),
    };
    Ok(RoomClaims { user: user(claims)?, room: room.as_str().to_string(), access })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> Claims {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn connection_claims() {
        let claims = object(json!({"sub": "ann", "exp": 2e9, "name": "Ann", "rooms": ["team-*"], "read": ["feed:*"]}));
        let token = connection(&claims).unwrap();
        assert_eq!(&*token.identity.user, "ann");
        assert_eq!(token.exp, 2_000_000_000);
        assert_eq!(token.identity.access("team-red"), Some(Access::Write));
        assert_eq!(token.identity.access("feed:prices"), Some(Access::Read));
        assert_eq!(token.identity.access("other"), None);
        for (bad, why) in [
            (json!({"exp": 1}), "`sub` is required"),
            (json!({"sub": "", "exp": 1}), "`sub` must be 1 to 128"),
            (json!({"sub": 7, "exp": 1}), "`sub` must be a string"),
            (json!({"sub": "a"}), "`exp` is required"),
            (json!({"sub": "a", "exp": "soon"}), "`exp` is a string"),
            (json!({"sub": "a", "exp": -5}), "`exp` is negative"),
            (json!({"sub": "a", "exp": 1e30}), "`exp` is after the year 9999"),
            (json!({"sub": "a", "exp": true}), "`exp` must be a number"),
            (json!({"sub": "a", "exp": 1, "room": "r"}), "must not carry `room`"),
            (json!({"sub": "a", "exp": 1, "rooms": "r"}), "`rooms` must be an array"),
            (json!({"sub": "a", "exp": 1, "read": ["a b"]}), "`read`: \"a b\""),
            (json!({"sub": "a", "exp": 1, "name": "\u{7}"}), "`name`: nick must not contain control"),
        ] {
            let error = connection(&object(bad.clone())).unwrap_err();
            assert!(error.contains(why), "{bad}: {error}");
        }
        assert!(connection(&object(json!({"sub": "x".repeat(128), "exp": 1}))).is_ok());
        assert!(connection(&object(json!({"sub": "x".repeat(129), "exp": 1}))).is_err());
    }

    #[test]
    fn room_claims() {
        let token = room(&object(json!({"sub": "ann", "exp": 1, "room": "private:x", "read": true}))).unwrap();
        assert_eq!((token.user.as_str(), token.room.as_str(), token.access), ("ann", "private:x", Access::Read));
        let token = room(&object(json!({"sub": "ann", "exp": 1, "room": "private:x"}))).unwrap();
        assert_eq!(token.access, Access::Write);
        assert!(room(&object(json!({"sub": "ann", "exp": 1}))).unwrap_err().contains("needs `room`"));
        assert!(room(&object(json!({"sub": "ann", "exp": 1, "room": "a b"}))).is_err());
        assert!(room(&object(json!({"sub": "ann", "exp": 1, "room": "r", "read": ["x"]}))).is_err());
    }
}
