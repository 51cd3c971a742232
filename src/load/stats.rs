//! Measuring without getting in the way: one clock, and latencies gathered
//! into one HDR histogram. Each connection task keeps a small batch and
//! takes the histogram's lock once per 1024 samples, so a thousand
//! connections neither contend nor each carry a histogram of their own.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use hdrhistogram::Histogram;

use super::report::{Report, Unit};

/// Nanoseconds since the load tester started: what message bodies carry.
pub fn now_ns() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

pub struct Latency {
    histogram: Mutex<Histogram<u64>>,
}

const BATCH: usize = 1024;

impl Latency {
    pub fn new() -> Arc<Self> {
        // 1 µs to 10 minutes, three significant digits.
        let histogram =
            Histogram::new_with_bounds(1, 600_000_000, 3).unwrap_or_else(|_| Histogram::new(3).expect("3 digits"));
        Arc::new(Latency { histogram: Mutex::new(histogram) })
    }

    pub fn recorder(self: &Arc<Self>) -> Recorder {
        Recorder { shared: self.clone(), batch: Vec::new() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Histogram<u64>> {
        self.histogram.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn count(&self) -> u64 {
        self.lock().len()
    }

    /// Adds `<key>_p50_us` ... `<key>_max_us` and the mean to `report`.
    pub fn report(&self, report: &mut Report, key: &str, label: &str) {
        let histogram = self.lock();
        if histogram.is_empty() {
            report.notes.push(format!("no {label} samples"));
            return;
        }
        for (suffix, name, quantile) in
            [("p50", "p50", 0.5), ("p90", "p90", 0.9), ("p99", "p99", 0.99), ("p999", "p99.9", 0.999)]
        {
            let value = histogram.value_at_quantile(quantile) as f64;
            report.add(&format!("{key}_{suffix}_us"), &format!("{label} {name}"), value, Unit::Micros);
        }
        report.add(&format!("{key}_max_us"), &format!("{label} max"), histogram.max() as f64, Unit::Micros);
        report.add(&format!("{key}_mean_us"), &format!("{label} mean"), histogram.mean(), Unit::Micros);
    }
}

/// One task's handle on a [`Latency`]; flushes when dropped.
pub struct Recorder {
    shared: Arc<Latency>,
    batch: Vec<u64>,
}

impl Recorder {
    pub fn record_micros(&mut self, micros: u64) {
        if self.batch.capacity() == 0 {
            self.batch.reserve_exact(BATCH);
        }
        self.batch.push(micros.max(1));
        if self.batch.len() == BATCH {
            self.flush();
        }
    }

    /// Records the time since `sent_ns` (a [`now_ns`] value).
    pub fn record_since(&mut self, sent_ns: u64) {
        self.record_micros(now_ns().saturating_sub(sent_ns) / 1000);
    }

    pub fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let mut histogram = self.shared.lock();
        let high = histogram.high();
        for &value in &self.batch {
            // Beyond 10 minutes: clamp rather than lose the sample.
            let _ = histogram.record(value.min(high));
        }
        self.batch.clear();
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorders_batch_into_one_histogram() {
        let latency = Latency::new();
        let mut a = latency.recorder();
        let mut b = latency.recorder();
        for i in 1..=1500 {
            a.record_micros(i);
        }
        b.record_micros(100);
        assert_eq!(latency.count(), 1024, "one full batch so far");
        drop(a);
        drop(b);
        assert_eq!(latency.count(), 1501);
        let mut report = Report::new("t");
        latency.report(&mut report, "latency", "latency");
        assert!((report.get("latency_p50_us").unwrap() - 750.0).abs() < 5.0);
        assert_eq!(report.get("latency_max_us"), Some(1500.0));
    }
}
