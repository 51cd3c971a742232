//! `[server.tls]`: https and wss on the same port, with a self-signed
//! certificate made for each test run; the JSON protocol, the raw relay and
//! `/echo` over TLS with a real client; bad files stop start-up naming the key.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use common::{Client, Server, TLS_CLIENT, binary, command, text};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;

/// A certificate for localhost and 127.0.0.1 and its key, as PEM files;
/// making it installs a client configuration that trusts it for every
/// `wss:` connection of the harness.
struct Certificate {
    dir: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Certificate {
    fn make() -> Certificate {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("a self-signed certificate");
        // Under target/: the certificate lives in a static, which is never
        // dropped, so each run replaces the last one's files.
        let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("tls-certificate");
        std::fs::create_dir_all(&dir).unwrap();
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, certified.cert.pem()).unwrap();
        std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();

        let mut roots = rustls::RootCertStore::empty();
        roots.add(certified.cert.der().clone()).expect("a root");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let _ = TLS_CLIENT.set(Arc::new(client));
        Certificate { dir, cert, key }
    }

    fn env(&self) -> [(&'static str, String); 2] {
        [
            ("ROOMCAST_SERVER__TLS__CERT", self.cert.display().to_string()),
            ("ROOMCAST_SERVER__TLS__KEY", self.key.display().to_string()),
        ]
    }

    fn server(&self, extra: &[(&str, &str)]) -> Server {
        let env = self.env();
        let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        all.extend_from_slice(extra);
        let server = Server::start(&all);
        assert!(server.tls, "roomcast announced https");
        server
    }
}

/// One certificate for every test in this file, since the harness holds
/// one trusted root per test binary.
fn certificate() -> &'static Certificate {
    static CERTIFICATE: std::sync::OnceLock<Certificate> = std::sync::OnceLock::new();
    CERTIFICATE.get_or_init(Certificate::make)
}

#[tokio::test]
async fn the_json_protocol_runs_over_wss() {
    let server = certificate().server(&[]);
    assert!(server.url("/ws").starts_with("wss://"));
    let (mut alice, mut bob) = Client::pair_in(&server, "secure").await;
    alice.request(json!({"type": "publish", "room": "secure", "body": "over tls"})).await;
    let message = bob.expect("message").await;
    assert_eq!(message["body"], "over tls");
    assert_eq!(message["from"], json!(alice.id));
    assert_eq!(message["seq"], 1);
    bob.close().await;
    alice.close().await;
}

#[tokio::test]
async fn the_raw_relay_and_echo_run_over_wss() {
    let server = certificate().server(&[]);
    let mut a = Client::connect(&server.url("/ws/plain")).await;
    let mut b = Client::connect(&server.url("/ws/plain")).await;
    // b connected last; once its frame reaches a, both are members.
    b.send(text("from b")).await;
    assert_eq!(a.recv().await, text("from b"));
    a.send(binary(&[0, 1, 2, 255])).await;
    assert_eq!(b.recv().await, binary(&[0, 1, 2, 255]));

    let mut echo = Client::connect(&server.url("/echo")).await;
    let big = "x".repeat(60_000);
    for message in [text("héllo"), binary(&[9; 1000]), text(&big)] {
        echo.send(message.clone()).await;
        assert_eq!(echo.recv().await, message);
    }
    echo.close().await;
}

#[tokio::test]
async fn plain_http_on_the_tls_port_gets_no_page() {
    let server = certificate().server(&[]);
    let plain = format!("http://{}/healthz", server.addr);
    let result = reqwest::get(&plain).await;
    assert!(result.is_err() || !result.unwrap().status().is_success(), "a TLS port does not serve plain HTTP");
    // ...and the server carries on.
    let mut client = Client::json(&server).await;
    assert_eq!(client.request(json!({"type": "ping"})).await["type"], "pong");
}

/// The watchdog ends TLS connections too: a wss client that never reads
/// (so never answers pings or the close) is closed, then cut, and leaves its
/// room.
#[tokio::test]
async fn a_silent_wss_client_is_dropped_by_the_heartbeat() {
    let server = certificate().server(&[
        ("ROOMCAST_HEARTBEAT__INTERVAL", "300ms"),
        ("ROOMCAST_HEARTBEAT__TIMEOUT", "900ms"),
        ("ROOMCAST_LIMITS__OUTBOUND_BYTES", "64MiB"),
        ("ROOMCAST_LIMITS__BURST", "1000"),
    ]);
    let mut watcher = Client::json(&server).await;
    watcher.join("hb").await;
    let mut silent = Client::json_small_buffer(&server).await;
    silent.join("hb").await;
    let silent_id = silent.id.clone();
    assert_eq!(watcher.expect("presence").await["id"], json!(silent_id));
    // From here on `silent` is never read again. 8 MiB of messages fill
    // its socket (and stay within its outbound_bytes), after which its
    // actor cannot run.
    // The watcher reads while it sends, which keeps it answering pings
    // however slowly the machine runs.
    let (mut sink, mut stream) = watcher.ws.split();
    let sender = tokio::spawn(async move {
        let publish = json!({"type": "publish", "room": "hb", "body": "b".repeat(32 * 1024)}).to_string();
        for _ in 0..256 {
            sink.send(text(&publish)).await.expect("publish");
        }
        sink
    });
    // Until the silent client has left and the watcher's own 256 messages
    // came back (so the sender is done).
    let (mut left, mut messages) = (false, 0);
    while !left || messages < 256 {
        let frame = tokio::time::timeout(common::DEADLINE, stream.next()).await;
        let Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(frame)))) = frame else {
            assert!(matches!(frame, Ok(Some(Ok(_)))), "the watcher's connection: {frame:?}");
            continue;
        };
        let frame: serde_json::Value = serde_json::from_str(&frame).unwrap();
        if frame["type"] == "presence" && frame["event"] == "leave" {
            assert_eq!(frame["id"], json!(silent_id));
            left = true;
        }
        messages += usize::from(frame["type"] == "message");
    }
    watcher.ws = sender.await.unwrap().reunite(stream).unwrap();
    server.wait_for_log(&format!("session {silent_id}: heartbeat timeout"));
    // The client answers neither pings nor the close, and its actor cannot
    // run: the watchdog cuts its connection through the TLS stream's socket.
    server.wait_for_log(&format!("session {silent_id}: cut the connection"));
    assert_eq!(watcher.request(json!({"type": "ping"})).await["type"], "pong", "the watcher carries on");
    drop(silent);
}

/// Runs `check-config` and `serve` with `env`: both must exit 2 with one
/// line naming `key`.
fn refused(env: &[(&str, &str)], key: &str) {
    for subcommand in ["check-config", "serve"] {
        let output = command(&[subcommand], env).output().expect("run");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{subcommand}: {stderr}");
        assert!(stderr.contains(key), "{subcommand}: the error names {key}: {stderr}");
        assert!(output.stdout.is_empty() || !String::from_utf8_lossy(&output.stdout).contains("listening"));
    }
}

#[test]
fn missing_or_bad_files_stop_start_up_naming_the_key() {
    let good = certificate();
    let cert = good.cert.display().to_string();
    let key = good.key.display().to_string();
    let dir = std::env::temp_dir().join(format!("roomcast-tls-{}-bad", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "this is not PEM\n").unwrap();
    let garbage = garbage.display().to_string();
    let other_key = dir.join("other-key.pem");
    let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(&other_key, other.signing_key.serialize_pem()).unwrap();
    let other_key = other_key.display().to_string();
    let missing = dir.join("missing.pem").display().to_string();

    let cases: [(&str, &str, &str); 5] = [
        (&missing, &key, "server.tls.cert"),
        (&cert, &missing, "server.tls.key"),
        (&garbage, &key, "server.tls.cert"),
        (&cert, &garbage, "server.tls.key"),
        (&cert, &other_key, "server.tls.key"),
    ];
    for (cert, key, named) in cases {
        refused(&[("ROOMCAST_SERVER__TLS__CERT", cert), ("ROOMCAST_SERVER__TLS__KEY", key)], named);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `roomcast load` and `roomcast client` speak wss too, trusting `--ca`;
/// without it the self-signed certificate is refused, clearly.
#[test]
fn the_load_tester_runs_over_wss_and_refuses_an_unknown_certificate() {
    let certificate = certificate();
    let server = certificate.server(&[("ROOMCAST_LIMITS__MESSAGES_PER_SECOND", "100000")]);
    let url = format!("wss://{}", server.addr);
    let json = certificate.dir.join("fanout.json");
    let ca = certificate.cert.display().to_string();
    let args = ["load", "fanout", "--url", &url, "--ca", &ca, "--rooms", "2", "--members", "3", "--rate", "50"];
    let output = command(&args, &[])
        .args(["--duration", "1s", "--quiet", "--max-loss", "0", "--json", json.to_str().unwrap()])
        .output()
        .expect("run roomcast load");
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(doc["results"]["connected"], 6, "{doc}");
    assert_eq!(doc["results"]["lost"], 0, "{doc}");
    assert!(doc["results"]["deliveries"].as_u64().unwrap() >= 2 * 3 * 40, "{doc}");

    let refused = command(&["load", "fanout", "--url", &url, "--rooms", "1", "--members", "2"], &[])
        .args(["--duration", "200ms", "--quiet"])
        .output()
        .expect("run roomcast load");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "no connection could be made: {stderr}");
    assert!(stderr.to_lowercase().contains("certificate"), "the reason is given: {stderr}");

    // A --ca file that is not there, or holds no certificate (the key
    // file), is named.
    let key = certificate.key.display().to_string();
    for bad in ["/nonexistent/ca.pem", key.as_str()] {
        for args in [vec!["load", "echo", "--url", &url, "--ca", bad], vec!["client", &url, "--ca", bad]] {
            let output = command(&args, &[]).stdin(std::process::Stdio::null()).output().expect("run");
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
            assert!(stderr.contains(&format!("--ca {bad}")), "{args:?}: {stderr}");
        }
    }
}

#[tokio::test]
async fn the_client_pipes_over_wss() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let certificate = certificate();
    let server = certificate.server(&[]);
    let mut observer = Client::json(&server).await;
    observer.join("pipes").await;
    let url = format!("wss://{}", server.addr);
    let ca = certificate.cert.display().to_string();
    let mut child = tokio::process::Command::from(command(&["client", &url, "--ca", &ca, "--room", "pipes"], &[]))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the client");
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Once the client has joined (the observer sees it), publish a line.
    assert_eq!(observer.expect("presence").await["event"], "join");
    stdin.write_all(b"hello over wss\n").await.unwrap();
    assert_eq!(observer.expect("message").await["body"], "hello over wss");
    loop {
        let line = tokio::time::timeout(common::DEADLINE, lines.next_line()).await.expect("in time").unwrap();
        let frame: serde_json::Value = serde_json::from_str(&line.expect("a line")).unwrap();
        if frame["type"] == "message" {
            assert_eq!(frame["body"], "hello over wss");
            break;
        }
    }
    drop(stdin);
    let status = tokio::time::timeout(common::DEADLINE, child.wait()).await.expect("exits at end of input").unwrap();
    assert!(status.success());
}

/// Runs `openssl` with `args` in `dir`.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let output = std::process::Command::new(common::tool("openssl", "openssl"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

/// `roomcast load echo` over wss with `--ca ca`: whether it connected.
fn load_over_wss(server: &Server, ca: Option<&std::path::Path>) -> (Option<i32>, String) {
    let url = format!("wss://localhost:{}", server.addr.port());
    let mut args = vec!["load", "echo", "--url", &url, "--connections", "2", "--duration", "300ms", "--quiet"];
    let ca = ca.map(|ca| ca.display().to_string());
    if let Some(ca) = &ca {
        args.extend(["--ca", ca]);
    }
    let output = command(&args, &[]).output().expect("run roomcast load");
    (output.status.code(), String::from_utf8_lossy(&output.stderr).to_string())
}

/// The two recipes of docs/operations.md (TLS), made with openssl as a user
/// would: a self-signed certificate (which rustls's own checks refuse as "a
/// CA used as an end entity": `--ca` trusts it as it is, as curl does), and
/// a private CA that signs the server's certificate.
#[test]
#[cfg_attr(skip_openssl, ignore = "openssl is missing and SKIP_MISSING_TOOLS=1")]
fn certificates_made_with_openssl_work_with_ca() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("openssl-certificates");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let names = "subjectAltName=DNS:localhost,IP:127.0.0.1";
    // Recipe 1: self-signed.
    openssl(
        &dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
            "-days",
            "365",
            "-subj",
            "/CN=localhost",
            "-addext",
            names,
        ],
    );
    let env = |cert: &str, key: &str| {
        [
            ("ROOMCAST_SERVER__TLS__CERT", dir.join(cert).display().to_string()),
            ("ROOMCAST_SERVER__TLS__KEY", dir.join(key).display().to_string()),
        ]
    };
    let [cert, key] = env("cert.pem", "key.pem");
    let server = Server::start(&[(cert.0, &cert.1), (key.0, &key.1)]);
    let (code, stderr) = load_over_wss(&server, Some(&dir.join("cert.pem")));
    assert_eq!(code, Some(0), "self-signed with --ca: {stderr}");
    let (code, stderr) = load_over_wss(&server, None);
    assert_eq!(code, Some(2), "without --ca the certificate is unknown: {stderr}");
    assert!(stderr.contains("certificate"), "{stderr}");
    drop(server);

    // Recipe 2: a private CA.
    std::fs::write(dir.join("names.ext"), format!("{names}\n")).unwrap();
    openssl(
        &dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "3650",
            "-subj",
            "/CN=roomcast CA",
        ],
    );
    openssl(
        &dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    openssl(
        &dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "365",
            "-extfile",
            "names.ext",
        ],
    );
    let [cert, key] = env("server.pem", "server.key");
    let server = Server::start(&[(cert.0, &cert.1), (key.0, &key.1)]);
    let (code, stderr) = load_over_wss(&server, Some(&dir.join("ca.pem")));
    assert_eq!(code, Some(0), "signed by a private CA: {stderr}");
    // The CA's certificate is not the server's: a name mismatch still fails.
    let url = format!("wss://127.0.0.2:{}", server.addr.port());
    let output = command(
        &[
            "load",
            "echo",
            "--url",
            &url,
            "--ca",
            dir.join("ca.pem").to_str().unwrap(),
            "--duration",
            "200ms",
            "--quiet",
        ],
        &[],
    )
    .output()
    .unwrap();
    assert_eq!(output.status.code(), Some(2), "127.0.0.2 is not a name in the certificate");
}

/// A renewed certificate is picked up by SIGHUP: new handshakes get it,
/// connections made under the old one carry on.
#[tokio::test]
async fn sighup_serves_the_certificate_files_read_again() {
    let harness = certificate();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("tls-renewal");
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("served-cert.pem"), dir.join("served-key.pem"));
    std::fs::copy(&harness.cert, &cert).unwrap();
    std::fs::copy(&harness.key, &key).unwrap();
    let renewed = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("a certificate");
    let renewed_cert = dir.join("renewed.pem");
    std::fs::write(&renewed_cert, renewed.cert.pem()).unwrap();

    let server = Server::start(&[
        ("ROOMCAST_SERVER__TLS__CERT", cert.to_str().unwrap()),
        ("ROOMCAST_SERVER__TLS__KEY", key.to_str().unwrap()),
    ]);
    let mut open = Client::json(&server).await;
    let (code, stderr) = load_over_wss(&server, Some(&renewed_cert));
    assert_eq!(code, Some(2), "not served yet: {stderr}");

    // Renewed in place, as certbot and the like do.
    std::fs::write(&cert, renewed.cert.pem()).unwrap();
    std::fs::write(&key, renewed.signing_key.serialize_pem()).unwrap();
    server.signal("HUP");
    server.wait_for_log("TLS certificate read again");
    let (code, stderr) = load_over_wss(&server, Some(&renewed_cert));
    assert_eq!(code, Some(0), "the renewed certificate is served: {stderr}");
    assert_eq!(open.request(json!({"type": "ping"})).await["type"], "pong", "the old connection carries on");

    // A key that does not go with the certificate: nothing changes.
    std::fs::copy(&harness.key, &key).unwrap();
    server.signal("HUP");
    let line = server.wait_for_log("not reloaded");
    assert!(line.contains("server.tls.key"), "{line}");
    let (code, stderr) = load_over_wss(&server, Some(&renewed_cert));
    assert_eq!(code, Some(0), "still the renewed certificate: {stderr}");
}

/// A server whose certificate the client does not trust: `roomcast client`
/// says so in plain words, names `--ca`, and stops (before, it printed
/// rustls' debug text and retried forever).
#[tokio::test]
async fn the_client_stops_on_a_certificate_it_does_not_trust() {
    let server = certificate().server(&[]);
    let url = format!("wss://{}", server.addr);
    let mut cmd = tokio::process::Command::from(command(&["client", &url, "--room", "r"], &[]));
    cmd.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let child = cmd.spawn().expect("start the client");
    let output = tokio::time::timeout(common::DEADLINE, child.wait_with_output())
        .await
        .expect("it stops by itself")
        .expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("certificate not trusted") && stderr.contains("--ca FILE"), "{stderr}");
    assert!(!stderr.contains("Other(") && !stderr.contains("reconnecting in"), "{stderr}");
}
