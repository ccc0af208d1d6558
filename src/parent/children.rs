//! The parent's table of live children: which client each serves, and since when. A child
//! answering a metrics scrape, and the UDP worker, are in it too, marked by their `Role`, so that
//! they are reaped and stopped like the others but never count as connections served
//! (`serving`).
//!
//! A pid enters right after fork, before SIGCHLD is unblocked, and leaves when the main loop
//! drains its exit from the reaper. So while SIGCHLD is blocked, every pid in the table is a
//! child of ours that has not been reaped, and signalling it can never hit a recycled pid. The
//! loop collects the reaped exits under the mask held across fork before it inserts, so the pid
//! fork returns is never still in the table; `insert` treats one that is as the bug it would be.
//!
//! The slots live in memory children do not inherit (`memory::map_parent_only`): the parent
//! writes them after every fork. It is an open-addressing table of plain integers (so a
//! zero-filled mapping is a valid empty table) that starts at 32 KiB and doubles at half load, so
//! its size follows the children that are live, whatever `--max-clients` says.

use std::net::{Ipv6Addr, SocketAddr};

use crate::peer::{Cred, Peer};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::unistd::Pid;

use crate::memory;

/// What the parent remembers of one child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Child {
    pub peer: Peer,
    pub since: Instant,
    /// Its connection number (see `crate::shared::Marks`); 0 for a scrape or the UDP worker.
    pub serial: u32,
    pub role: Role,
}

/// What a child does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Serves a client's connection.
    Client,
    /// Answers a metrics scrape.
    Scrape,
    /// Serves every UDP datagram (`--udp`); its peer is unused.
    Udp,
}

/// One slot: all plain integers, so all-zero bytes are a valid empty slot (pid 0).
#[derive(Clone, Copy, Default)]
#[repr(C)]
struct Slot {
    pid: i32,
    port: u16,
    /// `IPV4`, `IPV6` or `UNIX`, with `SCRAPE` or `UDP` added for those roles.
    family: u16,
    /// IPv4 addresses are stored IPv4-mapped; a Unix client's uid and pid in the first 8 bytes.
    ip: [u8; 16],
    /// Since the table's epoch.
    since_ns: u64,
    serial: u32,
}

pub struct Children {
    slots: &'static mut [Slot],
    len: usize,
    /// How many of them answer scrapes, and how many are UDP workers.
    scrapes: usize,
    udp: usize,
    epoch: Instant,
}

const IPV4: u16 = 0;
const IPV6: u16 = 1;
const UNIX: u16 = 2;
const SCRAPE: u16 = 0x100;
const UDP: u16 = 0x200;

/// Slots to start with: 32 KiB, room for 512 children before the table first grows.
const INITIAL_SLOTS: usize = 1024;

/// `count` empty slots in a fresh mapping children do not inherit.
fn mapped_slots(count: usize) -> nix::Result<&'static mut [Slot]> {
    let mapping = memory::map_parent_only(count * size_of::<Slot>())?;
    // Only the table that gets these slots refers to the mapping, until `grow` unmaps it.
    // SAFETY: zero-filled, page-aligned memory is `count` valid, aligned, empty Slots.
    Ok(unsafe { std::slice::from_raw_parts_mut(mapping.as_ptr().cast(), count) })
}

impl Children {
    /// An empty table. It grows with the children it holds, not with `--max-clients`.
    pub fn new() -> Result<Children> {
        let slots = mapped_slots(INITIAL_SLOTS).context("unable to map the child table")?;
        Ok(Children {
            slots,
            len: 0,
            scrapes: 0,
            udp: 0,
            epoch: Instant::now(),
        })
    }

    /// Makes sure one more child fits, doubling the table at half load. Call before fork: a
    /// table that cannot grow (no memory) is a reason not to fork, never a child left out.
    pub fn make_room(&mut self) -> nix::Result<()> {
        if self.len < self.slots.len() / 2 {
            return Ok(());
        }
        let bigger = mapped_slots(self.slots.len() * 2)?;
        let old = std::mem::replace(&mut self.slots, bigger);
        for slot in old.iter().filter(|slot| slot.pid != 0) {
            let mut i = self.home(slot.pid);
            while self.slots[i].pid != 0 {
                i = (i + 1) & self.mask();
            }
            self.slots[i] = *slot;
        }
        let bytes = size_of_val(old);
        let start = std::ptr::NonNull::from(old).cast::<u8>();
        // The table, the mapping's only user, now uses `bigger`.
        // SAFETY: `old` is exactly one mapping made by `mapped_slots`, and nothing refers to it.
        unsafe { memory::unmap(start, bytes) };
        Ok(())
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

    /// Records a new child, in the room `make_room` made. Panics if `pid` is already in the
    /// table: the caller collects reaped exits before inserting, so that would mean a live
    /// child's entry was about to be lost.
    pub fn insert(&mut self, pid: Pid, child: Child) {
        let pid = pid.as_raw();
        assert!(self.len < self.slots.len() / 2, "insert without make_room");
        let mut i = self.home(pid);
        while self.slots[i].pid != 0 {
            assert!(
                self.slots[i].pid != pid,
                "pid {pid} is already in the child table: its exit was reaped but not collected"
            );
            i = (i + 1) & self.mask();
        }
        self.len += 1;
        self.scrapes += usize::from(child.role == Role::Scrape);
        self.udp += usize::from(child.role == Role::Udp);
        let (ip, port, family) = match child.peer {
            Peer::Ip(SocketAddr::V4(v4)) => (v4.ip().to_ipv6_mapped().octets(), v4.port(), IPV4),
            Peer::Ip(SocketAddr::V6(v6)) => (v6.ip().octets(), v6.port(), IPV6),
            Peer::Unix(Cred { uid, pid }) => {
                let mut bytes = [0; 16];
                bytes[..4].copy_from_slice(&uid.to_ne_bytes());
                bytes[4..8].copy_from_slice(&pid.to_ne_bytes());
                (bytes, 0, UNIX)
            }
        };
        self.slots[i] = Slot {
            pid,
            port,
            family: family
                | match child.role {
                    Role::Client => 0,
                    Role::Scrape => SCRAPE,
                    Role::Udp => UDP,
                },
            ip,
            since_ns: child.since.saturating_duration_since(self.epoch).as_nanos() as u64,
            serial: child.serial,
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
        self.scrapes -= usize::from(child.role == Role::Scrape);
        self.udp -= usize::from(child.role == Role::Udp);
        Some(child)
    }

    fn child_at(&self, i: usize) -> Child {
        let slot = &self.slots[i];
        let ip = Ipv6Addr::from(slot.ip);
        let word = |at: usize| slot.ip[at..at + 4].try_into().expect("four bytes");
        let peer = match slot.family & !(SCRAPE | UDP) {
            IPV6 => Peer::Ip(SocketAddr::new(ip.into(), slot.port)),
            IPV4 => Peer::Ip(SocketAddr::new(
                ip.to_ipv4_mapped().expect("stored mapped").into(),
                slot.port,
            )),
            _ => Peer::Unix(Cred {
                uid: u32::from_ne_bytes(word(0)),
                pid: i32::from_ne_bytes(word(4)),
            }),
        };
        Child {
            peer,
            since: self.epoch + Duration::from_nanos(slot.since_ns),
            serial: slot.serial,
            role: match slot.family & (SCRAPE | UDP) {
                SCRAPE => Role::Scrape,
                UDP => Role::Udp,
                _ => Role::Client,
            },
        }
    }

    /// Every child, with its pid.
    pub fn iter(&self) -> impl Iterator<Item = (Pid, Child)> + '_ {
        (0..self.slots.len())
            .filter(|&i| self.slots[i].pid != 0)
            .map(|i| (Pid::from_raw(self.slots[i].pid), self.child_at(i)))
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// The children serving connections: all but the scrapes and the UDP worker.
    pub fn serving(&self) -> usize {
        self.len - self.scrapes - self.udp
    }

    /// The children answering scrapes.
    pub fn scrapes(&self) -> usize {
        self.scrapes
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
            peer: Peer::Ip(peer.parse().unwrap()),
            since: Instant::now(),
            serial: 1,
            role: Role::Client,
        }
    }

    #[test]
    fn tracks_insertions_and_removals() {
        let mut children = Children::new().unwrap();
        let first = child("127.0.0.1:5000");
        children.insert(Pid::from_raw(10), first);
        children.insert(Pid::from_raw(11), child("[::1]:5001"));
        let unix = Child {
            peer: Peer::Unix(Cred {
                uid: 4_000_000_000,
                pid: 77,
            }),
            ..first
        };
        children.insert(Pid::from_raw(12), unix);
        assert_eq!(children.remove(Pid::from_raw(12)), Some(unix));
        let scrape = Child {
            role: Role::Scrape,
            serial: 0,
            ..first
        };
        children.insert(Pid::from_raw(13), scrape);
        assert_eq!(
            (children.len(), children.serving(), children.scrapes()),
            (3, 2, 1)
        );
        assert_eq!(children.remove(Pid::from_raw(13)), Some(scrape));
        assert_eq!(children.scrapes(), 0);
        let udp = Child {
            role: Role::Udp,
            ..scrape
        };
        children.insert(Pid::from_raw(14), udp);
        assert_eq!((children.len(), children.serving()), (3, 2));
        assert_eq!(children.remove(Pid::from_raw(14)), Some(udp));
        assert_eq!(children.len(), 2);
        assert_eq!(children.remove(Pid::from_raw(10)), Some(first));
        assert!(children.remove(Pid::from_raw(10)).is_none());
        assert_eq!(children.pids().collect::<Vec<_>>(), vec![Pid::from_raw(11)]);
        let second = children.remove(Pid::from_raw(11)).unwrap();
        assert_eq!(second.peer, Peer::Ip("[::1]:5001".parse().unwrap()));
        assert!(children.is_empty());
    }

    #[test]
    fn agrees_with_a_hash_map_under_many_random_operations() {
        // Few slots and pids that collide a lot, so probe runs wrap and deletions shift.
        let mut children = Children::new().unwrap();
        let mut model: std::collections::HashMap<i32, Child> = Default::default();
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        for step in 0..50_000u32 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let pid = (state % 300) as i32 + 1;
            if model.len() < 64 && (state >> 20).is_multiple_of(2) && !model.contains_key(&pid) {
                let c = child(&format!("10.0.{}.{}:{}", pid % 7, pid % 250, step % 60000));
                children.make_room().unwrap();
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
    fn grows_with_the_children_and_keeps_every_one() {
        let mut children = Children::new().unwrap();
        let count = 5 * INITIAL_SLOTS as i32;
        for pid in 1..=count {
            children.make_room().unwrap();
            children.insert(Pid::from_raw(pid), child("127.0.0.1:1"));
        }
        assert_eq!(children.len(), count as usize);
        assert!(children.slots.len() >= 2 * count as usize);
        for pid in (1..=count).rev() {
            assert!(children.remove(Pid::from_raw(pid)).is_some(), "pid {pid}");
        }
        assert!(children.is_empty());
    }

    #[test]
    #[should_panic(expected = "pid 7 is already in the child table")]
    fn inserting_a_pid_that_is_present_is_a_loud_bug() {
        let mut children = Children::new().unwrap();
        children.insert(Pid::from_raw(7), child("127.0.0.1:1"));
        children.insert(Pid::from_raw(7), child("127.0.0.1:2"));
    }
}
