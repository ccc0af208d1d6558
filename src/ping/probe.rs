//! One probe: a payload that differs per sequence number, sent and read back on a non-blocking
//! socket under one deadline, and checked byte for byte as it arrives.
//!
//! Sending and reading go on together (one poll for both), so a payload larger than the socket
//! buffers cannot deadlock against its own echo. Every wait is a poll, which a signal always
//! interrupts (whatever SA_RESTART says), so Ctrl-C ends a probe at once.

use std::io;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, poll};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::failure::Failure;
use super::link::Link;
use crate::address::Addr;
use crate::deadline;

/// The payload of probe `seq`: `size` bytes from a generator seeded with the sequence number,
/// so that no two probes (and no probe and a stale echo of another) look alike.
pub fn payload(seq: u64, size: usize) -> Vec<u8> {
    let mut state = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5DEE_CE66_D1CE_4E5B;
    let mut out = Vec::with_capacity(size + 8);
    while out.len() < size {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(size);
    out
}

/// Compares `got`, which arrived at offset `from` of the echo, with the payload.
pub fn verify(payload: &[u8], from: usize, got: &[u8]) -> Result<(), Failure> {
    let want = &payload[from..from + got.len()];
    match got.iter().zip(want).position(|(g, w)| g != w) {
        Some(i) => Err(Failure::Corrupt {
            at: from + i,
            got: got[i],
            want: want[i],
        }),
        None => Ok(()),
    }
}

/// Connects to `addr` before `deadline`: a non-blocking connect and a poll, so a signal ends it.
pub fn connect(
    addr: &Addr,
    deadline: Instant,
    interrupted: fn() -> bool,
) -> Result<Socket, Failure> {
    let (socket, addr) = match addr {
        Addr::Ip(ip) => {
            let socket = Socket::new(Domain::for_address(*ip), Type::STREAM, Some(Protocol::TCP))
                .map_err(Failure::Error)?;
            let _ = socket.set_tcp_nodelay(true);
            (socket, SockAddr::from(*ip))
        }
        Addr::Unix(name) => {
            let socket = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(Failure::Error)?;
            (socket, name.sockaddr().map_err(Failure::Error)?)
        }
    };
    socket.set_nonblocking(true).map_err(Failure::Error)?;
    match socket.connect(&addr) {
        Ok(()) => return Ok(socket),
        Err(err) if err.raw_os_error() == Some(nix::libc::EINPROGRESS) => {}
        Err(err) => return Err(Failure::Error(err)),
    }
    loop {
        if interrupted() {
            return Err(Failure::Interrupted);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Failure::Error(io::ErrorKind::TimedOut.into()));
        }
        let mut fds = [PollFd::new(socket.as_fd(), PollFlags::POLLOUT)];
        match poll(&mut fds, deadline::poll_timeout(Some(left))) {
            Ok(0) | Err(Errno::EINTR) => {}
            Ok(_) => {
                return match socket.take_error() {
                    Ok(None) => Ok(socket),
                    Ok(Some(err)) | Err(err) => Err(Failure::Error(err)),
                };
            }
            Err(errno) => return Err(Failure::Error(errno.into())),
        }
    }
}

/// Sends `payload` on `link` and reads its echo back, checking it, before `deadline`.
/// Returns the round-trip time: from the first byte sent to the last byte back.
pub fn echo(
    link: &mut Link,
    payload: &[u8],
    deadline: Instant,
    interrupted: fn() -> bool,
) -> Result<Duration, Failure> {
    let started = Instant::now();
    let (mut sent, mut received) = (0, 0);
    let mut buf = vec![0u8; payload.len().min(1 << 16)];
    while received < payload.len() {
        if interrupted() {
            return Err(Failure::Interrupted);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Failure::Timeout { received });
        }
        let mut events = PollFlags::POLLIN;
        if sent < payload.len() || link.wants_write() {
            events |= PollFlags::POLLOUT;
        }
        // Plaintext a TLS session holds already: no poll would say it is there.
        let ready = match link.holds_input() {
            true => PollFlags::POLLIN,
            false => {
                let mut fds = [PollFd::new(link.socket().as_fd(), events)];
                match poll(&mut fds, deadline::poll_timeout(Some(left))) {
                    Ok(0) | Err(Errno::EINTR) => continue,
                    Ok(_) => fds[0].revents().unwrap_or(PollFlags::POLLIN),
                    Err(errno) => return Err(Failure::Error(errno.into())),
                }
            }
        };
        if ready.contains(PollFlags::POLLOUT) {
            let sending = match sent < payload.len() {
                true => link.send_now(&payload[sent..]),
                false => link.flush_now().map(|()| 0),
            };
            match sending {
                Ok(n) => sent += n,
                Err(err) if retry(&err) => {}
                Err(err) => return Err(Failure::Error(err)),
            }
        }
        if ready.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
            // Never more than this probe's echo: what follows belongs to the next one.
            let want = (payload.len() - received).min(buf.len());
            match link.recv_now(&mut buf[..want]) {
                Ok(0) => return Err(Failure::Truncated { received }),
                Ok(n) => {
                    verify(payload, received, &buf[..n])?;
                    received += n;
                }
                Err(err) if retry(&err) => {}
                Err(err) => return Err(Failure::Error(err)),
            }
        }
    }
    Ok(started.elapsed())
}

/// Whether a send or receive that failed so is simply tried again.
fn retry(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// Ends a connection whose echoes are all in: half-closes it and reads until the server closes
/// too (RFC 862: an echo server closes once it has echoed everything), counting the bytes that
/// still came, each of them one too many. A server that does not close before `deadline` is let
/// go with what came until then.
pub fn finish(link: &mut Link, deadline: Instant, interrupted: fn() -> bool) -> usize {
    if link.shutdown_write().is_err() {
        return link.pending();
    }
    let mut surplus = 0;
    let mut buf = [0u8; 4096];
    loop {
        match link.recv_now(&mut buf) {
            Ok(0) => return surplus,
            Ok(n) => surplus += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() || interrupted() {
                    return surplus;
                }
                let mut fds = [PollFd::new(link.socket().as_fd(), PollFlags::POLLIN)];
                let _ = poll(&mut fds, deadline::poll_timeout(Some(left)));
            }
            // Reset, or any other end: what came before it is all there is.
            Err(_) => return surplus,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_differ_per_probe_and_have_the_size_asked_for() {
        assert_eq!(payload(1, 56).len(), 56);
        assert_eq!(payload(1, 3).len(), 3);
        assert_eq!(payload(7, 1000), payload(7, 1000));
        assert_ne!(payload(1, 56), payload(2, 56));
        // A stale echo of the previous probe is caught at its first byte, nearly always.
        let differing = (1..1000)
            .filter(|&seq| payload(seq, 8)[0] != payload(seq + 1, 8)[0])
            .count();
        assert!(differing > 990, "{differing}");
    }

    #[test]
    fn verification_names_the_first_wrong_byte_at_its_offset_in_the_echo() {
        let sent = payload(3, 100);
        assert!(verify(&sent, 40, &sent[40..60]).is_ok());
        let mut echoed = sent[40..60].to_vec();
        echoed[5] ^= 0x01;
        match verify(&sent, 40, &echoed) {
            Err(Failure::Corrupt { at, got, want }) => {
                assert_eq!(at, 45);
                assert_eq!((got, want), (sent[45] ^ 1, sent[45]));
            }
            other => panic!("not corrupt: {other:?}"),
        }
    }

    #[test]
    fn corrupt_and_truncated_echoes_are_not_losses() {
        assert!(
            Failure::Corrupt {
                at: 0,
                got: 0,
                want: 1
            }
            .is_corrupt()
        );
        assert!(Failure::Truncated { received: 3 }.is_corrupt());
        assert!(!Failure::Timeout { received: 3 }.is_corrupt());
        assert!(!Failure::Error(io::ErrorKind::ConnectionRefused.into()).is_corrupt());
    }
}
