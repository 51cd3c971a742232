//! The watchdog and the ending session act on a connection's socket by its
//! descriptor number (`http/conn.rs`). That is safe only while actix-http
//! drops a connection's response body, which runs the session's `stopped`,
//! before it closes the socket: the pinned version does. This ends sessions
//! in every way there is, many at once so that descriptor numbers are
//! reused, and checks that every use found its own socket
//! (`roomcast_socket_mismatches_total` stays 0). If a new actix-http closed
//! sockets first, the count would not be 0.

mod common;

use std::time::Duration;

use common::raw::RawConn;
use common::{Client, Server};
use serde_json::json;

const EACH: usize = 20;

fn close_frame(code: u16) -> Vec<u8> {
    code.to_be_bytes().to_vec()
}

/// One session ended one way.
async fn end_one(server: std::net::SocketAddr, way: usize) {
    let path = ["/ws", "/ws/identity", "/echo"][way % 3];
    let mut conn = RawConn::upgrade(server, path, &[]).await.expect("upgrade");
    match way % 6 {
        // The client closes.
        0 => {
            conn.send_frame(true, 8, &close_frame(1000)).await;
            conn.read_to_end(common::DEADLINE).await;
        }
        // The client resets the connection.
        1 => conn.reset(),
        // The client ends its side of the TCP connection without a close.
        2 => {
            let _ = socket2::SockRef::from(&conn.stream).shutdown(std::net::Shutdown::Write);
            conn.read_to_end(common::DEADLINE).await;
        }
        // A protocol error, and the client answers the close.
        3 => {
            conn.send_frame(true, 3, b"").await;
            assert_eq!(conn.read_close().await, Some(1002));
            conn.send_frame(true, 8, &close_frame(1002)).await;
            conn.read_to_end(common::DEADLINE).await;
        }
        // A protocol error, and the client never answers: the session is
        // stopped after the grace period.
        4 => {
            conn.send_frame(true, 3, b"").await;
            assert_eq!(conn.read_to_end(common::DEADLINE).await, Some(1002));
        }
        // The client goes silent: heartbeat timeout.
        _ => {
            conn.read_to_end(common::DEADLINE).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_way_a_session_ends_finds_its_own_socket() {
    let server = Server::start(&[
        ("ROOMCAST_HEARTBEAT__INTERVAL", "200ms"),
        ("ROOMCAST_HEARTBEAT__TIMEOUT", "2s"),
        ("ROOMCAST_LIMITS__OUTBOUND_BYTES", "64KiB"),
        // The flood below is not held back by the rate limit.
        ("ROOMCAST_LIMITS__MESSAGES_PER_SECOND", "100000"),
        ("ROOMCAST_LIMITS__BURST", "100000"),
        ("ROOMCAST_LOG__LEVEL", "warn"),
    ]);
    let mut tasks = tokio::task::JoinSet::new();
    for way in 0..6 * EACH {
        tasks.spawn(end_one(server.addr, way));
    }
    // And sessions whose actor cannot run: clients that stop reading while
    // a flood fills their sockets, closed 1013 and cut.
    let mut stalled = Vec::new();
    for _ in 0..EACH {
        let mut conn = RawConn::upgrade_small_buffer(server.addr, "/ws").await;
        conn.read_frame().await.expect("welcome");
        conn.send_frame(true, 1, json!({"type":"join","room":"flood"}).to_string().as_bytes()).await;
        conn.read_frame().await.expect("joined");
        stalled.push(conn);
    }
    let mut publisher = Client::connect(&server.url("/ws/flood")).await;
    let body = common::text(&"f".repeat(8 * 1024));
    for _ in 0..2000 {
        publisher.send(body.clone()).await;
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a session ended");
    }
    for mut conn in stalled {
        conn.read_to_end(common::DEADLINE).await;
    }
    publisher.close().await;
    let started = std::time::Instant::now();
    while server.metric("roomcast_connections").await > 0 {
        assert!(started.elapsed() < common::DEADLINE, "connections left open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let slow = server.metric("roomcast_slow_consumer_closes_total").await;
    let timeouts = server.metric("roomcast_heartbeat_timeouts_total").await;
    assert!(slow >= EACH as u64 / 2, "{slow} slow consumers closed, {timeouts} heartbeat timeouts");
    assert!(server.metric("roomcast_heartbeat_timeouts_total").await >= EACH as u64);
    assert_eq!(server.metric("roomcast_socket_mismatches_total").await, 0);
    assert!(!server.log_text().contains("no longer names its connection's socket"));
}
