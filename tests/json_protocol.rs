//! The JSON room protocol on `/ws`, row by row of protocol.md.

mod common;

use common::{Client, Server, binary};
use serde_json::{Value, json};

#[tokio::test]
async fn welcome_comes_first_with_heartbeat_settings() {
    let server = Server::start(&[("ROOMCAST_HEARTBEAT__INTERVAL", "2s"), ("ROOMCAST_HEARTBEAT__TIMEOUT", "7s")]);
    let mut a = Client::connect(&server.url("/ws")).await;
    let welcome = a.recv_json().await;
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(welcome["heartbeat_ms"], 2000);
    assert_eq!(welcome["timeout_ms"], 7000);
    assert_eq!(welcome["server"], format!("roomcast/{}", env!("CARGO_PKG_VERSION")));
    let id = welcome["id"].as_str().expect("id is a string");
    assert!(!id.is_empty());
    let b = Client::json(&server).await;
    assert_ne!(id, b.id, "ids are unique");
    a.close().await;
}

#[tokio::test]
async fn subprotocol_is_selected_on_ws_only() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let server = Server::start(&[]);
    for (path, expected) in [("/ws", Some("roomcast.v1")), ("/echo", None)] {
        let mut request = server.url(path).into_client_request().unwrap();
        request.headers_mut().insert("Sec-WebSocket-Protocol", "roomcast.v1".parse().unwrap());
        let result = tokio_tungstenite::connect_async(request).await;
        match expected {
            Some(protocol) => {
                let (_, response) = result.expect("upgrade");
                assert_eq!(response.headers().get("sec-websocket-protocol").unwrap(), protocol);
            }
            // tungstenite refuses a server that ignores the offered
            // subprotocol: proof that none was selected.
            None => assert!(result.is_err(), "{path} must not select a subprotocol"),
        }
    }
    let (_, response) = tokio_tungstenite::connect_async(server.url("/ws")).await.expect("no subprotocol offered");
    assert!(response.headers().get("sec-websocket-protocol").is_none());
}

#[tokio::test]
async fn join_presence_and_idempotent_rejoin() {
    let server = Server::start(&[]);
    let mut a = Client::json(&server).await;
    let mut b = Client::json(&server).await;
    let joined = a.join("lobby").await;
    let epoch = joined["epoch"].as_str().expect("an epoch string").to_string();
    assert!(!epoch.is_empty());
    assert_eq!(
        joined,
        json!({"type":"joined","room":"lobby","members":1,"epoch":epoch,"history":[],"ref":joined["ref"]})
    );
    let joined = b.join("lobby").await;
    assert_eq!(joined["members"], 2);
    assert_eq!(joined["epoch"], json!(epoch), "one room, one epoch");
    assert_eq!(
        a.expect("presence").await,
        json!({"type":"presence","room":"lobby","event":"join","id":b.id,"nick":null})
    );
    // Joining again: joined again, no presence, counted once.
    let again = b.join("lobby").await;
    assert_eq!(again["members"], 2);
    let rooms = a.request(json!({"type":"rooms"})).await;
    assert_eq!(rooms["rooms"], json!([{"room":"lobby","members":2}]), "nothing arrived before: no second presence");
}

#[tokio::test]
async fn publish_reaches_every_member_in_seq_order_with_ok() {
    let server = Server::start(&[]);
    let (mut a, mut b) = Client::pair_in(&server, "r").await;
    a.request(json!({"type":"nick","name":"ann"})).await;

    a.send_json(json!({"type":"publish","room":"r","body":{"text":"hi"},"ref":"p1"})).await;
    let message = a.expect("message").await;
    assert_eq!(a.expect("ok").await, json!({"type":"ok","ref":"p1","seq":1}));
    assert_eq!(message["room"], "r");
    assert_eq!(message["seq"], 1);
    assert_eq!(message["from"], json!(a.id));
    assert_eq!(message["nick"], "ann");
    assert_eq!(message["body"], json!({"text":"hi"}));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    assert!((message["ts"].as_i64().unwrap() - now).abs() < 60_000, "ts is ms since the epoch: {message}");
    assert_eq!(b.expect("message").await, message, "every member gets the same message");

    // Without ref: no ok. Any JSON value is a body. Integer refs stay integers.
    for body in [json!(null), json!(42), json!("text"), json!([1, {"a": false}])] {
        a.send_json(json!({"type":"publish","room":"r","body":body})).await;
        assert_eq!(a.expect("message").await["body"], body);
        assert_eq!(b.expect("message").await["body"], body);
    }
    let ok = a.request(json!({"type":"publish","room":"r","body":1})).await;
    assert!(ok["ref"].is_u64() && ok["seq"] == 6, "{ok}");
}

#[tokio::test]
async fn concurrent_publishers_get_one_gapless_order() {
    let server = Server::start(&[]);
    let mut reader = Client::json(&server).await;
    reader.join("busy").await;
    let mut publishers = Vec::new();
    for _ in 0..3 {
        let mut p = Client::json(&server).await;
        p.join("busy").await;
        publishers.push(p);
    }
    let tasks: Vec<_> = publishers
        .into_iter()
        .enumerate()
        .map(|(n, mut p)| {
            tokio::spawn(async move {
                for i in 0..50 {
                    p.send_json(json!({"type":"publish","room":"busy","body":{"p":n,"i":i}})).await;
                }
                p
            })
        })
        .collect();
    let mut next_per_publisher = [0; 3];
    let mut seq = 0;
    while seq < 150 {
        let frame = reader.recv_json().await;
        if frame["type"] == "presence" {
            continue;
        }
        seq += 1;
        assert_eq!(frame["seq"], seq, "gapless seq: {frame}");
        let p = frame["body"]["p"].as_u64().unwrap() as usize;
        assert_eq!(frame["body"]["i"], next_per_publisher[p], "each publisher's order is kept");
        next_per_publisher[p] += 1;
    }
    for task in tasks {
        task.await.unwrap();
    }
}

#[tokio::test]
async fn leave_and_not_member() {
    let server = Server::start(&[]);
    let (mut a, mut b) = Client::pair_in(&server, "r").await;
    assert_eq!(b.request(json!({"type":"leave","room":"r"})).await, json!({"type":"left","room":"r","ref":2}));
    assert_eq!(a.expect("presence").await, json!({"type":"presence","room":"r","event":"leave","id":b.id,"nick":null}));
    for request in [
        json!({"type":"leave","room":"r"}),
        json!({"type":"publish","room":"r","body":1}),
        json!({"type":"members","room":"r"}),
        json!({"type":"publish","room":"never","body":1}),
    ] {
        let error = b.request(request.clone()).await;
        assert_eq!(error["type"], "error", "{request}: {error}");
        assert_eq!(error["code"], "not_member", "{request}");
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
}

#[tokio::test]
async fn direct_messages_and_not_found() {
    let server = Server::start(&[]);
    let mut a = Client::json(&server).await;
    let mut b = Client::json(&server).await;
    a.request(json!({"type":"nick","name":"ann"})).await;
    let ok = a.request(json!({"type":"direct","to":b.id,"body":{"x":1}})).await;
    assert_eq!(ok["type"], "ok");
    assert!(ok.get("seq").is_none());
    assert_eq!(b.expect("direct").await, json!({"type":"direct","from":a.id,"nick":"ann","body":{"x":1}}));
    // Without ref, no ok; to yourself works too.
    a.send_json(json!({"type":"direct","to":a.id,"body":"me"})).await;
    assert_eq!(a.expect("direct").await["body"], "me");
    for to in ["999999", "abc", "0", &format!("0{}", b.id)] {
        let error = a.request(json!({"type":"direct","to":to,"body":1})).await;
        assert_eq!(error["code"], "not_found", "{to}");
    }
}

#[tokio::test]
async fn nick_members_and_rooms() {
    let server = Server::start(&[]);
    let mut a = Client::json(&server).await;
    let mut b = Client::json(&server).await;
    assert_eq!(a.request(json!({"type":"nick","name":"Ann 😀"})).await["type"], "ok");
    a.join("x").await;
    a.join("y").await;
    b.join("y").await;
    assert_eq!(a.expect("presence").await["nick"], json!(null));
    assert_eq!(b.request(json!({"type":"nick","name":"bob"})).await["type"], "ok");
    let members = a.request(json!({"type":"members","room":"y"})).await;
    assert_eq!(members["room"], "y");
    let by_id = |m: &Value| m["id"].as_str().unwrap().parse::<u64>().unwrap();
    let mut list = members["members"].as_array().unwrap().clone();
    list.sort_by_key(by_id);
    let mut expected = vec![json!({"id":a.id,"nick":"Ann 😀"}), json!({"id":b.id,"nick":"bob"})];
    expected.sort_by_key(by_id);
    assert_eq!(list, expected);
    let rooms = b.request(json!({"type":"rooms"})).await;
    assert_eq!(rooms["rooms"], json!([{"room":"x","members":1},{"room":"y","members":2}]));
    a.request(json!({"type":"leave","room":"x"})).await;
    let rooms = b.request(json!({"type":"rooms"})).await;
    assert_eq!(rooms["rooms"], json!([{"room":"y","members":2}]), "empty rooms are not listed");
    for bad in [json!(""), json!("x".repeat(33)), json!("bell\u{7}"), json!("new\nline"), json!(5)] {
        let error = a.request(json!({"type":"nick","name":bad})).await;
        assert_eq!(error["code"], "bad_request", "{bad}");
    }
    assert_eq!(a.request(json!({"type":"nick","name":"x".repeat(32)})).await["type"], "ok");
}

#[tokio::test]
async fn ping_is_answered_with_pong() {
    let server = Server::start(&[]);
    let mut a = Client::json(&server).await;
    assert_eq!(a.request(json!({"type":"ping"})).await, json!({"type":"pong","ref":1}));
    a.send_json(json!({"type":"ping","ref":"s"})).await;
    assert_eq!(a.recv_json().await, json!({"type":"pong","ref":"s"}));
    a.send_json(json!({"type":"ping"})).await;
    assert_eq!(a.recv_json().await, json!({"type":"pong"}));
}

/// Every malformed request gets its error and the connection carries on.
#[tokio::test]
async fn every_error_leaves_the_connection_open() {
    let server = Server::start(&[]);
    let mut a = Client::json(&server).await;
    let mut witness = Client::json(&server).await;
    a.join("ok").await;
    witness.join("ok").await;
    a.expect("presence").await;
    let cases: &[(&str, &str, Value)] = &[
        ("not json", "bad_json", Value::Null),
        ("{\"type\":\"ping\"", "bad_json", Value::Null),
        ("", "bad_json", Value::Null),
        ("[1,2,3]", "bad_request", Value::Null),
        ("\"ping\"", "bad_request", Value::Null),
        ("{}", "bad_request", Value::Null),
        ("{\"ref\":3}", "bad_request", json!(3)),
        ("{\"type\":7,\"ref\":\"t\"}", "bad_request", json!("t")),
        ("{\"type\":\"dance\",\"ref\":4}", "unknown_type", json!(4)),
        ("{\"type\":\"join\",\"ref\":5}", "bad_request", json!(5)),
        ("{\"type\":\"join\",\"room\":\"\",\"ref\":6}", "bad_request", json!(6)),
        ("{\"type\":\"join\",\"room\":\"has space\",\"ref\":7}", "bad_request", json!(7)),
        ("{\"type\":\"join\",\"room\":\"é\",\"ref\":7}", "bad_request", json!(7)),
        (
            "{\"type\":\"join\",\"room\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}",
            "bad_request",
            Value::Null,
        ),
        ("{\"type\":\"join\",\"room\":\"r\",\"history\":\"5\",\"ref\":8}", "bad_request", json!(8)),
        ("{\"type\":\"join\",\"room\":\"r\",\"history\":-1}", "bad_request", Value::Null),
        ("{\"type\":\"join\",\"room\":\"r\",\"since\":1.5}", "bad_request", Value::Null),
        ("{\"type\":\"publish\",\"room\":\"ok\",\"ref\":9}", "bad_request", json!(9)),
        ("{\"type\":\"publish\",\"body\":1}", "bad_request", Value::Null),
        ("{\"type\":\"direct\",\"body\":1}", "bad_request", Value::Null),
        ("{\"type\":\"direct\",\"to\":5,\"body\":1}", "bad_request", Value::Null),
        ("{\"type\":\"members\"}", "bad_request", Value::Null),
        ("{\"type\":\"leave\",\"room\":[]}", "bad_request", Value::Null),
        ("{\"type\":\"ping\",\"ref\":{\"a\":1}}", "bad_request", Value::Null),
    ];
    for (frame, code, reference) in cases {
        a.send_text(frame).await;
        let error = a.recv_json().await;
        assert_eq!(error["type"], "error", "{frame}: {error}");
        assert_eq!(error["code"], *code, "{frame}: {error}");
        assert_eq!(error.get("ref").cloned().unwrap_or(Value::Null), *reference, "{frame}: {error}");
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "{error}");
    }
    a.send(binary(b"\x01\x02")).await;
    assert_eq!(a.expect("error").await["code"], "bad_request");
    // Unknown fields are ignored.
    let ok = a.request(json!({"type":"publish","room":"ok","body":"still here","extra":{"x":[1]}})).await;
    assert_eq!(ok["seq"], 1);
    assert_eq!(witness.expect("message").await["body"], "still here");
}

/// Bodies that other people's parsers choke on are refused, on `/ws` and
/// on `/api`, and so never stored or replayed to anyone who joins.
#[tokio::test]
async fn poison_bodies_are_refused_and_never_replayed() {
    let server = Server::start(&[("ROOMCAST_API__KEY", "k")]);
    let mut a = Client::json(&server).await;
    a.join("p").await;
    let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    let publish =
        |body: &str, reference: u64| format!(r#"{{"type":"publish","room":"p","body":{body},"ref":{reference}}}"#);
    let cases: Vec<(String, &str, Value)> = vec![
        (publish(&nested(65), 1), "bad_request", json!(1)),
        (publish(&nested(10_000), 2), "bad_request", json!(2)),
        (publish(r#""\ud800""#, 3), "bad_json", Value::Null),
        (publish(r#"{"k":"x\udfff"}"#, 4), "bad_json", Value::Null),
        (r#"{"type":"nick","name":"\ud83d"}"#.to_string(), "bad_json", Value::Null),
    ];
    for (frame, code, reference) in &cases {
        a.send_text(frame).await;
        let error = a.expect("error").await;
        assert_eq!(
            (error["code"].as_str(), &error["ref"]),
            (Some(*code), reference),
            "{}",
            &frame[..60.min(frame.len())]
        );
    }
    // What is fine: 64 levels, a surrogate pair.
    a.send_text(&publish(&nested(64), 5)).await;
    assert_eq!(a.expect("message").await["seq"], 1);
    assert_eq!(a.expect("ok").await["ref"], 5);
    a.send_text(&publish(r#""\ud83d\ude00""#, 6)).await;
    assert_eq!(a.expect("message").await["body"], "😀");
    assert_eq!(a.expect("ok").await["ref"], 6);
    // The HTTP API refuses the same bodies.
    let http = reqwest::Client::new();
    for (body, expected) in [(nested(65), 400), (r#""\ud800""#.to_string(), 400), ("[1]".to_string(), 200)] {
        let response =
            http.post(server.http("/api/rooms/p/publish")).bearer_auth("k").body(body).send().await.expect("publish");
        assert_eq!(response.status().as_u16(), expected);
    }
    // A newcomer gets the three good messages, each of which a strict
    // parser reads (recv_json would fail on a lone surrogate).
    let mut newcomer = Client::json(&server).await;
    let joined = newcomer.request(json!({"type":"join","room":"p","history":50})).await;
    let seqs: Vec<_> = joined["history"].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3]);
}
