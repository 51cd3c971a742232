//! `auth.max_connections_per_user`: open connections per user (`sub`),
//! counted by [`KeyedLimit`]. Anonymous connections are not counted here
//! (`max_connections_per_ip` bounds them).

use std::sync::Arc;

use crate::limit::{KeyedLimit, Slot};

pub type UserLimit = KeyedLimit<Arc<str>>;
pub type UserSlot = Slot<Arc<str>>;
