//! Watching the run: CPU time of the load tester and of the server, the
//! server's memory, the live progress line, and whether the server dropped a
//! connection we do not read from.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use super::report::{Report, Unit};

/// procfs reports CPU time in USER_HZ ticks, 100 a second on Linux.
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU seconds (user + system) used so far by a process, from /proc.
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15; after the name, field 3 is first.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SECOND)
}

/// The counters of a roomcast server's `/metrics`, by name, or `None` when
/// the server has none (another server, or a `wss:` URL, which this plain
/// request does not speak).
pub async fn server_counters(url: &url::Url) -> Option<std::collections::HashMap<String, u64>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if url.scheme() != "ws" {
        return None;
    }
    let host = url.host_str()?;
    let port = url.port_or_known_default()?;
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect((host, port)).await.ok()?;
        let authority = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
        let request = format!("GET /metrics HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await.ok()?;
        Some(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(5), fetch).await.ok()??;
    let (head, body) = response.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    let counters: std::collections::HashMap<String, u64> = body
        .lines()
        .filter(|line| line.starts_with("roomcast_"))
        .filter_map(|line| {
            let (name, value) = line.split_once(' ')?;
            Some((name.to_string(), value.trim().parse().ok()?))
        })
        .collect();
    (!counters.is_empty()).then_some(counters)
}

/// Resident memory of a process in bytes, from /proc.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 =
        status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

/// The kernel's TCP state of a socket (`tcpi_state`): 1 is established;
/// anything else after that means the connection has ended (FIN or reset).
/// This sees the server drop a client that does not read, without reading.
pub fn tcp_state(fd: BorrowedFd<'_>) -> Option<u8> {
    let mut info = std::mem::MaybeUninit::<libc::tcp_info>::zeroed();
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` is a writable buffer of `len` bytes, and `fd` is an
    // open socket for the whole call (it is borrowed).
    let rc = unsafe {
        libc::getsockopt(fd.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_INFO, info.as_mut_ptr().cast(), &mut len)
    };
    if rc != 0 {
        return None;
    }
    // SAFETY: getsockopt succeeded and wrote the struct (it started zeroed).
    Some(unsafe { info.assume_init() }.tcpi_state)
}

pub const TCP_ESTABLISHED: u8 = 1;

/// CPU used by the load tester and the server between `start` and `finish`.
pub struct CpuWatch {
    server_pid: Option<u32>,
    started: Instant,
    own: Option<f64>,
    server: Option<f64>,
}

impl CpuWatch {
    pub fn start(server_pid: Option<u32>) -> Self {
        CpuWatch {
            server_pid,
            started: Instant::now(),
            own: cpu_seconds(None),
            server: server_pid.and_then(|p| cpu_seconds(Some(p))),
        }
    }

    /// Adds elapsed time and both CPU figures; with the server's CPU known,
    /// also `work` per server CPU-second under `work_key`.
    pub fn finish(&self, report: &mut Report, work: u64, work_key: &str, work_label: &str) {
        let elapsed = self.started.elapsed().as_secs_f64();
        report.add("elapsed_s", "measured for", elapsed, Unit::Seconds);
        if let (Some(before), Some(after)) = (self.own, cpu_seconds(None)) {
            let own = after - before;
            report.add("loadgen_cpu_s", "load tester CPU", own, Unit::Seconds);
            report.add("loadgen_cpu_pct", "load tester CPU %", 100.0 * own / elapsed.max(1e-9), Unit::Count);
        }
        let server = self.server_pid.and_then(|p| cpu_seconds(Some(p))).zip(self.server).map(|(a, b)| a - b);
        match server {
            Some(cpu) => {
                report.add("server_cpu_s", "server CPU", cpu, Unit::Seconds);
                report.add("server_cpu_pct", "server CPU %", 100.0 * cpu / elapsed.max(1e-9), Unit::Count);
                if cpu > 0.0 {
                    report.add(work_key, work_label, work as f64 / cpu, Unit::PerSecond);
                }
            }
            None if self.server_pid.is_some() => report.notes.push("the server's CPU could not be read".into()),
            None => {}
        }
    }
}

/// The live progress line on standard error (hidden when it is not a
/// terminal or with --quiet), redrawn four times a second.
pub struct Progress {
    bar: ProgressBar,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    /// `line` is called with the time since the last call.
    pub fn start(enabled: bool, mut line: impl FnMut(Duration) -> String + Send + 'static) -> Progress {
        let bar = if enabled { ProgressBar::new_spinner() } else { ProgressBar::hidden() };
        if let Ok(style) = ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}") {
            bar.set_style(style);
        }
        let shown = bar.clone();
        let ticker = enabled.then(|| {
            tokio::spawn(async move {
                let mut last = Instant::now();
                let mut interval = tokio::time::interval(Duration::from_millis(250));
                loop {
                    interval.tick().await;
                    let now = Instant::now();
                    shown.set_message(line(now - last));
                    shown.tick();
                    last = now;
                }
            })
        });
        Progress { bar, ticker }
    }

    pub fn finish(self) {
        if let Some(ticker) = self.ticker {
            ticker.abort();
        }
        self.bar.finish_and_clear();
    }
}

/// Turns a counter into a rate between calls.
#[derive(Default)]
pub struct Rate {
    last: u64,
}

impl Rate {
    pub fn per_second(&mut self, now: u64, elapsed: Duration) -> f64 {
        let delta = now.saturating_sub(self.last);
        self.last = now;
        delta as f64 / elapsed.as_secs_f64().max(1e-9)
    }
}

/// A rate for the progress line: 1234 -> "1.2k".
pub fn short(value: f64) -> String {
    match value {
        v if v >= 1e6 => format!("{:.2}M", v / 1e6),
        v if v >= 1e3 => format!("{:.1}k", v / 1e3),
        v => format!("{v:.0}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_process() {
        assert!(cpu_seconds(None).is_some());
        let rss = rss_bytes(std::process::id()).unwrap();
        assert!(rss > 1024 * 1024, "{rss}");
    }

    #[test]
    fn sees_an_open_socket_as_established() {
        use std::os::fd::AsFd;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        assert_eq!(tcp_state(client.as_fd()), Some(TCP_ESTABLISHED));
        drop(server);
        // The FIN arrives promptly on loopback.
        let deadline = Instant::now() + Duration::from_secs(5);
        while tcp_state(client.as_fd()) == Some(TCP_ESTABLISHED) {
            assert!(Instant::now() < deadline, "still established");
            std::thread::yield_now();
        }
    }
}
