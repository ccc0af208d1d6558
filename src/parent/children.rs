//! The parent's table of live children: which client each serves, and since when.
//!
//! A pid enters right after fork, before SIGCHLD is unblocked, and leaves when the main loop
//! drains its exit from the reaper. So while SIGCHLD is blocked, every pid in the table is a
//! child of ours that has not been reaped, and signalling it can never hit a recycled pid. The
//! loop collects the reaped exits under the mask held across fork before it inserts, so the pid
//! fork returns is never still in the table; `insert` treats one that is as the bug it would be.
//!
//! The slots live in memory children do not inherit (`memory::map_parent_only`): the parent
//! writes them after every fork. It is a fixed-size open-addressing table of plain integers (so
//! the zero-filled mapping is a valid empty table), sized at startup for `--max-clients` at half
//! load.

use std::net::{Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::unistd::Pid;

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
}

impl Children {
    /// A table for up to `capacity` children.
    pub fn new(capacity: usize) -> Result<Children> {
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

    /// Records a new child. Panics if `pid` is already in the table: the caller collects reaped
    /// exits before inserting, so that would mean a live child's entry was about to be lost.
    pub fn insert(&mut self, pid: Pid, child: Child) {
        let pid = pid.as_raw();
        assert!(
            self.len < self.slots.len() / 2,
            "more children than --max-clients"
        );
        let mut i = self.home(pid);
        while self.slots[i].pid != 0 {
            assert!(
                self.slots[i].pid != pid,
                "pid {pid} is already in the child table: its exit was reaped but not collected"
            );
            i = (i + 1) & self.mask();
        }
        self.len += 1;
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
        let mut children = Children::new(4).unwrap();
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
        let mut children = Children::new(64).unwrap();
        let mut model: std::collections::HashMap<i32, Child> = Default::default();
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        for step in 0..50_000u32 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let pid = (state % 300) as i32 + 1;
            if model.len() < 64 && (state >> 20).is_multiple_of(2) && !model.contains_key(&pid) {
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
    #[should_panic(expected = "pid 7 is already in the child table")]
    fn inserting_a_pid_that_is_present_is_a_loud_bug() {
        let mut children = Children::new(4).unwrap();
        children.insert(Pid::from_raw(7), child("127.0.0.1:1"));
        children.insert(Pid::from_raw(7), child("127.0.0.1:2"));
    }
}
