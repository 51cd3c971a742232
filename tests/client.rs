//! `roomcast client`: the pipe mode (lines in, JSON lines out) and the
//! terminal mode (through a pseudo-terminal), each across a dropped
//! connection that it recovers from with `since`.

mod common;

use std::process::Stdio;

use common::{Client, DEADLINE, Proxy, Server, command};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// The next JSON line on the client's stdout.
async fn next_json(lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>) -> Value {
    let line = tokio::time::timeout(DEADLINE, lines.next_line())
        .await
        .expect("a line within the deadline")
        .expect("read")
        .expect("stdout still open");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON line: {line:?}: {e}"))
}

/// Reads JSON lines until one of `kind`; returns it and the bodies of the
/// messages seen on the way (as `message` frames or in a `joined` history).
async fn until(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    kind: &str,
    bodies: &mut Vec<Value>,
) -> Value {
    loop {
        let frame = next_json(lines).await;
        match frame["type"].as_str() {
            Some("message") => bodies.push(frame["body"].clone()),
            Some("joined") => bodies.extend(frame["history"].as_array().unwrap().iter().map(|m| m["body"].clone())),
            _ => {}
        }
        if frame["type"] == kind {
            return frame;
        }
    }
}

#[tokio::test]
async fn pipe_mode_publishes_lines_prints_json_and_recovers_after_a_drop() {
    let server = Server::start(&[]);
    let proxy = Proxy::start(server.addr).await;
    let mut observer = Client::json(&server).await;
    observer.join("feed").await;

    let url = format!("ws://{}", proxy.addr);
    let mut child = piped_client(&[&url, "--room", "feed"]);
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut bodies = Vec::new();
    let welcome = until(&mut lines, "welcome", &mut bodies).await;
    assert!(welcome["id"].is_string());
    let joined = until(&mut lines, "joined", &mut bodies).await;
    assert_eq!(joined["room"], "feed");
    observer.expect("presence").await;

    stdin.write_all(b"first line\n/nick piper\n").await.unwrap();
    let seen = observer.expect("message").await;
    assert_eq!((seen["body"].clone(), seen["nick"].clone()), (json!("first line"), json!(null)));
    until(&mut lines, "ok", &mut bodies).await;
    observer.request(json!({"type":"publish","room":"feed","body":"m1"})).await;
    until(&mut lines, "message", &mut bodies).await;

    // The connection drops; two messages are published meanwhile; the
    // client reconnects and gets them from the join with `since`.
    proxy.cut_all();
    observer.request(json!({"type":"publish","room":"feed","body":"m2"})).await;
    observer.request(json!({"type":"publish","room":"feed","body":"m3"})).await;
    let rejoined = until(&mut lines, "joined", &mut bodies).await;
    assert_eq!(rejoined["recovered"], true, "{rejoined}");
    // The nick came back with the reconnect.
    stdin.write_all(b"second line\n").await.unwrap();
    let seen = loop {
        let frame = observer.recv_json().await;
        if frame["type"] == "message" {
            break frame;
        }
    };
    assert_eq!((seen["body"].clone(), seen["nick"].clone()), (json!("second line"), json!("piper")));
    until(&mut lines, "message", &mut bodies).await;

    // End of input: the client waits for its acknowledgements and exits 0.
    drop(stdin);
    let status = tokio::time::timeout(DEADLINE, child.wait()).await.expect("exits").unwrap();
    assert!(status.success());
    while let Ok(Some(line)) = lines.next_line().await {
        let frame: Value = serde_json::from_str(&line).unwrap();
        if frame["type"] == "message" {
            bodies.push(frame["body"].clone());
        }
    }
    assert_eq!(
        bodies,
        vec![json!("first line"), json!("m1"), json!("m2"), json!("m3"), json!("second line")],
        "each once, in order"
    );
    let mut stderr = String::new();
    tokio::io::AsyncReadExt::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).await.unwrap();
    assert!(stderr.contains("disconnected"), "{stderr}");
}

#[test]
fn terminal_mode_chats_reconnects_and_quits() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = Server::start(&[]);
    let proxy = runtime.block_on(Proxy::start(server.addr));
    let mut observer = runtime.block_on(Client::json(&server));
    runtime.block_on(observer.join("lobby"));
    runtime.block_on(observer.request(json!({"type":"nick","name":"bob"})));

    let url = format!("ws://{}", proxy.addr);
    let cmd = command(&["client", &url, "--room", "lobby", "--nick", "ann"], &[("TERM", "xterm")]);
    let mut tty = rexpect::session::spawn_command(cmd, Some(DEADLINE.as_millis() as u64)).expect("spawn in a pty");
    tty.exp_string("-- connected to").unwrap();
    tty.exp_string("-- joined lobby (2 here)").unwrap();
    runtime.block_on(observer.expect("presence"));

    // A typed line is published to the current room, under the nick.
    tty.send_line("hello from the terminal").unwrap();
    let seen = runtime.block_on(observer.expect("message"));
    assert_eq!((seen["body"].clone(), seen["nick"].clone()), (json!("hello from the terminal"), json!("ann")));
    // Incoming messages show with time and nick.
    runtime.block_on(observer.request(json!({"type":"publish","room":"lobby","body":"hi ann"})));
    tty.exp_regex(r"\d\d:\d\d:\d\d \[lobby\] bob: hi ann").unwrap();

    // Dropped connection: a notice, a reconnect, and what was missed.
    proxy.cut_all();
    tty.exp_string("-- disconnected").unwrap();
    runtime.block_on(observer.request(json!({"type":"publish","room":"lobby","body":"while you were away"})));
    tty.exp_string("-- connected to").unwrap();
    tty.exp_string("while you were away").unwrap();

    tty.send_line("/join side").unwrap();
    tty.exp_string("-- joined side (1 here)").unwrap();
    tty.send_line("/rooms").unwrap();
    tty.exp_string("-- rooms: lobby (2), side (1)").unwrap();
    tty.send_line("/members lobby").unwrap();
    tty.exp_regex(r"-- in lobby: (ann, bob|bob, ann)").unwrap();
    tty.send_line("/dance").unwrap();
    tty.exp_string("!! unknown command").unwrap();
    tty.send_line("/quit").unwrap();
    tty.exp_eof().unwrap();
    let status = tty.process_mut().wait().unwrap();
    assert!(matches!(status, rexpect::process::WaitStatus::Exited(_, 0)), "{status:?}");
    let left = runtime.block_on(async {
        loop {
            let frame = observer.recv_json().await;
            if frame["type"] == "presence" && frame["event"] == "leave" {
                break frame;
            }
        }
    });
    assert_eq!(left["nick"], "ann");
}

/// A free port on loopback, for a server that must come back on the same
/// port.
fn free_port() -> String {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string()
}

/// Messages published in a room restarted with its server (the room's seq
/// starts at 1 again, under a new epoch) are every one shown, once, and no
/// "could not recover" notice appears: before epochs, the client took them
/// for ones it had seen.
#[tokio::test]
async fn pipe_mode_after_a_server_restart_shows_every_new_message_once() {
    let port = free_port();
    let server = Server::start(&[("ROOMCAST_SERVER__PORT", &port)]);
    let mut observer = Client::json(&server).await;
    observer.join("feed").await;
    let url = format!("ws://127.0.0.1:{port}");
    let mut child = piped_client(&[&url, "--room", "feed"]);
    let stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut bodies = Vec::new();
    let joined = until(&mut lines, "joined", &mut bodies).await;
    let old_epoch = joined["epoch"].clone();
    for n in 0..4 {
        observer.request(json!({"type":"publish","room":"feed","body":format!("before {n}")})).await;
    }
    for _ in 0..4 {
        until(&mut lines, "message", &mut bodies).await;
    }

    // The server goes (killed: nothing is kept) and comes back on the port.
    drop(observer);
    drop(server);
    let server = Server::start(&[("ROOMCAST_SERVER__PORT", &port)]);
    let rejoined = until(&mut lines, "joined", &mut bodies).await;
    assert_ne!(rejoined["epoch"], old_epoch, "a new room");
    let mut observer = Client::json(&server).await;
    observer.join("feed").await;
    for n in 0..3 {
        observer.request(json!({"type":"publish","room":"feed","body":format!("after {n}")})).await;
    }
    for _ in 0..3 {
        until(&mut lines, "message", &mut bodies).await;
    }
    drop(stdin);
    let status = tokio::time::timeout(DEADLINE, child.wait()).await.expect("exits").unwrap();
    assert!(status.success());
    let expected: Vec<Value> =
        (0..4).map(|n| json!(format!("before {n}"))).chain((0..3).map(|n| json!(format!("after {n}")))).collect();
    assert_eq!(bodies, expected, "each once, in order");
    let mut stderr = String::new();
    tokio::io::AsyncReadExt::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).await.unwrap();
    assert!(!stderr.contains("could not recover"), "a false notice: {stderr}");
    assert!(stderr.contains("started again"), "{stderr}");
}

/// `roomcast client ARGS` with its standard streams piped.
fn piped_client(args: &[&str]) -> tokio::process::Child {
    let mut cmd = tokio::process::Command::from(command(&["client"], &[]));
    cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.spawn().expect("start the client")
}

/// A deploy script notifying a room must learn that it did not: with the
/// server down, the piped client says the line was not sent and exits 1.
#[tokio::test]
async fn pipe_mode_against_a_dead_server_exits_non_zero() {
    let url = format!("ws://127.0.0.1:{}", free_port());
    let mut child = piped_client(&[&url, "--room", "ops"]);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"deploy done\n").await.unwrap();
    drop(stdin);
    let output = tokio::time::timeout(DEADLINE, child.wait_with_output()).await.expect("exits").unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not sent"), "{stderr}");
    assert!(stderr.contains("1 requests may not have reached the server"), "{stderr}");
    // Publishing with no room joined is not a delivery either.
    let server = Server::start(&[]);
    let mut child = piped_client(&[&server.url("")]);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"to nowhere\n").await.unwrap();
    drop(stdin);
    let output = tokio::time::timeout(DEADLINE, child.wait_with_output()).await.expect("exits").unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", String::from_utf8_lossy(&output.stderr));
}

/// Lines typed (here: piped) while the client reconnects wait, and go out
/// once the room is joined again, each once; input that ends meanwhile is
/// still delivered, and the client exits 0. Before, each such line was
/// dropped ("not connected: not sent") and the client exited 1.
#[tokio::test]
async fn lines_typed_while_reconnecting_are_sent_once_after_the_rejoin() {
    let port = free_port();
    let server = Server::start(&[("ROOMCAST_SERVER__PORT", &port)]);
    let url = format!("ws://127.0.0.1:{port}");
    let mut child = piped_client(&[&url, "--room", "feed"]);
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut bodies = Vec::new();
    until(&mut lines, "joined", &mut bodies).await;
    drop(server);
    loop {
        let line = tokio::time::timeout(DEADLINE, stderr.next_line()).await.expect("in time").unwrap().unwrap();
        if line.contains("disconnected") {
            break;
        }
    }
    stdin.write_all(b"typed offline 1\ntyped offline 2\n").await.unwrap();
    drop(stdin);
    let server = Server::start(&[("ROOMCAST_SERVER__PORT", &port)]);
    let status = tokio::time::timeout(DEADLINE, child.wait()).await.expect("exits").unwrap();
    let mut said = Vec::new();
    while let Ok(Some(line)) = stderr.next_line().await {
        said.push(line);
    }
    assert!(status.success(), "{said:?}");
    let mut observer = Client::json(&server).await;
    let joined = observer.request(json!({"type": "join", "room": "feed", "history": 10})).await;
    let history: Vec<&Value> = joined["history"].as_array().unwrap().iter().map(|m| &m["body"]).collect();
    assert_eq!(history, [&json!("typed offline 1"), &json!("typed offline 2")], "each once, in order");
}
