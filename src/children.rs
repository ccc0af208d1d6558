//! The parent's table of live children: who they serve, since when, and how many per address.
//!
//! A pid enters right after fork, before SIGCHLD is unblocked, and leaves when the main loop
//! drains its exit from the reaper. So while SIGCHLD is blocked, every pid in the table is a
//! child of ours that has not been reaped, and signalling it can never hit a recycled pid.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use nix::unistd::Pid;

use crate::log::Peer;

/// What the parent remembers of one child.
#[derive(Debug, Clone, Copy)]
pub struct Child {
    pub peer: SocketAddr,
    pub since: Instant,
}

#[derive(Default)]
pub struct Children {
    live: HashMap<Pid, Child>,
    /// Live children per client address (IPv4-mapped addresses counted as IPv4), kept only
    /// when `count_per_ip`: every write the parent makes after a fork costs the child a page.
    per_ip: HashMap<IpAddr, u32>,
    count_per_ip: bool,
}

/// The address a client is counted under for `--max-per-ip`.
fn client_ip(peer: SocketAddr) -> IpAddr {
    Peer(peer).unmapped().ip()
}

impl Children {
    /// A table for `capacity` children; `count_per_ip` keeps the per-address counts `serving`
    /// answers from.
    pub fn new(capacity: usize, count_per_ip: bool) -> Children {
        Children {
            live: HashMap::with_capacity(capacity),
            per_ip: HashMap::with_capacity(if count_per_ip { capacity } else { 0 }),
            count_per_ip,
        }
    }

    pub fn insert(&mut self, pid: Pid, child: Child) {
        if self.count_per_ip {
            *self.per_ip.entry(client_ip(child.peer)).or_default() += 1;
        }
        self.live.insert(pid, child);
    }

    pub fn remove(&mut self, pid: Pid) -> Option<Child> {
        let child = self.live.remove(&pid)?;
        if !self.count_per_ip {
            return Some(child);
        }
        if let Entry::Occupied(mut count) = self.per_ip.entry(client_ip(child.peer)) {
            *count.get_mut() -= 1;
            if *count.get() == 0 {
                count.remove();
            }
        }
        Some(child)
    }

    /// How many live children serve clients from `peer`'s address (0 unless counting per IP).
    pub fn serving(&self, peer: SocketAddr) -> u32 {
        self.per_ip.get(&client_ip(peer)).copied().unwrap_or(0)
    }

    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    pub fn pids(&self) -> impl Iterator<Item = Pid> + '_ {
        self.live.keys().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn child(peer: &str) -> Child {
        Child {
            peer: peer.parse().unwrap(),
            since: Instant::now(),
        }
    }

    #[test]
    fn tracks_insertions_and_removals() {
        let mut children = Children::new(4, false);
        children.insert(Pid::from_raw(10), child("127.0.0.1:5000"));
        children.insert(Pid::from_raw(11), child("127.0.0.1:5001"));
        assert_eq!(children.len(), 2);
        let removed = children.remove(Pid::from_raw(10)).map(|c| c.peer);
        assert_eq!(removed, Some("127.0.0.1:5000".parse().unwrap()));
        assert!(children.remove(Pid::from_raw(10)).is_none());
        assert_eq!(children.pids().collect::<Vec<_>>(), vec![Pid::from_raw(11)]);
        children.remove(Pid::from_raw(11));
        assert!(children.is_empty());
    }

    #[test]
    fn counts_per_address_across_ports_and_ipv4_mapping() {
        let mut children = Children::new(4, true);
        children.insert(Pid::from_raw(1), child("192.0.2.1:1000"));
        children.insert(Pid::from_raw(2), child("[::ffff:192.0.2.1]:1001"));
        children.insert(Pid::from_raw(3), child("192.0.2.2:1000"));
        let probe: SocketAddr = "192.0.2.1:9".parse().unwrap();
        assert_eq!(children.serving(probe), 2);
        assert_eq!(children.serving("192.0.2.2:9".parse().unwrap()), 1);
        assert_eq!(children.serving("[::1]:9".parse().unwrap()), 0);
        children.remove(Pid::from_raw(2));
        children.remove(Pid::from_raw(1));
        assert_eq!(children.serving(probe), 0);
        assert_eq!(children.per_ip.len(), 1, "empty counts are dropped");
    }

    #[test]
    fn without_per_ip_counting_nothing_is_counted() {
        let mut children = Children::new(4, false);
        children.insert(Pid::from_raw(1), child("192.0.2.1:1000"));
        assert_eq!(children.serving("192.0.2.1:9".parse().unwrap()), 0);
        assert!(children.per_ip.is_empty());
        assert!(children.remove(Pid::from_raw(1)).is_some());
    }
}
