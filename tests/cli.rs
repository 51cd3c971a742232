//! The command line and configuration contract of config.md, through the
//! real binary: `serve`, `check-config`, `--help`, `--version`, the file,
//! environment overrides, errors (exit 2, one line naming the key), and
//! logging levels.

mod common;

use std::path::PathBuf;
use std::process::Output;

use common::{Client, Server, command};
use serde_json::json;

/// Runs the binary with no harness defaults: only `env` is set.
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = command(args, &[]);
    cmd.env_remove("ROOMCAST_SERVER__PORT").env_remove("ROOMCAST_SERVER__WORKERS");
    cmd.envs(env.iter().copied()).output().expect("run")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).to_string()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).to_string()
}

/// A configuration file in a fresh temporary directory.
fn config_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("roomcast-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("roomcast.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn shipped_config() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/roomcast.toml")
}

#[test]
fn help_and_version() {
    let version = run(&["--version"], &[]);
    assert!(version.status.success());
    assert_eq!(stdout(&version).trim(), format!("roomcast {}", env!("CARGO_PKG_VERSION")));
    let help = run(&["--help"], &[]);
    assert!(help.status.success());
    for word in ["serve", "check-config", "--help", "--version"] {
        assert!(stdout(&help).contains(word), "{word} missing from --help");
    }
    let serve_help = run(&["serve", "--help"], &[]);
    assert!(stdout(&serve_help).contains("--config"));
    assert_eq!(run(&["frobnicate"], &[]).status.code(), Some(2));
}

#[test]
fn check_config_prints_every_key_with_its_default() {
    let output = run(&["check-config"], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let settings: toml::Table = toml::from_str(&stdout(&output)).expect("TOML");
    let expected: toml::Table = toml::from_str(
        r#"
        [server]
        host = "127.0.0.1"
        port = 8080
        workers = 0
        max_connections = 100000
        max_connections_per_ip = 0
        hosts = []
        shutdown_timeout = "10s"
        [server.tls]
        cert = ""
        key = ""
        [origin]
        policy = "same-host"
        allow = []
        allow_missing = true
        [heartbeat]
        interval = "5s"
        timeout = "10s"
        [limits]
        max_message_bytes = 65536
        max_rooms_per_session = 64
        max_members_per_room = 10000
        messages_per_second = 50
        burst = 100
        outbound_queue = 1024
        outbound_bytes = "4MiB"
        [rooms]
        history = 50
        history_bytes = "1MiB"
        max_rooms = 100000
        empty_ttl = "5m"
        publish_ids = 1000
        [api]
        key = ""
        messages_per_second = 1000
        burst = 2000
        [auth]
        mode = "off"
        hmac_secret = ""
        hmac_secret_file = ""
        public_key = ""
        jwks_file = ""
        audience = ""
        issuer = ""
        leeway = "30s"
        private_rooms = []
        max_connections_per_user = 0
        [cluster]
        redis = ""
        prefix = "roomcast"
        node_timeout = "5s"
        [log]
        level = "info"
        "#,
    )
    .unwrap();
    assert_eq!(settings, expected);
}

#[test]
fn the_shipped_file_holds_every_key_at_its_default() {
    let path = shipped_config();
    let text = std::fs::read_to_string(&path).unwrap();
    let defaults = stdout(&run(&["check-config"], &[]));
    let mut sections = vec![(String::new(), toml::from_str::<toml::Table>(&defaults).unwrap())];
    while let Some((name, table)) = sections.pop() {
        for (key, value) in table {
            if let toml::Value::Table(inner) = value {
                let section = if name.is_empty() { key } else { format!("{name}.{key}") };
                assert!(text.contains(&format!("[{section}]")), "[{section}] missing from the shipped file");
                sections.push((section, inner));
            } else {
                assert!(text.lines().any(|l| l.trim_start().starts_with(&format!("{key} ="))), "{name}.{key} missing");
            }
        }
    }
    let output = run(&["check-config", "--config", path.to_str().unwrap()], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let (named, settings) = stdout(&output).split_once('\n').map(|(a, b)| (a.to_string(), b.to_string())).unwrap();
    assert_eq!(named, format!("# config: {}", path.display()));
    assert_eq!(settings, defaults.split_once('\n').unwrap().1, "the same settings as the defaults");
}

#[test]
fn check_config_names_the_configuration_and_hides_secrets() {
    let secret = "auth-secret-of-at-least-32-bytes-long";
    let redis = "redis://:redis-pass-word@127.0.0.1:6379/2";
    let output = run(
        &["check-config"],
        &[
            ("ROOMCAST_API__KEY", "s3cret-value"),
            ("ROOMCAST_AUTH__HMAC_SECRET", secret),
            ("ROOMCAST_CLUSTER__REDIS", redis),
        ],
    );
    let text = stdout(&output);
    assert!(text.starts_with("# config: built-in defaults\n"), "{text}");
    let settings: toml::Table = toml::from_str(&text).unwrap();
    assert_eq!(settings["api"]["key"].as_str(), Some("<redacted>"));
    assert_eq!(settings["auth"]["hmac_secret"].as_str(), Some("<redacted>"));
    assert!(!text.contains("s3cret-value") && !text.contains(secret));
    assert!(!text.contains("redis-pass-word"), "{text}");
    assert!(settings["cluster"]["redis"].as_str().is_some_and(|url| url.contains("@127.0.0.1:6379/2")), "{text}");
    // Not in an error either.
    let path = config_file("secret", "[api]\nkey = 12345678\n");
    let output = run(&["check-config", "--config", path.to_str().unwrap()], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("api.key"), "{}", stderr(&output));
    assert!(!stderr(&output).contains("12345678"), "{}", stderr(&output));
}

#[test]
fn errors_say_where_the_value_came_from_and_what_was_expected() {
    let path = config_file("where", "[server]\nport = 70000\n");
    let output = run(&["check-config", "--config", path.to_str().unwrap()], &[]);
    let err = stderr(&output);
    assert!(err.contains(&format!("server.port (from {})", path.display())), "{err}");
    assert!(err.contains("70000 is out of range: expected a whole number from 0 to 65535"), "{err}");
    let output = run(&["check-config"], &[("ROOMCAST_HEARTBEAT__INTERVAL", "5")]);
    let err = stderr(&output);
    assert!(err.contains("heartbeat.interval (from ROOMCAST_HEARTBEAT__INTERVAL)"), "{err}");
    assert!(err.contains("a duration such as \"5s\""), "{err}");
    // A TOML syntax error: the file, line and column, on one line.
    let path = config_file("syntax", "[server]\nport = 1\n[limits\nburst = 5\n");
    let output = run(&["check-config", "--config", path.to_str().unwrap()], &[]);
    let err = stderr(&output);
    assert!(err.contains(&format!("{}:3:8:", path.display())), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[test]
fn environment_overrides_the_file() {
    let path = config_file("env", "[server]\nport = 7000\nhost = \"0.0.0.0\"\n[heartbeat]\ninterval = \"1s 500ms\"\n");
    let output = run(
        &["check-config", "-c", path.to_str().unwrap()],
        &[
            ("ROOMCAST_SERVER__PORT", "7001"),
            ("ROOMCAST_ORIGIN__POLICY", "allow-list"),
            ("ROOMCAST_ORIGIN__ALLOW", "https://a.example,http://b.example:8080"),
            ("ROOMCAST_SERVER__TLS__CERT", ""),
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let settings: toml::Table = toml::from_str(&stdout(&output)).unwrap();
    assert_eq!(settings["server"]["port"].as_integer(), Some(7001));
    assert_eq!(settings["server"]["host"].as_str(), Some("0.0.0.0"));
    assert_eq!(settings["heartbeat"]["interval"].as_str(), Some("1s 500ms"));
    let allow: Vec<_> = settings["origin"]["allow"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(allow, ["https://a.example", "http://b.example:8080"]);
}

#[test]
fn bad_configuration_exits_2_with_one_line_naming_the_key() {
    const PRIVATE_KEY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/auth/ec256-private.pem");
    /// What is wrong, the file (if any), the environment, the key named.
    struct Case(&'static str, Option<&'static str>, &'static [(&'static str, &'static str)], &'static str);
    let cases = [
        Case("unknown key", Some("[server]\nbogus = 1\n"), &[], "server.bogus"),
        Case("unknown section", Some("[nope]\nx = 1\n"), &[], "nope"),
        Case("ill-typed value", Some("[server]\nport = \"eighty\"\n"), &[], "server.port"),
        Case("out of range", Some("[server]\nport = 70000\n"), &[], "server.port"),
        Case("bad duration", Some("[heartbeat]\ninterval = \"5 parsecs\"\n"), &[], "heartbeat.interval"),
        Case(
            "timeout not above interval",
            Some("[heartbeat]\ninterval = \"5s\"\ntimeout = \"5s\"\n"),
            &[],
            "heartbeat.timeout",
        ),
        Case("empty allow-list", Some("[origin]\npolicy = \"allow-list\"\n"), &[], "origin.allow"),
        Case("unknown policy", Some("[origin]\npolicy = \"everyone\"\n"), &[], "origin.policy"),
        Case("zero limit", Some("[limits]\noutbound_queue = 0\n"), &[], "limits.outbound_queue"),
        Case("bad log level", Some("[log]\nlevel = \"loud\"\n"), &[], "log.level"),
        Case("TOML syntax", Some("[server\nport = 1\n"), &[], "roomcast.toml"),
        Case("unknown env key", None, &[("ROOMCAST_LIMITS__NOPE", "1")], "limits.nope"),
        Case("ill-typed env value", None, &[("ROOMCAST_LIMITS__BURST", "many")], "limits.burst"),
        Case("too many workers", Some("[server]\nworkers = 513\n"), &[], "server.workers"),
        Case("a fraction for a count", Some("[server]\nmax_connections = 1.5\n"), &[], "server.max_connections"),
        Case("a string for a boolean", Some("[origin]\nallow_missing = \"yes\"\n"), &[], "origin.allow_missing"),
        Case("a host that does not resolve", Some("[server]\nhost = \"nonexistent.invalid\"\n"), &[], "server.host"),
        Case("a bad size", Some("[limits]\noutbound_bytes = \"4 megabytes\"\n"), &[], "limits.outbound_bytes"),
        Case("a bad host name", Some("[server]\nhosts = [\"a b\"]\n"), &[], "server.hosts"),
        Case("no rooms", None, &[("ROOMCAST_ROOMS__MAX_ROOMS", "0")], "rooms.max_rooms"),
        Case("auth with no key", None, &[("ROOMCAST_AUTH__MODE", "required")], "auth.mode"),
        Case("an unknown auth mode", Some("[auth]\nmode = \"maybe\"\n"), &[], "auth.mode"),
        Case("a short secret", Some("[auth]\nmode = \"optional\"\nhmac_secret = \"short\"\n"), &[], "auth.hmac_secret"),
        Case(
            "a secret file missing",
            Some("[auth]\nhmac_secret_file = \"/nonexistent/secret\"\n"),
            &[],
            "auth.hmac_secret_file",
        ),
        Case(
            "two secrets",
            Some("[auth]\nhmac_secret = \"0123456789abcdef0123456789abcdef\"\nhmac_secret_file = \"/etc/hostname\"\n"),
            &[],
            "auth.hmac_secret_file",
        ),
        Case("a public key missing", None, &[("ROOMCAST_AUTH__PUBLIC_KEY", "/nonexistent/key.pem")], "auth.public_key"),
        Case("a private key as the public key", None, &[("ROOMCAST_AUTH__PUBLIC_KEY", PRIVATE_KEY)], "auth.public_key"),
        Case("a PEM file as the key set", None, &[("ROOMCAST_AUTH__JWKS_FILE", PRIVATE_KEY)], "auth.jwks_file"),
        Case("a bad room pattern", Some("[auth]\nprivate_rooms = [\"a b\"]\n"), &[], "auth.private_rooms"),
        Case("a Redis URL that is not one", Some("[cluster]\nredis = \"localhost:6379\"\n"), &[], "cluster.redis"),
        Case(
            "a Redis URL of another scheme",
            None,
            &[("ROOMCAST_CLUSTER__REDIS", "http://127.0.0.1:6379")],
            "cluster.redis",
        ),
        Case("an empty cluster prefix", Some("[cluster]\nprefix = \"\"\n"), &[], "cluster.prefix"),
        Case("a cluster prefix with a space", None, &[("ROOMCAST_CLUSTER__PREFIX", "a b")], "cluster.prefix"),
        Case("a short node timeout", Some("[cluster]\nnode_timeout = \"500ms\"\n"), &[], "cluster.node_timeout"),
    ];
    for Case(what, file, env, key) in cases {
        let path = file.map(|text| config_file(&what.replace(' ', "-"), text));
        let mut args = vec!["check-config"];
        if let Some(path) = &path {
            args.extend(["--config", path.to_str().unwrap()]);
        }
        for subcommand in ["check-config", "serve"] {
            args[0] = subcommand;
            let output = run(&args, env);
            let err = stderr(&output);
            assert_eq!(output.status.code(), Some(2), "{what} ({subcommand}): {err}");
            assert_eq!(err.trim_end().lines().count(), 1, "{what}: one line, got {err:?}");
            assert!(err.contains(key), "{what}: {err:?} does not name {key}");
            assert!(stdout(&output).is_empty(), "{what}: nothing on stdout");
        }
    }
    let missing = run(&["serve", "--config", "/nonexistent/roomcast.toml"], &[]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(stderr(&missing).contains("/nonexistent/roomcast.toml"));
}

#[test]
fn a_port_in_use_or_an_address_not_here_names_the_key() {
    let first = Server::start(&[]);
    let port = first.addr.port().to_string();
    let output = run(&["serve"], &[("ROOMCAST_SERVER__PORT", &port)]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("server.port: cannot listen on 127.0.0.1:{port}: the port is in use")), "{err}");
    // An address no interface has (TEST-NET-1, RFC 5737).
    let output = run(&["serve"], &[("ROOMCAST_SERVER__HOST", "192.0.2.1"), ("ROOMCAST_SERVER__PORT", "0")]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(err.contains("server.host: cannot listen on 192.0.2.1:0"), "{err}");
}

#[tokio::test]
async fn log_level_comes_from_the_config_and_rust_log_wins() {
    // debug: connections are logged; bodies never are above debug.
    let server = Server::start(&[("ROOMCAST_LOG__LEVEL", "debug")]);
    let mut client = Client::json(&server).await;
    client.join("logged").await;
    client.request(json!({"type":"publish","room":"logged","body":"SECRET-BODY-MARKER"})).await;
    let id = client.id.clone();
    server.wait_for_log(&format!("session {id} opened on /ws"));
    client.close().await;
    server.wait_for_log(&format!("session {id} closed"));
    assert!(!server.log_text().contains("SECRET-BODY-MARKER"));

    // info (the default): refusals are logged, connections are not; the
    // configuration in effect is named.
    let server = Server::start(&[]);
    server.wait_for_log("config: built-in defaults");
    let mut client = Client::json(&server).await;
    client.request(json!({"type":"ping"})).await;
    let refused = Client::try_connect(&server.url("/ws"), &[("Origin", "http://evil.example")]).await;
    assert!(refused.is_err());
    server.wait_for_log("refused /ws");
    assert!(!server.log_text().contains("opened on"), "{}", server.log_text());

    // RUST_LOG wins over log.level.
    let server = Server::start(&[("ROOMCAST_LOG__LEVEL", "debug"), ("RUST_LOG", "warn")]);
    let mut client = Client::json(&server).await;
    client.request(json!({"type":"ping"})).await;
    let refused = Client::try_connect(&server.url("/ws"), &[("Origin", "http://evil.example")]).await;
    assert!(refused.is_err());
    let healthz = reqwest::get(server.http("/healthz")).await.unwrap();
    assert_eq!(healthz.status(), 200);
    assert!(server.log_text().is_empty(), "nothing at warn: {}", server.log_text());
}

#[test]
fn without_config_the_file_in_the_working_directory_is_read() {
    let path = config_file("cwd", "[rooms]\nhistory = 7\n");
    let dir = path.parent().unwrap().join("work");
    std::fs::create_dir_all(dir.join("config")).unwrap();
    std::fs::copy(&path, dir.join("config/roomcast.toml")).unwrap();
    let output = command(&["check-config"], &[]).current_dir(&dir).output().expect("run");
    assert!(output.status.success(), "{}", stderr(&output));
    let settings: toml::Table = toml::from_str(&stdout(&output)).unwrap();
    assert_eq!(settings["rooms"]["history"].as_integer(), Some(7));
}
