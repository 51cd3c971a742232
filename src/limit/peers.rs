//! `server.max_connections_per_ip`: WebSocket connections per client
//! address. IPv4 addresses count one by one; IPv6 addresses by their /64,
//! the block one subscriber usually holds (anyone holding one can use all
//! 2^64 addresses in it). IPv4 addresses mapped into IPv6 count as IPv4.
//! Counted by [`KeyedLimit`].

use std::net::{IpAddr, Ipv6Addr};

use crate::limit::{KeyedLimit, Slot};

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

/// Connections per client address.
pub type PeerLimit = KeyedLimit<Peer>;
pub type PeerSlot = Slot<Peer>;

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
    fn forgotten_when_the_last_connection_goes() {
        let limit = PeerLimit::new(5);
        let slots: Vec<_> = (0..5).map(|_| limit.admit(peer("10.0.0.9")).unwrap()).collect();
        drop(slots);
        assert_eq!(limit.keys(), 0);
    }
}
