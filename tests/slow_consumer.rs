//! The slow-consumer bound: a member that stops reading while a publisher
//! floods its room is closed once `outbound_queue` messages wait for it;
//! server memory stays bounded, and every other member receives every
//! message, in order.

mod common;

use std::time::Duration;

use common::raw::RawConn;
use common::{Client, Server, text};
use futures_util::SinkExt;
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

// Two threads: the flood runs while the test waits for the log line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_1013_and_finds_the_close_when_it_reads_again() {
    let server = Server::start(&[
        ("ROOMCAST_LIMITS__OUTBOUND_BYTES", "64KiB"),
        ("ROOMCAST_LIMITS__MESSAGES_PER_SECOND", "1000000"),
        ("ROOMCAST_LIMITS__BURST", "1000000"),
    ]);
    let mut stalled = RawConn::upgrade_small_buffer(server.addr, "/ws").await;
    let welcome: serde_json::Value = serde_json::from_str(stalled.read_frame().await.unwrap().text()).unwrap();
    let stalled_id = welcome["id"].as_str().unwrap().to_string();
    stalled.send_frame(true, 1, json!({"type":"join","room":"tiny"}).to_string().as_bytes()).await;
    assert!(stalled.read_frame().await.unwrap().text().contains("\"joined\""));
    // From here on the stalled member reads nothing: up to 16 MiB of
    // messages fill its socket, then 64 KiB its queue. (The publisher is a
    // raw member, which gets no copy of what it sends.)
    let mut publisher = Client::connect(&server.url("/ws/tiny")).await;
    let flood = tokio::spawn(async move {
        let body = "p".repeat(4096);
        for _ in 0..4000 {
            publisher.send(text(&body)).await;
        }
        publisher
    });
    server.wait_for_log(&format!("session {stalled_id}: outbound queue full while it did not read, closing 1013"));
    // Reading again, within the grace period, it finds what its socket
    // held and then the close frame.
    assert_eq!(stalled.read_to_end(Duration::from_secs(5)).await, Some(1013));
    let _publisher = flood.await.unwrap();
    // Listing the rooms joins none (a new member would get the rest of the
    // flood, which its 64 KiB could not hold).
    let mut probe = Client::json(&server).await;
    let rooms = probe.request(json!({"type":"rooms"})).await;
    assert_eq!(rooms["rooms"], json!([{"room":"tiny","members":1}]), "the closed client left; the publisher remains");
    assert_eq!(server.metric("roomcast_slow_consumer_closes_total").await, 1);
}

#[tokio::test]
async fn a_client_that_reads_is_never_closed_for_its_own_burst() {
    // 64 frames may wait; the burst's answers are 199 frames at once.
    let server = Server::start(&[("ROOMCAST_LIMITS__OUTBOUND_QUEUE", "64")]);
    for run in 0..30 {
        let mut client = Client::json(&server).await;
        let room = format!("burst{run}");
        // The whole burst (100 messages) in one write: a join and 99
        // publishes, answered by a joined, 99 messages and 99 oks.
        client.ws.feed(text(&json!({"type":"join","room":room}).to_string())).await.unwrap();
        for n in 0..99 {
            client.ws.feed(text(&json!({"type":"publish","room":room,"body":n,"ref":n}).to_string())).await.unwrap();
        }
        client.ws.flush().await.unwrap();
        let (mut messages, mut oks) = (0, 0);
        while messages < 99 || oks < 99 {
            let frame = client.recv_json().await;
            match frame["type"].as_str() {
                Some("joined") => {}
                Some("message") => messages += 1,
                Some("ok") => oks += 1,
                _ => panic!("run {run}: unexpected {frame}"),
            }
        }
        client.close().await;
    }
    assert_eq!(server.metric("roomcast_slow_consumer_closes_total").await, 0);
}

#[tokio::test]
async fn rejoins_from_a_client_that_does_not_read_hold_at_most_outbound_bytes() {
    let server = Server::start(&[("ROOMCAST_LIMITS__BURST", "1000")]);
    // A room whose history holds its 1 MiB (history_bytes): every joined
    // with history is about 1 MiB.
    let mut filler = Client::json(&server).await;
    filler.join("big").await;
    let body = "h".repeat(20 * 1024);
    for n in 0..50 {
        let ok = filler.request(json!({"type":"publish","room":"big","body":format!("{n}{body}")})).await;
        assert_eq!(ok["type"], "ok", "{ok}");
    }
    let mut hog = RawConn::upgrade_small_buffer(server.addr, "/ws").await;
    let welcome: serde_json::Value = serde_json::from_str(hog.read_frame().await.unwrap().text()).unwrap();
    let hog_id = welcome["id"].as_str().unwrap().to_string();
    let baseline_kib = server.rss_kib();
    server.reset_peak_rss();
    // 100 joins with the whole history, in one write, never read.
    let join =
        common::raw::frame(true, 1, json!({"type":"join","room":"big","history":50}).to_string().as_bytes(), true);
    hog.send_raw(&join.repeat(100)).await;
    server.wait_for_log(&format!("session {hog_id}: outbound queue full while it did not read, closing 1013"));
    let growth_kib = server.peak_rss_kib().saturating_sub(baseline_kib);
    eprintln!("100 rejoins never read: server RSS peaked {growth_kib} KiB above {baseline_kib} KiB");
    // outbound_bytes (4 MiB), plus one joined being built (1 MiB) and
    // buffers.
    assert!(growth_kib <= 4096 + 2048, "RSS grew by {growth_kib} KiB");
    assert_eq!(filler.request(json!({"type":"ping"})).await["type"], "pong", "the room carries on");
}
