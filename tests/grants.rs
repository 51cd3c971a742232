//! Grants against a hostile or careless client, on one process and on a
//! cluster node alike: `rooms` lists only the rooms a session may join, and
//! an `auth` refresh that takes a grant away takes the session out of the
//! room (`left`, reason `revoked`) or makes it read-only, where a `join` of
//! a room it is in checks its grants again.

mod common;

use common::tokens::{auth_env, grants, room_token};
use common::{Client, Deployment, Server};
use serde_json::{Value, json};

const PRIVATE: &str = "private:*";

fn deployment(cluster: bool) -> Deployment {
    Deployment::start(cluster, &auth_env("optional", PRIVATE))
}

/// Connects with `token` (or anonymously) and reads the `welcome`.
async fn connect(server: &Server, token: Option<&str>) -> Client {
    let url = match token {
        Some(token) => server.url(&format!("/ws?token={token}")),
        None => server.url("/ws"),
    };
    let mut client = Client::connect(&url).await;
    let welcome = client.expect("welcome").await;
    client.id = welcome["id"].as_str().expect("an id").to_string();
    client
}

async fn rooms_seen(client: &mut Client) -> Vec<String> {
    let reply = client.request(json!({"type": "rooms"})).await;
    assert_eq!(reply["type"], "rooms", "{reply}");
    let mut rooms: Vec<String> =
        reply["rooms"].as_array().unwrap().iter().map(|r| r["room"].as_str().unwrap().to_string()).collect();
    rooms.sort();
    rooms
}

fn assert_error(reply: &Value, code: &str) {
    assert_eq!((reply["type"].as_str(), reply["code"].as_str()), (Some("error"), Some(code)), "{reply}");
}

async fn rooms_lists_only_rooms_the_session_may_join(cluster: bool) {
    let deployment = deployment(cluster);
    let mut owner = connect(deployment.at(0), Some(&grants("owner", &[PRIVATE], &[]))).await;
    owner.join("private:deal").await;
    owner.join("lobby").await;
    let mut member = connect(deployment.at(1), Some(&grants("member", &[], &[]))).await;
    let token = room_token("member", "private:club", false);
    let joined = member.request(json!({"type": "join", "room": "private:club", "token": token})).await;
    assert_eq!(joined["type"], "joined", "{joined}");

    let everything = ["lobby", "private:club", "private:deal"];
    assert_eq!(rooms_seen(&mut owner).await, everything, "a grant for private:* shows them all");
    let mut guest = connect(deployment.at(1), None).await;
    assert_eq!(rooms_seen(&mut guest).await, ["lobby"], "anonymous: public rooms only");
    let mut plain = connect(deployment.at(0), Some(&grants("plain", &[], &[]))).await;
    assert_eq!(rooms_seen(&mut plain).await, ["lobby"], "a user without a grant: public rooms only");
    let mut reader = connect(deployment.at(1), Some(&grants("reader", &[], &["private:deal"]))).await;
    assert_eq!(rooms_seen(&mut reader).await, ["lobby", "private:deal"], "a read grant is a grant");
    assert_eq!(rooms_seen(&mut member).await, ["lobby", "private:club"], "a room it joined with a room token");
}

#[tokio::test]
async fn rooms_lists_only_rooms_the_session_may_join_on_one_process() {
    rooms_lists_only_rooms_the_session_may_join(false).await;
}

#[tokio::test]
#[cfg_attr(skip_redis, ignore = "redis-server is missing and SKIP_MISSING_TOOLS=1")]
async fn rooms_lists_only_rooms_the_session_may_join_on_a_cluster() {
    rooms_lists_only_rooms_the_session_may_join(true).await;
}

/// Sends `auth` with `token`; returns what came before its `ok`.
async fn refresh(client: &mut Client, token: &str) -> Vec<Value> {
    client.send_json(json!({"type": "auth", "token": token, "ref": "refresh"})).await;
    let mut before = Vec::new();
    loop {
        let frame = client.recv_json().await;
        if frame["ref"] == "refresh" {
            assert_eq!(frame["type"], "ok", "{frame}");
            return before;
        }
        before.push(frame);
    }
}

async fn a_refresh_that_takes_a_grant_away_takes_the_session_out(cluster: bool) {
    let deployment = deployment(cluster);
    let mut ann = connect(deployment.at(0), Some(&grants("ann", &["private:a", "private:b"], &[]))).await;
    let mut watcher = connect(deployment.at(1), Some(&grants("watcher", &[PRIVATE], &[]))).await;
    watcher.join("private:a").await;
    ann.join("private:a").await;
    ann.join("private:b").await;
    let token = room_token("ann", "private:c", false);
    assert_eq!(ann.request(json!({"type": "join", "room": "private:c", "token": token})).await["type"], "joined");
    let presence = watcher.expect("presence").await;
    assert_eq!((presence["event"].as_str(), presence["id"].as_str()), (Some("join"), Some(ann.id.as_str())));

    // private:a goes, private:b becomes read-only; the room token's grant
    // for private:c is not the connection token's to take.
    let before = refresh(&mut ann, &grants("ann", &[], &["private:b"])).await;
    assert_eq!(before, [json!({"type": "left", "room": "private:a", "reason": "revoked"})], "then ok");
    let presence = watcher.expect("presence").await;
    assert_eq!((presence["event"].as_str(), presence["id"].as_str()), (Some("leave"), Some(ann.id.as_str())));
    let members = watcher.request(json!({"type": "members", "room": "private:a"})).await;
    assert_eq!(members["members"].as_array().map(Vec::len), Some(1), "{members}");

    let publish = |room: &str| json!({"type": "publish", "room": room, "body": "x"});
    assert_error(&ann.request(publish("private:a")).await, "not_member");
    assert_error(&ann.request(json!({"type": "join", "room": "private:a"})).await, "forbidden");
    assert_error(&ann.request(publish("private:b")).await, "forbidden");
    assert_eq!(ann.request(json!({"type": "join", "room": "private:b"})).await["type"], "joined", "read is a grant");
    assert_error(&ann.request(publish("private:b")).await, "forbidden");
    assert_eq!(ann.request(publish("private:c")).await["type"], "ok");

    // A later refresh that gives the grant back lifts the read-only one.
    let before = refresh(&mut ann, &grants("ann", &["private:b"], &[])).await;
    assert!(before.iter().all(|frame| frame["type"] == "message"), "{before:?}");
    assert_eq!(ann.request(publish("private:b")).await["type"], "ok");
    assert_eq!(watcher.request(json!({"type": "ping"})).await["type"], "pong", "the others carry on");
}

#[tokio::test]
async fn a_refresh_that_takes_a_grant_away_takes_the_session_out_on_one_process() {
    a_refresh_that_takes_a_grant_away_takes_the_session_out(false).await;
}

#[tokio::test]
#[cfg_attr(skip_redis, ignore = "redis-server is missing and SKIP_MISSING_TOOLS=1")]
async fn a_refresh_that_takes_a_grant_away_takes_the_session_out_on_a_cluster() {
    a_refresh_that_takes_a_grant_away_takes_the_session_out(true).await;
}
