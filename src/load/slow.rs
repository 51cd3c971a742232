//! `slow`: busy rooms in which some members stop reading. Reports how long
//! the server took to close them (seen from the client: the TCP connection
//! ends), the server's memory over time (with --server-pid), and whether
//! the other members' delivery and latency suffered.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;

use super::fanout::{parse_rate, roles};
use super::gate::Phase;
use super::members::{Members, PublishPlan, Role, report_drops, spawn_members, wait_for_drops};
use super::monitor::{CpuWatch, Progress, Rate, rss_bytes, server_counters, short};
use super::report::{Report, Unit};
use super::{Common, run_tag};

#[derive(Args, Debug)]
pub struct SlowArgs {
    #[command(flatten)]
    pub common: Common,
    /// Rooms.
    #[arg(long, default_value_t = 10)]
    pub rooms: usize,
    /// Members per room that read (publishers included).
    #[arg(long, default_value_t = 100)]
    pub members: usize,
    /// Members that stop reading, spread over the rooms.
    #[arg(long, default_value_t = 1)]
    pub slow: usize,
    /// Publishers (default: one per room).
    #[arg(long)]
    pub publishers: Option<usize>,
    /// Messages a second per publisher, or "max".
    #[arg(long, default_value = "100")]
    pub rate: String,
    /// Publishes waiting for their ok, per publisher, at --rate max.
    #[arg(long, default_value_t = 16)]
    pub window: usize,
    /// Body size in bytes.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// After publishing stops, how long to wait for the last deliveries.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub drain: Duration,
    /// End as soon as every slow member was closed (--duration is then the longest wait).
    #[arg(long)]
    pub until_dropped: bool,
}

/// How many clients the server closed as slow and by the heartbeat during
/// the run, and a note when the heartbeat did the work the run was meant to
/// measure.
fn report_close_reasons(
    report: &mut Report,
    before: Option<std::collections::HashMap<String, u64>>,
    after: Option<std::collections::HashMap<String, u64>>,
) {
    let (Some(before), Some(after)) = (before, after) else {
        report.notes.push("the server has no roomcast /metrics: why it dropped the slow members is unknown".into());
        return;
    };
    let delta =
        |name: &str| after.get(name).copied().unwrap_or(0).saturating_sub(before.get(name).copied().unwrap_or(0));
    let slow = delta("roomcast_slow_consumer_closes_total");
    let heartbeat = delta("roomcast_heartbeat_timeouts_total");
    report.count("slow_consumer_closes", "closed as slow consumers (1013)", slow);
    report.count("heartbeat_closes", "closed by the heartbeat (1011)", heartbeat);
    if slow == 0 && heartbeat > 0 {
        report.notes.push(
            "the slow members were closed by the heartbeat, not as slow consumers: their queues did not fill \
             before its timeout; a higher --rate or --size measures the slow-consumer bound"
                .into(),
        );
    }
}

pub async fn run(args: SlowArgs) -> Result<Report, String> {
    let rate = parse_rate(&args.rate)?;
    let rooms = args.rooms.max(1);
    let publishers = args.publishers.unwrap_or(rooms);
    let dialer = args.common.dialer("/ws").await?;
    let tag = run_tag();
    let members =
        Members::new((0..rooms).map(|r| format!("{tag}-{r}")).collect(), dialer, args.common.connect_concurrency);
    let mut report = Report::new("slow");
    report.param("url", members.dialer.urls());
    report.param("rooms", rooms);
    report.param("members_per_room", args.members);
    report.param("slow", args.slow);
    report.param("publishers", publishers);
    report.param("rate_per_publisher", rate.map_or("max".to_string(), |r| r.to_string()));
    report.param("body_bytes", args.size);
    report.param("duration_s", args.common.duration.as_secs_f64());

    let plan = |publisher| PublishPlan { rate, window: args.window.max(1), size: args.size, publisher };
    let mut specs = roles(rooms, args.members, publishers, plan);
    specs.extend((0..args.slow).map(|i| (i % rooms, Role::Silent { small_buffer: true })));
    let tasks = spawn_members(&members, specs).await;
    report.connect_errors(members.connect_errors(), &members.dialer);

    let shown = members.clone();
    let mut delivered = Rate::default();
    let progress = Progress::start(!args.common.quiet, move |elapsed| {
        format!(
            "slow  deliver {}/s  slow closed {}/{}  live dropped {}",
            short(delivered.per_second(shown.received.load(Ordering::Relaxed), elapsed)),
            shown.drop_times.lock().map(|t| t.len()).unwrap_or(0),
            shown.silent.load(Ordering::Relaxed),
            shown.dropped_live.load(Ordering::Relaxed)
        )
    });
    // What closed the slow members, from a roomcast server's own counters:
    // the slow-consumer bound (1013), or the heartbeat (1011) when their
    // queues did not fill before its timeout.
    let counters_before = server_counters(members.dialer.url()).await;
    let cpu = CpuWatch::start(args.common.server_pid);
    let started = Instant::now();
    members.gate.set_phase(Phase::Go);
    // Sample the server's memory twice a second while publishing.
    let mut rss_series = Vec::new();
    wait_for_drops(&members, args.slow, args.common.duration, args.until_dropped, || {
        if let Some(rss) = args.common.server_pid.and_then(rss_bytes) {
            rss_series.push((started.elapsed().as_secs_f64(), rss));
        }
    })
    .await;
    let published_for = started.elapsed().as_secs_f64();
    members.gate.set_phase(Phase::Drain);
    members.drain(args.drain).await;
    progress.finish();

    report_drops(&members, &mut report, "slow", "slow members");
    let counters_after = server_counters(members.dialer.url()).await;
    report_close_reasons(&mut report, counters_before, counters_after);
    let received = members.received.load(Ordering::Acquire);
    report.count("deliveries", "deliveries to the others", received);
    report.count("lost", "lost by the others", members.expected().saturating_sub(received));
    report.count("gaps", "seq gaps", members.gaps.load(Ordering::Acquire));
    report.add("deliveries_per_s", "deliveries", received as f64 / published_for, Unit::PerSecond);
    let live_dropped = members.dropped_live.load(Ordering::Acquire);
    report.count("live_dropped", "reading members dropped", live_dropped);
    members.report_refused(&mut report);
    let errors = members.connect_errors() + members.error_frames.load(Ordering::Acquire) + live_dropped;
    report.count("errors", "errors", errors);
    members.latency.report(&mut report, "latency", "the others' latency");
    if let (Some(first), Some(max)) = (rss_series.first(), rss_series.iter().map(|(_, r)| *r).max()) {
        report.add("server_rss_start_bytes", "server memory at start", first.1 as f64, Unit::Bytes);
        report.add("server_rss_max_bytes", "server memory, max", max as f64, Unit::Bytes);
        if let Some(last) = rss_series.last() {
            report.add("server_rss_end_bytes", "server memory at the end", last.1 as f64, Unit::Bytes);
        }
        report.extra.insert("server_rss_series".into(), json!(rss_series));
    }
    cpu.finish(&mut report, received, "deliveries_per_server_cpu_s", "deliveries per server CPU-s");
    members.gate.set_phase(Phase::Done);
    super::gate::finish(tasks, Duration::from_secs(2)).await;
    Ok(report)
}
