//! `heartbeat`: live clients and dead ones in the same rooms, optionally
//! with traffic. The dead ones join, then never read again and so never
//! answer a ping; the report gives how long the server took to drop each
//! (seen from the client: the TCP connection ends) and how many live
//! clients it dropped wrongly.

use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::Args;

use super::fanout::parse_rate;
use super::gate::Phase;
use super::members::{Members, PublishPlan, Role, report_drops, spawn_members, wait_for_drops};
use super::monitor::{CpuWatch, Progress};
use super::report::{Report, Unit};
use super::{Common, run_tag};

#[derive(Args, Debug)]
pub struct HeartbeatArgs {
    #[command(flatten)]
    pub common: Common,
    /// Live clients (they read and answer pings).
    #[arg(long, default_value_t = 200)]
    pub live: usize,
    /// Dead clients.
    #[arg(long, default_value_t = 50)]
    pub dead: usize,
    /// Rooms the clients are spread over.
    #[arg(long, default_value_t = 10)]
    pub rooms: usize,
    /// Traffic while waiting: messages a second per publisher ("0": none).
    #[arg(long, default_value = "0")]
    pub rate: String,
    /// Publishers among the live clients, when --rate is set (default: one per room).
    #[arg(long)]
    pub publishers: Option<usize>,
    /// Body size in bytes.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// End as soon as every dead client was dropped, even with traffic
    /// (without traffic it always does); --duration is the longest wait.
    #[arg(long)]
    pub until_dropped: bool,
}

pub async fn run(args: HeartbeatArgs) -> Result<Report, String> {
    let rate =
        if args.rate == "0" { None } else { Some(parse_rate(&args.rate)?.ok_or("--rate max is not for heartbeat")?) };
    let publishers = if rate.is_some() { args.publishers.unwrap_or(args.rooms).min(args.live) } else { 0 };
    let rooms = args.rooms.max(1);
    let dialer = args.common.dialer("/ws").await?;
    let tag = run_tag();
    let members =
        Members::new((0..rooms).map(|r| format!("{tag}-{r}")).collect(), dialer, args.common.connect_concurrency);
    let mut report = Report::new("heartbeat");
    report.param("url", members.dialer.urls());
    report.param("live", args.live);
    report.param("dead", args.dead);
    report.param("rooms", rooms);
    report.param("rate_per_publisher", rate.unwrap_or(0.0));
    report.param("publishers", publishers);
    report.param("duration_s", args.common.duration.as_secs_f64());

    let specs = (0..args.live + args.dead)
        .map(|i| {
            let role = if i >= args.live {
                Role::Silent { small_buffer: false }
            } else if i < publishers {
                Role::Publisher(PublishPlan { rate, window: 1, size: args.size, publisher: i })
            } else {
                Role::Reader
            };
            (i % rooms, role)
        })
        .collect();
    let tasks = spawn_members(&members, specs).await;
    report.connect_errors(members.connect_errors(), &members.dialer);

    let shown = members.clone();
    let progress = Progress::start(!args.common.quiet, move |_| {
        format!(
            "heartbeat  dead dropped {}/{}  live dropped {}",
            shown.drop_times.lock().map(|t| t.len()).unwrap_or(0),
            shown.silent.load(Ordering::Relaxed),
            shown.dropped_live.load(Ordering::Relaxed)
        )
    });
    let cpu = CpuWatch::start(args.common.server_pid);
    members.gate.set_phase(Phase::Go);
    let until_dropped = args.until_dropped || rate.is_none();
    wait_for_drops(&members, args.dead, args.common.duration, until_dropped, || {}).await;
    members.gate.set_phase(Phase::Drain);
    members.drain(Duration::from_secs(5)).await;
    progress.finish();

    report_drops(&members, &mut report, "dead", "dead clients");
    let heartbeat = *members.server_heartbeat.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((interval_ms, timeout_ms)) = heartbeat {
        report.add("server_heartbeat_interval_s", "server heartbeat interval", interval_ms as f64 / 1e3, Unit::Seconds);
        report.add("server_heartbeat_timeout_s", "server heartbeat timeout", timeout_ms as f64 / 1e3, Unit::Seconds);
    }
    let live_dropped = members.dropped_live.load(Ordering::Acquire);
    report.count("live_dropped", "live clients dropped", live_dropped);
    if publishers > 0 {
        let received = members.received.load(Ordering::Acquire);
        report.count("deliveries", "deliveries to live clients", received);
        report.count("lost", "lost", members.expected().saturating_sub(received));
        report.count("gaps", "seq gaps", members.gaps.load(Ordering::Acquire));
        members.latency.report(&mut report, "latency", "latency");
    }
    let errors = members.connect_errors() + members.error_frames.load(Ordering::Acquire) + live_dropped;
    report.count("errors", "errors", errors);
    cpu.finish(
        &mut report,
        members.received.load(Ordering::Acquire),
        "deliveries_per_server_cpu_s",
        "deliveries per server CPU-s",
    );
    members.gate.set_phase(Phase::Done);
    super::gate::finish(tasks, Duration::from_secs(2)).await;
    Ok(report)
}
