//! The copying echo: read(2) into a buffer, write(2) it back, before the next read.
//!
//! So when the client's FIN arrives (a read of 0) everything it sent has already been echoed and
//! the connection can close. Short writes are finished, EINTR is retried, and a peer that resets
//! or stops reading ends the loop as a normal close rather than as a failure. A read that times
//! out (the socket's SO_RCVTIMEO, set from `--idle-timeout`) ends it as an idle client; a client
//! that takes none of its echo for that long, as a stalled one (`stall`). Written over `Conn`
//! (`Read + Write`) so the whole protocol is unit tested without sockets.

use std::io::ErrorKind;

use super::outcome::{End, Outcome, Session};
use super::stall::{self, Conn, Pending};

/// Echoes `stream` to itself through `buf` until the peer closes, the connection fails, or the
/// session ends it.
pub fn echo_copying<S: Conn>(stream: &mut S, buf: &mut [u8], session: &Session) -> Outcome {
    match echo_loop(stream, buf, session, false) {
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

/// `echo_copying` through a small buffer, but returns as soon as a read fills it. Most connections
/// (interactive sessions, test fixtures, request/response traffic) never fill a KiB at once,
/// and for them one read and one write per message cost less than two splices and a pipe.
pub fn echo_small<S: Conn>(stream: &mut S, buf: &mut [u8], session: &Session) -> Echoed {
    echo_loop(stream, buf, session, true)
}

#[unsafe(link_section = ".text.hot.child")]
fn echo_loop<S: Conn>(
    stream: &mut S,
    buf: &mut [u8],
    session: &Session,
    stop_when_full: bool,
) -> Echoed {
    let mut bytes = 0u64;
    let end = loop {
        // Before the read, never between a read and its echo: what was read is written back.
        if (session.stopped)() {
            break End::Shutdown;
        }
        let n = match stream.read(buf) {
            Ok(0) => break End::ClientClosed,
            Ok(n) => n,
            Err(err) if err.kind() == ErrorKind::Interrupted => continue,
            Err(err) => break End::from_error(err, End::IdleTimeout),
        };
        if let Err(err) = stall::write_all(stream, Pending::Bytes(&buf[..n]), &mut bytes, session) {
            break End::from_error(err, End::WriteTimeout);
        }
        if stop_when_full && n == buf.len() {
            return Echoed::Filled { bytes };
        }
    };
    Echoed::Ended(Outcome { bytes, end })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::io::{self, Read, Write};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

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

    fn session() -> Session {
        Session {
            total: Box::leak(Box::new(AtomicU64::new(0))),
            stopped: never,
            stall: Duration::ZERO,
            stopped_stall: Duration::from_secs(1),
        }
    }

    /// A script's WouldBlock from a write stands for a client that stopped reading: waiting
    /// for room finds none.
    impl stall::Conn for Script {
        fn wait_writable(&mut self, _timeout: Option<Duration>) -> io::Result<bool> {
            Ok(false)
        }
    }

    /// Runs `echo_copying`, checking the shared total agrees with the session's own count.
    fn run(peer: &mut Script, buf_len: usize) -> Outcome {
        let session = session();
        let outcome = echo_copying(peer, &mut vec![0; buf_len], &session);
        assert_eq!(session.total.load(Ordering::Relaxed), outcome.bytes);
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
        let session = Session {
            stopped: always,
            ..session()
        };
        let outcome = echo_copying(&mut peer, &mut [0; 64], &session);
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
        let session = session();
        let mut peer = Script::new(vec![Ok(b"hello\n".to_vec()), Ok(vec![0; 63])]);
        match echo_small(&mut peer, &mut [0; 64], &session) {
            Echoed::Ended(outcome) => {
                assert_eq!(outcome.bytes, 69);
                assert!(matches!(outcome.end, End::ClientClosed));
            }
            other => panic!("handed over with no full read: {other:?}"),
        }
        assert_eq!(session.total.load(Ordering::Relaxed), 69);
    }

    #[test]
    fn a_full_read_is_echoed_then_handed_over_with_the_rest_unread() {
        let data = all_bytes();
        let session = session();
        let mut peer = Script::new(vec![Ok(b"hi".to_vec()), Ok(data.clone())]);
        match echo_small(&mut peer, &mut [0; 64], &session) {
            Echoed::Filled { bytes } => assert_eq!(bytes, 66),
            other => panic!("no handover after a full read: {other:?}"),
        }
        assert_eq!(peer.written, [b"hi", &data[..64]].concat());
        assert_eq!(session.total.load(Ordering::Relaxed), 66);
        // The rest is still waiting for whoever takes over.
        let rest = run(&mut peer, 1000);
        assert_eq!(peer.written, [b"hi".as_slice(), &data].concat());
        assert_eq!(rest.bytes, data.len() as u64 - 64);
    }
}
