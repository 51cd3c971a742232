//! roomcast: a realtime WebSocket room server.
//!
//! How the modules fit together (see `docs/architecture.md` for the flow of
//! a message):
//!
//! - [`config`]: every setting, from TOML and `ROOMCAST_*` variables, validated.
//! - [`protocol`]: the wire only: request parsing, server frames, room names,
//!   session ids, close codes.
//! - [`server`]: binds, announces `listening on ...`, drains on signals.
//! - [`tls`]: `[server.tls]` read into a rustls configuration.
//! - [`auth`]: signed tokens: who a connection is and which rooms it may use.
//! - [`http`]: routes, the origin policy, `/healthz`, `/metrics`, `/api`,
//!   and the WebSocket upgrade gate.
//! - [`session`]: one actor per WebSocket connection (`/ws`, `/ws/{room}`,
//!   `/echo`), its bounded outbound queue and the heartbeat watchdog.
//! - [`registry`]: the actor that owns rooms and the session directory and
//!   relays messages.
//! - [`cluster`]: rooms across processes through Redis (in progress: the
//!   Redis side of a publish).
//! - [`limit`]: connections counted per client address or user.
//! - [`metrics`]: counters and gauges in the Prometheus text format.
//! - [`logging`]: env_logger behind a filter SIGHUP can change.
//! - [`reload`]: SIGHUP: the configuration read again and applied live.
//! - [`load`]: `roomcast load`, the load tester, one module per scenario.
//! - [`client`]: `roomcast client`, interactive or for scripts.
//! - [`dial`]: opening client connections, for the load tester and the client.

pub mod auth;
pub mod client;
pub mod cluster;
pub mod config;
pub mod dial;
pub mod http;
pub mod limit;
pub mod load;
pub mod logging;
pub mod metrics;
pub mod protocol;
pub mod registry;
pub mod reload;
pub mod server;
pub mod session;
pub mod tls;

pub use config::Settings;
