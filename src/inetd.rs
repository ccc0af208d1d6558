//! `--inetd`: serve the one connection a launcher has already accepted, then exit.
//!
//! inetd and xinetd (`wait = no`), ucspi-tcp's `tcpserver` and systemd with `Accept=yes` accept
//! each connection themselves and start one forkecho for it, with the connection on stdin and
//! stdout (systemd: `StandardInput=socket`), or as fd 3 with LISTEN_FDS (systemd's default for
//! `Accept=yes`). forkecho echoes it exactly as a server child would (the same code: binary-safe,
//! half-close, idle timeout), logs the close line and exits: 0 for a normal end, 1 for an I/O
//! failure. Classic inetd puts the connection on stderr too; then nothing is logged, since log
//! lines would reach the client. stdin and stdout that are not one socket (pipes, say) are
//! echoed with read/write and logged as `peer=stdin`.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, RawFd};
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use anyhow::{Context, Result};
use nix::fcntl::{OFlag, open};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat};
use socket2::Socket;

use crate::activation::{self, Expect};
use crate::child::{self, Config};
use crate::cli::Options;
use crate::listener;

/// Serves the connection and returns the exit status.
pub fn serve(options: &Options) -> Result<i32> {
    let passed = activation::passed_sockets()?;
    let mut config = Config {
        buffer_size: options.buffer_size,
        quiet: options.quiet,
        bytes_total: Box::leak(Box::new(AtomicU64::new(0))),
        splice: !options.no_splice,
        parent: nix::unistd::getppid(),
    };
    if passed > 0 {
        let socket = activation::take_socket(passed, Expect::Connection)?;
        return serve_socket(socket, options, config);
    }
    let stdin = stat(0).context("--inetd: stdin is not open")?;
    let stdout = stat(1).context("--inetd: stdout is not open")?;
    let is_socket =
        |st: &FileStat| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFSOCK;
    let same = |a: &FileStat, b: &FileStat| a.st_dev == b.st_dev && a.st_ino == b.st_ino;
    if stat(2).is_ok_and(|stderr| same(&stderr, &stdin)) {
        // inetd's way: the connection is stderr too. Log lines must not reach the client.
        config.quiet = true;
        to_dev_null(2)?;
    }
    if is_socket(&stdin) && same(&stdin, &stdout) {
        // Serve it through fd 0 alone, so closing that ends the connection; fd 1 must not hold
        // it open.
        to_dev_null(1)?;
        // SAFETY: fd 0 is the connection's socket; from here `socket` alone owns fd 0.
        let socket = unsafe { Socket::from_raw_fd(0) };
        return serve_socket(socket, options, config);
    }
    // Two different files: a pipe or two, most likely.
    let started = Instant::now();
    // SAFETY: fds 0 and 1 are open (fstat said so) and owned by these Files alone from here.
    let mut stdio = unsafe { Stdio(File::from_raw_fd(0), File::from_raw_fd(1)) };
    let outcome = child::copy_echo(&mut stdio, config);
    drop(stdio);
    Ok(child::finish("stdin", started, outcome, config.quiet))
}

fn serve_socket(socket: Socket, options: &Options, config: Config) -> Result<i32> {
    listener::connection_options(&socket, options.idle_timeout)
        .context("unable to set socket options on the connection")?;
    match socket.peer_addr().ok().and_then(|a| a.as_socket()) {
        Some(peer) => Ok(child::echo_connection(socket, peer, config)),
        // Not an IP socket (a Unix socket from some launcher): echo it all the same.
        None => {
            let started = Instant::now();
            let mut stream = std::net::TcpStream::from(socket);
            let outcome = child::copy_echo(&mut stream, config);
            drop(stream);
            Ok(child::finish("unix", started, outcome, config.quiet))
        }
    }
}

fn stat(fd: RawFd) -> nix::Result<FileStat> {
    // SAFETY: borrowed only for the fstat call; a closed fd gives EBADF.
    fstat(unsafe { BorrowedFd::borrow_raw(fd) })
}

/// Points `fd` at /dev/null, so it neither holds the connection open nor writes into it.
fn to_dev_null(fd: RawFd) -> Result<()> {
    let null = open("/dev/null", OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())
        .context("unable to open /dev/null")?;
    // SAFETY: dup2 onto a standard fd replaces it atomically; nothing holds it as an object.
    let fd = unsafe { nix::libc::dup2(null.as_raw_fd(), fd) };
    nix::errno::Errno::result(fd).context("unable to redirect a standard fd to /dev/null")?;
    Ok(())
}

/// stdin for reading and stdout for writing, unbuffered (std's stdout buffers by line).
struct Stdio(File, File);

impl Read for Stdio {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Stdio {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.1.write(data)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
