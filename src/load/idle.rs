//! `idle`: hold N connections that do nothing but answer pings. Reports
//! handshakes a second while connecting, how many were held to the end, how
//! many the server dropped, and (with --server-pid) the server's resident
//! memory per connection. Connections are spread over loopback source
//! addresses (--sources) so 100k of them do not run out of ports.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use tokio_tungstenite::tungstenite::Message;

use super::Common;
use super::gate::{Gate, Phase, read_until};
use super::monitor::{CpuWatch, Progress, rss_bytes, short};
use super::report::{Report, Unit};
use crate::dial::Dialer;

#[derive(Args, Debug)]
pub struct IdleArgs {
    #[command(flatten)]
    pub common: Common,
    /// Connections to open and hold.
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
}

struct Idle {
    gate: Gate,
    dialer: Dialer,
    connected: AtomicU64,
    dropped: AtomicU64,
}

async fn connection(idle: Arc<Idle>) {
    let connected = {
        let _permit = idle.gate.handshake_permit().await;
        idle.dialer.connect().await
    };
    let mut ws = match connected {
        Ok(ws) => ws,
        Err(_) => {
            // Counted by the dialer.
            idle.gate.settle();
            return;
        }
    };
    idle.connected.fetch_add(1, Ordering::Relaxed);
    idle.gate.settle();
    let mut phase = idle.gate.phase();
    if read_until(&mut ws, &mut phase, Phase::Done).await {
        let _ = futures_util::SinkExt::send(&mut ws, Message::Close(None)).await;
    } else {
        idle.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

pub async fn run(args: IdleArgs) -> Result<Report, String> {
    let dialer = args.common.dialer("/ws").await?;
    let idle = Arc::new(Idle {
        gate: Gate::new(args.common.connect_concurrency),
        dialer,
        connected: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
    });
    let mut report = Report::new("idle");
    report.param("url", idle.dialer.urls());
    report.param("connections", args.connections);
    report.param("hold_s", args.common.duration.as_secs_f64());
    report.param("sources", args.common.sources);
    let rss_before = args.common.server_pid.and_then(rss_bytes);

    let shown = idle.clone();
    let progress = Progress::start(!args.common.quiet, move |_| {
        format!(
            "idle  connected {}  refused {}  dropped {}",
            short(shown.connected.load(Ordering::Relaxed) as f64),
            shown.dialer.failures(),
            shown.dropped.load(Ordering::Relaxed)
        )
    });
    let cpu = CpuWatch::start(args.common.server_pid);
    let started = Instant::now();
    let tasks: Vec<_> = (0..args.connections).map(|_| tokio::spawn(connection(idle.clone()))).collect();
    idle.gate.settled(args.connections).await;
    let connecting = started.elapsed().as_secs_f64();
    let connected = idle.connected.load(Ordering::Acquire);
    report.count("connected", "connected", connected);
    report.connect_errors(idle.dialer.failures(), &idle.dialer);
    report.add("connect_time_s", "time to connect all", connecting, Unit::Seconds);
    report.add("handshakes_per_s", "handshakes", connected as f64 / connecting.max(1e-9), Unit::PerSecond);
    let rss_connected = args.common.server_pid.and_then(rss_bytes);

    tokio::time::sleep(args.common.duration).await;
    let dropped = idle.dropped.load(Ordering::Acquire);
    let held = connected.saturating_sub(dropped);
    progress.finish();
    report.count("held", "held to the end", held);
    report.count("dropped", "dropped by the server", dropped);
    report.count("errors", "errors", idle.dialer.failures() + dropped);
    if let (Some(before), Some(after)) = (rss_before, args.common.server_pid.and_then(rss_bytes)) {
        report.add("server_rss_before_bytes", "server memory before", before as f64, Unit::Bytes);
        if let Some(connected_rss) = rss_connected {
            report.add("server_rss_connected_bytes", "server memory, all connected", connected_rss as f64, Unit::Bytes);
        }
        report.add("server_rss_after_bytes", "server memory at the end", after as f64, Unit::Bytes);
        if held > 0 {
            let per = after.saturating_sub(before) as f64 / held as f64;
            report.add("server_rss_per_conn_bytes", "server memory per connection", per, Unit::Bytes);
        }
    }
    if let Some(own) = rss_bytes(std::process::id()) {
        report.add("loadgen_rss_bytes", "load tester memory", own as f64, Unit::Bytes);
    }
    cpu.finish(&mut report, connected, "handshakes_per_server_cpu_s", "handshakes per server CPU-s");
    idle.gate.set_phase(Phase::Done);
    super::gate::finish(tasks, Duration::from_secs(5)).await;
    Ok(report)
}
