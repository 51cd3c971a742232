//! The outbox: what the hub hands a session, and the part of a session
//! that lives outside its actor.
//!
//! A [`SessionHandle`] is shared by the session actor, the room registry
//! (which queues frames for the session) and the watchdog (which reads when
//! the client was last heard and closes the session). None of them waits on
//! the actor, because a client that stops reading freezes the actor (see
//! `socket`): the outbound queue is bounded here, the liveness clock is
//! an atomic, and closing works through the socket when the actor cannot run.
//!
//! The queue's bounds (`limits.outbound_bytes`, `limits.outbound_queue`)
//! decide who is a slow consumer:
//! - bytes are a hard bound on memory: a frame that would take the queue
//!   past it is refused, unless the queue is empty (one frame larger than
//!   the bound may wait alone), and the client is closed 1013;
//! - frames mean "not reading": more than `outbound_queue` may wait while
//!   the session keeps taking them (a burst its own requests caused, say),
//!   but once they have waited a whole stall period with nothing taken, the
//!   socket is taking no more and the client is closed 1013.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;
use futures_core::Stream;
use futures_util::task::AtomicWaker;

pub mod socket;

use crate::auth::Policy;
use crate::metrics::Metrics;
use crate::protocol::{SessionId, close};
use socket::ConnSocket;

/// Milliseconds on a monotonic clock that starts with the process.
pub fn monotonic_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// [`monotonic_ms`] as of the watchdog's last sweep: one atomic load, for
/// the registry's hot path, where reading the clock per frame would cost
/// more than the rest of a push.
static COARSE_MS: AtomicU64 = AtomicU64::new(0);

pub fn coarse_ms() -> u64 {
    COARSE_MS.load(Ordering::Relaxed)
}

/// Moves the coarse clock on (the watchdog does, every sweep).
pub fn tick_coarse_clock() -> u64 {
    let now = monotonic_ms();
    COARSE_MS.store(now, Ordering::Relaxed);
    now
}

/// A data frame waiting to be written to the client. Cloning shares the
/// bytes: a broadcast is one allocation whatever the number of recipients.
#[derive(Debug, Clone)]
pub enum OutFrame {
    Text(ByteString),
    Binary(Bytes),
}

impl OutFrame {
    pub fn len(&self) -> usize {
        match self {
            OutFrame::Text(text) => text.len(),
            OutFrame::Binary(bytes) => bytes.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What one waiting frame counts against `outbound_bytes`: its bytes
    /// and its place in the queue, so that empty frames are not free.
    pub fn cost(&self) -> usize {
        self.len() + FRAME_OVERHEAD
    }
}

/// The memory a queued frame takes besides its bytes.
pub const FRAME_OVERHEAD: usize = std::mem::size_of::<OutFrame>();

/// A piece of a frame too large for one batch: frames larger than the
/// batch go out as fragments of it (RFC 6455 §5.4), one per batch, so what
/// a connection holds in its write buffers stays within a batch whatever
/// the size of its messages. The pieces are slices of the queued frame,
/// not copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fragment {
    pub text: bool,
    pub data: Bytes,
    pub first: bool,
    pub last: bool,
}

/// What [`SessionHandle::push`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    Queued,
    /// The client is too slow and must be closed (1013); the frame was
    /// not queued.
    Full,
    /// The session is closing; the frame was dropped.
    Closing,
}

/// The bounds of one session's outbound queue.
#[derive(Debug, Clone, Copy)]
pub struct OutboundLimits {
    /// `limits.outbound_queue`: frames that may wait while nothing is taken.
    pub frames: usize,
    /// `limits.outbound_bytes`: the hard bound, in [`OutFrame::cost`].
    pub bytes: usize,
    /// How long frames over `frames` may wait with nothing taken.
    pub stall_ms: u64,
}

/// A request to close the session with `code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseRequest {
    pub code: u16,
    /// The client is dead, too slow or broke the protocol: what waits for
    /// it is dropped, and the watchdog ends the session if the client has
    /// not answered the close soon after. Without it (a drain, 1001) the
    /// queue is delivered first and the client has until shutdown_timeout.
    pub deadline: bool,
    /// Authentication's reason for a 1008.
    pub policy: Option<Policy>,
    /// A publish of the session got no answer that can be trusted (1011):
    /// the client must find out itself, as after a dropped connection.
    pub outcome_unknown: bool,
}

impl CloseRequest {
    /// A close for cause: dead, too slow, broken protocol.
    pub fn cause(code: u16) -> Self {
        CloseRequest { code, deadline: true, policy: None, outcome_unknown: false }
    }

    /// The drain: what is queued is delivered first.
    pub fn drain(code: u16) -> Self {
        CloseRequest { code, deadline: false, policy: None, outcome_unknown: false }
    }

    /// Authentication refuses the session (1008): the endpoint says why
    /// (`Endpoint::farewell`) right before the close frame.
    pub fn policy(policy: Policy) -> Self {
        CloseRequest { code: close::POLICY, deadline: true, policy: Some(policy), outcome_unknown: false }
    }

    /// Whether one of the session's publishes happened cannot be known
    /// (1011, after the replies before it).
    pub fn outcome_unknown() -> Self {
        CloseRequest { code: close::INTERNAL_ERROR, deadline: false, policy: None, outcome_unknown: true }
    }

    fn encode(self) -> u32 {
        let policy = self.policy.map_or(0, |p| p as u32 + 1) << POLICY_SHIFT;
        let flags = if self.deadline { DEADLINE_FLAG } else { 0 } | if self.outcome_unknown { UNKNOWN_FLAG } else { 0 };
        u32::from(self.code) | flags | policy
    }

    fn decode(encoded: u32) -> Self {
        let policy = match (encoded >> POLICY_SHIFT) & 0b11 {
            1 => Some(Policy::Unauthorized),
            2 => Some(Policy::TokenExpired),
            3 => Some(Policy::TooManyConnections),
            _ => None,
        };
        CloseRequest {
            code: (encoded & 0xFFFF) as u16,
            deadline: encoded & DEADLINE_FLAG != 0,
            policy,
            outcome_unknown: encoded & UNKNOWN_FLAG != 0,
        }
    }
}

const DEADLINE_FLAG: u32 = 1 << 16;
const POLICY_SHIFT: u32 = 17;
const UNKNOWN_FLAG: u32 = 1 << 19;

/// Requests a session may have handed to the registry and not yet seen
/// handled; past this its input waits (see [`InFlight`]).
pub const INFLIGHT_BYTES: usize = 64 * 1024;

struct Queue {
    frames: VecDeque<OutFrame>,
    /// Total cost of `frames`, less `front_sent`.
    bytes: usize,
    /// Bytes of the front frame already taken as fragments.
    front_sent: usize,
    /// Coarse time since when the frames at the front have waited with
    /// nothing taken.
    waiting_since_ms: u64,
    waker: Option<Waker>,
}

struct Shared {
    id: SessionId,
    limits: OutboundLimits,
    queue: Mutex<Queue>,
    last_heard_ms: AtomicU64,
    /// When the watchdog last asked for a ping.
    last_ping_ms: AtomicU64,
    ping_due: AtomicBool,
    /// 0, or a close code with `DEADLINE_FLAG`.
    close: AtomicU32,
    close_requested_ms: AtomicU64,
    /// The watchdog asks the actor to stop: its client did not answer the
    /// close in time.
    stop_due: AtomicBool,
    ended: AtomicBool,
    socket: Mutex<Option<ConnSocket>>,
    /// Bytes of requests on their way to the registry.
    inflight: AtomicUsize,
    /// When the session's token expires, on the [`monotonic_ms`] clock; 0
    /// for never.
    expires_ms: AtomicU64,
    /// The session's input, waiting for `inflight` to go down.
    input_waker: AtomicWaker,
}

impl Queue {
    /// The next at most `budget` bytes of the front frame.
    fn take_fragment(&mut self, budget: usize) -> Option<Fragment> {
        let frame = self.frames.front()?;
        let (text, bytes) = match frame {
            OutFrame::Text(text) => (true, text.as_bytes()),
            OutFrame::Binary(bytes) => (false, bytes),
        };
        // `budget` may be "everything" (usize::MAX, a drain): saturate.
        let start = self.front_sent.min(bytes.len());
        let end = bytes.len().min(start.saturating_add(budget.max(1)));
        let fragment = Fragment { text, data: bytes.slice(start..end), first: start == 0, last: end == bytes.len() };
        self.bytes = self.bytes.saturating_sub(end - start);
        self.front_sent = end;
        if fragment.last {
            self.frames.pop_front();
            self.bytes = self.bytes.saturating_sub(FRAME_OVERHEAD);
            self.front_sent = 0;
        }
        Some(fragment)
    }
}

#[derive(Clone)]
pub struct SessionHandle(Arc<Shared>);

impl std::fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionHandle({})", self.0.id)
    }
}

impl SessionHandle {
    pub fn new(id: SessionId, limits: OutboundLimits, socket: Option<ConnSocket>) -> Self {
        let now = monotonic_ms();
        SessionHandle(Arc::new(Shared {
            id,
            limits,
            queue: Mutex::new(Queue {
                frames: VecDeque::new(),
                bytes: 0,
                front_sent: 0,
                waiting_since_ms: 0,
                waker: None,
            }),
            last_heard_ms: AtomicU64::new(now),
            last_ping_ms: AtomicU64::new(now),
            ping_due: AtomicBool::new(false),
            close: AtomicU32::new(0),
            close_requested_ms: AtomicU64::new(0),
            stop_due: AtomicBool::new(false),
            ended: AtomicBool::new(false),
            socket: Mutex::new(socket),
            inflight: AtomicUsize::new(0),
            expires_ms: AtomicU64::new(0),
            input_waker: AtomicWaker::new(),
        }))
    }

    pub fn id(&self) -> SessionId {
        self.0.id
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding this lock cannot leave the queue half-updated
        // (push and take are single operations), so a poisoned lock is usable.
        self.0.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues a frame for the client without ever waiting.
    pub fn push(&self, frame: OutFrame) -> Push {
        if self.close_request().is_some() {
            return Push::Closing;
        }
        let limits = &self.0.limits;
        let cost = frame.cost();
        let waker = {
            let mut queue = self.queue();
            if queue.frames.is_empty() {
                queue.waiting_since_ms = coarse_ms();
            } else {
                let over_bytes = queue.bytes.saturating_add(cost) > limits.bytes;
                let stalled = queue.frames.len() >= limits.frames
                    && coarse_ms().saturating_sub(queue.waiting_since_ms) >= limits.stall_ms;
                if over_bytes || stalled {
                    return Push::Full;
                }
            }
            queue.bytes += cost;
            queue.frames.push_back(frame);
            queue.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Push::Queued
    }

    /// Takes the next batch of at most `budget` bytes: whole frames into
    /// `out` (which the caller keeps empty between calls), or, when the
    /// next frame alone is larger, the next fragment of it. Bounding each
    /// batch keeps what one client has encoded but not yet sent small; the
    /// rest stays queued, where it counts toward the bounds.
    pub fn take_frames(&self, out: &mut VecDeque<OutFrame>, budget: usize) -> Option<Fragment> {
        let mut queue = self.queue();
        if queue.front_sent == 0 && queue.bytes <= budget {
            // Everything fits: trade the whole queue for the empty one.
            std::mem::swap(&mut queue.frames, out);
            queue.bytes = 0;
            // A burst can leave a large buffer behind; keep a small one.
            if queue.frames.capacity() > 4096 {
                queue.frames = VecDeque::new();
            }
            return None;
        }
        queue.waiting_since_ms = coarse_ms();
        if queue.front_sent == 0 {
            let mut taken: usize = 0;
            while let Some(frame) = queue.frames.front() {
                // A first frame no longer than the budget goes whole; only a
                // longer one is fragmented (so a first fragment is never
                // also the last).
                let fits =
                    if taken == 0 { frame.len() <= budget } else { taken.saturating_add(frame.cost()) <= budget };
                if !fits {
                    break;
                }
                taken += frame.cost();
                if let Some(frame) = queue.frames.pop_front() {
                    out.push_back(frame);
                }
            }
            queue.bytes = queue.bytes.saturating_sub(taken);
            if taken > 0 {
                return None;
            }
        }
        queue.take_fragment(budget)
    }

    /// Frames waiting for the client.
    pub fn queued(&self) -> usize {
        self.queue().frames.len()
    }

    fn discard_queued(&self) {
        let mut queue = self.queue();
        queue.frames = VecDeque::new();
        queue.bytes = 0;
        queue.front_sent = 0;
    }

    /// Records that something arrived from the client.
    pub fn heard(&self) {
        self.0.last_heard_ms.store(monotonic_ms(), Ordering::Relaxed);
    }

    pub fn last_heard_ms(&self) -> u64 {
        self.0.last_heard_ms.load(Ordering::Relaxed)
    }

    fn wake_actor(&self) {
        let waker = self.queue().waker.take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Asks the session to ping its client if `interval_ms` passed since
    /// the last time (the watchdog's sweep calls this; the session itself
    /// keeps no timer).
    pub fn ping_if_due(&self, now_ms: u64, interval_ms: u64) {
        if now_ms.saturating_sub(self.0.last_ping_ms.load(Ordering::Relaxed)) < interval_ms {
            return;
        }
        self.0.last_ping_ms.store(now_ms, Ordering::Relaxed);
        self.0.ping_due.store(true, Ordering::Release);
        self.wake_actor();
    }

    /// Sets when the session's token expires, `in_ms` from now (`auth`
    /// moves it); the watchdog closes the session then.
    pub fn expire_in(&self, in_ms: u64) {
        self.0.expires_ms.store(monotonic_ms().saturating_add(in_ms).max(1), Ordering::Relaxed);
    }

    /// Whether the session's token has expired at `now_ms`.
    pub fn expired(&self, now_ms: u64) -> bool {
        let at = self.0.expires_ms.load(Ordering::Relaxed);
        at != 0 && now_ms >= at
    }

    /// Asks the session to close with `code`. Only the first request counts;
    /// returns whether this was it.
    pub fn request_close(&self, request: CloseRequest) -> bool {
        let encoded = request.encode();
        let first = self.0.close.compare_exchange(0, encoded, Ordering::AcqRel, Ordering::Acquire).is_ok();
        if first {
            self.0.close_requested_ms.store(monotonic_ms(), Ordering::Release);
            if request.deadline {
                // What the client has not taken is lost anyway.
                self.discard_queued();
            }
            self.wake_actor();
        }
        first
    }

    /// Closes a client that is too slow (1013), counting it once.
    pub fn close_slow(&self, metrics: &Metrics) {
        if self.request_close(CloseRequest::cause(close::TRY_AGAIN_LATER)) {
            Metrics::inc(&metrics.slow_consumer_closes);
            log::info!("session {}: outbound queue full while it did not read, closing 1013", self.id());
        }
    }

    pub fn close_request(&self) -> Option<CloseRequest> {
        match self.0.close.load(Ordering::Acquire) {
            0 => None,
            encoded => Some(CloseRequest::decode(encoded)),
        }
    }

    pub fn close_requested_ms(&self) -> u64 {
        self.0.close_requested_ms.load(Ordering::Acquire)
    }

    /// Asks the actor to stop now (its close went unanswered). Returns
    /// whether this was the first time.
    pub fn request_stop(&self) -> bool {
        let first = !self.0.stop_due.swap(true, Ordering::AcqRel);
        if first {
            self.wake_actor();
        }
        first
    }

    /// Called when the session actor has stopped, while the connection's
    /// socket is still open (see `socket`): the connection closes once
    /// what is buffered is sent, and within `deadline` even if the client
    /// does not read. The socket is forgotten, so nobody touches it again.
    pub fn set_ended(&self, deadline: Duration) {
        let mut socket = self.socket();
        self.0.ended.store(true, Ordering::Release);
        if let Some(socket) = socket.take() {
            socket.finish(deadline);
        }
    }

    pub fn is_ended(&self) -> bool {
        self.0.ended.load(Ordering::Acquire)
    }

    fn socket(&self) -> MutexGuard<'_, Option<ConnSocket>> {
        self.0.socket.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Aborts the TCP connection of a session that is still running (its
    /// actor may be frozen). Returns whether there was a socket to cut.
    pub fn cut(&self) -> bool {
        match self.socket().take() {
            Some(socket) => {
                socket.abort();
                true
            }
            None => false,
        }
    }

    /// Accounts for a request of `bytes` handed to the registry; the
    /// ticket gives them back when the registry is done with it.
    pub fn in_flight(&self, bytes: usize) -> InFlight {
        self.0.inflight.fetch_add(bytes, Ordering::AcqRel);
        InFlight { handle: self.clone(), bytes }
    }

    /// Whether the session may read its next request: Pending (and woken
    /// later) while too much is on its way to the registry.
    pub fn poll_input_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.inflight.load(Ordering::Acquire) <= INFLIGHT_BYTES {
            return Poll::Ready(());
        }
        self.0.input_waker.register(cx.waker());
        if self.0.inflight.load(Ordering::Acquire) <= INFLIGHT_BYTES { Poll::Ready(()) } else { Poll::Pending }
    }

    /// The stream through which the session actor learns of queued frames
    /// and close requests.
    pub fn signals(&self) -> Signals {
        Signals { handle: self.clone(), close_reported: false, took_frames: false }
    }
}

/// A request on its way to the registry; dropping it (when the registry
/// has handled the request, or dropped it) releases its bytes.
pub struct InFlight {
    handle: SessionHandle,
    bytes: usize,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let shared = &self.handle.0;
        let before = shared.inflight.fetch_sub(self.bytes, Ordering::AcqRel);
        if before > INFLIGHT_BYTES && before - self.bytes <= INFLIGHT_BYTES {
            shared.input_waker.wake();
        }
    }
}

/// What wakes a session actor.
#[derive(Debug)]
pub enum Signal {
    /// Frames are queued: take them with [`SessionHandle::take_frames`].
    Frames,
    Close(CloseRequest),
    /// Time to ping the client.
    Ping,
    /// The client did not answer the close in time: stop.
    Stop,
}

/// Yields [`Signal`]s; never ends on its own.
pub struct Signals {
    handle: SessionHandle,
    close_reported: bool,
    /// `Frames` was yielded in this poll of the actor.
    took_frames: bool,
}

impl Stream for Signals {
    type Item = Signal;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Signal>> {
        let this = self.get_mut();
        if !this.close_reported
            && let Some(request) = this.handle.close_request()
        {
            this.close_reported = true;
            return Poll::Ready(Some(Signal::Close(request)));
        }
        if this.handle.0.stop_due.load(Ordering::Acquire) {
            return Poll::Ready(Some(Signal::Stop));
        }
        if this.handle.0.ping_due.swap(false, Ordering::AcqRel) {
            return Poll::Ready(Some(Signal::Ping));
        }
        let mut queue = this.handle.queue();
        if this.took_frames {
            // One batch per poll of the actor, which is one poll of the
            // connection's response body: actix polls it again only once
            // its write buffer has room, so what a session has encoded but
            // not sent stays within one batch. (actix would otherwise poll
            // this stream up to 16 times in a row.)
            this.took_frames = false;
            if !queue.frames.is_empty() {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        } else if !queue.frames.is_empty() {
            this.took_frames = true;
            return Poll::Ready(Some(Signal::Frames));
        }
        match &queue.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => queue.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> OutFrame {
        OutFrame::Text(ByteString::from(s.to_string()))
    }

    fn handle(frames: usize, bytes: usize) -> SessionHandle {
        SessionHandle::new(SessionId(1), OutboundLimits { frames, bytes, stall_ms: 1000 }, None)
    }

    #[test]
    fn bytes_are_a_hard_bound_but_one_frame_may_wait_alone() {
        let h = handle(100, 3 * FRAME_OVERHEAD + 10);
        assert_eq!(h.push(text(&"x".repeat(1000))), Push::Queued, "alone, larger than the bound");
        assert_eq!(h.push(text("a")), Push::Full);
        let mut out = VecDeque::new();
        assert_eq!(h.take_frames(&mut out, usize::MAX), None);
        for _ in 0..3 {
            assert_eq!(h.push(text("abc")), Push::Queued);
        }
        assert_eq!(h.push(text("")), Push::Full, "empty frames are not free");
    }

    #[test]
    fn frames_over_the_bound_may_wait_until_they_stall() {
        let h = handle(2, usize::MAX);
        let start = tick_coarse_clock();
        for _ in 0..5 {
            assert_eq!(h.push(text("a")), Push::Queued, "a burst beyond outbound_queue is not slowness");
        }
        COARSE_MS.store(start + 999, Ordering::Relaxed);
        assert_eq!(h.push(text("b")), Push::Queued);
        COARSE_MS.store(start + 1000, Ordering::Relaxed);
        assert_eq!(h.push(text("c")), Push::Full, "nothing taken for the stall period");
        // Taking frames restarts the clock.
        let mut out = VecDeque::new();
        h.take_frames(&mut out, 2 * FRAME_OVERHEAD + 2);
        assert_eq!(out.len(), 2);
        assert_eq!(h.push(text("d")), Push::Queued);
    }

    #[test]
    fn batches_respect_the_budget_but_take_at_least_one() {
        let h = handle(10, usize::MAX);
        for s in ["aaaa", "bbbb", "cccc"] {
            h.push(text(s));
        }
        let per_frame = text("aaaa").cost();
        let mut out = VecDeque::new();
        h.take_frames(&mut out, 2 * per_frame + 1);
        assert_eq!(out.len(), 2);
        out.clear();
        h.take_frames(&mut out, per_frame);
        assert_eq!(out.len(), 1);
        assert_eq!(h.queued(), 0);
        out.clear();
        for s in ["aa", "bb"] {
            h.push(text(s));
        }
        h.take_frames(&mut out, 1000);
        assert_eq!(out.len(), 2, "all at once when they fit");
        h.push(text("cc"));
        out.clear();
        h.take_frames(&mut out, per_frame);
        assert_eq!(out.len(), 1, "the byte count was reset by the swap");
    }

    #[test]
    fn frames_larger_than_a_batch_go_out_in_fragments() {
        let h = handle(10, usize::MAX);
        h.push(text("small"));
        h.push(text("0123456789"));
        h.push(OutFrame::Binary(Bytes::from_static(b"bin")));
        let mut out = VecDeque::new();
        assert_eq!(h.take_frames(&mut out, text("small").cost() + 4), None);
        assert_eq!(out.len(), 1, "whole frames first, never a fragment after them");
        out.clear();
        let piece = |data: &'static str, first, last| {
            Some(Fragment { text: true, data: Bytes::from_static(data.as_bytes()), first, last })
        };
        assert_eq!(h.take_frames(&mut out, 4), piece("0123", true, false));
        assert_eq!(h.take_frames(&mut out, 4), piece("4567", false, false));
        assert_eq!(h.take_frames(&mut out, 100), piece("89", false, true), "the rest of it, whatever the budget");
        assert!(out.is_empty());
        assert_eq!(h.take_frames(&mut out, 100), None);
        assert_eq!(out.len(), 1, "then whole frames again");
        assert_eq!(h.0.queue.lock().unwrap().bytes, 0);
        out.clear();
        h.push(text("0123"));
        assert_eq!(h.take_frames(&mut out, 4), None, "exactly the budget goes whole");
        assert_eq!(out.len(), 1);
        out.clear();
        // A drain (budget: everything) while a frame is half sent.
        h.push(text("0123456789"));
        assert_eq!(h.take_frames(&mut out, 4), piece("0123", true, false));
        assert_eq!(h.take_frames(&mut out, usize::MAX), piece("456789", false, true));
        assert_eq!(h.0.queue.lock().unwrap().bytes, 0);
    }

    #[test]
    fn first_close_request_wins_and_drops_queue_with_a_deadline() {
        let h = handle(10, usize::MAX);
        h.push(text("a"));
        assert!(h.request_close(CloseRequest::cause(1013)));
        assert!(!h.request_close(CloseRequest::drain(1001)));
        assert_eq!(h.close_request().map(|r| r.code), Some(1013));
        for request in [
            CloseRequest::policy(Policy::TokenExpired),
            CloseRequest::policy(Policy::Unauthorized),
            CloseRequest::policy(Policy::TooManyConnections),
            CloseRequest::drain(1001),
            CloseRequest::cause(1011),
            CloseRequest::outcome_unknown(),
        ] {
            assert_eq!(CloseRequest::decode(request.encode()), request);
        }
        assert_eq!(h.queued(), 0);
        assert_eq!(h.push(text("b")), Push::Closing);
    }

    #[test]
    fn signals_yield_one_batch_per_poll_of_the_actor() {
        let h = handle(10, usize::MAX);
        h.push(text("a"));
        let mut signals = h.signals();
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut poll = || Pin::new(&mut signals).poll_next(&mut cx);
        assert!(matches!(poll(), Poll::Ready(Some(Signal::Frames))));
        // The actor took some, not all: the same poll of the actor (actix
        // polls a stream up to 16 times) gets nothing more.
        assert!(poll().is_pending());
        // The next poll of the actor gets the next batch.
        assert!(matches!(poll(), Poll::Ready(Some(Signal::Frames))));
    }

    #[test]
    fn in_flight_bytes_come_back_when_the_ticket_drops() {
        let h = handle(10, usize::MAX);
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let small = h.in_flight(INFLIGHT_BYTES);
        assert!(h.poll_input_ready(&mut cx).is_ready(), "up to the bound");
        let big = h.in_flight(1);
        assert!(h.poll_input_ready(&mut cx).is_pending());
        drop(big);
        assert!(h.poll_input_ready(&mut cx).is_ready());
        drop(small);
        assert_eq!(h.0.inflight.load(Ordering::Relaxed), 0);
    }
}
