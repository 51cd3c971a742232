//! The broker of a cluster (`shared/spec/cluster.md`): rooms across
//! several roomcast processes through Redis. Each piece is a script or a
//! connection tested against a real Redis; [`RedisBroker`] answers the
//! hub's calls with them, on the node's Redis thread.
//!
//! - [`history`]: reading a range of a room's history with its epoch.
//! - [`keys`]: the names of a room's keys and channel.
//! - [`liveness`]: which nodes are alive, without false deaths when Redis stalls.
//! - [`node`]: the node's life: its connection, number, beats, deaths.
//! - [`nodes`]: a node's number, its session ids, its `direct` channel.
//! - [`presence`]: who is in each room on every node, and the rooms with members.
//! - [`publish`]: the one script per publish that gives a message its `seq`,
//!   keeps it in the room's history and publishes it, atomically.
//! - [`subscriber`]: a node's pub/sub connection, subscribed again (and
//!   said so) after every drop; what it hears becomes the hub's events.
//! - [`users`]: open connections per user across the cluster.

mod broker;
pub mod history;
pub mod keys;
pub mod liveness;
pub mod node;
pub mod nodes;
pub mod presence;
pub mod publish;
pub mod subscriber;
pub mod users;

pub use broker::{RedisBroker, start_io_thread};

/// `body` with the Lua functions it calls (`shared`, maybe empty), made a
/// script once, in `cell`. A `#!lua` line stays the first: Redis reads a
/// script's flags from its first line only.
pub(crate) fn script_once(
    cell: &'static std::sync::OnceLock<redis::Script>,
    shared: &str,
    body: &str,
) -> &'static redis::Script {
    cell.get_or_init(|| match body.strip_prefix("#!").and_then(|_| body.split_once('\n')) {
        Some((shebang, rest)) => redis::Script::new(&format!("{shebang}\n{shared}\n{rest}")),
        None => redis::Script::new(&format!("{shared}\n{body}")),
    })
}

/// Whether Redis answered that it takes no writes now: out of memory
/// (`maxmemory`), a read-only replica (after a failover), or unable to
/// persist.
pub fn refuses_writes(error: &redis::RedisError) -> bool {
    matches!(error.code(), Some("OOM" | "READONLY" | "MISCONF"))
}

/// Loads the scripts whose order matters into `connection`'s Redis before
/// they are first run: a script Redis does not know is sent again after a
/// round trip, behind whatever was sent meanwhile (a publish behind the
/// session's next one, a release of a user's connection behind its leave).
pub async fn load_scripts<C: redis::aio::ConnectionLike>(connection: &mut C) -> redis::RedisResult<()> {
    let scripts = presence::scripts().into_iter().chain(users::scripts()).chain(publish::scripts());
    for script in scripts {
        let _: String = script.prepare_invoke().load_async(connection).await?;
    }
    Ok(())
}
