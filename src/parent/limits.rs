//! The limits on who is served: `--max-clients` in all, `--max-per-ip` from one address group
//! (and, in `rate`, `--rate-per-ip`).
//!
//! Address policy (`Grouping`): a client counts under its IP address, whatever its port, and an
//! IPv4 client of a dual-stack socket (`::ffff:192.0.2.1`) counts as the IPv4 address it is, so it
//! shares its count with the same host reaching an IPv4 listener. IPv6 clients count per prefix,
//! `--ipv6-prefix` bits (64 by default: one host owns a whole /64, so a per-address cap would be
//! no cap), IPv4 clients per `--ipv4-prefix` (32, the address, by default). A Unix-socket client
//! counts under its user id (SO_PEERCRED): on one host, the user is who opens connections.
//! Per-group counts are kept only when `--max-per-ip` is set: they live on the heap, which
//! children inherit.
//!
//! A child's count drops when the parent reaps it, which is after its client saw the connection
//! close; a client that reconnects at once would be refused for a connection it knows is over.
//! So the admission discounts the children that have marked their connection closed
//! (`crate::shared::Marks`).

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use crate::groups::{Grouping, Key};
use crate::peer::Peer;

pub struct Limits {
    max_clients: usize,
    /// Zero: no limit.
    max_per_ip: u32,
    grouping: Grouping,
    /// Live children per client address group, when `max_per_ip` is set.
    per_ip: HashMap<Key, u32>,
}

impl Limits {
    /// The counts start empty and grow with the groups being served, whatever the limits.
    pub fn new(max_clients: usize, max_per_ip: u32, grouping: Grouping) -> Limits {
        Limits {
            max_clients,
            max_per_ip,
            grouping,
            per_ip: HashMap::new(),
        }
    }

    /// How clients are grouped.
    pub fn grouping(&self) -> Grouping {
        self.grouping
    }

    pub fn max_clients(&self) -> usize {
        self.max_clients
    }

    pub fn max_per_ip(&self) -> u32 {
        self.max_per_ip
    }

    /// Whether `live` children are as many as may be: then accepting waits.
    pub fn full(&self, live: usize) -> bool {
        live >= self.max_clients
    }

    /// Whether a new client from `peer` would go over `--max-per-ip`, counting `closed` of that
    /// address's children as gone already (see `Marks`); `closed` is asked only when it matters.
    pub fn refuses(&self, peer: Peer, closed: impl FnOnce() -> u32) -> bool {
        if self.max_per_ip == 0 {
            return false;
        }
        let serving = self.serving(peer);
        serving >= self.max_per_ip && serving - closed() >= self.max_per_ip
    }

    /// How many live children serve clients from `peer`'s group (0 unless counting per IP).
    pub fn serving(&self, peer: Peer) -> u32 {
        let key = self.grouping.key(peer);
        self.per_ip.get(&key).copied().unwrap_or(0)
    }

    /// A child now serves `peer`.
    pub fn opened(&mut self, peer: Peer) {
        if self.max_per_ip > 0 {
            *self.per_ip.entry(self.grouping.key(peer)).or_default() += 1;
        }
    }

    /// The child serving `peer` is gone.
    pub fn closed(&mut self, peer: Peer) {
        if let Entry::Occupied(mut count) = self.per_ip.entry(self.grouping.key(peer)) {
            *count.get_mut() -= 1;
            if *count.get() == 0 {
                count.remove();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> Peer {
        Peer::Ip(text.parse().unwrap())
    }

    fn unix(uid: u32, pid: i32) -> Peer {
        Peer::Unix(crate::peer::Cred { uid, pid })
    }

    const DEFAULT: Grouping = Grouping { v4: 32, v6: 64 };

    #[test]
    fn one_prefix_is_one_count() {
        let mut limits = Limits::new(8, 1, DEFAULT);
        limits.opened(addr("[2001:db8::1]:1000"));
        assert!(limits.refuses(addr("[2001:db8::2]:1000"), || 0));
        assert!(!limits.refuses(addr("[2001:db8:0:1::2]:1000"), || 0));
    }

    #[test]
    fn counts_per_address_across_ports_and_ipv4_mapping() {
        let mut limits = Limits::new(4, 2, DEFAULT);
        limits.opened(addr("192.0.2.1:1000"));
        limits.opened(addr("[::ffff:192.0.2.1]:1001"));
        limits.opened(addr("192.0.2.2:1000"));
        let probe = addr("192.0.2.1:9");
        assert_eq!(limits.serving(probe), 2);
        assert!(limits.refuses(probe, || 0));
        assert!(!limits.refuses(probe, || 1), "one of the two has closed");
        assert_eq!(limits.serving(addr("192.0.2.2:9")), 1);
        assert!(!limits.refuses(addr("192.0.2.2:9"), || 0));
        assert_eq!(limits.serving(addr("[::1]:9")), 0);
        limits.closed(addr("[::ffff:192.0.2.1]:1001"));
        limits.closed(addr("192.0.2.1:1000"));
        assert_eq!(limits.serving(probe), 0);
        assert_eq!(limits.per_ip.len(), 1, "empty counts are dropped");
    }

    #[test]
    fn unix_clients_count_per_user_whatever_their_process() {
        let mut limits = Limits::new(8, 2, DEFAULT);
        limits.opened(unix(1000, 10));
        limits.opened(unix(1000, 11));
        assert!(limits.refuses(unix(1000, 12), || 0));
        assert!(!limits.refuses(unix(1001, 12), || 0));
        assert!(
            !limits.refuses(addr("0.0.3.232:1"), || 0),
            "uid 1000 is no address"
        );
        assert_eq!(DEFAULT.show(unix(1000, 12)).to_string(), "uid:1000");
    }

    #[test]
    fn without_max_per_ip_nothing_is_counted_or_refused() {
        let mut limits = Limits::new(4, 0, DEFAULT);
        limits.opened(addr("192.0.2.1:1000"));
        assert_eq!(limits.serving(addr("192.0.2.1:9")), 0);
        assert!(!limits.refuses(addr("192.0.2.1:9"), || 0));
        assert!(limits.per_ip.is_empty());
        limits.closed(addr("192.0.2.1:1000"));
    }

    #[test]
    fn full_at_max_clients() {
        let limits = Limits::new(2, 0, DEFAULT);
        assert!(!limits.full(1));
        assert!(limits.full(2));
    }
}
