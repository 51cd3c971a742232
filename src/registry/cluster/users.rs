//! `auth.max_connections_per_user` across the cluster: the upgrade gate asks
//! the registry ([`AdmitUser`]) before it upgrades an authenticated
//! connection, and the registry asks Redis; the count is given back when
//! the session's registration ends, and a dead node's counts are taken off.

use std::collections::HashMap;
use std::sync::Arc;

use actix::{Context, Handler, Message, ResponseActFuture, WrapFuture};

use crate::protocol::SessionId;
use crate::registry::Registry;

/// May one more connection of `user` open? Sent with the session's
/// `Registration` already made, so that its `Disconnect` gives the count
/// back whatever happens to the connection.
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
        let (done, admitted) = tokio::sync::oneshot::channel();
        let Some(cluster) = self.broker.redis() else {
            return Box::pin(actix::fut::ready(true));
        };
        let Some(link) = &cluster.link else {
            // Without Redis the cluster cannot count: the node's own count
            // (checked at the gate) is all there is.
            return Box::pin(actix::fut::ready(true));
        };
        let (mut connection, node, users) = (link.connection.clone(), link.node, cluster.users.clone());
        let user = msg.user.clone();
        let work = async move { users.admit(&mut connection, node, &user, msg.max).await };
        self.in_redis(ctx, super::Turn::Node, work, move |registry, counted, _| {
            let admitted = match counted {
                Ok(true) => {
                    if let Some(cluster) = registry.broker.redis_mut() {
                        cluster.counted.insert(msg.id, msg.user);
                    }
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

impl Registry {
    /// A session's registration ended: its user's count goes down.
    pub(in crate::registry) fn release_user(&mut self, id: SessionId, ctx: &mut Context<Self>) {
        let Some(cluster) = self.broker.redis_mut() else {
            return;
        };
        let Some(user) = cluster.counted.remove(&id) else {
            return;
        };
        let Some(link) = &cluster.link else {
            return;
        };
        let (mut connection, node, users) = (link.connection.clone(), link.node, cluster.users.clone());
        let work = async move { users.release(&mut connection, node, &user).await };
        self.in_redis(ctx, super::Turn::Node, work, |_, _, _| {});
    }

    /// This node's counts per user, as Redis should hold them.
    pub(in crate::registry) fn user_counts(&self) -> Vec<(Arc<str>, usize)> {
        let mut counts: HashMap<Arc<str>, usize> = HashMap::new();
        if let Some(cluster) = self.broker.redis() {
            for user in cluster.counted.values() {
                *counts.entry(user.clone()).or_default() += 1;
            }
        }
        counts.into_iter().collect()
    }
}
