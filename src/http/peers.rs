//! `server.max_connections_per_ip`: WebSocket connections per client
//! address. IPv4 addresses count one by one; IPv6 addresses by their /64,
//! the block one subscriber usually holds (anyone holding one can use all
//! 2^64 addresses in it). IPv4 addresses mapped into IPv6 count as IPv4.
//!
//! Without a limit nothing is counted (a lock per handshake for nothing);
//! a limit set by SIGHUP counts the connections opened from then on.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// What one address counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer(IpAddr);

impl Peer {
    pub fn of(address: IpAddr) -> Peer {
        match address {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Peer(IpAddr::V4(v4)),
                None => {
                    let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                    Peer(IpAddr::V6(Ipv6Addr::from(prefix)))
                }
            },
            v4 => Peer(v4),
        }
    }
}

/// Open connections per peer, up to `max` (0: no limit).
pub struct PeerLimit {
    max: AtomicUsize,
    counts: Mutex<HashMap<Peer, usize>>,
}

/// The peer already has its most connections.
#[derive(Debug)]
pub struct PeerFull;

impl PeerLimit {
    pub fn new(max: usize) -> Arc<PeerLimit> {
        Arc::new(PeerLimit { max: AtomicUsize::new(max), counts: Mutex::new(HashMap::new()) })
    }

    pub fn set(&self, max: usize) {
        self.max.store(max, Ordering::Relaxed);
    }

    /// A slot for one more connection from `peer` (none when there is no
    /// limit), or `PeerFull`.
    pub fn admit(self: &Arc<Self>, peer: Peer) -> Result<Option<PeerSlot>, PeerFull> {
        let max = self.max.load(Ordering::Relaxed);
        if max == 0 {
            return Ok(None);
        }
        let mut counts = self.counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = counts.entry(peer).or_insert(0);
        if *count >= max {
            return Err(PeerFull);
        }
        *count += 1;
        Ok(Some(PeerSlot { limit: self.clone(), peer }))
    }
}

/// One connection of a peer, counted until dropped.
pub struct PeerSlot {
    limit: Arc<PeerLimit>,
    peer: Peer,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut counts = self.limit.counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = counts.get_mut(&self.peer) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(text: &str) -> Peer {
        Peer::of(text.parse().unwrap())
    }

    #[test]
    fn counts_per_address_and_per_ipv6_block() {
        let limit = PeerLimit::new(2);
        let a = limit.admit(peer("10.0.0.1")).expect("first");
        let _b = limit.admit(peer("::ffff:10.0.0.1")).expect("the same address, mapped");
        assert!(limit.admit(peer("10.0.0.1")).is_err());
        assert!(limit.admit(peer("10.0.0.2")).is_ok(), "another address");
        let _c = limit.admit(peer("2001:db8::1")).unwrap();
        let _d = limit.admit(peer("2001:db8::ffff:1")).unwrap();
        assert!(limit.admit(peer("2001:db8::2")).is_err(), "the same /64");
        assert!(limit.admit(peer("2001:db8:0:1::1")).is_ok(), "another /64");
        drop(a);
        assert!(limit.admit(peer("10.0.0.1")).is_ok(), "a slot came back");
    }

    #[test]
    fn no_limit_counts_nothing_and_a_new_limit_applies_at_once() {
        let limit = PeerLimit::new(0);
        assert!(limit.admit(peer("10.0.0.1")).unwrap().is_none());
        limit.set(1);
        let _a = limit.admit(peer("10.0.0.1")).unwrap();
        assert!(limit.admit(peer("10.0.0.1")).is_err());
        limit.set(0);
        assert!(limit.admit(peer("10.0.0.1")).is_ok());
    }

    #[test]
    fn forgotten_when_the_last_connection_goes() {
        let limit = PeerLimit::new(5);
        let slots: Vec<_> = (0..5).map(|_| limit.admit(peer("10.0.0.9")).unwrap()).collect();
        drop(slots);
        assert!(limit.counts.lock().unwrap().is_empty());
    }
}
