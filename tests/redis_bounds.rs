//! What one client can make Redis hold, against a cluster of real nodes on
//! a real `redis-server`: bounded in bytes by the settings that bound one
//! process (`rooms.history_bytes`, `rooms.max_rooms` with empty rooms and
//! API publishes, `rooms.publish_ids`), every key of an empty room
//! expiring, raw text kept as it came, and a Redis that refuses writes
//! showing in `/healthz` and the metrics. The room rules run against one
//! process too: a drift between the two is a bug.

mod common;

use std::time::Duration;

use common::{Client, Deployment, Redis, Server};
use serde_json::{Value, json};

const API_KEY: &str = "api-key";

async fn api_publish(server: &Server, room: &str, body: &Value) -> reqwest::StatusCode {
    common::api_publish(server, API_KEY, room, body, None).await.status()
}

/// Redis's `INFO memory` field `field`.
async fn redis_info(redis: &Redis, field: &str) -> u64 {
    let mut conn = redis.connection().await;
    let info: String = redis::cmd("INFO").arg("memory").query_async(&mut conn).await.unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in INFO memory"))
}

async fn history_bytes_bind_alike(cluster: bool) {
    let deployment = Deployment::start(
        cluster,
        &[("ROOMCAST_ROOMS__HISTORY_BYTES", "262144"), ("ROOMCAST_LIMITS__OUTBOUND_BYTES", "4MiB")],
    );
    let mut writer = Client::json(deployment.at(0)).await;
    writer.join("big").await;
    let body = "x".repeat(8000);
    for _ in 0..100 {
        let ok = writer.request(json!({"type": "publish", "room": "big", "body": body})).await;
        assert_eq!(ok["type"], "ok", "{ok}");
    }
    let mut joiner = Client::json(deployment.at(1)).await;
    let joined = joiner.request(json!({"type": "join", "room": "big", "history": 50})).await;
    let history = joined["history"].as_array().expect("history");
    let bytes: usize = history.iter().map(|message| message.to_string().len()).sum();
    assert!(bytes <= 262_144, "{} messages, {bytes} bytes of history", history.len());
    assert!(bytes > 262_144 - 8200, "as much as fits: {bytes} bytes");
    assert_eq!(history.last().unwrap()["seq"], 100, "the newest");
}

#[tokio::test]
async fn history_bytes_bind_on_one_process() {
    history_bytes_bind_alike(false).await;
}

#[tokio::test]
#[cfg_attr(skip_redis, ignore = "redis-server is missing and SKIP_MISSING_TOOLS=1")]
async fn history_bytes_bind_on_a_cluster() {
    history_bytes_bind_alike(true).await;
}

/// max_rooms counts every room held: with members, emptied (for
/// empty_ttl), and made by an API publish, on every node.
async fn max_rooms_counts_every_room_held(cluster: bool) {
    let deployment = Deployment::start(
        cluster,
        &[("ROOMCAST_ROOMS__MAX_ROOMS", "3"), ("ROOMCAST_API__KEY", API_KEY), ("ROOMCAST_ROOMS__EMPTY_TTL", "1m")],
    );
    let mut ann = Client::json(deployment.at(0)).await;
    let mut bob = Client::json(deployment.at(1)).await;
    ann.join("left-empty").await;
    assert_eq!(ann.request(json!({"type": "leave", "room": "left-empty"})).await["type"], "left");
    bob.join("occupied").await;
    assert_eq!(api_publish(deployment.at(0), "api-made", &json!("x")).await, 200);
    for (client, room) in [(&mut ann, "fourth"), (&mut bob, "fifth")] {
        let refused = client.request(json!({"type": "join", "room": room})).await;
        assert_eq!(refused["code"], "too_many_rooms", "{refused}");
    }
    assert_eq!(api_publish(deployment.at(1), "sixth", &json!("x")).await, 503);
    let refused =
        Client::try_connect(&deployment.at(1).url("/ws/seventh"), &[]).await.err().map(common::refused_status);
    assert_eq!(refused, Some(503), "a raw connection to a new room");
    // The rooms held take members again.
    for room in ["left-empty", "api-made", "occupied"] {
        assert_eq!(ann.join(room).await["type"], "joined");
    }
}

#[tokio::test]
async fn max_rooms_counts_every_room_held_on_one_process() {
    max_rooms_counts_every_room_held(false).await;
}

#[tokio::test]
#[cfg_attr(skip_redis, ignore = "redis-server is missing and SKIP_MISSING_TOOLS=1")]
async fn max_rooms_counts_every_room_held_on_a_cluster() {
    max_rooms_counts_every_room_held(true).await;
}

/// Every key Redis holds for rooms: a room with members keeps its keys,
/// any other key of a room expires.
#[tokio::test]
#[cfg_attr(skip_redis, ignore = "redis-server is missing and SKIP_MISSING_TOOLS=1")]
async fn every_key_of_a_room_nobody_is_in_expires() {
    let deployment = Deployment::start(true, &[("ROOMCAST_API__KEY", API_KEY), ("ROOMCAST_ROOMS__EMPTY_TTL", "1m")]);
    let redis = deployment.redis().unwrap();
    assert_eq!(api_publish(deployment.at(0), "only-api", &json!("x")).await, 200);
    let mut ann = Client::json(deployment.at(1)).await;
    ann.join("was-used").await;
    ann.request(json!({"type": "publish", "room": "was-used", "body": 1, "id": "k"})).await;
    ann.join("still-used").await;
    ann.request(json!({"type": "publish", "room": "still-used", "body": 1})).await;
    // The leave's script has run once its presence event is out.
    let mut channel = redis.subscribed(&["test:{was-used}:messages"]).await;
    assert_eq!(ann.request(json!({"type": "leave", "room": "was-used"})).await["type"], "left");
    let leave = common::next_payload(&mut channel.on_message()).await;
    assert!(leave.contains("\"event\":\"leave\""), "{leave}");
    let mut conn = redis.connection().await;
    let keys: Vec<String> = redis::cmd("KEYS").arg("test:{*}:*").query_async(&mut conn).await.unwrap();
    assert_eq!(keys.len(), 3 + 3 + 4, "meta, history and id-order of each, members of the one in use: {keys:?}");
    for key in keys {
        let ttl: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut conn).await.unwrap();
        match key.contains("{still-used}") {
            true => assert_eq!(ttl, -1, "{key}: a room with members is kept"),
            false => assert!(ttl > 0 && ttl <= 60_000, "{key}: {ttl}"),
        }
    }
}

/// A raw member's text goes through Redis as it came: 8 KiB of control
/// characters is 48 KiB as a JSON string, and Redis keeps 8.
#[tokio::test]
#[cfg_attr(skip_redis, ignore = "redis-server is missing and SKIP_MISSING_TOOLS=1")]
async fn raw_text_is_kept_in_redis_as_it_came() {
    let deployment = Deployment::start(true, &[]);
    let redis = deployment.redis().unwrap();
    let mut watcher = Client::json(deployment.at(1)).await;
    watcher.join("raw").await;
    let mut raw = Client::connect(&deployment.at(0).url("/ws/raw")).await;
    let text = "\u{1}\u{2}\n".repeat(8192 / 3);
    raw.send_text(&text).await;
    let message = loop {
        let frame = watcher.recv_json().await;
        if frame["type"] == "message" {
            break frame;
        }
    };
    assert_eq!(message["body"].as_str(), Some(text.as_str()));
    let mut conn = redis.connection().await;
    let usage: u64 = redis::cmd("MEMORY").arg("USAGE").arg("test:{raw}:history").query_async(&mut conn).await.unwrap();
    // As a JSON string it would be 48 KiB; the allocator rounds 8 KiB up.
    assert!(usage < 16_000, "the history holds {usage} bytes for an 8 KiB text");
    let joined = watcher.request(json!({"type": "join", "room": "raw", "history": 1})).await;
    assert_eq!(joined["history"][0], message, "history gives the same frame");
}

/// Redis out of memory (maxmemory, noeviction): publishes and joins are
/// refused `unavailable` (and were not done), `/healthz` is 503 and the
/// metrics say so; leaves still work; all is well again once Redis takes
/// writes.
#[tokio::test]
#[cfg_attr(skip_redis, ignore = "redis-server is missing and SKIP_MISSING_TOOLS=1")]
async fn a_redis_that_refuses_writes_shows_in_healthz_and_metrics() {
    let deployment = Deployment::start(true, &[]);
    let (redis, node) = (deployment.redis().unwrap(), deployment.at(0));
    let mut ann = Client::json(node).await;
    let mut bob = Client::json(deployment.at(1)).await;
    ann.join("full").await;
    bob.join("full").await;
    let mut conn = redis.connection().await;
    let used = redis_info(redis, "used_memory").await;
    let set = |key: &str, value: String| redis::cmd("CONFIG").arg("SET").arg(key).arg(value).to_owned();
    let () = set("maxmemory-policy", "noeviction".into()).query_async(&mut conn).await.unwrap();
    let () = set("maxmemory", (used / 2).to_string()).query_async(&mut conn).await.unwrap();
    let refused = ann.request(json!({"type": "publish", "room": "full", "body": "x"})).await;
    assert_eq!(refused["code"], "unavailable", "{refused}");
    assert!(refused["message"].as_str().unwrap().contains("OOM"), "{refused}");
    node.wait_for_log("cluster: Redis refuses writes");
    let health = reqwest::get(node.http("/healthz")).await.unwrap();
    assert_eq!((health.status().as_u16(), health.text().await.unwrap()), (503, "redis refuses writes".to_string()));
    assert_eq!(node.metric("roomcast_cluster_writable").await, 0);
    assert!(node.metric("roomcast_cluster_write_refusals_total").await >= 1);
    assert_eq!(node.metric("roomcast_cluster_up").await, 1, "Redis answers: the node is alive");
    let join = ann.request(json!({"type": "join", "room": "another"})).await;
    assert_eq!(join["code"], "unavailable", "{join}");
    // A leave frees memory: it goes through.
    assert_eq!(bob.request(json!({"type": "leave", "room": "full"})).await["type"], "left");
    let leave = ann.expect("presence").await;
    assert_eq!(leave["event"], "leave", "{leave}");

    let () = set("maxmemory", "0".into()).query_async(&mut conn).await.unwrap();
    node.wait_for_log("cluster: Redis takes writes again");
    assert_eq!(reqwest::get(node.http("/healthz")).await.unwrap().status(), 200);
    let ok = ann.request(json!({"type": "publish", "room": "full", "body": "x"})).await;
    assert_eq!(ok["seq"], 1, "the refused publish was not done: {ok}");
}

/// A read-only Redis (a replica, as after a failover that did not move
/// the address): the node says so and publishes are refused.
#[tokio::test]
#[cfg_attr(skip_redis, ignore = "redis-server is missing and SKIP_MISSING_TOOLS=1")]
async fn a_read_only_redis_shows_in_healthz_and_metrics() {
    let deployment = Deployment::start(true, &[]);
    let (redis, node) = (deployment.redis().unwrap(), deployment.at(0));
    let mut ann = Client::json(node).await;
    ann.join("ro").await;
    let mut conn = redis.connection().await;
    // A replica of a primary that is not there: it serves reads only.
    let () = redis::cmd("REPLICAOF").arg("127.0.0.1").arg("1").query_async(&mut conn).await.unwrap();
    node.wait_for_log("cluster: Redis refuses writes");
    assert_eq!(reqwest::get(node.http("/healthz")).await.unwrap().status(), 503);
    assert_eq!(node.metric("roomcast_cluster_writable").await, 0);
    let refused = ann.request(json!({"type": "publish", "room": "ro", "body": "x"})).await;
    assert_eq!(refused["code"], "unavailable", "{refused}");
    let () = redis::cmd("REPLICAOF").arg("NO").arg("ONE").query_async(&mut conn).await.unwrap();
    node.wait_for_log("cluster: Redis takes writes again");
    let ok = ann.request(json!({"type": "publish", "room": "ro", "body": "x"})).await;
    assert_eq!(ok["seq"], 1, "{ok}");
}

/// One of each thing the flood does, so that Redis's own statistics (a
/// latency histogram per command it has run, about 25 KiB each) are made
/// before it is measured.
async fn warm_up(deployment: &Deployment) {
    let mut client = Client::json(deployment.at(0)).await;
    client.join("warm").await;
    client.request(json!({"type": "publish", "room": "warm", "body": 1, "id": "w"})).await;
    let mut raw = Client::connect(&deployment.at(1).url("/ws/warm")).await;
    raw.send_text("w").await;
    loop {
        let frame = client.recv_json().await;
        if frame["type"] == "message" && frame["body"] == "w" {
            break;
        }
    }
    assert_eq!(api_publish(deployment.at(0), "warm-api", &json!(1)).await, 200);
    assert_eq!(client.request(json!({"type": "leave", "room": "warm"})).await["type"], "left");
    raw.close().await;
}

/// One client, many connections, reconnecting for fresh rate buckets,
/// making rooms, filling them with the largest messages, raw text of
/// control characters and API publishes, for several seconds, with the
/// careful settings of docs/operations.md: what Redis holds stays within
/// the formula of docs/scaling.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(skip_redis, ignore = "redis-server is missing and SKIP_MISSING_TOOLS=1")]
async fn one_client_cannot_fill_redis() {
    const M: usize = 16 * 1024;
    const H: usize = 64 * 1024;
    const R: usize = 20;
    const IDS: usize = 1000;
    let deployment = Deployment::start(
        true,
        &[
            ("ROOMCAST_LIMITS__MAX_MESSAGE_BYTES", "16384"),
            ("ROOMCAST_ROOMS__HISTORY_BYTES", "64KiB"),
            ("ROOMCAST_ROOMS__MAX_ROOMS", "20"),
            ("ROOMCAST_LIMITS__OUTBOUND_BYTES", "256KiB"),
            ("ROOMCAST_API__KEY", API_KEY),
        ],
    );
    let redis = deployment.redis().unwrap();
    warm_up(&deployment).await;
    let before = redis_info(redis, "used_memory").await;
    let until = tokio::time::Instant::now() + Duration::from_secs(6);
    let body = json!("y".repeat(M - 64));
    let mut tasks = Vec::new();
    for worker in 0..6usize {
        let server = deployment.at(worker).addr;
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut published = 0u64;
            let mut round = 0usize;
            while tokio::time::Instant::now() < until {
                round += 1;
                let url = format!("ws://{server}/ws");
                let Ok(mut client) = Client::try_connect(&url, &[]).await else { continue };
                for room in 0..8 {
                    let room = format!("flood-{}", (worker * 7 + round * 3 + room) % 40);
                    let join = json!({"type": "join", "room": room, "ref": "j"});
                    client.send_json(join).await;
                    for n in 0..20 {
                        let id = format!("{worker}-{round}-{n}");
                        let publish = json!({"type": "publish", "room": room, "body": body, "id": id});
                        client.send_json(publish).await;
                        published += 1;
                    }
                }
                // A fresh connection, a fresh rate bucket.
                drop(client);
            }
            published
        }));
    }
    for worker in 0..2usize {
        let server = deployment.at(worker).addr;
        tasks.push(tokio::spawn(async move {
            let text = "\u{1}".repeat(M / 2);
            let mut sent = 0u64;
            let mut round = 0usize;
            while tokio::time::Instant::now() < until {
                round += 1;
                let url = format!("ws://{server}/ws/raw-{}", (worker + round) % 30);
                let Ok(mut raw) = Client::try_connect(&url, &[]).await else { continue };
                for _ in 0..50 {
                    raw.send_text(&text).await;
                    sent += 1;
                }
            }
            sent
        }));
    }
    let api_node = deployment.at(0).http("");
    tasks.push(tokio::spawn(async move {
        let client = reqwest::Client::new();
        let mut sent = 0u64;
        while tokio::time::Instant::now() < until {
            sent += 1;
            let _ = client
                .post(format!("{api_node}/api/rooms/api-{}/publish", sent % 50))
                .bearer_auth(API_KEY)
                .header("Idempotency-Key", format!("api-{sent}"))
                .body(json!("z".repeat(M - 64)).to_string())
                .send()
                .await;
        }
        sent
    }));
    let mut sent = 0;
    for task in tasks {
        sent += task.await.unwrap();
    }
    let mut conn = redis.connection().await;
    let after = redis_info(redis, "used_memory").await;
    let held: u64 = redis::cmd("ZCARD").arg("test:held").query_async(&mut conn).await.unwrap();
    let grown = after.saturating_sub(before);
    // docs/scaling.md: per room held, its history (1.3 x H, and 150 bytes
    // per message kept), its publish ids (270 bytes each) and 1 KiB of
    // keys; per membership 500 bytes (8 connections of 8 rooms at most);
    // per connection 100 bytes.
    let per_room = H * 13 / 10 + 50 * 150 + IDS * 270 + 1024;
    let bound = R * per_room + 8 * 8 * 500 + 8 * 100;
    eprintln!("{sent} publishes sent; Redis grew {} KiB (bound {} KiB) for {held} rooms", grown / 1024, bound / 1024);
    assert!(held <= R as u64, "{held} rooms held");
    assert!(grown <= bound as u64, "Redis grew {grown} bytes, more than the formula's {bound}");
}
