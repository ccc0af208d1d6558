//! The parent's table of live children: who they serve, since when, and how many per address.
//!
//! A pid enters right after fork, before SIGCHLD is unblocked, and leaves when the main loop
//! drains its exit from the reaper. So while SIGCHLD is blocked, every pid in the table is a
//! child of ours that has not been reaped, and signalling it can never hit a recycled pid.
//!
//! The table lives in its own anonymous mapping marked MADV_DONTFORK, so children do not
//! inherit it. That matters for memory: a page the parent writes after a fork stays behind as
//! the child's own copy, and the parent writes this table after every fork. On the heap, each
//! child would end up owning a page or two of it. It is a fixed-size open-addressing table of
//! plain integers (so the zero-filled mapping is a valid empty table), sized at startup for
//! `--max-clients` at half load.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::unistd::Pid;

use crate::log::Peer;
use crate::memory;

/// What the parent remembers of one child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Child {
    pub peer: SocketAddr,
    pub since: Instant,
}

/// One slot: all plain integers, so all-zero bytes are a valid empty slot (pid 0).
#[derive(Clone, Copy, Default)]
#[repr(C)]
struct Slot {
    pid: i32,
    port: u16,
    is_v6: u16,
    /// IPv4 addresses are stored IPv4-mapped.
    ip: [u8; 16],
    /// Since the table's epoch.
    since_ns: u64,
}

pub struct Children {
    slots: &'static mut [Slot],
    len: usize,
    epoch: Instant,
    /// Live children per client address (IPv4-mapped addresses counted as IPv4), kept only
    /// when `count_per_ip` (it lives on the heap, so it costs children memory).
    per_ip: HashMap<IpAddr, u32>,
    count_per_ip: bool,
}

/// The address a client is counted under for `--max-per-ip`.
fn client_ip(peer: SocketAddr) -> IpAddr {
    Peer(peer).unmapped().ip()
}

impl Children {
    /// A table for up to `capacity` children; `count_per_ip` keeps the per-address counts
    /// `serving` answers from.
    pub fn new(capacity: usize, count_per_ip: bool) -> Result<Children> {
        let slots = (capacity.max(1) * 2).next_power_of_two();
        let bytes = slots * size_of::<Slot>();
        let mapping = memory::map_parent_only(bytes)
            .with_context(|| format!("unable to map the child table ({bytes} bytes)"))?;
        // The mapping is never unmapped and only this table refers to it.
        // SAFETY: zero-filled, page-aligned memory is `slots` valid, aligned, empty Slots.
        let slots = unsafe { std::slice::from_raw_parts_mut(mapping.as_ptr().cast(), slots) };
        Ok(Children {
            slots,
            len: 0,
            epoch: Instant::now(),
            per_ip: HashMap::with_capacity(if count_per_ip { capacity } else { 0 }),
            count_per_ip,
        })
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    fn home(&self, pid: i32) -> usize {
        (pid as u32).wrapping_mul(0x9E37_79B9) as usize & self.mask()
    }

    /// The slot holding `pid`, if any.
    fn find(&self, pid: i32) -> Option<usize> {
        let mut i = self.home(pid);
        loop {
            match self.slots[i].pid {
                0 => return None,
                p if p == pid => return Some(i),
                _ => i = (i + 1) & self.mask(),
            }
        }
    }

    pub fn insert(&mut self, pid: Pid, child: Child) {
        let pid = pid.as_raw();
        assert!(
            self.len < self.slots.len() / 2,
            "more children than --max-clients"
        );
        let mut i = self.home(pid);
        while self.slots[i].pid != 0 && self.slots[i].pid != pid {
            i = (i + 1) & self.mask();
        }
        if self.slots[i].pid == 0 {
            self.len += 1;
        }
        let (ip, is_v6) = match child.peer {
            SocketAddr::V4(v4) => (v4.ip().to_ipv6_mapped(), 0),
            SocketAddr::V6(v6) => (*v6.ip(), 1),
        };
        self.slots[i] = Slot {
            pid,
            port: child.peer.port(),
            is_v6,
            ip: ip.octets(),
            since_ns: child.since.saturating_duration_since(self.epoch).as_nanos() as u64,
        };
        if self.count_per_ip {
            *self.per_ip.entry(client_ip(child.peer)).or_default() += 1;
        }
    }

    pub fn remove(&mut self, pid: Pid) -> Option<Child> {
        let mut hole = self.find(pid.as_raw())?;
        let child = self.child_at(hole);
        // Backward-shift deletion: pull later entries of the probe run into the hole so every
        // remaining entry stays reachable from its home slot without tombstones.
        let mut next = hole;
        loop {
            next = (next + 1) & self.mask();
            let moving = self.slots[next].pid;
            if moving == 0 {
                break;
            }
            let home = self.home(moving);
            // Move it back unless its home lies cyclically in (hole, next].
            let reachable = if hole <= next {
                hole < home && home <= next
            } else {
                hole < home || home <= next
            };
            if !reachable {
                self.slots[hole] = self.slots[next];
                hole = next;
            }
        }
        self.slots[hole] = Slot::default();
        self.len -= 1;
        if self.count_per_ip {
            if let Entry::Occupied(mut count) = self.per_ip.entry(client_ip(child.peer)) {
                *count.get_mut() -= 1;
                if *count.get() == 0 {
                    count.remove();
                }
            }
        }
        Some(child)
    }

    fn child_at(&self, i: usize) -> Child {
        let slot = &self.slots[i];
        let ip = Ipv6Addr::from(slot.ip);
        let peer = if slot.is_v6 == 1 {
            SocketAddr::new(ip.into(), slot.port)
        } else {
            SocketAddr::new(
                ip.to_ipv4_mapped().expect("stored mapped").into(),
                slot.port,
            )
        };
        Child {
            peer,
            since: self.epoch + Duration::from_nanos(slot.since_ns),
        }
    }

    /// How many live children serve clients from `peer`'s address (0 unless counting per IP).
    pub fn serving(&self, peer: SocketAddr) -> u32 {
        self.per_ip.get(&client_ip(peer)).copied().unwrap_or(0)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn pids(&self) -> impl Iterator<Item = Pid> + '_ {
        self.slots
            .iter()
            .filter(|s| s.pid != 0)
            .map(|s| Pid::from_raw(s.pid))
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
        let mut children = Children::new(4, false).unwrap();
        let first = child("127.0.0.1:5000");
        children.insert(Pid::from_raw(10), first);
        children.insert(Pid::from_raw(11), child("[::1]:5001"));
        assert_eq!(children.len(), 2);
        assert_eq!(children.remove(Pid::from_raw(10)), Some(first));
        assert!(children.remove(Pid::from_raw(10)).is_none());
        assert_eq!(children.pids().collect::<Vec<_>>(), vec![Pid::from_raw(11)]);
        let second = children.remove(Pid::from_raw(11)).unwrap();
        assert_eq!(second.peer, "[::1]:5001".parse().unwrap());
        assert!(children.is_empty());
    }

    #[test]
    fn agrees_with_a_hash_map_under_many_random_operations() {
        // Few slots and pids that collide a lot, so probe runs wrap and deletions shift.
        let mut children = Children::new(64, false).unwrap();
        let mut model: HashMap<i32, Child> = HashMap::new();
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        for step in 0..50_000u32 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let pid = (state % 300) as i32 + 1;
            if model.len() < 64 && (state >> 20) % 2 == 0 {
                let c = child(&format!("10.0.{}.{}:{}", pid % 7, pid % 250, step % 60000));
                children.insert(Pid::from_raw(pid), c);
                model.insert(pid, c);
            } else {
                assert_eq!(
                    children.remove(Pid::from_raw(pid)),
                    model.remove(&pid),
                    "step {step}"
                );
            }
            assert_eq!(children.len(), model.len());
        }
        let mut pids: Vec<i32> = children.pids().map(Pid::as_raw).collect();
        let mut expected: Vec<i32> = model.keys().copied().collect();
        pids.sort_unstable();
        expected.sort_unstable();
        assert_eq!(pids, expected);
    }

    #[test]
    fn counts_per_address_across_ports_and_ipv4_mapping() {
        let mut children = Children::new(4, true).unwrap();
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
        let mut children = Children::new(4, false).unwrap();
        children.insert(Pid::from_raw(1), child("192.0.2.1:1000"));
        assert_eq!(children.serving("192.0.2.1:9".parse().unwrap()), 0);
        assert!(children.per_ip.is_empty());
        assert!(children.remove(Pid::from_raw(1)).is_some());
    }
}
