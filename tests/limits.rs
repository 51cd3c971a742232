//! Protection: the origin policy, `max_connections`, and the per-session
//! rate limit. Each refusal is clear, and the server and other clients go on.

mod common;

use std::time::Duration;

use common::raw::RawConn;
use common::{Client, Server, refused_status};
use serde_json::json;

const ENDPOINTS: [&str; 3] = ["/ws", "/ws/lobby", "/echo"];

async fn status(server: &Server, path: &str, headers: &[(&str, &str)]) -> u16 {
    match RawConn::upgrade(server.addr, path, headers).await {
        Ok(_) => 101,
        Err(refused) => refused.status,
    }
}

#[tokio::test]
async fn same_host_origin_policy_is_the_default() {
    let server = Server::start(&[]);
    let own = format!("http://{}", server.addr);
    for path in ENDPOINTS {
        assert_eq!(status(&server, path, &[("Origin", &own)]).await, 101, "{path}: same host");
        assert_eq!(status(&server, path, &[]).await, 101, "{path}: no Origin (allow_missing)");
        assert_eq!(status(&server, path, &[("Origin", "http://evil.example")]).await, 403, "{path}: other host");
        let other_port = format!("http://{}:1", server.addr.ip());
        assert_eq!(status(&server, path, &[("Origin", &other_port)]).await, 403, "{path}: other port");
        assert_eq!(status(&server, path, &[("Origin", "null")]).await, 403, "{path}: opaque origin");
    }
    assert_eq!(server.metric("roomcast_origin_rejections_total").await, 9);
    // The refusal says why, and the server goes on.
    let refused = RawConn::upgrade(server.addr, "/ws", &[("Origin", "http://evil.example")]).await.err().unwrap();
    assert!(refused.head.starts_with("HTTP/1.1 403"), "{}", refused.head);
    Client::json(&server).await;
}

#[tokio::test]
async fn allow_list_and_missing_origins() {
    let server = Server::start(&[
        ("ROOMCAST_ORIGIN__POLICY", "allow-list"),
        ("ROOMCAST_ORIGIN__ALLOW", "https://chat.example.com,http://localhost:3000"),
        ("ROOMCAST_ORIGIN__ALLOW_MISSING", "false"),
    ]);
    for path in ENDPOINTS {
        assert_eq!(status(&server, path, &[("Origin", "https://chat.example.com")]).await, 101, "{path}");
        assert_eq!(status(&server, path, &[("Origin", "https://CHAT.example.com:443")]).await, 101, "{path}");
        assert_eq!(status(&server, path, &[("Origin", "http://localhost:3000")]).await, 101, "{path}");
        assert_eq!(status(&server, path, &[("Origin", "http://chat.example.com")]).await, 403, "{path}: scheme");
        let own = format!("http://{}", server.addr);
        assert_eq!(status(&server, path, &[("Origin", &own)]).await, 403, "{path}: own host is not listed");
        assert_eq!(status(&server, path, &[]).await, 403, "{path}: missing Origin refused");
    }
}

#[tokio::test]
async fn any_origin_policy() {
    let server = Server::start(&[("ROOMCAST_ORIGIN__POLICY", "any"), ("ROOMCAST_ORIGIN__ALLOW_MISSING", "false")]);
    for origin in ["http://evil.example", "null", "whatever"] {
        assert_eq!(status(&server, "/ws", &[("Origin", origin)]).await, 101, "{origin}");
    }
    assert_eq!(status(&server, "/echo", &[]).await, 101);
}

#[tokio::test]
async fn max_connections_answers_503_and_frees_slots() {
    let server = Server::start(&[("ROOMCAST_SERVER__MAX_CONNECTIONS", "3")]);
    let a = Client::json(&server).await;
    let _b = Client::connect(&server.url("/echo")).await;
    let _c = Client::connect(&server.url("/ws/room")).await;
    for path in ENDPOINTS {
        let refused = Client::try_connect(&server.url(path), &[]).await.err().expect("refused");
        assert_eq!(refused_status(refused), 503, "{path}");
    }
    assert_eq!(server.metric("roomcast_connections").await, 3);
    // Plain HTTP is not a WebSocket connection and still works.
    assert_eq!(reqwest::get(server.http("/healthz")).await.unwrap().status(), 200);
    a.close().await;
    let mut d = Client::json(&server).await;
    assert_eq!(d.request(json!({"type":"ping"})).await["type"], "pong");
}

#[tokio::test]
async fn rate_limit_on_ws_refuses_with_an_error_and_keeps_the_connection() {
    let server = Server::start(&[("ROOMCAST_LIMITS__BURST", "3"), ("ROOMCAST_LIMITS__MESSAGES_PER_SECOND", "2")]);
    let mut a = Client::json(&server).await;
    for n in 0..8 {
        a.send_json(json!({"type":"ping","ref":n})).await;
    }
    for n in 0..8 {
        let reply = a.recv_json().await;
        assert_eq!(reply["ref"], n);
        if n < 3 {
            assert_eq!(reply["type"], "pong", "{reply}");
        } else {
            assert_eq!(reply["code"], "rate_limited", "{reply}");
        }
    }
    // Refused messages take no token: one refill later, one more passes.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(a.request(json!({"type":"ping"})).await["type"], "pong");
    assert_eq!(server.metric("roomcast_rate_limited_total").await, 5);
}

#[tokio::test]
async fn a_flooding_client_is_limited_and_the_room_carries_on() {
    let server = Server::start(&[("ROOMCAST_LIMITS__BURST", "20"), ("ROOMCAST_LIMITS__MESSAGES_PER_SECOND", "1")]);
    let mut flooder = Client::json(&server).await;
    let mut member = Client::json(&server).await;
    flooder.join("r").await;
    member.join("r").await;
    flooder.expect("presence").await;
    // Its join took a token; the bucket refills one a second meanwhile.
    for n in 0..500 {
        flooder.send_json(json!({"type":"publish","room":"r","body":n,"ref":n})).await;
    }
    let mut published = 0;
    let mut refused = 0;
    while published + refused < 500 {
        let reply = flooder.recv_json().await;
        match (reply["type"].as_str(), reply["code"].as_str()) {
            (Some("message"), _) => {}
            (Some("ok"), _) => published += 1,
            (Some("error"), Some("rate_limited")) => refused += 1,
            other => panic!("unexpected {other:?}: {reply}"),
        }
    }
    assert!((19..=20).contains(&published), "the burst less the join, plus refills: {published}");
    for n in 0..published {
        assert_eq!(member.expect("message").await["body"], n);
    }
    let mut other = Client::json(&server).await;
    other.join("r").await;
    assert_eq!(member.expect("presence").await["event"], "join", "the room carries on");
}
