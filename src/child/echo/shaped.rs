//! The echo of a connection that `faults` picked: the same protocol as `copy`, shaped.
//!
//! One loop, one poll: what was read waits in the buffer as chunks, each stamped with the
//! instant it may be written (`--delay`); a chunk goes out in pieces no larger than `--chunk`
//! allows, spaced by its delay, and no faster than the `--rate` token bucket refills (which holds
//! at most one piece, so the echo never runs ahead of the rate by more than that). Reading goes
//! on while chunks wait, as long as the buffer has room, so a delay delays the echo without
//! slowing it. Reads stop at a `--close-after`, `--reset-after` or `--stall-after` limit, so the
//! client receives exactly that many bytes; then the connection is closed (FIN), reset once
//! the client has every byte before the reset, or left hanging. A limit in time ends the echo at
//! its instant with what was echoed by then; `--close-on` and `--reset-on` end it where the
//! client's stream first holds the pattern (searched with memchr's memmem, across reads: the
//! bytes that may begin it wait for the next read). `--slow-close` waits before
//! answering the client's FIN. Stop signals, `--max-duration`, `--idle-timeout` and clients that
//! take none of their echo end it as they end the plain echo.

use std::io::{self, ErrorKind};
use std::net::TcpStream;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags};

use super::super::context::Context;
use super::super::stop;
use super::outcome::{End, Outcome, Session};
use super::shapeable::Shapeable;
use super::stall::Stall;
use crate::faults::{Acted, Faults, Limit, LimitKind, Rng, Trigger};

/// How long a reset waits for the client to acknowledge the echo before it, at most.
const RESET_WAIT: Duration = Duration::from_secs(2);

/// Echoes `socket` to itself through a buffer of `--buffer-size` bytes, shaped by `faults`;
/// returns the outcome and which faults acted. A `reset-after` end leaves the socket to be closed
/// with a reset; the bytes counted are those the client acknowledged. Cold and never inlined:
/// its frame must not grow the stack of every unfaulted child (one more page of USS each).
#[cold]
#[inline(never)]
pub fn echo_shaped<S: Shapeable>(
    socket: &mut S,
    faults: &Faults,
    context: &Context,
) -> (Outcome, Acted) {
    let now = Instant::now();
    let mut shaper = Shaping {
        faults,
        rng: faults.rng(context.serial),
        session: Session::of(context),
        buf: vec![0; context.settings.buffer_size],
        start: 0,
        end: 0,
        chunks: std::collections::VecDeque::new(),
        read: 0,
        echoed: 0,
        acted: Acted::default(),
        tokens: 0.0,
        refilled: now,
        next_piece: now,
        last_due: now,
        last_read: now,
        stall: Stall::default(),
        cut: None,
        held: 0,
        deadline: None,
    };
    match faults.limit.map(|limit| limit.at) {
        Some(Trigger::Bytes(bytes)) => shaper.cut = Some(bytes),
        // From the accept, give or take the fork: a few microseconds.
        Some(Trigger::After(after)) => shaper.deadline = Some(now + after),
        _ => {}
    }
    shaper.tokens = shaper.burst() as f64;
    let end = shaper.run(socket);
    let outcome = Outcome {
        bytes: shaper.echoed,
        end,
    };
    (outcome, shaper.acted)
}

struct Shaping<'a> {
    faults: &'a Faults,
    rng: Rng,
    /// Its stall limit is `--idle-timeout`, which also ends a client that sends nothing.
    session: Session,
    /// Bytes read and not yet echoed are `buf[start..end]`.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The chunks in `buf`, in order: when each may be written, and how many bytes are left.
    chunks: std::collections::VecDeque<(Instant, usize)>,
    read: u64,
    echoed: u64,
    acted: Acted,
    /// The rate's token bucket: bytes that may be written now, and when it was last refilled.
    tokens: f64,
    refilled: Instant,
    /// `--chunk`: when the next piece may go.
    next_piece: Instant,
    last_due: Instant,
    last_read: Instant,
    /// Since when the client has taken none of its echo.
    stall: Stall,
    /// Where the echo ends, in bytes of the stream, once known: from the start for a byte
    /// limit, when the pattern is found, or at the deadline (what was echoed by then).
    cut: Option<u64>,
    /// Bytes at the end of the buffer held back from the echo: they may begin the pattern.
    held: usize,
    /// A time limit's instant.
    deadline: Option<Instant>,
}

/// What the loop does next.
enum Step {
    /// Poll for these events until `until` (None: no limit).
    Wait(PollFlags, Option<Instant>),
    End(End),
}

impl Shaping<'_> {
    fn run<S: Shapeable>(&mut self, socket: &mut S) -> End {
        let mut eof = false;
        loop {
            if (self.session.stopped)() {
                return End::Shutdown;
            }
            if self.deadline.is_some_and(|at| Instant::now() >= at) && self.cut.is_none() {
                // Time is up: what was echoed is all the client gets; what waits is dropped.
                self.cut = Some(self.echoed);
                (self.start, self.end, self.held) = (0, 0, 0);
                self.chunks.clear();
            }
            if let Some(limit) = self.faults.limit
                && self.cut.is_some_and(|cut| self.echoed >= cut)
            {
                self.acted.add(Acted::limit(limit.kind));
                return self.at_limit(socket.socket(), limit.kind);
            }
            if eof && self.chunks.is_empty() {
                return self.slow_close(socket.socket());
            }
            let now = Instant::now();
            let (out, write_at) = match self.write(socket, now) {
                Ok(Some(step)) => step,
                Ok(None) => continue,
                Err(end) => return end,
            };
            let write_at = match (write_at, self.deadline.filter(|_| self.cut.is_none())) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let reading = !eof && self.room() > 0;
            let step = self.next_step(now, reading, out, write_at);
            let (events, until) = match step {
                Step::End(end) => return end,
                Step::Wait(events, until) => (events, until),
            };
            // Input waiting above the socket (a TLS session's plaintext) is read at once: no
            // poll would say it is there.
            let revents = match reading && socket.holds_input() {
                true => PollFlags::POLLIN,
                false => {
                    let mut fds = [PollFd::new(socket.socket().as_fd(), events)];
                    let left = until.map(|until| until.saturating_duration_since(Instant::now()));
                    match stop::poll(&mut fds, left) {
                        Ok(0) | Err(Errno::EINTR) => continue,
                        Ok(_) => fds[0].revents().unwrap_or(PollFlags::empty()),
                        Err(errno) => return End::Failed(errno.into()),
                    }
                }
            };
            let gone = revents.intersects(PollFlags::POLLHUP | PollFlags::POLLERR);
            if !reading && gone {
                // Reset, or closed both ways: nothing more can be written (and a poll that
                // reports it at once would otherwise spin until the next piece is due).
                return End::Reset;
            }
            if reading && (gone || revents.contains(PollFlags::POLLIN)) {
                match self.read_chunk(socket) {
                    Ok(0) => {
                        // Nothing more can complete the pattern: what was held goes out.
                        eof = true;
                        self.held = 0;
                    }
                    Ok(_) => {}
                    Err(err) if err.kind() == ErrorKind::WouldBlock => {}
                    Err(err) if err.kind() == ErrorKind::Interrupted => {}
                    Err(err) => return End::from_error(err, End::IdleTimeout),
                }
            }
        }
    }

    /// Writes the next piece if it is due. Ok(None): wrote (look again at once);
    /// Ok(Some((out, at))): nothing written, `out` if the socket had no room, `at` when the next
    /// piece is due.
    fn write<S: Shapeable>(
        &mut self,
        socket: &mut S,
        now: Instant,
    ) -> Result<Option<(bool, Option<Instant>)>, End> {
        let Some(&(due, left)) = self.chunks.front() else {
            return Ok(Some((false, None)));
        };
        let mut piece = left;
        if let Some(chunk) = self.faults.chunk {
            piece = piece.min(chunk.size);
        }
        if let Some(cut) = self.cut {
            piece = piece.min(cut.saturating_sub(self.echoed) as usize);
        }
        piece = piece.min(self.end - self.start - self.held);
        if piece == 0 {
            // All that waits may begin the pattern: the next read tells.
            return Ok(Some((false, None)));
        }
        let mut at = due.max(self.next_piece);
        if let Some(rate) = self.faults.rate {
            piece = piece.min(self.burst());
            self.refill(now, rate);
            if self.tokens < piece as f64 {
                let wait = (piece as f64 - self.tokens) / rate as f64;
                at = at.max(now + Duration::from_secs_f64(wait));
            }
        }
        if at > now {
            return Ok(Some((false, Some(at))));
        }
        let data = &self.buf[self.start..self.start + piece];
        match socket.write_now(data) {
            Ok(0) => Err(End::Failed(ErrorKind::WriteZero.into())),
            Ok(n) => {
                self.wrote(n, now);
                Ok(None)
            }
            Err(err) if err.kind() == ErrorKind::Interrupted => Ok(None),
            Err(err) if err.kind() == ErrorKind::WouldBlock => {
                self.stall.blocked(now);
                Ok(Some((true, None)))
            }
            Err(err) => Err(End::from_error(err, End::WriteTimeout)),
        }
    }

    fn wrote(&mut self, n: usize, now: Instant) {
        self.start += n;
        self.echoed += n as u64;
        self.session.total.fetch_add(n as u64, Ordering::Relaxed);
        self.stall.moved();
        let front = self.chunks.front_mut().expect("a piece comes from a chunk");
        front.1 -= n;
        if front.1 == 0 {
            self.chunks.pop_front();
        }
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        }
        if let Some(delay) = self.faults.delay
            && !(delay.base.is_zero() && delay.jitter.is_zero())
        {
            self.acted.add(Acted::DELAY);
        }
        if let Some(rate) = self.faults.rate {
            self.acted.add(Acted::RATE);
            self.refill(now, rate);
            self.tokens -= n as f64;
        }
        if let Some(chunk) = self.faults.chunk {
            self.acted.add(Acted::CHUNK);
            self.next_piece = now + chunk.gap;
        }
    }

    /// What to wait for: input while there is room for it, room to write if a write found none,
    /// until the next piece is due, the client has been idle or stalled too long.
    fn next_step(&self, now: Instant, reading: bool, out: bool, write_at: Option<Instant>) -> Step {
        let mut events = PollFlags::empty();
        let mut until = write_at;
        let mut earliest = |at: Instant| until = Some(until.map_or(at, |u| u.min(at)));
        if reading {
            events |= PollFlags::POLLIN;
            // Idle: nothing to echo and nothing sent for the idle timeout.
            if self.chunks.is_empty() && !self.session.stall.is_zero() {
                let deadline = self.last_read + self.session.stall;
                if deadline <= now {
                    return Step::End(End::IdleTimeout);
                }
                earliest(deadline);
            }
        }
        if out {
            events |= PollFlags::POLLOUT;
            if let Some(deadline) = self.stall.deadline(&self.session) {
                if deadline <= now {
                    return Step::End(End::WriteTimeout);
                }
                earliest(deadline);
            }
        }
        Step::Wait(events, until)
    }

    /// Free space at the end of the buffer (moving what waits to the front if that makes
    /// room), but no more than the limit leaves to read.
    fn room(&mut self) -> usize {
        if self.end == self.buf.len() && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        let room = self.buf.len() - self.end;
        match self.cut {
            Some(cut) => room.min(cut.saturating_sub(self.read) as usize),
            None => room,
        }
    }

    /// Reads what the socket has (without waiting) into the buffer as one chunk.
    fn read_chunk<S: Shapeable>(&mut self, socket: &mut S) -> io::Result<usize> {
        let room = self.room();
        let n = socket.read_now(&mut self.buf[self.end..self.end + room])?;
        if n == 0 {
            return Ok(0);
        }
        let now = Instant::now();
        let before = self.end;
        self.end += n;
        self.read += n as u64;
        self.last_read = now;
        let delay = match self.faults.delay {
            Some(delay) => self.rng.around(delay.base, delay.jitter),
            None => Duration::ZERO,
        };
        // Never before the chunk ahead of it: the echo keeps the stream's order.
        let due = (now + delay).max(self.last_due);
        self.last_due = due;
        self.chunks.push_back((due, n));
        if let Some(Limit {
            at: Trigger::Pattern(pattern),
            ..
        }) = self.faults.limit
            && self.cut.is_none()
        {
            self.look_for(pattern, before);
        }
        Ok(n)
    }

    /// Looks for `pattern` in what waits, from where it could begin given what was read before
    /// `from`: found, the echo ends before it (what came with it and after is dropped, and no
    /// more is read); not found, the bytes that may begin it are held back.
    fn look_for(&mut self, pattern: &[u8], from: usize) {
        let search = from.saturating_sub(pattern.len() - 1).max(self.start);
        if let Some(at) = memchr::memmem::find(&self.buf[search..self.end], pattern) {
            let at = search + at;
            self.cut = Some(self.echoed + (at - self.start) as u64);
            self.read = self.cut.unwrap_or(self.read);
            self.held = 0;
            // Trim the chunks to what stays.
            let mut keep = at - self.start;
            self.end = at;
            for chunk in self.chunks.iter_mut() {
                chunk.1 = chunk.1.min(keep);
                keep -= chunk.1;
            }
            self.chunks.retain(|chunk| chunk.1 > 0);
            return;
        }
        let waiting = &self.buf[self.start..self.end];
        self.held = (1..pattern.len().min(waiting.len() + 1))
            .rev()
            .find(|&k| waiting.ends_with(&pattern[..k]))
            .unwrap_or(0);
    }

    /// The limit is reached: every byte before it has been written.
    fn at_limit(&mut self, socket: &TcpStream, kind: LimitKind) -> End {
        match kind {
            LimitKind::Close => End::CloseAfter,
            LimitKind::Reset => {
                // Over TLS the socket counts record bytes, more than the plaintext in them: at
                // worst, fewer bytes are counted than reached the client, never more.
                let unacknowledged = wait_acknowledged(socket, &self.session).min(self.echoed);
                self.echoed -= unacknowledged;
                self.session
                    .total
                    .fetch_sub(unacknowledged, Ordering::Relaxed);
                End::ResetAfter
            }
            LimitKind::Stall => self.hang(socket),
        }
    }

    /// `--stall-after`: neither read nor write, as a hung server: its FIN goes unnoticed too.
    /// Wait for the idle timeout counted from here, a stop (`--max-duration` included), or the
    /// client's reset.
    fn hang(&self, socket: &TcpStream) -> End {
        let since = Instant::now();
        let limit = Some(self.session.stall).filter(|idle| !idle.is_zero());
        loop {
            if (self.session.stopped)() {
                return End::Shutdown;
            }
            let left = limit.map(|limit| limit.saturating_sub(since.elapsed()));
            if left.is_some_and(|left| left.is_zero()) {
                return End::IdleTimeout;
            }
            // No events asked for: poll reports only POLLERR (a reset) and POLLHUP, never the
            // client's FIN or its data. A stop ends the wait early too; the loop looks again.
            match stop::wait(socket.as_fd(), PollFlags::empty(), left) {
                Ok(false) => {}
                Ok(true) if (self.session.stopped)() => {}
                Ok(true) => {
                    return match socket.take_error() {
                        Ok(Some(_)) => End::Reset,
                        _ => End::ClientClosed,
                    };
                }
                Err(err) => return End::Failed(err),
            }
        }
    }

    /// The client closed and everything it sent was echoed: with `--slow-close`, wait before
    /// the close (a stop cuts the wait short).
    fn slow_close(&mut self, socket: &TcpStream) -> End {
        let Some(wait) = self.faults.slow_close else {
            return End::ClientClosed;
        };
        self.acted.add(Acted::SLOW_CLOSE);
        let deadline = Instant::now() + wait;
        loop {
            if (self.session.stopped)() {
                return End::Shutdown;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return End::ClientClosed;
            }
            // No events asked for: only an error (a reset), a stop or the time ends the wait early.
            if let Ok(true) = stop::wait(socket.as_fd(), PollFlags::empty(), Some(left))
                && !(self.session.stopped)()
            {
                return End::Reset;
            }
        }
    }

    /// The most a piece may be with `--rate`: a twentieth of a second's worth of bytes, at
    /// least one and at most the buffer.
    fn burst(&self) -> usize {
        match self.faults.rate {
            Some(rate) => ((rate / 20) as usize).clamp(1, self.buf.len()),
            None => self.buf.len(),
        }
    }

    fn refill(&mut self, now: Instant, rate: u64) {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate as f64).min(self.burst() as f64);
        self.refilled = now;
    }
}

/// Waits (up to `RESET_WAIT`, or the stall limit if shorter, or a stop) until the client has
/// acknowledged everything written; returns how many bytes it had not, which a reset now
/// throws away.
pub(crate) fn wait_acknowledged(socket: &TcpStream, session: &Session) -> u64 {
    let since = Instant::now();
    let limit = session
        .stall_limit()
        .map_or(RESET_WAIT, |l| l.min(RESET_WAIT));
    let mut pause = Duration::from_micros(100);
    loop {
        let queued = unacknowledged(socket);
        if queued == 0 || since.elapsed() >= limit || (session.stopped)() {
            return queued;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(10));
    }
}

/// Bytes written to `socket` that the peer has not acknowledged (SIOCOUTQ).
fn unacknowledged(socket: &TcpStream) -> u64 {
    let mut queued: nix::libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ on a TCP socket) writes one int into `queued`.
    let done = unsafe { nix::libc::ioctl(socket.as_raw_fd(), nix::libc::TIOCOUTQ, &mut queued) };
    if done < 0 { 0 } else { queued.max(0) as u64 }
}
