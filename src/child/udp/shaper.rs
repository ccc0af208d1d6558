//! The datagram faults, applied: netem's effects without root and without touching an
//! interface. A datagram's fate is drawn from `--seed` and its number (`faults::DatagramFaults`);
//! here it is lost, corrupted (one byte flipped, said in a log line), sent twice, held back for
//! its delay, or held until the next datagram has gone (reordered; at most `HOLD_MOST`, if no
//! next comes).
//!
//! What waits is bounded: at most `QUEUE_BYTES` of delayed answers (their bytes and their
//! bookkeeping), so a flood under a long `--delay` cannot grow the worker without end. A datagram
//! that does not fit is dropped and counted (`udp-queue-full=`, the metrics' `queue-full`), with
//! one `udp dropped reason=queue-full` line a second at most.
//!
//! Owned by the UDP worker alone. Without faults nothing is queued or copied: every answer goes
//! out at once.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::answer::{Target, add, answer};
use crate::faults::{DatagramFaults, Fate};
use crate::log::logln;
use crate::log::{RateLimit, Suppressed};
use crate::peer::Peer;
use crate::shared::UdpCounts;

/// The longest a reordered datagram waits for a next one.
pub const HOLD_MOST: Duration = Duration::from_secs(1);
/// The most that delayed answers may take, counted as their bytes plus their bookkeeping.
pub const QUEUE_BYTES: usize = 16 << 20;

/// A datagram waiting for its time.
struct Pending {
    due: Instant,
    /// Arrival order, so that equal times keep it.
    order: u64,
    target: Target,
    data: Vec<u8>,
    copies: u8,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.order) == (other.due, other.order)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.order).cmp(&(other.due, other.order))
    }
}

pub struct Shaper {
    faults: Option<&'static DatagramFaults>,
    delayed: BinaryHeap<Reverse<Pending>>,
    /// A reordered datagram, sent right after the next one goes (or at its `due`).
    held: Option<Pending>,
    order: u64,
    /// What the queue takes now (`cost` of each entry in `delayed`).
    queued: usize,
    full: RateLimit,
}

/// What one delayed answer of `len` bytes takes.
fn cost(len: usize) -> usize {
    len + std::mem::size_of::<Reverse<Pending>>()
}

impl Shaper {
    pub fn new(faults: Option<&'static DatagramFaults>) -> Shaper {
        Shaper {
            faults,
            delayed: BinaryHeap::new(),
            held: None,
            order: 0,
            queued: 0,
            full: RateLimit::new(Duration::from_secs(1)),
        }
    }

    /// Draws datagram `number`'s fate (from `from`) and applies what changes it in place: None
    /// if it is lost, else its fate for `deliver` (corrupted already, if so, and said).
    pub fn shape(
        &mut self,
        number: u64,
        from: SocketAddr,
        data: &mut [u8],
        counts: &UdpCounts,
    ) -> Option<Fate> {
        let Some(faults) = self.faults else {
            return Some(Fate::default());
        };
        let fate = faults.fate(number, data.len());
        if fate.lost {
            add(&counts.lost, 1);
            return None;
        }
        if let Some(at) = fate.corrupt_at {
            data[at] ^= 0xFF;
            add(&counts.corrupted, 1);
            logln!(
                "udp corrupt peer={} datagram={number} byte={at}",
                Peer::Ip(from)
            );
        }
        Some(fate)
    }

    /// Sends (or queues) the answer `data` to `target` as `fate` says.
    pub fn deliver(
        &mut self,
        fate: Fate,
        target: Target,
        data: &[u8],
        now: Instant,
        counts: &UdpCounts,
    ) {
        // A held datagram waits alone (one at most); delayed ones wait in the bounded queue.
        let delayed = !fate.held && !fate.delay.is_zero();
        if delayed && self.queued + cost(data.len()) > QUEUE_BYTES {
            add(&counts.queue_full, 1);
            if let Some(held) = self.full.allow(now) {
                logln!(
                    "udp dropped reason=queue-full peer={} queued={} limit={QUEUE_BYTES}{}",
                    Peer::Ip(target.to),
                    self.delayed.len(),
                    Suppressed(held)
                );
            }
            return;
        }
        let copies = 1 + u8::from(fate.duplicated);
        if fate.duplicated {
            add(&counts.duplicated, 1);
        }
        self.order += 1;
        // Without faults every fate is this one: out at once.
        if !fate.held && !delayed {
            send(&target, data, copies, counts);
            self.release_held(counts);
            return;
        }
        let pending = Pending {
            due: now + fate.delay,
            order: self.order,
            target,
            data: data.to_vec(),
            copies,
        };
        if fate.held {
            add(&counts.reordered, 1);
            // Another was held already: this one is its "next".
            let earlier = self.held.replace(Pending {
                due: pending.due + HOLD_MOST,
                ..pending
            });
            if let Some(earlier) = earlier {
                send(&earlier.target, &earlier.data, earlier.copies, counts);
            }
            return;
        }
        self.queued += cost(pending.data.len());
        self.delayed.push(Reverse(pending));
    }

    /// When the next queued or held datagram is due.
    pub fn next_due(&self) -> Option<Instant> {
        let delayed = self.delayed.peek().map(|Reverse(p)| p.due);
        let held = self.held.as_ref().map(|p| p.due);
        delayed.into_iter().chain(held).min()
    }

    /// Sends what is due at `now`.
    pub fn send_due(&mut self, now: Instant, counts: &UdpCounts) {
        while self.delayed.peek().is_some_and(|Reverse(p)| p.due <= now) {
            let Reverse(pending) = self.delayed.pop().expect("peeked");
            self.queued -= cost(pending.data.len());
            send(&pending.target, &pending.data, pending.copies, counts);
            self.release_held(counts);
        }
        if self.held.as_ref().is_some_and(|p| p.due <= now) {
            self.release_held(counts);
        }
    }

    /// Sends everything still waiting (the worker is stopping).
    pub fn send_all(&mut self, counts: &UdpCounts) {
        while let Some(Reverse(pending)) = self.delayed.pop() {
            self.queued -= cost(pending.data.len());
            send(&pending.target, &pending.data, pending.copies, counts);
        }
        self.release_held(counts);
    }

    fn release_held(&mut self, counts: &UdpCounts) {
        if let Some(held) = self.held.take() {
            send(&held.target, &held.data, held.copies, counts);
        }
    }
}

#[cfg(test)]
#[test]
fn the_man_page_states_the_queue_bound_defined_here() {
    let reference = include_str!("../../cli/reference.txt");
    assert_eq!(QUEUE_BYTES % (1 << 20), 0);
    assert!(reference.contains(&format!(
        "at most {} MiB of answers wait",
        QUEUE_BYTES >> 20
    )));
}

fn send(target: &Target, data: &[u8], copies: u8, counts: &UdpCounts) {
    for _ in 0..copies {
        answer(target, data, counts);
    }
}
