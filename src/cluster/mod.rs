//! Rooms across several roomcast processes through Redis
//! (`shared/spec/cluster.md`). Work in progress: what is here is the part
//! of the Redis broker that lives in Redis itself.
//!
//! - [`keys`]: the names of a room's keys and channel.
//! - [`publish`]: the one script per publish that gives a message its `seq`,
//!   keeps it in the room's history and publishes it, atomically.

pub mod keys;
pub mod publish;
