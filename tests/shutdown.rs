//! Graceful shutdown on SIGINT/SIGTERM: close 1001 to every client,
//! `/healthz` and new handshakes answer 503 while draining, and the process
//! exits 0 within `server.shutdown_timeout`.

mod common;

use std::time::Duration;

use common::raw::RawConn;
use common::{Client, Server, refused_status};
use serde_json::json;

#[tokio::test]
async fn sigterm_closes_1001_and_exits_0_once_clients_are_gone() {
    let mut server = Server::start(&[("ROOMCAST_SERVER__SHUTDOWN_TIMEOUT", "10s")]);
    let mut json_client = Client::json(&server).await;
    json_client.join("r").await;
    let mut raw_client = Client::connect(&server.url("/ws/r")).await;
    let mut echo_client = Client::connect(&server.url("/echo")).await;
    server.signal("TERM");
    server.wait_for_log("SIGTERM: draining 3 connections (at most 10s)");
    assert_eq!(json_client.close_code().await, 1001);
    assert_eq!(raw_client.close_code().await, 1001);
    assert_eq!(echo_client.close_code().await, 1001);
    // tungstenite answered each close: the drain ends well before the timeout.
    let (status, took) = server.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0));
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[tokio::test]
async fn while_draining_healthz_and_handshakes_answer_503_and_exit_comes_at_the_timeout() {
    let mut server = Server::start(&[("ROOMCAST_SERVER__SHUTDOWN_TIMEOUT", "3s")]);
    // A client that never answers the close keeps the drain going until
    // shutdown_timeout.
    let mut stubborn = RawConn::upgrade(server.addr, "/echo", &[]).await.expect("upgrade");
    server.signal("INT");
    assert_eq!(stubborn.read_close().await, Some(1001));
    let health = reqwest::get(server.http("/healthz")).await.unwrap();
    assert_eq!(health.status(), 503);
    for path in ["/ws", "/ws/r", "/echo"] {
        let refused = Client::try_connect(&server.url(path), &[]).await.err().expect("refused while draining");
        assert_eq!(refused_status(refused), 503, "{path}");
    }
    let (status, took) = server.wait_exit(Duration::from_secs(6));
    assert_eq!(status.code(), Some(0));
    assert!(took <= Duration::from_secs(3) + Duration::from_millis(500), "exit {took:?} after the signal");
    assert!(took >= Duration::from_secs(2), "waited for the client: {took:?}");
}

#[tokio::test]
async fn an_idle_server_exits_at_once() {
    let mut server = Server::start(&[]);
    assert_eq!(reqwest::get(server.http("/healthz")).await.unwrap().status(), 200);
    server.signal("TERM");
    let (status, took) = server.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0));
    assert!(took < Duration::from_secs(2), "took {took:?}");
}

#[tokio::test]
async fn queued_messages_are_delivered_before_the_1001() {
    let mut server = Server::start(&[("ROOMCAST_API__KEY", "k")]);
    let mut member = Client::json(&server).await;
    member.join("r").await;
    let http = reqwest::Client::new();
    for n in 0..20 {
        let response =
            http.post(server.http("/api/rooms/r/publish")).header("Authorization", "Bearer k").body(n.to_string());
        assert_eq!(response.send().await.unwrap().status(), 200);
    }
    server.signal("TERM");
    for n in 0..20 {
        assert_eq!(member.expect("message").await["body"], json!(n));
    }
    assert_eq!(member.close_code().await, 1001);
    assert_eq!(server.wait_exit(Duration::from_secs(5)).0.code(), Some(0));
}
