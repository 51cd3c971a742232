//! Server to client: every frame the server sends. Frames are written by
//! hand rather than through serde structs because `joined` embeds stored
//! `message` frames verbatim, and a `message` is built once per publish for
//! every recipient: both are string assembly around already-valid JSON.

use std::fmt::Write as _;

use serde_json::value::RawValue;

use super::{ErrorCode, RoomName, SERVER_NAME, SessionId, push_json_str};

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

    /// `"key":"text"` or `"key":null`.
    fn opt_str(self, key: &str, value: Option<&str>) -> Self {
        match value {
            Some(value) => self.str(key, value),
            None => self.raw(key, "null"),
        }
    }

    /// The `user` field, present only while authentication is on.
    fn user(self, user: User) -> Self {
        match user {
            Some(user) => self.opt_str("user", user),
            None => self,
        }
    }

    fn finish(mut self, reference: Option<&RawValue>) -> String {
        if let Some(reference) = reference {
            self.key("ref").push_str(reference.get());
        }
        self.0.push('}');
        self.0
    }
}

/// A session's `user` on the wire: `None` while authentication is off (no
/// field at all), `Some(None)` for an anonymous session (`null`).
pub type User<'a> = Option<Option<&'a str>>;

fn push_opt_str(out: &mut String, value: Option<&str>) {
    match value {
        Some(value) => push_json_str(out, value),
        None => out.push_str("null"),
    }
}

/// `"KEY":"ID","nick":NICK` (and `"user":USER` with authentication on): a
/// session as its messages (`from`) and member lists (`id`) name it.
fn push_identity(out: &mut String, key: &str, id: SessionId, nick: Option<&str>, user: User) {
    let _ = write!(out, "\"{key}\":\"{id}\",\"nick\":");
    push_opt_str(out, nick);
    if let Some(user) = user {
        out.push_str(",\"user\":");
        push_opt_str(out, user);
    }
}

/// `"from":ID,"nick":NICK` (and `"user":USER` with authentication on) for
/// a session, built when its nick changes and spliced into every `message`
/// and `direct` it sends.
pub fn sender_fields(id: SessionId, nick: Option<&str>, user: User) -> String {
    let mut out = String::new();
    push_identity(&mut out, "from", id, nick, user);
    out
}

/// The `sender_fields` of messages published through `/api`.
pub fn api_sender_fields(auth: bool) -> String {
    let user = if auth { ",\"user\":null" } else { "" };
    format!("\"from\":\"api\",\"nick\":null{user}")
}

pub fn welcome(id: SessionId, heartbeat_ms: u64, timeout_ms: u64, user: User) -> String {
    Frame::new("welcome")
        .str("id", &id.to_string())
        .num("heartbeat_ms", heartbeat_ms)
        .num("timeout_ms", timeout_ms)
        .str("server", SERVER_NAME)
        .user(user)
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

/// A `message` frame in two parts, before and after its `seq`, for when the
/// `seq` is given elsewhere (by Redis, in a cluster): `head`, the `seq` in
/// decimal, then `tail` make the same bytes as [`message`].
pub fn message_parts(room: &RoomName, sender: &str, ts_ms: u64, body: &str) -> (String, String) {
    let head = format!("{{\"type\":\"message\",\"room\":\"{room}\",\"seq\":");
    let mut tail = String::with_capacity(16 + sender.len() + body.len());
    let _ = write!(tail, ",{sender},\"ts\":{ts_ms},\"body\":{body}}}");
    (head, tail)
}

/// A `message` frame whose body is raw text, in parts: `head` (up to the
/// `seq`) and `fields` (after it, up to `"body":`). The frame is `head`, the
/// `seq`, `fields`, the text as a JSON string and `}` ([`message_of_text`]).
pub fn message_text_parts(room: &RoomName, sender: &str, ts_ms: u64) -> (String, String) {
    let head = format!("{{\"type\":\"message\",\"room\":\"{room}\",\"seq\":");
    (head, format!(",{sender},\"ts\":{ts_ms},\"body\":"))
}

/// The frame of [`message_text_parts`].
pub fn message_of_text(head: &str, seq: u64, fields: &str, text: &str) -> String {
    let mut out = String::with_capacity(head.len() + 20 + fields.len() + text.len() + 3);
    let _ = write!(out, "{head}{seq}{fields}");
    push_json_str(&mut out, text);
    out.push('}');
    out
}

/// A `joined` reply; `history` are stored `message` frames, oldest first.
pub fn joined<'a>(
    room: &RoomName,
    members: usize,
    epoch: &str,
    history: impl Iterator<Item = &'a str>,
    recovered: Option<bool>,
    reference: Option<&RawValue>,
) -> String {
    let mut frame = Frame::new("joined").str("room", room.as_str()).num("members", members as u64).str("epoch", epoch);
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

/// A `left` the session did not ask for: an `auth` refresh took its grant
/// for the room away.
pub fn left_revoked(room: &RoomName) -> String {
    Frame::new("left").str("room", room.as_str()).str("reason", "revoked").finish(None)
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

pub fn presence(room: &RoomName, event: PresenceEvent, id: SessionId, nick: Option<&str>, user: User) -> String {
    let event = match event {
        PresenceEvent::Join => "join",
        PresenceEvent::Leave => "leave",
    };
    Frame::new("presence")
        .str("room", room.as_str())
        .str("event", event)
        .str("id", &id.to_string())
        .opt_str("nick", nick)
        .user(user)
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

/// One entry of a `members` list: `{"id":..,"nick":..}`, with `"user"`
/// while authentication is on. A `presence` event is the same fields after
/// its `room` and `event`.
pub fn member_entry(id: SessionId, nick: Option<&str>, user: User) -> String {
    let mut entry = String::from("{");
    push_identity(&mut entry, "id", id, nick, user);
    entry.push('}');
    entry
}

pub fn members<'a>(
    room: &RoomName,
    members: impl Iterator<Item = (SessionId, Option<&'a str>, User<'a>)>,
    reference: Option<&RawValue>,
) -> String {
    let entries: Vec<String> = members.map(|(id, nick, user)| member_entry(id, nick, user)).collect();
    members_of_entries(room, entries.iter().map(String::as_str), reference)
}

/// A `members` reply from ready [`member_entry`]s (as a cluster keeps them).
pub fn members_of_entries<'a>(
    room: &RoomName,
    entries: impl Iterator<Item = &'a str>,
    reference: Option<&RawValue>,
) -> String {
    let mut list = String::from("[");
    for (i, entry) in entries.enumerate() {
        if i > 0 {
            list.push(',');
        }
        list.push_str(entry);
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

    #[test]
    fn frames_are_valid_json() {
        let room = RoomName::parse("lobby").unwrap();
        let nick = "q\"u\\o\nte\u{1}</script>";
        let sender = sender_fields(SessionId(3), Some(nick), None);
        let m = message(&room, 7, &sender, 1_700_000_000_000, r#"{"a":[1,2]}"#);
        assert_eq!(
            parse(&m),
            json!({"type":"message","room":"lobby","seq":7,"from":"3","nick":nick,"ts":1_700_000_000_000u64,"body":{"a":[1,2]}})
        );
        let (head, tail) = message_parts(&room, &sender, 1_700_000_000_000, r#"{"a":[1,2]}"#);
        assert_eq!(format!("{head}7{tail}"), m, "the same bytes, whoever gives the seq");
        let j = joined(&room, 2, "e1", [m.as_str(), m.as_str()].into_iter(), Some(true), None);
        assert_eq!(parse(&j)["history"][1]["seq"], 7);
        assert_eq!(parse(&j)["recovered"], true);
        let j = joined(&room, 1, "e2", std::iter::empty(), None, None);
        assert_eq!(parse(&j), json!({"type":"joined","room":"lobby","members":1,"epoch":"e2","history":[]}));
        let p = presence(&room, PresenceEvent::Leave, SessionId(9), None, None);
        assert_eq!(parse(&p), json!({"type":"presence","room":"lobby","event":"leave","id":"9","nick":null}));
        let p = presence(&room, PresenceEvent::Join, SessionId(9), None, Some(Some("u\"1")));
        assert_eq!(parse(&p)["user"], "u\"1");
        let with_user = sender_fields(SessionId(3), None, Some(None));
        assert_eq!(
            parse(&direct(&with_user, "1")),
            json!({"type":"direct","from":"3","nick":null,"user":null,"body":1})
        );
        assert_eq!(parse(&format!("{{{}}}", api_sender_fields(true)))["user"], Value::Null);
        assert!(parse(&format!("{{{}}}", api_sender_fields(false))).get("user").is_none());
        let e = error(ErrorCode::NotMember, "no", Some(&RawValue::from_string("5".into()).unwrap()));
        assert_eq!(parse(&e), json!({"type":"error","code":"not_member","message":"no","ref":5}));
        let ms = members(&room, [(SessionId(1), Some("a"), None), (SessionId(2), None, None)].into_iter(), None);
        assert_eq!(parse(&ms)["members"], json!([{"id":"1","nick":"a"},{"id":"2","nick":null}]));
        let ms = members(
            &room,
            [(SessionId(1), None, Some(Some("ann"))), (SessionId(2), None, Some(None))].into_iter(),
            None,
        );
        assert_eq!(
            parse(&ms)["members"],
            json!([{"id":"1","nick":null,"user":"ann"},{"id":"2","nick":null,"user":null}])
        );
        let rs = rooms(Some("rooms"), [(&room, 3usize)].into_iter(), None);
        assert_eq!(parse(&rs), json!({"type":"rooms","rooms":[{"room":"lobby","members":3}]}));
        assert_eq!(parse(&rooms(None, std::iter::empty(), None)), json!({"rooms":[]}));
        assert_eq!(parse(&ok(Some(4), None)), json!({"type":"ok","seq":4}));
        assert_eq!(parse(&welcome(SessionId(1), 5000, 10000, None))["server"], SERVER_NAME);
        assert!(parse(&welcome(SessionId(1), 5000, 10000, None)).get("user").is_none());
        assert_eq!(parse(&welcome(SessionId(1), 5000, 10000, Some(Some("ann"))))["user"], "ann");
        assert_eq!(parse(&direct(&sender, "\"hi\""))["body"], "hi");
    }
}
