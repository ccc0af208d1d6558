//! `--proxy-protocol`: the PROXY protocol header (v1 and v2, haproxy's doc/proxy-protocol.txt)
//! that HAProxy (`send-proxy-v2`), nginx stream, AWS NLB and Envoy put before a connection's
//! first byte, naming the client they accepted it from.
//!
//! The parent reads it, before any fork, so that logs, `--max-per-ip` and `--rate-per-ip` see the
//! real client. The listeners hand over a connection only once it has sent something
//! (TCP_DEFER_ACCEPT, set in `setup`), so the header is normally all there at accept. One that is
//! not waits in the `WaitingRoom` until its header is complete, watched by the same poll as the
//! listeners and never read with a blocking call, so a client that sends nothing (or half a
//! header) costs one descriptor until its deadline and never stalls the loop. The room is the
//! parent's own (in `parent::LoopState`); a connection leaves it as an `Arrival` for admission,
//! or closed, counted in `proxy-errors=` and logged as `proxy-error`.
//! The header is looked at with MSG_PEEK and then exactly its length is taken off the socket:
//! whatever the client sent after it stays in the socket for the child to echo. A connection
//! whose first bytes are no header, a malformed or over-long header, or none within the
//! deadline, is closed and logged (`proxy-error`). `LOCAL` headers (a balancer's health checks)
//! and headers for other families (`UNKNOWN`, UNIX, UDP) are served under the connection's own
//! address.

mod header;

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, recv};
use socket2::Socket;

use super::pollset::PollSet;
use super::stats::Counts;
use crate::log::logln;
use crate::log::{Quoted, RateLimit, Secs, Suppressed};
use crate::memory;
use crate::peer::{Peer, Via};
use header::{Parsed, Source, V2_MAX, parse};

/// A connection whose header has not come in full yet.
struct Waiting {
    socket: Socket,
    /// The address the connection came from (the balancer).
    from: SocketAddr,
    deadline: Instant,
    /// Whether its receive low-water mark was raised (see `wait_for_more`), to be put back.
    lowat: bool,
}

/// What reading a waiting connection's header came to.
enum Read {
    /// The header, taken off the socket; the client's data is next.
    Done(Source),
    /// Not yet complete: wait for more than these bytes.
    More(usize),
    /// Close it: why (for the log line).
    Fail(String),
}

/// Where headers are peeked into: in memory children do not inherit, so the parent writing it
/// after a fork copies nothing (see `memory`).
struct Reader {
    buf: NonNull<u8>,
}

impl Reader {
    fn new() -> nix::Result<Reader> {
        Ok(Reader {
            buf: memory::map_parent_only(V2_MAX)?,
        })
    }

    fn buf(&mut self) -> &mut [u8] {
        // The mapping lives as long as the reader and only the reader refers to it.
        // SAFETY: V2_MAX zero-initialised bytes, borrowed mutably through `self` alone.
        unsafe { std::slice::from_raw_parts_mut(self.buf.as_ptr(), V2_MAX) }
    }

    /// Looks at what `socket` has (never waiting) and, once it is a whole header, takes exactly
    /// the header off it.
    #[inline(never)]
    fn read(&mut self, socket: &Socket) -> Read {
        let fd = socket.as_raw_fd();
        let buf = self.buf();
        let peeked = match recv(fd, buf, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT) {
            Ok(0) => return Read::Fail("closed before its PROXY header".to_string()),
            Ok(n) => n,
            Err(Errno::EAGAIN | Errno::EINTR) => return Read::More(0),
            Err(errno) => return Read::Fail(io::Error::from(errno).to_string()),
        };
        match parse(&buf[..peeked]) {
            Parsed::Incomplete if peeked == buf.len() => {
                Read::Fail("PROXY header longer than 4096 bytes".to_string())
            }
            // The client has said all it will (FIN) and it is no whole header: a failed header,
            // closed at once (poll would report the FIN again and again until the deadline).
            Parsed::Incomplete if finished(fd) => {
                Read::Fail("closed before its whole PROXY header".to_string())
            }
            Parsed::Incomplete => Read::More(peeked),
            Parsed::Invalid(why) => Read::Fail(why.to_string()),
            Parsed::Complete { source, len } => {
                // The bytes are there (peeked): this takes exactly them.
                match recv(fd, &mut buf[..len], MsgFlags::MSG_DONTWAIT) {
                    Ok(n) if n == len => Read::Done(source),
                    Ok(_) => Read::Fail("PROXY header shorter than peeked".to_string()),
                    Err(errno) => Read::Fail(io::Error::from(errno).to_string()),
                }
            }
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        // SAFETY: the one mapping `new` made, referred to by nothing once the reader goes.
        unsafe { memory::unmap(self.buf, V2_MAX) };
    }
}

/// A connection whose header said where it comes from, ready for admission.
pub struct Arrival {
    pub socket: Socket,
    /// The client (or the balancer itself, for a LOCAL header).
    pub peer: Peer,
    pub via: Via,
}

/// At most one `proxy-error` line per second.
const WARN_INTERVAL: Duration = Duration::from_secs(1);

/// The connections whose header has not come in full yet, and how their headers are read.
pub struct WaitingRoom {
    reader: Reader,
    waiting: Vec<Waiting>,
    /// How long a connection may take to send its header.
    deadline: Duration,
    /// Where `next_arrival` looks next: it walks the room last to first once per poll.
    cursor: usize,
    warnings: RateLimit,
}

impl WaitingRoom {
    pub fn new(deadline: Duration) -> Result<WaitingRoom> {
        Ok(WaitingRoom {
            reader: Reader::new().context("unable to map the PROXY header buffer")?,
            waiting: Vec::new(),
            deadline,
            cursor: 0,
            warnings: RateLimit::new(WARN_INTERVAL),
        })
    }

    /// How many connections are waiting.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Closes every waiting connection (at shutdown).
    pub fn clear(&mut self) {
        self.waiting.clear();
    }

    /// The earliest deadline of a waiting connection, for the loop's poll timeout.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.waiting.iter().map(|waiting| waiting.deadline).min()
    }

    /// The descriptors to poll, in the order `next_arrival` expects them.
    pub fn fds(&self) -> impl Iterator<Item = RawFd> + '_ {
        self.waiting
            .iter()
            .map(|waiting| waiting.socket.as_raw_fd())
    }

    /// A connection just accepted from `from`: its header is read at once if it is all there
    /// (the usual case); otherwise it waits, or is closed if what it sent is no header.
    pub fn arrive(
        &mut self,
        socket: Socket,
        from: SocketAddr,
        counts: &mut Counts,
    ) -> Option<Arrival> {
        match self.reader.read(&socket) {
            Read::Done(source) => Some(arrival(socket, from, source)),
            Read::More(peeked) => {
                let deadline = Instant::now() + self.deadline;
                let lowat = wait_for_more(&socket, peeked);
                self.waiting.push(Waiting {
                    socket,
                    from,
                    deadline,
                    lowat,
                });
                None
            }
            Read::Fail(why) => {
                self.failed(socket, from, &why, counts);
                None
            }
        }
    }

    /// Begins a walk of the room after a poll (see `next_arrival`).
    pub fn start_walk(&mut self) {
        self.cursor = self.waiting.len();
    }

    /// The next waiting connection whose header is now complete. On the way it reads the
    /// connections the last poll found something on (entry `first` + i of `polled` is waiting
    /// connection i) and gives up on those past their deadline. Last to first, so a removal
    /// (`swap_remove`) moves only an entry already seen.
    pub fn next_arrival(
        &mut self,
        polled: &mut PollSet,
        first: usize,
        counts: &mut Counts,
    ) -> Option<Arrival> {
        let now = Instant::now();
        while self.cursor > 0 {
            self.cursor -= 1;
            let index = self.cursor;
            let waiting = &self.waiting[index];
            let expired = waiting.deadline <= now;
            if !polled.ready(first + index) && !expired {
                continue;
            }
            let read = self.reader.read(&waiting.socket);
            if let Read::More(peeked) = read
                && !expired
            {
                let lowat = wait_for_more(&waiting.socket, peeked);
                self.waiting[index].lowat |= lowat;
                continue;
            }
            let Waiting {
                socket,
                from,
                lowat,
                ..
            } = self.waiting.swap_remove(index);
            match read {
                Read::Done(source) => {
                    // The child reads with the usual low-water mark: one byte.
                    if lowat && set_lowat(&socket, 1).is_err() {
                        self.failed(socket, from, "unable to reset SO_RCVLOWAT", counts);
                        continue;
                    }
                    return Some(arrival(socket, from, source));
                }
                Read::Fail(why) => self.failed(socket, from, &why, counts),
                Read::More(_) => {
                    let why = format!("no complete PROXY header within {}", Secs(self.deadline));
                    self.failed(socket, from, &why, counts);
                }
            }
        }
        None
    }

    /// Closes a connection whose PROXY header is missing or broken, and says why.
    fn failed(&mut self, socket: Socket, from: SocketAddr, why: &str, counts: &mut Counts) {
        drop(socket);
        counts.proxy_errors += 1;
        if let Some(held) = self.warnings.allow(Instant::now()) {
            logln!(
                "proxy-error peer={} error={}{}",
                Peer::Ip(from),
                Quoted(why),
                Suppressed(held)
            );
        }
    }
}

/// A connection whose header is not complete after `peeked` bytes must cost nothing until more
/// comes: the bytes stay in the socket (they are only peeked), so poll would report it readable
/// again at once and the loop would spin until its deadline. Raising its receive low-water mark
/// (SO_RCVLOWAT) above what is there makes poll wait for more data, while a FIN or a reset still
/// wakes it (tcp_poll reports those whatever the mark). True if the mark was raised.
fn wait_for_more(socket: &Socket, peeked: usize) -> bool {
    peeked > 0 && set_lowat(socket, peeked + 1).is_ok()
}

/// Whether the client has shut its side (its FIN is in): POLLRDHUP, asked without waiting.
fn finished(fd: RawFd) -> bool {
    use nix::libc;
    let mut polled = libc::pollfd {
        fd,
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // libc's poll: nix's PollFd reports no revents at all once POLLRDHUP, a bit it does not
    // name, is among them.
    // SAFETY: one pollfd, alive for the call; a zero timeout never waits.
    let ready = unsafe { libc::poll(&raw mut polled, 1, 0) };
    ready == 1 && polled.revents & (libc::POLLRDHUP | libc::POLLHUP) != 0
}

fn set_lowat(socket: &Socket, bytes: usize) -> io::Result<()> {
    let bytes = bytes.min(i32::MAX as usize) as i32;
    let (level, name) = (nix::libc::SOL_SOCKET, nix::libc::SO_RCVLOWAT);
    crate::sockopt::set_int(socket, level, name, bytes)
}

/// A connection from `from` whose header named `source`.
fn arrival(socket: Socket, from: SocketAddr, source: Source) -> Arrival {
    let (peer, via) = match source {
        Source::Client(peer) => (Peer::Ip(peer), Via::Proxy(from)),
        Source::Local => (Peer::Ip(from), Via::Local),
    };
    Arrival { socket, peer, via }
}
