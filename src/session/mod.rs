//! Sessions: one actix actor per WebSocket connection.
//!
//! [`Session`] is the actor. It owns what every endpoint shares (the
//! [`Core`]): the input ([`inbound`]: frames, limits, fragments, UTF-8),
//! ping heartbeats, the close handshake either way, and writing the frames
//! queued on its [`SessionHandle`]. What differs between `/ws`,
//! `/ws/{room}` and `/echo` is an [`Endpoint`]: [`json::JsonRoom`],
//! [`raw::RawRelay`], [`echo::Echo`], and [`refused::Refused`] for a
//! connection authentication turned away after the upgrade.
//!
//! Closing, when the server starts it (a protocol error, a heartbeat
//! timeout, a slow consumer, the drain): the close frame is written, the
//! input discards everything but the client's close frame, and the session
//! ends when that arrives. If it does not arrive soon, the watchdog stops
//! the session (or, if its actor cannot run, cuts the connection).

pub mod assemble;
pub mod echo;
pub mod heartbeat;
pub mod inbound;
pub mod json;
pub mod ratelimit;
pub mod raw;
pub mod refused;
pub mod scan;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use actix::{Actor, ActorContext, AsyncContext, StreamHandler};
use actix_web::error::PayloadError;
use actix_web_actors::ws::{self, CloseReason, ProtocolError, WebsocketContext};
use bytes::Bytes;
use bytestring::ByteString;
use futures_core::Stream;

use crate::auth::Policy;
use crate::auth::users::UserSlot;
use crate::limit::peers::PeerSlot;
use crate::metrics::{ConnectionSlot, Metrics};
use crate::outbox::{CloseRequest, Fragment, OutFrame, Push, SessionHandle, Signal};
use crate::protocol::close;
use actix_http::ws::Item;
use assemble::Message;
use heartbeat::Watchdog;
use inbound::{Inbound, InboundStream};

pub type WsContext<E> = WebsocketContext<Session<E>>;

/// How much queued data one poll of the connection moves into its write
/// buffer; the rest waits in the bounded queue (see `Signals`).
const WRITE_BATCH_BYTES: usize = 64 * 1024;

/// What an endpoint does with whole messages.
pub trait Endpoint: Sized + Unpin + 'static {
    /// For logs.
    const NAME: &'static str;

    fn started(&mut self, _core: &mut Core) {}

    fn text(&mut self, core: &mut Core, text: ByteString);

    fn binary(&mut self, core: &mut Core, data: Bytes);

    /// The frame that says why authentication closes the session, written
    /// right before the close frame (`/ws` sends an `error`; the others
    /// only the close reason).
    fn farewell(&self, _policy: Policy) -> Option<String> {
        None
    }
}

/// Everything a session needs from the server, gathered before the upgrade.
pub struct SessionParts {
    pub handle: SessionHandle,
    pub slot: ConnectionSlot,
    pub peer_slot: Option<PeerSlot>,
    pub user_slot: Option<UserSlot>,
    pub metrics: Arc<Metrics>,
    pub watchdog: Watchdog,
    pub draining: Arc<AtomicBool>,
    pub max_message_bytes: usize,
    pub input: actix_web::web::Payload,
}

/// The endpoint-independent state of a session.
pub struct Core {
    pub handle: SessionHandle,
    pub metrics: Arc<Metrics>,
    watchdog: Watchdog,
    draining: Arc<AtomicBool>,
    /// We sent a close frame and wait for the client's.
    closing: bool,
    /// Frames taken from the queue; empty between uses, kept for its buffer.
    batch: VecDeque<OutFrame>,
    _slot: ConnectionSlot,
    _peer_slot: Option<PeerSlot>,
    _user_slot: Option<UserSlot>,
}

impl Core {
    /// Sends a reply this session produced itself (one that needs no room
    /// state, such as `pong` and parse errors). It waits in the queue like
    /// everything else, so it keeps its place among the registry's frames
    /// and never lands inside a message going out in fragments.
    pub fn reply(&self, frame: impl Into<ByteString>) {
        self.send(OutFrame::Text(frame.into()));
    }

    /// Queues a frame like the registry does, within the outbound bounds.
    pub fn send(&self, frame: OutFrame) {
        if self.handle.push(frame) == Push::Full {
            self.handle.close_slow(&self.metrics);
        }
    }

    /// Moves the next batch of queued frames, at most `budget` bytes, into
    /// the connection; returns whether there was anything.
    fn write_queued<E: Endpoint>(&mut self, ctx: &mut WsContext<E>, budget: usize) -> bool {
        let fragment = self.handle.take_frames(&mut self.batch, budget);
        let whole = self.batch.len() as u64;
        for frame in self.batch.drain(..) {
            ctx.write_raw(match frame {
                OutFrame::Text(text) => ws::Message::Text(text),
                OutFrame::Binary(data) => ws::Message::Binary(data),
            });
        }
        let last = fragment.as_ref().is_some_and(|fragment| fragment.last);
        Metrics::add(&self.metrics.messages_out, whole + u64::from(last));
        if let Some(Fragment { text, data, first, last }) = fragment {
            ctx.write_raw(ws::Message::Continuation(match (first, last, text) {
                (true, _, true) => Item::FirstText(data),
                (true, _, false) => Item::FirstBinary(data),
                (false, false, _) => Item::Continue(data),
                (false, true, _) => Item::Last(data),
            }));
            return true;
        }
        whole > 0
    }

    /// Moves everything queued into the connection (a drain, the answer to
    /// the client's close).
    fn write_all_queued<E: Endpoint>(&mut self, ctx: &mut WsContext<E>) {
        while self.write_queued(ctx, usize::MAX) {}
    }

    /// Sends our close frame; from now on only the client's close matters
    /// (the input discards everything else once a close is asked for).
    fn begin_close<E: Endpoint>(&mut self, code: u16, reason: &str, ctx: &mut WsContext<E>) {
        ctx.close(Some(CloseReason { code: code.into(), description: Some(reason.to_string()) }));
        self.closing = true;
    }
}

pub struct Session<E> {
    // Dropped first: an endpoint's registry membership ends (and its
    // presence leave goes out) before the connection stops counting.
    endpoint: E,
    core: Core,
}

impl<E: Endpoint> Session<E> {
    /// The session as the body of the upgrade's response: the actor in its
    /// context, reading `parts.input`.
    pub fn body(parts: SessionParts, endpoint: E) -> impl Stream<Item = Result<Bytes, actix_web::Error>> {
        // actix-web-actors' own frame reader gets a stream that has ended,
        // so the actor drops it at its first poll; the connection's bytes go
        // to the session's input.
        let unused = futures_util::stream::empty::<Result<Bytes, PayloadError>>();
        WebsocketContext::with_factory(unused, move |ctx| {
            // Added before the signals (in `started`): in each poll the
            // actor reads, then writes what that queued.
            ctx.add_stream(InboundStream::new(parts.input, parts.handle.clone(), parts.max_message_bytes));
            let core = Core {
                handle: parts.handle,
                metrics: parts.metrics,
                watchdog: parts.watchdog,
                draining: parts.draining,
                closing: false,
                batch: VecDeque::new(),
                _slot: parts.slot,
                _peer_slot: parts.peer_slot,
                _user_slot: parts.user_slot,
            };
            Session { endpoint, core }
        })
    }

    fn message(&mut self, message: Message) {
        if self.core.closing {
            return;
        }
        Metrics::inc(&self.core.metrics.messages_in);
        match message {
            Message::Text(text) => self.endpoint.text(&mut self.core, text),
            Message::Binary(data) => self.endpoint.binary(&mut self.core, data),
        }
    }

    /// The client broke the protocol: close with `code`, then wait a little
    /// for its close.
    fn fail(&mut self, code: u16, reason: &str, ctx: &mut WsContext<E>) {
        if self.core.closing {
            return;
        }
        Metrics::inc(&self.core.metrics.protocol_errors);
        log::info!("session {}: closing {code} ({reason})", self.core.handle.id());
        // Answers to what came before the error go first (the client may
        // well be reading); the request puts the watchdog's deadline on
        // the close.
        self.core.write_all_queued(ctx);
        self.core.handle.request_close(CloseRequest::cause(code));
        self.core.begin_close(code, reason, ctx);
    }
}

impl<E: Endpoint> Actor for Session<E> {
    type Context = WsContext<E>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let handle = &self.core.handle;
        log::debug!("session {} opened on {}", handle.id(), E::NAME);
        self.core.watchdog.watch(handle.clone());
        // A drain that began during the handshake did not see this session.
        if self.core.draining.load(Ordering::Acquire) {
            handle.request_close(CloseRequest::drain(close::GOING_AWAY));
        }
        // After the input (see `body`).
        ctx.add_stream(handle.signals());
        self.endpoint.started(&mut self.core);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        let timing = self.core.watchdog.timing();
        // A dead or too slow client gets the grace period to take the last
        // bytes; any other gets the heartbeat timeout.
        let deadline = self.core.handle.close_request().is_some_and(|r| r.deadline);
        self.core.handle.set_ended(if deadline { timing.grace } else { timing.timeout });
        log::debug!("session {} closed", self.core.handle.id());
    }
}

impl<E: Endpoint> StreamHandler<Inbound> for Session<E> {
    fn handle(&mut self, item: Inbound, ctx: &mut Self::Context) {
        self.core.handle.heard();
        match item {
            Inbound::Message(message) => self.message(message),
            // Nothing more is sent after our close frame.
            Inbound::Ping(payload) if !self.core.closing => ctx.pong(&payload),
            Inbound::Ping(_) | Inbound::Pong => {}
            Inbound::Close(reason) => {
                if !self.core.closing {
                    // What was queued goes first; then the answer, with the
                    // client's code (RFC 6455 §5.5.1).
                    self.core.write_all_queued(ctx);
                    ctx.close(reason.map(|r| CloseReason { code: r.code, description: None }));
                }
                ctx.stop();
            }
            Inbound::Fail(code, reason) => self.fail(code, &reason, ctx),
        }
    }

    /// The TCP connection ended.
    fn finished(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// actix-web-actors' own frame stream, which the session does not use: it
/// reads a stream that has ended (see [`Session::body`]), and the
/// connection's bytes go to [`InboundStream`] instead. Its end is not the
/// connection's.
impl<E: Endpoint> StreamHandler<Result<ws::Message, ProtocolError>> for Session<E> {
    fn handle(&mut self, _item: Result<ws::Message, ProtocolError>, _ctx: &mut Self::Context) {}

    fn finished(&mut self, _ctx: &mut Self::Context) {}
}

impl<E: Endpoint> StreamHandler<Signal> for Session<E> {
    fn handle(&mut self, signal: Signal, ctx: &mut Self::Context) {
        match signal {
            // Anything queued after our close frame is dropped.
            Signal::Frames if self.core.closing => {
                while self.core.handle.take_frames(&mut VecDeque::new(), usize::MAX).is_some() {}
            }
            Signal::Frames => {
                self.core.write_queued(ctx, WRITE_BATCH_BYTES);
            }
            Signal::Ping if self.core.closing => {}
            Signal::Ping => ctx.ping(b""),
            // fail() has sent a close frame with its reason already.
            Signal::Close(_) if self.core.closing => {}
            Signal::Close(request) => {
                let reason = match (request.policy, request.code) {
                    _ if request.outcome_unknown => "a publish's outcome is unknown: see if it arrived",
                    (Some(policy), _) => policy.error_code().as_str(),
                    (None, close::TRY_AGAIN_LATER) => "too slow",
                    (None, close::HEARTBEAT_TIMEOUT) => "heartbeat timeout",
                    _ => "server shutting down",
                };
                if request.deadline {
                    log::info!("session {}: closing {} ({reason})", self.core.handle.id(), request.code);
                } else {
                    // A drain: deliver what is queued first.
                    self.core.write_all_queued(ctx);
                }
                if let Some(frame) = request.policy.and_then(|policy| self.endpoint.farewell(policy)) {
                    ctx.write_raw(ws::Message::Text(frame.into()));
                    Metrics::inc(&self.core.metrics.messages_out);
                }
                self.core.begin_close(request.code, reason, ctx);
            }
            Signal::Stop => {
                log::info!("session {}: no close frame from the client in time, closing the connection", {
                    self.core.handle.id()
                });
                ctx.stop();
            }
        }
    }

    fn finished(&mut self, _ctx: &mut Self::Context) {}
}
