//! `--rate-per-ip N[/S]`: how often one source may connect (or send a datagram), as a token
//! bucket per address group (`crate::groups`), kept in a table of fixed size.
//!
//! Each group may open N connections at once and then N every S seconds; a connection over that
//! is closed by the parent before any fork (sshd's and xinetd's `cps` idea, but per source, so
//! one client that hammers cannot shut the service off for the others). The UDP worker keeps a
//! table of its own, made after its fork, for the datagrams it answers: a datagram over the rate
//! is dropped unanswered (amplification defense). Each table has one writer: its process.
//!
//! Memory never grows: the table has `SLOTS` slots, in memory children do not inherit (see
//! `memory`), and an address is looked for in a window of `WINDOW` slots from where it hashes
//! (with a key chosen at random at startup, so a flood cannot aim at one window). The eviction
//! rule, when a new group finds its window full: the slot whose bucket is fullest goes. A bucket
//! that has refilled completely carries no information (forgetting it changes nothing); only when
//! every group in the window is being limited at once does forgetting one give it a fresh
//! bucket, that is one extra burst of N. So a flood from more sources than the table holds is
//! limited a little less strictly, never served unboundedly, and never costs an allocation.

use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::ptr::NonNull;
use std::time::Instant;

use crate::cli::Rate;
use crate::groups::Key;
use crate::memory;

/// Slots in the table: 16 384 groups being remembered at once, 768 KiB of address space,
/// touched only where groups land.
pub const SLOTS: usize = 16_384;
/// How many slots from its hash a group may sit in.
const WINDOW: usize = 8;

#[derive(Debug, Clone, Copy)]
#[repr(C)]
struct Slot {
    /// An address (IPv4 mapped), or a uid when `uid` is 1.
    key: u128,
    uid: u64,
    /// One more than the milliseconds since the table was made when `tokens` was last brought up
    /// to date; 0 for a slot that is free.
    stamp: u64,
    tokens: f64,
}

/// Token counts are sums of fractions: a hair under a whole token counts as one.
const WHOLE: f64 = 1.0 - 1e-9;

pub struct RateTable {
    slots: NonNull<Slot>,
    rate: Rate,
    /// Tokens gained per millisecond.
    refill: f64,
    hasher: std::collections::hash_map::RandomState,
    started: Instant,
}

impl RateTable {
    pub fn new(rate: Rate) -> nix::Result<RateTable> {
        let start = memory::map_parent_only(SLOTS * size_of::<Slot>())?;
        Ok(RateTable {
            // Zero-filled memory is SLOTS unused slots.
            slots: start.cast(),
            rate,
            refill: f64::from(rate.count) / (rate.per.as_secs_f64() * 1e3),
            hasher: std::collections::hash_map::RandomState::new(),
            started: Instant::now(),
        })
    }

    pub fn rate(&self) -> Rate {
        self.rate
    }

    fn slots(&mut self) -> &mut [Slot] {
        // The mapping lives as long as the table and only the table refers to it.
        // SAFETY: SLOTS zero-initialised (valid) slots, borrowed mutably through `self` alone.
        unsafe { std::slice::from_raw_parts_mut(self.slots.as_ptr(), SLOTS) }
    }

    /// Takes a token for a connection from `group` at `now`: false if the group has none left.
    pub fn admit(&mut self, group: Key, now: Instant) -> bool {
        let (key, uid) = match group {
            Key::Ip(IpAddr::V4(v4)) => (v4.to_ipv6_mapped().to_bits(), 0),
            Key::Ip(IpAddr::V6(v6)) => (v6.to_bits(), 0),
            Key::Uid(uid) => (u128::from(uid), 1),
        };
        let mut hasher = self.hasher.build_hasher();
        hasher.write_u128(key);
        hasher.write_u64(uid);
        let home = hasher.finish() as usize % SLOTS;
        let now_ms = now.saturating_duration_since(self.started).as_millis() as u64;
        let (capacity, refill) = (f64::from(self.rate.count), self.refill);
        let stamp = now_ms + 1;
        let level = |slot: &Slot| {
            let gained = stamp.saturating_sub(slot.stamp) as f64 * refill;
            (slot.tokens + gained).min(capacity)
        };
        let slots = self.slots();
        let window = (0..WINDOW).map(|i| (home + i) % SLOTS);
        if let Some(at) = window
            .clone()
            .find(|&i| slots[i].stamp != 0 && slots[i].key == key && slots[i].uid == uid)
        {
            let slot = &mut slots[at];
            let tokens = level(slot);
            let admitted = tokens >= WHOLE;
            slot.tokens = if admitted {
                (tokens - 1.0).max(0.0)
            } else {
                tokens
            };
            slot.stamp = stamp;
            return admitted;
        }
        // New here: a free slot, or else the fullest bucket in the window (see above).
        let at = window
            .clone()
            .find(|&i| slots[i].stamp == 0)
            .or_else(|| window.max_by(|&a, &b| level(&slots[a]).total_cmp(&level(&slots[b]))))
            .expect("the window is not empty");
        slots[at] = Slot {
            key,
            uid,
            stamp,
            tokens: capacity - 1.0,
        };
        true
    }
}

impl Drop for RateTable {
    fn drop(&mut self) {
        // SAFETY: the one mapping `new` made, referred to by nothing once the table goes.
        unsafe { memory::unmap(self.slots.cast(), SLOTS * size_of::<Slot>()) };
    }
}

const _: () = assert!(SLOTS * size_of::<Slot>() == 768 * 1024);

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn table(count: u32, secs: u64) -> RateTable {
        RateTable::new(Rate {
            count,
            per: Duration::from_secs(secs),
        })
        .unwrap()
    }

    fn ip(text: &str) -> Key {
        Key::Ip(text.parse().unwrap())
    }

    #[test]
    fn a_group_gets_its_burst_then_a_token_per_interval() {
        let mut table = table(3, 3);
        let t0 = table.started;
        let a = ip("192.0.2.1");
        assert!((0..3).all(|_| table.admit(a, t0)));
        assert!(!table.admit(a, t0), "the fourth at once is over the rate");
        assert!(!table.admit(a, t0 + Duration::from_millis(900)));
        assert!(
            table.admit(a, t0 + Duration::from_millis(1000)),
            "one token a second"
        );
        assert!(!table.admit(a, t0 + Duration::from_millis(1100)));
        // Others are not affected.
        assert!(table.admit(ip("192.0.2.2"), t0));
        assert!(table.admit(ip("2001:db8::1"), t0));
        // A Unix user is its own group, even one whose number is an address's (::1 is 1).
        let one = ip("::1");
        assert!((0..3).all(|_| table.admit(one, t0)));
        assert!(!table.admit(one, t0));
        assert!(table.admit(Key::Uid(1), t0));
        // After a long pause, the burst again, no more.
        let later = t0 + Duration::from_secs(60);
        assert!((0..3).all(|_| table.admit(a, later)));
        assert!(!table.admit(a, later));
    }

    #[test]
    fn a_flood_of_sources_never_grows_the_table_and_a_limited_source_stays_limited() {
        let mut table = table(2, 10);
        let t0 = table.started;
        let victim = ip("198.51.100.7");
        assert!(table.admit(victim, t0) && table.admit(victim, t0));
        assert!(!table.admit(victim, t0));
        // Ten times the table in one-off sources, each fresh and each admitted: their buckets
        // hold a token, the victim's none, so the victim is the last to be evicted.
        for n in 0..(10 * SLOTS as u32) {
            let source = Key::Ip(IpAddr::from(std::net::Ipv6Addr::from(
                0x2001_0db8_u128 << 96 | u128::from(n),
            )));
            assert!(table.admit(source, t0));
        }
        assert!(!table.admit(victim, t0), "still limited after the flood");
    }

    #[test]
    fn rates_read_as_the_log_shows_them() {
        let rate = Rate {
            count: 20,
            per: Duration::from_millis(1500),
        };
        assert_eq!(rate.to_string(), "20/1.5s");
    }
}
