//! Room rules a cluster node once kept differently from one process, each
//! tried on both: presence between members of the same node, a publisher's
//! `message` before its `ok`, and the replies of a session in the order of
//! its requests (an `auth` refresh after a `join`).

mod common;

use common::tokens::{auth_env, grants};
use common::{Client, Deployment, Server};
use serde_json::{Value, json};

async fn client(server: &Server) -> Client {
    Client::json(server).await
}

/// Whether `frame` is a `presence` `event` about `id`.
fn is_presence(frame: &Value, event: &str, id: &str) -> bool {
    frame["type"] == "presence" && frame["event"] == event && frame["id"] == id
}

async fn joins_and_leaves_reach_every_other_member(cluster: bool) {
    let deployment = Deployment::start(cluster, &[]);
    // a and b on the same node (the only one, or the first of two), c on
    // the other one when there is one.
    let (mut a, mut b, mut c) =
        (client(deployment.at(0)).await, client(deployment.at(0)).await, client(deployment.at(1)).await);
    a.join("hall").await;
    b.join("hall").await;
    assert!(is_presence(&a.expect("presence").await, "join", &b.id), "a sees b join, on b's node");
    c.join("hall").await;
    for member in [&mut a, &mut b] {
        assert!(is_presence(&member.expect("presence").await, "join", &c.id));
    }
    b.request(json!({"type": "leave", "room": "hall"})).await;
    for member in [&mut a, &mut c] {
        assert!(is_presence(&member.expect("presence").await, "leave", &b.id));
    }
    b.join("hall").await;
    for member in [&mut a, &mut c] {
        assert!(is_presence(&member.expect("presence").await, "join", &b.id), "a rejoin is announced");
    }
    // Nobody saw an event about themselves.
    let members = a.request(json!({"type": "members", "room": "hall"})).await;
    assert_eq!(members["members"].as_array().map(Vec::len), Some(3), "{members}");
}

#[tokio::test]
async fn joins_and_leaves_reach_every_other_member_on_one_process() {
    joins_and_leaves_reach_every_other_member(false).await;
}

#[tokio::test]
#[cfg_attr(skip_redis, ignore = "redis-server is missing and SKIP_MISSING_TOOLS=1")]
async fn joins_and_leaves_reach_every_other_member_on_a_cluster() {
    joins_and_leaves_reach_every_other_member(true).await;
}

const PUBLISHES: usize = 300;

/// Sends `PUBLISHES` publishes with refs without waiting, then reads until
/// every `ok` came: each `ok` must follow the publisher's own `message`
/// with its `seq`.
async fn publish_and_check_order(client: &mut Client, name: &str) {
    for n in 0..PUBLISHES {
        let publish = json!({"type": "publish", "room": "race", "body": format!("{name}{n}"), "ref": n});
        client.send_json(publish).await;
    }
    let mut seen = std::collections::HashSet::new();
    let mut oks = 0;
    while oks < PUBLISHES {
        let frame = client.recv_json().await;
        match frame["type"].as_str() {
            Some("message") => {
                seen.insert(frame["seq"].as_u64().expect("a seq"));
            }
            Some("ok") => {
                let seq = frame["seq"].as_u64().expect("an ok's seq");
                assert!(seen.contains(&seq), "{name}: the ok of seq {seq} came before its message");
                oks += 1;
            }
            _ => panic!("{name}: unexpected {frame}"),
        }
    }
}

async fn a_publisher_gets_its_message_before_its_ok(cluster: bool) {
    let rate = [("ROOMCAST_LIMITS__MESSAGES_PER_SECOND", "100000"), ("ROOMCAST_LIMITS__BURST", "100000")];
    let deployment = Deployment::start(cluster, &rate);
    let (mut a, mut b) = (client(deployment.at(0)).await, client(deployment.at(1)).await);
    a.join("race").await;
    b.join("race").await;
    a.expect("presence").await;
    // Both publish at once: each node orders its own replies with messages
    // the other node's publishes put before them.
    tokio::join!(publish_and_check_order(&mut a, "a"), publish_and_check_order(&mut b, "b"));
}

#[tokio::test]
async fn a_publisher_gets_its_message_before_its_ok_on_one_process() {
    a_publisher_gets_its_message_before_its_ok(false).await;
}

#[tokio::test]
#[cfg_attr(skip_redis, ignore = "redis-server is missing and SKIP_MISSING_TOOLS=1")]
async fn a_publisher_gets_its_message_before_its_ok_on_a_cluster() {
    a_publisher_gets_its_message_before_its_ok(true).await;
}

async fn replies_keep_the_order_of_requests(cluster: bool) {
    let deployment = Deployment::start(cluster, &auth_env("optional", "private:*"));
    let token = grants("ann", &["private:*"], &[]);
    let mut ann = Client::connect(&deployment.at(0).url(&format!("/ws?token={token}"))).await;
    ann.expect("welcome").await;
    for n in 0..20 {
        // Sent back to back: the join's reply comes first.
        let room = format!("private:r{n}");
        ann.send_json(json!({"type": "join", "room": room, "ref": format!("join{n}")})).await;
        ann.send_json(json!({"type": "auth", "token": token, "ref": format!("auth{n}")})).await;
        ann.send_json(json!({"type": "nick", "name": format!("ann{n}"), "ref": format!("nick{n}")})).await;
        let replies: Vec<Value> = [ann.recv_json().await, ann.recv_json().await, ann.recv_json().await].into();
        let refs: Vec<&str> = replies.iter().map(|reply| reply["ref"].as_str().unwrap_or("")).collect();
        assert_eq!(refs, [format!("join{n}"), format!("auth{n}"), format!("nick{n}")], "{replies:?}");
        assert_eq!(replies[0]["type"], "joined");
    }
}

#[tokio::test]
async fn replies_keep_the_order_of_requests_on_one_process() {
    replies_keep_the_order_of_requests(false).await;
}

#[tokio::test]
#[cfg_attr(skip_redis, ignore = "redis-server is missing and SKIP_MISSING_TOOLS=1")]
async fn replies_keep_the_order_of_requests_on_a_cluster() {
    replies_keep_the_order_of_requests(true).await;
}
