//! What the hub does about the node's life, whichever broker: the events
//! the broker sends (a room's channel, this node declared dead, Redis back
//! after an outage), per-user counts ([`AdmitUser`]), a session other nodes
//! can find, and leaving at once on a graceful shutdown ([`Leave`]).

use std::collections::HashMap;
use std::sync::Arc;

use actix::{AsyncContext, Context, Handler, Message, ResponseActFuture, StreamHandler, WrapFuture};

use super::Registry;
use super::queue::Turn;
use crate::broker::{Done, Event, Holdings};
use crate::outbox::CloseRequest;
use crate::protocol::{SessionId, close};

impl Registry {
    /// Where the broker's later events come in (Redis's channels, the
    /// node's life), and the broker's clock.
    pub(in crate::registry) fn start_broker(&mut self, ctx: &mut Context<Self>) {
        if let Some(receiver) = self.broker.events() {
            ctx.add_stream(futures_util::stream::unfold(receiver, |mut receiver| async move {
                receiver.recv().await.map(|event| (event, receiver))
            }));
        }
        ctx.run_interval(std::time::Duration::from_millis(250), |registry, _| registry.broker.tick());
    }

    /// One event of the broker's.
    pub(in crate::registry) fn broker_event(&mut self, event: Event, ctx: &mut Context<Self>) {
        match event {
            Event::Message { room, seq, epoch, frame } => self.message_arrived(&room, seq, &epoch, frame, ctx),
            Event::Presence { room, frame } => self.presence_arrived(&room, &frame),
            Event::Binary { room, from, bytes } => self.binary_arrived(&room, from, bytes),
            Event::Direct(payload) => self.direct_arrived(&payload),
            Event::Resubscribed => {
                log::info!("cluster: subscribed again; repairing every room from its history");
                self.resubscribed(ctx);
            }
            Event::DeclaredDead => self.declared_dead(),
            Event::Restore => self.restore(ctx),
        }
    }

    /// The others found this node dead and made its members leave: its
    /// clients would be ghosts, so they are closed (1012) to reconnect and
    /// recover; the broker starts again as a new node.
    fn declared_dead(&mut self) {
        for entry in self.sessions.values() {
            entry.handle.request_close(CloseRequest::cause(close::SERVICE_RESTART));
        }
        // The others made its members leave and took its counts off.
        self.forget_memberships();
        self.requests.clear();
    }

    /// This node's members and counted connections are gone from the
    /// broker (or about to be): nothing of them is left to leave or give
    /// back.
    fn forget_memberships(&mut self) {
        self.rooms.clear();
        self.counted.clear();
        for entry in self.sessions.values_mut() {
            entry.rooms.clear();
        }
    }

    /// Redis is back after an outage: it gets what this node holds again.
    fn restore(&mut self, ctx: &mut Context<Self>) {
        let mut holdings = Holdings {
            sessions: self.sessions.keys().copied().collect(),
            users: self.user_counts(),
            ..Holdings::default()
        };
        for (name, room) in &self.rooms {
            for id in room.members.ids() {
                if let Some(entry) = self.sessions.get(&id) {
                    holdings.members.push((name.clone(), id, self.member_entry(entry, id)));
                }
            }
        }
        let work = self.broker.restore(holdings, self.limits.empty_ttl);
        self.in_broker(ctx, Turn::Node, work, |_, (), _| {});
    }

    /// This node's counts per user, as the broker should hold them.
    fn user_counts(&self) -> Vec<(Arc<str>, usize)> {
        let mut counts: HashMap<Arc<str>, usize> = HashMap::new();
        for user in self.counted.values() {
            *counts.entry(user.clone()).or_default() += 1;
        }
        counts.into_iter().collect()
    }

    /// A session is open: `direct` from other nodes can find it once the
    /// broker has it (then `done`).
    pub(in crate::registry) fn connected(
        &mut self,
        id: SessionId,
        ctx: &mut Context<Self>,
        done: tokio::sync::oneshot::Sender<()>,
    ) {
        let work = self.broker.session(id, true);
        self.in_broker(ctx, Turn::After(id), work, move |_, _, _| {
            let _ = done.send(());
        });
    }

    /// A session's registration ended: its user's count goes down.
    pub(in crate::registry) fn release_user(&mut self, id: SessionId, ctx: &mut Context<Self>) {
        if let Some(user) = self.counted.remove(&id) {
            let work = self.broker.release(user);
            self.in_broker(ctx, Turn::Node, work, |_, _, _| {});
        }
    }
}

impl StreamHandler<Event> for Registry {
    fn handle(&mut self, event: Event, ctx: &mut Context<Self>) {
        self.broker_event(event, ctx);
        self.settle(ctx);
    }

    /// The broker's events end with the process.
    fn finished(&mut self, _ctx: &mut Context<Self>) {}
}

/// May one more connection of `user` open? `auth.max_connections_per_user`
/// across the cluster: the upgrade gate asks before it upgrades an
/// authenticated connection. Sent with the session's `Registration`
/// already made, so that its `Disconnect` gives the count back whatever
/// happens to the connection.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct AdmitUser {
    pub id: SessionId,
    pub user: Arc<str>,
    pub max: usize,
}

impl Handler<AdmitUser> for Registry {
    type Result = ResponseActFuture<Self, bool>;

    fn handle(&mut self, msg: AdmitUser, ctx: &mut Context<Self>) -> Self::Result {
        let Some(work) = self.broker.admit(&msg.user, msg.max) else {
            return Box::pin(actix::fut::ready(true));
        };
        let (done, admitted) = tokio::sync::oneshot::channel();
        self.in_broker(ctx, Turn::Node, work, move |registry, counted, _| {
            let admitted = match counted {
                Ok(true) => {
                    registry.counted.insert(msg.id, msg.user);
                    true
                }
                Ok(false) => false,
                Err(error) => {
                    log::debug!("cluster: counting a user's connections failed: {error}");
                    true
                }
            };
            let _ = done.send(admitted);
        });
        Box::pin(async move { admitted.await.unwrap_or(true) }.into_actor(self))
    }
}

/// A graceful shutdown: this node's members leave every room now, with
/// leave events, and the node leaves the cluster (nobody waits for it to
/// time out).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave;

impl Handler<Leave> for Registry {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _msg: Leave, _ctx: &mut Context<Self>) -> Self::Result {
        let work = self.broker.shut_down(self.limits.empty_ttl);
        // What closes from now on has already left.
        self.forget_memberships();
        match work {
            Done::Now(()) => Box::pin(actix::fut::ready(())),
            Done::Later(work) => Box::pin(work.into_actor(self)),
        }
    }
}
