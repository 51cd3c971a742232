//! Requests: each is one call to the broker (in a cluster one Redis round
//! trip), answered when the broker has answered. `publish` gets its `seq`
//! from the broker; the message itself reaches every member, the publisher
//! included, through the room's feed, and its `ok` follows.

use actix::{Context, WrapFuture};
use serde_json::value::RawValue;

use super::queue::Turn;
use super::rooms::{Ack, JoinOutcome, RoomJoin, unavailable};
use crate::auth::Access;
use crate::broker::{Done, JoinRead, Message, MessageText, Outcome, PublishError, RoomBounds};
use crate::metrics::AuthFailure;
use crate::outbox::{CloseRequest, OutFrame};
use crate::protocol::now_epoch_ms;
use crate::protocol::request::{Ref, RequestKind};
use crate::protocol::{self, ErrorCode, PublishId, RoomName, SessionId, frame};
use crate::registry::Registry;
use crate::registry::members::MemberKind;
use crate::registry::messages::{Command, RawFrame};

/// Why a publish has no `seq`.
#[derive(Debug)]
pub(in crate::registry) enum PublishFailure {
    /// Not published, and it never will be: Redis was down or refused it,
    /// or the node closed it when its answer was lost.
    Unavailable(String),
    /// A room nobody is in, and the cluster holds `rooms.max_rooms`.
    TooManyRooms,
    /// Its answer was lost and Redis no longer knows whether it ran.
    Unknown,
}

/// A publish's body on its way to Redis.
pub(in crate::registry) enum Body<'a> {
    /// JSON text, spliced into the frame.
    Json(&'a str),
    /// A raw member's text, kept as it came (the frame holds it as a JSON string).
    Text(&'a str),
}

impl Registry {
    pub(in crate::registry) fn run_request(&mut self, command: Command, ctx: &mut Context<Self>) {
        let Command { id, request, grant, ticket } = command;
        let reference = request.reference;
        match request.kind {
            RequestKind::Join { room, history, since, epoch, token: _ } => {
                let read = match since {
                    Some(since) => JoinRead::Since(since, epoch),
                    None => JoinRead::Recent(history.unwrap_or(0).min(self.limits.history.messages as u64) as usize),
                };
                self.request_join(ctx, id, room, read, grant, reference, ticket);
            }
            RequestKind::Leave { room } => self.leave(id, room, reference.as_deref(), ctx),
            RequestKind::Publish { room, body, id: publish_id } => {
                let publish = crate::registry::Publish { room, body, id: publish_id };
                self.publish(ctx, id, publish, reference, ticket)
            }
            RequestKind::Direct { to, body } => self.direct_request(ctx, id, &to, &body, reference, ticket),
            RequestKind::Nick { name } => {
                self.rename(id, name);
                self.rename_everywhere(ctx, id, reference, ticket);
            }
            RequestKind::Rooms => {
                let work = self.broker.rooms();
                self.in_broker(ctx, Turn::Alone(id), work, move |registry, rooms, _| {
                    let _ticket = ticket;
                    match rooms {
                        Ok(rooms) => registry.answer_rooms(id, rooms, reference.as_deref()),
                        Err(error) => registry.answer(id, Err(error), reference.as_deref()),
                    }
                });
            }
            RequestKind::Members { room } => {
                if self.local_member(id, &room).is_none() {
                    let message = format!("not a member of {room}");
                    return self.error(id, ErrorCode::NotMember, &message, reference.as_deref());
                }
                let work = self.broker.members(&room);
                self.in_broker(ctx, Turn::Alone(id), work, move |registry, members, _| {
                    let _ticket = ticket;
                    let frame = members.map(|entries| {
                        frame::members_of_entries(&room, entries.iter().map(String::as_str), reference.as_deref())
                    });
                    registry.answer(id, frame, reference.as_deref());
                });
            }
            RequestKind::Ping => self.reply(id, frame::pong(reference.as_deref())),
            RequestKind::Auth { .. } => {}
        }
    }

    /// A reply read from Redis, or `unavailable`.
    fn answer(&mut self, id: SessionId, frame: redis::RedisResult<String>, reference: Option<&RawValue>) {
        match frame {
            Ok(frame) => self.reply(id, frame),
            Err(error) => self.error(id, ErrorCode::Unavailable, &unavailable(&error.to_string()), reference),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn request_join(
        &mut self,
        ctx: &mut Context<Self>,
        id: SessionId,
        room: RoomName,
        read: JoinRead,
        grant: Option<Access>,
        reference: Ref,
        ticket: crate::outbox::InFlight,
    ) {
        let Some(entry) = self.sessions.get(&id) else {
            return;
        };
        let access = self.access(entry, &room, grant);
        let is_member = entry.rooms.contains(&room);
        // Rooms held are counted cluster-wide, by the join script.
        let refusal = match is_member {
            true => self.rejoin_refusal(id, &room, grant),
            false => self.new_member_refusal(entry, &room, access, None),
        };
        if let Some((code, message)) = refusal {
            return self.error(id, code, &message, reference.as_deref());
        }
        if let Some(why) = self.broker.down() {
            return self.error(id, ErrorCode::Unavailable, &unavailable(&why), reference.as_deref());
        }
        let join = RoomJoin { room: room.clone(), read: read.clone(), access: access.unwrap_or(Access::Write), grant };
        self.join_room(ctx, id, join, move |registry, outcome, _| {
            let _ticket = ticket;
            match Registry::join_error(&room, &outcome) {
                Some((code, message)) => registry.error(id, code, &message, reference.as_deref()),
                None => {
                    if let JoinOutcome::Joined(reply) = &outcome {
                        registry.reply(id, Registry::joined_frame(&room, &read, reply, reference.as_deref()));
                    }
                }
            }
        });
    }

    /// What Redis may hold of a room: the settings that bound one process.
    fn room_bounds(&self) -> RoomBounds {
        let limits = &self.limits;
        RoomBounds {
            history: limits.history.messages,
            history_bytes: limits.history.bytes,
            publish_ids: limits.history.ids,
            empty_ttl: limits.empty_ttl,
            max_rooms: limits.max_rooms,
        }
    }

    /// Publishes a message to `room` from `sender` through Redis; `then`
    /// gets its `seq`, or why there is none. A publish handed to Redis is
    /// answered when Redis has said what became of it (`publish_settled`):
    /// `Unavailable` only for one that did not happen and never will.
    #[allow(clippy::too_many_arguments)]
    pub(in crate::registry) fn publish_message(
        &mut self,
        ctx: &mut Context<Self>,
        turn: Turn,
        room: &RoomName,
        sender: &str,
        body: Body<'_>,
        publish_id: Option<&PublishId>,
        then: impl FnOnce(&mut Registry, Result<u64, PublishFailure>, &mut Context<Registry>) + 'static,
    ) {
        if let Some(why) = self.broker.down() {
            return then(self, Err(PublishFailure::Unavailable(why)), ctx);
        }
        let bounds = self.room_bounds();
        // A member's room has a feed that knows a seq the publish will
        // pass; an API publish may go anywhere.
        let min_seq = self.rooms.get(room).map_or(1, |local| local.delivered() + 1);
        // A member's publish: the room has members (only an API publish
        // may make a room).
        let occupied = !matches!(turn, Turn::Node);
        let ts = now_epoch_ms();
        let (head, tail, text) = match body {
            Body::Json(body) => {
                let (head, tail) = frame::message_parts(room, sender, ts, body);
                (head, tail, MessageText::Json)
            }
            Body::Text(text) => {
                let (head, fields) = frame::message_text_parts(room, sender, ts);
                (head, fields, MessageText::Raw(text))
            }
        };
        let message = Message { id: publish_id, head: &head, tail: &tail, text, bounds, occupied, min_seq };
        let work = self.broker.publish(room, &message);
        let room = room.clone();
        self.in_broker(ctx, turn, work, move |registry, (outcome, _took), ctx| {
            let answer = registry.published(&room, outcome);
            then(registry, answer, ctx);
        });
    }

    /// What a publish's outcome means for its publisher.
    fn published(
        &mut self,
        room: &RoomName,
        outcome: Result<(Outcome, u32), PublishError>,
    ) -> Result<u64, PublishFailure> {
        match outcome {
            Ok((Outcome::Published(published), attempts)) => {
                if attempts > 1 {
                    log::info!(
                        "cluster: a publish to {room} was answered after {attempts} round trips: seq {}",
                        published.seq
                    );
                }
                Ok(published.seq)
            }
            Ok((Outcome::Closed, attempts)) => {
                log::info!(
                    "cluster: a publish to {room} went unanswered and was closed unpublished ({attempts} round trips)"
                );
                Err(PublishFailure::Unavailable("Redis did not answer; it was not published".into()))
            }
            Ok((Outcome::TooManyRooms, _)) => Err(PublishFailure::TooManyRooms),
            Err(PublishError::Refused(error)) => Err(PublishFailure::Unavailable(error.to_string())),
            Err(PublishError::Unknown) => {
                log::warn!("cluster: a publish to {room} went unanswered, and Redis no longer knows whether it ran");
                Err(PublishFailure::Unknown)
            }
        }
    }

    fn publish(
        &mut self,
        ctx: &mut Context<Self>,
        id: SessionId,
        publish: crate::registry::Publish,
        reference: Ref,
        ticket: crate::outbox::InFlight,
    ) {
        let crate::registry::Publish { room, body, id: publish_id } = publish;
        let refusal = match self.local_member(id, &room) {
            None => Some((ErrorCode::NotMember, format!("join {room} before publishing to it"))),
            Some(member) if member.read_only => {
                self.metrics.auth_failure(AuthFailure::Forbidden);
                Some((ErrorCode::Forbidden, format!("your grant in {room} is read-only")))
            }
            Some(_) => None,
        };
        if let Some((code, message)) = refusal {
            // After the replies to the publishes before it.
            let n = self.pipeline_publish(id);
            return self.publish_done(id, n, Some(frame::error(code, &message, reference.as_deref())), ctx);
        }
        let Some(sender) = self.sessions.get(&id).map(|entry| entry.sender.clone()) else {
            return;
        };
        let n = self.pipeline_publish(id);
        let body = Body::Json(body.get());
        let name = room.clone();
        self.publish_message(
            ctx,
            Turn::After(id),
            &name,
            &sender,
            body,
            publish_id.as_ref(),
            move |registry, seq, ctx| {
                let reply = match seq {
                    Ok(seq) => {
                        let reply = reference.is_some().then(|| frame::ok(Some(seq), reference.as_deref()));
                        return registry.ack_after_delivery(&room, Ack { seq, id, n, reply, _ticket: ticket }, ctx);
                    }
                    Err(PublishFailure::Unavailable(why)) => {
                        Some(frame::error(ErrorCode::Unavailable, &unavailable(&why), reference.as_deref()))
                    }
                    Err(PublishFailure::TooManyRooms) => {
                        let message = "the server holds its most rooms (rooms.max_rooms)";
                        Some(frame::error(ErrorCode::TooManyRooms, message, reference.as_deref()))
                    }
                    Err(PublishFailure::Unknown) => {
                        // After the replies before it, the connection closes
                        // (1011): the client finds out, as after a drop.
                        if let Some(entry) = registry.sessions.get(&id) {
                            entry.handle.request_close(CloseRequest::outcome_unknown());
                        }
                        None
                    }
                };
                registry.publish_done(id, n, reply, ctx);
            },
        );
    }

    fn direct_request(
        &mut self,
        ctx: &mut Context<Self>,
        id: SessionId,
        to: &str,
        body: &RawValue,
        reference: Ref,
        ticket: crate::outbox::InFlight,
    ) {
        let Some(sender) = self.sessions.get(&id).map(|entry| entry.sender.clone()) else {
            return;
        };
        // Another node's session: through Redis; this node's: at once.
        let work = match SessionId::from_wire(to) {
            Some(target) => self.broker.direct(target, format!("{target}\n{sender}\n{}", body.get())),
            None => None,
        };
        let Some(work) = work else {
            return self.direct(id, to, body, reference.as_deref());
        };
        let to = to.to_string();
        self.in_broker(ctx, Turn::Alone(id), work, move |registry, sent, _| {
            let _ticket = ticket;
            match sent {
                Ok(true) => {
                    if reference.is_some() {
                        registry.reply(id, frame::ok(None, reference.as_deref()));
                    }
                }
                Ok(false) => {
                    registry.error(id, ErrorCode::NotFound, &format!("no session {to:?}"), reference.as_deref())
                }
                Err(e) => {
                    registry.error(id, ErrorCode::Unavailable, &unavailable(&e.to_string()), reference.as_deref())
                }
            }
        });
    }

    /// A `direct` from another node for a session here: `TO\nSENDER\nBODY`.
    pub(in crate::registry) fn direct_arrived(&mut self, payload: &str) {
        let mut parts = payload.splitn(3, '\n');
        let (Some(to), Some(sender), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
            return;
        };
        let Some(entry) = SessionId::from_wire(to).and_then(|to| self.sessions.get(&to)) else {
            return;
        };
        let frame = match entry.kind {
            MemberKind::Json => frame::direct(sender, body),
            MemberKind::Raw => match serde_json::from_str::<&RawValue>(body) {
                Ok(body) => protocol::body_as_raw_text(body),
                Err(_) => return,
            },
        };
        let handle = entry.handle.clone();
        super::deliver(&handle, OutFrame::Text(frame.into()), &mut self.slow);
    }

    /// The session's new nick in its `members` entries, then its `ok`
    /// (a `members` asked after it lists the new nick, as on one process).
    fn rename_everywhere(
        &mut self,
        ctx: &mut Context<Self>,
        id: SessionId,
        reference: Ref,
        ticket: crate::outbox::InFlight,
    ) {
        let Some(entry) = self.sessions.get(&id) else {
            return;
        };
        let member_entry = self.member_entry(entry, id);
        let rooms = entry.rooms.clone();
        let work = self.broker.rename(rooms, id, member_entry);
        self.in_broker(ctx, Turn::Alone(id), work, move |registry, renamed, _| {
            let _ticket = ticket;
            let ok = renamed.map(|()| frame::ok(None, reference.as_deref()));
            registry.answer(id, ok, reference.as_deref());
        });
    }

    /// A raw member's frame: text becomes a message with a `seq`, binary
    /// goes to the room's raw members on every node.
    pub(in crate::registry) fn relay_raw(&mut self, msg: RawFrame, ctx: &mut Context<Self>) {
        let RawFrame { id, frame, ticket } = msg;
        let Some(entry) = self.sessions.get(&id) else {
            return;
        };
        let (Some(name), sender) = (entry.rooms.first().cloned(), entry.sender.clone()) else {
            return;
        };
        match self.local_member(id, &name) {
            None => return,
            Some(member) if member.read_only => {
                self.metrics.auth_failure(AuthFailure::Forbidden);
                return;
            }
            Some(_) => {}
        }
        match frame {
            OutFrame::Text(body) => {
                let n = self.pipeline_publish(id);
                let text = Body::Text(&body);
                self.publish_message(
                    ctx,
                    Turn::After(id),
                    &name,
                    &sender,
                    text,
                    None,
                    move |registry, published, ctx| {
                        let _ticket = ticket;
                        if let Err(why) = published {
                            log::debug!("cluster: a raw frame was not published: {why:?}");
                        }
                        registry.publish_done(id, n, None, ctx);
                    },
                );
            }
            OutFrame::Binary(bytes) => {
                // Binary frames are not kept: through the room's channel to
                // its raw members (on every node); to this node's at once
                // when Redis cannot take it.
                match self.broker.relay_binary(&name, id, bytes.clone()) {
                    Done::Now(Err(_)) => self.binary_arrived(&name, Some(id), bytes),
                    work => self.in_broker(ctx, Turn::Alone(id), work, move |_, _, _| {
                        let _ticket = ticket;
                    }),
                }
            }
        }
    }
}

impl Registry {
    /// A raw connection's join, in cluster mode: answered (for the HTTP
    /// upgrade) when Redis has.
    pub(in crate::registry) fn connect_raw(
        &mut self,
        msg: crate::registry::messages::ConnectRaw,
        ctx: &mut Context<Self>,
    ) -> actix::ResponseActFuture<Self, Result<(), crate::registry::messages::RawRefusal>> {
        use crate::registry::messages::RawRefusal;
        let (done, outcome) = tokio::sync::oneshot::channel();
        let refused = |refusal| Box::pin(actix::fut::ready(Err(refusal)));
        if self.broker.down().is_some() {
            return refused(RawRefusal::Unavailable);
        }
        let id = msg.handle.id();
        let entry = crate::registry::Entry::new(
            msg.handle,
            crate::registry::members::MemberKind::Raw,
            msg.identity,
            self.limits.auth,
        );
        self.sessions.insert(id, entry);
        // The join below answers after this (the same session's turn).
        self.connected(id, ctx, tokio::sync::oneshot::channel().0);
        let join = super::rooms::RoomJoin {
            room: msg.room,
            read: crate::broker::JoinRead::Recent(0),
            access: msg.access,
            grant: None,
        };
        self.join_room(ctx, id, join, move |_, outcome, _| {
            let result = match outcome {
                super::rooms::JoinOutcome::Joined(_) => Ok(()),
                super::rooms::JoinOutcome::Full(_) => Err(RawRefusal::RoomFull),
                super::rooms::JoinOutcome::TooManyRooms => Err(RawRefusal::TooManyRooms),
                super::rooms::JoinOutcome::Unavailable(_) => Err(RawRefusal::Unavailable),
            };
            let _ = done.send(result);
        });
        let outcome = async move { outcome.await.unwrap_or(Err(RawRefusal::Unavailable)) };
        Box::pin(outcome.into_actor(self))
    }
}
