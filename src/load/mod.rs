//! `roomcast load`: the load tester.
//!
//! Each scenario opens real WebSocket connections to a server that speaks
//! protocol v1 (roomcast, or another server with the same messages), runs
//! for a bounded time with a bounded number of connections, and returns a
//! [`Report`]. This module parses the command line, runs the scenario on a
//! multi-threaded runtime, prints the table, writes `--json`, and exits 1
//! when an objective (`--max-p99` and the like) was missed.

pub mod churn;
pub mod echo;
pub mod fanout;
pub mod gate;
pub mod heartbeat;
pub mod idle;
pub mod members;
pub mod monitor;
pub mod report;
pub mod slow;
pub mod stats;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::auth::mint::Claims;
use crate::dial::{Credentials, Dialer, endpoint};
use report::{Report, Slo};

#[derive(Args, Debug)]
pub struct LoadArgs {
    #[command(subcommand)]
    pub scenario: Scenario,
}

#[derive(Subcommand, Debug)]
pub enum Scenario {
    /// Rooms x members with publishers: throughput, latency, loss, order.
    Fanout(fanout::FanoutArgs),
    /// Connections echoing messages on /echo: round trips and latency.
    Echo(echo::EchoArgs),
    /// Many idle connections that answer pings: handshakes/s, held, memory.
    Idle(idle::IdleArgs),
    /// Live clients and dead ones (never read, never pong): time to drop the dead.
    Heartbeat(heartbeat::HeartbeatArgs),
    /// Members that stop reading in busy rooms: time to close them, memory, the others' delivery.
    Slow(slow::SlowArgs),
    /// Connect, join, publish, leave, disconnect, at a rate: handshakes/s and errors.
    Churn(churn::ChurnArgs),
}

/// Options every scenario takes.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Server URL, e.g. ws://127.0.0.1:8080 (the scenario adds /ws or /echo
    /// when the URL has no path). Several (repeated, or comma-separated:
    /// the nodes of a cluster) spread the connections over them in turn.
    #[arg(long, required = true, value_delimiter = ',')]
    pub url: Vec<String>,
    /// How long the measured part runs.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Also write every figure as one JSON document to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// The server's process id: report its CPU time and memory too.
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// Spread connections over this many loopback source addresses
    /// (127.0.0.1..N) so many connections do not run out of ports.
    #[arg(long, default_value_t = 16)]
    pub sources: usize,
    /// Handshakes in progress at once while connecting.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// For wss:// URLs: also trust the certificates in this PEM file (a
    /// self-signed server certificate or a private CA).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// A connection token for every connection (servers with `[auth]` on).
    #[arg(long, conflicts_with = "hmac_secret")]
    pub token: Option<String>,
    /// Sign a token of its own for every connection (users load-1,
    /// load-2, ..., granted every room) with the server's auth.hmac_secret.
    #[arg(long, value_name = "SECRET")]
    pub hmac_secret: Option<String>,
    /// With --hmac-secret: the tokens' `aud` (the server's auth.audience).
    #[arg(long, requires = "hmac_secret")]
    pub audience: Option<String>,
    /// With --hmac-secret: the tokens' `iss` (the server's auth.issuer).
    #[arg(long, requires = "hmac_secret")]
    pub issuer: Option<String>,
    /// No progress line.
    #[arg(long, short)]
    pub quiet: bool,
    /// Worker threads for the load tester (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub slo: Slo,
}

impl Common {
    pub async fn dialer(&self, default_path: &str) -> Result<Dialer, String> {
        let urls = self.url.iter().map(|url| endpoint(url, default_path)).collect::<Result<Vec<_>, _>>()?;
        let dialer = Dialer::to_each(urls, self.sources, self.ca.as_deref())
            .await
            .map_err(|e| format!("{}: {e}", self.url.join(",")))?;
        Ok(dialer.with_credentials(self.credentials()?))
    }

    fn credentials(&self) -> Result<Credentials, String> {
        if let Some(token) = &self.token {
            return Ok(Credentials::Token(token.clone()));
        }
        let Some(secret) = &self.hmac_secret else {
            return Ok(Credentials::None);
        };
        let claims = Claims {
            rooms: vec!["*".into()],
            // Longer than any run, so that no session expires under load.
            ttl: self.duration.saturating_mul(2) + Duration::from_secs(3600),
            audience: self.audience.clone(),
            issuer: self.issuer.clone(),
            ..Claims::default()
        };
        let secret = secret.as_bytes().to_vec();
        crate::auth::mint::with_secret(&secret, &claims)?;
        Ok(Credentials::Mint { secret, claims, next: Default::default() })
    }
}

/// Runs `roomcast load`; returns the process exit code.
pub fn run(args: LoadArgs) -> ExitCode {
    let common = match &args.scenario {
        Scenario::Fanout(a) => &a.common,
        Scenario::Echo(a) => &a.common,
        Scenario::Idle(a) => &a.common,
        Scenario::Heartbeat(a) => &a.common,
        Scenario::Slow(a) => &a.common,
        Scenario::Churn(a) => &a.common,
    }
    .clone();
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = common.threads {
        runtime.worker_threads(threads.max(1));
    }
    let runtime = match runtime.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("roomcast load: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let outcome = runtime.block_on(async {
        match args.scenario {
            Scenario::Fanout(a) => fanout::run(a).await.map(|r| (r, "deliveries_per_s")),
            Scenario::Echo(a) => echo::run(a).await.map(|r| (r, "round_trips_per_s")),
            Scenario::Idle(a) => idle::run(a).await.map(|r| (r, "handshakes_per_s")),
            Scenario::Heartbeat(a) => heartbeat::run(a).await.map(|r| (r, "dead_dropped")),
            Scenario::Slow(a) => slow::run(a).await.map(|r| (r, "deliveries_per_s")),
            Scenario::Churn(a) => churn::run(a).await.map(|r| (r, "cycles_per_s")),
        }
    });
    // Connections still open close with the runtime, without waiting.
    runtime.shutdown_timeout(Duration::from_millis(100));
    let (report, rate_key) = match outcome {
        Ok(done) => done,
        Err(problem) => {
            eprintln!("roomcast load: {problem}");
            return ExitCode::from(2);
        }
    };
    finish(&report, &common, rate_key)
}

fn finish(report: &Report, common: &Common, rate_key: &str) -> ExitCode {
    let slo = common.slo.check(report, rate_key);
    print!("{}", report.table());
    for line in report::describe(&slo) {
        println!("  slo: {line}");
    }
    if let Some(path) = &common.json {
        let text = serde_json::to_string_pretty(&report.to_json(&slo)).unwrap_or_default();
        if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("roomcast load: cannot write {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    if slo.iter().all(|r| r.ok) { ExitCode::SUCCESS } else { ExitCode::from(1) }
}

/// A name unique to this run, so repeated runs against one server do not
/// meet each other's rooms (whose `seq` would not start at 1).
pub fn run_tag() -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("lt{}-{:x}", std::process::id(), nanos)
}
