//! `fanout`: R rooms of M members; P of the members also publish, at a fixed
//! rate or as fast as the server acknowledges (a bounded window of
//! publishes waiting for their `ok`). Reports publishes and deliveries a
//! second, latency from send to receipt at every member, messages lost after
//! a drain, and gaps or reordering in `seq`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::Args;

use super::gate::Phase;
use super::members::{Members, PublishPlan, Role, spawn_members};
use super::monitor::{CpuWatch, Progress, Rate, short};
use super::report::{Report, Unit};
use super::{Common, run_tag};

#[derive(Args, Debug)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub common: Common,
    /// Rooms.
    #[arg(long, default_value_t = 10)]
    pub rooms: usize,
    /// Members per room (publishers included).
    #[arg(long, default_value_t = 100)]
    pub members: usize,
    /// Publishers, spread over the rooms (default: one per room).
    #[arg(long)]
    pub publishers: Option<usize>,
    /// Messages a second per publisher, or "max": as fast as the server
    /// acknowledges, with --window publishes in flight.
    #[arg(long, default_value = "100")]
    pub rate: String,
    /// Publishes waiting for their ok, per publisher, at --rate max.
    #[arg(long, default_value_t = 16)]
    pub window: usize,
    /// Body size in bytes.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// After publishing stops, how long to wait for the last deliveries.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub drain: Duration,
    /// With several --url: publishers on the first node, every other member
    /// on the others, so that every delivery crosses nodes.
    #[arg(long)]
    pub split_publishers: bool,
}

/// `--rate`: a positive number, or `max`.
pub fn parse_rate(text: &str) -> Result<Option<f64>, String> {
    if text == "max" {
        return Ok(None);
    }
    match text.parse::<f64>() {
        Ok(rate) if rate > 0.0 && rate.is_finite() => Ok(Some(rate)),
        _ => Err(format!("--rate {text}: expected a positive number of messages a second, or max")),
    }
}

/// Which member plays what: member `index` of each room, rooms in turn;
/// the first `publishers` of that order publish.
pub fn roles(
    rooms: usize,
    per_room: usize,
    publishers: usize,
    plan: impl Fn(usize) -> PublishPlan,
) -> Vec<(usize, Role)> {
    let mut specs = Vec::with_capacity(rooms * per_room);
    for index in 0..per_room {
        for room in 0..rooms {
            let publisher = index * rooms + room;
            let role = if publisher < publishers { Role::Publisher(plan(publisher)) } else { Role::Reader };
            specs.push((room, role));
        }
    }
    specs
}

pub async fn run(args: FanoutArgs) -> Result<Report, String> {
    let rate = parse_rate(&args.rate)?;
    let publishers = args.publishers.unwrap_or(args.rooms);
    if args.rooms == 0 || args.members == 0 {
        return Err("--rooms and --members must be at least 1".into());
    }
    if publishers > args.rooms * args.members {
        return Err(format!("--publishers {publishers} is more than the {} members", args.rooms * args.members));
    }
    let dialer = args.common.dialer("/ws").await?.split_publishers(args.split_publishers);
    let tag = run_tag();
    let names = (0..args.rooms).map(|r| format!("{tag}-{r}")).collect();
    let members = Members::new(names, dialer, args.common.connect_concurrency);

    let mut report = Report::new("fanout");
    report.param("url", members.dialer.urls());
    report.param("rooms", args.rooms);
    report.param("split_publishers", args.split_publishers);
    report.param("members_per_room", args.members);
    report.param("publishers", publishers);
    report.param("rate_per_publisher", rate.map_or("max".to_string(), |r| r.to_string()));
    report.param("window", args.window);
    report.param("body_bytes", args.size);
    report.param("duration_s", args.common.duration.as_secs_f64());

    let plan = |publisher| PublishPlan { rate, window: args.window.max(1), size: args.size, publisher };
    let tasks = spawn_members(&members, roles(args.rooms, args.members, publishers, plan)).await;
    let connected: u64 = members.rooms.iter().map(|r| r.joined.load(Ordering::Acquire)).sum();
    report.count("connected", "members connected", connected);
    report.connect_errors(members.connect_errors(), &members.dialer);
    if connected == 0 {
        return Err(members.dialer.none_connected("member"));
    }

    let progress_members = members.clone();
    let (mut published, mut delivered) = (Rate::default(), Rate::default());
    let progress = Progress::start(!args.common.quiet, move |elapsed| {
        let m = &progress_members;
        format!(
            "fanout  publish {}/s  deliver {}/s  refused {}  errors {}",
            short(published.per_second(m.sent(), elapsed)),
            short(delivered.per_second(m.received.load(Ordering::Relaxed), elapsed)),
            m.refused(),
            m.error_frames.load(Ordering::Relaxed) + m.dropped_live.load(Ordering::Relaxed),
        )
    });
    let cpu = CpuWatch::start(args.common.server_pid);
    members.gate.set_phase(Phase::Go);
    tokio::time::sleep(args.common.duration).await;
    members.gate.set_phase(Phase::Drain);
    let publishing_time = args.common.duration.as_secs_f64();
    members.drain(args.drain).await;
    let received = members.received.load(Ordering::Acquire);
    progress.finish();

    let sent = members.sent();
    report.count("published", "published", sent);
    members.report_refused(&mut report);
    report.count("unacknowledged", "never acknowledged", members.unresolved());
    report.add("publishes_per_s", "publishes", sent as f64 / publishing_time, Unit::PerSecond);
    let expected = members.expected();
    report.count("deliveries", "deliveries", received);
    report.count("expected", "deliveries expected", expected);
    report.count("lost", "lost", expected.saturating_sub(received));
    report.add("deliveries_per_s", "deliveries", received as f64 / publishing_time, Unit::PerSecond);
    report.count("gaps", "seq gaps", members.gaps.load(Ordering::Acquire));
    report.count("out_of_order", "seq out of order", members.reorders.load(Ordering::Acquire));
    members.report_restarts(&mut report);
    let errors = members.connect_errors()
        + members.error_frames.load(Ordering::Acquire)
        + members.dropped_live.load(Ordering::Acquire);
    report.count("errors", "errors", errors);
    members.latency.report(&mut report, "latency", "latency");
    cpu.finish(&mut report, received, "deliveries_per_server_cpu_s", "deliveries per server CPU-s");

    members.gate.set_phase(Phase::Done);
    super::gate::finish(tasks, Duration::from_secs(2)).await;
    Ok(report)
}
