//! `/ws/{room}`: verbatim relay between raw members, and interop with JSON
//! members.

mod common;

use common::raw::RawConn;
use common::{Client, Server, binary, text};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

/// A raw member's session id, learned from the presence event a JSON
/// member sees when it joins.
async fn raw_member(server: &Server, room: &str, watcher: &mut Client) -> (Client, String) {
    let raw = Client::connect(&server.url(&format!("/ws/{room}"))).await;
    let presence = watcher.expect("presence").await;
    assert_eq!(presence["event"], "join");
    assert_eq!(presence["nick"], json!(null));
    (raw, presence["id"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn raw_frames_are_relayed_verbatim_without_echo() {
    let server = Server::start(&[]);
    let mut a = Client::connect(&server.url("/ws/relay")).await;
    let mut b = Client::connect(&server.url("/ws/relay")).await;
    let mut c = Client::connect(&server.url("/ws/relay")).await;
    // `c` is the last to connect; once its first frame is relayed, the
    // registry has all three as members.
    c.send(text("hello from c")).await;
    assert_eq!(a.recv().await, text("hello from c"));
    assert_eq!(b.recv().await, text("hello from c"));
    a.send(binary(&[0, 159, 255, 10])).await;
    a.send(text("{\"not\":\"parsed\"}")).await;
    for client in [&mut b, &mut c] {
        assert_eq!(client.recv().await, binary(&[0, 159, 255, 10]));
        assert_eq!(client.recv().await, text("{\"not\":\"parsed\"}"));
    }
    // The sender got no copy: its next frame is b's.
    b.send(text("from b")).await;
    assert_eq!(a.recv().await, text("from b"));
}

#[tokio::test]
async fn raw_and_json_members_interoperate() {
    let server = Server::start(&[]);
    let mut json_member = Client::json(&server).await;
    json_member.join("mix").await;
    let (mut raw, raw_id) = raw_member(&server, "mix", &mut json_member).await;

    // Raw text -> JSON members: a message with a seq, from the raw id.
    raw.send(text("plain text")).await;
    let message = json_member.expect("message").await;
    assert_eq!(message["seq"], 1);
    assert_eq!(message["from"], json!(raw_id));
    assert_eq!(message["nick"], json!(null));
    assert_eq!(message["body"], "plain text");

    // Raw binary reaches raw members only and takes no seq.
    let (mut raw2, _) = raw_member(&server, "mix", &mut json_member).await;
    raw.send(binary(b"\x00bin")).await;
    assert_eq!(raw2.recv().await, binary(b"\x00bin"));

    // JSON publish -> raw members: a string body as its bare text, any other
    // body as JSON text.
    let ok = json_member.request(json!({"type":"publish","room":"mix","body":"hi \"raw\""})).await;
    assert_eq!(ok["seq"], 2, "the binary frame took no seq");
    assert_eq!(raw.recv().await, text("hi \"raw\""));
    assert_eq!(raw2.recv().await, text("hi \"raw\""));
    json_member.request(json!({"type":"publish","room":"mix","body":{"n":[1,2]}})).await;
    assert_eq!(raw.recv().await, text("{\"n\":[1,2]}"));
    assert_eq!(raw2.recv().await, text("{\"n\":[1,2]}"));

    // History holds the raw text message but not the binary one.
    let mut late = Client::json(&server).await;
    let joined = late.request(json!({"type":"join","room":"mix","history":10})).await;
    let bodies: Vec<_> = joined["history"].as_array().unwrap().iter().map(|m| m["body"].clone()).collect();
    assert_eq!(bodies, vec![json!("plain text"), json!("hi \"raw\""), json!({"n":[1,2]})]);
    assert_eq!(joined["members"], 4, "raw members count");

    // A direct message to a raw member arrives as its bare body.
    json_member.request(json!({"type":"direct","to":raw_id,"body":"psst"})).await;
    assert_eq!(raw.recv().await, text("psst"));

    let members = json_member.request(json!({"type":"members","room":"mix"})).await;
    assert!(members["members"].as_array().unwrap().contains(&json!({"id":raw_id,"nick":null})));
    let rooms = json_member.request(json!({"type":"rooms"})).await;
    assert_eq!(rooms["rooms"], json!([{"room":"mix","members":4}]));

    // A raw member leaving is a presence event; it got no JSON at all.
    drop(raw2);
    let presence = json_member.expect("presence").await;
    assert_eq!(presence["event"], "leave");
    raw.close().await;
}

#[tokio::test]
async fn raw_members_get_no_welcome_or_json_frames() {
    let server = Server::start(&[]);
    let mut json_member = Client::json(&server).await;
    json_member.join("quiet").await;
    let (mut raw, _) = raw_member(&server, "quiet", &mut json_member).await;
    // Another member joining and leaving sends presence to JSON members only.
    let mut other = Client::json(&server).await;
    other.join("quiet").await;
    other.close().await;
    json_member.request(json!({"type":"publish","room":"quiet","body":"first"})).await;
    assert_eq!(raw.recv().await, text("first"), "the first frame a raw member sees is a relayed body");
}

#[tokio::test]
async fn bad_room_names_are_refused_before_the_upgrade() {
    let server = Server::start(&[]);
    let long = format!("/ws/{}", "a".repeat(65));
    for path in ["/ws/has%20space", "/ws/%C3%A9", "/ws/a!b", long.as_str()] {
        let refused = RawConn::upgrade(server.addr, path, &[]).await.err().unwrap_or_else(|| panic!("{path} upgraded"));
        assert_eq!(refused.status, 400, "{path}");
    }
    let ok = format!("/ws/{}", "a".repeat(64));
    RawConn::upgrade(server.addr, &ok, &[]).await.expect("64 bytes is fine");
    RawConn::upgrade(server.addr, "/ws/A-z_0.9:x", &[]).await.expect("every allowed character");
}

#[tokio::test]
async fn raw_rate_limit_drops_and_counts() {
    let server = Server::start(&[("ROOMCAST_LIMITS__BURST", "3"), ("ROOMCAST_LIMITS__MESSAGES_PER_SECOND", "1")]);
    let mut reader = Client::json(&server).await;
    reader.join("flood").await;
    let (mut raw, _) = raw_member(&server, "flood", &mut reader).await;
    for i in 0..10 {
        raw.send(text(&format!("m{i}"))).await;
    }
    // A ping is no data message: its pong says every frame before it was
    // handled by the session.
    raw.send(Message::Ping(b"barrier".to_vec().into())).await;
    loop {
        match raw.next_frame().await {
            Message::Pong(payload) if &payload[..] == b"barrier" => break,
            _ => {}
        }
    }
    assert_eq!(server.metric("roomcast_rate_limited_total").await, 7);
    for i in 0..3 {
        assert_eq!(reader.expect("message").await["body"], format!("m{i}"));
    }
    // The registry handled the admitted frames before this request.
    assert_eq!(reader.request(json!({"type":"ping"})).await["type"], "pong");
    let rooms = reader.request(json!({"type":"rooms"})).await;
    assert_eq!(rooms["rooms"][0]["members"], 2, "the flooder is still connected");
}
