//! No ghosts: a client that vanishes at any point of a raw handshake
//! leaves no member behind (in `members`, `rooms`, `/api/rooms`, or the
//! room's count toward `room_full`), and no connection counted.

mod common;

use std::time::Duration;

use common::raw::RawConn;
use common::{Client, Server};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HANDSHAKES: usize = 2000;
const AT_ONCE: usize = 50;

/// Where a client resets its connection.
#[derive(Clone, Copy, Debug)]
enum Point {
    BeforeSending,
    InTheRequest,
    RightAfterTheRequest,
    InTheResponse,
    AfterTheUpgrade,
    AfterAFrame,
}

const POINTS: [Point; 6] = [
    Point::BeforeSending,
    Point::InTheRequest,
    Point::RightAfterTheRequest,
    Point::InTheResponse,
    Point::AfterTheUpgrade,
    Point::AfterAFrame,
];

async fn vanish(server: std::net::SocketAddr, room: String, point: Point) {
    let mut stream = TcpStream::connect(server).await.expect("connect");
    let request = format!(
        "GET /ws/{room} HTTP/1.1\r\nHost: {server}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    match point {
        Point::BeforeSending => {}
        Point::InTheRequest => {
            let _ = stream.write_all(&request.as_bytes()[..request.len() / 2]).await;
        }
        // The race the registration guards against: the handler waits for
        // the registry while the client is already gone.
        Point::RightAfterTheRequest => {
            let _ = stream.write_all(request.as_bytes()).await;
        }
        Point::InTheResponse | Point::AfterTheUpgrade | Point::AfterAFrame => {
            let _ = stream.write_all(request.as_bytes()).await;
            let mut head = vec![0u8; if matches!(point, Point::InTheResponse) { 12 } else { 129 }];
            let _ = tokio::time::timeout(common::DEADLINE, stream.read(&mut head)).await;
            if matches!(point, Point::AfterAFrame) {
                let _ = stream.write_all(&common::raw::frame(true, 1, b"boo", true)).await;
            }
        }
    }
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_reset_at_any_point_leave_no_member_behind() {
    let server = Server::start(&[
        ("ROOMCAST_API__KEY", "k"),
        ("ROOMCAST_LIMITS__MAX_MEMBERS_PER_ROOM", "3"),
        ("ROOMCAST_LOG__LEVEL", "warn"),
    ]);
    let addr = server.addr;
    let mut rng = fastrand::Rng::with_seed(8);
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..HANDSHAKES {
        let point = POINTS[rng.usize(..POINTS.len())];
        let room = format!("ghost{}", n % 7);
        tasks.spawn(vanish(addr, room, point));
        if tasks.len() >= AT_ONCE {
            tasks.join_next().await.expect("a task").expect("it ran");
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("it ran");
    }
    // Every connection has ended; there is no event for it but the gauge.
    let started = std::time::Instant::now();
    while server.metric("roomcast_connections").await > 0 {
        assert!(started.elapsed() < common::DEADLINE, "connections still counted after {:?}", common::DEADLINE);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A session ends its registration before it stops counting, so by now
    // the registry has heard of every one.
    let mut probe = Client::json(&server).await;
    let rooms = probe.request(json!({"type":"rooms"})).await;
    assert_eq!(rooms["rooms"], json!([]), "ghost members");
    let listed = reqwest::Client::new()
        .get(server.http("/api/rooms"))
        .bearer_auth("k")
        .send()
        .await
        .expect("/api/rooms")
        .text()
        .await
        .expect("body");
    assert_eq!(listed, r#"{"rooms":[]}"#);
    // No room is locked by ghosts: each still takes its 3 members.
    for n in 0..7 {
        let room = format!("ghost{n}");
        let _members: Vec<RawConn> = futures_util::future::join_all(
            (0..3).map(|_| async { RawConn::upgrade(addr, &format!("/ws/{room}"), &[]).await.expect("not full") }),
        )
        .await;
    }
    assert_eq!(server.metric("roomcast_socket_mismatches_total").await, 0);
}
