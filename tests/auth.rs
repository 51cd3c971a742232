//! Authentication (`shared/spec/auth.md`) over real sockets: connection
//! tokens by header and query, every kind of invalid token, identity on
//! the wire, per-user limits, expiry and refresh. Tokens are made here with
//! the `jsonwebtoken` crate's encoder (not roomcast's), and by PyJWT: the
//! fixed tokens in tests/fixtures/auth/ (see make-tokens.py there).

mod common;

use common::tokens::{SECRET, hs_with, now, sign, with};
use common::{Client, Server};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

const AUDIENCE: &str = "roomcast-tests";
const ISSUER: &str = "https://issuer.test";

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/auth/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn fixture_token(name: &str) -> String {
    let tokens: Value = serde_json::from_str(&std::fs::read_to_string(fixture("tokens.json")).unwrap()).unwrap();
    tokens[name].as_str().unwrap_or_else(|| panic!("no fixture token {name}")).to_string()
}

fn hs(claims: &Value) -> String {
    hs_with(SECRET.as_bytes(), claims)
}

/// Claims of a valid connection token for `sub`, an hour long.
fn user(sub: &str) -> Value {
    json!({"sub": sub, "exp": now() + 3600, "aud": AUDIENCE, "iss": ISSUER})
}

/// A server with `mode` and the test secret, `aud` and `iss`, leeway 0.
fn server(mode: &str, extra: &[(&str, &str)]) -> Server {
    let mut env = vec![
        ("ROOMCAST_AUTH__MODE", mode),
        ("ROOMCAST_AUTH__HMAC_SECRET", SECRET),
        ("ROOMCAST_AUTH__AUDIENCE", AUDIENCE),
        ("ROOMCAST_AUTH__ISSUER", ISSUER),
        ("ROOMCAST_AUTH__LEEWAY", "0s"),
    ];
    env.extend_from_slice(extra);
    Server::start(&env)
}

fn with_token(server: &Server, path: &str, token: &str) -> String {
    server.url(&format!("{path}?token={token}"))
}

/// Connects to `/ws` with `token` in the query and reads the `welcome`.
async fn welcomed(server: &Server, token: &str) -> (Client, Value) {
    let mut client = Client::connect(&with_token(server, "/ws", token)).await;
    let welcome = client.expect("welcome").await;
    client.id = welcome["id"].as_str().unwrap().to_string();
    (client, welcome)
}

/// The close frame's code and reason, then the end of the connection.
async fn close_frame(client: &mut Client) -> (u16, String) {
    match client.recv().await {
        Message::Close(Some(CloseFrame { code, reason })) => (code.into(), reason.to_string()),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

/// A `/ws` connection that authentication refuses: upgraded, then `error`
/// and close 1008 with the code as the reason. Returns the error frame.
async fn refused_json(url: &str, headers: &[(&str, &str)], code: &str) -> Value {
    let mut client = Client::try_connect(url, headers).await.expect("refused after the upgrade, not before");
    let error = client.expect("error").await;
    assert_eq!(error["code"], code, "{error}");
    assert_eq!(close_frame(&mut client).await, (1008, code.to_string()));
    error
}

#[tokio::test]
async fn every_kind_of_invalid_token_is_refused_after_the_upgrade_with_1008() {
    let server = server("required", &[]);
    let rsa = EncodingKey::from_rsa_pem(&std::fs::read(fixture("rsa-private.pem")).unwrap()).unwrap();
    let claims = user("ann");
    let without = |key: &str| {
        let mut claims = claims.clone();
        claims.as_object_mut().unwrap().remove(key);
        claims
    };
    let cases: Vec<(&str, String, &str)> = vec![
        ("bad signature", hs_with(b"another-secret-of-at-least-32-bytes!!", &claims), "unauthorized"),
        // Made by PyJWT's side (tests/fixtures/auth/make-tokens.py).
        ("alg none", fixture_token("none"), "unauthorized"),
        ("RS256 on an HS256 server", sign(Algorithm::RS256, &rsa, &claims), "unauthorized"),
        ("expired", hs(&with(claims.clone(), json!({"exp": now() - 120}))), "token_expired"),
        ("not yet valid", hs(&with(claims.clone(), json!({"nbf": now() + 3600}))), "unauthorized"),
        ("wrong aud", hs(&with(claims.clone(), json!({"aud": "someone-else"}))), "unauthorized"),
        ("wrong iss", hs(&with(claims.clone(), json!({"iss": "https://elsewhere.test"}))), "unauthorized"),
        ("no sub", hs(&without("sub")), "unauthorized"),
        ("no exp", hs(&without("exp")), "unauthorized"),
        ("a room token", hs(&with(claims.clone(), json!({"room": "lobby"}))), "unauthorized"),
        ("not a JWT", "hello".into(), "unauthorized"),
    ];
    for (kind, token, code) in &cases {
        let error = refused_json(&with_token(&server, "/ws", token), &[], code).await;
        println!("{kind}: {}", error["message"]);
    }
    // The header form is refused the same way.
    let bearer = format!("Bearer {}", cases[0].1);
    refused_json(&server.url("/ws"), &[("authorization", &bearer)], "unauthorized").await;
    let invalid = cases.iter().filter(|(_, _, code)| *code == "unauthorized").count() as u64 + 1;
    assert_eq!(server.metric("roomcast_auth_failures_total{reason=\"invalid\"}").await, invalid);
    assert_eq!(server.metric("roomcast_auth_failures_total{reason=\"expired\"}").await, 1);
    // The server carries on: a good token by header, then by query.
    let bearer = format!("Bearer {}", hs(&claims));
    let mut client = Client::try_connect(&server.url("/ws"), &[("authorization", &bearer)]).await.unwrap();
    assert_eq!(client.expect("welcome").await["user"], "ann");
    let (_, welcome) = welcomed(&server, &hs(&claims)).await;
    assert_eq!(welcome["user"], "ann");
    // `aud` may be a list that contains the audience.
    let listed = hs(&with(claims.clone(), json!({"aud": ["another-service", AUDIENCE]})));
    assert_eq!(welcomed(&server, &listed).await.1["user"], "ann");
}

#[tokio::test]
async fn a_public_key_server_takes_its_algorithm_from_the_key() {
    let server = Server::start(&[
        ("ROOMCAST_AUTH__MODE", "required"),
        ("ROOMCAST_AUTH__PUBLIC_KEY", &fixture("ec256-public.pem")),
    ]);
    let ec = EncodingKey::from_ec_pem(&std::fs::read(fixture("ec256-private.pem")).unwrap()).unwrap();
    let claims = json!({"sub": "ann", "exp": now() + 60});
    let (_, welcome) = welcomed(&server, &sign(Algorithm::ES256, &ec, &claims)).await;
    assert_eq!(welcome["user"], "ann");
    // HS256 signed with the public key's PEM as the secret: the classic
    // confusion attack.
    let pem = std::fs::read(fixture("ec256-public.pem")).unwrap();
    refused_json(&with_token(&server, "/ws", &hs_with(&pem, &claims)), &[], "unauthorized").await;
    // The same attack made by PyJWT's side (fixed token), and PyJWT's own
    // ES256 token, which verifies.
    refused_json(&with_token(&server, "/ws", &fixture_token("hs256-with-ec-public-pem")), &[], "unauthorized").await;
    refused_json(&with_token(&server, "/ws", &fixture_token("none")), &[], "unauthorized").await;
    let (_, welcome) = welcomed(&server, &fixture_token("es256")).await;
    assert_eq!((welcome["user"].as_str(), welcome["id"].is_string()), (Some("py-ann"), true));
}

#[tokio::test]
async fn tokens_made_by_pyjwt_verify_with_every_kind_of_key() {
    let secret = std::fs::read_to_string(fixture("hmac-secret.txt")).unwrap();
    let cases = [
        (("ROOMCAST_AUTH__HMAC_SECRET_FILE", fixture("hmac-secret.txt")), vec!["hs256"], "es256"),
        (("ROOMCAST_AUTH__PUBLIC_KEY", fixture("rsa-public.pem")), vec!["rs256"], "hs256"),
        (("ROOMCAST_AUTH__PUBLIC_KEY", fixture("ed25519-public.pem")), vec!["eddsa"], "es256"),
        (("ROOMCAST_AUTH__JWKS_FILE", fixture("jwks.json")), vec!["es256-kid-ec1", "rs256-kid-rsa1"], "es256"),
    ];
    assert!(secret.trim().len() >= 32);
    for ((key, value), good, bad) in cases {
        let server = Server::start(&[("ROOMCAST_AUTH__MODE", "required"), (key, &value)]);
        for name in good {
            let (mut client, welcome) = welcomed(&server, &fixture_token(name)).await;
            assert_eq!(welcome["user"], "py-ann", "{key}: {name}");
            // `name` is the first nick; `rooms` grants the private rooms.
            let joined = client.request(json!({"type": "join", "room": "lobby"})).await;
            assert_eq!(joined["type"], "joined");
        }
        refused_json(&with_token(&server, "/ws", &fixture_token(bad)), &[], "unauthorized").await;
    }
}

#[tokio::test]
async fn without_a_token_required_refuses_and_optional_admits_anonymous() {
    let required = server("required", &[]);
    refused_json(&required.url("/ws"), &[], "unauthorized").await;
    for path in ["/ws/lobby", "/echo"] {
        let mut client = Client::connect(&required.url(path)).await;
        assert_eq!(close_frame(&mut client).await, (1008, "unauthorized".to_string()), "{path}");
    }
    // A bad token on raw and echo: the same, with `token_expired` for an
    // expired one.
    let expired = hs(&with(user("ann"), json!({"exp": now() - 60})));
    let mut client = Client::connect(&with_token(&required, "/echo", &expired)).await;
    assert_eq!(close_frame(&mut client).await, (1008, "token_expired".to_string()));
    assert_eq!(required.metric("roomcast_auth_failures_total{reason=\"missing\"}").await, 3);
    // The Authorization header needs the Bearer scheme.
    refused_json(&required.url("/ws"), &[("authorization", "Basic YTpi")], "unauthorized").await;
    // Raw and echo work with a token.
    let token = hs(&user("ann"));
    let mut echo = Client::connect(&with_token(&required, "/echo", &token)).await;
    echo.send_text("hi").await;
    assert_eq!(echo.recv().await, Message::text("hi"));

    let optional = server("optional", &[]);
    let (_, welcome) = welcomed(&optional, "").await;
    assert_eq!(welcome["user"], Value::Null, "anonymous: user null");
    let mut anonymous = Client::json(&optional).await;
    anonymous.join("lobby").await;
    // An invalid token is refused even where none is needed.
    refused_json(&with_token(&optional, "/ws", "nonsense"), &[], "unauthorized").await;
}

#[tokio::test]
async fn user_is_on_welcome_message_direct_presence_and_members() {
    let server = server("optional", &[("ROOMCAST_API__KEY", "api-key")]);
    let (mut ann, welcome) = welcomed(&server, &hs(&with(user("ann"), json!({"name": "Ann"})))).await;
    assert_eq!(welcome["user"], "ann");
    let (mut ann2, _) = welcomed(&server, &hs(&user("ann"))).await;
    let mut guest = Client::json(&server).await;
    ann.join("lobby").await;
    ann2.join("lobby").await;
    let presence = ann.expect("presence").await;
    assert_eq!((presence["id"].as_str(), presence["user"].as_str()), (Some(ann2.id.as_str()), Some("ann")));
    guest.join("lobby").await;
    let presence = ann.expect("presence").await;
    assert_eq!((presence["event"].as_str(), presence["user"].clone()), (Some("join"), Value::Null));
    ann2.expect("presence").await;

    ann.send_json(json!({"type": "publish", "room": "lobby", "body": "hi"})).await;
    for client in [&mut ann, &mut ann2, &mut guest] {
        let message = client.expect("message").await;
        assert_eq!((message["user"].as_str(), message["nick"].as_str()), (Some("ann"), Some("Ann")), "{message}");
    }
    let members = guest.request(json!({"type": "members", "room": "lobby"})).await;
    // Listed by session id, on one process and in a cluster alike.
    let mut expected = vec![
        json!({"id": ann.id, "nick": "Ann", "user": "ann"}),
        json!({"id": ann2.id, "nick": null, "user": "ann"}),
        json!({"id": guest.id, "nick": null, "user": null}),
    ];
    expected.sort_by_key(|member| member["id"].as_str().and_then(|id| id.parse::<u64>().ok()));
    assert_eq!(members["members"], json!(expected));
    guest.request(json!({"type": "direct", "to": ann.id, "body": 1})).await;
    assert_eq!(ann.expect("direct").await["user"], Value::Null);
    // Messages from /api carry `user: null`.
    api_publish(&server, "lobby").await;
    let message = guest.expect("message").await;
    assert_eq!((message["from"].as_str(), message["user"].clone()), (Some("api"), Value::Null));
    // Leaving says who left.
    ann.expect("message").await;
    ann2.close().await;
    let presence = ann.expect("presence").await;
    assert_eq!((presence["event"].as_str(), presence["user"].as_str()), (Some("leave"), Some("ann")));
}

#[tokio::test]
async fn with_auth_off_frames_carry_no_user_and_tokens_are_ignored() {
    let server = Server::start(&[]);
    let (mut client, welcome) = welcomed(&server, "not-even-a-jwt").await;
    assert!(welcome.get("user").is_none(), "{welcome}");
    // Not even a query string that would not parse as one token.
    welcomed(&server, "a&token=b").await;
    let joined = client.request(json!({"type": "join", "room": "private:x", "token": "ignored"})).await;
    assert_eq!(joined["type"], "joined");
    client.send_json(json!({"type": "publish", "room": "private:x", "body": 1})).await;
    let message = client.expect("message").await;
    assert!(message.get("user").is_none(), "{message}");
}

/// Publishes "from the api" to `room` through `/api` (key `api-key`).
async fn api_publish(server: &Server, room: &str) {
    let response = reqwest::Client::new()
        .post(server.http(&format!("/api/rooms/{room}/publish")))
        .bearer_auth("api-key")
        .json(&json!("from the api"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// Claims of a token granting `rooms` and `read` patterns.
fn grants(sub: &str, rooms: &[&str], read: &[&str]) -> String {
    hs(&with(user(sub), json!({"rooms": rooms, "read": read})))
}

fn room_token(sub: &str, room: &str, read: bool) -> String {
    hs(&with(user(sub), json!({"room": room, "read": read})))
}

#[tokio::test]
async fn private_rooms_need_a_grant_a_read_grant_or_a_room_token() {
    let server =
        server("optional", &[("ROOMCAST_AUTH__PRIVATE_ROOMS", "private:*, team-*"), ("ROOMCAST_API__KEY", "api-key")]);
    let error = |reply: &Value, code: &str| {
        assert_eq!((reply["type"].as_str(), reply["code"].as_str()), (Some("error"), Some(code)), "{reply}");
    };
    let join = |room: &str| json!({"type": "join", "room": room});
    let publish = |room: &str| json!({"type": "publish", "room": room, "body": "x"});

    // Anonymous: public rooms only; a refusal does not close.
    let mut guest = Client::json(&server).await;
    error(&guest.request(join("private:a")).await, "forbidden");
    error(&guest.request(join("team-red")).await, "forbidden");
    guest.join("lobby").await;
    error(
        &guest
            .request(json!({"type": "join", "room": "private:a", "token": room_token("ann", "private:a", false)}))
            .await,
        "unauthorized",
    );

    // `rooms` grants join and publish; `read` join only.
    let (mut ann, _) = welcomed(&server, &grants("ann", &["private:a", "team-*"], &["private:feed"])).await;
    ann.join("private:a").await;
    ann.join("team-red").await;
    error(&ann.request(join("private:b")).await, "forbidden");
    assert_eq!(ann.request(publish("private:a")).await["type"], "ok");
    ann.join("private:feed").await;
    error(&ann.request(publish("private:feed")).await, "forbidden");

    // A room token for one room: with `read: true` join only.
    let (mut bob, _) = welcomed(&server, &grants("bob", &[], &[])).await;
    error(&bob.request(join("private:a")).await, "forbidden");
    let token = room_token("bob", "private:a", false);
    let joined = bob.request(json!({"type": "join", "room": "private:a", "token": token})).await;
    assert_eq!(joined["type"], "joined", "{joined}");
    ann.expect("presence").await;
    assert_eq!(bob.request(publish("private:a")).await["type"], "ok");
    assert_eq!(ann.expect("message").await["user"], "bob");
    let token = room_token("bob", "private:feed", true);
    bob.request(json!({"type": "join", "room": "private:feed", "token": token})).await;
    error(&bob.request(publish("private:feed")).await, "forbidden");
    // Room tokens for another user, another room, expired, or badly signed.
    for token in [
        room_token("ann", "private:c", false),
        room_token("bob", "private:d", false),
        hs(&json!({"sub": "bob", "room": "private:c", "exp": now() - 60})),
        hs_with(
            b"another-secret-of-at-least-32-bytes!!",
            &json!({"sub": "bob", "room": "private:c", "exp": now() + 60}),
        ),
        hs(&user("bob")),
    ] {
        let reply = bob.request(json!({"type": "join", "room": "private:c", "token": token})).await;
        error(&reply, "unauthorized");
    }
    // The HTTP API keeps its own key and may publish to any room.
    api_publish(&server, "private:a").await;
    loop {
        let message = ann.recv_json().await;
        if message["type"] == "message" && message["body"] == "from the api" {
            assert_eq!(message["user"], Value::Null);
            break;
        }
    }
    // Everything refused was counted; everyone is still connected.
    assert_eq!(server.metric("roomcast_auth_failures_total{reason=\"forbidden\"}").await, 6);
    for client in [&mut guest, &mut ann, &mut bob] {
        assert_eq!(client.request(json!({"type": "ping"})).await["type"], "pong");
    }
}

#[tokio::test]
async fn raw_connections_to_private_rooms_need_a_grant_before_the_upgrade() {
    let server = server("optional", &[("ROOMCAST_AUTH__PRIVATE_ROOMS", "private:*")]);
    let refused = |url: String| async move {
        common::refused_status(Client::try_connect(&url, &[]).await.err().expect("refused"))
    };
    assert_eq!(refused(server.url("/ws/private:a")).await, 403);
    assert_eq!(refused(with_token(&server, "/ws/private:a", &grants("ann", &["private:b"], &[]))).await, 403);
    // A writer and a read-only member: the reader's frames are dropped.
    let mut writer = Client::connect(&with_token(&server, "/ws/private:a", &grants("ann", &["private:*"], &[]))).await;
    let mut reader = Client::connect(&with_token(&server, "/ws/private:a", &grants("bob", &[], &["private:a"]))).await;
    let mut watcher = Client::connect(&with_token(&server, "/ws", &grants("eve", &["private:a"], &[]))).await;
    watcher.expect("welcome").await;
    watcher.join("private:a").await;
    reader.send_text("from the reader").await;
    // Once the reader's frame was refused (counted), the writer's is next.
    let forbidden = "roomcast_auth_failures_total{reason=\"forbidden\"}";
    let deadline = std::time::Instant::now() + common::DEADLINE;
    while server.metric(forbidden).await < 3 {
        assert!(std::time::Instant::now() < deadline, "the read-only member's frame was never refused");
        tokio::task::yield_now().await;
    }
    writer.send_text("from the writer").await;
    let message = watcher.expect("message").await;
    assert_eq!((message["body"].as_str(), message["user"].as_str()), (Some("from the writer"), Some("ann")));
    assert_eq!(reader.recv().await, Message::text("from the writer"));
    // Public rooms stay open to anonymous raw clients.
    let mut open = Client::connect(&server.url("/ws/lobby")).await;
    open.send(Message::Ping(Default::default())).await;
}

#[tokio::test]
async fn a_user_beyond_max_connections_per_user_is_refused() {
    let server = server("required", &[("ROOMCAST_AUTH__MAX_CONNECTIONS_PER_USER", "2")]);
    let token = hs(&user("ann"));
    let (first, _) = welcomed(&server, &token).await;
    let (_second, _) = welcomed(&server, &token).await;
    let error = refused_json(&with_token(&server, "/ws", &token), &[], "too_many_connections").await;
    assert!(error["message"].as_str().unwrap().contains("ann"), "{error}");
    let mut raw = Client::connect(&with_token(&server, "/ws/lobby", &token)).await;
    assert_eq!(close_frame(&mut raw).await, (1008, "too_many_connections".to_string()));
    // Other users are not affected.
    welcomed(&server, &hs(&user("bob"))).await;
    // A closed connection frees its place: the next one is admitted once
    // the server has seen the close.
    first.close().await;
    let mut admitted = false;
    for _ in 0..100 {
        let mut client = Client::connect(&with_token(&server, "/ws", &token)).await;
        if client.recv_json().await["type"] == "welcome" {
            admitted = true;
            break;
        }
        close_frame(&mut client).await;
    }
    assert!(admitted, "the closed connection's place was never freed");
}

#[tokio::test]
async fn an_expired_token_closes_the_session_and_auth_refreshes_it() {
    let server = server("required", &[]);
    let short = with(user("ann"), json!({"exp": now() + 2}));
    let (mut refreshed, _) = welcomed(&server, &hs(&short)).await;
    let (mut left, _) = welcomed(&server, &hs(&short)).await;
    // Refusals keep the old token and the connection.
    let auth = |token: String| json!({"type": "auth", "token": token});
    for (token, code) in [
        (hs(&user("bob")), "unauthorized"),
        ("junk".to_string(), "unauthorized"),
        (hs(&with(user("ann"), json!({"exp": now() - 60}))), "token_expired"),
    ] {
        let reply = refreshed.request(auth(token)).await;
        assert_eq!((reply["type"].as_str(), reply["code"].as_str()), (Some("error"), Some(code)), "{reply}");
    }
    let reply = refreshed.request(auth(hs(&with(user("ann"), json!({"rooms": ["x"]}))))).await;
    assert_eq!(reply["type"], "ok", "{reply}");
    // The other one expires: `error` token_expired, then 1008.
    let error = left.expect("error").await;
    assert_eq!(error["code"], "token_expired");
    assert_eq!(close_frame(&mut left).await, (1008, "token_expired".to_string()));
    // The refreshed one lives on past the old expiry.
    assert_eq!(refreshed.request(json!({"type": "ping"})).await["type"], "pong");
    assert!(server.metric("roomcast_auth_failures_total{reason=\"expired\"}").await >= 2);
    // An anonymous session cannot take a token.
    let optional = server_optional();
    let mut guest = Client::json(&optional).await;
    let reply = guest.request(auth(hs(&user("ann")))).await;
    assert_eq!(reply["code"], "unauthorized", "{reply}");
}

fn server_optional() -> Server {
    server("optional", &[])
}

#[tokio::test]
async fn tokens_are_never_logged_and_users_are_at_debug() {
    let server = server("required", &[("RUST_LOG", "debug")]);
    let token = hs(&user("ann\"quote"));
    let (client, _) = welcomed(&server, &token).await;
    refused_json(
        &with_token(&server, "/ws", &hs_with(b"another-secret-of-at-least-32-bytes!!", &user("x"))),
        &[],
        "unauthorized",
    )
    .await;
    client.close().await;
    server.wait_for_log(r#"user "ann\"quote""#);
    let log = server.log_text();
    let signature = token.rsplit('.').next().unwrap();
    assert!(!log.contains(signature), "a token in the log:\n{log}");
}

fn token_command(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    common::command(&[&["token"], args].concat(), env).output().expect("run roomcast token")
}

#[tokio::test]
async fn roomcast_token_prints_tokens_the_server_accepts() {
    let env = [
        ("ROOMCAST_AUTH__HMAC_SECRET", SECRET),
        ("ROOMCAST_AUTH__AUDIENCE", AUDIENCE),
        ("ROOMCAST_AUTH__ISSUER", ISSUER),
    ];
    let server = server("required", &[("ROOMCAST_AUTH__PRIVATE_ROOMS", "private:*")]);
    let output = token_command(&["--sub", "ann", "--name", "Ann", "--rooms", "private:a,team-*", "--ttl", "10m"], &env);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let token = String::from_utf8(output.stdout).unwrap().trim().to_string();
    let (mut client, welcome) = welcomed(&server, &token).await;
    assert_eq!(welcome["user"], "ann");
    client.join("private:a").await;
    // A room token, read-only.
    let output = token_command(&["--sub", "ann", "--room", "private:z", "--read-only"], &env);
    let room_token = String::from_utf8(output.stdout).unwrap().trim().to_string();
    let joined = client.request(json!({"type": "join", "room": "private:z", "token": room_token})).await;
    assert_eq!(joined["type"], "joined", "{joined}");
    let reply = client.request(json!({"type": "publish", "room": "private:z", "body": 1})).await;
    assert_eq!(reply["code"], "forbidden");
    // Signed with a private key instead (a key-set server would find it by kid).
    let output = token_command(&["--sub", "eve", "--private-key", &fixture("ec256-private.pem"), "--kid", "ec1"], &[]);
    let es256 = String::from_utf8(output.stdout).unwrap().trim().to_string();
    let jwks =
        Server::start(&[("ROOMCAST_AUTH__MODE", "required"), ("ROOMCAST_AUTH__JWKS_FILE", &fixture("jwks.json"))]);
    assert_eq!(welcomed(&jwks, &es256).await.1["user"], "eve");
    // No secret to sign with, or bad claims: exit 2 and why.
    let output = token_command(&["--sub", "ann"], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("auth.hmac_secret"));
    let output = token_command(&["--sub", "ann", "--rooms", "bad pattern!"], &env);
    assert_eq!(output.status.code(), Some(2), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.stdout.is_empty());
}

#[tokio::test]
async fn sighup_rotates_the_secret_and_the_private_rooms() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("auth-reload");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("roomcast.toml");
    let file = |secret: &str, private: &str, mode: &str| {
        format!("[auth]\nmode = \"{mode}\"\nhmac_secret = \"{secret}\"\nprivate_rooms = [\"{private}\"]\n")
    };
    let new_secret = "the-next-secret-of-at-least-32-bytes";
    std::fs::write(&path, file(SECRET, "private:*", "optional")).unwrap();
    let server = Server::spawn(common::command(&["serve", "--config", path.to_str().unwrap()], &[]));
    let old_token = hs(&json!({"sub": "ann", "exp": now() + 600}));
    let (mut open, _) = welcomed(&server, &old_token).await;
    std::fs::write(&path, file(new_secret, "vip-*", "required")).unwrap();
    server.signal("HUP");
    let line = server.wait_for_log("SIGHUP: changed, but not applied until a restart");
    assert!(line.contains("auth.mode"), "{line}");
    server.wait_for_log("SIGHUP: configuration reloaded");
    // Old tokens are refused from now on; open sessions stay.
    refused_json(&with_token(&server, "/ws", &old_token), &[], "unauthorized").await;
    let new_token = hs_with(new_secret.as_bytes(), &json!({"sub": "ann", "exp": now() + 600}));
    welcomed(&server, &new_token).await;
    // The new patterns: private:x is public now, vip-1 is private; the
    // mode stays optional until a restart.
    open.join("private:x").await;
    let reply = open.request(json!({"type": "join", "room": "vip-1"})).await;
    assert_eq!(reply["code"], "forbidden", "{reply}");
    Client::json(&server).await;
}

#[tokio::test]
async fn roomcast_client_sends_its_token_and_stops_when_refused() {
    use tokio::io::AsyncWriteExt;
    let server = server("required", &[]);
    let run = |token: String| {
        let mut cmd = tokio::process::Command::from(common::command(&["client"], &[]));
        cmd.args([server.url("").as_str(), "--room", "lobby", "--token", &token]);
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        cmd.spawn().expect("start the client")
    };
    let mut child = run(hs(&with(user("ann"), json!({"name": "Ann"}))));
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"hello\n").await.unwrap();
    drop(stdin);
    let output = tokio::time::timeout(common::DEADLINE, child.wait_with_output()).await.expect("exits").unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    let frames: Vec<Value> = stdout.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    assert_eq!(frames[0]["user"], "ann", "{stdout}");
    assert!(frames.iter().any(|f| f["type"] == "message" && f["user"] == "ann" && f["body"] == "hello"), "{stdout}");
    // A bad token: refused once, no reconnecting, exit 1 saying why.
    let child = run(hs_with(b"another-secret-of-at-least-32-bytes!!", &user("ann")));
    let output = tokio::time::timeout(common::DEADLINE, child.wait_with_output()).await.expect("exits").unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("refused") && stderr.contains("1008 unauthorized"), "{stderr}");
    assert_eq!(server.metric("roomcast_auth_failures_total{reason=\"invalid\"}").await, 1);
}

/// What a refused token's error says (the log says the same).
async fn refusal_message(server: &Server, token: &str) -> String {
    let error = refused_json(&with_token(server, "/ws", token), &[], "unauthorized").await;
    error["message"].as_str().expect("a message").to_string()
}

#[tokio::test]
async fn iss_exp_and_kid_are_checked_exactly_and_echoed_briefly() {
    let server = server("required", &[]);
    // `iss` is one string: a list that holds the issuer is not the issuer.
    let listed = hs(&with(user("ann"), json!({"iss": [ISSUER]})));
    assert!(refusal_message(&server, &listed).await.contains("iss"));
    // Each malformed `exp` says what is wrong with it.
    for (exp, says) in [
        (json!("tomorrow"), "`exp` is a string"),
        (json!(-5), "`exp` is negative"),
        (json!(1e30), "`exp` is after the year 9999"),
        (json!(null), "`exp` is required"),
    ] {
        let message = refusal_message(&server, &hs(&with(user("ann"), json!({ "exp": exp })))).await;
        assert!(message.contains(says), "{exp}: {message}");
    }

    // With a key set and a secret, an HS256 token's `kid` is not looked up
    // in the set (it serves no HMAC key); an RS256 one's is, and a long
    // unknown one comes back cut to 64 bytes.
    let both = Server::start(&[
        ("ROOMCAST_AUTH__MODE", "required"),
        ("ROOMCAST_AUTH__HMAC_SECRET", SECRET),
        ("ROOMCAST_AUTH__JWKS_FILE", &fixture("jwks.json")),
    ]);
    let claims = json!({"sub": "ann", "exp": now() + 60});
    let mut header = jsonwebtoken::Header::new(Algorithm::HS256);
    header.kid = Some("the-application's-own-key-id".into());
    let key = EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
    let hs_with_kid = jsonwebtoken::encode(&header, &claims, &key).unwrap();
    assert_eq!(welcomed(&both, &hs_with_kid).await.1["user"], "ann");
    let rsa = EncodingKey::from_rsa_pem(&std::fs::read(fixture("rsa-private.pem")).unwrap()).unwrap();
    let mut header = jsonwebtoken::Header::new(Algorithm::RS256);
    header.kid = Some("k".repeat(4096));
    let long_kid = jsonwebtoken::encode(&header, &claims, &rsa).unwrap();
    let message = refusal_message(&both, &long_kid).await;
    assert!(message.contains("no key with kid") && message.len() < 200, "{message}");
    let logged = both.wait_for_log("no key with kid");
    assert!(logged.len() < 400, "the log line repeats the kid whole: {} bytes", logged.len());
}

#[tokio::test]
async fn session_ids_are_unique_and_say_nothing_of_the_others() {
    let server = server("off", &[]);
    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(Client::json(&server).await);
    }
    let mut ids: Vec<u64> = clients.iter().map(|client| client.id.parse().expect("a decimal id")).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), clients.len(), "unique");
    assert!(ids.windows(2).all(|pair| pair[1] - pair[0] > 1000), "not a counter: {ids:?}");
    // Neighbours of a known id name nobody.
    let known: u64 = clients[0].id.parse().unwrap();
    for guess in [known + 1, known - 1] {
        let reply = clients[0].request(json!({"type": "direct", "to": guess.to_string(), "body": 1})).await;
        assert_eq!(reply["code"], "not_found", "{reply}");
    }
}

#[tokio::test]
async fn api_publishes_are_rate_limited_per_key() {
    let server = server(
        "off",
        &[("ROOMCAST_API__KEY", "api-key"), ("ROOMCAST_API__MESSAGES_PER_SECOND", "1"), ("ROOMCAST_API__BURST", "3")],
    );
    let publish = || async {
        reqwest::Client::new()
            .post(server.http("/api/rooms/lobby/publish"))
            .bearer_auth("api-key")
            .json(&json!("x"))
            .send()
            .await
            .unwrap()
    };
    for _ in 0..3 {
        assert_eq!(publish().await.status(), 200, "the burst");
    }
    let refused = publish().await;
    assert_eq!(refused.status(), 429);
    let wait: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=1).contains(&wait), "one token a second: {wait}");
    assert_eq!(server.metric("roomcast_rate_limited_total").await, 1);
}

/// A grant that cannot do anything is said out loud: `roomcast token
/// --read` for rooms that are not private (anyone may publish there, so
/// nothing is read-only: docs/authentication.md's own example had it), and
/// a server whose tokens' grants all fall on open rooms.
#[test]
fn grants_that_have_no_effect_are_warned_about() {
    let env = [("ROOMCAST_AUTH__HMAC_SECRET", SECRET), ("ROOMCAST_AUTH__PRIVATE_ROOMS", "private:*, team-*")];
    let mint = |args: &[&str]| {
        let output = common::command(args, &env).output().expect("roomcast token");
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stderr).unwrap()
    };
    let warned = mint(&["token", "--sub", "42", "--rooms", "team-*", "--read", "feed:*"]);
    assert!(warned.contains("--read feed:*") && warned.contains("auth.private_rooms"), "{warned}");
    assert!(!warned.contains("team-*"), "a private pattern is fine: {warned}");
    assert_eq!(mint(&["token", "--sub", "42", "--read", "private:news-*"]), "", "within a private pattern");
    assert!(mint(&["token", "--sub", "42", "--room", "lobby"]).contains("--room lobby"));

    let open = Server::start(&[("ROOMCAST_AUTH__MODE", "required"), ("ROOMCAST_AUTH__HMAC_SECRET", SECRET)]);
    open.wait_for_log("auth.private_rooms is empty");
    let closed = server("required", &[("ROOMCAST_AUTH__PRIVATE_ROOMS", "private:*")]);
    assert!(!closed.log_text().contains("auth.private_rooms is empty"), "{}", closed.log_text());
}
