//! The UDP worker (`--udp`, `--udp-only`): RFC 862's echo over UDP, safe against reflection.
//!
//! One process, forked by the parent before the readiness line and sandboxed like any child,
//! serves every datagram on every UDP socket in one loop: poll, then up to `BATCH` datagrams from
//! each ready socket, each answered from the address it was sent to (`datagram`). With one socket
//! and no datagram faults (nothing to wake for but datagrams and the once-a-second sweep) it
//! waits in recvmsg(2) itself instead, as the plainest C server does: one system call in and one
//! out per datagram. The parent
//! never touches a datagram; it reaps the worker like any child and forks a new one, with backoff,
//! if it dies (`parent/udp_worker.rs`).
//!
//! Before a datagram is answered, the guards (on by default, as the man page explains):
//! - a datagram larger than the buffer is counted as truncated and never echoed short;
//! - none from port 0, nor from the ports of services that answer unsolicited datagrams (7 echo,
//!   13 daytime, 17 qotd, 19 chargen, 37 time): two such services would bounce a datagram
//!   between them forever (CERT CA-1996-01);
//! - none from or to a broadcast, multicast or unspecified address: an echo to one would
//!   multiply traffic;
//! - none from the worker's own addresses, and no echo of an echo over its budget: no loop
//!   with another echo server outlives its first moment, whatever the ports (`loops`);
//! - none over `--rate-per-ip` from one address group: a spoofed source cannot aim the echo's
//!   traffic at a victim at more than that rate.
//!
//! Then the faults (`--loss`, `--duplicate`, `--reorder`, `--delay`, `--corrupt`), decided per
//! datagram by its number and `--seed` (`crate::faults::DatagramFaults`), applied in `shaper`.
//! The worker writes the shared `UdpCounts`; the parent reads them for its `stats` line. Per
//! source it logs one summary line once the source is quiet (`sources`), never one per datagram.

mod answer;
mod datagram;
pub mod dumped;
mod loops;
mod shaper;
mod sources;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{BorrowedFd, RawFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags};
use nix::sys::socket::setsockopt as sockopt_set;
use nix::sys::socket::sockopt::ReceiveTimeout;
use nix::sys::time::TimeVal;

use super::stop;
use crate::cli::Rate;
use crate::faults::DatagramFaults;
use crate::groups::Grouping;
use crate::log::logln;
use crate::peer::Peer;
use crate::rate::RateTable;
use crate::shared::UdpCounts;
use answer::{Target, add};
pub use datagram::want_packet_info;
use datagram::{Local, Received};
use loops::{LoopGuard, Print};
use shaper::Shaper;
use sources::Sources;

/// The largest datagram: 65 507 bytes of IPv4 payload, 65 527 of IPv6, fit.
pub const LARGEST: usize = 65_536;
/// Datagrams taken from one ready socket before the others get their turn.
const BATCH: usize = 64;
/// The source ports never answered, and why: each answers unsolicited datagrams.
pub const REFLECTING_PORTS: [(u16, &str); 6] = [
    (0, "no service"),
    (7, "echo"),
    (13, "daytime"),
    (17, "qotd"),
    (19, "chargen"),
    (37, "time"),
];

/// How the worker serves, fixed at startup.
#[derive(Debug, Clone, Copy)]
pub struct Serving {
    /// The largest datagram echoed (`--buffer-size`, at most 65 536).
    pub buffer_size: usize,
    /// A source quiet this long gets its summary line (`--idle-timeout`; zero: at the stop).
    pub idle_timeout: Duration,
    /// `--quiet`: no summary lines.
    pub quiet: bool,
    pub rate_per_ip: Option<Rate>,
    pub grouping: Grouping,
    pub faults: Option<&'static DatagramFaults>,
    /// `--dump`: the worker's datagrams go to a file of its own (`dumped`).
    pub dump: Option<&'static crate::child::dump::settings::Dump>,
}

/// A UDP socket the worker serves.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub fd: RawFd,
    pub addr: SocketAddr,
    /// Bound to a wildcard address: answers name their source (packet info).
    pub wildcard: bool,
}

/// Serves until a stop signal; returns the exit status. Never inlined into `child::work`, whose
/// code every connection's child runs through: this one, of one child, stays out of those pages.
#[inline(never)]
pub fn run(sockets: &[Bound], settings: Serving, counts: &UdpCounts) -> i32 {
    let own = sockets.iter().map(|socket| canonical(socket.addr));
    let mut worker = match Worker::new(settings, counts, LoopGuard::new(own)) {
        Ok(worker) => worker,
        Err(err) => {
            logln!("warning: udp worker cannot start: {err}");
            return 1;
        }
    };
    if let ([socket], None) = (sockets, settings.faults) {
        let code = worker.serve_one(socket);
        dumped::finish();
        return code;
    }
    while !stop::requested() {
        let now = Instant::now();
        let due = [worker.shaper.next_due(), worker.sources.next_sweep()];
        let timeout = due
            .into_iter()
            .flatten()
            .min()
            .map(|at| at.saturating_duration_since(now));
        let mut fds: Vec<PollFd> = sockets
            .iter()
            .map(|s| {
                // SAFETY: the worker's sockets stay open for its whole life (it ends with _exit).
                let fd = unsafe { BorrowedFd::borrow_raw(s.fd) };
                PollFd::new(fd, PollFlags::POLLIN)
            })
            .collect();
        match stop::poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(errno) => {
                logln!("warning: udp worker: poll failed: {errno}");
                return 1;
            }
        }
        // Which sockets are readable, as a bit set (at most 64: one per listener).
        let ready = (fds.iter().enumerate())
            .filter(|(_, fd)| fd.any().unwrap_or(false))
            .fold(0u64, |bits, (i, _)| bits | 1 << i);
        drop(fds);
        for (i, socket) in sockets.iter().enumerate() {
            if ready & (1 << i) != 0 {
                worker.drain(socket);
            }
        }
        let now = Instant::now();
        worker.shaper.send_due(now, counts);
        worker.sources.sweep(now);
    }
    worker.shaper.send_all(counts);
    worker.sources.flush();
    dumped::finish();
    0
}

struct Worker<'a> {
    settings: Serving,
    counts: &'a UdpCounts,
    buf: Vec<u8>,
    rates: Option<RateTable>,
    shaper: Shaper,
    sources: Sources,
    loops: LoopGuard,
    /// Datagrams received by this worker: the number the faults are decided by.
    number: u64,
    /// Whether anything reads the time of a datagram; if not, `started` stands for it.
    clock: bool,
    started: Instant,
}

impl<'a> Worker<'a> {
    fn new(settings: Serving, counts: &'a UdpCounts, loops: LoopGuard) -> io::Result<Worker<'a>> {
        Ok(Worker {
            settings,
            counts,
            buf: vec![0; settings.buffer_size],
            rates: settings.rate_per_ip.map(RateTable::new).transpose()?,
            shaper: Shaper::new(settings.faults),
            sources: Sources::new(settings.idle_timeout, settings.quiet),
            loops,
            number: 0,
            clock: settings.rate_per_ip.is_some() || !settings.quiet || settings.faults.is_some(),
            started: Instant::now(),
        })
    }

    /// Takes up to a batch of datagrams from `socket`.
    fn drain(&mut self, socket: &Bound) {
        for _ in 0..BATCH {
            match datagram::recv(socket.fd, &mut self.buf, false, socket.wildcard) {
                Ok(received) => self.handle(socket, received),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) if passing(&err) => {}
                Err(err) => {
                    logln!(
                        "warning: udp worker: receive on {} failed: {err}",
                        socket.addr
                    );
                    return;
                }
            }
        }
    }

    /// Serves one socket, waiting in recvmsg: the socket is made blocking (for the worker; the
    /// parent never reads it) with a receive timeout of one sweep, and a stop signal ends the
    /// wait (EINTR, or the 1 ms timeout the stop handler sets on a watched socket).
    fn serve_one(mut self, socket: &Bound) -> i32 {
        stop::watch(socket.fd);
        // SAFETY: the socket stays open for the worker's whole life (it ends with _exit).
        let fd = unsafe { BorrowedFd::borrow_raw(socket.fd) };
        let blocking = fcntl(fd, FcntlArg::F_GETFL).and_then(|flags| {
            let flags = OFlag::from_bits_truncate(flags) - OFlag::O_NONBLOCK;
            fcntl(fd, FcntlArg::F_SETFL(flags))
        });
        let sweep = TimeVal::new(sources::SWEEP.as_secs() as _, 0);
        let timed = sockopt_set(&fd, ReceiveTimeout, &sweep);
        if let Err(errno) = blocking.and(timed) {
            logln!(
                "warning: udp worker: unable to wait on {}: {errno}",
                socket.addr
            );
            return 1;
        }
        while !stop::requested() {
            match datagram::recv(socket.fd, &mut self.buf, true, socket.wildcard) {
                Ok(received) => self.handle(socket, received),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock || passing(&err) => {}
                Err(err) => {
                    logln!(
                        "warning: udp worker: receive on {} failed: {err}",
                        socket.addr
                    );
                    return 1;
                }
            }
            if self.sources.next_sweep().is_some() {
                self.sources.sweep(Instant::now());
            }
        }
        self.sources.flush();
        0
    }

    fn handle(&mut self, socket: &Bound, received: Received) {
        let counts = self.counts;
        // The clock is read only for what needs it: the rate, the summaries, the faults.
        let now = match self.clock {
            true => Instant::now(),
            false => self.started,
        };
        add(&counts.received, 1);
        self.number += 1;
        let from = canonical(received.from);
        let local = received.local;
        let got = &self.buf[..received.len.min(self.buf.len())];
        dumped::received(from, local.map(|local| local.to), socket.addr, got);
        // Made once: the loop guard reads it, and keeps it as the answer's unless a fault
        // changes the bytes.
        let print = Print::of(from, got);
        let dropped = if received.truncated {
            Some(&counts.truncated)
        } else if REFLECTING_PORTS
            .iter()
            .any(|&(port, _)| port == from.port())
        {
            Some(&counts.source_port)
        } else if !unicast(from.ip(), local.as_ref()) {
            Some(&counts.broadcast)
        } else if (self.loops).looping(from, local.map(|l| l.to.to_canonical()), print) {
            Some(&counts.looping)
        } else if let Some(rates) = &mut self.rates
            && !rates.admit(self.settings.grouping.key(Peer::Ip(from)), now)
        {
            Some(&counts.rate_limited)
        } else {
            None
        };
        if let Some(reason) = dropped {
            add(reason, 1);
            self.sources.saw(from, None, now);
            return;
        }
        let data = &mut self.buf[..received.len];
        match self.shaper.shape(self.number, from, data, counts) {
            Some(delivered) => {
                let sent = match delivered.corrupt_at {
                    Some(_) => Print::of(from, data),
                    None => print,
                };
                self.loops.answered(sent);
                let target = Target {
                    fd: socket.fd,
                    to: received.from,
                    local,
                    bound: socket.addr,
                };
                self.shaper.deliver(delivered, target, data, now, counts);
                self.sources.saw(from, Some(received.len), now);
            }
            None => self.sources.saw(from, None, now),
        }
    }
}

/// An error that concerns an earlier answer (ICMP port unreachable) or a signal: go on.
fn passing(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error().map(Errno::from_raw),
        Some(Errno::ECONNREFUSED | Errno::EHOSTUNREACH | Errno::EINTR)
    )
}

/// An IPv4 client of a dual-stack socket, as the IPv4 address it is.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// Whether a datagram from `from` to `local` is one to answer: neither end a broadcast,
/// multicast or unspecified address. An IPv4 datagram whose destination is not the address the
/// kernel would answer from was sent to a broadcast address (`ipi_spec_dst`).
fn unicast(from: IpAddr, local: Option<&Local>) -> bool {
    let plain = |ip: IpAddr| {
        let ip = ip.to_canonical();
        let broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
        !(ip.is_multicast() || ip.is_unspecified() || broadcast)
    };
    let to_ok = local.is_none_or(|local| {
        let directed = local.to.to_canonical() != local.answer_from.to_canonical();
        plain(local.to) && !directed
    });
    plain(from) && to_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(to: &str, answer_from: &str) -> Local {
        Local {
            to: to.parse().unwrap(),
            answer_from: answer_from.parse().unwrap(),
            ifindex: 1,
        }
    }

    #[test]
    fn broadcast_multicast_and_unspecified_ends_are_never_answered() {
        let client: IpAddr = "192.0.2.7".parse().unwrap();
        assert!(unicast(client, None));
        assert!(unicast(client, Some(&local("192.0.2.1", "192.0.2.1"))));
        assert!(unicast("::ffff:192.0.2.7".parse().unwrap(), None));
        for source in ["255.255.255.255", "224.0.0.1", "0.0.0.0", "ff02::1", "::"] {
            assert!(!unicast(source.parse().unwrap(), None), "{source}");
        }
        // A subnet broadcast: sent to .255, answered (were it answered) from the host's address.
        assert!(!unicast(client, Some(&local("192.0.2.255", "192.0.2.1"))));
        assert!(!unicast(
            client,
            Some(&local("255.255.255.255", "192.0.2.1"))
        ));
        assert!(!unicast(client, Some(&local("239.1.2.3", "239.1.2.3"))));
        assert!(!unicast(client, Some(&local("ff02::1", "ff02::1"))));
        // The same address, once mapped and once not, is unicast.
        assert!(unicast(
            client,
            Some(&local("::ffff:192.0.2.1", "192.0.2.1"))
        ));
    }
}
