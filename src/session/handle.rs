//! The part of a session that lives outside its actor.
//!
//! A [`SessionHandle`] is shared by the session actor, the room registry
//! (which queues frames for the session) and the watchdog (which reads when
//! the client was last heard and closes the session). None of them waits on
//! the actor, because a client that stops reading freezes the actor (see
//! `http::conn`): the outbound queue is bounded here, the liveness clock is
//! an atomic, and closing works through the socket when the actor cannot run.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;
use futures_core::Stream;

use crate::http::conn::ConnSocket;
use crate::protocol::SessionId;

/// Milliseconds on a monotonic clock that starts with the process.
pub fn monotonic_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
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
}

/// What [`SessionHandle::push`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    Queued,
    /// The queue already held `outbound_queue` frames: the client is too
    /// slow and must be closed (1013). The frame was not queued.
    Full,
    /// The session is closing; the frame was dropped.
    Closing,
}

/// A request to close the session with `code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseRequest {
    pub code: u16,
    /// Cut the TCP connection if the session has not ended soon after
    /// (heartbeat timeouts and slow consumers); a drain (1001) waits for
    /// the client's close instead.
    pub cut_after_grace: bool,
}

const CUT_FLAG: u32 = 1 << 16;

struct Queue {
    frames: VecDeque<OutFrame>,
    /// Total length of `frames`.
    bytes: usize,
    waker: Option<Waker>,
}

struct Shared {
    id: SessionId,
    capacity: usize,
    queue: Mutex<Queue>,
    last_heard_ms: AtomicU64,
    /// When the watchdog last asked for a ping.
    last_ping_ms: AtomicU64,
    ping_due: AtomicBool,
    /// 0, or a close code with `CUT_FLAG`.
    close: AtomicU32,
    close_requested_ms: AtomicU64,
    ended: AtomicBool,
    socket: Mutex<Option<ConnSocket>>,
}

#[derive(Clone)]
pub struct SessionHandle(Arc<Shared>);

impl std::fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionHandle({})", self.0.id)
    }
}

impl SessionHandle {
    pub fn new(id: SessionId, outbound_queue: usize, socket: Option<ConnSocket>) -> Self {
        SessionHandle(Arc::new(Shared {
            id,
            capacity: outbound_queue,
            queue: Mutex::new(Queue { frames: VecDeque::new(), bytes: 0, waker: None }),
            last_heard_ms: AtomicU64::new(monotonic_ms()),
            last_ping_ms: AtomicU64::new(monotonic_ms()),
            ping_due: AtomicBool::new(false),
            close: AtomicU32::new(0),
            close_requested_ms: AtomicU64::new(0),
            ended: AtomicBool::new(false),
            socket: Mutex::new(socket),
        }))
    }

    pub fn id(&self) -> SessionId {
        self.0.id
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding this lock cannot leave the queue half-updated
        // (push and pop are single operations), so a poisoned lock is usable.
        self.0.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues a frame for the client without ever waiting.
    pub fn push(&self, frame: OutFrame) -> Push {
        if self.close_request().is_some() {
            return Push::Closing;
        }
        let waker = {
            let mut queue = self.queue();
            if queue.frames.len() >= self.0.capacity {
                return Push::Full;
            }
            queue.bytes += frame.len();
            queue.frames.push_back(frame);
            queue.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Push::Queued
    }

    /// Moves queued frames into `out` (which the caller keeps empty between
    /// calls): at least one, then more while their total stays under
    /// `budget` bytes. Bounding each batch keeps what one client has encoded
    /// but not yet sent small; the rest stays queued, where it counts toward
    /// `outbound_queue`.
    pub fn take_frames(&self, out: &mut VecDeque<OutFrame>, budget: usize) {
        let mut queue = self.queue();
        if queue.bytes <= budget {
            // Everything fits: trade the whole queue for the empty one.
            std::mem::swap(&mut queue.frames, out);
            queue.bytes = 0;
            return;
        }
        let mut bytes = 0;
        while let Some(frame) = queue.frames.front() {
            if bytes > 0 && bytes + frame.len() > budget {
                break;
            }
            bytes += frame.len();
            if let Some(frame) = queue.frames.pop_front() {
                out.push_back(frame);
            }
        }
        queue.bytes -= bytes;
    }

    /// Frames waiting for the client.
    pub fn queued(&self) -> usize {
        self.queue().frames.len()
    }

    fn discard_queued(&self) {
        let mut queue = self.queue();
        queue.frames.clear();
        queue.bytes = 0;
    }

    /// Records that something arrived from the client.
    pub fn heard(&self) {
        self.0.last_heard_ms.store(monotonic_ms(), Ordering::Relaxed);
    }

    pub fn last_heard_ms(&self) -> u64 {
        self.0.last_heard_ms.load(Ordering::Relaxed)
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
        let waker = self.queue().waker.take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Asks the session to close with `code`. Only the first request counts;
    /// returns whether this was it.
    pub fn request_close(&self, request: CloseRequest) -> bool {
        let encoded = u32::from(request.code) | if request.cut_after_grace { CUT_FLAG } else { 0 };
        let first = self.0.close.compare_exchange(0, encoded, Ordering::AcqRel, Ordering::Acquire).is_ok();
        if first {
            self.0.close_requested_ms.store(monotonic_ms(), Ordering::Release);
            if request.cut_after_grace {
                // The client is dead or too slow: what it has not read is lost.
                self.discard_queued();
            }
            let waker = self.queue().waker.take();
            if let Some(waker) = waker {
                waker.wake();
            }
        }
        first
    }

    pub fn close_request(&self) -> Option<CloseRequest> {
        match self.0.close.load(Ordering::Acquire) {
            0 => None,
            encoded => Some(CloseRequest { code: (encoded & 0xFFFF) as u16, cut_after_grace: encoded & CUT_FLAG != 0 }),
        }
    }

    pub fn close_requested_ms(&self) -> u64 {
        self.0.close_requested_ms.load(Ordering::Acquire)
    }

    /// Called when the session actor has stopped, while the connection's
    /// socket is still open (see `http::conn`): the connection closes once
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

    /// The stream through which the session actor learns of queued frames
    /// and close requests.
    pub fn signals(&self) -> Signals {
        Signals { handle: self.clone(), close_reported: false }
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
}

/// Yields [`Signal`]s; never ends on its own.
pub struct Signals {
    handle: SessionHandle,
    close_reported: bool,
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
        if this.handle.0.ping_due.swap(false, Ordering::AcqRel) {
            return Poll::Ready(Some(Signal::Ping));
        }
        let mut queue = this.handle.queue();
        if !queue.frames.is_empty() {
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

    #[test]
    fn queue_is_bounded() {
        let h = SessionHandle::new(SessionId(1), 2, None);
        assert_eq!(h.push(text("a")), Push::Queued);
        assert_eq!(h.push(text("b")), Push::Queued);
        assert_eq!(h.push(text("c")), Push::Full);
        assert_eq!(h.queued(), 2);
    }

    #[test]
    fn batches_respect_the_budget_but_take_at_least_one() {
        let h = SessionHandle::new(SessionId(1), 10, None);
        for s in ["aaaa", "bbbb", "cccc"] {
            h.push(text(s));
        }
        let mut out = VecDeque::new();
        h.take_frames(&mut out, 8);
        assert_eq!(out.len(), 2);
        out.clear();
        h.take_frames(&mut out, 1);
        assert_eq!(out.len(), 1);
        assert_eq!(h.queued(), 0);
        out.clear();
        for s in ["aa", "bb"] {
            h.push(text(s));
        }
        h.take_frames(&mut out, 100);
        assert_eq!(out.len(), 2, "all at once when they fit");
        h.push(text("cc"));
        out.clear();
        h.take_frames(&mut out, 1);
        assert_eq!(out.len(), 1, "the byte count was reset by the swap");
    }

    #[test]
    fn first_close_request_wins_and_drops_queue_when_cutting() {
        let h = SessionHandle::new(SessionId(1), 10, None);
        h.push(text("a"));
        assert!(h.request_close(CloseRequest { code: 1013, cut_after_grace: true }));
        assert!(!h.request_close(CloseRequest { code: 1001, cut_after_grace: false }));
        assert_eq!(h.close_request().map(|r| r.code), Some(1013));
        assert_eq!(h.queued(), 0);
        assert_eq!(h.push(text("b")), Push::Closing);
    }
}
