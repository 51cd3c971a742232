//! `server.max_connections_per_ip`: WebSocket connections per client
//! address. IPv4 addresses count one by one; IPv6 addresses by their /64,
//! the block one subscriber usually holds (anyone holding one can use all
//! 2^64 addresses in it). IPv4 addresses mapped into IPv6 count as IPv4.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
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

/// Open connections per peer; `None` when there is no limit.
pub struct PeerLimit {
    max: usize,
    counts: Mutex<HashMap<Peer, usize>>,
}

impl PeerLimit {
    pub fn new(max: usize) -> Option<Arc<PeerLimit>> {
        (max > 0).then(|| Arc::new(PeerLimit { max, counts: Mutex::new(HashMap::new()) }))
    }

    /// A slot for one more connection from `peer`, unless it has `max`.
    pub fn admit(self: &Arc<Self>, peer: Peer) -> Option<PeerSlot> {
        let mut counts = self.counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = counts.entry(peer).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(PeerSlot { limit: self.clone(), peer })
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
        let limit = PeerLimit::new(2).expect("a limit");
        let a = limit.admit(peer("10.0.0.1")).expect("first");
        let _b = limit.admit(peer("::ffff:10.0.0.1")).expect("the same address, mapped");
        assert!(limit.admit(peer("10.0.0.1")).is_none());
        assert!(limit.admit(peer("10.0.0.2")).is_some(), "another address");
        let _c = limit.admit(peer("2001:db8::1")).unwrap();
        let _d = limit.admit(peer("2001:db8::ffff:1")).unwrap();
        assert!(limit.admit(peer("2001:db8::2")).is_none(), "the same /64");
        assert!(limit.admit(peer("2001:db8:0:1::1")).is_some(), "another /64");
        drop(a);
        assert!(limit.admit(peer("10.0.0.1")).is_some(), "a slot came back");
        assert!(PeerLimit::new(0).is_none());
    }

    #[test]
    fn forgotten_when_the_last_connection_goes() {
        let limit = PeerLimit::new(5).unwrap();
        let slots: Vec<_> = (0..5).map(|_| limit.admit(peer("10.0.0.9")).unwrap()).collect();
        drop(slots);
        assert!(limit.counts.lock().unwrap().is_empty());
    }
}
