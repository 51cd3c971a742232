//! Room state: history, recovery with `since`, `empty_ttl`, the room and
//! member limits, and presence when connections end.

mod common;

use std::time::Duration;

use common::raw::RawConn;
use common::{Client, Server};
use serde_json::{Value, json};

async fn publish_n(client: &mut Client, room: &str, n: u64) {
    for i in 1..=n {
        client.request(json!({"type":"publish","room":room,"body":i})).await;
    }
}

fn seqs(history: &Value) -> Vec<u64> {
    history.as_array().expect("history array").iter().map(|m| m["seq"].as_u64().unwrap()).collect()
}

#[tokio::test]
async fn history_on_join_is_capped_and_oldest_first() {
    let server = Server::start(&[("ROOMCAST_ROOMS__HISTORY", "4")]);
    let mut a = Client::json(&server).await;
    a.join("h").await;
    publish_n(&mut a, "h", 6).await;
    let mut b = Client::json(&server).await;
    let joined = b.join("h").await;
    assert_eq!(joined["history"], json!([]), "history defaults to 0");
    for (asked, expected) in [(0, vec![]), (2, vec![5, 6]), (4, vec![3, 4, 5, 6]), (100, vec![3, 4, 5, 6])] {
        let joined = b.request(json!({"type":"join","room":"h","history":asked})).await;
        assert_eq!(seqs(&joined["history"]), expected, "history {asked}");
        assert!(joined.get("recovered").is_none());
    }
    let joined = b.request(json!({"type":"join","room":"h","history":2})).await;
    let stored = &joined["history"][1];
    assert_eq!(stored["type"], "message");
    assert_eq!(stored["body"], 6);
    assert_eq!(stored["from"], json!(a.id));
}

#[tokio::test]
async fn recovery_with_since() {
    let server = Server::start(&[("ROOMCAST_ROOMS__HISTORY", "5")]);
    let mut a = Client::json(&server).await;
    a.join("s").await;
    publish_n(&mut a, "s", 8).await;
    let mut b = Client::json(&server).await;
    for (since, expected, recovered) in [
        (8, vec![], true),
        (6, vec![7, 8], true),
        (3, vec![4, 5, 6, 7, 8], true),
        (2, vec![4, 5, 6, 7, 8], false),
        (0, vec![4, 5, 6, 7, 8], false),
        (50, vec![4, 5, 6, 7, 8], false),
    ] {
        let joined = b.request(json!({"type":"join","room":"s","since":since,"history":1})).await;
        assert_eq!(seqs(&joined["history"]), expected, "since {since}");
        assert_eq!(joined["recovered"], recovered, "since {since}");
    }
    // With the epoch: the room's own recovers as before; another one is a
    // room that was started again, so nothing after `since` can be vouched for.
    let epoch = b.join("s").await["epoch"].clone();
    let joined = b.request(json!({"type":"join","room":"s","since":6,"epoch":epoch})).await;
    assert_eq!((seqs(&joined["history"]), &joined["recovered"]), (vec![7, 8], &json!(true)));
    let joined = b.request(json!({"type":"join","room":"s","since":6,"epoch":"0123456789abcdef"})).await;
    assert_eq!((seqs(&joined["history"]), &joined["recovered"]), (vec![4, 5, 6, 7, 8], &json!(false)));
    let refused = b.request(json!({"type":"join","room":"s","since":6,"epoch":6})).await;
    assert_eq!(refused["code"], "bad_request", "an epoch is a string");
}

#[tokio::test]
async fn empty_room_keeps_seq_and_history_for_empty_ttl_then_forgets() {
    let server = Server::start(&[("ROOMCAST_ROOMS__EMPTY_TTL", "700ms")]);
    let mut a = Client::json(&server).await;
    a.join("t").await;
    publish_n(&mut a, "t", 3).await;
    a.request(json!({"type":"leave","room":"t"})).await;
    // Within the TTL the room comes back as it was.
    let joined = a.request(json!({"type":"join","room":"t","history":10})).await;
    assert_eq!(seqs(&joined["history"]), vec![1, 2, 3]);
    let epoch = joined["epoch"].clone();
    assert_eq!(a.request(json!({"type":"publish","room":"t","body":4})).await["seq"], 4);
    a.request(json!({"type":"leave","room":"t"})).await;
    // Nothing announces the end of the TTL: let the time pass.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let joined = a.request(json!({"type":"join","room":"t","history":10,"since":4,"epoch":epoch})).await;
    assert_eq!(joined["history"], json!([]));
    assert_eq!(joined["recovered"], false, "seq 4 is beyond the new room's seq");
    assert_ne!(joined["epoch"], epoch, "a room started again has a new epoch");
    assert_eq!(a.request(json!({"type":"publish","room":"t","body":1})).await["seq"], 1);
}

#[tokio::test]
async fn max_rooms_per_session() {
    let server = Server::start(&[("ROOMCAST_LIMITS__MAX_ROOMS_PER_SESSION", "2")]);
    let mut a = Client::json(&server).await;
    a.join("one").await;
    a.join("two").await;
    a.join("one").await; // a rejoin is not a new room
    let error = a.request(json!({"type":"join","room":"three"})).await;
    assert_eq!(error["code"], "too_many_rooms");
    a.request(json!({"type":"leave","room":"one"})).await;
    a.join("three").await;
}

#[tokio::test]
async fn max_members_per_room_for_json_and_raw() {
    let server = Server::start(&[("ROOMCAST_LIMITS__MAX_MEMBERS_PER_ROOM", "2")]);
    let mut a = Client::json(&server).await;
    let mut b = Client::json(&server).await;
    let mut c = Client::json(&server).await;
    a.join("full").await;
    b.join("full").await;
    let error = c.request(json!({"type":"join","room":"full"})).await;
    assert_eq!(error["code"], "room_full");
    let refused = RawConn::upgrade(server.addr, "/ws/full", &[]).await.err().expect("no upgrade");
    assert_eq!(refused.status, 409);
    b.request(json!({"type":"leave","room":"full"})).await;
    c.join("full").await;
    // Raw members count too.
    let _raw = RawConn::upgrade(server.addr, "/ws/other", &[]).await.expect("raw member");
    b.join("other").await;
    let error = c.request(json!({"type":"join","room":"other"})).await;
    assert_eq!(error["code"], "room_full");
}

#[tokio::test]
async fn presence_leave_on_clean_close_and_on_dropped_tcp() {
    let server = Server::start(&[]);
    let mut watcher = Client::json(&server).await;
    watcher.join("p").await;

    let mut clean = Client::json(&server).await;
    clean.join("p").await;
    watcher.expect("presence").await;
    let clean_id = clean.id.clone();
    clean.close().await;
    assert_eq!(
        watcher.expect("presence").await,
        json!({"type":"presence","room":"p","event":"leave","id":clean_id,"nick":null})
    );

    let mut dropped = Client::json(&server).await;
    dropped.request(json!({"type":"nick","name":"gone"})).await;
    dropped.join("p").await;
    watcher.expect("presence").await;
    let dropped_id = dropped.id.clone();
    drop(dropped); // TCP closed without a close frame
    assert_eq!(
        watcher.expect("presence").await,
        json!({"type":"presence","room":"p","event":"leave","id":dropped_id,"nick":"gone"})
    );
    let members = watcher.request(json!({"type":"members","room":"p"})).await;
    assert_eq!(members["members"], json!([{"id":watcher.id,"nick":null}]));
}
