//! The datagram faults, applied: netem's effects without root and without touching an
//! interface. A datagram's fate is drawn from `--seed` and its number (`faults::DatagramFaults`);
//! here it is lost, corrupted (one byte flipped, said in a log line), sent twice, held back for
//! its delay, or held until the next datagram has gone (reordered; at most `HOLD_MOST`, if no
//! next comes).
//!
//! Owned by the UDP worker alone. Without faults nothing is queued or copied: every answer goes
//! out at once.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{Target, add, answer};
use crate::faults::{DatagramFaults, Fate};
use crate::logln;
use crate::peer::Peer;
use crate::shared::UdpCounts;

/// The longest a reordered datagram waits for a next one.
pub const HOLD_MOST: Duration = Duration::from_secs(1);

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
}

impl Shaper {
    pub fn new(faults: Option<&'static DatagramFaults>) -> Shaper {
        Shaper {
            faults,
            delayed: BinaryHeap::new(),
            held: None,
            order: 0,
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
        let copies = 1 + u8::from(fate.duplicated);
        if fate.duplicated {
            add(&counts.duplicated, 1);
        }
        self.order += 1;
        // Without faults every fate is this one: out at once.
        if !fate.held && fate.delay.is_zero() {
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

fn send(target: &Target, data: &[u8], copies: u8, counts: &UdpCounts) {
    for _ in 0..copies {
        answer(target, data, counts);
    }
}
