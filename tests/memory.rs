//! Memory a client can make the server hold is bounded in bytes: history
//! per room (`rooms.history_bytes`), rooms (`rooms.max_rooms`, empty ones
//! included), whatever endpoint makes them.

mod common;

use std::time::{Duration, Instant};

use common::raw::RawConn;
use common::{Client, Server};
use serde_json::{Value, json};

const CHURN: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_making_raw_rooms_in_a_loop_stays_within_the_bound() {
    let max_rooms = 20;
    let history_bytes = 256 * 1024;
    let server = Server::start(&[
        ("ROOMCAST_ROOMS__MAX_ROOMS", &max_rooms.to_string()),
        ("ROOMCAST_ROOMS__HISTORY_BYTES", &history_bytes.to_string()),
        ("ROOMCAST_LOG__LEVEL", "warn"),
    ]);
    let baseline_kib = server.rss_kib();
    server.reset_peak_rss();
    // Control characters take 6 bytes each as JSON (\u0001): every 10 KiB
    // frame is a 60 KiB message in its room's history.
    let frame = "\u{1}".repeat(10 * 1024);
    let (mut rooms_made, mut refused, mut n) = (0, 0, 0);
    let started = Instant::now();
    while started.elapsed() < CHURN {
        n += 1;
        match RawConn::upgrade(server.addr, &format!("/ws/churn{n}"), &[]).await {
            Ok(mut conn) => {
                rooms_made += 1;
                for _ in 0..50 {
                    conn.send_frame(true, 1, frame.as_bytes()).await;
                }
                conn.send_frame(true, 8, &1000u16.to_be_bytes()).await;
                assert_eq!(conn.read_to_end(common::DEADLINE).await, Some(1000));
            }
            Err(refusal) => {
                assert_eq!(refusal.status, 503, "{}", refusal.head);
                refused += 1;
            }
        }
    }
    let held = server.wait_for_metric("roomcast_rooms_held", max_rooms as u64).await;
    let history = server.metric("roomcast_history_bytes").await;
    let peak_kib = server.peak_rss_kib();
    eprintln!(
        "{n} raw rooms asked for in {CHURN:?}: {rooms_made} made, {refused} refused; {held} held, \
         {history} bytes of history; RSS {baseline_kib} KiB before, peak {peak_kib} KiB"
    );
    assert_eq!(rooms_made, max_rooms, "rooms held at once, empty ones included");
    assert!(refused > 0);
    assert_eq!(held, max_rooms as u64);
    assert!(history <= (max_rooms * history_bytes) as u64, "{history} bytes of history");
    // docs/operations.md: rooms.max_rooms x rooms.history_bytes, plus one
    // connection's buffers and the allocator's slack.
    let bound_kib = (max_rooms * history_bytes / 1024 + 8 * 1024) as u64;
    assert!(peak_kib.saturating_sub(baseline_kib) <= bound_kib, "RSS grew {} KiB", peak_kib - baseline_kib);
    // The rooms are there and keep their histories; the server carries on.
    let mut probe = Client::json(&server).await;
    let joined = probe.request(json!({"type":"join","room":"churn1","history":50})).await;
    let kept = joined["history"].as_array().expect("history").len();
    assert!((1..=4).contains(&kept), "{kept} of 50 messages of 60 KiB fit 256 KiB");
}

async fn publish_n(client: &mut Client, room: &str, n: usize, body: &str) {
    for _ in 0..n {
        let ok = client.request(json!({"type":"publish","room":room,"body":body})).await;
        assert_eq!(ok["type"], "ok", "{ok}");
    }
}

fn seqs(history: &Value) -> Vec<u64> {
    history.as_array().expect("history").iter().map(|m| m["seq"].as_u64().expect("seq")).collect()
}

#[tokio::test]
async fn history_keeps_the_newest_messages_within_its_bytes() {
    let server = Server::start(&[("ROOMCAST_ROOMS__HISTORY_BYTES", "1000")]);
    let mut client = Client::json(&server).await;
    client.join("r").await;
    let body = "x".repeat(200); // a message frame of about 300 bytes
    publish_n(&mut client, "r", 10, &body).await;
    let mut other = Client::json(&server).await;
    let joined = other.request(json!({"type":"join","room":"r","history":50})).await;
    assert_eq!(seqs(&joined["history"]), [8, 9, 10], "the newest that fit in 1000 bytes");
    let recovered = other.request(json!({"type":"join","room":"r","since":7})).await;
    assert_eq!((seqs(&recovered["history"]), recovered["recovered"].as_bool()), (vec![8, 9, 10], Some(true)));
    let lost = other.request(json!({"type":"join","room":"r","since":6})).await;
    assert_eq!((seqs(&lost["history"]), lost["recovered"].as_bool()), (vec![8, 9, 10], Some(false)));
    // One message larger than the bound is not kept, nor anything before.
    let big = "y".repeat(2000);
    publish_n(&mut client, "r", 1, &big).await;
    let joined = other.request(json!({"type":"join","room":"r","history":50})).await;
    assert_eq!(seqs(&joined["history"]), Vec::<u64>::new());
}

#[tokio::test]
async fn max_rooms_counts_empty_rooms_and_refuses_one_more_everywhere() {
    let server = Server::start(&[("ROOMCAST_ROOMS__MAX_ROOMS", "2"), ("ROOMCAST_API__KEY", "k")]);
    let mut client = Client::json(&server).await;
    client.join("a").await;
    client.join("b").await;
    let refused = client.request(json!({"type":"join","room":"c"})).await;
    assert_eq!((refused["type"].as_str(), refused["code"].as_str()), (Some("error"), Some("too_many_rooms")));
    // An empty room is still held (its seq and history wait for empty_ttl).
    assert_eq!(client.request(json!({"type":"leave","room":"a"})).await["type"], "left");
    let refused = client.request(json!({"type":"join","room":"c"})).await;
    assert_eq!(refused["code"], "too_many_rooms");
    assert_eq!(client.join("a").await["type"], "joined", "rooms that exist can be joined");
    // A raw connection to a new room: 503; to one that exists: upgraded.
    let refusal = RawConn::upgrade(server.addr, "/ws/c", &[]).await.err().expect("refused");
    assert_eq!(refusal.status, 503);
    RawConn::upgrade(server.addr, "/ws/b", &[]).await.expect("an existing room");
    // The API: 503 for a new room, 200 for an existing one.
    let http = reqwest::Client::new();
    for (room, expected) in [("c", 503), ("a", 200)] {
        let response = http
            .post(server.http(&format!("/api/rooms/{room}/publish")))
            .bearer_auth("k")
            .body("1")
            .send()
            .await
            .expect("publish");
        assert_eq!(response.status().as_u16(), expected, "{room}");
    }
    assert_eq!(server.wait_for_metric("roomcast_rooms_held", 2).await, 2);
}
