//! `churn`: sessions that come and go at a rate: connect, join a room,
//! publish (waiting for the `ok`), leave, disconnect. Reports cycles and
//! handshakes a second, how long a cycle takes, and errors by step.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

use super::members::{body, scan_type};
use super::monitor::{CpuWatch, Progress, Rate, short};
use super::report::{Report, Unit};
use super::stats::Latency;
use super::{Common, run_tag};
use crate::dial::{Dialer, Ws};
use crate::protocol::request::build;

#[derive(Args, Debug)]
pub struct ChurnArgs {
    #[command(flatten)]
    pub common: Common,
    /// Cycles started a second.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Cycles in progress at most; a start that would pass it is skipped and counted.
    #[arg(long, default_value_t = 1000)]
    pub max_in_progress: usize,
    /// Rooms the cycles use, in turn.
    #[arg(long, default_value_t = 10)]
    pub rooms: usize,
}

#[derive(Default)]
struct Churn {
    started: AtomicU64,
    completed: AtomicU64,
    skipped: AtomicU64,
    connected: AtomicU64,
    join_errors: AtomicU64,
    publish_errors: AtomicU64,
    leave_errors: AtomicU64,
}

/// The next reply of `kind` (skipping others), within a few seconds.
async fn reply(ws: &mut Ws, kind: &str) -> bool {
    let wait = async {
        while let Some(Ok(frame)) = ws.next().await {
            if let Message::Text(text) = frame {
                match scan_type(&text) {
                    Some(found) if found == kind => return true,
                    Some("error") => return false,
                    _ => {}
                }
            }
        }
        false
    };
    tokio::time::timeout(Duration::from_secs(5), wait).await.unwrap_or(false)
}

async fn cycle(churn: Arc<Churn>, dialer: Arc<Dialer>, room: String, latency: Arc<Latency>) {
    let started = Instant::now();
    let mut ws = match dialer.connect().await {
        Ok(ws) => ws,
        Err(_) => return, // counted by the dialer
    };
    churn.connected.fetch_add(1, Ordering::Relaxed);
    let steps: [(String, &str, &AtomicU64); 3] = [
        (build::join(&room, None, None, Some(1)), "joined", &churn.join_errors),
        (build::publish(&room, &body(64, 0), Some(2)), "ok", &churn.publish_errors),
        (build::leave(&room, Some(3)), "left", &churn.leave_errors),
    ];
    for (request, answer, errors) in steps {
        if ws.send(Message::text(request)).await.is_err() || !reply(&mut ws, answer).await {
            errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
    }
    let _ = ws.close(None).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), async { while let Some(Ok(_)) = ws.next().await {} }).await;
    latency.recorder().record_micros(started.elapsed().as_micros() as u64);
    churn.completed.fetch_add(1, Ordering::Relaxed);
}

pub async fn run(args: ChurnArgs) -> Result<Report, String> {
    if !(args.rate > 0.0 && args.rate.is_finite()) {
        return Err("--rate must be a positive number of cycles a second".into());
    }
    let dialer = Arc::new(args.common.dialer("/ws").await?);
    let churn = Arc::new(Churn::default());
    let latency = Latency::new();
    let tag = run_tag();
    let mut report = Report::new("churn");
    report.param("url", dialer.urls());
    report.param("rate", args.rate);
    report.param("duration_s", args.common.duration.as_secs_f64());

    let shown = churn.clone();
    let mut rate = Rate::default();
    let progress = Progress::start(!args.common.quiet, move |elapsed| {
        format!(
            "churn  {}/s cycles completed",
            short(rate.per_second(shown.completed.load(Ordering::Relaxed), elapsed))
        )
    });
    let cpu = CpuWatch::start(args.common.server_pid);
    let in_progress = Arc::new(Semaphore::new(args.max_in_progress.max(1)));
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut tasks = Vec::new();
    let mut n = 0usize;
    while started.elapsed() < args.common.duration {
        ticker.tick().await;
        let Ok(permit) = in_progress.clone().try_acquire_owned() else {
            churn.skipped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        churn.started.fetch_add(1, Ordering::Relaxed);
        let room = format!("{tag}-{}", n % args.rooms.max(1));
        n += 1;
        let (churn, dialer, latency) = (churn.clone(), dialer.clone(), latency.clone());
        tasks.push(tokio::spawn(async move {
            cycle(churn, dialer, room, latency).await;
            drop(permit);
        }));
    }
    let elapsed = started.elapsed().as_secs_f64();
    super::gate::finish(tasks, Duration::from_secs(10)).await;
    progress.finish();
    let get = |counter: &AtomicU64| counter.load(Ordering::Acquire);
    report.count("cycles_started", "cycles started", get(&churn.started));
    report.count("cycles_completed", "cycles completed", get(&churn.completed));
    report.count("cycles_skipped", "starts skipped (too many in progress)", get(&churn.skipped));
    report.add("cycles_per_s", "cycles", get(&churn.completed) as f64 / elapsed, Unit::PerSecond);
    report.add("handshakes_per_s", "handshakes", get(&churn.connected) as f64 / elapsed, Unit::PerSecond);
    report.connect_errors(dialer.failures(), &dialer);
    report.count("join_errors", "join errors", get(&churn.join_errors));
    report.count("publish_errors", "publish errors", get(&churn.publish_errors));
    report.count("leave_errors", "leave errors", get(&churn.leave_errors));
    let errors = dialer.failures() + get(&churn.join_errors) + get(&churn.publish_errors) + get(&churn.leave_errors);
    report.count("errors", "errors", errors);
    latency.report(&mut report, "cycle", "cycle time");
    cpu.finish(&mut report, get(&churn.completed), "cycles_per_server_cpu_s", "cycles per server CPU-s");
    Ok(report)
}
