//! What every scenario's tasks share to move in step: the run's [`Phase`],
//! a count of connections that finished connecting (or failed to), and a
//! limit on handshakes in progress.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Notify, Semaphore, SemaphorePermit, watch};

/// Where a run is: tasks wait for `Go`, stop producing at `Drain`, and
/// leave at `Done`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Setup,
    Go,
    Drain,
    Done,
}

pub struct Gate {
    phase: watch::Sender<Phase>,
    settled: AtomicUsize,
    settled_changed: Notify,
    handshakes: Semaphore,
}

impl Gate {
    pub fn new(connect_concurrency: usize) -> Self {
        Gate {
            phase: watch::channel(Phase::Setup).0,
            settled: AtomicUsize::new(0),
            settled_changed: Notify::new(),
            handshakes: Semaphore::new(connect_concurrency.max(1)),
        }
    }

    pub fn set_phase(&self, phase: Phase) {
        self.phase.send_replace(phase);
    }

    pub fn phase(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    /// Held while a handshake is in progress.
    pub async fn handshake_permit(&self) -> Option<SemaphorePermit<'_>> {
        self.handshakes.acquire().await.ok()
    }

    /// A task finished connecting, well or not.
    pub fn settle(&self) {
        self.settled.fetch_add(1, Ordering::AcqRel);
        self.settled_changed.notify_waiters();
    }

    /// Waits until `count` tasks have settled.
    pub async fn settled(&self, count: usize) {
        loop {
            let changed = self.settled_changed.notified();
            if self.settled.load(Ordering::Acquire) >= count {
                return;
            }
            changed.await;
        }
    }
}

/// Waits until `phase` reaches at least `wanted`.
pub async fn reach(phase: &mut watch::Receiver<Phase>, wanted: Phase) {
    let _ = phase.wait_for(|current| *current >= wanted).await;
}

/// Reads (and so answers pings) until `phase` reaches `wanted`; false if
/// the server ended the connection first.
pub async fn read_until(ws: &mut crate::dial::Ws, phase: &mut watch::Receiver<Phase>, wanted: Phase) -> bool {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        if *phase.borrow() >= wanted {
            return true;
        }
        tokio::select! {
            frame = ws.next() => match frame {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return false,
                Some(Ok(_)) => {}
            },
            _ = phase.changed() => {}
        }
    }
}

/// Waits for the tasks to end, `limit` in all (not each); the stragglers
/// are left to the runtime's shutdown.
pub async fn finish(tasks: Vec<tokio::task::JoinHandle<()>>, limit: std::time::Duration) {
    let _ = tokio::time::timeout(limit, futures_util::future::join_all(tasks)).await;
}
