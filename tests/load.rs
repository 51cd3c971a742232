//! `roomcast load`: every scenario against a real roomcast on port 0, with
//! small numbers, checking that the figures it reports are right.

mod common;

use std::process::Output;

use common::{Server, command};
use serde_json::Value;

/// Runs `roomcast load ARGS --json FILE` against `server`; returns the exit
/// code and the JSON document.
fn load(server: &Server, args: &[&str]) -> (Option<i32>, Value, Output) {
    let json = std::env::temp_dir().join(format!("roomcast-load-{}-{}.json", std::process::id(), fastrand_suffix()));
    let url = format!("ws://{}", server.addr);
    let pid = server.pid().to_string();
    let mut all = vec!["load"];
    all.extend_from_slice(&args[..1]);
    all.extend_from_slice(&["--url", &url, "--json", json.to_str().unwrap(), "--server-pid", &pid, "--quiet"]);
    all.extend_from_slice(&args[1..]);
    let output = command(&all, &[]).output().expect("run roomcast load");
    let text = std::fs::read_to_string(&json).unwrap_or_else(|_| {
        panic!(
            "no JSON; stdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let _ = std::fs::remove_file(&json);
    (output.status.code(), serde_json::from_str(&text).expect("JSON document"), output)
}

fn fastrand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn figure(doc: &Value, key: &str) -> f64 {
    doc["results"][key].as_f64().unwrap_or_else(|| panic!("no {key} in {doc:#}"))
}

fn fast_limits() -> Vec<(&'static str, &'static str)> {
    vec![("ROOMCAST_LIMITS__MESSAGES_PER_SECOND", "100000"), ("ROOMCAST_LIMITS__BURST", "100000")]
}

#[test]
fn fanout_at_a_fixed_rate_loses_nothing_and_keeps_order() {
    let server = Server::start(&fast_limits());
    let (code, doc, output) =
        load(&server, &["fanout", "--rooms", "3", "--members", "5", "--rate", "50", "--duration", "1s"]);
    assert_eq!(code, Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let published = figure(&doc, "published");
    assert!((100.0..=200.0).contains(&published), "3 publishers x 50/s x 1 s: {published}");
    assert_eq!(figure(&doc, "deliveries"), published * 5.0, "every member got every message");
    assert_eq!(figure(&doc, "expected"), published * 5.0);
    for key in ["lost", "gaps", "out_of_order", "errors", "connect_errors", "refused"] {
        assert_eq!(figure(&doc, key), 0.0, "{key}");
    }
    assert_eq!(figure(&doc, "connected"), 15.0);
    assert!(figure(&doc, "latency_p50_us") > 0.0);
    assert!(figure(&doc, "latency_p99_us") >= figure(&doc, "latency_p50_us"));
    assert!(figure(&doc, "server_cpu_s") >= 0.0);
    assert_eq!(doc["params"]["rooms"], 3);
    // The table is readable on stdout.
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(table.contains("roomcast load fanout") && table.contains("latency p99"), "{table}");
}

#[test]
fn fanout_as_fast_as_possible_counts_what_the_server_refused() {
    // The server's rate limit refuses part of an unbounded flood: those are
    // counted as refused, not lost.
    let server = Server::start(&[("ROOMCAST_LIMITS__MESSAGES_PER_SECOND", "200"), ("ROOMCAST_LIMITS__BURST", "50")]);
    let (code, doc, output) = load(
        &server,
        &["fanout", "--rooms", "2", "--members", "3", "--rate", "max", "--window", "4", "--duration", "1s"],
    );
    let refused = figure(&doc, "refused");
    assert!(refused > 0.0, "the rate limit refused some: {doc:#}");
    // Publishes the server refused were not delivered: the run fails and
    // says so, unless --max-refused allows them.
    assert_eq!(code, Some(1), "{doc:#}");
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(table.contains("slo: refused") && table.contains("--max-refused allows some"), "{table}");
    let (code, _, _) = load(
        &server,
        &[
            "fanout",
            "--rooms",
            "1",
            "--members",
            "2",
            "--rate",
            "max",
            "--duration",
            "300ms",
            "--max-refused",
            "1000000",
        ],
    );
    assert_eq!(code, Some(0));
    let accepted = figure(&doc, "published") - refused;
    assert_eq!(figure(&doc, "deliveries"), accepted * 3.0);
    assert_eq!(figure(&doc, "lost"), 0.0);
    assert_eq!(figure(&doc, "unacknowledged"), 0.0);
}

#[test]
fn objectives_decide_the_exit_status() {
    let server = Server::start(&fast_limits());
    let (code, doc, _) =
        load(&server, &["fanout", "--rooms", "1", "--members", "2", "--duration", "300ms", "--max-loss", "0"]);
    assert_eq!(code, Some(0), "{doc:#}");
    assert_eq!(doc["passed"], true);
    let (code, doc, output) = load(
        &server,
        &["fanout", "--rooms", "1", "--members", "2", "--duration", "300ms", "--max-p99", "1us", "--min-held", "1"],
    );
    assert_eq!(code, Some(1), "a missed objective exits 1");
    assert_eq!(doc["passed"], false);
    let slo = doc["slo"].as_array().unwrap();
    assert_eq!(slo[0]["flag"], "--max-p99");
    assert_eq!(slo[0]["ok"], false);
    assert_eq!(slo[1]["flag"], "--min-held");
    assert_eq!(slo[1]["value"], Value::Null, "not measured by fanout");
    assert!(String::from_utf8_lossy(&output.stdout).contains("MISSED"));
}

#[test]
fn echo_round_trips_text_and_binary() {
    let server = Server::start(&[]);
    for binary in [false, true] {
        let mut args = vec!["echo", "--connections", "5", "--in-flight", "3", "--size", "256", "--duration", "1s"];
        if binary {
            args.push("--binary");
        }
        let (code, doc, _) = load(&server, &args);
        assert_eq!(code, Some(0));
        assert!(figure(&doc, "round_trips") > 100.0, "{doc:#}");
        for key in ["lost", "mismatched", "errors", "dropped"] {
            assert_eq!(figure(&doc, key), 0.0, "{key} (binary: {binary})");
        }
        assert!(figure(&doc, "latency_p50_us") > 0.0);
    }
}

#[test]
fn idle_holds_connections_and_measures_server_memory() {
    let server = Server::start(&[("ROOMCAST_HEARTBEAT__INTERVAL", "200ms"), ("ROOMCAST_HEARTBEAT__TIMEOUT", "600ms")]);
    // Held for more than a heartbeat timeout: the clients answer pings.
    let (code, doc, _) =
        load(&server, &["idle", "--connections", "300", "--duration", "1500ms", "--sources", "4", "--min-held", "300"]);
    assert_eq!(code, Some(0), "{doc:#}");
    assert_eq!(figure(&doc, "connected"), 300.0);
    assert_eq!(figure(&doc, "held"), 300.0);
    assert_eq!(figure(&doc, "dropped"), 0.0);
    assert!(figure(&doc, "handshakes_per_s") > 0.0);
    let per_connection = figure(&doc, "server_rss_per_conn_bytes");
    assert!(per_connection > 0.0 && per_connection < 1024.0 * 1024.0, "{per_connection}");
}

#[test]
fn heartbeat_reports_every_dead_client_dropped_and_no_live_one() {
    let server = Server::start(&[
        ("ROOMCAST_HEARTBEAT__INTERVAL", "500ms"),
        ("ROOMCAST_HEARTBEAT__TIMEOUT", "1500ms"),
        ("ROOMCAST_LIMITS__MESSAGES_PER_SECOND", "100000"),
        ("ROOMCAST_LIMITS__BURST", "100000"),
    ]);
    let (code, doc, _) = load(
        &server,
        &[
            "heartbeat",
            "--live",
            "12",
            "--dead",
            "6",
            "--rooms",
            "3",
            "--rate",
            "20",
            "--duration",
            "6s",
            "--max-drop-time",
            "3s",
        ],
    );
    assert_eq!(code, Some(0), "{doc:#}");
    assert_eq!(figure(&doc, "dead_dropped"), 6.0);
    assert_eq!(figure(&doc, "dead_not_dropped"), 0.0);
    assert_eq!(figure(&doc, "live_dropped"), 0.0);
    assert_eq!(figure(&doc, "lost"), 0.0, "the live members lost nothing");
    assert!(figure(&doc, "drop_time_min_s") >= 1.5, "not before the timeout");
    assert!(figure(&doc, "drop_time_max_s") <= 3.0, "within timeout + interval + 1 s");
    assert_eq!(figure(&doc, "server_heartbeat_timeout_s"), 1.5, "read from welcome");
}

#[test]
fn slow_members_are_closed_and_the_others_lose_nothing() {
    let server = Server::start(&[
        ("ROOMCAST_LIMITS__OUTBOUND_QUEUE", "64"),
        ("ROOMCAST_LIMITS__MESSAGES_PER_SECOND", "100000"),
        ("ROOMCAST_LIMITS__BURST", "100000"),
    ]);
    let (code, doc, _) = load(
        &server,
        // 6 MB/s into the slow member fill the kernel's socket buffers in a
        // second or two; the run ends once it is closed.
        &[
            "slow",
            "--rooms",
            "1",
            "--members",
            "3",
            "--slow",
            "1",
            "--rate",
            "1500",
            "--size",
            "4096",
            "--duration",
            "30s",
            "--until-dropped",
        ],
    );
    assert_eq!(code, Some(0), "{doc:#}");
    assert_eq!(figure(&doc, "slow_dropped"), 1.0);
    assert_eq!(figure(&doc, "slow_not_dropped"), 0.0);
    assert_eq!(figure(&doc, "lost"), 0.0);
    assert_eq!(figure(&doc, "gaps"), 0.0);
    assert_eq!(figure(&doc, "live_dropped"), 0.0);
    assert!(figure(&doc, "server_rss_max_bytes") > 0.0);
    assert!(doc["server_rss_series"].as_array().is_some_and(|s| !s.is_empty()));
    let rt = tokio::runtime::Runtime::new().unwrap();
    assert_eq!(rt.block_on(server.metric("roomcast_slow_consumer_closes_total")), 1, "closed by the bound (1013)");
    assert_eq!(figure(&doc, "slow_consumer_closes"), 1.0, "the report says why");
    assert_eq!(figure(&doc, "heartbeat_closes"), 0.0);
}

#[test]
fn a_slow_run_says_when_the_heartbeat_closed_the_slow_members() {
    // Small messages, slowly: the queue never fills before the heartbeat's
    // 1.5 s timeout, and the report says so.
    let server = Server::start(&[("ROOMCAST_HEARTBEAT__INTERVAL", "500ms"), ("ROOMCAST_HEARTBEAT__TIMEOUT", "1500ms")]);
    let (code, doc, _) = load(
        &server,
        &[
            "slow",
            "--rooms",
            "1",
            "--members",
            "2",
            "--slow",
            "1",
            "--rate",
            "5",
            "--size",
            "100",
            "--duration",
            "10s",
            "--until-dropped",
        ],
    );
    assert_eq!(code, Some(0), "{doc:#}");
    assert_eq!(figure(&doc, "slow_dropped"), 1.0);
    assert_eq!((figure(&doc, "slow_consumer_closes"), figure(&doc, "heartbeat_closes")), (0.0, 1.0));
    let notes = doc["notes"].to_string();
    assert!(notes.contains("closed by the heartbeat, not as slow consumers"), "{notes}");
}

#[test]
fn churn_completes_every_cycle() {
    let server = Server::start(&[]);
    let (code, doc, _) = load(&server, &["churn", "--rate", "50", "--duration", "1s"]);
    assert_eq!(code, Some(0));
    let started = figure(&doc, "cycles_started");
    assert!(started >= 40.0, "{doc:#}");
    assert_eq!(figure(&doc, "cycles_completed"), started);
    assert_eq!(figure(&doc, "errors"), 0.0);
    assert!(figure(&doc, "handshakes_per_s") > 0.0);
}

#[test]
fn bad_arguments_and_unreachable_servers_exit_2() {
    let output = command(&["load", "fanout", "--url", "http://127.0.0.1:1"], &[]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("ws://"));
    let output =
        command(&["load", "fanout", "--url", "ws://127.0.0.1:1", "--duration", "100ms", "-q"], &[]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no member could connect"));
    let output = command(&["load", "fanout", "--url", "ws://127.0.0.1:1", "--rate", "fast"], &[]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
}

/// Authenticated load is one flag away: `--hmac-secret` signs a token per
/// connection, each its own user (the server allows one connection per
/// user here, and makes every room private), `--token` sends one token.
#[test]
fn load_authenticates_with_minted_or_given_tokens() {
    let secret = "load-secret-of-at-least-thirty-two-bytes";
    let mut env = fast_limits();
    env.extend([
        ("ROOMCAST_AUTH__MODE", "required"),
        ("ROOMCAST_AUTH__HMAC_SECRET", secret),
        ("ROOMCAST_AUTH__AUDIENCE", "load-tests"),
        ("ROOMCAST_AUTH__MAX_CONNECTIONS_PER_USER", "1"),
        ("ROOMCAST_AUTH__PRIVATE_ROOMS", "*"),
    ]);
    let server = Server::start(&env);
    let fanout = ["fanout", "--rooms", "3", "--members", "5", "--rate", "50", "--duration", "1s"];
    let minted = [&fanout[..], &["--hmac-secret", secret, "--audience", "load-tests"]].concat();
    let (code, doc, output) = load(&server, &minted);
    assert_eq!(code, Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(figure(&doc, "connected"), 15.0);
    assert!(figure(&doc, "deliveries") > 0.0);
    for key in ["lost", "gaps", "errors", "refused"] {
        assert_eq!(figure(&doc, key), 0.0, "{key}");
    }
    // Without a token nothing gets through, and the run says why.
    let url = format!("ws://{}", server.addr);
    let output = command(&["load", "fanout", "--url", &url, "--quiet", "--rooms", "1", "--members", "2"], &[])
        .output()
        .expect("run roomcast load");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("unauthorized"), "{stderr}");
    // One given token (a second connection of its user would be refused).
    let token = command(
        &["token", "--sub", "echoer", "--ttl", "5m"],
        &[("ROOMCAST_AUTH__HMAC_SECRET", secret), ("ROOMCAST_AUTH__AUDIENCE", "load-tests")],
    )
    .output()
    .expect("roomcast token");
    assert!(token.status.success(), "{}", String::from_utf8_lossy(&token.stderr));
    let token = String::from_utf8(token.stdout).unwrap();
    let (code, doc, output) =
        load(&server, &["echo", "--connections", "1", "--duration", "500ms", "--token", token.trim()]);
    assert_eq!(code, Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(figure(&doc, "round_trips") > 0.0, "{doc:#}");
}

#[tokio::test]
#[cfg_attr(skip_redis, ignore = "redis-server is missing and SKIP_MISSING_TOOLS=1")]
async fn fanout_across_cluster_nodes_checks_order_and_loss_cluster_wide() {
    let redis = common::Redis::start();
    let mut env = fast_limits();
    env.push(("ROOMCAST_CLUSTER__NODE_TIMEOUT", "2s"));
    let nodes: Vec<Server> = (0..2).map(|_| redis.node(&env)).collect();
    let urls = format!("ws://{},ws://{}", nodes[0].addr, nodes[1].addr);
    let json = std::env::temp_dir().join(format!("roomcast-load-cluster-{}.json", std::process::id()));
    let args = ["load", "fanout", "--url", &urls, "--rooms", "2", "--members", "4", "--rate", "50", "--duration", "1s"];
    let mut all = args.to_vec();
    all.extend(["--json", json.to_str().unwrap(), "--quiet"]);
    let output = command(&all, &[]).output().expect("run roomcast load");
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);
    let published = figure(&doc, "published");
    assert!(published >= 50.0, "{published}");
    assert_eq!(figure(&doc, "deliveries"), published * 4.0, "every member on either node got every message");
    for key in ["lost", "gaps", "out_of_order", "errors", "connect_errors", "refused"] {
        assert_eq!(figure(&doc, key), 0.0, "{key}");
    }
    assert_eq!(doc["params"]["url"], format!("ws://{}/ws,ws://{}/ws", nodes[0].addr, nodes[1].addr));
    // Both nodes held members.
    for node in &nodes {
        assert_eq!(node.metric("roomcast_connections_total").await, 4);
    }
}

/// Redis holds every write for a while in the middle of a run: the
/// publishes the nodes refuse `unavailable` were not published, and the
/// load tester counts them as refused, not lost.
#[tokio::test]
#[cfg_attr(skip_redis, ignore = "redis-server is missing and SKIP_MISSING_TOOLS=1")]
async fn publishes_refused_unavailable_during_a_redis_stall_are_refused_not_lost() {
    let redis = common::Redis::start();
    let nodes: Vec<Server> = (0..2).map(|_| redis.node(&fast_limits())).collect();
    let urls = format!("ws://{},ws://{}", nodes[0].addr, nodes[1].addr);
    let json = std::env::temp_dir().join(format!("roomcast-load-stall-{}.json", std::process::id()));
    let args = ["load", "fanout", "--url", &urls, "--rooms", "2", "--members", "3", "--rate", "100"];
    let mut all = args.to_vec();
    all.extend(["--duration", "4s", "--max-refused", "100000", "--json", json.to_str().unwrap(), "--quiet"]);
    let run = command(&all, &[]).stdout(std::process::Stdio::null()).spawn().expect("run roomcast load");
    // Once publishes flow (the first reaches Redis), Redis stalls 2.5 s.
    let mut admin = redis.connection().await;
    let deadline = std::time::Instant::now() + common::DEADLINE;
    while nodes[0].metric("roomcast_cluster_publish_seconds_count").await == 0 {
        assert!(std::time::Instant::now() < deadline, "no publish reached Redis");
        tokio::task::yield_now().await;
    }
    let () = redis::cmd("CLIENT").arg("PAUSE").arg(2500).arg("WRITE").query_async(&mut admin).await.unwrap();
    let output = tokio::task::spawn_blocking(move || run.wait_with_output()).await.unwrap().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);
    let (published, refused) = (figure(&doc, "published"), figure(&doc, "refused"));
    assert!(refused > 0.0, "the stall refused nothing: {doc:#}");
    assert_eq!(figure(&doc, "unavailable"), refused, "refused unavailable, not rate limited");
    assert_eq!(figure(&doc, "deliveries"), (published - refused) * 3.0, "what was not refused reached everyone");
    for key in ["lost", "gaps", "out_of_order", "errors", "unacknowledged"] {
        assert_eq!(figure(&doc, key), 0.0, "{key}: {doc:#}");
    }
}
