//! Setting up, before the first fork: everything that can fail happens here or in
//! `parent::Parent::new`, before the server says it is ready. Reads only `setup::Settings`
//! (from `crate::settings`); nothing here knows the parent.
//!
//! `listen` first starts from a clean process (`clean`: no signal a launcher left blocked, no fd
//! it left open but 0–2 and systemd's), points stdin at /dev/null and makes sure fds 1 and 2 are
//! open (so nothing of ours lands on 0–2, and `server` can later point stdout where stdin
//! points), finds the listening
//! socket, either one systemd passed (`activation`) or one bound here (`listener`: dual stack,
//! socket options every connection inherits), and then gives up root if asked (`privileges`).
//! Unknown users and groups are refused before anything is bound. Then the log chooses how it
//! writes to stderr (`log::init`); until then, lines are plain writes.

mod accounts;
pub mod activation;
pub mod certificates;
mod descriptors;
pub mod dump;
mod exclusive;
pub mod harness;
pub mod listener;
pub mod privileges;
pub mod udp_sockets;
pub mod unix;

use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use anyhow::{Context, Result};
use nix::fcntl::{FcntlArg, OFlag, fcntl, open};
use nix::sys::signal::{SigSet, SigmaskHow, sigprocmask};
use nix::sys::stat::Mode;

use std::time::Duration;

use crate::cli::Bind;
use descriptors::close_range;
use harness::Harness;
use listener::Listener;
use privileges::Identity;
pub use udp_sockets::Udp;

/// The most listening sockets (or UDP sockets) one forkecho serves (the parent's loop and the UDP
/// worker track them in 64-bit sets).
pub const MAX_LISTENERS: usize = 64;

/// How the listeners are found or made, and who serves from them.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `--bind`: empty for the dual-stack default.
    pub binds: Vec<Bind>,
    pub listener: listener::Binding,
    /// `--idle-timeout`, set on the listeners for every connection to inherit.
    pub idle_timeout: Duration,
    /// With `--proxy-protocol`: hand connections over only once their first data has come
    /// (TCP_DEFER_ACCEPT), waiting about this long for it.
    pub defer_accept: Option<Duration>,
    /// `--user` and `--group`.
    pub user: Option<String>,
    pub group: Option<String>,
    /// `--metrics`: where to serve scrapes.
    pub metrics: Option<std::net::SocketAddr>,
    /// `--udp`, `--udp-only`.
    pub udp: Udp,
    /// `--tls` and its options.
    pub tls: Option<certificates::Recipe>,
    /// `--control`: where the control socket goes.
    pub control: Option<std::path::PathBuf>,
    /// `--dump DIR` and `--dump-limit`.
    pub dump: Option<(std::path::PathBuf, u64)>,
    /// `--tls-keylog FILE`.
    pub tls_keylog: Option<std::path::PathBuf>,
    /// What a harness is told, and what ties forkecho to it.
    pub harness: harness::Ties,
}

/// The bound (or adopted) listeners, ready for the parent.
pub struct Listening {
    pub listeners: Vec<Listener>,
    /// Whether systemd passed the sockets (then --port, --bind and --backlog did not apply).
    pub from_systemd: bool,
    /// Who the server now runs as, when --user or --group asked for a change.
    pub identity: Option<Identity>,
    /// With `--metrics`: the listener scrapes come to.
    pub metrics: Option<Listener>,
    /// With `--udp` or `--udp-only`: the UDP sockets.
    pub udp: Vec<udp_sockets::UdpSocket>,
    /// With `--control`: the control socket (mode 0600), and its file.
    pub control: Option<(socket2::Socket, Option<unix::SocketFile>)>,
    pub harness: Harness,
}

/// Finds or binds the listening socket and sets the options connections inherit from it. The
/// privileges stay until `drop_privileges`: whatever else needs them (the log's own description
/// of stderr, here; the parent's OOM score file) is acquired first.
///
/// Long on purpose: startup's steps, whose order matters (see the module docs), in that order.
pub fn listen(settings: &Settings) -> Result<Listening> {
    let passed = activation::passed_sockets()?;
    clean(passed, settings.harness.ready_fd);
    // Before stdin goes to /dev/null (the lifeline is a copy of it) and before the log chooses
    // how to write (a --log-file goes on fd 2).
    let harness = Harness::prepare(&settings.harness)?;
    standard_fds()?;
    let identity = privileges::resolve(settings.user.as_deref(), settings.group.as_deref())?;
    let (listeners, udp, from_systemd) = match passed {
        0 => {
            let owner = identity.as_ref().map(|who| (who.uid, who.gid));
            let (listeners, udp) = bind_both(settings, owner)?;
            (listeners, udp, false)
        }
        n => {
            let (mut listeners, mut datagrams) = (Vec::new(), Vec::new());
            for socket in activation::take_listeners(n)? {
                match socket.r#type()? == socket2::Type::DGRAM {
                    true => datagrams.push(udp_sockets::UdpSocket::adopt(socket, settings.udp)?),
                    false => listeners.push(Listener::adopt(socket)?),
                }
            }
            if settings.udp == Udp::Only
                && let Some(listener) = listeners.first()
            {
                anyhow::bail!(
                    "--udp-only, yet systemd passed a stream socket ({}): use ListenDatagram= only",
                    listener.addr()
                );
            }
            anyhow::ensure!(
                settings.udp == Udp::Off || !datagrams.is_empty(),
                "--udp, yet systemd passed no datagram socket: add ListenDatagram= to the unit"
            );
            (listeners, datagrams, true)
        }
    };
    // The parent's loop and the UDP worker track their sockets in 64-bit sets.
    let most = listeners.len().max(udp.len());
    anyhow::ensure!(
        most <= MAX_LISTENERS,
        "{most} listening sockets: forkecho serves at most {MAX_LISTENERS}"
    );
    for listener in &listeners {
        if listener.is_unix() {
            // A Unix socket copies no option to the connections it accepts: each child sets
            // them on its own. And poll(2) ignores SO_RCVLOWAT on one, which the PROXY waiting
            // room relies on.
            anyhow::ensure!(
                settings.defer_accept.is_none(),
                "--proxy-protocol is for IP listeners; {} is a Unix socket",
                listener.addr()
            );
            continue;
        }
        listener.set_connection_options(settings.idle_timeout)?;
        if let Some(wait) = settings.defer_accept {
            listener.accept_with_data(wait.as_secs_f64().ceil() as u32)?;
        }
    }
    let metrics = settings
        .metrics
        .map(|addr| Listener::for_scrapes(addr, crate::child::metrics::TIMEOUT))
        .transpose()?;
    let control = match &settings.control {
        Some(path) => {
            let name = crate::address::Name::Path(path.clone());
            // The owner's alone: read and write for the user forkecho runs as (after --user).
            let making = unix::Making {
                mode: Some(0o600),
                owner: identity.as_ref().map(|who| (who.uid, who.gid)),
            };
            let (socket, file) = unix::listen(&name, 16, making)
                .with_context(|| format!("--control {}", path.display()))?;
            Some((socket, file))
        }
        None => None,
    };
    // Now that systemd's fds are taken (the log's own fd must not land on fd 3), before the first
    // line a client could make us write, and before the privileges go (stderr may be a pipe only
    // root can open anew).
    crate::log::init();
    Ok(Listening {
        listeners,
        from_systemd,
        identity,
        metrics,
        udp,
        control,
        harness,
    })
}

/// Binds the TCP listeners and the UDP sockets `settings` ask for, on one port. With --port 0 the
/// port the kernel picked for TCP may be taken for UDP: then both are picked afresh.
fn bind_both(
    settings: &Settings,
    owner: Option<(Option<nix::unistd::Uid>, nix::unistd::Gid)>,
) -> Result<(Vec<Listener>, Vec<udp_sockets::UdpSocket>)> {
    let port = settings.listener.port;
    if settings.udp == Udp::Only {
        let ip: Vec<&Bind> = settings
            .binds
            .iter()
            .filter(|bind| !bind.is_unix())
            .collect();
        let sockets = match (settings.binds.is_empty(), ip.is_empty()) {
            (true, _) => udp_sockets::bind_default(port)?,
            (false, true) => {
                anyhow::bail!("--udp-only needs an IP address to bind, not only unix:")
            }
            (false, false) => {
                let addrs = listener::resolve(&ip)?;
                let addrs: Vec<_> = addrs
                    .iter()
                    .map(|(addr, _)| std::net::SocketAddr::new(addr.ip(), port))
                    .collect();
                udp_sockets::bind(&addrs)?
            }
        };
        return Ok((Vec::new(), sockets));
    }
    for attempt in 1.. {
        let listeners = Listener::bind_all(&settings.binds, settings.listener, owner)?;
        if settings.udp == Udp::Off {
            return Ok((listeners, Vec::new()));
        }
        let addrs: Vec<std::net::SocketAddr> = listeners
            .iter()
            .filter_map(|l| match l.addr() {
                crate::address::Addr::Ip(addr) => Some(*addr),
                crate::address::Addr::Unix(_) => None,
            })
            .collect();
        anyhow::ensure!(
            !addrs.is_empty(),
            "--udp needs an IP address to bind, not only unix:"
        );
        match udp_sockets::bind(&addrs) {
            Err(err) if port == 0 && attempt < listener::PICK_TRIES && listener::in_use(&err) => {}
            result => return Ok((listeners, result?)),
        }
    }
    unreachable!("the last attempt returns")
}

/// Gives up root if `--user` or `--group` asked for it: last, once everything that needs
/// privilege is open.
pub fn drop_privileges(identity: Option<&Identity>) -> Result<()> {
    match identity {
        Some(identity) => privileges::drop_to(identity),
        None => Ok(()),
    }
}

/// Undoes what a launcher may have left: a blocked signal (every child would stay a zombie and
/// SIGTERM would do nothing) and open fds other than 0–2, the `passed` sockets from fd 3 on and
/// the `--ready-fd` to `keep` (every child would hold them, and a harness would never see its
/// pipe's end).
pub fn clean(passed: u32, keep: Option<RawFd>) {
    // sigprocmask fails only for an invalid `how`, which is a constant here.
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    let first = 3u32.saturating_add(passed);
    match keep
        .and_then(|fd| u32::try_from(fd).ok())
        .filter(|&fd| fd >= first)
    {
        Some(keep) => {
            close_range(first, keep - 1);
            close_range(keep + 1, u32::MAX);
        }
        None => close_range(first, u32::MAX),
    }
}

/// Points stdin at /dev/null (the server never reads it, and children should not hold a
/// launcher's pipe), and opens /dev/null on fd 1 or 2 if a launcher left it closed, so that no
/// socket or pipe of ours gets one of those numbers.
fn standard_fds() -> Result<()> {
    to_dev_null(&[0])?;
    for fd in 1..=2 {
        // SAFETY: only borrowed for F_GETFD, which reports EBADF for a closed fd.
        if fcntl(unsafe { BorrowedFd::borrow_raw(fd) }, FcntlArg::F_GETFD).is_err() {
            to_dev_null(&[fd])?;
        }
    }
    Ok(())
}

/// Points each of `fds` at /dev/null, so it neither holds a pipe or connection open nor writes
/// into it.
pub fn to_dev_null(fds: &[RawFd]) -> Result<()> {
    let null = open("/dev/null", OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())
        .context("unable to open /dev/null")?;
    let mut landed_on_one = false;
    for &fd in fds {
        if fd == null.as_raw_fd() {
            // open(2) took the lowest free number, this very fd: it stays open there.
            landed_on_one = true;
            continue;
        }
        // SAFETY: dup2 onto a standard fd replaces it atomically; nothing holds it as an object.
        let result = unsafe { nix::libc::dup2(null.as_raw_fd(), fd) };
        nix::errno::Errno::result(result)
            .with_context(|| format!("unable to point fd {fd} at /dev/null"))?;
    }
    if landed_on_one {
        std::mem::forget(null);
    }
    Ok(())
}
