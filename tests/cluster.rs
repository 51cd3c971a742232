//! Rooms across several roomcast processes (`shared/spec/cluster.md`):
//! real `roomcast serve` children sharing one real `redis-server`, driven
//! by real WebSocket clients. Each rule of the contract has its test.

mod common;

use std::time::{Duration, Instant};

use common::{Client, DEADLINE, Redis, Server};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const API_KEY: &str = "cluster-test-key";

/// A node of a cluster on `redis`, once it has its number (before that it
/// refuses connections).
fn node_with(redis: &Redis, extra: &[(&str, &str)]) -> Server {
    let mut env = vec![("ROOMCAST_CLUSTER__PREFIX", "test"), ("ROOMCAST_API__KEY", API_KEY)];
    env.extend_from_slice(extra);
    redis.node(&env)
}

fn nodes(redis: &Redis, count: usize) -> Vec<Server> {
    (0..count).map(|_| node_with(redis, &[])).collect()
}

async fn api_publish(server: &Server, room: &str, body: Value) -> reqwest::Response {
    common::api_publish(server, API_KEY, room, &body, None).await
}

/// The next frame of `kind`, skipping presence events.
async fn next_of(client: &mut Client, kind: &str) -> Value {
    loop {
        let frame = client.recv_json().await;
        if frame["type"] == kind {
            return frame;
        }
        assert_eq!(frame["type"], "presence", "expected {kind}: {frame}");
    }
}

/// `count` messages, skipping presence events.
async fn messages(client: &mut Client, count: usize) -> Vec<Value> {
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        out.push(next_of(client, "message").await);
    }
    out
}

/// Waits for a presence event matching `event` and `id`, skipping others
/// and messages.
async fn presence_of(client: &mut Client, event: &str, id: &str) -> Value {
    loop {
        let frame = client.recv_json().await;
        if frame["type"] == "presence" && frame["event"] == event && frame["id"] == id {
            return frame;
        }
    }
}

/// Two nodes; `a` on the first and `b` on the second have joined `hall`,
/// and `a` has seen `b` join.
async fn two_in_hall(redis: &Redis, extra: &[(&str, &str)]) -> (Vec<Server>, Client, Client) {
    let nodes: Vec<Server> = (0..2).map(|_| node_with(redis, extra)).collect();
    let mut a = Client::json(&nodes[0]).await;
    a.join("hall").await;
    let mut b = Client::json(&nodes[1]).await;
    b.join("hall").await;
    presence_of(&mut a, "join", &b.id).await;
    (nodes, a, b)
}

#[tokio::test]
#[cfg_attr(skip_redis, ignore = "redis-server is missing and SKIP_MISSING_TOOLS=1")]
async fn every_member_on_every_node_gets_every_message_in_seq_order_with_the_same_bytes() {
    let redis = Redis::start();
    let nodes = nodes(&redis, 3);
    let mut members = Vec::new();
    for node in &nodes {
        let mut member = Client::json(node).await;
        member.join("feed").await;
        members.push(member);
    }
    // Publishers on every node at once, plus the HTTP API on each node.
    const EACH: usize = 40;
    for i in 0..EACH {
        for (n, member) in members.iter_mut().enumerate() {
            member.send_json(json!({"type": "publish", "room": "feed", "body": format!("n{n}-{i}")})).await;
        }
        if i % 10 == 0 {
            let response = api_publish(&nodes[i / 10 % 3], "feed", json!(format!("api-{i}"))).await;
            assert_eq!(response.status(), 200);
        }
    }
    let total = EACH * 3 + 4;
    let mut received = Vec::new();
    for member in &mut members {
        received.push(messages(member, total).await);
    }
    let seqs: Vec<u64> = received[0].iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=total as u64).collect::<Vec<_>>(), "seq 1, 2, 3, ... with no gap or repeat");
    assert_eq!(received[0], received[1], "node 2's member got the same messages, fields and order");
    assert_eq!(received[0], received[2], "node 3's member too");
    // Each publisher's own messages keep its order.
    for n in 0..3 {
        let own: Vec<&str> = received[0]
            .iter()
            .filter_map(|m| m["body"].as_str())
            .filter(|b| b.starts_with(&format!("n{n}-")))
            .collect();
        let expected: Vec<String> = (0..EACH).map(|i| format!("n{n}-{i}")).collect();
        assert_eq!(own, expected);
    }
    assert!(nodes[0].metric("roomcast_cluster_publish_seconds_count").await > 0);
    // The gauge changes at node 1's next beat (every node_timeout / 5), an
    // event nothing announces: look until then.
    let deadline = Instant::now() + DEADLINE;
    while nodes[0].metric("roomcast_cluster_nodes").await != 3 {
        assert!(Instant::now() < deadline, "roomcast_cluster_nodes did not reach 3");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
#[cfg_attr(skip_redis, ignore = "redis-server is missing and SKIP_MISSING_TOOLS=1")]
async fn presence_members_rooms_and_room_full_count_every_node() {
    let redis = Redis::start();
    let nodes: Vec<Server> =
        (0..2).map(|_| node_with(&redis, &[("ROOMCAST_LIMITS__MAX_MEMBERS_PER_ROOM", "2")])).collect();
    let mut ann = Client::json(&nodes[0]).await;
    assert_eq!(ann.request(json!({"type": "nick", "name": "ann"})).await["type"], "ok");
    let joined = ann.join("lobby").await;
    assert_eq!(joined["members"], 1);
    assert!(joined["epoch"].as_str().is_some_and(|e| !e.is_empty()), "{joined}");

    let mut bob = Client::json(&nodes[1]).await;
    let joined = bob.join("lobby").await;
    assert_eq!(joined["members"], 2, "ann on the other node counts");
    let event = presence_of(&mut ann, "join", &bob.id).await;
    assert_eq!(event, json!({"type": "presence", "room": "lobby", "event": "join", "id": bob.id, "nick": null}));

    let listed = bob.request(json!({"type": "members", "room": "lobby"})).await;
    let ids: Vec<&str> = listed["members"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&ann.id.as_str()) && ids.contains(&bob.id.as_str()), "{listed}");
    let ann_entry = listed["members"].as_array().unwrap().iter().find(|m| m["id"] == ann.id.as_str()).unwrap();
    assert_eq!(ann_entry["nick"], "ann", "nick from the other node");

    let rooms = ann.request(json!({"type": "rooms"})).await;
    assert_eq!(rooms["rooms"], json!([{"room": "lobby", "members": 2}]));
    let api_rooms: Value = reqwest::Client::new()
        .get(nodes[1].http("/api/rooms"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(api_rooms, json!({"rooms": [{"room": "lobby", "members": 2}]}));

    // A third member, on either node, finds the room full.
    let mut cy = Client::json(&nodes[0]).await;
    let full = cy.request(json!({"type": "join", "room": "lobby"})).await;
    assert_eq!(full["code"], "room_full", "{full}");
    let raw = Client::try_connect(&nodes[1].url("/ws/lobby"), &[]).await.err().map(common::refused_status);
    assert_eq!(raw, Some(409), "raw connections count the cluster too");

    // A leave reaches the other node; the count follows.
    assert_eq!(bob.request(json!({"type": "leave", "room": "lobby"})).await["type"], "left");
    presence_of(&mut ann, "leave", &bob.id).await;
    assert_eq!(cy.request(json!({"type": "join", "room": "lobby"})).await["members"], 2);
    // A closed connection leaves too: its leave event and the count change
    // in one script.
    let cy_id = cy.id.clone();
    drop(cy);
    presence_of(&mut ann, "leave", &cy_id).await;
    let rooms = bob.request(json!({"type": "rooms"})).await;
    assert_eq!(rooms["rooms"], json!([{"room": "lobby", "members": 1}]), "the dropped member still counted");
}

#[tokio::test]
#[cfg_attr(skip_redis, ignore = "redis-server is missing and SKIP_MISSING_TOOLS=1")]
async fn direct_reaches_a_session_on_another_node_and_not_found_means_no_node_has_it() {
    let redis = Redis::start();
    let nodes = nodes(&redis, 2);
    let mut ann = Client::json(&nodes[0]).await;
    let mut bob = Client::json(&nodes[1]).await;
    assert_ne!(ann.id, bob.id, "ids are unique across the cluster");
    let ok = ann.request(json!({"type": "direct", "to": bob.id, "body": {"hi": 1}})).await;
    assert_eq!(ok["type"], "ok", "{ok}");
    let direct = bob.expect("direct").await;
    assert_eq!(direct["from"], ann.id.as_str());
    assert_eq!(direct["body"], json!({"hi": 1}));
    // An id of the other node that is not open, and one of no node.
    let bob_id: u64 = bob.id.parse().unwrap();
    for missing in [bob_id + 1000, (99u64 << 40) | 1] {
        let refused = ann.request(json!({"type": "direct", "to": missing.to_string(), "body": 1})).await;
        assert_eq!(refused["code"], "not_found", "{refused}");
    }
    // Raw sessions are found too.
    let mut raw = Client::connect(&nodes[1].url("/ws/side")).await;
    let mut watcher = Client::json(&nodes[1]).await;
    let joined = watcher.join("side").await;
    assert_eq!(joined["members"], 2);
    let members = watcher.request(json!({"type": "members", "room": "side"})).await;
    let raw_id = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .find(|id| *id != watcher.id)
        .unwrap();
    assert_eq!(ann.request(json!({"type": "direct", "to": raw_id, "body": "bare text"})).await["type"], "ok");
    assert_eq!(raw.recv().await, Message::text("bare text"));
}

#[tokio::test]
#[cfg_attr(skip_redis, ignore = "redis-server is missing and SKIP_MISSING_TOOLS=1")]
async fn recovery_on_another_node_and_a_foreign_epoch() {
    let redis = Redis::start();
    let nodes: Vec<Server> = (0..2).map(|_| node_with(&redis, &[("ROOMCAST_ROOMS__HISTORY", "5")])).collect();
    let mut ann = Client::json(&nodes[0]).await;
    let joined = ann.join("news").await;
    let epoch = joined["epoch"].as_str().unwrap().to_string();
    for i in 1..=3 {
        ann.request(json!({"type": "publish", "room": "news", "body": i})).await;
    }
    // A client that saw seq 1 reconnects to the other node.
    let mut back = Client::json(&nodes[1]).await;
    let rejoined = back.request(json!({"type": "join", "room": "news", "since": 1, "epoch": epoch})).await;
    assert_eq!(rejoined["recovered"], true, "{rejoined}");
    assert_eq!(rejoined["epoch"], epoch.as_str());
    let seqs: Vec<u64> = rejoined["history"].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [2, 3]);
    // The history keeps rooms.history messages: an old since is not recovered.
    for i in 4..=9 {
        ann.request(json!({"type": "publish", "room": "news", "body": i})).await;
    }
    let mut late = Client::json(&nodes[1]).await;
    let partial = late.request(json!({"type": "join", "room": "news", "since": 2, "epoch": epoch})).await;
    assert_eq!(partial["recovered"], false);
    let seqs: Vec<u64> = partial["history"].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [5, 6, 7, 8, 9], "history is bounded by rooms.history");
    let recent = late.request(json!({"type": "join", "room": "news", "history": 2})).await;
    let seqs: Vec<u64> = recent["history"].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [8, 9]);
    // Another epoch: nothing recovered, every kept message.
    let mut other = Client::json(&nodes[0]).await;
    let foreign = other.request(json!({"type": "join", "room": "news", "since": 8, "epoch": "not-this-one"})).await;
    assert_eq!(foreign["recovered"], false);
    assert_eq!(foreign["history"].as_array().unwrap().len(), 5);
    let keys: i64 =
        redis::cmd("XLEN").arg("test:{news}:history").query_async(&mut redis.connection().await).await.unwrap();
    assert_eq!(keys, 5, "Redis keeps rooms.history messages");
}

#[tokio::test]
#[cfg_attr(skip_redis, ignore = "redis-server is missing and SKIP_MISSING_TOOLS=1")]
async fn raw_members_relay_across_nodes() {
    let redis = Redis::start();
    let nodes = nodes(&redis, 2);
    let mut json_member = Client::json(&nodes[1]).await;
    json_member.join("wire").await;
    let mut a = Client::connect(&nodes[0].url("/ws/wire")).await;
    let mut b = Client::connect(&nodes[1].url("/ws/wire")).await;
    a.send(Message::text("from a")).await;
    assert_eq!(b.recv().await, Message::text("from a"));
    let message = next_of(&mut json_member, "message").await;
    assert_eq!(message["body"], "from a");
    assert_eq!(message["seq"], 1);
    a.send(Message::binary(vec![0u8, 159, 146, 150])).await;
    assert_eq!(b.recv().await, Message::binary(vec![0u8, 159, 146, 150]), "binary reaches raw members only");
    json_member.request(json!({"type": "publish", "room": "wire", "body": {"k": 1}})).await;
    assert_eq!(a.recv().await, Message::text("{\"k\":1}"));
    assert_eq!(b.recv().await, Message::text("{\"k\":1}"));
    // a never hears its own frames.
    assert!(a.recv_within(Duration::from_millis(300)).await.is_none());
}

#[tokio::test]
#[cfg_attr(skip_redis, ignore = "redis-server is missing and SKIP_MISSING_TOOLS=1")]
async fn a_graceful_shutdown_sends_the_leave_events_at_once() {
    let redis = Redis::start();
    // A node_timeout long enough that a leave by timeout is unmistakable.
    let (mut nodes, mut stays, going) = two_in_hall(&redis, &[("ROOMCAST_CLUSTER__NODE_TIMEOUT", "30s")]).await;
    let started = Instant::now();
    nodes[1].signal("TERM");
    presence_of(&mut stays, "leave", &going.id).await;
    assert!(started.elapsed() < Duration::from_secs(10), "not by node_timeout: {:?}", started.elapsed());
    nodes[1].wait_exit(DEADLINE);
    let rooms = stays.request(json!({"type": "rooms"})).await;
    assert_eq!(rooms["rooms"], json!([{"room": "hall", "members": 1}]));
}

#[tokio::test]
#[cfg_attr(skip_redis, ignore = "redis-server is missing and SKIP_MISSING_TOOLS=1")]
async fn a_killed_node_s_members_leave_within_node_timeout_plus_a_second() {
    let redis = Redis::start();
    let mut nodes = nodes(&redis, 2);
    let mut stays = Client::json(&nodes[0]).await;
    stays.join("hall").await;
    let mut doomed = Vec::new();
    for room in ["hall", "hall", "annex"] {
        let mut member = Client::json(&nodes[1]).await;
        member.join(room).await;
        doomed.push(member);
    }
    stays.join("annex").await;
    let started = Instant::now();
    nodes[1].signal("KILL");
    nodes[1].wait_exit(DEADLINE);
    let mut left = Vec::new();
    while left.len() < 3 {
        let frame = stays.recv_json().await;
        if frame["type"] == "presence" && frame["event"] == "leave" {
            left.push((frame["room"].as_str().unwrap().to_string(), frame["id"].as_str().unwrap().to_string()));
        }
    }
    let took = started.elapsed();
    assert!(took <= Duration::from_secs(2), "node_timeout 1s + 1s, took {took:?}");
    left.sort();
    let mut expected: Vec<(String, String)> =
        doomed.iter().zip(["hall", "hall", "annex"]).map(|(m, r)| (r.to_string(), m.id.clone())).collect();
    expected.sort();
    assert_eq!(left, expected);
    let members = stays.request(json!({"type": "members", "room": "hall"})).await;
    assert_eq!(members["members"].as_array().unwrap().len(), 1);
    assert_eq!(nodes[0].metric("roomcast_cluster_nodes").await, 1);
}

#[tokio::test]
#[cfg_attr(skip_redis, ignore = "redis-server is missing and SKIP_MISSING_TOOLS=1")]
async fn a_redis_pause_twice_node_timeout_declares_nobody_dead() {
    let redis = Redis::start();
    let (nodes, mut a, mut b) = two_in_hall(&redis, &[]).await;
    let mut admin = redis.connection().await;
    let unlimited = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    let mut waiter = redis.client().get_multiplexed_async_connection_with_config(&unlimited).await.unwrap();
    let () = redis::cmd("CLIENT").arg("PAUSE").arg(2000).arg("ALL").query_async(&mut admin).await.unwrap();
    // Every command waits out the pause: this PING returns when it ends.
    let pong: String = redis::cmd("PING").query_async(&mut waiter).await.unwrap();
    assert_eq!(pong, "PONG");
    // Both nodes' beats timed out during it (node_timeout 1 s); each says so
    // when a beat lands again, and by then every beat that could have
    // judged the other after the pause has run.
    for node in &nodes {
        node.wait_for_log("cluster: Redis answers again");
    }
    let dead: Vec<String> = redis::cmd("SMEMBERS").arg("test:nodes:dead").query_async(&mut admin).await.unwrap();
    assert!(dead.is_empty(), "declared dead: {dead:?}");
    let seq = a.request(json!({"type": "publish", "room": "hall", "body": "still here"})).await;
    assert_eq!(seq["type"], "ok", "{seq}");
    let got = next_of(&mut b, "message").await;
    assert_eq!(got["body"], "still here");
    assert!(a.recv_within(Duration::from_millis(200)).await.is_none_or(|m| !m.to_string().contains("\"leave\"")));
    let members = a.request(json!({"type": "members", "room": "hall"})).await;
    assert_eq!(members["members"].as_array().unwrap().len(), 2, "{members}");
    for node in &nodes {
        assert!(!node.log_text().contains("is dead"), "{}", node.log_text());
        assert!(!node.log_text().contains("declared dead"), "{}", node.log_text());
    }
}

#[tokio::test]
#[cfg_attr(skip_redis, ignore = "redis-server is missing and SKIP_MISSING_TOOLS=1")]
async fn redis_down_means_unavailable_and_503_and_its_return_a_new_epoch() {
    let redis = Redis::start();
    let nodes: Vec<Server> = (0..2).map(|_| node_with(&redis, &[])).collect();
    let mut a = Client::json(&nodes[0]).await;
    let joined = a.join("hall").await;
    let epoch = joined["epoch"].as_str().unwrap().to_string();
    let seq = a.request(json!({"type": "publish", "room": "hall", "body": 1})).await["seq"].as_u64().unwrap();
    let port = redis.kill();
    // Noticed at the next beat, which says so.
    for node in &nodes {
        node.wait_for_log("cluster: Redis unavailable");
    }
    let health = reqwest::get(nodes[0].http("/healthz")).await.unwrap();
    assert_eq!(health.status(), 503);
    assert!(health.text().await.unwrap().contains("redis"));
    let refused = a.request(json!({"type": "publish", "room": "hall", "body": 2})).await;
    assert_eq!(refused["code"], "unavailable", "{refused}");
    let refused = a.request(json!({"type": "join", "room": "other"})).await;
    assert_eq!(refused["code"], "unavailable", "{refused}");
    assert_eq!(api_publish(&nodes[1], "hall", json!(3)).await.status(), 503);
    assert_eq!(nodes[0].metric("roomcast_cluster_up").await, 0);
    // The connection stayed open.
    assert_eq!(a.request(json!({"type": "ping"})).await["type"], "pong");

    // Redis comes back, empty: a new epoch, and since is not recovered.
    let _redis = Redis::start_on(port);
    for node in &nodes {
        node.wait_for_log("cluster: Redis answers again");
        assert_eq!(reqwest::get(node.http("/healthz")).await.unwrap().status(), 200);
    }
    // The member that stayed is told its room started again.
    let resync = next_of(&mut a, "joined").await;
    assert_eq!(resync["recovered"], false, "{resync}");
    assert_ne!(resync["epoch"], epoch.as_str());
    let mut b = Client::json(&nodes[1]).await;
    let rejoined = b.request(json!({"type": "join", "room": "hall", "since": seq, "epoch": epoch})).await;
    assert_eq!(rejoined["type"], "joined", "{rejoined}");
    assert_eq!(rejoined["epoch"], resync["epoch"], "a new epoch, the same on every node");
    assert_eq!(rejoined["recovered"], false);
    assert_eq!(rejoined["members"], 2, "the node put its members back in Redis");
    let ok = a.request(json!({"type": "publish", "room": "hall", "body": "again"})).await;
    assert_eq!(ok["seq"], 1, "{ok}");
    assert_eq!(next_of(&mut b, "message").await["body"], "again");
}

#[tokio::test]
#[cfg_attr(skip_redis, ignore = "redis-server is missing and SKIP_MISSING_TOOLS=1")]
async fn no_gap_when_the_pub_sub_connections_are_killed_during_a_flood() {
    let redis = Redis::start();
    let nodes: Vec<Server> = (0..2)
        .map(|_| {
            node_with(
                &redis,
                &[
                    ("ROOMCAST_ROOMS__HISTORY", "5000"),
                    ("ROOMCAST_LIMITS__MESSAGES_PER_SECOND", "100000"),
                    ("ROOMCAST_LIMITS__BURST", "100000"),
                ],
            )
        })
        .collect();
    let mut publisher = Client::json(&nodes[0]).await;
    publisher.join("flood").await;
    let mut reader = Client::json(&nodes[1]).await;
    reader.join("flood").await;
    const COUNT: u64 = 2000;
    // Kills spread over the flood (a pace, not a wait: nothing announces
    // "the middle of a flood").
    let killer = {
        let client = redis.client();
        tokio::spawn(async move {
            let mut admin = client.get_multiplexed_async_connection().await.unwrap();
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_millis(60)).await;
                let _: redis::RedisResult<i64> =
                    redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("pubsub").query_async(&mut admin).await;
            }
        })
    };
    for i in 0..COUNT {
        publisher.send_json(json!({"type": "publish", "room": "flood", "body": i})).await;
    }
    let got = messages(&mut reader, COUNT as usize).await;
    killer.await.unwrap();
    let seqs: Vec<u64> = got.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=COUNT).collect::<Vec<_>>(), "every message once, in order");
    let bodies: Vec<u64> = got.iter().map(|m| m["body"].as_u64().unwrap()).collect();
    if bodies != (0..COUNT).collect::<Vec<_>>() {
        eprintln!("NODE0 LOG:\n{}", nodes[0].log_text());
    }
    assert_eq!(bodies, (0..COUNT).collect::<Vec<_>>());
    let repairs = nodes[1].metric("roomcast_cluster_repairs_total").await
        + nodes[0].metric("roomcast_cluster_repairs_total").await;
    assert!(repairs > 0, "the kills made gaps that were repaired");
}

#[tokio::test]
#[cfg_attr(skip_redis, ignore = "redis-server is missing and SKIP_MISSING_TOOLS=1")]
async fn a_node_found_dead_closes_its_clients_1012_and_comes_back_as_a_new_node() {
    let redis = Redis::start();
    let (nodes, mut a, mut b) = two_in_hall(&redis, &[]).await;
    // Frozen past node_timeout: the others find it dead and its member leaves.
    nodes[1].signal("STOP");
    presence_of(&mut a, "leave", &b.id).await;
    nodes[1].signal("CONT");
    assert_eq!(b.close_code().await, 1012, "its clients would be ghosts: they reconnect");
    nodes[1].wait_for_log_count("cluster: node ", 2);
    let mut again = Client::json(&nodes[1]).await;
    let (old, new): (u64, u64) = (b.id.parse().unwrap(), again.id.parse().unwrap());
    assert_ne!(old >> 40, new >> 40, "a new node number");
    assert_eq!(again.join("hall").await["members"], 2);
    presence_of(&mut a, "join", &again.id).await;
}

#[tokio::test]
#[cfg_attr(skip_redis, ignore = "redis-server is missing and SKIP_MISSING_TOOLS=1")]
async fn max_connections_per_user_counts_every_node_and_user_shows_from_every_node() {
    const SECRET: &str = "cluster-tests-secret-of-32-bytes-or-more";
    let auth = [
        ("ROOMCAST_AUTH__MODE", "required"),
        ("ROOMCAST_AUTH__HMAC_SECRET", SECRET),
        ("ROOMCAST_AUTH__MAX_CONNECTIONS_PER_USER", "1"),
    ];
    let redis = Redis::start();
    let nodes: Vec<Server> = (0..2).map(|_| node_with(&redis, &auth)).collect();
    let token = |user: &str| {
        let output = common::command(&["token", "--sub", user], &[("ROOMCAST_AUTH__HMAC_SECRET", SECRET)])
            .output()
            .expect("roomcast token");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap().trim().to_string()
    };
    let (ann, bob) = (token("ann"), token("bob"));
    let with = |token: &str| format!("Bearer {token}");
    let welcomed = |mut client: Client| async move {
        let welcome = client.expect("welcome").await;
        client.id = welcome["id"].as_str().unwrap().to_string();
        client
    };
    let mut first =
        welcomed(Client::try_connect(&nodes[0].url("/ws"), &[("authorization", &with(&ann))]).await.unwrap()).await;
    // The same user on the other node is one too many.
    let mut second = Client::try_connect(&nodes[1].url("/ws"), &[("authorization", &with(&ann))]).await.unwrap();
    let error = second.expect("error").await;
    assert_eq!(error["code"], "too_many_connections", "{error}");
    assert_eq!(second.close_code().await, 1008);
    // Another user is fine, and sees ann's user on presence from the other node.
    let mut other =
        welcomed(Client::try_connect(&nodes[1].url("/ws"), &[("authorization", &with(&bob))]).await.unwrap()).await;
    other.join("room").await;
    first.join("room").await;
    let event = presence_of(&mut other, "join", &first.id).await;
    assert_eq!(event["user"], "ann");
    let members = other.request(json!({"type": "members", "room": "room"})).await;
    let users: Vec<&str> = members["members"].as_array().unwrap().iter().map(|m| m["user"].as_str().unwrap()).collect();
    assert!(users.contains(&"ann") && users.contains(&"bob"), "{members}");
    // Once ann's connection closes, the count comes back down on every node:
    // its node gives it back just before it sends the leave.
    let first_id = first.id.clone();
    first.close().await;
    presence_of(&mut other, "leave", &first_id).await;
    let mut again = Client::try_connect(&nodes[1].url("/ws"), &[("authorization", &with(&ann))]).await.unwrap();
    assert_eq!(again.recv_json().await["type"], "welcome", "the closed connection still counted");
}

#[tokio::test]
#[cfg_attr(skip_redis, ignore = "redis-server is missing and SKIP_MISSING_TOOLS=1")]
async fn a_publish_retried_after_a_timeout_is_delivered_once() {
    let redis = Redis::start();
    let nodes = nodes(&redis, 2);
    let mut publisher = Client::json(&nodes[0]).await;
    publisher.join("once").await;
    let mut reader = Client::json(&nodes[1]).await;
    reader.join("once").await;
    // Redis holds every write for longer than a command may take (1 s with
    // node_timeout 1s), but not past the publish's deadline (2 s): its
    // answer is lost, the node asks what became of it, and the publish,
    // which ran once Redis resumed, is answered with its seq.
    let mut admin = redis.connection().await;
    let () = redis::cmd("CLIENT").arg("PAUSE").arg(1500).arg("WRITE").query_async(&mut admin).await.unwrap();
    let ok = publisher.request(json!({"type": "publish", "room": "once", "body": "retried"})).await;
    assert_eq!(ok["seq"], 1, "{ok}");
    let retried = nodes[0].wait_for_log("cluster: a publish to once was answered after");
    assert!(retried.contains("seq 1"), "{retried}");
    assert_eq!(next_of(&mut reader, "message").await["body"], "retried");
    let next = publisher.request(json!({"type": "publish", "room": "once", "body": "next"})).await;
    assert_eq!(next["seq"], 2, "the retry made no second seq: {next}");
    let message = next_of(&mut reader, "message").await;
    assert_eq!((message["seq"].clone(), message["body"].clone()), (json!(2), json!("next")), "no duplicate between");
}

#[tokio::test]
#[cfg_attr(skip_redis, ignore = "redis-server is missing and SKIP_MISSING_TOOLS=1")]
async fn a_node_starts_without_redis_answers_503_and_joins_when_redis_comes() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("redis://127.0.0.1:{port}");
    let env = [("ROOMCAST_CLUSTER__REDIS", url.as_str()), ("ROOMCAST_CLUSTER__NODE_TIMEOUT", "1s")];
    let server = Server::start(&env);
    server.wait_for_log("Redis unavailable");
    let health = reqwest::get(server.http("/healthz")).await.unwrap();
    assert_eq!(health.status(), 503);
    assert_eq!(health.text().await.unwrap(), "redis unavailable");
    let refused = Client::try_connect(&server.url("/ws"), &[]).await.err().map(common::refused_status);
    assert_eq!(refused, Some(503), "no session id without a node number");
    let _redis = Redis::start_on(port);
    server.wait_for_log("cluster: node ");
    server.wait_for_log("cluster: Redis answers again");
    assert_eq!(reqwest::get(server.http("/healthz")).await.unwrap().status(), 200);
    let mut client = Client::json(&server).await;
    assert_eq!(client.join("late").await["members"], 1);
}

#[tokio::test]
#[cfg_attr(skip_redis, ignore = "redis-server is missing and SKIP_MISSING_TOOLS=1")]
async fn clients_that_vanish_mid_join_leave_no_member_behind_in_redis() {
    let redis = Redis::start();
    let nodes = nodes(&redis, 2);
    // Every join and leave, in the order Redis ran them.
    let mut events = redis.client().get_async_pubsub().await.unwrap();
    events.psubscribe("test:{*}:messages").await.unwrap();
    let mut events = events.on_message();
    let mut next_event = async || {
        let payload = common::next_payload(&mut events).await;
        let event: Value = serde_json::from_str(payload.strip_prefix("P ").expect("a presence event")).unwrap();
        (event["room"].as_str().unwrap().to_string(), event["event"].as_str().unwrap().to_string())
    };
    // Each joins a room new to its node (the node must subscribe first) and
    // is gone before the answer.
    for i in 0..20 {
        let mut client = Client::json(&nodes[0]).await;
        client.send_json(json!({"type": "join", "room": format!("ghost-{i}")})).await;
        drop(client);
    }
    // A join through the same node after them runs after theirs (one
    // connection to Redis, in order): the ghosts' joins are the ones before
    // its own, and each must be followed by a leave.
    let mut probe = Client::json(&nodes[0]).await;
    probe.join("probe").await;
    assert_eq!(probe.request(json!({"type": "leave", "room": "probe"})).await["type"], "left");
    let (mut joins, mut leaves, mut probe_left) = (0, 0, false);
    loop {
        match next_event().await {
            (room, event) if room == "probe" && event == "join" => break,
            (_, event) if event == "join" => joins += 1,
            _ => leaves += 1,
        }
    }
    while leaves < joins || !probe_left {
        match next_event().await {
            (room, _) if room == "probe" => probe_left = true,
            _ => leaves += 1,
        }
    }
    let mut admin = redis.connection().await;
    let rooms: Vec<String> =
        redis::cmd("ZRANGE").arg("test:rooms").arg(0).arg(-1).query_async(&mut admin).await.unwrap();
    let indexes: Vec<String> = redis::cmd("KEYS").arg("test:node:*:members").query_async(&mut admin).await.unwrap();
    let mut listed = 0;
    for key in &indexes {
        listed += redis::cmd("SCARD").arg(key).query_async::<usize>(&mut admin).await.unwrap();
    }
    assert!(rooms.is_empty() && listed == 0, "members left behind: rooms {rooms:?}, {listed} in node indexes");
}

#[tokio::test]
#[cfg_attr(skip_redis, ignore = "redis-server is missing and SKIP_MISSING_TOOLS=1")]
async fn pipelined_publishes_are_answered_in_the_order_they_were_sent() {
    let redis = Redis::start();
    let nodes = nodes(&redis, 1);
    let mut client = Client::json(&nodes[0]).await;
    client.join("line").await;
    // Publishes go to Redis without waiting for each other; a refused one,
    // a join and a members request among them still get their replies in
    // order.
    for n in 1..=40 {
        let request = match n {
            15 => json!({"type": "publish", "room": "elsewhere", "body": n, "ref": n}),
            25 => json!({"type": "join", "room": "second", "ref": n}),
            40 => json!({"type": "members", "room": "line", "ref": n}),
            _ => json!({"type": "publish", "room": "line", "body": n, "ref": n}),
        };
        client.send_json(request).await;
    }
    let mut refs = Vec::new();
    let mut seqs = Vec::new();
    while refs.len() < 40 {
        let frame = client.recv_json().await;
        match frame["type"].as_str() {
            Some("message" | "presence") => continue,
            Some("ok") => seqs.push(frame["seq"].as_u64().unwrap()),
            Some("error") => {
                assert_eq!((frame["ref"].clone(), frame["code"].clone()), (json!(15), json!("not_member")))
            }
            Some("joined") => assert_eq!(frame["ref"], 25),
            Some("members") => assert_eq!(frame["ref"], 40),
            _ => panic!("unexpected {frame}"),
        }
        refs.push(frame["ref"].as_u64().unwrap());
    }
    assert_eq!(refs, (1..=40).collect::<Vec<_>>(), "replies in request order");
    assert_eq!(seqs, (1..=37).collect::<Vec<_>>(), "and seqs in publish order");
}
