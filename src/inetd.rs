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
use std::os::fd::{BorrowedFd, FromRawFd, RawFd};
use std::sync::atomic::AtomicU64;

use anyhow::{Context as _, Result};
use nix::sys::stat::{FileStat, SFlag, fstat};
use socket2::Socket;

use crate::child::Context;
use crate::child::connection::{self, Stream};
use crate::peer::Peer;
use crate::sandbox::{self, Confine};
use crate::settings::Settings;
use crate::setup::activation::{self, Expect};
use crate::setup::{self, unix};

/// Serves the connection and returns the exit status.
pub fn run(settings: &Settings) -> Result<u8> {
    let passed = activation::passed_sockets()?;
    setup::clean(passed, None);
    let mut context = Context {
        settings: settings.child,
        // The one connection this process serves is its connection number 1.
        serial: 1,
        peer: None,
        total: Box::leak(Box::new(AtomicU64::new(0))),
        marks: None,
        tally: None,
        // One process per connection: it installs the allow-list itself.
        confine: sandbox::prepare(settings.sandbox, None, &[], false, None)
            .map_err(anyhow::Error::msg)?
            .map(Confine::Install),
    };
    if let Some(tls) = &settings.setup.tls {
        // Said nowhere: stderr may be the connection itself (classic inetd).
        context.settings.tls = Some(setup::certificates::prepare(tls, &[], false)?);
    }
    if let Some(path) = &settings.setup.tls_keylog {
        crate::tls::log_keys_to(setup::dump::open_keylog(path)?);
    }
    if passed > 0 {
        let socket = activation::take_socket(passed, Expect::Connection)?;
        return serve_socket(socket, context);
    }
    if let Some(path) = &settings.setup.harness.log_file {
        setup::harness::log_to(path)?;
    }
    let stdin = stat(0).context("--inetd: stdin is not open")?;
    let stdout = stat(1).context("--inetd: stdout is not open")?;
    let is_socket =
        |st: &FileStat| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFSOCK;
    let same = |a: &FileStat, b: &FileStat| a.st_dev == b.st_dev && a.st_ino == b.st_ino;
    if stat(2).is_ok_and(|stderr| same(&stderr, &stdin)) {
        // inetd's way: the connection is stderr too. Log lines must not reach the client.
        context.settings.quiet = true;
        setup::to_dev_null(&[2])?;
    }
    if is_socket(&stdin) && same(&stdin, &stdout) {
        // Serve it through fd 0 alone, so closing that ends the connection; fd 1 must not hold
        // it open.
        setup::to_dev_null(&[1])?;
        // SAFETY: fd 0 is the connection's socket; from here `socket` alone owns fd 0.
        let socket = unsafe { Socket::from_raw_fd(0) };
        return serve_socket(socket, context);
    }
    crate::log::init();
    anyhow::ensure!(
        context.settings.tls.is_none(),
        "--tls with --inetd needs the connection's socket on stdin and stdout, not pipes"
    );
    // Two different files: a pipe or two, most likely.
    // SAFETY: fds 0 and 1 are open (fstat said so) and owned by these Files alone from here.
    let pipes = unsafe { Stream::Pipes(File::from_raw_fd(0), File::from_raw_fd(1)) };
    Ok(status(connection::serve(pipes, "stdin", context)))
}

fn serve_socket(socket: Socket, mut context: Context) -> Result<u8> {
    // Once the connection is ours (it may be fd 3, where the log's own fd must not land).
    crate::log::init();
    // A launcher may hand the socket over non-blocking; a read would then fail at once with
    // EAGAIN, which the echo takes for an idle timeout.
    socket
        .set_nonblocking(false)
        .context("unable to make the connection blocking")?;
    crate::sockopt::connection_options(&socket, context.settings.idle_timeout)
        .context("unable to set socket options on the connection")?;
    let peer = socket.peer_addr().ok().and_then(|a| a.as_socket());
    // Not an IP socket: a Unix one (systemd's ListenStream=/path with Accept=yes), named by its
    // client's credentials.
    context.peer = peer.map(|peer| peer.ip());
    let peer = match peer {
        Some(peer) => Peer::Ip(peer),
        None => Peer::Unix(unix::peer(&socket).context("unable to read the client's credentials")?),
    };
    Ok(status(connection::serve(
        Stream::Socket(socket.into()),
        peer,
        context,
    )))
}

/// An exit status for `ExitCode`: the child's 0 or 1.
fn status(code: i32) -> u8 {
    u8::try_from(code).unwrap_or(1)
}

fn stat(fd: RawFd) -> nix::Result<FileStat> {
    // SAFETY: borrowed only for the fstat call; a closed fd gives EBADF.
    fstat(unsafe { BorrowedFd::borrow_raw(fd) })
}
