//! The echo protocol (RFC 862) over any byte stream.
//!
//! Every byte read is written back, in order, before the next read; so when the client's FIN
//! arrives (a read of 0) everything it sent has already been echoed and the connection can close.
//! Short writes are finished, EINTR is retried, and a peer that resets or stops reading ends the
//! loop as a normal close rather than as a failure. A read that times out (the socket's
//! SO_RCVTIMEO, set from `--idle-timeout`) ends it as an idle client; a client that takes none of
//! its echo for that long, timed from the last byte it took (`Conn`, `wait_for_room`), as a
//! stalled one. Written over `Read + Write` (`Conn`) so the whole protocol is unit tested without
//! sockets.

use std::fmt;
use std::io::{self, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::poll::PollFlags;
use nix::sys::socket::{MsgFlags, send};

use crate::wait;

/// Why an echo session ended.
#[derive(Debug)]
pub enum End {
    /// The client sent FIN and everything it sent was echoed.
    ClientClosed,
    /// The client reset the connection or went away while we were writing (ECONNRESET, EPIPE).
    Reset,
    /// The client sent nothing for the idle timeout.
    IdleTimeout,
    /// The client read none of the echo for the idle timeout.
    WriteTimeout,
    /// The server is stopping and closed the connection (set by the child, not by `echo`).
    Shutdown,
    /// The connection reached `--max-duration` (set by the child, not by `echo`).
    MaxDuration,
    /// `--close-after`: the limit was echoed; the connection closes with a FIN.
    CloseAfter,
    /// `--reset-after`: the limit was echoed and acknowledged; the connection closes with a reset.
    ResetAfter,
    /// Any other I/O error.
    Failed(io::Error),
}

impl End {
    /// `timed_out` is what a timeout means where the error happened (reading or writing).
    pub(crate) fn from_error(err: io::Error, timed_out: End) -> End {
        match err.kind() {
            ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::ConnectionAborted => {
                End::Reset
            }
            // An expired SO_RCVTIMEO, or a stall past its limit (`wait_for_room`), is EAGAIN.
            ErrorKind::WouldBlock => timed_out,
            _ => End::Failed(err),
        }
    }

    /// Whether the session ended the way connections are supposed to end.
    pub fn is_normal(&self) -> bool {
        !matches!(self, End::Failed(_))
    }
}

/// The close-line fields after `end=`: `client-closed`, `reset`, `idle-timeout`,
/// `write-timeout`, `shutdown`, `max-duration`, `close-after`, `reset-after`, or
/// `error error="…"`.
impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            End::ClientClosed => f.write_str("client-closed"),
            End::Reset => f.write_str("reset"),
            End::IdleTimeout => f.write_str("idle-timeout"),
            End::WriteTimeout => f.write_str("write-timeout"),
            End::Shutdown => f.write_str("shutdown"),
            End::MaxDuration => f.write_str("max-duration"),
            End::CloseAfter => f.write_str("close-after"),
            End::ResetAfter => f.write_str("reset-after"),
            End::Failed(err) => write!(f, "error error=\"{err}\""),
        }
    }
}

/// What an echo session did: bytes written back, and why it ended.
#[derive(Debug)]
pub struct Outcome {
    pub bytes: u64,
    pub end: End,
}

/// What ends a session besides the client.
#[derive(Debug, Clone, Copy)]
pub struct Watch {
    /// Asked before every read (the stop handler makes a read about to block return soon).
    pub stopped: fn() -> bool,
    /// How long a client may take none of its echo, counted from the last byte it took; zero
    /// for never. Once stopped, one second at most.
    pub stall: Duration,
}

impl Watch {
    /// How long the current stall may last; None for no limit.
    pub fn stall_limit(&self) -> Option<Duration> {
        let limit = Some(self.stall).filter(|stall| !stall.is_zero());
        match (self.stopped)() {
            true => Some(limit.map_or(STOPPED_STALL, |limit| limit.min(STOPPED_STALL))),
            false => limit,
        }
    }
}

/// Once the server is stopping, a client that reads nothing of its echo for this long is let go.
const STOPPED_STALL: Duration = Duration::from_secs(1);

/// A stream the echo writes to. `write_now` never waits and `wait_writable` waits for room, so
/// that a stall is timed from the last byte the client took (a blocking write with SO_SNDTIMEO
/// times each call instead: a call that moved a few bytes and then waited the whole timeout
/// counts as progress, and the next call waits again). The defaults, for pipes and scripted
/// tests, write blocking and never wait.
pub trait Conn: Read + Write {
    fn write_now(&mut self, data: &[u8]) -> io::Result<usize> {
        self.write(data)
    }

    /// Waits up to `timeout` (None: no limit) until a write can move bytes; false if the time
    /// ran out. A signal ends the wait early with true: the caller looks again.
    fn wait_writable(&mut self, _timeout: Option<Duration>) -> io::Result<bool> {
        Ok(true)
    }
}

impl Conn for TcpStream {
    fn write_now(&mut self, data: &[u8]) -> io::Result<usize> {
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
        Ok(send(self.as_raw_fd(), data, flags)?)
    }

    fn wait_writable(&mut self, timeout: Option<Duration>) -> io::Result<bool> {
        wait::wait_for(self, PollFlags::POLLOUT, timeout)
    }
}

/// After a write found no room: waits for room with `wait`, for what is left of the stall limit
/// counted from `stalled_since` (set now if this stall just began). WouldBlock, a write timeout,
/// once the limit has passed.
pub fn wait_for_room(
    stalled_since: &mut Option<Instant>,
    watch: Watch,
    wait: impl FnOnce(Option<Duration>) -> io::Result<bool>,
) -> io::Result<()> {
    let since = *stalled_since.get_or_insert_with(Instant::now);
    let left = watch
        .stall_limit()
        .map(|limit| limit.saturating_sub(since.elapsed()));
    if left.is_some_and(|left| left.is_zero()) || !wait(left)? {
        return Err(ErrorKind::WouldBlock.into());
    }
    Ok(())
}

/// Echoes `stream` to itself through `buf` until the peer closes, the connection fails, or
/// `watch` ends it. Every byte written is also added to `total` (the server-wide counter).
pub fn echo<S: Conn>(stream: &mut S, buf: &mut [u8], total: &AtomicU64, watch: Watch) -> Outcome {
    match echo_loop(stream, buf, total, watch, false) {
        Echoed::Ended(outcome) => outcome,
        Echoed::Filled { .. } => {
            unreachable!("echo_loop stops on a full buffer only when asked to")
        }
    }
}

/// How `echo_small` returned.
#[derive(Debug)]
pub enum Echoed {
    /// The session ended.
    Ended(Outcome),
    /// A read filled the whole buffer (the client is sending in bulk); it was echoed, and
    /// `bytes` in all so far. The session goes on, best served by splice or a larger buffer.
    Filled { bytes: u64 },
}

/// `echo` through a small buffer, but returns as soon as a read fills it. Most connections
/// (interactive sessions, test fixtures, request/response traffic) never fill a KiB at once,
/// and for them one read and one write per message cost less than two splices and a pipe.
pub fn echo_small<S: Conn>(
    stream: &mut S,
    buf: &mut [u8],
    total: &AtomicU64,
    watch: Watch,
) -> Echoed {
    echo_loop(stream, buf, total, watch, true)
}

fn echo_loop<S: Conn>(
    stream: &mut S,
    buf: &mut [u8],
    total: &AtomicU64,
    watch: Watch,
    stop_when_full: bool,
) -> Echoed {
    let mut bytes = 0u64;
    let end = loop {
        // Before the read, never between a read and its echo: what was read is written back.
        if (watch.stopped)() {
            break End::Shutdown;
        }
        let n = match stream.read(buf) {
            Ok(0) => break End::ClientClosed,
            Ok(n) => n,
            Err(err) if err.kind() == ErrorKind::Interrupted => continue,
            Err(err) => break End::from_error(err, End::IdleTimeout),
        };
        if let Err(err) = write_all(stream, &buf[..n], &mut bytes, total, watch) {
            break End::from_error(err, End::WriteTimeout);
        }
        if stop_when_full && n == buf.len() {
            return Echoed::Filled { bytes };
        }
    };
    Echoed::Ended(Outcome { bytes, end })
}

/// `Write::write_all`, but counting what reached the peer even when a later write fails, and
/// failing with WouldBlock (a write timeout) once the client has taken nothing for the stall
/// limit, counted from the first write that found no room.
fn write_all<W: Conn>(
    out: &mut W,
    mut data: &[u8],
    written: &mut u64,
    total: &AtomicU64,
    watch: Watch,
) -> io::Result<()> {
    let mut stalled_since = None;
    while !data.is_empty() {
        match out.write_now(data) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => {
                *written += n as u64;
                total.fetch_add(n as u64, Ordering::Relaxed);
                data = &data[n..];
                stalled_since = None;
            }
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(err) if err.kind() == ErrorKind::WouldBlock => {
                wait_for_room(&mut stalled_since, watch, |left| out.wait_writable(left))?;
            }
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A scripted peer: reads come from a queue of chunks and errors; writes accept at most
    /// `write_max` bytes each and can be told to fail once a number of bytes is written.
    struct Script {
        reads: VecDeque<io::Result<Vec<u8>>>,
        written: Vec<u8>,
        write_max: usize,
        interrupt_every_other_write: bool,
        writes: usize,
        fail_writes_after: Option<(usize, ErrorKind)>,
    }

    impl Script {
        fn new(reads: Vec<io::Result<Vec<u8>>>) -> Script {
            Script {
                reads: reads.into(),
                written: Vec::new(),
                write_max: usize::MAX,
                interrupt_every_other_write: false,
                writes: 0,
                fail_writes_after: None,
            }
        }
    }

    impl Read for Script {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match self.reads.pop_front() {
                None => Ok(0),
                Some(Err(err)) => Err(err),
                Some(Ok(mut chunk)) => {
                    let n = chunk.len().min(buf.len());
                    buf[..n].copy_from_slice(&chunk[..n]);
                    if n < chunk.len() {
                        self.reads.push_front(Ok(chunk.split_off(n)));
                    }
                    Ok(n)
                }
            }
        }
    }

    impl Write for Script {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            self.writes += 1;
            if self.interrupt_every_other_write && self.writes % 2 == 1 {
                return Err(ErrorKind::Interrupted.into());
            }
            if let Some((limit, kind)) = self.fail_writes_after
                && self.written.len() >= limit
            {
                return Err(kind.into());
            }
            let n = data.len().min(self.write_max);
            self.written.extend_from_slice(&data[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn never() -> bool {
        false
    }

    const WATCH: Watch = Watch {
        stopped: never,
        stall: Duration::ZERO,
    };

    /// A script's WouldBlock from a write stands for a client that stopped reading: waiting
    /// for room finds none.
    impl Conn for Script {
        fn wait_writable(&mut self, _timeout: Option<Duration>) -> io::Result<bool> {
            Ok(false)
        }
    }

    /// Runs `echo`, checking the shared total agrees with the session's own count.
    fn run(peer: &mut Script, buf_len: usize) -> Outcome {
        let total = AtomicU64::new(0);
        let outcome = echo(peer, &mut vec![0; buf_len], &total, WATCH);
        assert_eq!(total.load(Ordering::Relaxed), outcome.bytes);
        outcome
    }

    fn all_bytes() -> Vec<u8> {
        (0..=255u8).cycle().take(256 * 40).collect()
    }

    #[test]
    fn echoes_every_byte_including_nul_in_order() {
        let data = all_bytes();
        let mut peer = Script::new(vec![Ok(data.clone())]);
        let outcome = run(&mut peer, 1000);
        assert_eq!(peer.written, data);
        assert_eq!(outcome.bytes, data.len() as u64);
        assert!(matches!(outcome.end, End::ClientClosed));
    }

    #[test]
    fn finishes_partial_writes_one_byte_at_a_time() {
        let data = all_bytes();
        let mut peer = Script::new(vec![Ok(data[..5000].to_vec()), Ok(data[5000..].to_vec())]);
        peer.write_max = 1;
        let outcome = run(&mut peer, 4096);
        assert_eq!(peer.written, data);
        assert_eq!(outcome.bytes, data.len() as u64);
        assert_eq!(peer.writes, data.len(), "one write per byte");
        assert!(matches!(outcome.end, End::ClientClosed));
    }

    #[test]
    fn retries_interrupted_reads_and_writes() {
        let mut peer = Script::new(vec![
            Err(ErrorKind::Interrupted.into()),
            Ok(b"abc".to_vec()),
            Err(ErrorKind::Interrupted.into()),
            Ok(b"def".to_vec()),
        ]);
        peer.interrupt_every_other_write = true;
        peer.write_max = 2;
        let outcome = run(&mut peer, 64);
        assert_eq!(peer.written, b"abcdef");
        assert_eq!(outcome.bytes, 6);
        assert!(matches!(outcome.end, End::ClientClosed));
    }

    #[test]
    fn a_reset_while_reading_is_a_normal_end() {
        let mut peer = Script::new(vec![
            Ok(b"hello".to_vec()),
            Err(ErrorKind::ConnectionReset.into()),
        ]);
        let outcome = run(&mut peer, 64);
        assert_eq!(peer.written, b"hello");
        assert_eq!(outcome.bytes, 5);
        assert!(matches!(outcome.end, End::Reset));
        assert!(outcome.end.is_normal());
    }

    #[test]
    fn a_broken_pipe_while_writing_counts_what_was_written() {
        let mut peer = Script::new(vec![Ok(vec![7; 100])]);
        peer.write_max = 30;
        peer.fail_writes_after = Some((60, ErrorKind::BrokenPipe));
        let outcome = run(&mut peer, 64);
        assert_eq!(outcome.bytes, 60);
        assert!(matches!(outcome.end, End::Reset));
    }

    #[test]
    fn other_errors_end_the_session_as_failures() {
        let mut peer = Script::new(vec![Ok(b"x".to_vec()), Err(ErrorKind::TimedOut.into())]);
        let outcome = run(&mut peer, 64);
        assert_eq!(outcome.bytes, 1);
        assert!(matches!(outcome.end, End::Failed(ref e) if e.kind() == ErrorKind::TimedOut));
        assert!(!outcome.end.is_normal());
        assert!(outcome.end.to_string().starts_with("error error=\""));
    }

    #[test]
    fn a_writer_that_accepts_nothing_is_a_failure_not_a_hang() {
        let mut peer = Script::new(vec![Ok(b"abc".to_vec())]);
        peer.write_max = 0;
        let outcome = run(&mut peer, 64);
        assert_eq!(outcome.bytes, 0);
        assert!(matches!(outcome.end, End::Failed(ref e) if e.kind() == ErrorKind::WriteZero));
    }

    #[test]
    fn an_immediate_fin_echoes_nothing() {
        let mut peer = Script::new(vec![]);
        let outcome = run(&mut peer, 64);
        assert_eq!(outcome.bytes, 0);
        assert!(peer.written.is_empty());
        assert!(matches!(outcome.end, End::ClientClosed));
    }

    #[test]
    fn a_read_timeout_is_an_idle_client() {
        let mut peer = Script::new(vec![Ok(b"hi".to_vec()), Err(ErrorKind::WouldBlock.into())]);
        let outcome = run(&mut peer, 64);
        assert_eq!(outcome.bytes, 2);
        assert!(matches!(outcome.end, End::IdleTimeout));
        assert!(outcome.end.is_normal());
    }

    #[test]
    fn a_write_timeout_is_a_stalled_client() {
        let mut peer = Script::new(vec![Ok(vec![1; 50])]);
        peer.write_max = 10;
        peer.fail_writes_after = Some((20, ErrorKind::WouldBlock));
        let outcome = run(&mut peer, 64);
        assert_eq!(outcome.bytes, 20);
        assert!(matches!(outcome.end, End::WriteTimeout));
    }

    #[test]
    fn a_stop_ends_the_session_before_the_next_read_never_after_one() {
        fn always() -> bool {
            true
        }
        let mut peer = Script::new(vec![Ok(b"unread".to_vec())]);
        let watch = Watch {
            stopped: always,
            ..WATCH
        };
        let outcome = echo(&mut peer, &mut [0; 64], &AtomicU64::new(0), watch);
        assert!(matches!(outcome.end, End::Shutdown));
        assert_eq!(outcome.bytes, 0);
        assert!(peer.written.is_empty());
        assert_eq!(peer.reads.len(), 1, "nothing was read");
    }

    #[test]
    fn end_reasons_read_as_the_close_line_shows_them() {
        assert_eq!(End::IdleTimeout.to_string(), "idle-timeout");
        assert_eq!(End::WriteTimeout.to_string(), "write-timeout");
        assert_eq!(End::Shutdown.to_string(), "shutdown");
        assert_eq!(End::MaxDuration.to_string(), "max-duration");
        assert_eq!(End::ClientClosed.to_string(), "client-closed");
        assert_eq!(End::Reset.to_string(), "reset");
        assert_eq!(End::CloseAfter.to_string(), "close-after");
        assert_eq!(End::ResetAfter.to_string(), "reset-after");
    }

    #[test]
    fn small_messages_are_echoed_to_the_end_without_a_handover() {
        let total = AtomicU64::new(0);
        let mut peer = Script::new(vec![Ok(b"hello\n".to_vec()), Ok(vec![0; 63])]);
        match echo_small(&mut peer, &mut [0; 64], &total, WATCH) {
            Echoed::Ended(outcome) => {
                assert_eq!(outcome.bytes, 69);
                assert!(matches!(outcome.end, End::ClientClosed));
            }
            other => panic!("handed over with no full read: {other:?}"),
        }
        assert_eq!(total.load(Ordering::Relaxed), 69);
    }

    #[test]
    fn a_full_read_is_echoed_then_handed_over_with_the_rest_unread() {
        let data = all_bytes();
        let total = AtomicU64::new(0);
        let mut peer = Script::new(vec![Ok(b"hi".to_vec()), Ok(data.clone())]);
        match echo_small(&mut peer, &mut [0; 64], &total, WATCH) {
            Echoed::Filled { bytes } => assert_eq!(bytes, 66),
            other => panic!("no handover after a full read: {other:?}"),
        }
        assert_eq!(peer.written, [b"hi", &data[..64]].concat());
        assert_eq!(total.load(Ordering::Relaxed), 66);
        // The rest is still waiting for whoever takes over.
        let rest = run(&mut peer, 1000);
        assert_eq!(peer.written, [b"hi".as_slice(), &data].concat());
        assert_eq!(rest.bytes, data.len() as u64 - 64);
    }
}
