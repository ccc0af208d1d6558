//! Where a probe goes and how it gets there: the target's host (for TLS's server name), its
//! addresses (`resolve`), the first of them that accepts (`connect`), and the wait between
//! probes (`sleep_until`). Read by every kind of run: TCP and TLS (`ping`), WebSocket.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Instant;

use super::failure::Failure;
use super::interrupt::interrupted;
use super::probe;
use crate::address::{Addr, Name};
use crate::cli::values::parse_unix;
use crate::deadline;

/// The host part of `HOST:PORT` (None for a Unix socket), for `--tls`'s server name.
pub fn host_of(target: &str) -> Option<&str> {
    if target.starts_with("unix:") {
        return None;
    }
    let (host, _) = target.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    Some(host.split('%').next().unwrap_or(host))
}

/// Resolves `HOST:PORT` (a name, an IPv4 address, or `[IPv6]`, link-local ones with their
/// interface: `[fe80::1%eth0]:7`), or takes `unix:PATH` and `unix:@NAME` as they are.
pub fn resolve(target: &str) -> Result<Vec<Addr>, String> {
    if let Some(path) = target.strip_prefix("unix:") {
        // Read as `--bind` reads it.
        let bind = parse_unix(path).map_err(|why| format!("'{target}': {why}"))?;
        let name = Name::of_bind(&bind).expect("a unix: bind names a Unix socket");
        return Ok(vec![Addr::Unix(name)]);
    }
    let usage = || format!("'{target}': expected HOST:PORT, such as localhost:9999, or unix:PATH");
    let (host, port) = target.rsplit_once(':').ok_or_else(usage)?;
    // The resolver reads a scope (`%eth0`) but not brackets: take them off.
    let host = match host.strip_prefix('[') {
        Some(inner) => inner.strip_suffix(']').ok_or_else(usage)?,
        None => host,
    };
    let port: u16 = port.parse().map_err(|_| usage())?;
    if host.is_empty() {
        return Err(usage());
    }
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|err| format!("unable to resolve '{target}': {err}"))?
        .collect();
    match addrs.is_empty() {
        true => Err(format!("unable to resolve '{target}': no addresses")),
        false => Ok(addrs.into_iter().map(Addr::Ip).collect()),
    }
}

/// Connects to the first of `addrs` that accepts, before `deadline`.
pub fn connect(addrs: &[Addr], deadline: Instant) -> Result<(socket2::Socket, Addr), Failure> {
    let mut last = None;
    for addr in addrs {
        match probe::connect(addr, deadline, interrupted) {
            Ok(socket) => return Ok((socket, addr.clone())),
            Err(Failure::Interrupted) => return Err(Failure::Interrupted),
            Err(failure) => last = Some(failure),
        }
    }
    Err(last.expect("at least one address"))
}

/// Waits until `at`; false if Ctrl-C came first.
pub fn sleep_until(at: Instant) -> bool {
    loop {
        if interrupted() {
            return false;
        }
        let left = at.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        // No fds: poll only sleeps, and a signal always ends it early.
        let _ = nix::poll::poll(&mut [], deadline::poll_timeout(Some(left)));
    }
}

/// Whether probe `seq` (1 for the first) goes: `--count` not reached, and its time come
/// (`--interval` after the one before) without a Ctrl-C first.
pub fn next_probe(
    count: Option<u64>,
    interval: std::time::Duration,
    started: Instant,
    seq: u64,
) -> bool {
    if count.is_some_and(|count| seq > count) {
        return false;
    }
    seq == 1 || sleep_until(started + interval * (seq as u32 - 1))
}
