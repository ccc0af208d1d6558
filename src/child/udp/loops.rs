//! The echo-loop guard: no datagram loop between forkecho and another echo server (or itself)
//! outlives a moment, whatever its ports.
//!
//! One forged datagram "from" another echo server's address and port starts a loop: each
//! answers the other's answer, forever (CERT CA-1996-01). The reflecting-port guard catches the
//! well-known services; two servers on ordinary ports, or a datagram "from" the server's own
//! address, pass it. What every such loop has, whatever its ports, is that each datagram that
//! comes in is the very answer this worker last sent to that source. So:
//! - a datagram from one of the worker's own sockets' addresses is never answered (a loop of
//!   one, or between two listeners of this process);
//! - an answer leaves a fingerprint (destination, length, first and last bytes) in a table; a
//!   datagram whose source and fingerprint match one there is a *returned echo*. Each source
//!   may send `BURST` of those and then `RATE` a second; past that they are dropped, counted
//!   as `loop`. One drop ends a loop for good (nothing brings the datagram back), and a loop
//!   slower than `RATE` costs next to nothing while it lasts.
//!
//! A client whose datagrams differ from what it just got back (a sequence number, a time, new
//! data: every probe and load generator) is never limited. What it costs: a client that sends
//! the same bytes again, from the same port, in lockstep with the answers, more than `BURST`
//! times at over `RATE` a second, loses answers. Owned by the UDP worker alone; fixed-size
//! tables, nothing allocated per datagram, and the clock read only for a returned echo.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Returned echoes a source may send before the rate applies.
pub const BURST: u32 = 1024;
/// Returned echoes a second a source may send after its burst.
pub const RATE: u32 = 10;
/// Fingerprints of recent answers kept (a power of two).
const ANSWERS: usize = 4096;
/// Sources whose returned echoes are being counted (a power of two).
const SOURCES: usize = 1024;
/// The bytes at each end of a datagram that go into its fingerprint.
const ENDS: usize = 16;

pub struct LoopGuard {
    /// Where this worker listens (canonical addresses): a datagram from one is never answered.
    own: Vec<SocketAddr>,
    /// A fingerprint per slot, by the fingerprint's low bits; 0 is an empty slot.
    answers: Box<[u64; ANSWERS]>,
    budgets: Box<[Budget; SOURCES]>,
}

/// The returned echoes one source may still send.
#[derive(Clone, Copy)]
struct Budget {
    /// The source's key (`source_key`, never 0); 0 for a slot no source has used.
    source: u64,
    tokens: u32,
    refilled: Instant,
}

impl LoopGuard {
    /// `own`: where the worker listens, as canonical addresses.
    pub fn new(own: impl IntoIterator<Item = SocketAddr>) -> LoopGuard {
        let empty = Budget {
            source: 0,
            tokens: BURST,
            refilled: Instant::now(),
        };
        LoopGuard {
            own: own.into_iter().collect(),
            answers: Box::new([0; ANSWERS]),
            budgets: Box::new([empty; SOURCES]),
        }
    }

    /// Whether the datagram from `from` with fingerprint `print`, sent to `to` (its
    /// destination, where known), belongs to a loop and must not be answered. `from` and `to`
    /// are canonical.
    pub fn looping(&mut self, from: SocketAddr, to: Option<IpAddr>, print: Print) -> bool {
        let own = |addr: &SocketAddr| {
            addr.port() == from.port()
                && (addr.ip() == from.ip() || (addr.ip().is_unspecified() && to == Some(from.ip())))
        };
        if self.own.iter().any(own) {
            return true;
        }
        if self.answers[print.0 as usize % ANSWERS] != print.0 {
            return false;
        }
        !self.spend(source_key(from), Instant::now())
    }

    /// Notes an answer sent, by its fingerprint (`Print::of` its destination and bytes).
    pub fn answered(&mut self, print: Print) {
        self.answers[print.0 as usize % ANSWERS] = print.0;
    }

    /// Spends one of `source`'s returned echoes; false when it has none left.
    fn spend(&mut self, source: u64, now: Instant) -> bool {
        let budget = &mut self.budgets[source as usize % SOURCES];
        if budget.source != source {
            *budget = Budget {
                source,
                tokens: BURST,
                refilled: now,
            };
        }
        // Whole tokens only; the time of a part token is kept for the next call (unless the
        // budget is full, when time earns nothing).
        let since = now.saturating_duration_since(budget.refilled);
        let earned = since.as_millis() as u64 * u64::from(RATE) / 1000;
        if earned > 0 {
            let tokens = u64::from(budget.tokens) + earned;
            budget.tokens = tokens.min(u64::from(BURST)) as u32;
            budget.refilled = match tokens >= u64::from(BURST) {
                true => now,
                false => budget.refilled + Duration::from_millis(earned * 1000 / u64::from(RATE)),
            };
        }
        match budget.tokens {
            0 => false,
            _ => {
                budget.tokens -= 1;
                true
            }
        }
    }
}

/// A datagram's fingerprint: a 64-bit mix (never 0) of its peer, its length and the bytes at
/// both ends. Made once per datagram received, and again for its answer only if a fault changed
/// the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Print(u64);

impl Print {
    pub fn of(peer: SocketAddr, data: &[u8]) -> Print {
        let head = &data[..data.len().min(ENDS)];
        let tail = &data[data.len().saturating_sub(ENDS)..];
        let mut hash = mix(source_key(peer), data.len() as u64);
        for chunk in head.chunks(8).chain(tail.chunks(8)) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            hash = mix(hash, u64::from_le_bytes(word));
        }
        Print(hash | 1)
    }
}

/// The peer as one number.
fn source_key(peer: SocketAddr) -> u64 {
    let ip = match peer.ip() {
        IpAddr::V4(v4) => u64::from(v4.to_bits()),
        IpAddr::V6(v6) => {
            let bits = v6.to_bits();
            mix(bits as u64, (bits >> 64) as u64)
        }
    };
    mix(ip, u64::from(peer.port())) | 1
}

/// One round of a multiply-rotate mix (as FxHash does).
fn mix(hash: u64, word: u64) -> u64 {
    (hash.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn datagrams_from_the_workers_own_addresses_are_loops() {
        let mut guard = LoopGuard::new([addr("127.0.0.1:7000"), addr("0.0.0.0:7001")]);
        let local = Some("127.0.0.2".parse().unwrap());
        let mut looping =
            |from: &str, to| guard.looping(addr(from), to, Print::of(addr(from), b"x"));
        assert!(looping("127.0.0.1:7000", None));
        assert!(looping("127.0.0.2:7001", local));
        assert!(!looping("127.0.0.3:7001", local));
        assert!(!looping("127.0.0.1:7002", None));
    }

    #[test]
    fn returned_echoes_are_answered_up_to_the_burst_and_then_at_the_rate() {
        let mut guard = LoopGuard::new([]);
        let peer = addr("192.0.2.1:9999");
        let mut answered = 0;
        let print = Print::of(peer, b"same bytes");
        for _ in 0..BURST * 2 {
            if guard.looping(peer, None, print) {
                break;
            }
            guard.answered(print);
            answered += 1;
        }
        // The first is no returned echo (nothing was sent yet); then the burst.
        assert_eq!(answered, BURST + 1);
        // Another source, and other bytes from this one, are not held back.
        let other_port = addr("192.0.2.1:9998");
        let other_bytes = Print::of(peer, b"other bytes");
        assert!(!guard.looping(other_port, None, Print::of(other_port, b"same bytes")));
        assert!(!guard.looping(peer, None, other_bytes));
        // A second later, RATE more.
        let later = Instant::now() + Duration::from_secs(1);
        let key = source_key(peer);
        let spent = (0..RATE * 2).filter(|_| guard.spend(key, later)).count();
        assert_eq!(spent, RATE as usize);
    }

    #[test]
    fn the_man_page_and_readme_state_the_budget_defined_here() {
        let reference = include_str!("../../cli/reference.txt");
        let said = format!(
            "Each source may send {BURST} of those, then {RATE} a second; past that they are \
             dropped (`udp-loop=`)"
        );
        assert!(reference.contains(&said), "reference.txt must say: {said}");
        assert!(reference.contains(&format!("gets {BURST} and then {RATE} a second")));
        let readme = include_str!("../../../README.md");
        assert!(readme.contains(&format!("gets {BURST} such answers, then {RATE} a second")));
    }

    #[test]
    fn fingerprints_tell_lengths_ends_and_peers_apart() {
        let peer = addr("192.0.2.1:1");
        let print = Print::of(peer, b"abc");
        assert_ne!(print, Print::of(peer, b"abd"));
        assert_ne!(print, Print::of(peer, b"abc\0"));
        assert_ne!(print, Print::of(addr("192.0.2.1:2"), b"abc"));
        assert_ne!(print.0, 0);
        assert_ne!(Print::of(peer, &[7; 100]), Print::of(peer, &[8; 100]));
    }
}
