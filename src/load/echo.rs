//! `echo`: N connections to an echo endpoint, each keeping K messages in
//! flight: round trips a second and latency. Works against any server that
//! echoes (roomcast's `/echo`, the peers', Autobahn's).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use super::Common;
use super::gate::{Gate, Phase, read_until};
use super::monitor::{CpuWatch, Progress, Rate, short};
use super::report::{Report, Unit};
use super::stats::{Latency, now_ns};
use crate::dial::Dialer;

#[derive(Args, Debug)]
pub struct EchoArgs {
    #[command(flatten)]
    pub common: Common,
    /// Connections.
    #[arg(long, default_value_t = 100)]
    pub connections: usize,
    /// Messages in flight per connection.
    #[arg(long, default_value_t = 1)]
    pub in_flight: usize,
    /// Message size in bytes (at least 20 for text, 8 for binary).
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Send binary messages instead of text.
    #[arg(long)]
    pub binary: bool,
    /// After sending stops, how long to wait for the last echoes.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub drain: Duration,
}

struct Echoes {
    gate: Gate,
    dialer: Dialer,
    latency: Arc<Latency>,
    size: usize,
    binary: bool,
    connected: AtomicU64,
    /// Connections done sending: in the drain with nothing in flight, or
    /// closed.
    finished: AtomicU64,
    sent: AtomicU64,
    received: AtomicU64,
    mismatched: AtomicU64,
    dropped: AtomicU64,
}

impl Echoes {
    /// A message carrying its send time in its first bytes.
    fn message(&self) -> Message {
        let now = now_ns();
        if self.binary {
            let mut data = vec![0u8; self.size.max(8)];
            data[..8].copy_from_slice(&now.to_be_bytes());
            Message::Binary(Bytes::from(data))
        } else {
            let mut text = format!("{now:020}");
            text.extend(std::iter::repeat_n('x', self.size.saturating_sub(20)));
            Message::text(text)
        }
    }

    /// The send time of an echo, if it is one of ours, whole.
    fn sent_at(&self, message: &Message) -> Option<u64> {
        match message {
            Message::Binary(data) if !self.binary || data.len() != self.size.max(8) => None,
            Message::Binary(data) => Some(u64::from_be_bytes(data[..8].try_into().ok()?)),
            Message::Text(text) if self.binary || text.len() != self.size.max(20) => None,
            Message::Text(text) => text.get(..20)?.parse().ok(),
            _ => None,
        }
    }
}

async fn connection(echoes: Arc<Echoes>, in_flight: usize) {
    let connected = {
        let _permit = echoes.gate.handshake_permit().await;
        echoes.dialer.connect().await
    };
    // Counted before the gate hears of it: the run reads the count as
    // soon as every connection has settled.
    if connected.is_ok() {
        echoes.connected.fetch_add(1, Ordering::Relaxed);
    }
    echoes.gate.settle();
    let mut ws = match connected {
        Ok(ws) => ws,
        Err(_) => return, // counted by the dialer
    };
    exchange(&echoes, &mut ws, in_flight).await;
    // The drain waits for this rather than for `received` to catch up
    // with `sent`, which a connection may move on after the drain began.
    echoes.finished.fetch_add(1, Ordering::AcqRel);
    let _ = ws.close(None).await;
}

/// Sends and takes echoes until the drain finds nothing in flight.
async fn exchange(echoes: &Echoes, ws: &mut crate::dial::Ws, in_flight: usize) {
    let mut phase = echoes.gate.phase();
    if !read_until(ws, &mut phase, Phase::Go).await {
        echoes.dropped.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let mut recorder = echoes.latency.recorder();
    let mut waiting = 0usize;
    for _ in 0..in_flight {
        if ws.feed(echoes.message()).await.is_err() {
            break;
        }
        waiting += 1;
    }
    let _ = ws.flush().await;
    echoes.sent.fetch_add(waiting as u64, Ordering::Relaxed);
    loop {
        let current = *phase.borrow();
        if current == Phase::Done || (current == Phase::Drain && waiting == 0) {
            break;
        }
        tokio::select! {
            frame = ws.next() => match frame {
                Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => {
                    waiting = waiting.saturating_sub(1);
                    match echoes.sent_at(&message) {
                        Some(sent) => {
                            recorder.record_since(sent);
                            echoes.received.fetch_add(1, Ordering::Relaxed);
                        }
                        None => {
                            echoes.mismatched.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    if *phase.borrow() == Phase::Go {
                        if ws.send(echoes.message()).await.is_err() {
                            break;
                        }
                        waiting += 1;
                        echoes.sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    if *phase.borrow() != Phase::Done {
                        echoes.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    return;
                }
                Some(Ok(_)) => {}
            },
            _ = phase.changed() => {}
        }
    }
}

pub async fn run(args: EchoArgs) -> Result<Report, String> {
    let dialer = args.common.dialer("/echo").await?;
    let echoes = Arc::new(Echoes {
        gate: Gate::new(args.common.connect_concurrency),
        dialer,
        latency: Latency::new(),
        size: args.size,
        binary: args.binary,
        connected: AtomicU64::new(0),
        finished: AtomicU64::new(0),
        sent: AtomicU64::new(0),
        received: AtomicU64::new(0),
        mismatched: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
    });
    let mut report = Report::new("echo");
    report.param("url", echoes.dialer.urls());
    report.param("connections", args.connections);
    report.param("in_flight", args.in_flight);
    report.param("size", args.size);
    report.param("binary", args.binary);
    report.param("duration_s", args.common.duration.as_secs_f64());

    let tasks: Vec<_> =
        (0..args.connections).map(|_| tokio::spawn(connection(echoes.clone(), args.in_flight.max(1)))).collect();
    echoes.gate.settled(args.connections).await;
    let connected = echoes.connected.load(Ordering::Acquire);
    report.count("connected", "connected", connected);
    report.connect_errors(echoes.dialer.failures(), &echoes.dialer);
    if connected == 0 {
        return Err(echoes.dialer.none_connected("connection"));
    }
    let shown = echoes.clone();
    let mut rate = Rate::default();
    let progress = Progress::start(!args.common.quiet, move |elapsed| {
        format!("echo  {}/s round trips", short(rate.per_second(shown.received.load(Ordering::Relaxed), elapsed)))
    });
    let cpu = CpuWatch::start(args.common.server_pid);
    echoes.gate.set_phase(Phase::Go);
    tokio::time::sleep(args.common.duration).await;
    echoes.gate.set_phase(Phase::Drain);
    let deadline = tokio::time::Instant::now() + args.drain;
    while echoes.finished.load(Ordering::Acquire) < connected && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    progress.finish();
    let received = echoes.received.load(Ordering::Acquire);
    let sent = echoes.sent.load(Ordering::Acquire);
    let mismatched = echoes.mismatched.load(Ordering::Acquire);
    report.count("round_trips", "round trips", received);
    report.add(
        "round_trips_per_s",
        "round trips",
        received as f64 / args.common.duration.as_secs_f64(),
        Unit::PerSecond,
    );
    report.count("lost", "lost", sent.saturating_sub(received + mismatched));
    report.count("mismatched", "echoes not matching", mismatched);
    let dropped = echoes.dropped.load(Ordering::Acquire);
    report.count("dropped", "dropped by the server", dropped);
    report.count("errors", "errors", echoes.dialer.failures() + mismatched + dropped);
    echoes.latency.report(&mut report, "latency", "round trip");
    cpu.finish(&mut report, received, "round_trips_per_server_cpu_s", "round trips per server CPU-s");
    echoes.gate.set_phase(Phase::Done);
    super::gate::finish(tasks, Duration::from_secs(2)).await;
    Ok(report)
}
