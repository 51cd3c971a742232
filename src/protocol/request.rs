//! Client to server: the requests of the JSON room protocol.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{
    ErrorCode, MAX_BODY_DEPTH, Poison, PublishId, RoomName, as_string, check_poison, is_integer, is_string, quoted,
    validate_nick,
};

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
    /// `epoch` is the room's epoch the client's `since` belongs to.
    Join {
        room: RoomName,
        history: Option<u64>,
        since: Option<u64>,
        epoch: Option<String>,
        /// A room token (`auth.md`), checked by the session.
        token: Option<String>,
    },
    Leave {
        room: RoomName,
    },
    Publish {
        room: RoomName,
        body: Box<RawValue>,
        /// The idempotency key: the room publishes each once.
        id: Option<PublishId>,
    },
    Direct {
        to: String,
        body: Box<RawValue>,
    },
    Nick {
        name: String,
    },
    Rooms,
    Members {
        room: RoomName,
    },
    Ping,
    /// A fresh connection token (`auth.md`), checked by the session.
    Auth {
        token: String,
    },
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
        super::frame::error(self.code, &self.message, self.reference.as_deref())
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
    epoch: Field<'a>,
    #[serde(borrow, default)]
    body: Field<'a>,
    #[serde(borrow, default)]
    to: Field<'a>,
    #[serde(borrow, default)]
    name: Field<'a>,
    #[serde(borrow, default)]
    token: Field<'a>,
    #[serde(borrow, default)]
    id: Field<'a>,
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
    // The body sits one level inside the request object.
    let poison = check_poison(text, MAX_BODY_DEPTH + 1).err();
    if poison == Some(Poison::LoneSurrogate) {
        let message = format!("frame is not valid JSON: {}", Poison::LoneSurrogate.describe());
        return Err(RequestError::new(BadJson, message, None));
    }
    let reference = match fields.reference.0 {
        None => None,
        Some(raw) if is_string(raw) || is_integer(raw) => Some(raw.to_owned()),
        Some(_) => {
            return Err(RequestError::new(BadRequest, "`ref` must be a string or an integer", None));
        }
    };
    let bad = |message: String| Err(RequestError::new(BadRequest, message, reference.clone()));
    if poison == Some(Poison::TooDeep) {
        return bad(format!("the request is {}", Poison::TooDeep.describe()));
    }
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
                epoch: match fields.epoch.0 {
                    None => None,
                    Some(raw) if raw.get() == "null" => None,
                    Some(raw) => Some(as_string(raw).ok_or("`epoch` must be a string")?.into_owned()),
                },
                token: match fields.token.0 {
                    None => None,
                    Some(raw) if raw.get() == "null" => None,
                    Some(raw) => Some(as_string(raw).ok_or("`token` must be a string")?.into_owned()),
                },
            },
            "leave" => RequestKind::Leave { room: room()? },
            "publish" => RequestKind::Publish {
                room: room()?,
                body: body()?,
                id: match fields.id.0 {
                    None => None,
                    Some(raw) if raw.get() == "null" => None,
                    Some(raw) => {
                        let id = as_string(raw).ok_or("`id` must be a string of 1 to 64 bytes")?;
                        Some(PublishId::parse(&id).map_err(|why| format!("`id`: {why}"))?)
                    }
                },
            },
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
            "auth" => RequestKind::Auth {
                token: fields.token.0.and_then(as_string).ok_or("`token` must be a string")?.into_owned(),
            },
            _ => return Err(String::new()),
        })
    })();
    match parsed {
        Ok(kind) => Ok(Request { reference, kind }),
        Err(message) if message.is_empty() => {
            Err(RequestError::new(UnknownType, format!("unknown type {}", quoted(&kind)), reference))
        }
        Err(message) => bad(message),
    }
}

/// Requests as clients build them (`roomcast client`, `roomcast load`).
/// Refs are integers; bodies are JSON text.
pub mod build {
    use std::fmt::Write as _;

    use super::super::push_json_str;

    fn request(kind: &str, fields: &[(&str, Field)], reference: Option<u64>) -> String {
        let mut out = format!("{{\"type\":\"{kind}\"");
        for (key, value) in fields {
            let _ = write!(out, ",\"{key}\":");
            match value {
                Field::Str(text) => push_json_str(&mut out, text),
                Field::Num(n) => {
                    let _ = write!(out, "{n}");
                }
                Field::Json(json) => out.push_str(json),
            }
        }
        if let Some(reference) = reference {
            let _ = write!(out, ",\"ref\":{reference}");
        }
        out.push('}');
        out
    }

    enum Field<'a> {
        Str(&'a str),
        Num(u64),
        Json(&'a str),
    }

    /// `since` with the room's epoch it belongs to, when the client has it.
    pub fn join(
        room: &str,
        history: Option<u64>,
        since: Option<(u64, Option<&str>)>,
        reference: Option<u64>,
    ) -> String {
        let mut fields = vec![("room", Field::Str(room))];
        fields.extend(history.map(|h| ("history", Field::Num(h))));
        if let Some((since, epoch)) = since {
            fields.push(("since", Field::Num(since)));
            fields.extend(epoch.map(|e| ("epoch", Field::Str(e))));
        }
        request("join", &fields, reference)
    }

    pub fn leave(room: &str, reference: Option<u64>) -> String {
        request("leave", &[("room", Field::Str(room))], reference)
    }

    /// `body` is JSON text.
    pub fn publish(room: &str, body: &str, reference: Option<u64>) -> String {
        request("publish", &[("room", Field::Str(room)), ("body", Field::Json(body))], reference)
    }

    /// A publish with its idempotency key `id`: sent again, it appears once.
    pub fn publish_once(room: &str, body: &str, id: &str, reference: Option<u64>) -> String {
        let fields = [("room", Field::Str(room)), ("body", Field::Json(body)), ("id", Field::Str(id))];
        request("publish", &fields, reference)
    }

    /// `body` is JSON text.
    pub fn direct(to: &str, body: &str, reference: Option<u64>) -> String {
        request("direct", &[("to", Field::Str(to)), ("body", Field::Json(body))], reference)
    }

    pub fn nick(name: &str, reference: Option<u64>) -> String {
        request("nick", &[("name", Field::Str(name))], reference)
    }

    pub fn rooms(reference: Option<u64>) -> String {
        request("rooms", &[], reference)
    }

    pub fn members(room: &str, reference: Option<u64>) -> String {
        request("members", &[("room", Field::Str(room))], reference)
    }

    pub fn ping(reference: Option<u64>) -> String {
        request("ping", &[], reference)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_requests_parse_back() {
        let cases = [
            build::join("r", Some(5), Some((9, Some("e1"))), Some(1)),
            build::join("r", None, Some((9, None)), None),
            build::join("r", None, None, None),
            build::leave("r", Some(2)),
            build::publish("r", "{\"a\":[1]}", Some(3)),
            build::direct("7", "\"x\"", None),
            build::nick("quo\"te", None),
            build::rooms(None),
            build::members("r", Some(4)),
            build::ping(Some(5)),
        ];
        for text in cases {
            let request = parse_request(&text).unwrap_or_else(|e| panic!("{text}: {e:?}"));
            if let RequestKind::Nick { name } = &request.kind {
                assert_eq!(name, "quo\"te");
            }
        }
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
        assert_eq!(err(r#"{"type":"publish","room":"a","body":"\ud800"}"#), (BadJson, None));
        assert_eq!(err(r#"{"type":"ping","ref":"\udc00"}"#), (BadJson, None));
        let nested = |n: usize| format!(r#"{{"type":"publish","room":"a","body":{}{}}}"#, "[".repeat(n), "]".repeat(n));
        assert!(parse_request(&nested(64)).is_ok());
        assert_eq!(err(&nested(65)), (BadRequest, None));
        assert_eq!(err(&nested(10_000)), (BadRequest, None));
    }

    #[test]
    fn requests_that_parse() {
        let r = parse_request(r#"{"type":"publish","room":"a:b.c-d_e","body":null,"ref":"x","extra":[1]}"#).unwrap();
        assert_eq!(r.reference.as_deref().map(RawValue::get), Some("\"x\""));
        match r.kind {
            RequestKind::Publish { room, body, id } => {
                assert_eq!(room.as_str(), "a:b.c-d_e");
                assert_eq!(body.get(), "null");
                assert_eq!(id, None);
            }
            other => panic!("{other:?}"),
        }
        let r = parse_request(r#"{"type":"publish","room":"a","body":1,"id":"k-1"}"#).unwrap();
        assert!(matches!(r.kind, RequestKind::Publish { id: Some(ref id), .. } if id.as_str() == "k-1"));
        for bad in ["\"\"".to_string(), "7".to_string(), format!("\"{}\"", "x".repeat(65))] {
            let text = format!(r#"{{"type":"publish","room":"a","body":1,"id":{bad}}}"#);
            assert!(parse_request(&text).is_err_and(|e| e.code == ErrorCode::BadRequest), "{text}");
        }
        let r = parse_request(r#" {"type":"join","room":"r","history":3,"since":null}"#).unwrap();
        assert!(matches!(r.kind, RequestKind::Join { history: Some(3), since: None, epoch: None, .. }));
        let r = parse_request(r#"{"type":"join","room":"r","since":4,"epoch":"a1b2"}"#).unwrap();
        assert!(matches!(r.kind, RequestKind::Join { since: Some(4), epoch: Some(ref e), .. } if e == "a1b2"));
        assert!(parse_request(r#"{"type":"join","room":"r","since":4,"epoch":7}"#).is_err());
        let r = parse_request(r#"{"type":"join","room":"r","token":"a.b.c"}"#).unwrap();
        assert!(matches!(r.kind, RequestKind::Join { token: Some(ref t), .. } if t == "a.b.c"));
        assert!(parse_request(r#"{"type":"join","room":"r","token":5}"#).is_err());
        let r = parse_request(r#"{"type":"auth","token":"x.y.z","ref":1}"#).unwrap();
        assert!(matches!(r.kind, RequestKind::Auth { ref token } if token == "x.y.z"));
        assert!(parse_request(r#"{"type":"auth"}"#).is_err());
        let r = parse_request(r#"{"type":"nick","name":"\u00e9l\u00e8ve 😀"}"#).unwrap();
        assert!(matches!(r.kind, RequestKind::Nick { ref name } if name == "élève 😀"));
        let r = parse_request(r#"{"type":"ping","ref":-12}"#).unwrap();
        assert_eq!(super::super::frame::pong(r.reference.as_deref()), r#"{"type":"pong","ref":-12}"#);
    }
}
