//! Zero-copy echo with splice(2): socket → pipe → socket, so the bytes never enter user space.
//!
//! The same protocol as `echo::echo`: everything read is written back before the next read, a
//! read of 0 is the client's FIN, and idle or stalled clients are ended on the same terms (the
//! session runs the socket non-blocking and waits in poll(2), see `echo`). The child keeps no
//! echo buffer of its own: the data sits in a
//! pipe, in kernel memory. SPLICE_F_MORE is never set: it would make the kernel hold small echoes
//! back, waiting for more (round trips went from 0.26 ms to 208 ms when it was measured).

use std::io;
use std::net::TcpStream;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags, fcntl, splice};
use nix::poll::PollFlags;
use nix::sys::socket::{MsgFlags, recv};

use super::echo::{self, End, Outcome, Watch};
use crate::wait;

/// The result of trying splice: an ended session, or "use read/write instead".
#[derive(Debug)]
pub enum Spliced {
    Done(Outcome),
    /// splice refused the very first transfer (no data was moved): fall back.
    Unsupported,
}

/// Echoes `socket` to itself through a pipe, `chunk` bytes at most per transfer, until the
/// client closes, the connection fails, or `watch` ends it.
pub fn echo(socket: &TcpStream, chunk: usize, total: &AtomicU64, watch: Watch) -> Spliced {
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
    let Ok(_blocking_again) = NonBlocking::set(socket) else {
        return Spliced::Unsupported;
    };
    let flags = SpliceFFlags::SPLICE_F_MOVE;
    let idle = Some(watch.stall).filter(|idle| !idle.is_zero());
    let mut bytes = 0u64;
    let mut first = true;
    // Whether poll said readable since the last splice that moved data.
    let mut readable = false;
    let end = 'session: loop {
        if (watch.stopped)() {
            break End::Shutdown;
        }
        let n = match splice(socket, None, &into_pipe, None, chunk, flags) {
            Ok(0) => match at_urgent_mark(socket) {
                // Nothing to read, and not for want of data: the client's FIN.
                Ok(false) => break End::ClientClosed,
                // splice stops short of urgent data (tcp_read_sock): move it with read/write.
                Ok(true) => match copy_at_mark(socket, total, watch) {
                    Ok(m) => {
                        bytes += m as u64;
                        first = false;
                        continue;
                    }
                    Err((m, err)) => {
                        bytes += m as u64;
                        break End::from_error(err, End::WriteTimeout);
                    }
                },
                Err(errno) => break End::from_error(io::Error::from(errno), End::IdleTimeout),
            },
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            // Readable, yet nothing to splice: a non-blocking splice says EAGAIN, not 0, in
            // front of urgent data.
            Err(Errno::EAGAIN) if readable => {
                readable = false;
                match copy_at_mark(socket, total, watch) {
                    Ok(m) => {
                        bytes += m as u64;
                        continue;
                    }
                    Err((m, err)) => {
                        bytes += m as u64;
                        break End::from_error(err, End::WriteTimeout);
                    }
                }
            }
            Err(Errno::EAGAIN) => match wait::wait_for(socket, PollFlags::POLLIN, idle) {
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
        let mut pending = n;
        let mut stalled_since = None;
        while pending > 0 {
            match splice(&from_pipe, None, socket, None, pending, flags) {
                Ok(0) => break 'session End::Failed(io::ErrorKind::WriteZero.into()),
                Ok(m) => {
                    pending -= m;
                    bytes += m as u64;
                    total.fetch_add(m as u64, Ordering::Relaxed);
                    stalled_since = None;
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => {
                    let wait = |left| wait::wait_for(socket, PollFlags::POLLOUT, left);
                    if let Err(err) = echo::wait_for_room(&mut stalled_since, watch, wait) {
                        break 'session End::from_error(err, End::WriteTimeout);
                    }
                }
                Err(errno) => {
                    break 'session End::from_error(io::Error::from(errno), End::WriteTimeout);
                }
            }
        }
    };
    Spliced::Done(Outcome { bytes, end })
}

/// The socket non-blocking for as long as this lives.
struct NonBlocking<'a>(&'a TcpStream);

impl<'a> NonBlocking<'a> {
    fn set(socket: &'a TcpStream) -> io::Result<NonBlocking<'a>> {
        socket.set_nonblocking(true)?;
        Ok(NonBlocking(socket))
    }
}

impl Drop for NonBlocking<'_> {
    fn drop(&mut self) {
        let _ = self.0.set_nonblocking(false);
    }
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
/// read) and writes it back. Returns the bytes echoed, and with an error those echoed before it.
fn copy_at_mark(
    socket: &TcpStream,
    total: &AtomicU64,
    watch: Watch,
) -> Result<usize, (usize, io::Error)> {
    let mut buf = [0u8; 512];
    let n = loop {
        match nix::unistd::read(socket.as_fd(), &mut buf) {
            Ok(n) => break n,
            Err(Errno::EINTR) => {}
            // Nothing after all: the session's next splice waits for it.
            Err(Errno::EAGAIN) => return Ok(0),
            Err(errno) => return Err((0, errno.into())),
        }
    };
    let mut done = 0;
    let mut stalled_since = None;
    while done < n {
        match nix::unistd::write(socket.as_fd(), &buf[done..n]) {
            Ok(m) => {
                done += m;
                total.fetch_add(m as u64, Ordering::Relaxed);
                stalled_since = None;
            }
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => {
                let wait = |left| wait::wait_for(socket, PollFlags::POLLOUT, left);
                echo::wait_for_room(&mut stalled_since, watch, wait).map_err(|err| (done, err))?;
            }
            Err(errno) => return Err((done, errno.into())),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::thread;
    use std::time::Duration;

    fn never() -> bool {
        false
    }

    const WATCH: Watch = Watch {
        stopped: never,
        stall: Duration::ZERO,
    };

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
                let total = AtomicU64::new(0);
                match echo(&socket, chunk, &total, WATCH) {
                    Spliced::Done(outcome) => (outcome, total.load(Ordering::Relaxed)),
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
        let (socket, _) = listener.accept().unwrap();
        let total = AtomicU64::new(0);
        let watch = Watch {
            stall: Duration::from_millis(50),
            ..WATCH
        };
        match echo(&socket, 4096, &total, watch) {
            Spliced::Done(outcome) => {
                assert!(matches!(outcome.end, End::IdleTimeout), "{:?}", outcome.end);
                assert_eq!(outcome.bytes, 0);
            }
            Spliced::Unsupported => panic!("splice unsupported on a TCP socket"),
        }
    }
}
