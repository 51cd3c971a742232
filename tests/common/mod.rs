//! Test harness: the real `roomcast` binary as a child process on port 0,
//! a JSON protocol client (tokio-tungstenite), a raw-frame client for
//! malformed input, and small HTTP helpers.
#![allow(dead_code)] // each test binary uses a different part

pub mod raw;
pub mod tokens;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long any single expected event may take before a test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

pub const BINARY: &str = env!("CARGO_BIN_EXE_roomcast");

/// A `roomcast serve` child process, killed on drop.
pub struct Server {
    /// `None` once `wait_exit` took it.
    child: Option<Child>,
    pid: u32,
    pub addr: SocketAddr,
    /// Serving https and wss (`[server.tls]` set).
    pub tls: bool,
    log_lines: mpsc::Receiver<String>,
    log: Arc<Mutex<Vec<String>>>,
}

/// The environment every test server starts from: loopback, port 0, no
/// config file (the child runs in a temporary directory).
/// A token made by `roomcast token ARGS` (after `token`) with `env`.
pub fn mint(args: &[&str], env: &[(&str, &str)]) -> String {
    let all: Vec<&str> = ["token"].into_iter().chain(args.iter().copied()).collect();
    let output = command(&all, env).output().expect("roomcast token");
    assert!(output.status.success(), "roomcast token {args:?}: {output:?}");
    String::from_utf8(output.stdout).expect("UTF-8").trim().to_string()
}

pub fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BINARY);
    cmd.args(args).current_dir(std::env::temp_dir());
    for (key, _) in std::env::vars() {
        if key.starts_with("ROOMCAST_") || key == "RUST_LOG" {
            cmd.env_remove(key);
        }
    }
    cmd.env("ROOMCAST_SERVER__PORT", "0").env("ROOMCAST_SERVER__WORKERS", "2");
    let clustered = env.iter().any(|(key, _)| key.starts_with("ROOMCAST_CLUSTER__"));
    if args == ["serve"] && !clustered && cluster_switch() {
        cmd.env("ROOMCAST_CLUSTER__REDIS", shared_redis_url())
            .env("ROOMCAST_CLUSTER__PREFIX", format!("t{}", fastrand::u64(..)))
            .env("ROOMCAST_CLUSTER__NODE_TIMEOUT", "1s");
    }
    for (key, value) in env {
        cmd.env(key, value);
    }
    cmd
}

/// `RC_TEST_CLUSTER=1`: every server a test starts with `serve` (and no
/// `[cluster]` of its own) is a node of a cluster, alone on a Redis shared
/// by the test binary under a prefix of its own, so that the protocol's
/// tests check one process and a cluster node alike.
pub fn cluster_switch() -> bool {
    std::env::var("RC_TEST_CLUSTER").is_ok_and(|value| value == "1")
}

/// The URL of the test binary's own `redis-server`, started on first use.
/// It ends with the binary: a shell holds it and kills it when the pipe
/// from this process closes (statics are never dropped).
fn shared_redis_url() -> String {
    SHARED_REDIS
        .get_or_init(|| {
            let program = tool("redis-server", "redis-server");
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let script = format!(
                "{} {} & pid=$!; cat >/dev/null; kill $pid",
                program.display(),
                Redis::args(port).iter().map(|arg| format!("'{arg}'")).collect::<Vec<_>>().join(" ")
            );
            let mut child = Command::new("sh")
                .args(["-c", &script])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("start redis-server");
            assert!(Redis::ready(&mut child), "redis-server did not start on port {port}");
            // The pipe stays open for the life of the process.
            std::mem::forget(child);
            format!("redis://127.0.0.1:{port}")
        })
        .clone()
}

static SHARED_REDIS: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Waits until the node under `prefix` has beaten once on the Redis at
/// `url` (it has its number then, and takes connections), without relying
/// on its log, which a test may have turned down.
fn wait_for_node(url: &str, prefix: &str) {
    use std::io::{Read, Write};
    let address = url.trim_start_matches("redis://");
    let key = format!("{prefix}:nodes:alive");
    let command = format!("*2\r\n$5\r\nZCARD\r\n${}\r\n{key}\r\n", key.len());
    let deadline = std::time::Instant::now() + DEADLINE;
    let mut redis = std::net::TcpStream::connect(address).expect("connect to the shared Redis");
    loop {
        redis.write_all(command.as_bytes()).expect("ask Redis");
        let mut reply = [0u8; 64];
        let n = redis.read(&mut reply).expect("Redis answers");
        if !reply[..n].starts_with(b":0") {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "the node under {prefix} never beat");
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Server {
    pub fn start(env: &[(&str, &str)]) -> Server {
        Self::spawn(command(&["serve"], env))
    }

    pub fn spawn(mut cmd: Command) -> Server {
        let env = |name: &str| {
            cmd.get_envs().find(|(key, _)| *key == name).and_then(|(_, value)| value?.to_str().map(String::from))
        };
        // A node the switch made (`RC_TEST_CLUSTER`): where it registers.
        let switched = env("ROOMCAST_CLUSTER__REDIS")
            .filter(|url| Some(url) == SHARED_REDIS.get())
            .zip(env("ROOMCAST_CLUSTER__PREFIX"));
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).stdin(Stdio::null());
        let mut child = cmd.spawn().expect("start roomcast");
        let stdout = child.stdout.take().expect("stdout");
        let (line_tx, line_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut first = String::new();
            let _ = BufReader::new(stdout).read_line(&mut first);
            let _ = line_tx.send(first);
        });
        // Drain stderr (the log) so the server never blocks on it, and
        // hand each line to whoever waits for one.
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (log_tx, log_rx) = mpsc::channel();
        let log_copy = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log_copy.lock().unwrap().push(line.clone());
                let _ = log_tx.send(line);
            }
        });
        let first = line_rx.recv_timeout(DEADLINE).expect("roomcast printed nothing on stdout");
        let line = first.trim();
        let (tls, addr) = match (line.strip_prefix("listening on http://"), line.strip_prefix("listening on https://"))
        {
            (Some(addr), _) => (false, addr),
            (_, Some(addr)) => (true, addr),
            _ => panic!("unexpected first line {first:?}; log: {:?}", log.lock().unwrap()),
        };
        let addr = addr.parse().expect("an address");
        let server = Server { pid: child.id(), child: Some(child), addr, tls, log_lines: log_rx, log };
        if let Some((url, prefix)) = switched {
            // Before it has its node number a node refuses connections.
            wait_for_node(&url, &prefix);
        }
        server
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!("{scheme}://{}{path}", self.addr)
    }

    pub fn http(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.addr)
    }

    /// Waits for a log line containing `needle` (the log so far counts).
    pub fn wait_for_log(&self, needle: &str) -> String {
        let seen = self.log.lock().unwrap().iter().find(|l| l.contains(needle)).cloned();
        if let Some(line) = seen {
            return line;
        }
        let deadline = std::time::Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.log_lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => {
                    let log = self.log_text();
                    panic!("no log line with {needle:?}; log:\n{log}");
                }
            }
        }
    }

    /// Waits until `count` log lines contain `needle`; returns the last.
    pub fn wait_for_log_count(&self, needle: &str, count: usize) -> String {
        let deadline = std::time::Instant::now() + DEADLINE;
        loop {
            let lines: Vec<String> = self.log.lock().unwrap().iter().filter(|l| l.contains(needle)).cloned().collect();
            if lines.len() >= count {
                return lines[count - 1].clone();
            }
            // Any new line may be the one: wait for the next.
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if self.log_lines.recv_timeout(left).is_err() && std::time::Instant::now() >= deadline {
                panic!("fewer than {count} log lines with {needle:?}; log:\n{}", self.log_text());
            }
        }
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).join("\n")
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill").args(["-s", signal, &self.pid().to_string()]).status().expect("kill");
        assert!(status.success());
    }

    /// Waits for the process to exit; returns its status and how long it
    /// took from this call.
    pub fn wait_exit(&mut self, within: Duration) -> (std::process::ExitStatus, Duration) {
        let mut child = self.child.take().expect("still running");
        let started = std::time::Instant::now();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        match rx.recv_timeout(within) {
            Ok(status) => (status.expect("wait"), started.elapsed()),
            Err(_) => {
                let _ = Command::new("kill").args(["-9", &self.pid.to_string()]).status();
                panic!("roomcast did not exit within {within:?}; log:\n{}", self.log_text());
            }
        }
    }

    /// Resident memory of the server process, from /proc.
    pub fn rss_kib(&self) -> u64 {
        self.proc_status_kib("VmRSS:")
    }

    /// The most resident memory since the start or `reset_peak_rss`.
    pub fn peak_rss_kib(&self) -> u64 {
        self.proc_status_kib("VmHWM:")
    }

    /// Starts measuring the peak anew (Linux: clear_refs 5).
    pub fn reset_peak_rss(&self) {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5").expect("clear_refs");
    }

    fn proc_status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc/PID/status"))
    }

    /// Waits until a metric reads `value` (a cluster node learns some of
    /// them from Redis at its next beat); returns it.
    pub async fn wait_for_metric(&self, name: &str, value: u64) -> u64 {
        self.wait_for_metric_where(name, |now| now == value).await
    }

    /// Waits until a metric reads more than `value`; returns it.
    pub async fn wait_for_metric_past(&self, name: &str, value: u64) -> u64 {
        self.wait_for_metric_where(name, |now| now > value).await
    }

    /// Polls a metric (no event says it changed) until `done` holds or the
    /// deadline passes; returns the last reading.
    async fn wait_for_metric_where(&self, name: &str, done: impl Fn(u64) -> bool) -> u64 {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let now = self.metric(name).await;
            if done(now) || tokio::time::Instant::now() >= deadline {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The value of one metric from `/metrics`.
    pub async fn metric(&self, name: &str) -> u64 {
        let text = reqwest::get(self.http("/metrics")).await.expect("metrics").text().await.expect("text");
        text.lines()
            .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- roomcast log ---\n{}\n--- end of roomcast log ---", self.log_text());
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `POST /api/rooms/{room}/publish` with the bearer `key`, and an
/// `Idempotency-Key` when one is given.
pub async fn api_publish(
    server: &Server,
    key: &str,
    room: &str,
    body: &Value,
    idempotency: Option<&str>,
) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(server.http(&format!("/api/rooms/{room}/publish")))
        .bearer_auth(key)
        .body(body.to_string());
    if let Some(idempotency) = idempotency {
        request = request.header("Idempotency-Key", idempotency);
    }
    request.send().await.expect("POST publish")
}

/// The TLS client configuration for `wss:` URLs, trusting the test's own
/// certificate (set by the TLS tests).
pub static TLS_CLIENT: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket client with deadlines on every receive.
pub struct Client {
    pub ws: Ws,
    /// The session id from `welcome` (JSON clients).
    pub id: String,
    next_ref: u64,
}

/// What came back instead of an upgrade.
pub fn refused_status(err: tokio_tungstenite::tungstenite::Error) -> u16 {
    match err {
        tokio_tungstenite::tungstenite::Error::Http(response) => response.status().as_u16(),
        other => panic!("expected an HTTP refusal, got {other:?}"),
    }
}

impl Client {
    /// Connects without reading anything.
    pub async fn connect(url: &str) -> Client {
        Self::try_connect(url, &[]).await.unwrap_or_else(|e| panic!("connect {url}: {e}"))
    }

    pub async fn try_connect(
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
        let mut request = url.into_client_request()?;
        for (name, value) in headers {
            request.headers_mut().insert(
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        let tls = TLS_CLIENT.get().map(|config| tokio_tungstenite::Connector::Rustls(config.clone()));
        let (ws, _) = tokio_tungstenite::connect_async_tls_with_config(request, None, false, tls).await?;
        Ok(Client { ws, id: String::new(), next_ref: 0 })
    }

    /// Connects to `/ws` and reads the `welcome`.
    pub async fn json(server: &Server) -> Client {
        Self::welcomed(Self::connect(&server.url("/ws")).await).await
    }

    /// Like `json`, over a socket with a small receive buffer, for a client
    /// that stops reading: the server's writes back up sooner.
    pub async fn json_small_buffer(server: &Server) -> Client {
        let request = server.url("/ws").into_client_request().expect("request");
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        let stream = socket.connect(server.addr).await.expect("connect");
        let tls = TLS_CLIENT.get().map(|config| tokio_tungstenite::Connector::Rustls(config.clone()));
        let (ws, _) =
            tokio_tungstenite::client_async_tls_with_config(request, stream, None, tls).await.expect("upgrade");
        Self::welcomed(Client { ws, id: String::new(), next_ref: 0 }).await
    }

    async fn welcomed(mut client: Client) -> Client {
        let welcome = client.recv_json().await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        client.id = welcome["id"].as_str().expect("id is a string").to_string();
        client
    }

    pub async fn send(&mut self, message: Message) {
        self.ws.send(message).await.expect("send");
    }

    pub async fn send_text(&mut self, text: &str) {
        self.send(Message::text(text)).await;
    }

    pub async fn send_json(&mut self, value: Value) {
        self.send_text(&value.to_string()).await;
    }

    /// The next data or close frame (pings and pongs are skipped;
    /// tungstenite answers pings itself while we read).
    pub async fn recv(&mut self) -> Message {
        self.recv_within(DEADLINE).await.unwrap_or_else(|| panic!("nothing arrived within {DEADLINE:?}"))
    }

    pub async fn recv_within(&mut self, within: Duration) -> Option<Message> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next()).await.ok()?;
            match next {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(message)) => return Some(message),
                Some(Err(e)) => panic!("connection failed: {e}"),
                None => panic!("connection ended without a close frame"),
            }
        }
    }

    /// The next frame of any kind, pings and pongs included.
    pub async fn next_frame(&mut self) -> Message {
        match tokio::time::timeout(DEADLINE, self.ws.next()).await {
            Ok(Some(Ok(message))) => message,
            Ok(other) => panic!("connection ended: {other:?}"),
            Err(_) => panic!("nothing arrived within {DEADLINE:?}"),
        }
    }

    /// The next frame, which must be a JSON text frame.
    pub async fn recv_json(&mut self) -> Value {
        match self.recv().await {
            Message::Text(text) => serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON: {text:?}: {e}")),
            other => panic!("expected a JSON text frame, got {other:?}"),
        }
    }

    /// The next frame, which must be a JSON frame of `kind`.
    pub async fn expect(&mut self, kind: &str) -> Value {
        let value = self.recv_json().await;
        assert_eq!(value["type"], kind, "expected {kind}, got {value}");
        value
    }

    /// Sends `request` with a fresh integer `ref` and returns the reply
    /// carrying it; anything arriving before it must be in `skip` types.
    pub async fn request(&mut self, mut request: Value) -> Value {
        self.next_ref += 1;
        let reference = self.next_ref;
        request["ref"] = json!(reference);
        self.send_json(request).await;
        loop {
            let value = self.recv_json().await;
            if value["ref"] == json!(reference) {
                return value;
            }
            assert!(
                matches!(value["type"].as_str(), Some("message" | "presence")),
                "unexpected frame before the reply: {value}"
            );
        }
    }

    /// Two `/ws` clients that joined `room`; the first has read the
    /// second's presence event.
    pub async fn pair_in(server: &Server, room: &str) -> (Client, Client) {
        let mut a = Client::json(server).await;
        let mut b = Client::json(server).await;
        a.join(room).await;
        b.join(room).await;
        assert_eq!(a.expect("presence").await["id"], json!(b.id));
        (a, b)
    }

    pub async fn join(&mut self, room: &str) -> Value {
        let joined = self.request(json!({"type": "join", "room": room})).await;
        assert_eq!(joined["type"], "joined", "{joined}");
        joined
    }

    /// Reads until the close frame, then on to the end of the connection
    /// (tungstenite sends its close reply as we go on reading); returns the
    /// close code.
    pub async fn close_code(&mut self) -> u16 {
        let code = loop {
            match self.recv().await {
                Message::Close(Some(CloseFrame { code, .. })) => break code.into(),
                Message::Close(None) => break 1005,
                _ => {}
            }
        };
        while let Ok(Some(Ok(_))) = tokio::time::timeout(DEADLINE, self.ws.next()).await {}
        code
    }

    /// Closes cleanly (close 1000) and waits for the server's close.
    pub async fn close(mut self) {
        self.ws.close(None).await.expect("close");
        while let Some(Ok(_)) = tokio::time::timeout(DEADLINE, self.ws.next()).await.expect("close reply") {}
    }
}

pub fn text(s: &str) -> Message {
    Message::text(s)
}

pub fn binary(b: &[u8]) -> Message {
    Message::Binary(Bytes::copy_from_slice(b))
}

/// A TCP proxy in front of a server, whose open connections a test can cut
/// (the server keeps running; the client sees its connection drop).
pub struct Proxy {
    pub addr: SocketAddr,
    cut: tokio::sync::watch::Sender<u64>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().unwrap();
        let (cut, _) = tokio::sync::watch::channel(0u64);
        let cuts = cut.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut cut = cuts.subscribe();
                cut.borrow_and_update();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Proxy { addr, cut }
    }

    /// Drops every connection open through the proxy.
    pub fn cut_all(&self) {
        self.cut.send_modify(|n| *n += 1);
    }
}

/// The path of `program` on PATH, or a failure that says which package
/// brings it and how to skip the tests that need it (SKIP_MISSING_TOOLS=1,
/// see build.rs).
pub fn tool(program: &str, package: &str) -> std::path::PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|candidate| candidate.is_file()).unwrap_or_else(
        || {
            panic!(
                "{program} is missing: install it (apt-get install {package}), or run with SKIP_MISSING_TOOLS=1 \
             to skip the tests that need it (they then show as ignored)"
            )
        },
    )
}

/// A real `redis-server` (Debian's package) on a free loopback port, with
/// no persistence, killed on drop.
pub struct Redis {
    child: Child,
    pub port: u16,
}

impl Redis {
    /// Starts one; a missing `redis-server` fails the test, naming the
    /// package.
    pub fn start() -> Redis {
        // Another process may take the free port between our look and
        // Redis' bind: then try another.
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            if let Some(redis) = Self::try_start_on(port) {
                return redis;
            }
        }
        panic!("redis-server did not start");
    }

    /// Starts one on `port` (a Redis that comes back after it was killed,
    /// empty).
    pub fn start_on(port: u16) -> Redis {
        Self::try_start_on(port).unwrap_or_else(|| panic!("redis-server did not start on port {port}"))
    }

    fn try_start_on(port: u16) -> Option<Redis> {
        let program = tool("redis-server", "redis-server");
        let mut child = Command::new(&program)
            .args(Redis::args(port))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        if Redis::ready(&mut child) {
            return Some(Redis { child, port });
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// A test's Redis: loopback, `port`, no persistence.
    fn args(port: u16) -> Vec<String> {
        ["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            .map(String::from)
            .to_vec()
    }

    /// Whether the Redis `child` (its stdout piped) says it takes
    /// connections in time; its stdout is read to the end meanwhile.
    fn ready(child: &mut Child) -> bool {
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("Ready to accept connections") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(DEADLINE).is_ok()
    }

    /// A `roomcast serve` node of a cluster on this Redis (node_timeout 1s
    /// unless `env` says otherwise), once it has its node number: before
    /// that it refuses connections.
    pub fn node(&self, env: &[(&str, &str)]) -> Server {
        let url = self.url();
        let mut all = vec![("ROOMCAST_CLUSTER__REDIS", url.as_str()), ("ROOMCAST_CLUSTER__NODE_TIMEOUT", "1s")];
        all.extend_from_slice(env);
        let server = Server::start(&all);
        server.wait_for_log("cluster: node ");
        server
    }

    /// Kills it at once (SIGKILL): its data is gone.
    pub fn kill(mut self) -> u16 {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).expect("a Redis URL")
    }

    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        self.client().get_multiplexed_async_connection().await.expect("connect to Redis")
    }

    /// A pub/sub connection subscribed (confirmed) to `channels`.
    pub async fn subscribed(&self, channels: &[&str]) -> redis::aio::PubSub {
        let mut pubsub = self.client().get_async_pubsub().await.expect("a pub/sub connection");
        for channel in channels {
            pubsub.subscribe(*channel).await.expect("subscribe");
        }
        pubsub
    }
}

/// The next payload on a pub/sub stream.
pub async fn next_payload(stream: &mut (impl futures_util::Stream<Item = redis::Msg> + Unpin)) -> String {
    let message = tokio::time::timeout(DEADLINE, stream.next()).await.expect("a message in time").expect("a message");
    message.get_payload().expect("a text payload")
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where a room rule is tried: one process, or two nodes of a cluster on a
/// real Redis. A rule holds in both, so its test runs against both
/// (`Deployment::start(cluster, ...)` in a test per mode).
pub enum Deployment {
    One(Server),
    Cluster { nodes: Vec<Server>, redis: Redis },
}

impl Deployment {
    /// One process, or (`cluster`) two nodes on a fresh Redis, each with `env`.
    pub fn start(cluster: bool, env: &[(&str, &str)]) -> Deployment {
        if !cluster {
            return Deployment::One(Server::start(env));
        }
        let redis = Redis::start();
        let mut all = vec![("ROOMCAST_CLUSTER__PREFIX", "test")];
        all.extend_from_slice(env);
        let nodes = (0..2).map(|_| redis.node(&all)).collect();
        Deployment::Cluster { nodes, redis }
    }

    /// The server the `i`-th client uses: on a cluster the nodes take turns,
    /// so that clients `0` and `1` are on different nodes.
    pub fn at(&self, i: usize) -> &Server {
        match self {
            Deployment::One(server) => server,
            Deployment::Cluster { nodes, .. } => &nodes[i % nodes.len()],
        }
    }

    pub fn redis(&self) -> Option<&Redis> {
        match self {
            Deployment::One(_) => None,
            Deployment::Cluster { redis, .. } => Some(redis),
        }
    }
}
