//! Zero-copy echo with splice(2): socket → pipe → socket, so the bytes never enter user space.
//!
//! The same protocol as `copy`: everything read is written back before the next read, a read of
//! 0 is the client's FIN, and idle or stalled clients are ended on the same terms (the session
//! runs the socket non-blocking and waits in poll(2); writes go through `stall`). The child keeps
//! no echo buffer of its own: the data sits in a pipe, in kernel memory.

use std::io;
use std::net::TcpStream;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags, fcntl, splice};
use nix::poll::PollFlags;
use nix::sys::socket::{MsgFlags, recv};

use super::super::stop;
use super::outcome::{End, Outcome, Session};
use super::stall::{self, Pending};

/// The result of trying splice: an ended session, or "use read/write instead".
#[derive(Debug)]
pub enum Spliced {
    Done(Outcome),
    /// splice refused the very first transfer (no data was moved): fall back.
    Unsupported,
}

/// Echoes `socket` to itself through a pipe, `chunk` bytes at most per transfer, until the
/// client closes, the connection fails, or the session ends it.
pub fn echo_spliced(socket: &mut TcpStream, chunk: usize, session: &Session) -> Spliced {
    let Ok((from_pipe, into_pipe)) = nix::unistd::pipe2(OFlag::O_CLOEXEC) else {
        return Spliced::Unsupported;
    };
    // A pipe holds 64 KiB by default; a larger chunk needs a larger pipe (up to
    // fs.pipe-max-size; if refused, transfers are simply smaller).
    if chunk > 64 * 1024 {
        let _ = fcntl(
            &into_pipe,
            FcntlArg::F_SETPIPE_SZ(chunk.min(i32::MAX as usize) as i32),
        );
    }
    // splice(2) waits on a socket unless the socket itself is non-blocking, and a waiting splice
    // is timed per call (SO_SNDTIMEO), not from the last byte the client took: so the session
    // runs non-blocking and waits in poll(2) with deadlines of its own.
    if socket.set_nonblocking(true).is_err() {
        return Spliced::Unsupported;
    }
    let spliced = session_loop(socket, &from_pipe, &into_pipe, chunk, session);
    let _ = socket.set_nonblocking(false);
    spliced
}

/// The spliced session on a non-blocking socket.
fn session_loop(
    socket: &mut TcpStream,
    from_pipe: &OwnedFd,
    into_pipe: &OwnedFd,
    chunk: usize,
    session: &Session,
) -> Spliced {
    let flags = SpliceFFlags::SPLICE_F_MOVE;
    let idle = Some(session.stall).filter(|idle| !idle.is_zero());
    let mut bytes = 0u64;
    let mut first = true;
    // Whether poll said readable since the last splice that moved data.
    let mut readable = false;
    let end = loop {
        if (session.stopped)() {
            break End::Shutdown;
        }
        let n = match splice(&*socket, None, into_pipe, None, chunk, flags) {
            Ok(0) => match at_urgent_mark(socket) {
                // Nothing to read, and not for want of data: the client's FIN.
                Ok(false) => break End::ClientClosed,
                // splice stops short of urgent data (tcp_read_sock): move it with read/write.
                Ok(true) => match copy_at_mark(socket, &mut bytes, session) {
                    Ok(()) => {
                        first = false;
                        continue;
                    }
                    Err(err) => break End::from_error(err, End::WriteTimeout),
                },
                Err(errno) => break End::from_error(io::Error::from(errno), End::IdleTimeout),
            },
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            // Readable, yet nothing to splice: a non-blocking splice says EAGAIN, not 0, in
            // front of urgent data.
            Err(Errno::EAGAIN) if readable => {
                readable = false;
                match copy_at_mark(socket, &mut bytes, session) {
                    Ok(()) => continue,
                    Err(err) => break End::from_error(err, End::WriteTimeout),
                }
            }
            Err(Errno::EAGAIN) => match stop::wait(socket.as_fd(), PollFlags::POLLIN, idle) {
                Ok(true) => {
                    readable = true;
                    continue;
                }
                Ok(false) => break End::IdleTimeout,
                Err(err) => break End::Failed(err),
            },
            Err(Errno::EINVAL | Errno::ENOSYS) if first => return Spliced::Unsupported,
            Err(errno) => break End::from_error(io::Error::from(errno), End::IdleTimeout),
        };
        first = false;
        readable = false;
        let pending = Pending::Pipe(from_pipe.as_fd(), n);
        if let Err(err) = stall::write_all(socket, pending, &mut bytes, session) {
            break End::from_error(err, End::WriteTimeout);
        }
    };
    Spliced::Done(Outcome { bytes, end })
}

/// Whether a splice that moved nothing stopped at urgent data (SO_OOBINLINE makes it ordinary
/// data for read(2), but splice still stops in front of it) rather than at the end of input.
fn at_urgent_mark(socket: &TcpStream) -> nix::Result<bool> {
    let flags = MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT;
    loop {
        match recv(socket.as_fd().as_raw_fd(), &mut [0u8; 1], flags) {
            Ok(n) => return Ok(n > 0),
            Err(Errno::EINTR) => {}
            // Nothing there after all: not the end either; splice waits for it.
            Err(Errno::EAGAIN) => return Ok(true),
            Err(errno) => return Err(errno),
        }
    }
}

/// Reads what waits at the urgent mark (the urgent byte, and what follows it in the same
/// read) and writes it back, adding what was echoed to `bytes`.
fn copy_at_mark(socket: &mut TcpStream, bytes: &mut u64, session: &Session) -> io::Result<()> {
    let mut buf = [0u8; 512];
    let n = loop {
        match nix::unistd::read(socket.as_fd(), &mut buf) {
            Ok(n) => break n,
            Err(Errno::EINTR) => {}
            // Nothing after all: the session's next splice waits for it.
            Err(Errno::EAGAIN) => return Ok(()),
            Err(errno) => return Err(errno.into()),
        }
    };
    stall::write_all(socket, Pending::Bytes(&buf[..n]), bytes, session)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::thread;
    use std::time::Duration;

    use std::sync::atomic::{AtomicU64, Ordering};

    fn never() -> bool {
        false
    }

    fn session(stall: Duration) -> Session {
        Session {
            total: Box::leak(Box::new(AtomicU64::new(0))),
            stopped: never,
            stall,
            stopped_stall: Duration::from_secs(1),
        }
    }

    /// Runs `echo` on the server side of a loopback connection (threads, no fork) and returns
    /// what the client got back and the outcome.
    fn through_splice(data: &[u8], chunk: usize) -> (Vec<u8>, Outcome, u64) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let (socket, _) = listener.accept().unwrap();
        let mut writer = client.try_clone().unwrap();
        thread::scope(|scope| {
            // The thread owns the socket, so it closes (FIN) when the echo ends.
            let server = scope.spawn(move || {
                let mut socket = socket;
                let session = session(Duration::ZERO);
                match echo_spliced(&mut socket, chunk, &session) {
                    Spliced::Done(outcome) => (outcome, session.total.load(Ordering::Relaxed)),
                    Spliced::Unsupported => panic!("splice unsupported on a TCP socket"),
                }
            });
            scope.spawn(move || {
                writer.write_all(data).unwrap();
                writer.shutdown(Shutdown::Write).unwrap();
            });
            let mut back = Vec::new();
            (&client).read_to_end(&mut back).unwrap();
            let (outcome, total) = server.join().unwrap();
            (back, outcome, total)
        })
    }

    #[test]
    fn splices_every_byte_back_in_order_until_fin() {
        let data: Vec<u8> = (0..=255u8).cycle().take(3 << 20).collect();
        let (back, outcome, total) = through_splice(&data, 64 * 1024);
        assert!(back == data, "spliced echo differs");
        assert_eq!(outcome.bytes, data.len() as u64);
        assert_eq!(total, outcome.bytes);
        assert!(matches!(outcome.end, End::ClientClosed));
    }

    #[test]
    fn small_and_large_chunks_work() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
        for chunk in [1, 1000, 1 << 20] {
            let (back, outcome, _) = through_splice(&data, chunk);
            assert!(back == data, "chunk {chunk}: spliced echo differs");
            assert!(matches!(outcome.end, End::ClientClosed), "chunk {chunk}");
        }
    }

    #[test]
    fn the_idle_timeout_ends_an_idle_session() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut socket, _) = listener.accept().unwrap();
        match echo_spliced(&mut socket, 4096, &session(Duration::from_millis(50))) {
            Spliced::Done(outcome) => {
                assert!(matches!(outcome.end, End::IdleTimeout), "{:?}", outcome.end);
                assert_eq!(outcome.bytes, 0);
            }
            Spliced::Unsupported => panic!("splice unsupported on a TCP socket"),
        }
    }
}
