//! The heartbeat watchdog: closes sessions whose clients went silent, and
//! cuts the TCP connection of sessions that cannot close themselves.
//!
//! The watchdog has each session ping its client every `heartbeat.interval`
//! (sessions keep no timer of their own), and decides, from outside the
//! actors, who is dead. It has to be
//! outside: a client that stops reading freezes its actor (see
//! `outbox::socket`), and a frozen actor's own timer would never fire.
//!
//! Timing: the sweep runs every `tick` (a quarter of the interval, at most
//! 250 ms), so a silent client is noticed within `timeout + tick`. Its actor
//! then sends close 1011 if it can and waits for the client's close. The
//! same deadline follows every close the server starts for cause (1011,
//! 1013, and protocol errors): if the session is still running half of
//! `grace` (half the interval, at most 1 s) later, it is asked to stop,
//! which closes the connection after the close frame; if it is still
//! running after `grace`, its actor cannot run (the client does not read)
//! and the socket is cut. A session that ended in between has asked the
//! kernel to abort its connection if the client does not read within
//! `grace`. All of it stays within `timeout + interval`.
//!
//! The same sweep closes sessions whose token expired (`auth.md`: 1008
//! after `error` `token_expired`), within a tick of the expiry.
//!
//! Each sweep also moves the coarse clock of `handle` on.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::auth::Policy;
use crate::config::HeartbeatSettings;
use crate::metrics::{AuthFailure, Metrics};
use crate::outbox::{CloseRequest, SessionHandle, tick_coarse_clock};
use crate::protocol::close;

#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub interval: Duration,
    pub timeout: Duration,
    pub tick: Duration,
    pub grace: Duration,
}

impl Timing {
    pub fn new(settings: &HeartbeatSettings) -> Self {
        let tick = (settings.interval / 4).clamp(Duration::from_millis(10), Duration::from_millis(250));
        let grace = (settings.interval / 2).min(Duration::from_secs(1));
        Timing { interval: settings.interval, timeout: settings.timeout, tick, grace }
    }

    /// How long more than `outbound_queue` frames may wait for a client
    /// with nothing taken before it counts as not reading: the grace
    /// period, and at least two ticks of the coarse clock that measures it.
    pub fn stall(&self) -> Duration {
        self.grace.max(self.tick * 2)
    }
}

struct Inner {
    sessions: Mutex<Vec<SessionHandle>>,
    timing: Timing,
    metrics: Arc<Metrics>,
}

/// Shared by every endpoint; the sweep thread ends when the last clone is
/// dropped.
#[derive(Clone)]
pub struct Watchdog(Arc<Inner>);

impl Watchdog {
    pub fn start(settings: &HeartbeatSettings, metrics: Arc<Metrics>) -> Watchdog {
        let inner = Arc::new(Inner { sessions: Mutex::new(Vec::new()), timing: Timing::new(settings), metrics });
        let weak = Arc::downgrade(&inner);
        let spawned =
            std::thread::Builder::new().name("roomcast-watchdog".into()).spawn(move || sweep_until_dropped(weak));
        if let Err(e) = spawned {
            log::warn!("cannot start the heartbeat watchdog thread: {e}");
        }
        Watchdog(inner)
    }

    /// Starts watching a session until it has ended.
    pub fn watch(&self, handle: SessionHandle) {
        self.sessions().push(handle);
    }

    pub fn timing(&self) -> Timing {
        self.0.timing
    }

    /// Asks every session to close with `code`, for the drain on shutdown.
    pub fn close_all(&self, code: u16) {
        for handle in self.sessions().iter() {
            handle.request_close(CloseRequest::drain(code));
        }
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, Vec<SessionHandle>> {
        self.0.sessions.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn sweep_until_dropped(inner: Weak<Inner>) {
    loop {
        let Some(inner) = inner.upgrade() else { return };
        let tick = inner.timing.tick;
        sweep(&inner, tick_coarse_clock());
        drop(inner);
        std::thread::sleep(tick);
    }
}

fn sweep(inner: &Inner, now_ms: u64) {
    let timeout_ms = inner.timing.timeout.as_millis() as u64;
    let interval_ms = inner.timing.interval.as_millis() as u64;
    let grace_ms = inner.timing.grace.as_millis() as u64;
    let mut sessions = inner.sessions.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    sessions.retain(|handle| match handle.close_request() {
        None if handle.is_ended() => false,
        None => {
            if now_ms.saturating_sub(handle.last_heard_ms()) > timeout_ms {
                let request = CloseRequest::cause(close::HEARTBEAT_TIMEOUT);
                if handle.request_close(request) {
                    Metrics::inc(&inner.metrics.heartbeat_timeouts);
                    log::info!("session {}: heartbeat timeout, closing", handle.id());
                }
            } else if handle.expired(now_ms) {
                if handle.request_close(CloseRequest::policy(Policy::TokenExpired)) {
                    inner.metrics.auth_failure(AuthFailure::Expired);
                    log::info!("session {}: token expired, closing 1008", handle.id());
                }
            } else {
                handle.ping_if_due(now_ms, interval_ms);
            }
            true
        }
        Some(_) if handle.is_ended() => false,
        Some(request) if request.deadline => {
            let waited = now_ms.saturating_sub(handle.close_requested_ms());
            if waited >= grace_ms {
                // Its actor cannot run: the client does not read.
                if handle.cut() {
                    log::info!("session {}: cut the connection ({} not delivered)", handle.id(), request.code);
                }
                return false;
            }
            if waited >= grace_ms / 2 {
                handle.request_stop();
            }
            true
        }
        Some(_) => true,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::SessionId;
    use futures_core::Stream;

    fn inner(timeout_ms: u64) -> Inner {
        Inner {
            sessions: Mutex::new(Vec::new()),
            timing: Timing {
                interval: Duration::from_millis(timeout_ms / 3),
                timeout: Duration::from_millis(timeout_ms),
                tick: Duration::from_millis(10),
                grace: Duration::from_millis(100),
            },
            metrics: Arc::new(Metrics::default()),
        }
    }

    fn handle(id: u64) -> SessionHandle {
        let limits = crate::outbox::OutboundLimits { frames: 4, bytes: 1 << 20, stall_ms: 1000 };
        SessionHandle::new(SessionId(id), limits, None)
    }

    #[test]
    fn silent_sessions_are_closed_asked_to_stop_then_forgotten_after_grace() {
        let inner = inner(1000);
        let h = handle(1);
        inner.sessions.lock().unwrap().push(h.clone());
        let heard = h.last_heard_ms();
        sweep(&inner, heard + 1000);
        assert!(h.close_request().is_none(), "exactly the timeout is still alive");
        sweep(&inner, heard + 1001);
        assert_eq!(h.close_request().map(|r| r.code), Some(close::HEARTBEAT_TIMEOUT));
        let closed = h.close_requested_ms();
        let mut signals = h.signals();
        let waker = futures_util::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        let mut next = || loop {
            match std::pin::Pin::new(&mut signals).poll_next(&mut cx) {
                std::task::Poll::Ready(Some(crate::outbox::Signal::Ping)) => {}
                std::task::Poll::Ready(Some(signal)) => return Some(format!("{signal:?}")),
                _ => return None,
            }
        };
        assert!(next().is_some_and(|s| s.starts_with("Close")));
        sweep(&inner, closed + 49);
        assert_eq!(next(), None, "the client has half the grace to answer the close");
        sweep(&inner, closed + 50);
        assert_eq!(next().as_deref(), Some("Stop"));
        sweep(&inner, closed + 99);
        assert_eq!(inner.sessions.lock().unwrap().len(), 1, "kept during the grace");
        sweep(&inner, closed + 100);
        assert!(inner.sessions.lock().unwrap().is_empty());
        assert_eq!(inner.metrics.heartbeat_timeouts.load(std::sync::atomic::Ordering::Relaxed), 1);
    }

    #[test]
    fn expired_tokens_close_with_policy() {
        let inner = inner(1_000_000);
        let h = handle(3);
        inner.sessions.lock().unwrap().push(h.clone());
        h.expire_in(500);
        let start = crate::outbox::monotonic_ms();
        sweep(&inner, start);
        assert!(h.close_request().is_none());
        sweep(&inner, start + 600);
        let request = h.close_request().expect("closed at expiry");
        assert_eq!((request.code, request.policy), (close::POLICY, Some(Policy::TokenExpired)));
        assert_eq!(
            inner.metrics.auth_failures[AuthFailure::Expired as usize].load(std::sync::atomic::Ordering::Relaxed),
            1
        );
    }

    #[test]
    fn ended_sessions_are_dropped() {
        let inner = inner(1000);
        let h = handle(2);
        inner.sessions.lock().unwrap().push(h.clone());
        h.set_ended(Duration::from_secs(1));
        sweep(&inner, h.last_heard_ms());
        assert!(inner.sessions.lock().unwrap().is_empty());
    }

    #[test]
    fn timing_fits_in_timeout_plus_interval() {
        for (interval, timeout) in [(5000, 10000), (300, 900), (40, 100), (20_000, 60_000)] {
            let settings = HeartbeatSettings {
                interval: Duration::from_millis(interval),
                timeout: Duration::from_millis(timeout),
            };
            let t = Timing::new(&settings);
            assert!(t.tick * 2 + t.grace <= settings.interval, "{interval}: {t:?}");
            assert!(t.grace <= Duration::from_secs(1));
            assert!(t.stall() >= t.tick * 2 && t.stall() <= Duration::from_secs(1), "{t:?}");
        }
    }
}
