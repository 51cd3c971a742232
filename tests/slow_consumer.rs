//! The slow-consumer bound: a member that stops reading while a publisher
//! floods its room is closed once `outbound_queue` messages wait for it;
//! server memory stays bounded, and every other member receives every
//! message, in order.

mod common;

use std::time::Duration;

use common::raw::RawConn;
use common::{Client, Server, text};
use serde_json::json;
use tokio::sync::watch;

const QUEUE: usize = 256;
/// Messages published; 1 KiB each.
const FLOOD: u64 = 30_000;
/// How far the publisher may run ahead of the live readers (well under the
/// queue bound, so only the stalled member reaches it).
const WINDOW: u64 = 100;

/// Reads every message of the room and reports progress; returns the ids
/// whose presence leave it saw, and the client.
fn live_reader(mut client: Client, progress: watch::Sender<u64>) -> tokio::task::JoinHandle<(Vec<String>, Client)> {
    tokio::spawn(async move {
        let mut next_seq = 1;
        let mut left = Vec::new();
        while next_seq <= FLOOD {
            let frame = client.recv_json().await;
            match frame["type"].as_str() {
                Some("message") => {
                    assert_eq!(frame["seq"], next_seq, "in order, nothing lost");
                    next_seq += 1;
                    if next_seq % 10 == 0 {
                        let _ = progress.send(next_seq - 1);
                    }
                }
                Some("presence") if frame["event"] == "leave" => left.push(frame["id"].as_str().unwrap().to_string()),
                _ => {}
            }
        }
        let _ = progress.send(FLOOD);
        (left, client)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_is_closed_and_nobody_else_loses_anything() {
    let queue = QUEUE.to_string();
    let server = Server::start(&[
        ("ROOMCAST_LIMITS__OUTBOUND_QUEUE", &queue),
        ("ROOMCAST_LIMITS__MESSAGES_PER_SECOND", "1000000"),
        ("ROOMCAST_LIMITS__BURST", "1000000"),
    ]);
    let mut readers = Vec::new();
    for _ in 0..2 {
        let mut client = Client::json(&server).await;
        client.join("flood").await;
        readers.push(client);
    }
    // The stalled member joins last and then never reads again.
    let mut stalled = RawConn::upgrade_small_buffer(server.addr, "/ws").await;
    let welcome: serde_json::Value = serde_json::from_str(stalled.read_frame().await.unwrap().text()).unwrap();
    let stalled_id = welcome["id"].as_str().unwrap().to_string();
    stalled.send_frame(true, 1, json!({"type":"join","room":"flood"}).to_string().as_bytes()).await;
    assert!(stalled.read_frame().await.unwrap().text().contains("\"joined\""));
    let mut publisher = Client::connect(&server.url("/ws/flood")).await;
    for reader in readers.iter_mut() {
        reader.request(json!({"type":"ping"})).await; // the presence events are in
    }
    let baseline_kib = server.rss_kib();

    let mut progress = Vec::new();
    let mut tasks = Vec::new();
    for reader in readers {
        let (tx, rx) = watch::channel(0);
        progress.push(rx);
        tasks.push(live_reader(reader, tx));
    }
    let body = "m".repeat(1024);
    let mut peak_kib = baseline_kib;
    for sent in 1..=FLOOD {
        publisher.send(text(&body)).await;
        if sent % WINDOW == 0 {
            for rx in progress.iter_mut() {
                let behind = sent.saturating_sub(WINDOW);
                tokio::time::timeout(common::DEADLINE, rx.wait_for(|&read| read >= behind))
                    .await
                    .expect("a live reader fell behind")
                    .expect("reader alive");
            }
            if sent % (WINDOW * 50) == 0 {
                peak_kib = peak_kib.max(server.rss_kib());
            }
        }
    }
    let mut readers = Vec::new();
    for task in tasks {
        let (left, reader) = task.await.expect("reader");
        assert!(left.contains(&stalled_id), "the others saw the stalled member leave: {left:?}");
        readers.push(reader);
    }
    peak_kib = peak_kib.max(server.rss_kib());
    let growth_mib = (peak_kib.saturating_sub(baseline_kib)) as f64 / 1024.0;
    // 30 MiB went through; a queue without bound would hold all of it.
    assert!(growth_mib < 16.0, "server memory grew by {growth_mib:.1} MiB");
    assert_eq!(server.metric("roomcast_slow_consumer_closes_total").await, 1);
    assert_eq!(server.metric("roomcast_heartbeat_timeouts_total").await, 0);
    // The stalled client's connection is over: what it finds is some
    // messages and then the end (a 1013 close frame if the socket took it).
    let code = stalled.read_to_end(Duration::from_secs(5)).await;
    assert!(matches!(code, None | Some(1013)), "closed with {code:?}");
    let mut probe = Client::json(&server).await;
    let rooms = probe.request(json!({"type":"rooms"})).await;
    assert_eq!(rooms["rooms"], json!([{"room":"flood","members":3}]), "two readers and the publisher remain");
    eprintln!("slow consumer: server RSS {baseline_kib} KiB before, peak growth {growth_mib:.1} MiB");
}

#[tokio::test]
async fn the_close_is_1013_when_the_socket_takes_it() {
    // A queue of one. Each publish with a ref queues the message and the ok
    // back to back; once the session has not drained the first before the
    // second comes (a race over 200 tries), the queue overflows. The socket
    // is fine, so the close frame reaches the client.
    let server = Server::start(&[("ROOMCAST_LIMITS__OUTBOUND_QUEUE", "1"), ("ROOMCAST_LIMITS__BURST", "1000")]);
    let mut client = Client::json(&server).await;
    client.join("tiny").await;
    for n in 0..200 {
        client.send_json(json!({"type":"publish","room":"tiny","body":n,"ref":n})).await;
    }
    assert_eq!(client.close_code().await, 1013);
    assert_eq!(server.metric("roomcast_slow_consumer_closes_total").await, 1);
    let mut next = Client::json(&server).await;
    let joined = next.join("tiny").await;
    assert_eq!(joined["members"], 1, "the closed client left the room");
}
