//! WebSocket framing on every endpoint: exact echo, fragments, the message
//! size limit (1009), invalid UTF-8 (1007), protocol violations (1002),
//! pings and the close handshake. After each refusal the server goes on.

mod common;

use std::time::Duration;

use common::raw::{RawConn, frame};
use common::{Client, Server, binary, text};
use serde_json::json;

const LIMIT: usize = 1000;

fn server() -> Server {
    Server::start(&[("ROOMCAST_LIMITS__MAX_MESSAGE_BYTES", &LIMIT.to_string())])
}

/// The server still serves: a fresh echo round trip works.
async fn still_serving(server: &Server) {
    let mut probe = Client::connect(&server.url("/echo")).await;
    probe.send(text("alive?")).await;
    assert_eq!(probe.recv().await, text("alive?"));
}

const ENDPOINTS: [&str; 3] = ["/echo", "/ws", "/ws/room"];

/// A raw connection to `path`, past the `welcome` on `/ws`.
async fn open(server: &Server, path: &str) -> RawConn {
    let mut conn = RawConn::upgrade(server.addr, path, &[]).await.expect("upgrade");
    if path == "/ws" {
        let welcome = conn.read_frame().await.expect("welcome");
        assert!(welcome.text().contains("\"welcome\""));
    }
    conn
}

#[tokio::test]
async fn echo_is_exact() {
    let server = server();
    let mut client = Client::connect(&server.url("/echo")).await;
    let long = "€".repeat(LIMIT / 3);
    for message in [text(""), text("plain"), text("ünïcødé 😀"), text(&long), binary(&[]), binary(&[0, 1, 254, 255])]
    {
        client.send(message.clone()).await;
        assert_eq!(client.recv().await, message);
    }
    client.close().await;
}

#[tokio::test]
async fn fragments_are_joined_into_one_message() {
    let server = server();
    let mut conn = open(&server, "/echo").await;
    let euro = "€".as_bytes();
    conn.send_frame(false, 1, b"frag").await;
    conn.send_frame(true, 9, b"ping between").await; // control frames may interleave
    conn.send_frame(false, 0, &euro[..1]).await;
    conn.send_frame(true, 0, &euro[1..]).await;
    let pong = conn.read_frame().await.unwrap();
    assert_eq!((pong.opcode, pong.payload.as_slice()), (10, &b"ping between"[..]));
    let echoed = conn.read_frame().await.unwrap();
    assert_eq!((echoed.fin, echoed.opcode, echoed.text()), (true, 1, "frag€"));
    conn.send_frame(false, 2, &[1, 2]).await;
    conn.send_frame(true, 0, &[3]).await;
    assert_eq!(conn.read_frame().await.unwrap().payload, vec![1, 2, 3]);

    // Fragmented text on /ws is one request.
    let mut conn = open(&server, "/ws").await;
    conn.send_frame(false, 1, b"{\"type\":").await;
    conn.send_frame(true, 0, b"\"ping\",\"ref\":1}").await;
    assert_eq!(conn.read_frame().await.unwrap().text(), "{\"type\":\"pong\",\"ref\":1}");
}

#[tokio::test]
async fn exactly_the_limit_passes_on_every_endpoint() {
    let server = server();
    // /echo
    let mut echo = Client::connect(&server.url("/echo")).await;
    echo.send(binary(&vec![7; LIMIT])).await;
    assert_eq!(echo.recv().await, binary(&vec![7; LIMIT]));
    // /ws: a publish frame of exactly LIMIT bytes
    let mut member = Client::json(&server).await;
    member.join("room").await;
    let envelope = json!({"type":"publish","room":"room","body":""}).to_string();
    let body = "x".repeat(LIMIT - envelope.len());
    let request = json!({"type":"publish","room":"room","body":body}).to_string();
    assert_eq!(request.len(), LIMIT);
    member.send_text(&request).await;
    assert_eq!(member.expect("message").await["body"], json!(body));
    // /ws/{room}
    let mut raw = Client::connect(&server.url("/ws/room")).await;
    member.expect("presence").await;
    raw.send(text(&"y".repeat(LIMIT))).await;
    assert_eq!(member.expect("message").await["body"], json!("y".repeat(LIMIT)));
}

#[tokio::test]
async fn one_byte_over_the_limit_closes_1009_on_every_endpoint() {
    let server = server();
    for path in ENDPOINTS {
        // one frame
        let mut conn = open(&server, path).await;
        conn.send_frame(true, 2, &vec![0; LIMIT + 1]).await;
        assert_eq!(conn.read_to_end(Duration::from_secs(5)).await, Some(1009), "{path}: one frame");
        // fragments that only together pass the limit
        let mut conn = open(&server, path).await;
        conn.send_frame(false, 1, &vec![b'a'; LIMIT / 2]).await;
        conn.send_frame(false, 0, &vec![b'a'; LIMIT / 2]).await;
        conn.send_frame(true, 0, b"a").await;
        assert_eq!(conn.read_to_end(Duration::from_secs(5)).await, Some(1009), "{path}: fragments");
    }
    assert!(server.metric("roomcast_protocol_errors_total").await >= 6);
    still_serving(&server).await;
}

#[tokio::test]
async fn an_announced_huge_frame_is_refused_from_its_header() {
    let server = server();
    let mut conn = open(&server, "/echo").await;
    // Header of a 1 GiB binary frame, and only a few bytes of it.
    let mut header = vec![0x82, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 30).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4, 0, 0, 0, 0]);
    conn.send_raw(&header).await;
    assert_eq!(conn.read_to_end(Duration::from_secs(5)).await, Some(1009));
    still_serving(&server).await;
}

#[tokio::test]
async fn invalid_utf8_closes_1007_on_every_endpoint() {
    let server = server();
    for path in ENDPOINTS {
        let mut conn = open(&server, path).await;
        conn.send_frame(true, 1, b"bad \xff\xfe text").await;
        assert_eq!(conn.read_to_end(Duration::from_secs(5)).await, Some(1007), "{path}: one frame");
        let mut conn = open(&server, path).await;
        conn.send_frame(false, 1, b"fine so far").await;
        conn.send_frame(false, 0, b"\xed\xa0\x80").await; // a UTF-16 surrogate
        assert_eq!(conn.read_to_end(Duration::from_secs(5)).await, Some(1007), "{path}: fragment");
    }
    still_serving(&server).await;
}

#[tokio::test]
async fn protocol_violations_close_1002() {
    let server = server();
    let mut long_ping = frame(true, 9, &[0; 126], true);
    long_ping.truncate(long_ping.len());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("unmasked frame", frame(true, 1, b"hi", false)),
        ("reserved bit", {
            let mut f = frame(true, 1, b"hi", true);
            f[0] |= 0x40;
            f
        }),
        ("reserved opcode", frame(true, 3, b"", true)),
        ("fragmented ping", frame(false, 9, b"", true)),
        ("continuation without start", frame(true, 0, b"x", true)),
        ("ping over 125 bytes", long_ping),
        ("close with 1-byte payload", frame(true, 8, &[3], true)),
        ("close with reserved code", frame(true, 8, &1005u16.to_be_bytes(), true)),
    ];
    for path in ENDPOINTS {
        for (what, bytes) in &cases {
            let mut conn = open(&server, path).await;
            conn.send_raw(bytes).await;
            assert_eq!(conn.read_to_end(Duration::from_secs(5)).await, Some(1002), "{path}: {what}");
        }
        // A new message while a fragmented one is open.
        let mut conn = open(&server, path).await;
        conn.send_frame(false, 1, b"open").await;
        conn.send_frame(true, 1, b"new").await;
        assert_eq!(conn.read_to_end(Duration::from_secs(5)).await, Some(1002), "{path}: interleaved messages");
    }
    still_serving(&server).await;
}

#[tokio::test]
async fn pings_get_pongs_and_close_is_answered() {
    let server = server();
    for path in ENDPOINTS {
        let mut conn = open(&server, path).await;
        conn.send_frame(true, 9, b"are you there").await;
        let pong = conn.read_frame().await.unwrap();
        assert_eq!((pong.opcode, pong.payload.as_slice()), (10, &b"are you there"[..]), "{path}");
        let mut close = 4001u16.to_be_bytes().to_vec();
        close.extend_from_slice(b"bye");
        conn.send_frame(true, 8, &close).await;
        // The server closes the TCP connection first and at once (RFC 6455
        // §7.1.1), rather than waiting out actix's one-second linger for the
        // client to close.
        let sent = std::time::Instant::now();
        assert_eq!(conn.read_to_end(Duration::from_secs(5)).await, Some(4001), "{path}: close code echoed");
        assert!(sent.elapsed() < Duration::from_millis(700), "{path}: TCP closed after {:?}", sent.elapsed());
        let mut conn = open(&server, path).await;
        conn.send_frame(true, 8, b"").await;
        assert_eq!(conn.read_to_end(Duration::from_secs(5)).await, Some(1005), "{path}: empty close answered");
    }
}

#[tokio::test]
async fn a_client_that_vanishes_is_no_protocol_error() {
    let server = server();
    let mut watcher = Client::json(&server).await;
    watcher.join("v").await;
    for path in ["/ws", "/ws/v", "/echo"] {
        let mut conn = open(&server, path).await;
        if path == "/ws" {
            conn.send_frame(true, 1, b"{\"type\":\"join\",\"room\":\"v\"}").await;
            conn.read_frame().await.unwrap();
        }
        drop(conn);
    }
    // Both room members that vanished leave; nothing was a protocol error.
    for _ in 0..4 {
        let frame = watcher.expect("presence").await;
        assert!(frame["event"] == "join" || frame["event"] == "leave");
    }
    assert_eq!(server.metric("roomcast_protocol_errors_total").await, 0);
    still_serving(&server).await;
}

/// A client that goes on sending fragments past the limit, and reads only
/// then: the server answers 1009 at the second fragment and keeps reading
/// (discarding) until the client's close, so the fragments still coming
/// make no reset that would destroy the close frame before it is read.
async fn oversized_in_fragments_then_read(server: &Server) -> Option<u16> {
    let mut conn = open(server, "/echo").await;
    conn.send_frame(false, 1, &[b'a'; 600]).await;
    for _ in 0..40 {
        conn.send_frame(false, 0, &[b'a'; 600]).await;
        tokio::task::yield_now().await;
    }
    let code = common::raw::read_close_from(&mut conn.stream).await;
    conn.send_frame(true, 8, &1009u16.to_be_bytes()).await;
    code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_in_fragments_gets_its_1009_every_time() {
    let server = server();
    let mut codes = Vec::new();
    for _ in 0..10 {
        let batch = futures_util::future::join_all((0..10).map(|_| oversized_in_fragments_then_read(&server)));
        codes.extend(batch.await);
    }
    let delivered = codes.iter().filter(|code| **code == Some(1009)).count();
    assert_eq!(delivered, 100, "close frames: {codes:?}");
    still_serving(&server).await;
}

#[tokio::test]
async fn close_reasons_say_what_was_wrong() {
    let server = server();
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (frame(true, 8, &999u16.to_be_bytes(), true), 1002, "invalid close code 999"),
        (frame(true, 8, &[0x03, 0xe8, 0xff], true), 1007, "invalid UTF-8 in the close reason"),
        (frame(true, 3, b"", true), 1002, "unknown opcode 3"),
        (frame(true, 1, b"hi", false), 1002, "masked"),
        (frame(true, 0, b"x", true), 1002, "no message to continue"),
        (frame(true, 2, &vec![0; LIMIT + 1], true), 1009, "message too big"),
    ];
    for (bytes, code, reason) in cases {
        let mut conn = open(&server, "/echo").await;
        conn.send_raw(&bytes).await;
        let close = loop {
            let frame = conn.read_frame().await.expect("a close frame");
            if frame.opcode == 8 {
                break frame;
            }
        };
        assert_eq!(close.close_code(), Some(code), "{reason}");
        let text = String::from_utf8_lossy(&close.payload[2..]).to_string();
        assert!(text.contains(reason), "{reason}: the reason given was {text:?}");
    }
    still_serving(&server).await;
}

/// A client that closes while one of its own frames, larger than a write
/// batch, is half sent gets the rest of it, then the answer to its close;
/// the arithmetic on what is left of the frame cannot overflow (it once
/// panicked: `start + usize::MAX`).
#[tokio::test]
async fn closing_while_a_large_frame_is_half_sent_finishes_it() {
    let size = 8 << 20;
    let server = Server::start(&[
        ("ROOMCAST_LIMITS__MAX_MESSAGE_BYTES", "16777216"),
        ("ROOMCAST_LIMITS__OUTBOUND_BYTES", "64MiB"),
    ]);
    let mut conn = RawConn::upgrade_small_buffer(server.addr, "/echo").await;
    conn.send_frame(true, 2, &vec![7u8; size]).await;
    // The echo has begun (its first fragment is here) and cannot be done:
    // 8 MiB do not fit in the socket buffers of a client that reads 4 KiB.
    let first = conn.read_frame().await.expect("the first fragment");
    assert_eq!((first.opcode, first.fin), (2, false), "a frame this large goes out in fragments");
    conn.send_frame(true, 8, &1000u16.to_be_bytes()).await;
    let mut received = first.payload.len();
    let code = loop {
        let frame = conn.read_frame().await.expect("the rest of the frame, then the close");
        match frame.opcode {
            0 => received += frame.payload.len(),
            8 => break frame.close_code(),
            other => panic!("unexpected opcode {other}"),
        }
    };
    assert_eq!(received, size, "the whole frame, before the close");
    assert_eq!(code, Some(1000));
    still_serving(&server).await;
    assert!(!server.log_text().contains("panicked"), "{}", server.log_text());
    assert_eq!(server.metric("roomcast_panics_total").await, 0);
}
