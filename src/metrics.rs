//! Counters and gauges, rendered at `/metrics` in the Prometheus text
//! exposition format (version 0.0.4).

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

#[derive(Default)]
pub struct Metrics {
    connections: AtomicU64,
    /// Notified whenever `connections` drops to zero (the drain waits on it).
    no_connections: Notify,
    pub rooms: AtomicU64,
    /// Rooms in memory, empty ones included.
    pub rooms_held: AtomicU64,
    /// Bytes of history the rooms hold.
    pub history_bytes: AtomicU64,
    pub connections_total: AtomicU64,
    pub connections_refused: AtomicU64,
    pub messages_in: AtomicU64,
    pub messages_out: AtomicU64,
    pub heartbeat_timeouts: AtomicU64,
    pub slow_consumer_closes: AtomicU64,
    pub origin_rejections: AtomicU64,
    pub rate_limited: AtomicU64,
    pub protocol_errors: AtomicU64,
    /// `roomcast_auth_failures_total`, by [`AuthFailure`].
    pub auth_failures: [AtomicU64; 4],
    /// `roomcast_cluster_*`, rendered when `[cluster]` is on.
    pub cluster: ClusterMetrics,
}

/// Panics since the process started (`roomcast_panics_total`): process-wide,
/// since a panic hook has no `Metrics` at hand.
static PANICS: AtomicU64 = AtomicU64::new(0);

/// Places (file:line) whose first panic was logged; later ones there are
/// only counted. Bounded: past this many places, panics are only counted.
static PANIC_PLACES: Mutex<Vec<String>> = Mutex::new(Vec::new());
const MAX_PANIC_PLACES: usize = 64;

/// Replaces the default panic hook (a message, or a backtrace, per panic)
/// by one that counts every panic and logs each place once. A panic stays
/// within the task it happened in (one connection's actor, one request):
/// the release profile unwinds (`Cargo.toml`), and actix's workers go on.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        PANICS.fetch_add(1, Ordering::Relaxed);
        let place = info.location().map_or_else(|| "an unknown place".to_string(), |at| format!("{at}"));
        let first = {
            let mut places = PANIC_PLACES.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let first = !places.contains(&place) && places.len() < MAX_PANIC_PLACES;
            if first {
                places.push(place.clone());
            }
            first
        };
        if first {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("(no message)");
            let thread = std::thread::current();
            log::error!(
                "a bug: panic in thread {:?} at {place}: {message} (the task it happened in ended, the rest goes \
                 on; roomcast_panics_total counts every panic, and later ones at this place are not logged)",
                thread.name().unwrap_or("unnamed")
            );
        }
    }));
}

/// Panics since the process started.
pub fn panics() -> u64 {
    PANICS.load(Ordering::Relaxed)
}

/// One metric per row: name, type, help, value.
type Row<'a> = (&'a str, &'a str, &'a str, u64);

fn write_rows(out: &mut String, rows: &[Row]) {
    for (name, kind, help, value) in rows {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
    }
}

/// Upper bounds (seconds) of `roomcast_cluster_publish_seconds`' buckets.
const PUBLISH_BUCKETS: [f64; 12] = [0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

#[derive(Default)]
pub struct ClusterMetrics {
    pub enabled: std::sync::atomic::AtomicBool,
    pub up: AtomicU64,
    /// 0 while Redis refuses writes (out of memory, read-only).
    pub writable: AtomicU64,
    pub write_refusals: AtomicU64,
    pub nodes: AtomicU64,
    pub repairs: AtomicU64,
    publish_buckets: [AtomicU64; PUBLISH_BUCKETS.len()],
    publish_count: AtomicU64,
    publish_micros: AtomicU64,
}

impl ClusterMetrics {
    /// One publish's round trip to Redis.
    pub fn observe_publish(&self, took: std::time::Duration) {
        let seconds = took.as_secs_f64();
        if let Some(bucket) = PUBLISH_BUCKETS.iter().position(|bound| seconds <= *bound) {
            Metrics::inc(&self.publish_buckets[bucket]);
        }
        Metrics::inc(&self.publish_count);
        Metrics::add(&self.publish_micros, took.as_micros() as u64);
    }

    fn render(&self, out: &mut String) {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let rows = [
            ("roomcast_cluster_up", "gauge", "1 while Redis is reachable.", get(&self.up)),
            (
                "roomcast_cluster_writable",
                "gauge",
                "1 while Redis takes writes; 0 while it refuses them (out of memory, a read-only replica).",
                get(&self.writable),
            ),
            (
                "roomcast_cluster_write_refusals_total",
                "counter",
                "Writes Redis refused (OOM, READONLY, MISCONF).",
                get(&self.write_refusals),
            ),
            ("roomcast_cluster_nodes", "gauge", "Live nodes seen in the cluster.", get(&self.nodes)),
            (
                "roomcast_cluster_repairs_total",
                "counter",
                "Gaps found on the pub/sub stream and filled from history.",
                get(&self.repairs),
            ),
        ];
        write_rows(out, &rows);
        let name = "roomcast_cluster_publish_seconds";
        let _ = writeln!(out, "# HELP {name} A publish's round trip to Redis.\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, bucket) in PUBLISH_BUCKETS.iter().zip(&self.publish_buckets) {
            cumulative += get(bucket);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = get(&self.publish_count);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", get(&self.publish_micros) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// Why a connection or request was refused by authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// `auth.mode = "required"` and no token.
    Missing,
    /// A token that does not verify (signature, algorithm, claims), or a
    /// room token for another user or room.
    Invalid,
    /// A token past its `exp` (at admission, on `auth`, or while open).
    Expired,
    /// No grant: a private room, a read-only room, the per-user limit.
    Forbidden,
}

impl AuthFailure {
    const ALL: [AuthFailure; 4] =
        [AuthFailure::Missing, AuthFailure::Invalid, AuthFailure::Expired, AuthFailure::Forbidden];

    fn label(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::Invalid => "invalid",
            AuthFailure::Expired => "expired",
            AuthFailure::Forbidden => "forbidden",
        }
    }
}

/// One open WebSocket connection, counted in `roomcast_connections` until
/// dropped.
pub struct ConnectionSlot(std::sync::Arc<Metrics>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        if self.0.connections.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.no_connections.notify_waiters();
        }
    }
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn inc(counter: &AtomicU64) {
        Self::add(counter, 1);
    }

    /// Takes a connection slot unless `max` are open.
    pub fn open_connection(self: &std::sync::Arc<Self>, max: usize) -> Option<ConnectionSlot> {
        let before = self.connections.fetch_add(1, Ordering::AcqRel);
        let slot = ConnectionSlot(self.clone());
        if before >= max as u64 {
            drop(slot);
            Self::inc(&self.connections_refused);
            return None;
        }
        Self::inc(&self.connections_total);
        Some(slot)
    }

    pub fn auth_failure(&self, why: AuthFailure) {
        Self::inc(&self.auth_failures[why as usize]);
    }

    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Acquire)
    }

    /// Resolves once no WebSocket connection is open.
    pub async fn all_connections_closed(&self) {
        loop {
            let notified = self.no_connections.notified();
            if self.connections() == 0 {
                return;
            }
            notified.await;
        }
    }

    pub fn render(&self) -> String {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let rows: [Row; 16] = [
            ("roomcast_connections", "gauge", "Open WebSocket connections.", self.connections()),
            ("roomcast_rooms", "gauge", "Rooms with at least one member.", get(&self.rooms)),
            (
                "roomcast_rooms_held",
                "gauge",
                "Rooms in memory, empty ones (kept for rooms.empty_ttl) included; at most rooms.max_rooms.",
                get(&self.rooms_held),
            ),
            ("roomcast_history_bytes", "gauge", "Bytes of message history the rooms hold.", get(&self.history_bytes)),
            ("roomcast_connections_total", "counter", "WebSocket connections accepted.", get(&self.connections_total)),
            (
                "roomcast_connections_refused_total",
                "counter",
                "WebSocket handshakes refused because max_connections (or max_connections_per_ip) were open.",
                get(&self.connections_refused),
            ),
            ("roomcast_messages_in_total", "counter", "Data messages received from clients.", get(&self.messages_in)),
            ("roomcast_messages_out_total", "counter", "Data messages sent to clients.", get(&self.messages_out)),
            (
                "roomcast_heartbeat_timeouts_total",
                "counter",
                "Connections closed because nothing arrived for heartbeat.timeout.",
                get(&self.heartbeat_timeouts),
            ),
            (
                "roomcast_slow_consumer_closes_total",
                "counter",
                "Connections closed (1013) because more than outbound_queue messages or outbound_bytes bytes waited while they did not read.",
                get(&self.slow_consumer_closes),
            ),
            (
                "roomcast_origin_rejections_total",
                "counter",
                "WebSocket handshakes refused by the origin policy.",
                get(&self.origin_rejections),
            ),
            ("roomcast_rate_limited_total", "counter", "Messages refused by the rate limit.", get(&self.rate_limited)),
            (
                "roomcast_protocol_errors_total",
                "counter",
                "Connections closed for a WebSocket protocol violation (1002, 1007, 1009).",
                get(&self.protocol_errors),
            ),
            (
                "roomcast_socket_mismatches_total",
                "counter",
                "Times a connection's descriptor no longer named its socket when the server was about to use it (must stay 0).",
                socket_mismatches(),
            ),
            (
                "roomcast_panics_total",
                "counter",
                "Panics (bugs), each contained to the connection or request it happened in; must stay 0.",
                panics(),
            ),
            ("roomcast_up", "gauge", "1 while the server runs.", 1),
        ];
        let mut out = String::with_capacity(2048);
        write_rows(&mut out, &rows);
        let name = "roomcast_auth_failures_total";
        let _ = writeln!(
            out,
            "# HELP {name} Connections and requests refused by authentication, by reason.\n# TYPE {name} counter"
        );
        for why in AuthFailure::ALL {
            let _ = writeln!(out, "{name}{{reason=\"{}\"}} {}", why.label(), get(&self.auth_failures[why as usize]));
        }
        if self.cluster.enabled.load(Ordering::Relaxed) {
            self.cluster.render(&mut out);
        }
        out
    }
}

/// Times a descriptor no longer named its connection's socket when it was
/// about to be used (`roomcast_socket_mismatches_total`, which must stay 0).
static SOCKET_MISMATCHES: AtomicU64 = AtomicU64::new(0);

pub fn count_socket_mismatch() {
    SOCKET_MISMATCHES.fetch_add(1, Ordering::Relaxed);
}

pub fn socket_mismatches() -> u64 {
    SOCKET_MISMATCHES.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn slots_are_bounded_and_released() {
        let m = Arc::new(Metrics::default());
        let a = m.open_connection(2).expect("first");
        let _b = m.open_connection(2).expect("second");
        assert!(m.open_connection(2).is_none());
        assert_eq!(m.connections(), 2);
        drop(a);
        assert!(m.open_connection(2).is_some());
        assert_eq!(m.connections_refused.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn renders_the_contract_names() {
        let text = Metrics::default().render();
        for name in [
            "roomcast_connections ",
            "roomcast_rooms ",
            "roomcast_messages_in_total ",
            "roomcast_messages_out_total ",
            "roomcast_heartbeat_timeouts_total ",
            "roomcast_slow_consumer_closes_total ",
            "roomcast_origin_rejections_total ",
            "roomcast_rate_limited_total ",
        ] {
            assert!(text.contains(&format!("\n{name}0\n")), "{name} missing:\n{text}");
        }
        let metrics = Metrics::default();
        metrics.auth_failure(AuthFailure::Expired);
        let text = metrics.render();
        assert!(text.contains("\nroomcast_auth_failures_total{reason=\"expired\"} 1\n"), "{text}");
        assert!(text.contains("\nroomcast_auth_failures_total{reason=\"missing\"} 0\n"), "{text}");
    }
}
