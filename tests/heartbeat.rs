//! Heartbeat: the server pings every interval; a client from which nothing
//! arrives for the timeout is closed (1011) and its TCP connection dropped
//! within timeout + interval, also when its actor cannot run because the
//! client stopped reading in a busy room.

mod common;

use std::time::{Duration, Instant};

use common::raw::RawConn;
use common::{Client, Server, binary, text};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

const INTERVAL: Duration = Duration::from_millis(300);
const TIMEOUT: Duration = Duration::from_millis(900);
/// Messages the busy-room publisher sends.
const FLOOD: u64 = 1500;
/// Scheduling noise allowed on a busy 2-core CI machine.
const SLACK: Duration = Duration::from_millis(600);

fn server(extra: &[(&str, &str)]) -> Server {
    let mut env = vec![("ROOMCAST_HEARTBEAT__INTERVAL", "300ms"), ("ROOMCAST_HEARTBEAT__TIMEOUT", "900ms")];
    env.extend_from_slice(extra);
    Server::start(&env)
}

/// A `/ws` client that joins `room` with raw frames and then goes silent:
/// it neither reads nor answers pings. Returns it, its id, and when it sent
/// its last frame.
async fn silent_member(server: &Server, room: &str) -> (RawConn, String, Instant) {
    let mut conn = RawConn::upgrade(server.addr, "/ws", &[]).await.expect("upgrade");
    let welcome: serde_json::Value = serde_json::from_str(conn.read_frame().await.unwrap().text()).unwrap();
    conn.send_frame(true, 1, json!({"type":"join","room":room}).to_string().as_bytes()).await;
    let last_frame = Instant::now();
    let joined = conn.read_frame().await.unwrap();
    assert!(joined.text().contains("\"joined\""));
    (conn, welcome["id"].as_str().unwrap().to_string(), last_frame)
}

/// Waits for the presence leave of `id`, checking that messages keep their
/// order on the way; returns when it came.
async fn wait_for_leave(watcher: &mut Client, id: &str, next_seq: &mut u64) -> Instant {
    loop {
        let frame = watcher.recv_json().await;
        match frame["type"].as_str() {
            Some("presence") if frame["event"] == "leave" && frame["id"] == id => {
                return Instant::now();
            }
            Some("message") => {
                assert_eq!(frame["seq"], *next_seq, "messages in order, none lost");
                *next_seq += 1;
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn a_client_that_answers_pings_stays() {
    let server = server(&[]);
    let mut client = Client::json(&server).await;
    let started = Instant::now();
    let mut pings = 0;
    // tungstenite answers each ping while we read.
    while started.elapsed() < TIMEOUT * 3 {
        match tokio::time::timeout(TIMEOUT, client.next_frame()).await {
            Ok(Message::Ping(_)) => pings += 1,
            Ok(other) => panic!("unexpected frame {other:?}"),
            Err(_) => panic!("no ping within the timeout"),
        }
    }
    assert!(pings >= 5, "the server pings every interval: {pings} pings in {:?}", TIMEOUT * 3);
    assert_eq!(client.request(json!({"type":"ping"})).await["type"], "pong");
    assert_eq!(server.metric("roomcast_heartbeat_timeouts_total").await, 0);
}

#[tokio::test]
async fn a_silent_client_is_closed_1011_within_timeout_plus_interval() {
    let server = server(&[]);
    let mut watcher = Client::json(&server).await;
    watcher.join("quiet").await;
    let (mut silent, id, last_frame) = silent_member(&server, "quiet").await;
    watcher.expect("presence").await;
    let left = wait_for_leave(&mut watcher, &id, &mut 1).await;
    let silence = left - last_frame;
    eprintln!("silent client dropped after {silence:?} (timeout {TIMEOUT:?}, interval {INTERVAL:?})");
    assert!(silence >= TIMEOUT, "closed after {silence:?}, before the timeout");
    assert!(silence <= TIMEOUT + INTERVAL + SLACK, "closed after {silence:?}");
    // The socket took the close frame: pings, then 1011, then the end.
    assert_eq!(silent.read_to_end(Duration::from_secs(2)).await, Some(1011));
    assert_eq!(server.metric("roomcast_heartbeat_timeouts_total").await, 1);
    assert_eq!(watcher.request(json!({"type":"ping"})).await["type"], "pong", "the watcher stays");
}

#[tokio::test]
async fn a_dead_client_in_a_busy_room_is_dropped_and_the_room_loses_nothing() {
    // A queue long enough that the heartbeat, not the slow-consumer bound,
    // ends the dead client.
    let server = server(&[
        ("ROOMCAST_LIMITS__OUTBOUND_QUEUE", "100000"),
        ("ROOMCAST_LIMITS__OUTBOUND_BYTES", "1GiB"),
        ("ROOMCAST_LIMITS__MESSAGES_PER_SECOND", "100000"),
        ("ROOMCAST_LIMITS__BURST", "100000"),
    ]);
    let mut watcher = Client::json(&server).await;
    watcher.join("busy").await;
    // The dead client is a raw member that never reads: from the start,
    // nothing arrives from it.
    let connected = Instant::now();
    let mut dead = RawConn::upgrade_small_buffer(server.addr, "/ws/busy").await;
    let id = watcher.expect("presence").await["id"].as_str().unwrap().to_string();
    let mut publisher = Client::connect(&server.url("/ws/busy")).await;
    watcher.expect("presence").await;

    let flood = tokio::spawn(async move {
        // 8 MiB of binary frames reach raw members only: they fill the dead
        // client's socket, after which its actor cannot run. The watcher
        // gets none of them.
        let block = vec![0u8; 64 * 1024];
        for _ in 0..128 {
            publisher.send(binary(&block)).await;
        }
        // Then a steady 1 MB/s of text, which the watcher reads as messages.
        let body = "x".repeat(2048);
        let mut ticker = tokio::time::interval(Duration::from_millis(2));
        for _ in 0..FLOOD {
            ticker.tick().await;
            publisher.send(text(&body)).await;
        }
        // It never reads, so it answers no ping: leave before the timeout.
        publisher.close().await;
    });
    let mut next_seq = 1;
    let left = wait_for_leave(&mut watcher, &id, &mut next_seq).await;
    let silence = left - connected;
    eprintln!("dead client in a busy room dropped after {silence:?} (timeout {TIMEOUT:?}, interval {INTERVAL:?})");
    assert!(silence >= TIMEOUT, "closed after {silence:?}, before the timeout");
    assert!(silence <= TIMEOUT + INTERVAL + SLACK, "dead client dropped after {silence:?}");
    // Its actor could not run: the watchdog had to cut the connection.
    server.wait_for_log(&format!("session {id}: cut the connection"));
    // Keep reading (and so answering pings) while the flood goes on.
    while next_seq <= FLOOD {
        let frame = watcher.recv_json().await;
        if frame["type"] == "message" {
            assert_eq!(frame["seq"], next_seq, "messages in order, none lost");
            next_seq += 1;
        }
    }
    flood.await.unwrap();
    assert_eq!(server.metric("roomcast_heartbeat_timeouts_total").await, 1, "only the dead client timed out");
    assert_eq!(server.metric("roomcast_slow_consumer_closes_total").await, 0);
    dead.read_to_end(Duration::from_secs(5)).await;
}

/// A session that ended while the client was not reading (here: a 1 MiB
/// echo and the client's close frame, handled in one go: the echo goes
/// first, then the close answer) leaves a connection whose last bytes
/// cannot be sent: actix hands them to the kernel and closes, leaving an
/// orphan socket that would probe the client's closed window for minutes.
/// With TCP_USER_TIMEOUT the kernel drops it once the heartbeat timeout
/// has passed. Such a drop sends no reset, so the test watches the server's
/// side in /proc/net/tcp.
#[tokio::test]
async fn an_ended_session_whose_client_does_not_read_still_goes() {
    let server =
        server(&[("ROOMCAST_LIMITS__MAX_MESSAGE_BYTES", "2000000"), ("ROOMCAST_LOG__LEVEL", "info,roomcast=debug")]);
    let mut conn = RawConn::upgrade_small_buffer(server.addr, "/echo").await;
    let client_port = conn.stream.local_addr().unwrap().port();
    let mut bytes = common::raw::frame(true, 1, &vec![b'e'; 1 << 20], true);
    bytes.extend(common::raw::frame(true, 8, &1000u16.to_be_bytes(), true));
    conn.send_raw(&bytes).await;
    let sent = Instant::now();
    // The one session's id is the one in its first log line.
    let opened = server.wait_for_log("opened on /echo");
    let id = opened.split("session ").nth(1).and_then(|rest| rest.split(' ').next()).expect("a session id");
    server.wait_for_log(&format!("session {id} closed"));
    // The kernel's table is the only witness (no reset reaches the client),
    // and it offers no event to wait on: poll it.
    while server_side_exists(server.addr.port(), client_port) {
        assert!(sent.elapsed() < Duration::from_secs(10), "the server still holds the connection after 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = sent.elapsed();
    eprintln!("the unread connection of an ended session was dropped after {took:?}");
    assert!(took >= TIMEOUT, "not before the heartbeat timeout: {took:?}");
    assert!(!server.log_text().contains("cut the connection"), "the kernel did it, not the watchdog");
}

/// Whether the kernel still has the server's end of a loopback connection
/// (orphans included): a line of /proc/net/tcp with these local and remote
/// ports.
fn server_side_exists(server_port: u16, client_port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let local = format!(":{server_port:04X} ");
    let remote = format!(":{client_port:04X} ");
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() > 2 && format!("{} ", fields[1]).ends_with(&local) && format!("{} ", fields[2]).ends_with(&remote)
    })
}
