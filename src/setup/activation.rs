//! Sockets handed over by a service manager: systemd's socket activation (sd_listen_fds(3)).
//!
//! systemd (or `systemd-socket-activate`) opens the sockets, puts them at fd 3 onwards and sets
//! LISTEN_PID to the pid it started and LISTEN_FDS to how many there are. The variables are for
//! this process only, so they are removed from the environment at once, whatever they say, and
//! children never see them. With `Accept=no` fd 3 on are listening sockets (one per
//! `ListenStream=`), served like ones forkecho bound itself, and datagram sockets (one per
//! `ListenDatagram=`) for `--udp`; with `Accept=yes` fd 3 is one connection, served by
//! `--inetd`.

use std::os::fd::{BorrowedFd, FromRawFd, RawFd};

use anyhow::{Context, Result, bail, ensure};
use nix::sys::stat::{SFlag, fstat};
use socket2::{Domain, Socket, Type};

/// The first passed fd (SD_LISTEN_FDS_START).
pub const FIRST_FD: RawFd = 3;

const VARIABLES: [&str; 3] = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"];

/// How many sockets were passed to this process (0 when none), after removing the variables
/// from the environment. Malformed variables addressed to us are an error that names them.
pub fn passed_sockets() -> Result<u32> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    for name in VARIABLES {
        // Called at startup; forkecho never starts a thread.
        // SAFETY: nothing can read or write the environment concurrently.
        unsafe { std::env::remove_var(name) };
    }
    count(pid.as_deref(), fds.as_deref(), std::process::id())
}

/// The decision `passed_sockets` makes, on the variables' values.
fn count(pid: Option<&str>, fds: Option<&str>, us: u32) -> Result<u32> {
    let Some(pid) = pid else {
        return Ok(0);
    };
    let pid: u32 = pid
        .parse()
        .map_err(|_| anyhow::anyhow!("LISTEN_PID is not a process id: '{pid}'"))?;
    if pid != us {
        // Meant for another process (say, a parent that did not clear them): not ours to use.
        return Ok(0);
    }
    let fds = fds.context("LISTEN_PID names this process but LISTEN_FDS is not set")?;
    fds.parse()
        .map_err(|_| anyhow::anyhow!("LISTEN_FDS is not a number of sockets: '{fds}'"))
}

/// What the passed socket is expected to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// A listening socket (`Accept=no`).
    Listening,
    /// One accepted connection (`Accept=yes`).
    Connection,
}

/// Takes ownership of fd 3 after checking it is a stream socket (TCP or Unix) of the expected
/// kind, and closes any further passed fds (with `--inetd` forkecho serves one connection; they
/// would otherwise stay open in it). The error names the fd and what is wrong with it.
pub fn take_socket(passed: u32, expect: Expect) -> Result<Socket> {
    ensure!(passed >= 1, "no sockets were passed");
    if passed > 1 {
        close_extra(passed, FIRST_FD + 1);
    }
    take_at(FIRST_FD, passed, expect)
}

/// Takes every passed listening socket (a unit with several `ListenStream=`): fd 3, which must
/// be one, and the fds after it up to the first that is not open. Further fds LISTEN_FDS counts
/// are closed.
pub fn take_listeners(passed: u32) -> Result<Vec<Socket>> {
    ensure!(passed >= 1, "no sockets were passed");
    let mut sockets = vec![take_at(FIRST_FD, passed, Expect::Listening)?];
    let last = (FIRST_FD as u32).saturating_add(passed - 1);
    let mut fd = FIRST_FD + 1;
    while (fd as u32) <= last && is_open(fd) {
        sockets.push(take_at(fd, passed, Expect::Listening)?);
        fd += 1;
    }
    if (fd as u32) <= last {
        close_extra(passed, fd);
    }
    Ok(sockets)
}

fn is_open(fd: RawFd) -> bool {
    // SAFETY: only borrowed for fstat; a closed fd gives EBADF.
    fstat(unsafe { BorrowedFd::borrow_raw(fd) }).is_ok()
}

/// Takes ownership of passed fd `fd` after checking it is a stream socket (TCP or Unix) of the
/// expected kind.
fn take_at(fd: RawFd, passed: u32, expect: Expect) -> Result<Socket> {
    // SAFETY: the fd is only borrowed for fstat; if it is not open, fstat says EBADF.
    let stat = fstat(unsafe { BorrowedFd::borrow_raw(fd) })
        .with_context(|| format!("LISTEN_FDS={passed} but fd {fd} is not open"))?;
    ensure!(
        SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFSOCK,
        "fd {fd} (from LISTEN_FDS) is not a socket"
    );
    // SAFETY: the fd is an open socket passed to this process alone; from here `socket` owns it.
    let socket = unsafe { Socket::from_raw_fd(fd) };
    let kind = socket
        .r#type()
        .context("unable to read the passed socket's type")?;
    let datagram = kind == Type::DGRAM && expect == Expect::Listening;
    ensure!(
        kind == Type::STREAM || datagram,
        "fd {fd} (from LISTEN_FDS) is not a stream socket (it is {kind:?}); \
         forkecho serves TCP: ListenStream= in the .socket unit (and ListenDatagram= with --udp)"
    );
    let domain = socket
        .domain()
        .context("unable to read the passed socket's domain")?;
    if domain != Domain::IPV4 && domain != Domain::IPV6 && domain != Domain::UNIX {
        bail!("fd {fd} (from LISTEN_FDS) is not an IPv4, IPv6 or Unix socket ({domain:?})");
    }
    // A datagram socket neither listens nor is connected: it is taken as it is.
    let listening = datagram
        || socket
            .is_listener()
            .context("unable to read whether the passed socket listens")?;
    match (expect, listening) {
        (Expect::Listening, false) => bail!(
            "fd {fd} (from LISTEN_FDS) is not listening: a connection (Accept=yes) is \
             served with --inetd"
        ),
        (Expect::Connection, true) => bail!(
            "fd {fd} (from LISTEN_FDS) is a listening socket: with --inetd forkecho \
             serves one connection (Accept=yes); without --inetd it serves a listening socket"
        ),
        _ => {}
    }
    socket
        .set_cloexec(true)
        .context("unable to set FD_CLOEXEC on the passed socket")?;
    Ok(socket)
}

/// Closes the passed fds from `from` up to 3 + `passed` - 1.
fn close_extra(passed: u32, from: RawFd) {
    super::descriptors::close_range(from as u32, (FIRST_FD as u32).saturating_add(passed - 1));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_variables_means_no_sockets() {
        assert_eq!(count(None, None, 42).unwrap(), 0);
        assert_eq!(count(None, Some("2"), 42).unwrap(), 0);
    }

    #[test]
    fn variables_for_another_process_are_ignored() {
        assert_eq!(count(Some("41"), Some("1"), 42).unwrap(), 0);
    }

    #[test]
    fn variables_for_us_give_the_count() {
        assert_eq!(count(Some("42"), Some("1"), 42).unwrap(), 1);
        assert_eq!(count(Some("42"), Some("3"), 42).unwrap(), 3);
        assert_eq!(count(Some("42"), Some("0"), 42).unwrap(), 0);
    }

    #[test]
    fn malformed_variables_are_errors_that_quote_them() {
        let err = count(Some("x1"), Some("1"), 42).unwrap_err().to_string();
        assert_eq!(err, "LISTEN_PID is not a process id: 'x1'");
        let err = count(Some("42"), Some("one"), 42).unwrap_err().to_string();
        assert_eq!(err, "LISTEN_FDS is not a number of sockets: 'one'");
        let err = count(Some("42"), None, 42).unwrap_err().to_string();
        assert!(err.contains("LISTEN_FDS is not set"), "{err}");
    }

    /// Set in the copy of this test binary that `the_variables_are_removed_whatever_they_say`
    /// runs, so that the environment is changed in a process where no other test runs.
    const ALONE: &str = "FORKECHO_TEST_ENV_ALONE";

    #[test]
    fn the_variables_are_removed_whatever_they_say() {
        if std::env::var_os(ALONE).is_none() {
            // Changing the environment while other test threads may read it is undefined
            // behaviour: run this test alone, in a fresh copy of this binary, with the
            // variables set from the start.
            let name = "setup::activation::tests::the_variables_are_removed_whatever_they_say";
            let output = std::process::Command::new(std::env::current_exe().unwrap())
                .args([name, "--exact", "--test-threads=1"])
                .env(ALONE, "1")
                .env("LISTEN_PID", "1")
                .env("LISTEN_FDS", "1")
                .env("LISTEN_FDNAMES", "echo")
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&output.stdout);
            assert!(output.status.success(), "{text}");
            assert!(text.contains("1 passed"), "{text}");
            return;
        }
        assert_eq!(passed_sockets().unwrap(), 0);
        for name in VARIABLES {
            assert_eq!(
                std::env::var_os(name),
                None,
                "{name} left in the environment"
            );
        }
    }
}
