//! The room rules as one in-process suite, run against both brokers: the
//! hub (the registry actor) with the memory broker, and with Redis (a real
//! `redis-server`). Sessions are bare outbox handles, so every rule is
//! checked on the hub alone, with no socket in between; where time matters
//! (empty_ttl), the memory broker runs on a paused clock.

mod common;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix::{Actor, Addr};
use futures_util::StreamExt;
use roomcast::Settings;
use roomcast::broker::Shared;
use roomcast::broker::memory::MemoryBroker;
use roomcast::broker::redis::{RedisBroker, start_io_thread};
use roomcast::metrics::Metrics;
use roomcast::outbox::{OutFrame, OutboundLimits, SessionHandle, Signals};
use roomcast::protocol::SessionId;
use roomcast::protocol::request::parse_request;
use roomcast::registry::messages::{Command, Connect};
use roomcast::registry::{Limits, Registry};
use serde_json::{Value, json};

/// A hub with its broker, and (for Redis) what keeps it alive.
struct Hub {
    registry: Addr<Registry>,
    next_id: Arc<AtomicU64>,
    redis: Option<common::Redis>,
}

/// The settings every rule runs with, and `extra` (`ROOMCAST_*` names).
fn settings(extra: &[(&str, &str)]) -> Settings {
    let mut env: HashMap<String, String> = HashMap::new();
    for (key, value) in extra {
        env.insert(key.to_string(), value.to_string());
    }
    Settings::load_from(None, Some(env), &[]).expect("valid settings")
}

impl Hub {
    async fn start(redis: bool, extra: &[(&str, &str)]) -> Hub {
        let redis = redis.then(common::Redis::start);
        let mut all: Vec<(&str, &str)> = extra.to_vec();
        let url = redis.as_ref().map(|redis| redis.url());
        if let Some(url) = &url {
            all.extend([("ROOMCAST_CLUSTER__REDIS", url.as_str()), ("ROOMCAST_CLUSTER__NODE_TIMEOUT", "1s")]);
        }
        let settings = settings(&all);
        let metrics = Arc::new(Metrics::default());
        let next_id = Arc::new(AtomicU64::new(if redis.is_some() { 0 } else { 1 }));
        let limits = Limits::new(&settings);
        let broker: Box<dyn Shared> = match &redis {
            Some(redis) => {
                let io = start_io_thread().expect("a Redis thread");
                let (cluster, client) = (settings.cluster.clone(), redis.client());
                Box::new(RedisBroker::start(cluster, client, next_id.clone(), io, metrics.clone()))
            }
            None => Box::new(MemoryBroker::new(limits.history, metrics.clone())),
        };
        let registry = Registry::new(limits, metrics, broker).start();
        let hub = Hub { registry, next_id, redis };
        // A cluster node hands out ids once Redis gave it its number.
        while hub.next_id.load(Ordering::Acquire) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        hub
    }

    /// Waits until Redis has forgotten `room`: its keys expired at the end
    /// of empty_ttl, on Redis's clock (Redis says so on its keyspace
    /// event channel).
    async fn forgotten_in_redis(&self, room: &str) {
        let Some(redis) = &self.redis else {
            return;
        };
        let room = roomcast::protocol::RoomName::parse(room).expect("a room name");
        let meta = roomcast::broker::redis::keys::RoomKeys::new("roomcast", &room).meta;
        let mut connection = redis.connection().await;
        let mut notify = redis::cmd("CONFIG");
        notify.arg("SET").arg("notify-keyspace-events").arg("Ex");
        let () = notify.query_async(&mut connection).await.expect("CONFIG SET");
        let mut expired = redis.subscribed(&["__keyevent@0__:expired"]).await;
        let exists: bool = redis::cmd("EXISTS").arg(&meta).query_async(&mut connection).await.expect("EXISTS");
        if !exists {
            return;
        }
        let mut events = expired.on_message();
        while common::next_payload(&mut events).await != meta {}
    }

    async fn session(&self) -> Session {
        let id = SessionId(self.next_id.fetch_add(1, Ordering::AcqRel));
        let limits = OutboundLimits { frames: 10_000, bytes: 1 << 24, stall_ms: 60_000 };
        let handle = SessionHandle::new(id, limits, None);
        self.registry.send(Connect { handle: handle.clone(), identity: None }).await.expect("the hub answers");
        let signals = handle.signals();
        Session { id, handle, signals, frames: VecDeque::new(), registry: self.registry.clone() }
    }
}

struct Session {
    id: SessionId,
    handle: SessionHandle,
    signals: Signals,
    frames: VecDeque<OutFrame>,
    registry: Addr<Registry>,
}

impl Session {
    fn send(&self, request: Value) {
        let request = parse_request(&request.to_string()).expect("a valid request");
        let ticket = self.handle.in_flight(0);
        self.registry.do_send(Command { id: self.id, request, grant: None, ticket });
    }

    /// The next frame the hub queued for this session.
    async fn next(&mut self) -> Value {
        loop {
            if let Some(frame) = self.frames.pop_front() {
                let OutFrame::Text(text) = frame else {
                    continue;
                };
                return serde_json::from_str(&text).expect("JSON");
            }
            let _ = self.handle.take_frames(&mut self.frames, usize::MAX);
            if self.frames.is_empty() {
                tokio::time::timeout(common::DEADLINE, self.signals.next()).await.expect("a frame in time");
            }
        }
    }

    async fn expect(&mut self, kind: &str) -> Value {
        loop {
            let frame = self.next().await;
            if frame["type"] == kind {
                return frame;
            }
        }
    }

    async fn request(&mut self, mut request: Value) -> Value {
        request["ref"] = json!("r");
        self.send(request);
        loop {
            let frame = self.next().await;
            if frame["ref"] == "r" {
                return frame;
            }
        }
    }

    fn wire_id(&self) -> String {
        self.id.to_string()
    }
}

async fn presence_and_members(redis: bool) {
    let hub = Hub::start(redis, &[]).await;
    let (mut a, mut b) = (hub.session().await, hub.session().await);
    assert_eq!(a.request(json!({"type": "join", "room": "r"})).await["members"], 1);
    assert_eq!(b.request(json!({"type": "join", "room": "r"})).await["members"], 2);
    let joined = a.expect("presence").await;
    assert_eq!((joined["event"].as_str(), joined["id"].as_str()), (Some("join"), Some(b.wire_id().as_str())));
    let members = a.request(json!({"type": "members", "room": "r"})).await;
    let ids: Vec<&str> = members["members"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    let mut expected = [a.wire_id(), b.wire_id()];
    expected.sort_by_key(|id| id.parse::<u64>().unwrap());
    assert_eq!(ids, expected, "by session id");
    assert_eq!(b.request(json!({"type": "leave", "room": "r"})).await["type"], "left");
    let left = a.expect("presence").await;
    assert_eq!((left["event"].as_str(), left["id"].as_str()), (Some("leave"), Some(b.wire_id().as_str())));
    let rooms = b.request(json!({"type": "rooms"})).await;
    assert_eq!(rooms["rooms"], json!([{"room": "r", "members": 1}]));
}

async fn publish_order_and_history(redis: bool) {
    let hub = Hub::start(redis, &[("ROOMCAST_ROOMS__HISTORY", "3")]).await;
    let (mut a, mut b) = (hub.session().await, hub.session().await);
    a.request(json!({"type": "join", "room": "r"})).await;
    b.request(json!({"type": "join", "room": "r"})).await;
    a.expect("presence").await;
    for n in 1..=5u64 {
        a.send(json!({"type": "publish", "room": "r", "body": n, "ref": n}));
        let message = a.next().await;
        assert_eq!((message["type"].as_str(), message["seq"].as_u64()), (Some("message"), Some(n)), "{message}");
        let ok = a.next().await;
        assert_eq!((ok["type"].as_str(), ok["seq"].as_u64()), (Some("ok"), Some(n)), "the message, then its ok");
        assert_eq!(b.expect("message").await["body"], n);
    }
    let mut c = hub.session().await;
    let joined = c.request(json!({"type": "join", "room": "r", "history": 10})).await;
    let seqs: Vec<u64> = joined["history"].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [3, 4, 5], "rooms.history");
    let epoch = joined["epoch"].as_str().unwrap().to_string();
    let mut d = hub.session().await;
    let since = d.request(json!({"type": "join", "room": "r", "since": 3, "epoch": epoch})).await;
    assert_eq!((since["recovered"].as_bool(), since["history"].as_array().map(Vec::len)), (Some(true), Some(2)));
    let mut e = hub.session().await;
    let lost = e.request(json!({"type": "join", "room": "r", "since": 1, "epoch": epoch})).await;
    assert_eq!(lost["recovered"], false, "seq 2 is gone from history");
    let other = e.request(json!({"type": "join", "room": "r", "since": 4, "epoch": "another"})).await;
    assert_eq!(other["recovered"], false, "another epoch");
}

async fn history_bytes_bind(redis: bool) {
    let hub = Hub::start(redis, &[("ROOMCAST_ROOMS__HISTORY_BYTES", "1000")]).await;
    let mut a = hub.session().await;
    a.request(json!({"type": "join", "room": "r"})).await;
    let body = "x".repeat(300);
    for _ in 0..6 {
        a.request(json!({"type": "publish", "room": "r", "body": body})).await;
    }
    let mut b = hub.session().await;
    let joined = b.request(json!({"type": "join", "room": "r", "history": 100})).await;
    let kept: usize = joined["history"].as_array().unwrap().iter().map(|m| m.to_string().len()).sum();
    assert!(kept <= 1000 && kept > 300, "{kept} bytes of history kept");
    assert_eq!(joined["history"].as_array().map(Vec::len), Some(2));
}

async fn limits(redis: bool) {
    let extra = [("ROOMCAST_LIMITS__MAX_MEMBERS_PER_ROOM", "2"), ("ROOMCAST_ROOMS__MAX_ROOMS", "2")];
    let hub = Hub::start(redis, &extra).await;
    let (mut a, mut b, mut c) = (hub.session().await, hub.session().await, hub.session().await);
    a.request(json!({"type": "join", "room": "one"})).await;
    b.request(json!({"type": "join", "room": "one"})).await;
    assert_eq!(c.request(json!({"type": "join", "room": "one"})).await["code"], "room_full");
    c.request(json!({"type": "join", "room": "two"})).await;
    c.request(json!({"type": "leave", "room": "two"})).await;
    let refused = c.request(json!({"type": "join", "room": "three"})).await;
    assert_eq!(refused["code"], "too_many_rooms", "an empty room within empty_ttl still counts");
    let again = c.request(json!({"type": "publish", "room": "one", "body": 1, "id": "k"})).await;
    assert_eq!(again["code"], "not_member");
    a.request(json!({"type": "publish", "room": "one", "body": 1, "id": "k"})).await;
    let repeated = a.request(json!({"type": "publish", "room": "one", "body": 1, "id": "k"})).await;
    assert_eq!((repeated["type"].as_str(), repeated["seq"].as_u64()), (Some("ok"), Some(1)), "published once");
}

#[actix::test]
async fn presence_and_members_with_the_memory_broker() {
    presence_and_members(false).await;
}

#[actix::test]
#[cfg_attr(skip_redis, ignore = "redis-server is missing and SKIP_MISSING_TOOLS=1")]
async fn presence_and_members_with_redis() {
    presence_and_members(true).await;
}

#[actix::test]
async fn publish_order_and_history_with_the_memory_broker() {
    publish_order_and_history(false).await;
}

#[actix::test]
#[cfg_attr(skip_redis, ignore = "redis-server is missing and SKIP_MISSING_TOOLS=1")]
async fn publish_order_and_history_with_redis() {
    publish_order_and_history(true).await;
}

#[actix::test]
async fn history_bytes_bind_with_the_memory_broker() {
    history_bytes_bind(false).await;
}

#[actix::test]
#[cfg_attr(skip_redis, ignore = "redis-server is missing and SKIP_MISSING_TOOLS=1")]
async fn history_bytes_bind_with_redis() {
    history_bytes_bind(true).await;
}

#[actix::test]
async fn limits_with_the_memory_broker() {
    limits(false).await;
}

#[actix::test]
#[cfg_attr(skip_redis, ignore = "redis-server is missing and SKIP_MISSING_TOOLS=1")]
async fn limits_with_redis() {
    limits(true).await;
}

/// An emptied room is forgotten after empty_ttl: a join then finds a new
/// epoch. On one process on a paused clock; Redis keeps its own clock.
async fn empty_ttl(redis: bool) {
    let hub = Hub::start(redis, &[("ROOMCAST_ROOMS__EMPTY_TTL", "2s")]).await;
    let mut a = hub.session().await;
    let first = a.request(json!({"type": "join", "room": "r"})).await["epoch"].clone();
    a.request(json!({"type": "publish", "room": "r", "body": 1})).await;
    a.request(json!({"type": "leave", "room": "r"})).await;
    let kept = a.request(json!({"type": "join", "room": "r", "history": 5})).await;
    assert_eq!((kept["epoch"].clone(), kept["history"].as_array().map(Vec::len)), (first.clone(), Some(1)));
    a.request(json!({"type": "leave", "room": "r"})).await;
    if redis {
        hub.forgotten_in_redis("r").await;
    } else {
        tokio::time::pause();
        tokio::time::advance(Duration::from_millis(2001)).await;
        tokio::time::resume();
    }
    let fresh = a.request(json!({"type": "join", "room": "r", "history": 5})).await;
    assert_ne!(fresh["epoch"], first, "forgotten: a new epoch");
    assert_eq!(fresh["history"].as_array().map(Vec::len), Some(0));
}

#[actix::test]
async fn empty_ttl_with_the_memory_broker() {
    empty_ttl(false).await;
}

#[actix::test]
#[cfg_attr(skip_redis, ignore = "redis-server is missing and SKIP_MISSING_TOOLS=1")]
async fn empty_ttl_with_redis() {
    empty_ttl(true).await;
}
