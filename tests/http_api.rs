//! Plain HTTP: `/healthz`, `/metrics`, the page, and the `/api` endpoints.

mod common;

use common::{Client, Server};
use serde_json::{Value, json};

const KEY: &str = "s3cret-key";

fn api_server() -> Server {
    Server::start(&[("ROOMCAST_API__KEY", KEY), ("ROOMCAST_LIMITS__MAX_MESSAGE_BYTES", "200")])
}

async fn publish(server: &Server, room: &str, auth: Option<&str>, body: &str) -> (u16, String) {
    let mut request =
        reqwest::Client::new().post(server.http(&format!("/api/rooms/{room}/publish"))).body(body.to_string());
    if let Some(auth) = auth {
        request = request.header("Authorization", auth);
    }
    let response = request.send().await.expect("request");
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn healthz_metrics_and_page() {
    let server = Server::start(&[]);
    let health = reqwest::get(server.http("/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap(), "ok");

    let mut a = Client::json(&server).await;
    a.join("m").await;
    a.request(json!({"type":"publish","room":"m","body":1})).await;
    let metrics = reqwest::get(server.http("/metrics")).await.unwrap();
    assert!(metrics.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    let text = metrics.text().await.unwrap();
    for name in [
        "roomcast_connections",
        "roomcast_rooms",
        "roomcast_messages_in_total",
        "roomcast_messages_out_total",
        "roomcast_heartbeat_timeouts_total",
        "roomcast_slow_consumer_closes_total",
        "roomcast_origin_rejections_total",
        "roomcast_rate_limited_total",
    ] {
        assert!(text.contains(&format!("# TYPE {name} ")), "{name} missing:\n{text}");
    }
    assert_eq!(server.metric("roomcast_connections").await, 1);
    assert_eq!(server.metric("roomcast_rooms").await, 1);
    assert_eq!(server.metric("roomcast_messages_in_total").await, 2, "join and publish");
    // welcome, joined, message, ok
    assert_eq!(server.metric("roomcast_messages_out_total").await, 4);

    let page = reqwest::get(server.http("/")).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = page.text().await.unwrap();
    assert!(html.contains("<title>roomcast</title>"));
    assert!(html.contains(r#"<link rel="icon" href="data:,">"#), "no request for /favicon.ico, no 404");
    assert_eq!(reqwest::get(server.http("/nope")).await.unwrap().status(), 404);
    // HEAD, as load balancers and uptime checkers send it.
    let http = reqwest::Client::new();
    for path in ["/healthz", "/metrics", "/", "/roomcast.js"] {
        let head = http.head(server.http(path)).send().await.unwrap();
        assert_eq!(head.status(), 200, "HEAD {path}");
    }
}

/// The JavaScript client library is served as the ES module npm ships
/// (the same file), for pages without a build step.
#[tokio::test]
async fn the_client_library_is_served_as_a_module() {
    let server = Server::start(&[]);
    let response = reqwest::get(server.http("/roomcast.js")).await.unwrap();
    assert_eq!(response.status(), 200);
    let kind = response.headers()["content-type"].to_str().unwrap().to_string();
    assert!(kind.starts_with("application/javascript"), "{kind}");
    let served = response.text().await.unwrap();
    let shipped = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/clients/js/roomcast.js")).unwrap();
    assert_eq!(served, shipped, "the file npm packs");
    assert!(served.contains("export class Roomcast"));
}

#[tokio::test]
async fn the_api_is_off_without_a_key() {
    let server = Server::start(&[]);
    assert_eq!(publish(&server, "r", Some("Bearer anything"), "1").await.0, 404);
    assert_eq!(reqwest::get(server.http("/api/rooms")).await.unwrap().status(), 404);
}

#[tokio::test]
async fn api_publish_reaches_members_and_is_authorized() {
    let server = api_server();
    let bearer = format!("Bearer {KEY}");
    assert_eq!(publish(&server, "r", None, "1").await.0, 401);
    assert_eq!(publish(&server, "r", Some("Bearer wrong"), "1").await.0, 401);
    assert_eq!(publish(&server, "r", Some(KEY), "1").await.0, 401, "the Bearer scheme is needed");
    // The scheme's name is case-insensitive (RFC 9110); the key is not.
    for scheme in ["bearer", "BEARER", "Bearer"] {
        assert_eq!(publish(&server, "r", Some(&format!("{scheme} {KEY}")), "1").await.0, 200, "{scheme}");
    }
    assert_eq!(publish(&server, "r", Some(&format!("Bearer {}", KEY.to_uppercase())), "1").await.0, 401);
    let unauthorized = reqwest::Client::new().get(server.http("/api/rooms")).send().await.unwrap();
    assert_eq!(unauthorized.status(), 401);
    assert_eq!(unauthorized.headers()["www-authenticate"], "Bearer");

    let mut member = Client::json(&server).await;
    member.join("news").await;
    let (status, reply) = publish(&server, "news", Some(&bearer), r#"{"headline":"hi"}"#).await;
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<Value>(&reply).unwrap(), json!({"seq":1}));
    let message = member.expect("message").await;
    assert_eq!(message["from"], "api");
    assert_eq!(message["nick"], json!(null));
    assert_eq!(message["body"], json!({"headline":"hi"}));
    assert_eq!(message["seq"], 1);
    for body in ["null", "\"text\"", "[1,2]", " 3 "] {
        let (status, _) = publish(&server, "news", Some(&bearer), body).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(member.expect("message").await["body"], serde_json::from_str::<Value>(body).unwrap());
    }
    // A room nobody is in keeps the message for whoever joins with history.
    publish(&server, "empty", Some(&bearer), "\"kept\"").await;
    let joined = member.request(json!({"type":"join","room":"empty","history":5})).await;
    assert_eq!(joined["history"][0]["body"], "kept");

    let rooms =
        reqwest::Client::new().get(server.http("/api/rooms")).header("Authorization", &bearer).send().await.unwrap();
    assert_eq!(rooms.status(), 200);
    assert_eq!(
        rooms.json::<Value>().await.unwrap(),
        json!({"rooms":[{"room":"empty","members":1},{"room":"news","members":1}]})
    );
}

#[tokio::test]
async fn api_refuses_bad_input_clearly() {
    let server = api_server();
    let bearer = format!("Bearer {KEY}");
    let (status, text) = publish(&server, "bad%20room", Some(&bearer), "1").await;
    assert_eq!(status, 400);
    assert!(text.contains("room"), "{text}");
    let (status, text) = publish(&server, "r", Some(&bearer), "{not json").await;
    assert_eq!(status, 400);
    assert!(text.contains("JSON"), "{text}");
    assert_eq!(publish(&server, "r", Some(&bearer), "1 2").await.0, 400, "one value only");
    assert_eq!(publish(&server, "r", Some(&bearer), "").await.0, 400);
    // max_message_bytes is 200: exactly 200 passes, 201 is 413.
    let exact = format!("\"{}\"", "x".repeat(198));
    assert_eq!(publish(&server, "r", Some(&bearer), &exact).await.0, 200);
    let over = format!("\"{}\"", "x".repeat(199));
    assert_eq!(publish(&server, "r", Some(&bearer), &over).await.0, 413);
    // Without the key the body size does not matter: 401 first.
    assert_eq!(publish(&server, "r", Some("Bearer no"), &over).await.0, 401);
    assert_eq!(reqwest::get(server.http("/api/other")).await.unwrap().status(), 401);
}
