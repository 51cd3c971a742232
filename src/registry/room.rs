//! One room on this node: its log (`seq`, epoch, history) and the members
//! connected here.

use super::history::{HistoryLimits, RoomLog};
use super::members::Members;

pub struct Room {
    pub log: RoomLog,
    pub members: Members,
}

impl Room {
    pub fn new(limits: HistoryLimits) -> Self {
        Room { log: RoomLog::new(limits), members: Members::default() }
    }
}
