//! What a load run reports: named figures, printed as a table, written as
//! one JSON document, and checked against the SLO flags.

use std::fmt::Write as _;
use std::time::Duration;

use clap::Args;
use serde_json::{Map, Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    PerSecond,
    /// Stored in microseconds.
    Micros,
    /// Stored in seconds.
    Seconds,
    Bytes,
}

#[derive(Debug, Clone)]
pub struct Figure {
    /// The key in the JSON document, e.g. `latency_p99_us`.
    pub key: String,
    /// What the table shows, e.g. `latency p99`.
    pub label: String,
    pub value: f64,
    pub unit: Unit,
}

/// The figures of one run, in the order they were added.
#[derive(Debug, Default)]
pub struct Report {
    pub scenario: &'static str,
    pub params: Map<String, Value>,
    pub figures: Vec<Figure>,
    /// Extra JSON (time series and the like) that has no place in the table.
    pub extra: Map<String, Value>,
    pub notes: Vec<String>,
}

impl Report {
    pub fn new(scenario: &'static str) -> Self {
        Report { scenario, ..Default::default() }
    }

    pub fn param(&mut self, key: &str, value: impl Into<Value>) {
        self.params.insert(key.to_string(), value.into());
    }

    pub fn add(&mut self, key: &str, label: &str, value: f64, unit: Unit) {
        self.figures.push(Figure { key: key.into(), label: label.into(), value, unit });
    }

    pub fn count(&mut self, key: &str, label: &str, value: u64) {
        self.add(key, label, value as f64, Unit::Count);
    }

    /// Counts failed connections, and says why the first one failed.
    pub fn connect_errors(&mut self, count: u64, dialer: &crate::dial::Dialer) {
        self.count("connect_errors", "connect errors", count);
        if count > 0
            && let Some(why) = dialer.first_error()
        {
            self.notes.push(format!("first connect error: {why}"));
        }
    }

    pub fn get(&self, key: &str) -> Option<f64> {
        self.figures.iter().find(|f| f.key == key).map(|f| f.value)
    }

    /// A readable table of every figure.
    pub fn table(&self) -> String {
        let width = self.figures.iter().map(|f| f.label.len()).max().unwrap_or(0);
        let mut out = format!("roomcast load {}\n", self.scenario);
        for figure in &self.figures {
            let _ = writeln!(out, "  {:<width$}  {}", figure.label, format_value(figure.value, figure.unit));
        }
        for note in &self.notes {
            let _ = writeln!(out, "  note: {note}");
        }
        out
    }

    pub fn to_json(&self, slo: &[SloResult]) -> Value {
        let results: Map<String, Value> = self.figures.iter().map(|f| (f.key.clone(), json_number(f.value))).collect();
        let slo: Vec<Value> = slo
            .iter()
            .map(|r| {
                json!({"flag": r.flag, "implicit": r.implicit, "limit": json_number(r.limit),
                       "value": r.value.map(json_number), "ok": r.ok})
            })
            .collect();
        let mut doc = json!({
            "scenario": self.scenario,
            "params": self.params,
            "results": results,
            "slo": slo,
            "passed": slo.iter().all(|r| r["ok"] == true),
            "notes": self.notes,
        });
        for (key, value) in &self.extra {
            doc[key] = value.clone();
        }
        doc
    }
}

fn json_number(value: f64) -> Value {
    if value.fract() == 0.0 && value.abs() < 9e15 {
        json!(value as i64)
    } else {
        json!((value * 1000.0).round() / 1000.0)
    }
}

pub fn format_value(value: f64, unit: Unit) -> String {
    match unit {
        Unit::Count => format_count(value),
        Unit::PerSecond => format!("{}/s", format_count(value)),
        Unit::Micros if value >= 1_000_000.0 => format!("{:.2} s", value / 1e6),
        Unit::Micros if value >= 1000.0 => format!("{:.2} ms", value / 1e3),
        Unit::Micros => format!("{value:.0} µs"),
        Unit::Seconds => format!("{value:.2} s"),
        Unit::Bytes if value >= 1024.0 * 1024.0 => format!("{:.1} MiB", value / 1024.0 / 1024.0),
        Unit::Bytes if value >= 1024.0 => format!("{:.1} KiB", value / 1024.0),
        Unit::Bytes => format!("{value:.0} B"),
    }
}

fn format_count(value: f64) -> String {
    if value.fract() != 0.0 && value.abs() < 100.0 {
        return format!("{value:.2}");
    }
    let digits = format!("{:.0}", value.abs());
    let mut grouped = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    if value < 0.0 { format!("-{grouped}") } else { grouped }
}

/// Service-level objectives: a run that misses one exits non-zero.
#[derive(Args, Debug, Clone, Default)]
pub struct Slo {
    /// Fail when latency p50 is above this (e.g. 2ms).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub max_p50: Option<Duration>,
    /// Fail when latency p99 is above this (e.g. 5ms).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub max_p99: Option<Duration>,
    /// Fail when latency p99.9 is above this.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub max_p999: Option<Duration>,
    /// Fail when more messages than this were lost.
    #[arg(long, value_name = "N")]
    pub max_loss: Option<u64>,
    /// Fail when more errors than this happened (refused connections, error frames, unexpected closes).
    #[arg(long, value_name = "N")]
    pub max_errors: Option<u64>,
    /// Fail when the server refused more publishes than this (its rate limit).
    #[arg(long, value_name = "N")]
    pub max_refused: Option<u64>,
    /// Fail when a dead or stalled client took longer than this to be dropped (heartbeat, slow).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub max_drop_time: Option<Duration>,
    /// Fail when fewer connections than this were held (idle).
    #[arg(long, value_name = "N")]
    pub min_held: Option<u64>,
    /// Fail when the server's resident memory per connection is above this many bytes (idle, with --server-pid).
    #[arg(long, value_name = "BYTES")]
    pub max_rss_per_conn: Option<u64>,
    /// Fail when the main rate (deliveries, round trips, handshakes or cycles per second) is below this.
    #[arg(long, value_name = "PER_SECOND")]
    pub min_rate: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct SloResult {
    pub flag: &'static str,
    /// Not given on the command line: messages lost or refused and errors
    /// fail a run unless a flag allows them.
    pub implicit: bool,
    pub limit: f64,
    /// How `limit` and `value` read (the JSON keeps the plain numbers).
    pub unit: Unit,
    /// `None`: the run did not measure it.
    pub value: Option<f64>,
    pub ok: bool,
}

impl Slo {
    /// Checks every flag given; `rate_key` names the scenario's main rate.
    pub fn check(&self, report: &Report, rate_key: &str) -> Vec<SloResult> {
        let micros = |d: Duration| d.as_secs_f64() * 1e6;
        let mut results = Vec::new();
        let mut check = |flag: &'static str, limit: Option<f64>, key: &str, unit: Unit, at_most: bool| {
            if let Some(limit) = limit {
                let value = report.get(key);
                let ok = value.is_some_and(|v| if at_most { v <= limit } else { v >= limit });
                results.push(SloResult { flag, implicit: false, limit, unit, value, ok });
            }
        };
        check("--max-p50", self.max_p50.map(micros), "latency_p50_us", Unit::Micros, true);
        check("--max-p99", self.max_p99.map(micros), "latency_p99_us", Unit::Micros, true);
        check("--max-p999", self.max_p999.map(micros), "latency_p999_us", Unit::Micros, true);
        check("--max-loss", self.max_loss.map(|n| n as f64), "lost", Unit::Count, true);
        check("--max-errors", self.max_errors.map(|n| n as f64), "errors", Unit::Count, true);
        check("--max-refused", self.max_refused.map(|n| n as f64), "refused", Unit::Count, true);
        let drop_time = self.max_drop_time.map(|d| d.as_secs_f64());
        check("--max-drop-time", drop_time, "drop_time_max_s", Unit::Seconds, true);
        let rss = self.max_rss_per_conn.map(|n| n as f64);
        check("--max-rss-per-conn", rss, "server_rss_per_conn_bytes", Unit::Bytes, true);
        check("--min-held", self.min_held.map(|n| n as f64), "held", Unit::Count, false);
        check("--min-rate", self.min_rate, rate_key, Unit::PerSecond, false);
        // What the run measured of these must be 0 unless a flag allows
        // more: a load test that lost or had refused messages, or errors,
        // did not do what was asked, whatever its figures say.
        for (flag, given, key) in [
            ("--max-loss", self.max_loss, "lost"),
            ("--max-errors", self.max_errors, "errors"),
            ("--max-refused", self.max_refused, "refused"),
        ] {
            if given.is_none()
                && let Some(value) = report.get(key)
            {
                let result = SloResult {
                    flag,
                    implicit: true,
                    limit: 0.0,
                    unit: Unit::Count,
                    value: Some(value),
                    ok: value <= 0.0,
                };
                results.push(result);
            }
        }
        results
    }
}

/// The lines that explain the objectives given, and the implicit ones
/// that were missed.
pub fn describe(results: &[SloResult]) -> Vec<String> {
    results
        .iter()
        .filter(|r| !r.implicit || !r.ok)
        .map(|r| match r.value {
            Some(value) if r.implicit => format!(
                "{} {} (MISSED: {} allows some)",
                r.flag.trim_start_matches("--max-").replace("loss", "lost"),
                format_value(value, r.unit),
                r.flag
            ),
            Some(value) => format!(
                "{} {}: measured {} ({})",
                r.flag,
                format_value(r.limit, r.unit),
                format_value(value, r.unit),
                if r.ok { "ok" } else { "MISSED" }
            ),
            None => format!("{} {}: not measured by this scenario (MISSED)", r.flag, format_value(r.limit, r.unit)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_well() {
        assert_eq!(format_value(1_234_567.0, Unit::PerSecond), "1,234,567/s");
        assert_eq!(format_value(0.0, Unit::Count), "0");
        assert_eq!(format_value(1500.0, Unit::Micros), "1.50 ms");
        assert_eq!(format_value(87.0, Unit::Micros), "87 µs");
        assert_eq!(format_value(9.5 * 1024.0, Unit::Bytes), "9.5 KiB");
    }

    #[test]
    fn slos_pass_fail_and_unmeasured() {
        let mut report = Report::new("test");
        report.add("latency_p99_us", "latency p99", 4000.0, Unit::Micros);
        report.count("lost", "lost", 2);
        let slo =
            Slo { max_p99: Some(Duration::from_millis(5)), max_loss: Some(0), min_held: Some(1), ..Default::default() };
        let results = slo.check(&report, "rate");
        assert_eq!(results.iter().map(|r| r.ok).collect::<Vec<_>>(), vec![true, false, false]);
        let lines = describe(&results);
        assert_eq!(lines[0], "--max-p99 5.00 ms: measured 4.00 ms (ok)", "{lines:?}");
        assert_eq!(lines[2], "--min-held 1: not measured by this scenario (MISSED)");
        let doc = report.to_json(&results);
        assert_eq!(doc["passed"], false);
        assert_eq!(doc["results"]["lost"], 2);
        // Without --max-loss, losing messages fails the run too.
        let results = Slo::default().check(&report, "rate");
        assert_eq!(results.len(), 1);
        assert!(!results[0].ok && results[0].implicit);
        assert_eq!(describe(&results), ["lost 2 (MISSED: --max-loss allows some)"]);
        report.count("refused", "refused", 0);
        assert_eq!(Slo::default().check(&report, "rate").len(), 2, "refused 0 passes, and is not printed");
        assert_eq!(describe(&Slo::default().check(&report, "rate")).len(), 1);
    }
}
