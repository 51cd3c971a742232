//! The handshake gate: malformed handshakes (400, 426, 431), the names the
//! server answers to (421, which stops DNS rebinding), the Origin/Host
//! comparison with explicit ports, and connections per client address.
//! After each refusal the server goes on.

mod common;

use common::raw::RawConn;
use common::{Client, Server};

const ENDPOINTS: [&str; 3] = ["/ws", "/ws/lobby", "/echo"];
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// A handshake with `headers` in place of the usual ones, for `path`.
fn request(method: &str, path: &str, host: &str, headers: &[(&str, &str)]) -> String {
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text + "\r\n"
}

fn status(head: &str) -> u16 {
    head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status in {head:?}"))
}

const GOOD: [(&str, &str); 4] =
    [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Version", "13"), ("Sec-WebSocket-Key", KEY)];

/// The good handshake's headers with `name` replaced by `value` (or left
/// out when `value` is `None`), plus `extra`.
fn headers_with<'a>(name: &str, value: Option<&'a str>, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut headers: Vec<(&str, &str)> = GOOD.iter().copied().filter(|(n, _)| *n != name).collect();
    if let Some(value) = value {
        headers.push((GOOD.iter().find(|(n, _)| *n == name).map_or("X-Unused", |(n, _)| n), value));
    }
    headers.extend_from_slice(extra);
    headers
}

/// What is wrong, the method, the headers, the status expected.
type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, u16);

async fn still_serving(server: &Server) {
    let mut probe = Client::json(server).await;
    assert_eq!(probe.request(serde_json::json!({"type":"ping"})).await["type"], "pong");
}

#[tokio::test]
async fn malformed_handshakes_get_400_426_and_431() {
    let server = Server::start(&[]);
    let host = server.addr.to_string();
    let big = "a".repeat(32 * 1024);
    let cases: Vec<Case> = vec![
        ("good", "GET", headers_with("", None, &[]), 101),
        ("no key", "GET", headers_with("Sec-WebSocket-Key", None, &[]), 400),
        ("a key of 15 bytes", "GET", headers_with("Sec-WebSocket-Key", Some("dGhlIHNhbXBsZSBub25jZQ="), &[]), 400),
        ("a key that is not base64", "GET", headers_with("Sec-WebSocket-Key", Some("not a key at all, no"), &[]), 400),
        ("two keys", "GET", headers_with("", None, &[("Sec-WebSocket-Key", KEY)]), 400),
        ("no version", "GET", headers_with("Sec-WebSocket-Version", None, &[]), 400),
        ("version 8", "GET", headers_with("Sec-WebSocket-Version", Some("8"), &[]), 426),
        ("no Upgrade", "GET", headers_with("Upgrade", None, &[]), 400),
        ("Upgrade: h2c", "GET", headers_with("Upgrade", Some("h2c"), &[]), 400),
        ("no Connection: Upgrade", "GET", headers_with("Connection", Some("keep-alive"), &[]), 400),
        ("a POST", "POST", headers_with("", None, &[("Content-Length", "0")]), 400),
        ("32 KiB of header", "GET", headers_with("", None, &[("X-Padding", &big)]), 431),
        ("a 32 KiB Origin", "GET", headers_with("", None, &[("Origin", &big)]), 431),
    ];
    for path in ENDPOINTS {
        for (what, method, headers, expected) in &cases {
            let head = RawConn::handshake_text(server.addr, &request(method, path, &host, headers)).await;
            assert_eq!(status(&head), *expected, "{path}: {what}: {head}");
            if *expected == 426 {
                assert!(head.to_ascii_lowercase().contains("sec-websocket-version: 13"), "{what}: {head}");
            }
        }
    }
    assert!(!server.log_text().contains(&big[..1000]), "a client's huge header is not copied into the log");
    still_serving(&server).await;
}

#[tokio::test]
async fn dns_rebinding_gets_421_on_a_loopback_server() {
    // The default server is bound to 127.0.0.1 with no server.hosts: it
    // answers loopback names only.
    let server = Server::start(&[]);
    let port = server.addr.port();
    let evil = format!("evil.example:{port}");
    let evil_origin = format!("http://evil.example:{port}");
    let rebound = headers_with("", None, &[("Origin", &evil_origin)]);
    for path in ENDPOINTS {
        let head = RawConn::handshake_text(server.addr, &request("GET", path, &evil, &rebound)).await;
        assert_eq!(status(&head), 421, "{path}: {head}");
        for name in [format!("localhost:{port}"), format!("127.0.0.1:{port}"), format!("[::1]:{port}")] {
            let origin = format!("http://{name}");
            let own = headers_with("", None, &[("Origin", &origin)]);
            let head = RawConn::handshake_text(server.addr, &request("GET", path, &name, &own)).await;
            assert_eq!(status(&head), 101, "{path} as {name}: {head}");
        }
    }
    // The page and the API answer to the same names; health and metrics
    // answer whatever the name (load balancers and scrapers use addresses).
    for (path, expected) in [("/", 421), ("/api/rooms", 421), ("/healthz", 200), ("/metrics", 200)] {
        let head = RawConn::handshake_text(server.addr, &request("GET", path, &evil, &[])).await;
        assert_eq!(status(&head), expected, "{path}: {head}");
    }
    still_serving(&server).await;
}

#[tokio::test]
async fn server_hosts_lists_the_names_answered() {
    let server = Server::start(&[("ROOMCAST_SERVER__HOSTS", "chat.example.com"), ("ROOMCAST_ORIGIN__POLICY", "any")]);
    for (host, expected) in
        [("chat.example.com", 101), ("CHAT.example.com:8443", 101), ("localhost", 421), ("www.chat.example.com", 421)]
    {
        let head = RawConn::handshake_text(server.addr, &request("GET", "/ws", host, &GOOD)).await;
        assert_eq!(status(&head), expected, "{host}: {head}");
    }
}

#[tokio::test]
async fn same_host_compares_ports_explicitly() {
    let server = Server::start(&[("ROOMCAST_SERVER__HOSTS", "chat.example")]);
    // A Host without a port is the Origin scheme's default port.
    for (host, origin, expected) in [
        ("chat.example", "http://chat.example", 101),
        ("chat.example", "https://chat.example", 101),
        ("chat.example", "http://chat.example:8080", 403),
        ("chat.example", "https://chat.example:8443", 403),
        ("chat.example:8080", "http://chat.example:8080", 101),
        ("chat.example:8080", "http://chat.example", 403),
    ] {
        let headers = headers_with("", None, &[("Origin", origin)]);
        let head = RawConn::handshake_text(server.addr, &request("GET", "/ws", host, &headers)).await;
        assert_eq!(status(&head), expected, "Host {host}, Origin {origin}: {head}");
    }
}

#[tokio::test]
async fn connections_per_client_address_are_limited() {
    let server = Server::start(&[("ROOMCAST_SERVER__MAX_CONNECTIONS_PER_IP", "2")]);
    let here: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let first = RawConn::upgrade_from(here, server.addr, "/ws").await.expect("first");
    let _second = RawConn::upgrade_from(here, server.addr, "/echo").await.expect("second");
    for path in ENDPOINTS {
        let refused = RawConn::upgrade_from(here, server.addr, path).await.err().expect("a third is refused");
        assert_eq!(refused.status, 503, "{path}");
    }
    // Another address is another client.
    let elsewhere: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    let _other = RawConn::upgrade_from(elsewhere, server.addr, "/ws/lobby").await.expect("another address");
    assert_eq!(server.metric("roomcast_connections_refused_total").await, 3);
    // A slot comes back when a connection ends: the session lets go of it
    // before the server closes the TCP connection.
    let mut first = first;
    first.send_frame(true, 8, &1000u16.to_be_bytes()).await;
    assert_eq!(first.read_to_end(common::DEADLINE).await, Some(1000));
    RawConn::upgrade_from(here, server.addr, "/ws").await.expect("a slot came back");
}
