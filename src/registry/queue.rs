//! Each session's requests at the broker, in order. A request that needs
//! Redis is answered when Redis has answered; a session's requests run one
//! at a time, in order (later ones wait in `Requests::busy`, bounded by the
//! session's in-flight budget), except that publishes follow each other
//! without waiting (pipelined on the one connection, their replies put back
//! in order): its replies keep the order of its requests. With the memory
//! broker every answer comes at once and nothing waits.
//!
//! Redis work runs on a thread of its own (`cluster::start_io_thread`),
//! started in each session's order (`in_turn`) and at most `MAX_IN_FLIGHT`
//! at once.

use std::collections::{HashMap, VecDeque};
use std::future::Future;

use actix::{ActorFutureExt, AsyncContext, Context, WrapFuture};

use super::Registry;
use super::messages::{Command, RawFrame, Reauth};
use crate::broker::Done;
use crate::broker::redis::node::PIPELINE_BUFFER;
use crate::protocol::SessionId;
use crate::protocol::request::RequestKind;

/// Broker work a node runs at once: below the Redis client's queue of
/// commands not yet written ([`PIPELINE_BUFFER`]; a command is handed to it
/// on the first poll of its future only while it has room, and a full
/// queue lets later commands overtake), so that a command always enters
/// the queue on its first poll, in the order [`in_turn`] gives. Beyond it,
/// work waits in [`Requests::queued`], in order.
const MAX_IN_FLIGHT: usize = PIPELINE_BUFFER - 64;

/// Starts Redis work (spawns its future on the registry).
type Start = Box<dyn FnOnce(&mut Registry, &mut Context<Registry>)>;

/// Whose Redis work this is, which decides when it starts.
#[derive(Debug, Clone, Copy)]
pub(in crate::registry) enum Turn {
    /// The node's own (beats, repairs, the API): starts at once.
    Node,
    /// A session's, started after its earlier Redis work was sent (so that
    /// Redis runs a session's commands in the order it made them), while
    /// the session goes on (publishes, leaves).
    After(SessionId),
    /// A session's, after its earlier work, and the session's later
    /// requests wait for its answer.
    Alone(SessionId),
}

/// Sends `work`'s first command only once the work before it has sent its
/// own (`previous` fires), then says so (`started`): the connection to
/// Redis carries commands in the order they were sent, and this keeps a
/// session's in the order it made them, whatever order the futures are
/// first polled in.
async fn in_turn<T>(
    previous: Option<tokio::sync::oneshot::Receiver<()>>,
    started: Option<tokio::sync::oneshot::Sender<()>>,
    work: impl Future<Output = T>,
) -> T {
    if let Some(previous) = previous {
        // An error: the work before was dropped, which sends nothing more.
        let _ = previous.await;
    }
    // Out of tokio's cooperative budget: a spent budget makes the Redis
    // client's queue answer "not now" even with room, and the first poll
    // would not hand the command over.
    let mut work = std::pin::pin!(tokio::task::unconstrained(work));
    let mut started = started;
    std::future::poll_fn(move |cx| {
        // Its first poll hands its first command to the connection.
        let out = work.as_mut().poll(cx);
        if let Some(started) = started.take() {
            let _ = started.send(());
        }
        out
    })
    .await
}

/// A request that waits for the session's previous one.
enum Deferred {
    Command(Command),
    Raw(RawFrame),
    Reauth(Reauth),
}

/// A session's requests while the broker works on them: what waits, the
/// publishes in flight, and the order its broker work starts in.
#[derive(Default)]
pub(in crate::registry) struct Requests {
    /// Sessions with a request at the broker (or waiting for their
    /// publishes), and what they sent after it.
    busy: HashMap<SessionId, VecDeque<Deferred>>,
    /// Sessions with publishes at the broker.
    publishing: HashMap<SessionId, Pipeline>,
    /// Per session, the signal that its latest broker work has been sent.
    turns: HashMap<SessionId, tokio::sync::oneshot::Receiver<()>>,
    /// Broker work running, and work waiting for room (bounded in turn by
    /// the sessions' in-flight bytes: each holds its request's ticket).
    in_flight: usize,
    queued: VecDeque<Start>,
}

impl Requests {
    /// The session ended: nothing of it waits any more.
    pub(in crate::registry) fn forget(&mut self, id: SessionId) {
        self.busy.remove(&id);
        self.publishing.remove(&id);
        self.turns.remove(&id);
    }

    pub(in crate::registry) fn clear(&mut self) {
        self.busy.clear();
        self.publishing.clear();
        self.turns.clear();
    }
}

impl Registry {
    /// Runs what the broker answers, `done`, with `then` on the registry:
    /// at once when it has answered (after what it did to rooms is
    /// delivered), else when Redis has, started in `turn`.
    pub(in crate::registry) fn in_broker<T: Send + 'static>(
        &mut self,
        ctx: &mut Context<Self>,
        turn: Turn,
        done: Done<T>,
        then: impl FnOnce(&mut Registry, T, &mut Context<Registry>) + 'static,
    ) {
        let work = match done {
            Done::Now(out) => {
                // What the call did to rooms first: a publisher's message
                // is delivered before its reply is made.
                self.deliver_events(ctx);
                return then(self, out, ctx);
            }
            Done::Later(work) => work,
        };
        let (busy, ordered) = match turn {
            Turn::Node => (None, None),
            Turn::After(id) => (None, Some(id)),
            Turn::Alone(id) => (Some(id), Some(id)),
        };
        let alive = ordered.is_some_and(|id| self.sessions.contains_key(&id));
        let (mut previous, mut started) = (None, None);
        let requests = &mut self.requests;
        if let Some(id) = busy {
            requests.busy.entry(id).or_default();
        }
        if let Some(id) = ordered {
            previous = requests.turns.remove(&id);
            let (sender, receiver) = tokio::sync::oneshot::channel();
            started = Some(sender);
            if alive {
                requests.turns.insert(id, receiver);
            }
        }
        let work = in_turn(previous, started, work);
        let start = move |registry: &mut Registry, ctx: &mut Context<Registry>| {
            // On the Redis thread, so that the Redis client is never held up
            // by the registry's own work (fan-out, repairs).
            let Some(io) = registry.broker.runtime() else {
                return;
            };
            let work = io.spawn(work);
            ctx.spawn(work.into_actor(registry).map(move |out, registry, ctx| {
                registry.requests.in_flight -= 1;
                match out {
                    Ok(out) => then(registry, out, ctx),
                    Err(error) => log::error!("cluster: Redis work failed: {error}"),
                }
                if let Some(id) = busy {
                    registry.run_deferred(id, ctx);
                }
                registry.start_queued(ctx);
                registry.settle(ctx);
            }));
        };
        if self.requests.in_flight < MAX_IN_FLIGHT && self.requests.queued.is_empty() {
            self.requests.in_flight += 1;
            start(self, ctx);
        } else {
            self.requests.queued.push_back(Box::new(start));
        }
    }

    /// Starts queued Redis work while there is room.
    fn start_queued(&mut self, ctx: &mut Context<Self>) {
        while self.requests.in_flight < MAX_IN_FLIGHT {
            let Some(start) = self.requests.queued.pop_front() else {
                return;
            };
            self.requests.in_flight += 1;
            start(self, ctx);
        }
    }

    /// Whether a request of the session must wait: one is in Redis, or it
    /// is not a publish and publishes are (a publish may follow publishes:
    /// they are pipelined, and their replies put back in order).
    fn must_wait(&self, id: SessionId, deferred: &Deferred) -> bool {
        let requests = &self.requests;
        requests.busy.contains_key(&id) || (!deferred.is_publish() && requests.publishing.contains_key(&id))
    }

    /// Runs `deferred` now, or queues it behind what the session has in Redis.
    fn run_or_defer(&mut self, id: SessionId, deferred: Deferred, ctx: &mut Context<Self>) {
        if self.must_wait(id, &deferred) {
            self.requests.busy.entry(id).or_default().push_back(deferred);
            return;
        }
        match deferred {
            Deferred::Command(command) => self.run_request(command, ctx),
            Deferred::Raw(frame) => self.relay_raw(frame, ctx),
            Deferred::Reauth(reauth) => self.reauth(reauth, ctx),
        }
    }

    /// The session's request in Redis is done (or its publishes are): runs
    /// what it sent next, up to the next one that must wait.
    fn run_deferred(&mut self, id: SessionId, ctx: &mut Context<Self>) {
        let Some(mut queue) = self.requests.busy.remove(&id) else {
            return;
        };
        while let Some(deferred) = queue.pop_front() {
            if self.must_wait(id, &deferred) {
                queue.push_front(deferred);
                self.requests.busy.entry(id).or_default().extend(queue);
                return;
            }
            self.run_or_defer(id, deferred, ctx);
        }
    }

    /// A request from a session, in cluster mode.
    pub(in crate::registry) fn queue_command(&mut self, command: Command, ctx: &mut Context<Self>) {
        self.run_or_defer(command.id, Deferred::Command(command), ctx);
    }

    /// An `auth` refresh, in cluster mode: after the session's earlier
    /// requests, so that its `ok` keeps their order.
    pub(in crate::registry) fn queue_reauth(&mut self, reauth: Reauth, ctx: &mut Context<Self>) {
        self.run_or_defer(reauth.id, Deferred::Reauth(reauth), ctx);
    }

    /// A raw member's frame, in cluster mode.
    pub(in crate::registry) fn queue_raw_frame(&mut self, frame: RawFrame, ctx: &mut Context<Self>) {
        self.run_or_defer(frame.id, Deferred::Raw(frame), ctx);
    }

    /// A publish of the session goes to Redis: its place in the session's
    /// reply order.
    pub(in crate::registry) fn pipeline_publish(&mut self, id: SessionId) -> u64 {
        let pipeline = self.requests.publishing.entry(id).or_default();
        pipeline.sent += 1;
        pipeline.sent - 1
    }

    /// Publish `n` of the session is done: its reply (if any) goes out once
    /// the ones before it have; when none is left, what waited runs.
    pub(in crate::registry) fn publish_done(
        &mut self,
        id: SessionId,
        n: u64,
        reply: Option<String>,
        ctx: &mut Context<Self>,
    ) {
        let Some(pipeline) = self.requests.publishing.get_mut(&id) else {
            return;
        };
        if n == pipeline.replied && pipeline.done.is_empty() {
            // The next reply in order (always, with the memory broker).
            pipeline.replied += 1;
            let drained = pipeline.replied == pipeline.sent;
            if drained {
                self.requests.publishing.remove(&id);
            }
            if let Some(reply) = reply {
                self.reply(id, reply);
            }
            if drained {
                self.run_deferred(id, ctx);
            }
            return;
        }
        pipeline.done.insert(n, reply);
        let mut replies = Vec::new();
        while let Some(reply) = pipeline.done.remove(&pipeline.replied) {
            pipeline.replied += 1;
            replies.extend(reply);
        }
        let drained = pipeline.replied == pipeline.sent;
        if drained {
            self.requests.publishing.remove(&id);
        }
        for reply in replies {
            self.reply(id, reply);
        }
        if drained {
            self.run_deferred(id, ctx);
        }
    }
}

impl Deferred {
    /// Publishes (and raw frames, which are publishes) may be pipelined.
    fn is_publish(&self) -> bool {
        match self {
            Deferred::Command(command) => matches!(command.request.kind, RequestKind::Publish { .. }),
            Deferred::Raw(_) => true,
            Deferred::Reauth(_) => false,
        }
    }
}

/// A session's publishes on their way to Redis.
#[derive(Default)]
struct Pipeline {
    /// Publishes sent, and replies given, in the session's order.
    sent: u64,
    replied: u64,
    /// Done out of order: waiting for the ones before them.
    done: std::collections::BTreeMap<u64, Option<String>>,
}
