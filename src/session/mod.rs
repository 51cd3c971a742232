//! Sessions: one actix actor per WebSocket connection.
//!
//! [`Session`] is the actor. It owns what every endpoint shares (the
//! [`Core`]): joining fragments, the message size limit, UTF-8 checks, ping
//! heartbeats, answering and sending close frames, and writing the frames
//! the registry queued on its [`SessionHandle`]. What differs between `/ws`,
//! `/ws/{room}` and `/echo` is an [`Endpoint`]: [`json::JsonRoom`],
//! [`raw::RawRelay`], [`echo::Echo`].

pub mod assemble;
pub mod echo;
pub mod guard;
pub mod handle;
pub mod heartbeat;
pub mod json;
pub mod ratelimit;
pub mod raw;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use actix::{Actor, ActorContext, AsyncContext, StreamHandler};
use actix_web_actors::ws::{self, CloseReason, ProtocolError, WebsocketContext};
use bytes::Bytes;
use bytestring::ByteString;

use crate::metrics::{ConnectionSlot, Metrics};
use crate::protocol::close;
use assemble::{AssembleError, Assembler, Message};
use guard::Tripped;
use handle::{CloseRequest, OutFrame, SessionHandle, Signal};
use heartbeat::Watchdog;

pub type WsContext<E> = WebsocketContext<Session<E>>;

/// How much queued data one wake-up moves into the connection's write
/// buffer; the rest waits in the bounded queue (see `take_frames`).
const WRITE_BATCH_BYTES: usize = 64 * 1024;

/// What an endpoint does with whole messages.
pub trait Endpoint: Sized + Unpin + 'static {
    /// For logs.
    const NAME: &'static str;

    fn started(&mut self, _core: &mut Core, _ctx: &mut WsContext<Self>) {}

    fn text(&mut self, core: &mut Core, text: ByteString, ctx: &mut WsContext<Self>);

    fn binary(&mut self, core: &mut Core, data: Bytes, ctx: &mut WsContext<Self>);

    /// The session has ended, whatever the reason.
    fn stopped(&mut self, _core: &Core) {}
}

/// Everything a session needs from the server, gathered before the upgrade.
pub struct SessionParts {
    pub handle: SessionHandle,
    pub slot: ConnectionSlot,
    pub tripped: Tripped,
    pub metrics: Arc<Metrics>,
    pub watchdog: Watchdog,
    pub draining: Arc<AtomicBool>,
    pub max_message_bytes: usize,
}

/// The endpoint-independent state of a session.
pub struct Core {
    pub handle: SessionHandle,
    pub metrics: Arc<Metrics>,
    watchdog: Watchdog,
    draining: Arc<AtomicBool>,
    assembler: Assembler,
    tripped: Tripped,
    /// We sent a close frame and wait for the client's.
    closing: bool,
    /// Frames taken from the queue; empty between uses, kept for its buffer.
    batch: VecDeque<OutFrame>,
    _slot: ConnectionSlot,
}

impl Core {
    /// Writes a frame this session produced itself (replies that need no
    /// room state, such as `pong` and parse errors).
    pub fn reply<E: Endpoint>(&self, ctx: &mut WsContext<E>, frame: impl Into<ByteString>) {
        ctx.text(frame);
        Metrics::inc(&self.metrics.messages_out);
    }

    /// Echoes a binary message (the only binary frames a session makes).
    pub fn reply_binary<E: Endpoint>(&self, ctx: &mut WsContext<E>, data: Bytes) {
        ctx.binary(data);
        Metrics::inc(&self.metrics.messages_out);
    }

    /// Moves queued frames into the connection, at most `budget` bytes.
    fn write_queued<E: Endpoint>(&mut self, ctx: &mut WsContext<E>, budget: usize) {
        self.handle.take_frames(&mut self.batch, budget);
        Metrics::add(&self.metrics.messages_out, self.batch.len() as u64);
        for frame in self.batch.drain(..) {
            ctx.write_raw(match frame {
                OutFrame::Text(text) => ws::Message::Text(text),
                OutFrame::Binary(data) => ws::Message::Binary(data),
            });
        }
    }
}

pub struct Session<E> {
    core: Core,
    endpoint: E,
}

impl<E: Endpoint> Session<E> {
    pub fn new(parts: SessionParts, endpoint: E) -> Self {
        let core = Core {
            handle: parts.handle,
            metrics: parts.metrics,
            watchdog: parts.watchdog,
            draining: parts.draining,
            assembler: Assembler::new(parts.max_message_bytes),
            tripped: parts.tripped,
            closing: false,
            batch: VecDeque::new(),
            _slot: parts.slot,
        };
        Session { core, endpoint }
    }

    fn message(&mut self, message: Message, ctx: &mut WsContext<E>) {
        if self.core.closing {
            return;
        }
        Metrics::inc(&self.core.metrics.messages_in);
        match message {
            Message::Text(text) => self.endpoint.text(&mut self.core, text, ctx),
            Message::Binary(data) => self.endpoint.binary(&mut self.core, data, ctx),
        }
    }

    /// Fails the connection: close frame, then stop without waiting.
    fn fail(&mut self, code: u16, reason: &str, ctx: &mut WsContext<E>) {
        Metrics::inc(&self.core.metrics.protocol_errors);
        log::info!("session {}: closing {code} ({reason})", self.core.handle.id());
        ctx.close(Some(CloseReason { code: code.into(), description: Some(reason.to_string()) }));
        ctx.stop();
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
            handle.request_close(CloseRequest { code: close::GOING_AWAY, cut_after_grace: false });
        }
        ctx.add_stream(handle.signals());
        self.endpoint.started(&mut self.core, ctx);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        let timing = self.core.watchdog.timing();
        // A dead or too slow client gets the grace period to take its close
        // frame; any other gets the heartbeat timeout for the last bytes.
        let cut = self.core.handle.close_request().is_some_and(|r| r.cut_after_grace);
        self.core.handle.set_ended(if cut { timing.grace } else { timing.timeout });
        self.endpoint.stopped(&self.core);
        log::debug!("session {} closed", self.core.handle.id());
    }
}

impl<E: Endpoint> StreamHandler<Result<ws::Message, ProtocolError>> for Session<E> {
    fn handle(&mut self, item: Result<ws::Message, ProtocolError>, ctx: &mut Self::Context) {
        let frame = match item {
            Ok(frame) => frame,
            Err(error) => {
                let (code, reason) = close_for(&error, self.core.tripped.get());
                return self.fail(code, &reason, ctx);
            }
        };
        self.core.handle.heard();
        match frame {
            ws::Message::Text(text) => self.message(Message::Text(text), ctx),
            ws::Message::Binary(data) => self.message(Message::Binary(data), ctx),
            ws::Message::Continuation(item) => match self.core.assembler.push(item) {
                Ok(Some(message)) => self.message(message, ctx),
                Ok(None) => {}
                Err(AssembleError::TooBig) => self.fail(close::TOO_BIG, "message too big", ctx),
                Err(AssembleError::InvalidUtf8) => self.fail(close::INVALID_DATA, "invalid UTF-8", ctx),
                Err(AssembleError::OutOfOrder) => self.fail(close::PROTOCOL_ERROR, "fragments out of order", ctx),
            },
            // Nothing more is sent after our close frame.
            ws::Message::Ping(payload) if !self.core.closing => ctx.pong(&payload),
            ws::Message::Ping(_) => {}
            ws::Message::Pong(_) | ws::Message::Nop => {}
            ws::Message::Close(reason) => {
                if !self.core.closing {
                    // Answer with the client's code (RFC 6455 §5.5.1).
                    ctx.close(reason.map(|r| CloseReason { code: r.code, description: None }));
                }
                ctx.stop();
            }
        }
    }

    /// The TCP connection ended without a close frame.
    fn finished(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl<E: Endpoint> StreamHandler<Signal> for Session<E> {
    fn handle(&mut self, signal: Signal, ctx: &mut Self::Context) {
        match signal {
            Signal::Frames if self.core.closing => self.core.handle.take_frames(&mut VecDeque::new(), usize::MAX),
            Signal::Frames => self.core.write_queued(ctx, WRITE_BATCH_BYTES),
            Signal::Ping if self.core.closing => {}
            Signal::Ping => ctx.ping(b""),
            Signal::Close(request) => {
                let reason = match request.code {
                    close::TRY_AGAIN_LATER => "too slow",
                    close::HEARTBEAT_TIMEOUT => "heartbeat timeout",
                    _ => "server shutting down",
                };
                if request.cut_after_grace {
                    log::info!("session {}: closing {} ({reason})", self.core.handle.id(), request.code);
                } else {
                    // A drain: deliver what is queued first.
                    self.core.write_queued(ctx, usize::MAX);
                }
                // Then wait for the client's close: a client that is still
                // sending would otherwise get a reset that can destroy the
                // close frame before it reads it. The watchdog cuts 1011 and
                // 1013 after a grace period; a drain ends at shutdown_timeout.
                ctx.close(Some(CloseReason { code: request.code.into(), description: Some(reason.into()) }));
                self.core.closing = true;
            }
        }
    }

    fn finished(&mut self, _ctx: &mut Self::Context) {}
}

/// The close code for a frame the decoder refused.
fn close_for(error: &ProtocolError, tripped: bool) -> (u16, String) {
    if tripped {
        return (close::TOO_BIG, "message too big".into());
    }
    match error {
        ProtocolError::Overflow => (close::TOO_BIG, "message too big".into()),
        // actix-web-actors reports invalid UTF-8 in a text frame as an I/O
        // error carrying std's Utf8Error message.
        ProtocolError::Io(e) if e.to_string().contains("utf-8") => (close::INVALID_DATA, "invalid UTF-8".into()),
        other => (close::PROTOCOL_ERROR, other.to_string()),
    }
}
