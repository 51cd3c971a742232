//! The wire: protocol v1 of `shared/spec/protocol.md`, and nothing else.
//!
//! Client requests are parsed into [`Request`]; every server frame is built
//! by one function here. Server frames are written by hand rather than
//! through serde structs because `joined` embeds stored `message` frames
//! verbatim, and a `message` is serialized once per publish for every
//! recipient: both are string assembly around already-valid JSON.

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;

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
        }
    }
}

/// The `ref` of a request, kept as its JSON text so the reply carries it
/// with its JSON type (string or integer).
pub type Ref = Option<Box<RawValue>>;

/// A request that was understood.
#[derive(Debug)]
pub struct Request {
    pub reference: Ref,
    pub kind: RequestKind,
}

#[derive(Debug)]
pub enum RequestKind {
    Join { room: RoomName, history: Option<u64>, since: Option<u64> },
    Leave { room: RoomName },
    Publish { room: RoomName, body: Box<RawValue> },
    Direct { to: String, body: Box<RawValue> },
    Nick { name: String },
    Rooms,
    Members { room: RoomName },
    Ping,
}

/// A request that was not understood: the `error` frame to answer with.
#[derive(Debug)]
pub struct RequestError {
    pub code: ErrorCode,
    pub message: Cow<'static, str>,
    pub reference: Ref,
}

impl RequestError {
    fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>, reference: Ref) -> Self {
        Self { code, message: message.into(), reference }
    }

    /// The frame that answers this request.
    pub fn to_frame(&self) -> String {
        error(self.code, &self.message, self.reference.as_deref())
    }
}

/// A field that tells "absent" from `null`: `Option<&RawValue>` would read
/// `"body": null` as absent, and null is a valid body.
#[derive(Default)]
struct Field<'a>(Option<&'a RawValue>);

impl<'de: 'a, 'a> Deserialize<'de> for Field<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        <&'a RawValue>::deserialize(deserializer).map(|raw| Field(Some(raw)))
    }
}

#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Field<'a>,
    #[serde(rename = "ref", borrow, default)]
    reference: Field<'a>,
    #[serde(borrow, default)]
    room: Field<'a>,
    #[serde(borrow, default)]
    history: Field<'a>,
    #[serde(borrow, default)]
    since: Field<'a>,
    #[serde(borrow, default)]
    body: Field<'a>,
    #[serde(borrow, default)]
    to: Field<'a>,
    #[serde(borrow, default)]
    name: Field<'a>,
}

/// Parses one text frame of the JSON room protocol.
pub fn parse_request(text: &str) -> Result<Request, RequestError> {
    use ErrorCode::{BadJson, BadRequest, UnknownType};

    // serde_json would read a struct from a JSON array too; only objects
    // are requests.
    if !text.trim_start().starts_with('{') {
        return Err(match serde_json::from_str::<serde::de::IgnoredAny>(text) {
            Ok(_) => RequestError::new(BadRequest, "a request is a JSON object", None),
            Err(_) => RequestError::new(BadJson, "frame is not valid JSON", None),
        });
    }
    let fields: Fields = match serde_json::from_str(text) {
        Ok(fields) => fields,
        Err(e) if e.is_data() => return Err(RequestError::new(BadRequest, e.to_string(), None)),
        Err(_) => return Err(RequestError::new(BadJson, "frame is not valid JSON", None)),
    };
    let reference = match fields.reference.0 {
        None => None,
        Some(raw) if is_string(raw) || is_integer(raw) => Some(raw.to_owned()),
        Some(_) => {
            return Err(RequestError::new(BadRequest, "`ref` must be a string or an integer", None));
        }
    };
    let bad = |message: String| Err(RequestError::new(BadRequest, message, reference.clone()));
    let Some(kind) = fields.kind.0.and_then(as_string) else {
        return bad("`type` must be a string".into());
    };
    let room = || -> Result<RoomName, String> {
        let name = fields.room.0.and_then(as_string).ok_or("`room` must be a string")?;
        RoomName::parse(&name).map_err(|why| format!("bad room name: {why}"))
    };
    let body = || fields.body.0.map(RawValue::to_owned).ok_or_else(|| "`body` is required".to_string());
    let count = |name: &str, field: &Field| -> Result<Option<u64>, String> {
        match field.0 {
            None => Ok(None),
            Some(raw) if raw.get() == "null" => Ok(None),
            Some(raw) => raw
                .get()
                .parse::<u64>()
                .ok()
                .filter(|_| is_integer(raw))
                .map(Some)
                .ok_or_else(|| format!("`{name}` must be an integer >= 0")),
        }
    };
    let parsed = (|| -> Result<RequestKind, String> {
        Ok(match kind.as_ref() {
            "join" => RequestKind::Join {
                room: room()?,
                history: count("history", &fields.history)?,
                since: count("since", &fields.since)?,
            },
            "leave" => RequestKind::Leave { room: room()? },
            "publish" => RequestKind::Publish { room: room()?, body: body()? },
            "direct" => RequestKind::Direct {
                to: fields.to.0.and_then(as_string).ok_or("`to` must be a session id string")?.into_owned(),
                body: body()?,
            },
            "nick" => {
                let name = fields.name.0.and_then(as_string).ok_or("`name` must be a string")?;
                validate_nick(&name)?;
                RequestKind::Nick { name: name.into_owned() }
            }
            "rooms" => RequestKind::Rooms,
            "members" => RequestKind::Members { room: room()? },
            "ping" => RequestKind::Ping,
            _ => return Err(String::new()),
        })
    })();
    match parsed {
        Ok(kind) => Ok(Request { reference, kind }),
        Err(message) if message.is_empty() => {
            Err(RequestError::new(UnknownType, format!("unknown type {:?}", kind.as_ref()), reference))
        }
        Err(message) => bad(message),
    }
}

/// Whether a raw JSON value is a string literal.
pub fn is_string(raw: &RawValue) -> bool {
    raw.get().starts_with('"')
}

fn is_integer(raw: &RawValue) -> bool {
    let digits = raw.get().strip_prefix('-').unwrap_or(raw.get());
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

fn as_string(raw: &RawValue) -> Option<Cow<'_, str>> {
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

/// A JSON string literal for `text`.
pub fn json_str(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    push_json_str(&mut out, text);
    out
}

/// Builds one server frame: `{"type":"...", fields..., "ref":...}`.
struct Frame(String);

impl Frame {
    fn new(kind: &str) -> Self {
        let mut out = String::with_capacity(96);
        out.push_str("{\"type\":\"");
        out.push_str(kind);
        out.push('"');
        Frame(out)
    }

    fn key(&mut self, key: &str) -> &mut String {
        self.0.push_str(",\"");
        self.0.push_str(key);
        self.0.push_str("\":");
        &mut self.0
    }

    fn str(mut self, key: &str, value: &str) -> Self {
        push_json_str(self.key(key), value);
        self
    }

    fn raw(mut self, key: &str, json: &str) -> Self {
        self.key(key).push_str(json);
        self
    }

    fn num(mut self, key: &str, value: u64) -> Self {
        let _ = write!(self.key(key), "{value}");
        self
    }

    fn finish(mut self, reference: Option<&RawValue>) -> String {
        if let Some(reference) = reference {
            self.key("ref").push_str(reference.get());
        }
        self.0.push('}');
        self.0
    }
}

/// `"from":ID,"nick":NICK` for a session, built when its nick changes and
/// spliced into every `message` and `direct` it sends.
pub fn sender_fields(id: SessionId, nick: Option<&str>) -> String {
    let mut out = format!("\"from\":\"{id}\",\"nick\":");
    match nick {
        Some(nick) => push_json_str(&mut out, nick),
        None => out.push_str("null"),
    }
    out
}

/// The `sender_fields` of messages published through `/api`.
pub fn api_sender_fields() -> String {
    "\"from\":\"api\",\"nick\":null".to_string()
}

pub fn welcome(id: SessionId, heartbeat_ms: u64, timeout_ms: u64) -> String {
    Frame::new("welcome")
        .str("id", &id.to_string())
        .num("heartbeat_ms", heartbeat_ms)
        .num("timeout_ms", timeout_ms)
        .str("server", SERVER_NAME)
        .finish(None)
}

/// A `message` frame; `sender` comes from [`sender_fields`].
pub fn message(room: &RoomName, seq: u64, sender: &str, ts_ms: u64, body: &str) -> String {
    let mut out = String::with_capacity(64 + room.as_str().len() + sender.len() + body.len());
    let _ = write!(
        out,
        "{{\"type\":\"message\",\"room\":\"{room}\",\"seq\":{seq},{sender},\"ts\":{ts_ms},\"body\":{body}}}"
    );
    out
}

/// A `joined` reply; `history` are stored `message` frames, oldest first.
pub fn joined<'a>(
    room: &RoomName,
    members: usize,
    history: impl Iterator<Item = &'a str>,
    recovered: Option<bool>,
    reference: Option<&RawValue>,
) -> String {
    let mut frame = Frame::new("joined").str("room", room.as_str()).num("members", members as u64);
    let out = frame.key("history");
    out.push('[');
    for (i, stored) in history.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(stored);
    }
    out.push(']');
    if let Some(recovered) = recovered {
        frame = frame.raw("recovered", if recovered { "true" } else { "false" });
    }
    frame.finish(reference)
}

pub fn left(room: &RoomName, reference: Option<&RawValue>) -> String {
    Frame::new("left").str("room", room.as_str()).finish(reference)
}

pub fn direct(sender: &str, body: &str) -> String {
    let mut out = String::with_capacity(32 + sender.len() + body.len());
    let _ = write!(out, "{{\"type\":\"direct\",{sender},\"body\":{body}}}");
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceEvent {
    Join,
    Leave,
}

pub fn presence(room: &RoomName, event: PresenceEvent, id: SessionId, nick: Option<&str>) -> String {
    let event = match event {
        PresenceEvent::Join => "join",
        PresenceEvent::Leave => "leave",
    };
    let frame = Frame::new("presence").str("room", room.as_str()).str("event", event).str("id", &id.to_string());
    match nick {
        Some(nick) => frame.str("nick", nick),
        None => frame.raw("nick", "null"),
    }
    .finish(None)
}

/// A `rooms` reply, or the body of `GET /api/rooms` when `kind` is `None`.
pub fn rooms<'a>(
    kind: Option<&str>,
    rooms: impl Iterator<Item = (&'a RoomName, usize)>,
    reference: Option<&RawValue>,
) -> String {
    let mut list = String::from("[");
    for (i, (room, members)) in rooms.enumerate() {
        if i > 0 {
            list.push(',');
        }
        let _ = write!(list, "{{\"room\":\"{room}\",\"members\":{members}}}");
    }
    list.push(']');
    match kind {
        Some(kind) => Frame::new(kind).raw("rooms", &list).finish(reference),
        None => format!("{{\"rooms\":{list}}}"),
    }
}

pub fn members<'a>(
    room: &RoomName,
    members: impl Iterator<Item = (SessionId, Option<&'a str>)>,
    reference: Option<&RawValue>,
) -> String {
    let mut list = String::from("[");
    for (i, (id, nick)) in members.enumerate() {
        if i > 0 {
            list.push(',');
        }
        let _ = write!(list, "{{\"id\":\"{id}\",\"nick\":");
        match nick {
            Some(nick) => push_json_str(&mut list, nick),
            None => list.push_str("null"),
        }
        list.push('}');
    }
    list.push(']');
    Frame::new("members").str("room", room.as_str()).raw("members", &list).finish(reference)
}

pub fn ok(seq: Option<u64>, reference: Option<&RawValue>) -> String {
    let frame = Frame::new("ok");
    match seq {
        Some(seq) => frame.num("seq", seq),
        None => frame,
    }
    .finish(reference)
}

pub fn pong(reference: Option<&RawValue>) -> String {
    Frame::new("pong").finish(reference)
}

pub fn error(code: ErrorCode, message: &str, reference: Option<&RawValue>) -> String {
    Frame::new("error").str("code", code.as_str()).str("message", message).finish(reference)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn parse(text: &str) -> Value {
        serde_json::from_str(text).expect("server frames are JSON")
    }

    fn err(text: &str) -> (ErrorCode, Option<String>) {
        let e = parse_request(text).expect_err("must be refused");
        (e.code, e.reference.map(|r| r.get().to_string()))
    }

    #[test]
    fn request_error_classes() {
        use ErrorCode::*;
        assert_eq!(err("{"), (BadJson, None));
        assert_eq!(err("hello"), (BadJson, None));
        assert_eq!(err("[1,2"), (BadJson, None));
        assert_eq!(err("{\"type\":\"ping\"} x"), (BadJson, None));
        assert_eq!(err("[\"join\", \"a\"]"), (BadRequest, None));
        assert_eq!(err("42"), (BadRequest, None));
        assert_eq!(err("{}"), (BadRequest, None));
        assert_eq!(err("{\"type\":5,\"ref\":1}"), (BadRequest, Some("1".into())));
        assert_eq!(err("{\"type\":\"ping\",\"ref\":1.5}"), (BadRequest, None));
        assert_eq!(err("{\"type\":\"dance\",\"ref\":\"r\"}"), (UnknownType, Some("\"r\"".into())));
        assert_eq!(err("{\"type\":\"join\",\"room\":\"bad room\",\"ref\":7}"), (BadRequest, Some("7".into())));
        assert_eq!(err("{\"type\":\"join\",\"room\":5}"), (BadRequest, None));
        assert_eq!(err("{\"type\":\"join\",\"room\":\"a\",\"history\":-1}"), (BadRequest, None));
        assert_eq!(err("{\"type\":\"join\",\"room\":\"a\",\"since\":1.5}"), (BadRequest, None));
        assert_eq!(err("{\"type\":\"publish\",\"room\":\"a\"}"), (BadRequest, None));
        assert_eq!(err("{\"type\":\"nick\",\"name\":\"\"}"), (BadRequest, None));
        assert_eq!(err("{\"type\":\"nick\",\"name\":\"a\\u0007b\"}"), (BadRequest, None));
        assert_eq!(err("{\"type\":\"nick\",\"name\":\"123456789012345678901234567890123\"}"), (BadRequest, None));
        assert_eq!(err("{\"type\":\"ping\",\"type\":\"ping\"}"), (BadRequest, None));
    }

    #[test]
    fn requests_that_parse() {
        let r = parse_request(r#"{"type":"publish","room":"a:b.c-d_e","body":null,"ref":"x","extra":[1]}"#).unwrap();
        assert_eq!(r.reference.as_deref().map(RawValue::get), Some("\"x\""));
        match r.kind {
            RequestKind::Publish { room, body } => {
                assert_eq!(room.as_str(), "a:b.c-d_e");
                assert_eq!(body.get(), "null");
            }
            other => panic!("{other:?}"),
        }
        let r = parse_request(r#" {"type":"join","room":"r","history":3,"since":null}"#).unwrap();
        assert!(matches!(r.kind, RequestKind::Join { history: Some(3), since: None, .. }));
        let r = parse_request(r#"{"type":"nick","name":"\u00e9l\u00e8ve 😀"}"#).unwrap();
        assert!(matches!(r.kind, RequestKind::Nick { ref name } if name == "élève 😀"));
        let r = parse_request(r#"{"type":"ping","ref":-12}"#).unwrap();
        assert_eq!(pong(r.reference.as_deref()), r#"{"type":"pong","ref":-12}"#);
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
    fn frames_are_valid_json() {
        let room = RoomName::parse("lobby").unwrap();
        let nick = "q\"u\\o\nte\u{1}</script>";
        let sender = sender_fields(SessionId(3), Some(nick));
        let m = message(&room, 7, &sender, 1_700_000_000_000, r#"{"a":[1,2]}"#);
        assert_eq!(
            parse(&m),
            json!({"type":"message","room":"lobby","seq":7,"from":"3","nick":nick,"ts":1_700_000_000_000u64,"body":{"a":[1,2]}})
        );
        let j = joined(&room, 2, [m.as_str(), m.as_str()].into_iter(), Some(true), None);
        assert_eq!(parse(&j)["history"][1]["seq"], 7);
        assert_eq!(parse(&j)["recovered"], true);
        let j = joined(&room, 1, std::iter::empty(), None, None);
        assert_eq!(parse(&j), json!({"type":"joined","room":"lobby","members":1,"history":[]}));
        let p = presence(&room, PresenceEvent::Leave, SessionId(9), None);
        assert_eq!(parse(&p), json!({"type":"presence","room":"lobby","event":"leave","id":"9","nick":null}));
        let e = error(ErrorCode::NotMember, "no", Some(&RawValue::from_string("5".into()).unwrap()));
        assert_eq!(parse(&e), json!({"type":"error","code":"not_member","message":"no","ref":5}));
        let ms = members(&room, [(SessionId(1), Some("a")), (SessionId(2), None)].into_iter(), None);
        assert_eq!(parse(&ms)["members"], json!([{"id":"1","nick":"a"},{"id":"2","nick":null}]));
        let rs = rooms(Some("rooms"), [(&room, 3usize)].into_iter(), None);
        assert_eq!(parse(&rs), json!({"type":"rooms","rooms":[{"room":"lobby","members":3}]}));
        assert_eq!(parse(&rooms(None, std::iter::empty(), None)), json!({"rooms":[]}));
        assert_eq!(parse(&ok(Some(4), None)), json!({"type":"ok","seq":4}));
        assert_eq!(parse(&welcome(SessionId(1), 5000, 10000))["server"], SERVER_NAME);
        assert_eq!(parse(&direct(&sender, "\"hi\""))["body"], "hi");
    }

    #[test]
    fn json_strings_round_trip() {
        for s in ["", "plain", "\"\\", "\u{0}\u{1f}\u{7f}", "é😀", "\u{2028}"] {
            let back: String = serde_json::from_str(&json_str(s)).unwrap();
            assert_eq!(back, s);
        }
    }

    #[test]
    fn raw_bodies() {
        let text = |json: &str| body_as_raw_text(&RawValue::from_string(json.into()).unwrap());
        assert_eq!(text("\"hi \\\"there\\\"\""), "hi \"there\"");
        assert_eq!(text("{\"a\": 1}"), "{\"a\": 1}");
        assert_eq!(text("12"), "12");
    }
}
