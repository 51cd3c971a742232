//! SIGHUP: the configuration file is read again and what can change live
//! changes under open connections; a broken file, or a key that needs a
//! restart, changes nothing and the daemon carries on. (The TLS certificate
//! swap is in tls.rs, next to its certificates.)

mod common;

use std::path::PathBuf;

use common::{Client, Server, command};
use serde_json::json;

/// A server reading `text` from its own configuration file.
fn server_with_file(name: &str, text: &str) -> (Server, PathBuf) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("reload-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("roomcast.toml");
    std::fs::write(&path, text).unwrap();
    let server = Server::spawn(command(&["serve", "--config", path.to_str().unwrap()], &[]));
    (server, path)
}

/// Rewrites the file, sends SIGHUP and waits for the reload's verdict
/// ("reloaded" or "not reloaded").
fn reload(server: &Server, path: &PathBuf, text: &str, verdict: &str) -> String {
    let seen = server.log_text().matches("SIGHUP: configuration ").count();
    std::fs::write(path, text).unwrap();
    server.signal("HUP");
    let line = server.wait_for_log_count("SIGHUP: configuration ", seen + 1);
    assert!(line.contains(&format!("configuration {verdict}")), "expected {verdict:?}: {line}");
    line
}

const SLOW: &str = "[limits]\nmessages_per_second = 1\nburst = 2\n";

/// Sends `count` pings at once; returns how many got a pong (the others
/// must be `rate_limited`).
async fn pongs(client: &mut Client, count: usize) -> usize {
    for n in 0..count {
        client.send_json(json!({"type":"ping","ref":n})).await;
    }
    let mut pongs = 0;
    for n in 0..count {
        let reply = client.recv_json().await;
        assert_eq!(reply["ref"], n, "{reply}");
        match reply["type"].as_str() {
            Some("pong") => pongs += 1,
            _ => assert_eq!(reply["code"], "rate_limited", "{reply}"),
        }
    }
    pongs
}

#[tokio::test]
async fn sighup_raises_the_rate_limit_of_open_connections_without_dropping_one() {
    let (server, path) = server_with_file("rate", SLOW);
    let mut a = Client::json(&server).await;
    let (mut b, mut c) = Client::pair_in(&server, "r").await;
    assert_eq!(pongs(&mut a, 5).await, 2, "burst 2");

    let line = reload(&server, &path, "[limits]\nmessages_per_second = 1000\nburst = 500\n", "reloaded");
    assert!(line.contains("limits.burst, limits.messages_per_second"), "{line}");
    assert_eq!(pongs(&mut a, 100).await, 100, "the same connection, under the new limit");
    // Every connection is still there and still works.
    assert_eq!(server.metric("roomcast_connections").await, 3);
    b.request(json!({"type":"publish","room":"r","body":"still here"})).await;
    assert_eq!(c.expect("message").await["body"], "still here");
    // And down again: a full bucket at the new, smaller size.
    reload(&server, &path, SLOW, "reloaded");
    assert_eq!(pongs(&mut a, 5).await, 2);
    assert_eq!(server.metric("roomcast_connections_total").await, 3, "nobody had to reconnect");
}

#[tokio::test]
async fn a_broken_file_on_sighup_keeps_the_running_configuration() {
    let (server, path) = server_with_file("broken", SLOW);
    // Its bucket stays full (burst 2) through the reloads below.
    let mut a = Client::json(&server).await;

    // Not TOML: the error says where, and nothing changes.
    let line = reload(&server, &path, "[limits\nburst = 1000\n", "not reloaded");
    assert!(line.contains("roomcast.toml:1:"), "the file and line: {line}");
    // TOML, but an invalid value: the key is named.
    let line = reload(&server, &path, "[limits]\nmessages_per_second = 1000\nburst = \"lots\"\n", "not reloaded");
    assert!(line.contains("limits.burst"), "{line}");
    // An impossible combination.
    let line = reload(&server, &path, "[heartbeat]\ninterval = \"5s\"\ntimeout = \"1s\"\n", "not reloaded");
    assert!(line.contains("heartbeat.timeout"), "{line}");
    // The file is gone.
    std::fs::remove_file(&path).unwrap();
    server.signal("HUP");
    let line = server.wait_for_log_count("SIGHUP: configuration not reloaded", 4);
    assert!(line.contains("does not exist"), "{line}");

    // Alive, the old limits in force, the connection open.
    assert_eq!(reqwest::get(server.http("/healthz")).await.unwrap().status(), 200);
    assert_eq!(pongs(&mut a, 5).await, 2, "still burst 2: the broken files changed nothing");
    let mut fresh = Client::json(&server).await;
    assert_eq!(pongs(&mut fresh, 5).await, 2, "a new connection gets the old limits too");
    assert_eq!(server.metric("roomcast_connections").await, 2);
}

#[tokio::test]
async fn restart_keys_are_kept_and_the_rest_applies_live() {
    let api = |server: &Server, key: &str| {
        reqwest::Client::new().post(server.http("/api/rooms/news/publish")).bearer_auth(key).body("1").send()
    };
    let (server, path) = server_with_file("keys", "[api]\nkey = \"old-key\"\n");
    let mut member = Client::json(&server).await;
    member.join("news").await;
    let foreign = [("Origin", "https://elsewhere.example")];
    let url = server.url("/ws");
    let refused = Client::try_connect(&url, &foreign).await.err().map(common::refused_status);
    assert_eq!(refused, Some(403), "same-host refuses a foreign Origin");
    assert_eq!(api(&server, "old-key").await.unwrap().status(), 200);
    assert_eq!(member.expect("message").await["seq"], 1);

    // (The harness sets server.port and server.workers in the environment,
    // which wins over the file.)
    let text = "[server]\nhost = \"0.0.0.0\"\nmax_connections = 5\n[heartbeat]\ninterval = \"1s\"\ntimeout = \"3s\"\n\
                [origin]\npolicy = \"any\"\n[api]\nkey = \"new-key\"\n[log]\nlevel = \"debug\"\n";
    let line = reload(&server, &path, text, "reloaded");
    for key in ["api.key", "log.level", "origin.policy"] {
        assert!(line.contains(key), "{key} changed: {line}");
    }
    assert!(!line.contains("new-key"), "no secret in the log: {line}");
    let warning = server.wait_for_log("not applied until a restart");
    assert!(
        warning.contains("server.host, server.max_connections, heartbeat.interval, heartbeat.timeout"),
        "{warning}"
    );

    // Still on its port, with its heartbeat; the new origin policy and key.
    assert_eq!(api(&server, "old-key").await.unwrap().status(), 401);
    assert_eq!(api(&server, "new-key").await.unwrap().status(), 200);
    assert_eq!(member.expect("message").await["seq"], 2);
    let mut welcomed = Client::try_connect(&url, &foreign).await.expect("any origin now");
    assert_eq!(welcomed.expect("welcome").await["heartbeat_ms"], 5000, "heartbeat needs a restart");
    // log.level = "debug" took effect: sessions are logged at debug.
    server.wait_for_log("DEBUG");
    assert!(!server.log_text().contains("new-key"));
}

#[test]
fn sighup_on_a_server_without_a_file_reads_the_environment_again_and_never_exits() {
    let mut server = Server::start(&[]);
    // One at a time: signals sent together may arrive as one.
    for n in 1..=3 {
        server.signal("HUP");
        let line = server.wait_for_log_count("SIGHUP: configuration reloaded", n);
        assert!(line.ends_with("configuration reloaded from built-in defaults: nothing changed"), "{line}");
    }
    server.signal("TERM");
    let (status, _) = server.wait_exit(common::DEADLINE);
    assert_eq!(status.code(), Some(0), "exits by SIGTERM, after SIGHUPs: {}", server.log_text());
}
