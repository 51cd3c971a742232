//! Idempotent publish and what `unavailable` means, on one process and on a
//! cluster: a publish (or an API publish) sent again with its `id` appears
//! once and is answered with the first one's `seq`; a publish answered
//! `unavailable` was not published, not even after a Redis stall.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Client, Deployment, Server};
use serde_json::{Value, json};

const API_KEY: &str = "api-key";

/// The next `message`, skipping presence events.
async fn next_message(client: &mut Client) -> Value {
    loop {
        let frame = client.recv_json().await;
        if frame["type"] == "message" {
            return frame;
        }
        assert_eq!(frame["type"], "presence", "{frame}");
    }
}

async fn api_publish(server: &Server, room: &str, body: Value, key: Option<&str>) -> reqwest::Response {
    common::api_publish(server, API_KEY, room, &body, key).await
}

async fn a_publish_sent_again_with_its_id_appears_once(cluster: bool) {
    let deployment = Deployment::start(cluster, &[("ROOMCAST_API__KEY", API_KEY)]);
    let mut ann = Client::json(deployment.at(0)).await;
    let mut bob = Client::json(deployment.at(1)).await;
    ann.join("once").await;
    bob.join("once").await;
    let publish = |body: &str, id: &str| json!({"type": "publish", "room": "once", "body": body, "id": id});

    let first = ann.request(publish("hello", "k1")).await;
    assert_eq!(first["type"], "ok", "{first}");
    let seq = first["seq"].as_u64().unwrap();
    assert_eq!(next_message(&mut bob).await["body"], "hello");
    // Again, as a client does whose connection dropped before the `ok`;
    // and the same id from another session: the room's id, the first seq.
    assert_eq!(ann.request(publish("hello", "k1")).await["seq"], seq, "answered with the first seq");
    assert_eq!(bob.request(publish("hello again", "k1")).await["seq"], seq);
    // An API publish with the same key as header.
    let api = api_publish(deployment.at(1), "once", json!("from the api"), Some("api-1")).await;
    assert_eq!(api.status(), 200);
    let api_seq = api.json::<Value>().await.unwrap()["seq"].as_u64().unwrap();
    assert_eq!(api_seq, seq + 1);
    let again = api_publish(deployment.at(0), "once", json!("from the api"), Some("api-1")).await;
    assert_eq!(again.json::<Value>().await.unwrap()["seq"], api_seq, "the API's key too");
    let next = ann.request(publish("next", "k2")).await;
    assert_eq!(next["seq"], api_seq + 1, "no seq was spent on the repeats: {next}");
    for (body, seq) in [("from the api", api_seq), ("next", api_seq + 1)] {
        let message = next_message(&mut bob).await;
        assert_eq!((message["body"].as_str(), message["seq"].as_u64()), (Some(body), Some(seq)), "{message}");
    }
    // Ids are per room.
    ann.join("other").await;
    let elsewhere = ann.request(json!({"type": "publish", "room": "other", "body": 1, "id": "k1"})).await;
    assert_eq!(elsewhere["seq"], 1, "another room's k1 is another publish");

    // Bad ids are refused, the connection stays.
    for bad in [json!(""), json!("x".repeat(65)), json!(7)] {
        let reply = ann.request(json!({"type": "publish", "room": "once", "body": 1, "id": bad})).await;
        assert_eq!(reply["code"], "bad_request", "{reply}");
    }
    let long = "x".repeat(65);
    for key in ["", long.as_str()] {
        let refused = api_publish(deployment.at(0), "once", json!(1), Some(key)).await;
        assert_eq!(refused.status(), 400, "Idempotency-Key {key:?}");
    }
    assert_eq!(ann.request(json!({"type": "ping"})).await["type"], "pong");
}

#[tokio::test]
async fn a_publish_sent_again_with_its_id_appears_once_on_one_process() {
    a_publish_sent_again_with_its_id_appears_once(false).await;
}

#[tokio::test]
#[cfg_attr(skip_redis, ignore = "redis-server is missing and SKIP_MISSING_TOOLS=1")]
async fn a_publish_sent_again_with_its_id_appears_once_on_a_cluster() {
    a_publish_sent_again_with_its_id_appears_once(true).await;
}

/// Publishes go out every few milliseconds while Redis holds every write
/// for 3 s: each is answered `ok` or `unavailable`, and exactly those
/// answered `ok` reach the room, once, in order, with no gap.
#[tokio::test]
#[cfg_attr(skip_redis, ignore = "redis-server is missing and SKIP_MISSING_TOOLS=1")]
async fn a_publish_answered_unavailable_during_a_stall_is_never_published() {
    let deployment = Deployment::start(
        true,
        &[("ROOMCAST_LIMITS__MESSAGES_PER_SECOND", "100000"), ("ROOMCAST_LIMITS__BURST", "100000")],
    );
    let redis = deployment.redis().expect("a cluster");
    let mut publisher = Client::json(deployment.at(0)).await;
    let mut reader = Client::json(deployment.at(1)).await;
    publisher.join("stall").await;
    reader.join("stall").await;
    let (mut writer, mut replies) = {
        use futures_util::StreamExt;
        let common::Client { ws, .. } = publisher;
        ws.split()
    };
    let pause = async {
        // Once publishes flow through Redis, it stalls under them.
        while deployment.at(0).metric("roomcast_cluster_publish_seconds_count").await < 20 {
            tokio::task::yield_now().await;
        }
        let mut admin = redis.connection().await;
        let () = redis::cmd("CLIENT").arg("PAUSE").arg(3000).arg("WRITE").query_async(&mut admin).await.unwrap();
    };
    let sent = async {
        use futures_util::SinkExt;
        let mut sent = 0u64;
        let until = tokio::time::Instant::now() + Duration::from_secs(5);
        while tokio::time::Instant::now() < until {
            sent += 1;
            let request = json!({"type": "publish", "room": "stall", "body": sent, "ref": sent});
            writer.send(common::text(&request.to_string())).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        sent
    };
    let (_, sent) = tokio::join!(pause, sent);
    // Every publish gets its answer, in order: a seq, or unavailable.
    let mut answered = BTreeMap::new();
    while answered.len() < sent as usize {
        use futures_util::StreamExt;
        let frame = tokio::time::timeout(common::DEADLINE, replies.next()).await.expect("an answer").unwrap().unwrap();
        let frame: Value = serde_json::from_str(frame.to_text().unwrap()).unwrap();
        match frame["type"].as_str() {
            Some("ok") => {
                answered.insert(frame["ref"].as_u64().unwrap(), Some(frame["seq"].as_u64().unwrap()));
            }
            Some("error") => {
                assert_eq!(frame["code"], "unavailable", "{frame}");
                answered.insert(frame["ref"].as_u64().unwrap(), None);
            }
            kind => assert!(matches!(kind, Some("message" | "presence")), "{frame}"),
        }
    }
    let refused = answered.values().filter(|seq| seq.is_none()).count();
    assert!(refused > 0, "the stall refused nothing: the test proves nothing");
    let published: Vec<(u64, u64)> = answered.iter().filter_map(|(body, seq)| seq.map(|seq| (seq, *body))).collect();
    // The reader gets exactly the ones answered ok, in seq order, gapless.
    for (n, (seq, body)) in published.iter().enumerate() {
        let message = next_message(&mut reader).await;
        assert_eq!(message["seq"].as_u64(), Some(*seq), "message {n}: {message}");
        assert_eq!(message["body"].as_u64(), Some(*body), "a publish answered unavailable was published: {message}");
    }
    assert_eq!(published.last().map(|(seq, _)| *seq), Some(published.len() as u64), "seqs 1..n, no gap");
    // Nothing more arrives: the next message is one published now.
    let mut marker = Client::json(deployment.at(0)).await;
    marker.join("stall").await;
    let ok = marker.request(json!({"type": "publish", "room": "stall", "body": "marker"})).await;
    assert_eq!(ok["seq"].as_u64(), Some(published.len() as u64 + 1), "{ok}");
    assert_eq!(next_message(&mut reader).await["body"], "marker", "no late publish came before it");
    eprintln!("{sent} publishes: {} published, {refused} refused as unavailable", published.len());
}
