//! Misbehaviour on purpose (`--delay`, `--rate`, `--chunk`, `--close-after`, `--reset-after`,
//! `--stall-after`, `--slow-close`, `--fault-rate`, `--seed`): what the faults are and which
//! connections get them.
//!
//! The faults follow toxiproxy's toxics (latency, bandwidth, slicer, limit_data, reset_peer,
//! timeout), but each child applies them to its own connection alone, so one server can serve a
//! slow connection next to a healthy one. The parent fixes the faults and the seed at startup and
//! does nothing per connection; a child decides from the seed and its connection number (the
//! count of connections accepted, 1 for the first) whether it misbehaves, and draws its delays'
//! jitter from the same seed: the same seed gives the same decisions for the same connection
//! numbers. A chosen connection is echoed by `child/echo/shaped.rs`; every other one by the usual
//! path, at the usual cost. `cli::faults` builds `Faults` from the options; the children only
//! read it. Which connections are chosen is `selectors`.

pub use crate::selectors::{Selector, Selectors};
pub use crate::websocket_faults::{Close as WebSocketClose, REASON_MAX, WebSocketFaults};
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// The faults the options ask for, fixed at startup.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Faults {
    /// `--delay MS[:JITTER]`: each echoed chunk held back this long.
    pub delay: Option<Delay>,
    /// `--rate BYTES_PER_S`: the echo throttled to this many bytes a second.
    pub rate: Option<u64>,
    /// `--chunk SIZE[:DELAY_MS]`: the echo written in pieces of at most this many bytes.
    pub chunk: Option<Chunk>,
    /// `--close-after`, `--reset-after`, `--stall-after`, `--close-on` or `--reset-on` (at most
    /// one: each ends the echo).
    pub limit: Option<Limit>,
    /// `--slow-close MS`: after the client's FIN, this long before the connection is closed.
    pub slow_close: Option<Duration>,
    /// `--websocket-close`, `--websocket-ping`, `--websocket-no-pong`.
    pub websocket: WebSocketFaults,
    /// `--fault-on`: which connections get the faults (all, when empty).
    pub on: Selectors,
    /// `--fault-rate P`: the fraction of connections that get the faults, in (0, 1].
    pub fault_rate: f64,
    /// `--seed N`, or a random one (logged at startup, so a run can be repeated).
    pub seed: u64,
}

/// The faults for UDP datagrams (`--loss`, `--duplicate`, `--reorder`, `--corrupt`, and
/// `--delay`), each decided per datagram from the seed and the datagram's number (1 for the
/// first the worker received): the same seed drops, doubles, holds and corrupts the same
/// datagrams every run. Probabilities are 0 when off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DatagramFaults {
    pub loss: f64,
    pub duplicate: f64,
    pub reorder: f64,
    pub corrupt: f64,
    pub delay: Option<Delay>,
    pub seed: u64,
}

/// What happens to one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fate {
    pub lost: bool,
    pub duplicated: bool,
    /// Held, and sent after the next datagram.
    pub held: bool,
    /// The byte to flip (an index below the datagram's length), if corrupted.
    pub corrupt_at: Option<usize>,
    pub delay: Duration,
}

impl DatagramFaults {
    /// The fate of datagram number `number`, of `len` bytes.
    pub fn fate(&self, number: u64, len: usize) -> Fate {
        let mut rng = Rng(self.seed ^ number.wrapping_mul(0x9E6C_63D0_676A_9A99));
        rng.next();
        // Every draw is made whatever the outcome, so one fault's probability never shifts
        // another's decisions.
        let (lost, duplicated, held, corrupt) = (
            rng.unit() < self.loss,
            rng.unit() < self.duplicate,
            rng.unit() < self.reorder,
            rng.unit() < self.corrupt,
        );
        let at = (rng.next() % len.max(1) as u64) as usize;
        let delay = match self.delay {
            Some(Delay { base, jitter }) => rng.around(base, jitter),
            None => Duration::ZERO,
        };
        Fate {
            lost,
            duplicated: duplicated && !lost,
            held: held && !lost,
            corrupt_at: (corrupt && !lost && len > 0).then_some(at),
            delay,
        }
    }
}

/// The startup line's description: `loss=0.1 duplicate=0 … seed=N`.
impl fmt::Display for DatagramFaults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "loss={} duplicate={} reorder={} corrupt={} ",
            self.loss, self.duplicate, self.reorder, self.corrupt
        )?;
        if let Some(Delay { base, jitter }) = self.delay {
            write!(
                f,
                "delay={}ms jitter={}ms ",
                base.as_millis(),
                jitter.as_millis()
            )?;
        }
        write!(f, "seed={}", self.seed)
    }
}

/// `--delay MS[:JITTER]`: each chunk is written `base` ± up to `jitter` (uniform) after it was
/// read, never before the chunk read ahead of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delay {
    pub base: Duration,
    pub jitter: Duration,
}

/// `--chunk SIZE[:DELAY_MS]`: pieces of at most `size` bytes, `gap` apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    pub size: usize,
    pub gap: Duration,
}

/// Without `:DELAY_MS`, pieces are this far apart: long enough for a reader that is waiting to
/// take each piece on its own, so `--chunk 1` splits every message a client reads.
pub const CHUNK_GAP: Duration = Duration::from_millis(1);

/// What happens, and when: a limit ends the echo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub kind: LimitKind,
    pub at: Trigger,
}

/// When a limit acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Once this many bytes have been echoed (`--close-after 1K`).
    Bytes(u64),
    /// This long after the connection was accepted (`--close-after 500ms`): what was echoed by
    /// then is all the client gets.
    After(Duration),
    /// Where the client's stream first contains this pattern (`--close-on`, `--reset-on`): the
    /// bytes before it are echoed, the pattern and what follows are not.
    Pattern(&'static [u8]),
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trigger::Bytes(bytes) => write!(f, "{bytes}"),
            Trigger::After(after) => write!(f, "{}ms", after.as_millis()),
            Trigger::Pattern(pattern) => write!(f, "\"{}\"", pattern.escape_ascii()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// A clean close (FIN); what the client sends after the limit is read and dropped.
    Close,
    /// A reset (RST), once the client has received the bytes before it.
    Reset,
    /// Nothing more read or written; the connection stays open until the client closes it or
    /// the idle timeout passes.
    Stall,
}

impl LimitKind {
    pub fn name(self) -> &'static str {
        match self {
            LimitKind::Close => "close-after",
            LimitKind::Reset => "reset-after",
            LimitKind::Stall => "stall-after",
        }
    }
}

impl Limit {
    /// The option that set it: `close-after`, or `close-on` for a pattern.
    pub fn name(&self) -> &'static str {
        match (self.at, self.kind) {
            (Trigger::Pattern(_), LimitKind::Close) => "close-on",
            (Trigger::Pattern(_), _) => "reset-on",
            (_, kind) => kind.name(),
        }
    }
}

impl Faults {
    /// Whether connection number `serial`, from `peer` (None: a Unix client), gets the faults
    /// (`--fault-on`, then `--fault-rate`).
    pub fn applies(&self, serial: u32, peer: Option<std::net::IpAddr>) -> bool {
        self.on.choose(serial, peer)
            && (self.fault_rate >= 1.0 || Rng::new(self.seed, serial).unit() < self.fault_rate)
    }

    /// The random numbers of connection `serial` for its delays' jitter: the draws after the
    /// one that decided `applies`.
    pub fn rng(&self, serial: u32) -> Rng {
        let mut rng = Rng::new(self.seed, serial);
        rng.next();
        rng
    }
}

/// A seed for a run without `--seed`: from the operating system's randomness (std seeds its
/// hash maps from getrandom).
pub fn random_seed() -> u64 {
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// The startup line's description: `delay=100ms±20ms rate=65536 … seed=N`.
impl fmt::Display for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| d.as_millis();
        if let Some(Delay { base, jitter }) = self.delay {
            write!(f, "delay={}ms jitter={}ms ", ms(base), ms(jitter))?;
        }
        if let Some(rate) = self.rate {
            write!(f, "rate={rate}B/s ")?;
        }
        if let Some(Chunk { size, gap }) = self.chunk {
            write!(f, "chunk={size} chunk-delay={}ms ", ms(gap))?;
        }
        if let Some(limit) = self.limit {
            write!(f, "{}={} ", limit.name(), limit.at)?;
        }
        if let Some(wait) = self.slow_close {
            write!(f, "slow-close={}ms ", ms(wait))?;
        }
        write!(f, "{}", self.websocket)?;
        if !self.on.is_empty() {
            write!(f, "fault-on={} ", self.on)?;
        }
        write!(f, "fault-rate={} seed={}", self.fault_rate, self.seed)
    }
}

/// splitmix64: small, fast, and good enough to pick connections and jitter; the same seed and
/// connection number always give the same sequence.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    fn new(seed: u64, serial: u32) -> Rng {
        let mut rng = Rng(seed ^ u64::from(serial).wrapping_mul(0xD1B5_4A32_D192_ED03));
        // Mix once, so that neighbouring connection numbers start far apart.
        rng.next();
        rng
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `base` moved by a uniform amount in [-jitter, +jitter], never below zero.
    pub fn around(&mut self, base: Duration, jitter: Duration) -> Duration {
        if jitter.is_zero() {
            return base;
        }
        let offset = jitter.mul_f64(self.unit() * 2.0);
        (base + offset).saturating_sub(jitter)
    }
}

/// Which faults acted on a connection, for its close line (`fault=delay,chunk`, `fault=none`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Acted(u16);

impl Acted {
    pub const DELAY: Acted = Acted(1);
    pub const RATE: Acted = Acted(2);
    pub const CHUNK: Acted = Acted(4);
    pub const CLOSE_AFTER: Acted = Acted(8);
    pub const RESET_AFTER: Acted = Acted(16);
    pub const STALL_AFTER: Acted = Acted(32);
    pub const SLOW_CLOSE: Acted = Acted(64);
    pub const WEBSOCKET_CLOSE: Acted = Acted(128);
    pub const WEBSOCKET_PING: Acted = Acted(256);
    pub const WEBSOCKET_NO_PONG: Acted = Acted(512);
    /// Every fault, by bit: the close line's `fault=` words, and the metrics' labels.
    pub const NAMES: [&str; 10] = [
        "delay",
        "rate",
        "chunk",
        "close-after",
        "reset-after",
        "stall-after",
        "slow-close",
        "websocket-close",
        "websocket-ping",
        "websocket-no-pong",
    ];

    /// The faults' bits, as `NAMES` orders them.
    pub fn bits(self) -> u16 {
        self.0
    }

    pub fn add(&mut self, fault: Acted) {
        self.0 |= fault.0;
    }

    pub fn limit(kind: LimitKind) -> Acted {
        match kind {
            LimitKind::Close => Acted::CLOSE_AFTER,
            LimitKind::Reset => Acted::RESET_AFTER,
            LimitKind::Stall => Acted::STALL_AFTER,
        }
    }
}

impl fmt::Display for Acted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("none");
        }
        let mut names = Acted::NAMES
            .iter()
            .enumerate()
            .filter(|(bit, _)| self.0 & (1 << bit) != 0)
            .map(|(_, name)| name);
        if let Some(first) = names.next() {
            f.write_str(first)?;
        }
        names.try_for_each(|name| write!(f, ",{name}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn faults(fault_rate: f64, seed: u64) -> Faults {
        Faults {
            delay: None,
            rate: None,
            chunk: None,
            limit: None,
            slow_close: None,
            websocket: WebSocketFaults::default(),
            on: Selectors::default(),
            fault_rate,
            seed,
        }
    }

    #[test]
    fn datagram_fates_repeat_with_the_seed_and_follow_the_probabilities() {
        let faults = DatagramFaults {
            loss: 0.5,
            duplicate: 0.0,
            reorder: 0.0,
            corrupt: 0.0,
            delay: None,
            seed: 7,
        };
        let lost: Vec<u64> = (1..=1000).filter(|&n| faults.fate(n, 64).lost).collect();
        let again: Vec<u64> = (1..=1000).filter(|&n| faults.fate(n, 64).lost).collect();
        assert_eq!(lost, again, "the same seed loses the same datagrams");
        assert!((400..600).contains(&lost.len()), "{} of 1000", lost.len());
        let other = DatagramFaults { seed: 8, ..faults };
        assert_ne!(
            lost,
            (1..=1000)
                .filter(|&n| other.fate(n, 64).lost)
                .collect::<Vec<_>>()
        );
        let corrupt = DatagramFaults {
            loss: 0.0,
            corrupt: 1.0,
            ..faults
        };
        for n in 1..100 {
            let at = corrupt.fate(n, 10).corrupt_at.expect("every one corrupted");
            assert!(at < 10);
        }
        assert_eq!(
            corrupt.fate(1, 0).corrupt_at,
            None,
            "an empty datagram has no byte"
        );
    }

    #[test]
    fn the_same_seed_picks_the_same_connections() {
        let picks = |seed| -> Vec<bool> {
            (1..=200)
                .map(|n| faults(0.3, seed).applies(n, None))
                .collect()
        };
        assert_eq!(picks(7), picks(7));
        assert_ne!(picks(7), picks(8));
    }

    #[test]
    fn the_fault_rate_is_the_fraction_of_connections_picked() {
        let picked = (1..=10_000)
            .filter(|&n| faults(0.25, 42).applies(n, None))
            .count();
        assert!((2_250..=2_750).contains(&picked), "{picked} of 10000");
        assert!((1..=100).all(|n| faults(1.0, 42).applies(n, None)));
    }

    #[test]
    fn jitter_stays_within_its_bounds_and_covers_them() {
        let mut rng = faults(1.0, 3).rng(1);
        let base = Duration::from_millis(100);
        let jitter = Duration::from_millis(20);
        let draws: Vec<Duration> = (0..1000).map(|_| rng.around(base, jitter)).collect();
        assert!(draws.iter().all(|d| (80..=120).contains(&d.as_millis())));
        assert!(draws.iter().any(|d| d.as_millis() < 85));
        assert!(draws.iter().any(|d| d.as_millis() >= 115));
        let mut rng = faults(1.0, 3).rng(1);
        assert_eq!(
            rng.around(Duration::from_millis(5), Duration::ZERO)
                .as_millis(),
            5
        );
        // A jitter larger than the delay never makes it negative.
        assert!((0..100).all(|_| rng.around(Duration::ZERO, jitter) <= jitter));
    }

    #[test]
    fn the_close_line_names_the_faults_that_acted() {
        assert_eq!(Acted::default().to_string(), "none");
        let mut acted = Acted::DELAY;
        acted.add(Acted::CHUNK);
        acted.add(Acted::limit(LimitKind::Reset));
        assert_eq!(acted.to_string(), "delay,chunk,reset-after");
        assert_eq!(Acted::SLOW_CLOSE.to_string(), "slow-close");
    }
}
