//! The wire: protocol v1 of `shared/spec/protocol.md`, both ways and for
//! both sides, and nothing else.
//!
//! - [`request`]: client to server. The server parses requests; clients
//!   (the load tester, `roomcast client`) build them.
//! - [`frame`]: server to client. The server builds frames; clients parse
//!   them.
//! - here: what both share: names, ids, error and close codes, JSON strings.

pub mod deflate;
pub mod extension;
pub mod frame;
pub mod request;

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::sync::Arc;

use serde_json::value::RawValue;

/// Milliseconds since the Unix epoch: a message's `ts`.
pub fn now_epoch_ms() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The subprotocol a `/ws` client may offer.
pub const SUBPROTOCOL: &str = "roomcast.v1";

/// What `welcome` reports as `server`.
pub const SERVER_NAME: &str = concat!("roomcast/", env!("CARGO_PKG_VERSION"));

/// Close codes roomcast sends.
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const INVALID_DATA: u16 = 1007;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const HEARTBEAT_TIMEOUT: u16 = 1011;
    /// 1011 for anything else the server cannot go on with.
    pub const INTERNAL_ERROR: u16 = 1011;
    /// The node was declared dead by its cluster and starts again.
    pub const SERVICE_RESTART: u16 = 1012;
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// A session id: unique for the server's life, a decimal string on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

impl SessionId {
    /// Parses the wire form; only the canonical decimal spelling names a
    /// session, so `"007"` and `"7"` cannot both refer to session 7.
    pub fn from_wire(text: &str) -> Option<SessionId> {
        let canonical =
            !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) && (text == "0" || !text.starts_with('0'));
        if canonical { text.parse().ok().map(SessionId) } else { None }
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A valid room name: 1 to 64 bytes of `A-Z a-z 0-9 - _ . :`. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomName(Arc<str>);

impl RoomName {
    pub fn parse(name: &str) -> Result<RoomName, &'static str> {
        if name.is_empty() || name.len() > 64 {
            return Err("room names are 1 to 64 bytes");
        }
        let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':');
        if !name.bytes().all(allowed) {
            return Err("room names use only A-Z a-z 0-9 - _ . :");
        }
        Ok(RoomName(name.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The idempotency key of a `publish` (its `id`) or an API publish (its
/// `Idempotency-Key`): 1 to 64 bytes. A room publishes each once.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PublishId(Box<str>);

impl PublishId {
    pub const MAX_BYTES: usize = 64;

    pub fn parse(text: &str) -> Result<PublishId, &'static str> {
        if text.is_empty() || text.len() > Self::MAX_BYTES {
            return Err("a publish id is 1 to 64 bytes");
        }
        Ok(PublishId(text.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks a nick: 1 to 32 characters, no control characters.
pub fn validate_nick(name: &str) -> Result<(), &'static str> {
    let count = name.chars().count();
    if count == 0 || count > 32 {
        return Err("nick must be 1 to 32 characters");
    }
    if name.chars().any(char::is_control) {
        return Err("nick must not contain control characters");
    }
    Ok(())
}

/// The `code` of an `error` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BadJson,
    BadRequest,
    UnknownType,
    NotMember,
    NotFound,
    RoomFull,
    TooManyRooms,
    RateLimited,
    /// A missing or bad token (`auth.md`).
    Unauthorized,
    /// A token past its `exp`.
    TokenExpired,
    /// No grant for the room, or only a read grant for a publish.
    Forbidden,
    /// `auth.max_connections_per_user`.
    TooManyConnections,
    /// The cluster's Redis does not answer (`cluster.md`).
    Unavailable,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::NotMember => "not_member",
            ErrorCode::NotFound => "not_found",
            ErrorCode::RoomFull => "room_full",
            ErrorCode::TooManyRooms => "too_many_rooms",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::TooManyConnections => "too_many_connections",
            ErrorCode::Unavailable => "unavailable",
        }
    }
}

/// How deep a body may nest arrays and objects.
pub const MAX_BODY_DEPTH: usize = 64;

/// JSON that parses but is refused: what other people's parsers choke on
/// when it is stored and replayed to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poison {
    /// A `\uD800`-`\uDFFF` escape that is not half of a pair: not Unicode.
    LoneSurrogate,
    /// Arrays and objects nested deeper than allowed.
    TooDeep,
}

impl Poison {
    pub fn describe(self) -> &'static str {
        match self {
            Poison::LoneSurrogate => "a string holds a lone surrogate escape (such as \\ud800), which is not Unicode",
            Poison::TooDeep => "nested deeper than 64 arrays or objects",
        }
    }
}

/// Checks JSON text that already parsed, whose values may nest at most
/// `max_depth` arrays or objects deep. Text without `\u` escapes and with
/// few brackets (nearly every message) is passed after two quick scans.
pub fn check_poison(text: &str, max_depth: usize) -> Result<(), Poison> {
    let bytes = text.as_bytes();
    let deep = memchr::memchr2_iter(b'[', b'{', bytes).nth(max_depth).is_some();
    if !deep && memchr::memmem::find(bytes, b"\\u").is_none() {
        return Ok(());
    }
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i = string_end(bytes, i + 1)?;
                continue;
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > max_depth {
                    return Err(Poison::TooDeep);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// The index after the string whose contents start at `i`, checking its
/// `\u` escapes pair up.
fn string_end(bytes: &[u8], mut i: usize) -> Result<usize, Poison> {
    let unit =
        |at: usize| bytes.get(at..at + 4).and_then(|hex| u16::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok());
    while let Some(&byte) = bytes.get(i) {
        match byte {
            b'"' => return Ok(i + 1),
            b'\\' if bytes.get(i + 1) == Some(&b'u') => match unit(i + 2) {
                Some(0xD800..=0xDBFF) => {
                    let low_follows =
                        bytes.get(i + 6..i + 8) == Some(b"\\u") && matches!(unit(i + 8), Some(0xDC00..=0xDFFF));
                    if !low_follows {
                        return Err(Poison::LoneSurrogate);
                    }
                    i += 12;
                }
                Some(0xDC00..=0xDFFF) => return Err(Poison::LoneSurrogate),
                _ => i += 6,
            },
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
    Ok(i)
}

/// Client text quoted in a reply or a log line, cut to a readable length.
pub fn quoted(text: &str) -> String {
    const MAX: usize = 64;
    if text.len() <= MAX { format!("{text:?}") } else { format!("{:?}...", cut(text, MAX)) }
}

/// At most the first `max` bytes of `text`, ending on a character boundary.
pub fn cut(text: &str, max: usize) -> &str {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Whether a raw JSON value is a string literal.
pub fn is_string(raw: &RawValue) -> bool {
    raw.get().starts_with('"')
}

pub(crate) fn is_integer(raw: &RawValue) -> bool {
    let digits = raw.get().strip_prefix('-').unwrap_or(raw.get());
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

pub(crate) fn as_string(raw: &RawValue) -> Option<Cow<'_, str>> {
    if !is_string(raw) {
        return None;
    }
    serde_json::from_str::<Cow<str>>(raw.get()).ok()
}

/// What a raw `/ws/{room}` member receives for a JSON body: a string body
/// as its bare text, any other value as its JSON text.
pub fn body_as_raw_text(body: &RawValue) -> String {
    match as_string(body) {
        Some(text) => text.into_owned(),
        None => body.get().to_owned(),
    }
}

/// Appends `text` as a JSON string literal.
pub fn push_json_str(out: &mut String, text: &str) {
    out.push('"');
    let mut start = 0;
    for (i, c) in text.char_indices() {
        let escape = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            c if (c as u32) < 0x20 => "",
            _ => continue,
        };
        out.push_str(&text[start..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push_str(escape);
        }
        start = i + c.len_utf8();
    }
    out.push_str(&text[start..]);
    out.push('"');
}

/// The length of [`json_str`]`(text)`, without making it.
pub fn json_str_len(text: &str) -> usize {
    let escaped: usize = text
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' => 1,
            b if b < 0x20 => 5,
            _ => 0,
        })
        .sum();
    text.len() + escaped + 2
}

/// A JSON string literal for `text`.
pub fn json_str(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    push_json_str(&mut out, text);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_str_len_is_the_length_of_json_str() {
        for text in ["", "plain", "quote\" back\\ nl\n tab\t cr\r", "\u{1}\u{7f}\u{1f}", "ünï €😀"] {
            assert_eq!(json_str_len(text), json_str(text).len(), "{text:?}");
        }
    }

    #[test]
    fn room_names() {
        assert!(RoomName::parse(&"a".repeat(64)).is_ok());
        assert!(RoomName::parse(&"a".repeat(65)).is_err());
        assert!(RoomName::parse("").is_err());
        assert!(RoomName::parse("é").is_err());
        assert!(RoomName::parse("a/b").is_err());
    }

    #[test]
    fn session_ids_are_canonical() {
        assert_eq!(SessionId::from_wire("42"), Some(SessionId(42)));
        assert_eq!(SessionId::from_wire("042"), None);
        assert_eq!(SessionId::from_wire("+1"), None);
        assert_eq!(SessionId::from_wire(""), None);
    }

    #[test]
    fn json_strings_round_trip() {
        for s in ["", "plain", "\"\\", "\u{0}\u{1f}\u{7f}", "é😀", "\u{2028}"] {
            let back: String = serde_json::from_str(&json_str(s)).unwrap();
            assert_eq!(back, s);
        }
    }

    #[test]
    fn poison() {
        let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert_eq!(check_poison(&nested(64), 64), Ok(()));
        assert_eq!(check_poison(&nested(65), 64), Err(Poison::TooDeep));
        assert_eq!(check_poison(&format!("{{\"a\":{}}}", nested(64)), 65), Ok(()));
        assert_eq!(check_poison(&format!("[\"{}\"]", "[".repeat(100)), 64), Ok(()), "brackets in strings");
        for bad in [r#""\ud800""#, r#""\uDC00""#, r#""\ud800\u0041""#, r#""x\ud83d""#, r#"{"\udfff":1}"#] {
            assert_eq!(check_poison(bad, 64), Err(Poison::LoneSurrogate), "{bad}");
        }
        for good in [r#""\ud83d\ude00""#, r#""\\ud800""#, r#""\u0041\"\\""#, r#""😀""#, "12", r#""\\""#] {
            assert_eq!(check_poison(good, 64), Ok(()), "{good}");
        }
    }

    #[test]
    fn quoting_cuts_long_text() {
        assert_eq!(quoted("dance"), "\"dance\"");
        let long = "é".repeat(100);
        assert!(quoted(&long).len() < 80 && quoted(&long).ends_with("..."));
        assert_eq!(cut("aé", 2), "a", "not inside a character");
        assert_eq!(cut("ab", 9), "ab");
    }

    #[test]
    fn raw_bodies() {
        let text = |json: &str| body_as_raw_text(&RawValue::from_string(json.into()).unwrap());
        assert_eq!(text("\"hi \\\"there\\\"\""), "hi \"there\"");
        assert_eq!(text("{\"a\": 1}"), "{\"a\": 1}");
        assert_eq!(text("12"), "12");
    }
}
