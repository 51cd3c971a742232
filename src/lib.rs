//! roomcast: a realtime WebSocket room server.
//!
//! The modules form layers; each names only modules below it
//! (`tests/layers.rs` keeps it so). See `docs/architecture.md` for the flow
//! of a message.
//!
//! ```text
//!   server  reload                  binds, drains on signals; SIGHUP
//!   http                            routes, /healthz, /metrics, /api, the upgrade gate
//!   session                         one actor per WebSocket connection
//!   registry                        the hub: members, fan-out, one path for both brokers
//!   broker                          the seam: memory (one process) and Redis (a cluster)
//!   outbox   live                   what the hub hands a session; the settings in effect
//!   auth   tls   limit              tokens and grants; certificates; counted connections
//!   protocol  config  metrics  logging    the wire; plain settings; counters; log filter
//! ```
//!
//! - [`protocol`]: the wire only: request parsing, server frames, room names,
//!   session ids, close codes.
//! - [`config`]: every setting, from TOML and `ROOMCAST_*` variables,
//!   validated, and what is parsed from them (the names the server answers
//!   to, the origin policy).
//! - [`metrics`]: counters and gauges in the Prometheus text format.
//! - [`logging`]: env_logger behind a filter SIGHUP can change.
//! - [`limit`]: connections counted per client address or user.
//! - [`tls`]: `[server.tls]` read into a rustls configuration.
//! - [`auth`]: signed tokens: who a connection is, which rooms it may use,
//!   and why authentication closes a session.
//! - [`live`]: the configuration in effect and what is built from it once,
//!   swapped whole by SIGHUP.
//! - [`outbox`]: a session's bounded outbound queue and close requests: all
//!   the hub and the watchdog reach of a session.
//! - [`broker`]: what rooms share, behind the `Broker` and `Presence`
//!   traits: the memory broker of one process, and the Redis broker of a
//!   cluster (scripts, subscriber, the node's beats).
//! - [`registry`]: the hub: the actor that owns rooms and the session
//!   directory and relays messages, alone or with a cluster.
//! - [`session`]: the actor of each WebSocket connection (`/ws`,
//!   `/ws/{room}`, `/echo`) and its heartbeat watchdog.
//! - [`http`]: routes, `/healthz`, `/metrics`, `/api`, and the WebSocket
//!   upgrade gate.
//! - [`reload`]: SIGHUP: the configuration read again and applied live.
//! - [`server`]: binds, announces `listening on ...`, drains on signals.
//! - [`load`], [`client`], [`dial`]: `roomcast load` (the load tester),
//!   `roomcast client`, and the client connections both open.

pub mod auth;
pub mod broker;
pub mod client;
pub mod config;
pub mod dial;
pub mod http;
pub mod limit;
pub mod live;
pub mod load;
pub mod logging;
pub mod metrics;
pub mod outbox;
pub mod protocol;
pub mod registry;
pub mod reload;
pub mod server;
pub mod session;
pub mod tls;

pub use config::Settings;
