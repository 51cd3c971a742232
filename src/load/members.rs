//! Room members, shared by the fanout, slow and heartbeat scenarios.
//!
//! Each member is one task and one connection: it connects, joins its room,
//! says it is ready, waits for the start, then plays its [`Role`] until the
//! run is done. Readers check that `seq` has no gap and measure latency from
//! the timestamp publishers put in each body; publishers also publish; silent
//! members stop reading (and so never answer a ping) and time how long the
//! server takes to drop them.
//!
//! `message` frames are not parsed as JSON: the reader finds `type`, `seq`
//! and the body's `rc_t` by scanning, which keeps the load tester from being
//! the bottleneck at a million deliveries a second.

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use super::gate::{Gate, Phase};
use super::monitor::{TCP_ESTABLISHED, tcp_state};
use super::stats::{Latency, now_ns};
use crate::dial::{Dialer, Ws};
use crate::protocol::request::build;

/// What a member does once the run starts.
#[derive(Debug, Clone)]
pub enum Role {
    Reader,
    Publisher(PublishPlan),
    /// Stops reading after joining; reports when the server drops it.
    /// With a small receive buffer the server's writes back up sooner.
    Silent {
        small_buffer: bool,
    },
}

#[derive(Debug, Clone)]
pub struct PublishPlan {
    /// Messages a second, or `None` for as fast as acknowledgements allow.
    pub rate: Option<f64>,
    /// Publishes waiting for their `ok` at most (as-fast-as-possible mode).
    pub window: usize,
    /// Body size in bytes.
    pub size: usize,
    pub publisher: usize,
}

#[derive(Default)]
pub struct RoomCounts {
    /// Members that joined and read (silent ones are not counted).
    pub joined: AtomicU64,
    /// Publishes sent, and refused with an `error` (`rate_limited`, or
    /// `unavailable`: not published), and of those, `unavailable`.
    pub sent: AtomicU64,
    pub refused: AtomicU64,
    pub unavailable: AtomicU64,
    /// The room's epochs its members found when they joined: more than one
    /// means the room was started again during the run.
    pub epochs: Mutex<Vec<String>>,
    /// Times a reader saw the room's `seq` begin again at 1.
    pub restarts: AtomicU64,
}

impl RoomCounts {
    /// Whether the room was started again (a new epoch) during the run.
    pub fn restarted(&self) -> bool {
        self.restarts.load(Ordering::Acquire) > 0 || self.epochs.lock().unwrap_or_else(|p| p.into_inner()).len() > 1
    }

    fn joined_in(&self, epoch: Option<&str>) {
        if let Some(epoch) = epoch {
            let mut epochs = self.epochs.lock().unwrap_or_else(|p| p.into_inner());
            if !epochs.iter().any(|e| e == epoch) {
                epochs.push(epoch.to_string());
            }
        }
    }
}

/// Everything the members of a run share.
pub struct Members {
    pub names: Vec<String>,
    pub rooms: Vec<RoomCounts>,
    pub dialer: Dialer,
    pub latency: Arc<Latency>,
    pub received: AtomicU64,
    pub gaps: AtomicU64,
    pub reorders: AtomicU64,
    pub acked: AtomicU64,
    pub error_frames: AtomicU64,
    /// Members that connected but whose join was not answered `joined`.
    pub join_failures: AtomicU64,
    /// Readers and publishers whose connection the server ended.
    pub dropped_live: AtomicU64,
    /// Seconds from going silent to being dropped, one per silent member.
    pub drop_times: Mutex<Vec<f64>>,
    pub silent: AtomicU64,
    /// `heartbeat_ms` and `timeout_ms` from a roomcast `welcome`, if any.
    pub server_heartbeat: Mutex<Option<(u64, u64)>>,
    pub gate: Gate,
}

impl Members {
    /// Members that never got into their room: the connection or the join
    /// failed.
    pub fn connect_errors(&self) -> u64 {
        self.dialer.failures() + self.join_failures.load(Ordering::Acquire)
    }

    pub fn new(names: Vec<String>, dialer: Dialer, connect_concurrency: usize) -> Arc<Members> {
        let rooms = names.iter().map(|_| RoomCounts::default()).collect();
        Arc::new(Members {
            names,
            rooms,
            dialer,
            latency: Latency::new(),
            received: AtomicU64::new(0),
            gaps: AtomicU64::new(0),
            reorders: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            error_frames: AtomicU64::new(0),
            join_failures: AtomicU64::new(0),
            dropped_live: AtomicU64::new(0),
            drop_times: Mutex::new(Vec::new()),
            silent: AtomicU64::new(0),
            server_heartbeat: Mutex::new(None),
            gate: Gate::new(connect_concurrency),
        })
    }

    /// Deliveries the members should have received: every publish that was
    /// not refused, times the members of its room.
    pub fn expected(&self) -> u64 {
        self.rooms
            .iter()
            .map(|r| {
                let accepted = r.sent.load(Ordering::Acquire).saturating_sub(r.refused.load(Ordering::Acquire));
                accepted * r.joined.load(Ordering::Acquire)
            })
            .sum()
    }

    pub fn sent(&self) -> u64 {
        self.rooms.iter().map(|r| r.sent.load(Ordering::Acquire)).sum()
    }

    pub fn refused(&self) -> u64 {
        self.rooms.iter().map(|r| r.refused.load(Ordering::Acquire)).sum()
    }

    /// Of the refused, those refused `unavailable` (a cluster's Redis).
    pub fn unavailable(&self) -> u64 {
        self.rooms.iter().map(|r| r.unavailable.load(Ordering::Acquire)).sum()
    }

    /// The refusals, as the report shows them.
    pub fn report_refused(&self, report: &mut super::report::Report) {
        report.count("refused", "refused (rate limited, or unavailable: not published)", self.refused());
        report.count("unavailable", "  of them unavailable", self.unavailable());
    }

    /// Reports rooms that were started again during the run (a server or
    /// its Redis restarted): their `seq` began again at 1, which is not a
    /// gap or disorder; those are counted within each epoch.
    pub fn report_restarts(&self, report: &mut super::report::Report) {
        let restarted = self.rooms.iter().filter(|r| r.restarted()).count();
        report.count("rooms_restarted", "rooms started again", restarted as u64);
        if restarted > 0 {
            report.notes.push(format!(
                "{restarted} rooms were started again during the run (a new epoch, seq from 1): \
                 gaps and order are counted within each epoch"
            ));
        }
    }

    /// Publishes neither acknowledged nor refused yet.
    pub fn unresolved(&self) -> u64 {
        self.sent().saturating_sub(self.acked.load(Ordering::Acquire) + self.refused())
    }

    /// Waits (at most `limit`) until every publish is resolved and every
    /// expected delivery arrived.
    pub async fn drain(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            if self.unresolved() == 0 && self.received.load(Ordering::Acquire) >= self.expected() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The string after the first `key` (such as `"epoch":`) in `text`, for
/// strings without escapes.
pub fn scan_str<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let start = memchr::memmem::find(text.as_bytes(), key.as_bytes())? + key.len();
    let rest = text.get(start..)?.trim_start().strip_prefix('"')?;
    Some(&rest[..memchr::memchr(b'"', rest.as_bytes())?])
}

/// The value of the first `"key":<digits>` in `text`.
pub fn scan_u64(text: &str, key: &str) -> Option<u64> {
    digits_at(text, memchr::memmem::find(text.as_bytes(), key.as_bytes())? + key.len())
}

fn digits_at(text: &str, start: usize) -> Option<u64> {
    let digits = text.get(start..)?.trim_start();
    let end = digits.bytes().position(|b| !b.is_ascii_digit()).unwrap_or(digits.len());
    digits[..end].parse().ok()
}

/// Finders built once: constructing a searcher per frame costs more than
/// the search.
struct Keys {
    kind: memchr::memmem::Finder<'static>,
    seq: memchr::memmem::Finder<'static>,
    sent: memchr::memmem::Finder<'static>,
}

fn keys() -> &'static Keys {
    static KEYS: std::sync::OnceLock<Keys> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| Keys {
        kind: memchr::memmem::Finder::new(b"\"type\":"),
        seq: memchr::memmem::Finder::new(b"\"seq\":"),
        sent: memchr::memmem::Finder::new(b"\"rc_t\":"),
    })
}

/// The value of the first `"type":"..."` in `text`.
pub fn scan_type(text: &str) -> Option<&str> {
    // Servers put `type` first; look there before searching.
    let start = match text.strip_prefix("{\"type\":") {
        Some(_) => 8,
        None => keys().kind.find(text.as_bytes())? + 7,
    };
    let rest = text[start..].trim_start().strip_prefix('"')?;
    Some(&rest[..memchr::memchr(b'"', rest.as_bytes())?])
}

/// `seq` and the body's send time of a `message` frame.
fn scan_message(text: &str) -> (Option<u64>, Option<u64>) {
    let bytes = text.as_bytes();
    let keys = keys();
    let seq_at = keys.seq.find(bytes).map(|at| at + 6);
    let seq = seq_at.and_then(|at| digits_at(text, at));
    let from = seq_at.unwrap_or(0);
    let sent = keys.sent.find(&bytes[from..]).and_then(|at| digits_at(text, from + at + 7));
    (seq, sent)
}

/// A body of about `size` bytes carrying the send time and the publisher.
pub fn body(size: usize, publisher: usize) -> String {
    let head = format!("{{\"rc_t\":{},\"rc_p\":{publisher},\"pad\":\"", now_ns());
    let pad = size.saturating_sub(head.len() + 2);
    let mut body = String::with_capacity(head.len() + pad + 2);
    body.push_str(&head);
    body.extend(std::iter::repeat_n('x', pad));
    body.push_str("\"}");
    body
}

/// Counts a reader keeps locally and adds to the shared ones now and then.
#[derive(Default)]
struct Tally {
    received: u64,
    gaps: u64,
    reorders: u64,
    acked: u64,
    errors: u64,
}

impl Tally {
    fn flush(&mut self, members: &Members) {
        members.received.fetch_add(std::mem::take(&mut self.received), Ordering::Relaxed);
        members.gaps.fetch_add(std::mem::take(&mut self.gaps), Ordering::Relaxed);
        members.reorders.fetch_add(std::mem::take(&mut self.reorders), Ordering::Relaxed);
        members.acked.fetch_add(std::mem::take(&mut self.acked), Ordering::Relaxed);
        members.error_frames.fetch_add(std::mem::take(&mut self.errors), Ordering::Relaxed);
    }
}

/// Connects and joins `room`; on failure, counts it and returns `None`.
async fn connect_and_join(members: &Members, room: usize, role: &Role) -> Option<Ws> {
    let small_buffer = matches!(role, Role::Silent { small_buffer: true });
    let mut ws = {
        let _permit = members.gate.handshake_permit().await?;
        let publisher = matches!(role, Role::Publisher(_));
        let connected = members.dialer.connect_member(publisher, small_buffer.then_some(4096)).await;
        match connected {
            Ok(ws) => ws,
            Err(_) => return None, // counted by the dialer
        }
    };
    let name = &members.names[room];
    ws.send(Message::text(build::join(name, None, None, Some(0)))).await.ok()?;
    // roomcast sends `welcome` first; other servers may not. Wait for `joined`.
    while let Some(Ok(frame)) = ws.next().await {
        if let Message::Text(text) = frame {
            match scan_type(&text) {
                Some("joined") => {
                    if !matches!(role, Role::Silent { .. }) {
                        members.rooms[room].joined.fetch_add(1, Ordering::AcqRel);
                    }
                    members.rooms[room].joined_in(scan_str(&text, "\"epoch\":"));
                    return Some(ws);
                }
                Some("welcome") => {
                    let heartbeat = scan_u64(&text, "\"heartbeat_ms\":").zip(scan_u64(&text, "\"timeout_ms\":"));
                    if heartbeat.is_some() {
                        *members.server_heartbeat.lock().unwrap_or_else(|p| p.into_inner()) = heartbeat;
                    }
                }
                Some("error") => {
                    log::debug!("join refused: {text}");
                    members.dialer.note_failure(format!("refused: {text}"));
                    break;
                }
                _ => {}
            }
        } else if let Message::Close(Some(close)) = frame {
            members.dialer.note_failure(format!("closed {} {}", u16::from(close.code), close.reason));
        }
    }
    members.join_failures.fetch_add(1, Ordering::Relaxed);
    None
}

/// One member, from connecting to the end of the run.
pub async fn member(members: Arc<Members>, room: usize, role: Role) {
    let ws = connect_and_join(&members, room, &role).await;
    members.gate.settle();
    let Some(ws) = ws else { return };
    match role {
        Role::Silent { .. } => silent(&members, ws).await,
        role => active(&members, room, role, ws).await,
    }
}

/// Starts one member task per `(room, role)` and waits until every one has
/// joined or failed to.
pub async fn spawn_members(members: &Arc<Members>, specs: Vec<(usize, Role)>) -> Vec<tokio::task::JoinHandle<()>> {
    let count = specs.len();
    let tasks = specs.into_iter().map(|(room, role)| tokio::spawn(member(members.clone(), room, role))).collect();
    members.gate.settled(count).await;
    tasks
}

/// Waits until `duration` is up, or (with `until_dropped`) every silent
/// member has been dropped, whichever comes first; `tick` runs twice a
/// second meanwhile.
pub async fn wait_for_drops(
    members: &Members,
    silent: usize,
    duration: Duration,
    until_dropped: bool,
    mut tick: impl FnMut(),
) {
    let started = Instant::now();
    let mut every = tokio::time::interval(Duration::from_millis(500));
    while started.elapsed() < duration {
        tokio::select! {
            _ = every.tick() => tick(),
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
        let dropped = members.drop_times.lock().map(|t| t.len()).unwrap_or(0);
        if until_dropped && members.silent.load(Ordering::Acquire) as usize == silent && dropped >= silent {
            return;
        }
    }
}

/// Drop times of the silent members as figures: how many were dropped,
/// how many not, and the distribution in seconds.
pub fn report_drops(members: &Members, report: &mut super::report::Report, key: &str, label: &str) {
    use super::report::Unit;
    let mut times = members.drop_times.lock().unwrap_or_else(|p| p.into_inner()).clone();
    times.sort_by(f64::total_cmp);
    let silent = members.silent.load(Ordering::Acquire);
    report.count(&format!("{key}_dropped"), &format!("{label} dropped"), times.len() as u64);
    report.count(
        &format!("{key}_not_dropped"),
        &format!("{label} not dropped"),
        silent.saturating_sub(times.len() as u64),
    );
    if let (Some(first), Some(last)) = (times.first(), times.last()) {
        let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
        report.add("drop_time_min_s", "time to drop, min", *first, Unit::Seconds);
        report.add("drop_time_p50_s", "time to drop, p50", at(0.5), Unit::Seconds);
        report.add("drop_time_p90_s", "time to drop, p90", at(0.9), Unit::Seconds);
        report.add("drop_time_max_s", "time to drop, max", *last, Unit::Seconds);
    }
}

async fn silent(members: &Members, mut ws: Ws) {
    let mut phase = members.gate.phase();
    // Read until the start, like everyone; then stop.
    while *phase.borrow() < Phase::Go {
        tokio::select! {
            frame = ws.next() => if frame.is_none() { return },
            _ = phase.changed() => {}
        }
    }
    members.silent.fetch_add(1, Ordering::Relaxed);
    let went_silent = Instant::now();
    let mut poll = tokio::time::interval(Duration::from_millis(10));
    loop {
        tokio::select! {
            _ = poll.tick() => {
                if crate::dial::tcp(&ws).and_then(|tcp| tcp_state(tcp.as_fd())) != Some(TCP_ESTABLISHED) {
                    let took = went_silent.elapsed().as_secs_f64();
                    members.drop_times.lock().unwrap_or_else(|p| p.into_inner()).push(took);
                    return;
                }
            }
            _ = phase.changed() => if *phase.borrow() == Phase::Done { return },
        }
    }
}

async fn active(members: &Members, room: usize, role: Role, mut ws: Ws) {
    let mut phase = members.gate.phase();
    let mut recorder = members.latency.recorder();
    let mut tally = Tally::default();
    let mut reader = Reader { last_seq: 0 };
    let plan = match role {
        Role::Publisher(plan) => Some(plan),
        _ => None,
    };
    let mut ticker = plan.as_ref().and_then(|p| p.rate).map(|rate| {
        let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1e-3)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        ticker
    });
    let counts = &members.rooms[room];
    let name = members.names[room].as_str();
    let mut publisher = plan.map(|plan| Publisher { plan, in_flight: 0, next_ref: 1 });
    let mut ended_by_server = false;
    // Counts reach the shared totals at least this often, for the progress
    // line and the drain.
    let mut flush = tokio::time::interval(Duration::from_millis(50));
    loop {
        let current = *phase.borrow();
        if current == Phase::Done {
            break;
        }
        let publishing = current == Phase::Go && publisher.is_some();
        if publishing
            && ticker.is_none()
            && let Some(publisher) = publisher.as_mut()
            && publisher.fill_window(&mut ws, name, counts).await.is_err()
        {
            ended_by_server = true;
            break;
        }
        tokio::select! {
            frame = ws.next() => {
                // Handle every frame already buffered before waiting again:
                // a select per frame costs more than the frame.
                let mut frame = frame;
                loop {
                    match frame {
                        Some(Ok(Message::Text(text))) => {
                            reader.text(&text, &mut tally, &mut recorder, counts, publisher.as_mut());
                            if tally.received % 1024 == 0 {
                                tally.flush(members);
                            }
                        }
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                            ended_by_server = true;
                            break;
                        }
                        Some(Ok(_)) => {}
                    }
                    match ws.next().now_or_never() {
                        Some(next) => frame = next,
                        None => break,
                    }
                }
                if ended_by_server {
                    break;
                }
            }
            _ = tick(&mut ticker), if publishing => {
                if let Some(publisher) = publisher.as_mut() && publisher.send_one(&mut ws, name, counts, true).await.is_err() {
                    ended_by_server = true;
                    break;
                }
            }
            _ = flush.tick() => {
                tally.flush(members);
                recorder.flush();
            }
            _ = phase.changed() => {
                tally.flush(members);
                recorder.flush();
            }
        }
    }
    tally.flush(members);
    if ended_by_server && *phase.borrow() != Phase::Done {
        members.dropped_live.fetch_add(1, Ordering::Relaxed);
    }
    let _ = ws.close(None).await;
}

/// What a reader keeps between frames.
struct Reader {
    last_seq: u64,
}

impl Reader {
    fn text(
        &mut self,
        text: &str,
        tally: &mut Tally,
        recorder: &mut super::stats::Recorder,
        counts: &RoomCounts,
        publisher: Option<&mut Publisher>,
    ) {
        match scan_type(text) {
            Some("message") => {
                tally.received += 1;
                let (seq, sent) = scan_message(text);
                if let Some(seq) = seq {
                    match seq.cmp(&(self.last_seq + 1)) {
                        std::cmp::Ordering::Equal => {}
                        std::cmp::Ordering::Greater => tally.gaps += seq - self.last_seq - 1,
                        // seq 1 again: the room was started again (a new
                        // epoch), which is no disorder.
                        std::cmp::Ordering::Less if seq == 1 => {
                            counts.restarts.fetch_add(1, Ordering::Relaxed);
                            self.last_seq = 0;
                        }
                        std::cmp::Ordering::Less => tally.reorders += 1,
                    }
                    self.last_seq = self.last_seq.max(seq);
                }
                if let Some(sent) = sent {
                    recorder.record_since(sent);
                }
            }
            Some("ok") => {
                tally.acked += 1;
                if let Some(publisher) = publisher {
                    publisher.in_flight = publisher.in_flight.saturating_sub(1);
                }
            }
            Some("error") => {
                // A refused publish was not published: not a loss.
                if text.contains("\"rate_limited\"") {
                    counts.refused.fetch_add(1, Ordering::Relaxed);
                } else if text.contains("\"unavailable\"") {
                    counts.refused.fetch_add(1, Ordering::Relaxed);
                    counts.unavailable.fetch_add(1, Ordering::Relaxed);
                } else {
                    tally.errors += 1;
                }
                if let Some(publisher) = publisher {
                    publisher.in_flight = publisher.in_flight.saturating_sub(1);
                }
            }
            _ => {}
        }
    }
}

/// The next tick, or never without a ticker.
async fn tick(ticker: &mut Option<tokio::time::Interval>) {
    match ticker {
        Some(ticker) => {
            ticker.tick().await;
        }
        None => std::future::pending().await,
    }
}

struct Publisher {
    plan: PublishPlan,
    in_flight: usize,
    next_ref: u64,
}

impl Publisher {
    async fn send_one(&mut self, ws: &mut Ws, room: &str, counts: &RoomCounts, flush: bool) -> Result<(), ()> {
        let request = build::publish(room, &body(self.plan.size, self.plan.publisher), Some(self.next_ref));
        self.next_ref += 1;
        let message = Message::text(request);
        let sent = if flush { ws.send(message).await } else { ws.feed(message).await };
        sent.map_err(|_| ())?;
        counts.sent.fetch_add(1, Ordering::Relaxed);
        self.in_flight += 1;
        Ok(())
    }

    /// Sends until `window` publishes wait for their `ok`, then flushes once.
    async fn fill_window(&mut self, ws: &mut Ws, room: &str, counts: &RoomCounts) -> Result<(), ()> {
        if self.in_flight >= self.plan.window {
            return Ok(());
        }
        while self.in_flight < self.plan.window {
            self.send_one(ws, room, counts, false).await?;
        }
        ws.flush().await.map_err(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scanning_message_frames() {
        let frame = r#"{"type":"message","room":"r","seq":42,"from":"1","nick":null,"ts":5,"body":{"rc_t":123456,"rc_p":3,"pad":"xx"}}"#;
        assert_eq!(scan_type(frame), Some("message"));
        assert_eq!(scan_u64(frame, "\"seq\":"), Some(42));
        assert_eq!(scan_u64(frame, "\"rc_t\":"), Some(123456));
        assert_eq!(scan_u64(frame, "\"missing\":"), None);
        assert_eq!(scan_type(r#"{ "type" : "ok" }"#), None, "only the compact form servers send");
        assert_eq!(scan_type(r#"{"type": "ok"}"#), Some("ok"));
        let joined = r#"{"type":"joined","room":"r","members":2,"epoch":"5f3a","history":[]}"#;
        assert_eq!(scan_str(joined, "\"epoch\":"), Some("5f3a"));
        assert_eq!(scan_str(frame, "\"epoch\":"), None);
    }

    #[test]
    fn a_room_started_again_is_told_from_disorder() {
        let counts = RoomCounts::default();
        counts.joined_in(Some("a"));
        counts.joined_in(Some("a"));
        assert!(!counts.restarted());
        counts.joined_in(Some("b"));
        assert!(counts.restarted(), "two epochs");
        let counts = RoomCounts::default();
        let mut reader = Reader { last_seq: 0 };
        let (mut tally, latency) = (Tally::default(), super::super::stats::Latency::new());
        let mut recorder = latency.recorder();
        for seq in [1, 2, 3, 1, 2, 4] {
            let frame = format!(r#"{{"type":"message","room":"r","seq":{seq},"body":1}}"#);
            reader.text(&frame, &mut tally, &mut recorder, &counts, None);
        }
        assert!(counts.restarted());
        assert_eq!((tally.reorders, tally.gaps), (0, 1), "seq 1 again is a restart; 2 -> 4 a gap");
    }

    #[test]
    fn bodies_have_the_requested_size_and_are_json() {
        for size in [10, 100, 1000] {
            let text = body(size, 7);
            let value: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(value["rc_p"], 7);
            if size >= 100 {
                assert_eq!(text.len(), size);
            }
        }
    }
}
