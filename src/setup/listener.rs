//! The listening sockets: dual-stack by default, one per address asked for, non-blocking, with
//! errors that name the address.
//!
//! With no `--bind`, forkecho listens on `[::]` with IPV6_V6ONLY off, so one socket takes IPv6 and
//! IPv4 clients alike; on a host without IPv6 it falls back to `0.0.0.0`. Each `--bind` adds
//! listeners: an IP address one, a host name one for every address it resolves to (addresses of a
//! family this host lacks are skipped, as long as one binds). With `--port 0` and several
//! addresses, all share the port the kernel picked for the first. `--reuse-port` sets
//! SO_REUSEPORT, so that several forkecho processes can share the port. The sockets are
//! non-blocking because the main loop learns of connections from poll(2), never by blocking in
//! accept(2). `--bind unix:…` adds Unix-socket listeners beside them (made in `unix`), served by
//! the same loop; their clients are named by their credentials.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use anyhow::{Context, Result};
use nix::errno::Errno;
use socket2::{Domain, Protocol, Socket, Type};

use super::unix::{self, Making, SocketFile};
use crate::address::{Addr, Name};
use crate::cli::Bind;
use crate::cli::values::reachable;
use crate::peer::Peer;

pub struct Listener {
    socket: Socket,
    addr: Addr,
    /// The socket file of a Unix listener this process bound: removed when the listener goes.
    file: Option<SocketFile>,
}

/// How the listeners are made.
#[derive(Debug, Clone, Copy)]
pub struct Binding {
    pub port: u16,
    pub backlog: i32,
    pub reuse_port: bool,
    /// `--unix-mode`.
    pub unix_mode: Option<u32>,
}

/// How often binding several addresses on a port the kernel picks is tried afresh when the
/// port turns out taken on a later address.
pub(super) const PICK_TRIES: usize = 8;

impl Listener {
    /// Binds every address `binds` stands for (the dual-stack default when it is empty) and
    /// listens on each: the IP listeners first, then the Unix ones, whose files belong to
    /// `owner` (`--user`, `--group`) when given.
    pub fn bind_all(
        binds: &[Bind],
        settings: Binding,
        owner: Option<(Option<nix::unistd::Uid>, nix::unistd::Gid)>,
    ) -> Result<Vec<Listener>> {
        if binds.is_empty() {
            return Ok(vec![Listener::bind_default(settings)?]);
        }
        let (unix, ip): (Vec<&Bind>, Vec<&Bind>) = binds.iter().partition(|bind| bind.is_unix());
        let mut listeners = match ip.is_empty() {
            true => Vec::new(),
            false => Listener::bind_ip(&ip, settings)?,
        };
        let making = Making {
            mode: settings.unix_mode,
            owner,
        };
        for name in unix.into_iter().filter_map(Name::of_bind) {
            if listeners
                .iter()
                .any(|l: &Listener| l.addr == Addr::Unix(name.clone()))
            {
                continue;
            }
            let (socket, file) = unix::listen(&name, settings.backlog, making)?;
            listeners.push(Listener {
                socket,
                addr: Addr::Unix(name),
                file,
            });
        }
        Ok(listeners)
    }

    fn bind_ip(binds: &[&Bind], settings: Binding) -> Result<Vec<Listener>> {
        let addrs = resolve(binds)?;
        for attempt in 1.. {
            match Listener::bind_addrs(&addrs, settings) {
                // The port picked for the first address was taken on another: pick again.
                Err(err) if settings.port == 0 && attempt < PICK_TRIES && in_use(&err) => {}
                result => return result,
            }
        }
        unreachable!("the last attempt returns")
    }

    fn bind_default(settings: Binding) -> Result<Listener> {
        let dual = SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), settings.port);
        match Listener::open(dual, settings) {
            Err(err) if no_family(&err) => {
                let v4 = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), settings.port);
                Listener::open(v4, settings)
            }
            result => result,
        }
    }

    /// One listener per address, all on one port. An address of a family this host lacks is
    /// skipped if it came from a name (with a warning); at least one must bind.
    fn bind_addrs(addrs: &[(SocketAddr, &Bind)], settings: Binding) -> Result<Vec<Listener>> {
        let mut listeners: Vec<Listener> = Vec::new();
        let mut port = settings.port;
        for &(mut addr, bind) in addrs {
            addr.set_port(port);
            match Listener::open(addr, Binding { port, ..settings }) {
                Ok(listener) => {
                    port = listener.addr.port().unwrap_or(port);
                    listeners.push(listener);
                }
                Err(err) if matches!(bind, Bind::Name(_)) && no_family(&err) => {
                    let ip = addr.ip();
                    crate::log::logln!("warning: --bind {bind}: skipping {ip}: {err:#}");
                }
                Err(err) => return Err(err),
            }
        }
        anyhow::ensure!(!listeners.is_empty(), "no address of --bind could be bound");
        Ok(listeners)
    }

    fn open(addr: SocketAddr, settings: Binding) -> Result<Listener> {
        let socket = listen_on(addr, settings).with_context(|| format!("unable to bind {addr}"))?;
        // With port 0 the kernel picked the port: report the real one.
        let addr = socket
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .with_context(|| format!("unable to read the address bound for {addr}"))?;
        Ok(Listener {
            socket,
            addr: Addr::Ip(addr),
            file: None,
        })
    }

    /// The `--metrics` listener on `addr`: scrapes it accepts inherit `timeout` for their reads
    /// and writes.
    pub fn for_scrapes(addr: SocketAddr, timeout: Duration) -> Result<Listener> {
        let settings = Binding {
            port: addr.port(),
            backlog: 64,
            reuse_port: false,
            unix_mode: None,
        };
        let listener = Listener::open(addr, settings).context("--metrics")?;
        listener.set_connection_options(timeout)?;
        Ok(listener)
    }

    /// Serves a listening socket someone else bound (systemd socket activation): made
    /// non-blocking like ours; its address, port and backlog are whatever it was given. A Unix
    /// socket's file is systemd's: forkecho never removes it.
    pub fn adopt(socket: Socket) -> Result<Listener> {
        socket
            .set_nonblocking(true)
            .context("unable to make the passed socket non-blocking")?;
        let local = socket
            .local_addr()
            .context("unable to read the passed socket's address")?;
        let addr = match (local.as_socket(), Name::of(&local)) {
            (Some(ip), _) => Addr::Ip(ip),
            (None, Some(name)) => Addr::Unix(name),
            (None, None) => anyhow::bail!("the passed socket has no address (an unnamed socket)"),
        };
        Ok(Listener {
            socket,
            addr,
            file: None,
        })
    }

    /// Sets what every connection should start with (see `sockopt::connection_options`) on the
    /// listener:
    /// Linux copies these into every accepted socket, so they are set once here instead of
    /// three system calls in every child.
    pub fn set_connection_options(&self, idle_timeout: Duration) -> Result<()> {
        crate::sockopt::connection_options(&self.socket, idle_timeout)
            .with_context(|| format!("unable to set socket options on {}", self.addr))
    }

    /// Asks the kernel to hand over a connection only once its first data has come
    /// (TCP_DEFER_ACCEPT), waiting up to about `secs` for it: with `--proxy-protocol` every
    /// client speaks first, and its header is then there when the parent accepts it, not one poll
    /// later.
    pub fn accept_with_data(&self, secs: u32) -> Result<()> {
        let secs = secs.clamp(1, i32::MAX as u32) as i32;
        let (level, name) = (nix::libc::IPPROTO_TCP, nix::libc::TCP_DEFER_ACCEPT);
        crate::sockopt::set_int(&self.socket, level, name, secs)
            .with_context(|| format!("unable to set TCP_DEFER_ACCEPT on {}", self.addr))
    }

    /// The address actually bound, with the real port.
    pub fn addr(&self) -> &Addr {
        &self.addr
    }

    /// Stops listening but keeps the address and port (the control socket's `down`): shut for
    /// reading, it refuses connections until `relisten`; SO_REUSEADDR off holds the port (no
    /// other socket with SO_REUSEADDR, any user's, may bind it while this one does not listen).
    pub fn stop_listening(&self) -> io::Result<()> {
        self.socket.set_reuse_address(false)?;
        self.socket.shutdown(std::net::Shutdown::Read)
    }

    /// Listens again on a socket shut for reading (`up` after `down`): the same socket, address
    /// and port; SO_REUSEADDR first (listen(2) checks the port again, and the socket's own bind
    /// conflicts without it).
    pub fn relisten(&self, backlog: i32) -> io::Result<()> {
        self.socket.set_reuse_address(true)?;
        self.socket.listen(backlog)
    }

    /// Whether this is a Unix-socket listener.
    pub fn is_unix(&self) -> bool {
        matches!(self.addr, Addr::Unix(_))
    }

    pub fn raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// The directory of the socket file this listener removes when it goes, if any.
    pub fn dir_fd(&self) -> Option<RawFd> {
        self.file.as_ref().map(SocketFile::dir_fd)
    }

    /// Removes the socket file, if it is still the one bound; the name of one left in place.
    pub fn remove_file(&mut self) -> Option<String> {
        self.file.as_mut()?.remove().map(ToString::to_string)
    }

    /// Accepts one connection; WouldBlock when none is waiting. The new socket is blocking and
    /// close-on-exec. A Unix client is named by its credentials.
    pub fn accept(&self) -> io::Result<(Socket, Peer)> {
        let (socket, addr) = self.socket.accept()?;
        let peer = match addr.as_socket() {
            Some(addr) => Peer::Ip(addr),
            // SO_PEERCRED fails only for a connection already gone: skip it like any aborted one.
            None => Peer::Unix(
                unix::peer(&socket)
                    .map_err(|_| io::Error::from_raw_os_error(Errno::ECONNABORTED as i32))?,
            ),
        };
        Ok((socket, peer))
    }
}

/// The addresses `binds` stand for (port 0), in order, each once, with the `--bind` it came
/// from. A name that resolves to nothing, or to an address no client can reach, and an interface
/// that does not exist, are errors naming them.
pub(super) fn resolve<'a>(binds: &[&'a Bind]) -> Result<Vec<(SocketAddr, &'a Bind)>> {
    let mut addrs: Vec<(SocketAddr, &Bind)> = Vec::new();
    for &bind in binds {
        let found: Vec<SocketAddr> = match bind {
            Bind::Ip(ip) => vec![SocketAddr::new(*ip, 0)],
            Bind::Scoped(ip, scope) => {
                let index = match scope.parse::<u32>() {
                    Ok(index) => index,
                    Err(_) => nix::net::if_::if_nametoindex(scope.as_str())
                        .with_context(|| format!("--bind '{bind}': no interface '{scope}'"))?,
                };
                vec![SocketAddrV6::new(*ip, 0, 0, index).into()]
            }
            Bind::Name(name) => (name.as_str(), 0)
                .to_socket_addrs()
                .with_context(|| format!("unable to resolve --bind '{name}'"))?
                .collect(),
            Bind::Unix(_) | Bind::Abstract(_) => unreachable!("Unix binds are bound apart"),
        };
        anyhow::ensure!(!found.is_empty(), "--bind '{bind}' resolves to no address");
        for addr in found {
            let ip = addr.ip();
            if let Err(why) = reachable(ip) {
                anyhow::bail!("--bind '{bind}' resolves to {ip}: {why}");
            }
            if !addrs.iter().any(|&(seen, _)| seen == addr) {
                addrs.push((addr, bind));
            }
        }
    }
    Ok(addrs)
}

fn listen_on(addr: SocketAddr, settings: Binding) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED) {
        socket.set_only_v6(false)?;
    }
    // Lets a restarted server bind while old connections sit in TIME_WAIT; on Linux it does not
    // let two listeners share a port.
    socket.set_reuse_address(true)?;
    if settings.reuse_port {
        socket.set_reuse_port(true)?;
    }
    match addr.port() {
        0 => bind_picked_port(&socket, addr)?,
        _ => socket.bind(&addr.into())?,
    }
    socket.listen(settings.backlog)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// Binds `socket` to a port the kernel picks for `addr`, as bind(2) to port 0 would, but pinned
/// to the socket: Linux gives a picked port back when its socket stops listening, and the
/// control socket's `down` and `up` stop and restart listening on the same port. So a holder
/// socket is bound to port 0 first, and `socket` to the port it got (both SO_REUSEADDR, neither
/// listening), then the holder is let go.
fn bind_picked_port(socket: &Socket, addr: SocketAddr) -> io::Result<()> {
    let holder = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED) {
        holder.set_only_v6(false)?;
    }
    holder.set_reuse_address(true)?;
    holder.bind(&addr.into())?;
    let mut pinned = addr;
    pinned.set_port(holder.local_addr()?.as_socket().map_or(0, |a| a.port()));
    socket.bind(&pinned.into())
}

/// True when the failure means the port is taken.
pub(super) fn in_use(err: &anyhow::Error) -> bool {
    err.downcast_ref::<io::Error>()
        .and_then(io::Error::raw_os_error)
        .is_some_and(|errno| errno == Errno::EADDRINUSE as i32)
}

/// True when the failure means "this host has no such address family" (no IPv6, say), so the
/// IPv4 fallback applies, or a name's address of that family is skipped.
pub(super) fn no_family(err: &anyhow::Error) -> bool {
    let errno = err
        .downcast_ref::<io::Error>()
        .and_then(io::Error::raw_os_error)
        .map(Errno::from_raw);
    matches!(
        errno,
        Some(Errno::EAFNOSUPPORT | Errno::EADDRNOTAVAIL | Errno::EPROTONOSUPPORT)
    )
}

/// The listen backlog for `--backlog` (None: not given): the kernel's most
/// (net.core.somaxconn, read at startup; 4096 where it cannot be read), and a given one cut to it
/// so the startup line says what the kernel uses.
pub fn backlog(asked: Option<i32>) -> i32 {
    let most = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|text| text.trim().parse::<i32>().ok())
        .filter(|&most| most > 0);
    match (asked, most) {
        (Some(asked), Some(most)) => asked.min(most),
        (Some(asked), None) => asked,
        (None, most) => most.unwrap_or(4096),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(port: u16) -> Binding {
        Binding {
            port,
            backlog: 16,
            reuse_port: false,
            unix_mode: None,
        }
    }

    fn ip(listener: &Listener) -> SocketAddr {
        match listener.addr() {
            Addr::Ip(addr) => *addr,
            Addr::Unix(name) => panic!("{name} is no IP listener"),
        }
    }

    /// One listener on 127.0.0.1:`port`.
    fn bind(port: u16) -> Result<Listener> {
        let mut all = Listener::bind_all(
            &[Bind::Ip(Ipv4Addr::LOCALHOST.into())],
            settings(port),
            None,
        )?;
        assert_eq!(all.len(), 1);
        Ok(all.remove(0))
    }

    #[test]
    fn port_zero_reports_the_real_port() {
        let listener = bind(0).unwrap();
        assert_eq!(ip(&listener).ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_ne!(ip(&listener).port(), 0);
    }

    #[test]
    fn several_addresses_share_the_port_picked_for_the_first() {
        let binds = [
            Bind::Ip(Ipv4Addr::LOCALHOST.into()),
            Bind::Ip("127.0.0.2".parse().unwrap()),
            // Twice: bound once.
            Bind::Ip(Ipv4Addr::LOCALHOST.into()),
        ];
        let all = Listener::bind_all(&binds, settings(0), None).unwrap();
        assert_eq!(all.len(), 2);
        assert_ne!(ip(&all[0]).port(), 0);
        assert_eq!(ip(&all[0]).port(), ip(&all[1]).port());
        assert_eq!(ip(&all[1]).ip().to_string(), "127.0.0.2");
    }

    #[test]
    fn a_name_binds_every_address_it_resolves_to() {
        let all = Listener::bind_all(&[Bind::Name("localhost".into())], settings(0), None).unwrap();
        assert!(
            all.iter().all(|l| ip(l).ip().is_loopback()),
            "{:?}",
            all.len()
        );
        assert!(
            all.iter()
                .any(|l| ip(l).ip() == IpAddr::V4(Ipv4Addr::LOCALHOST))
        );
    }

    #[test]
    fn reuse_port_lets_two_listeners_share_a_port() {
        let shared = Binding {
            reuse_port: true,
            ..settings(0)
        };
        let v4 = [Bind::Ip(Ipv4Addr::LOCALHOST.into())];
        let first = Listener::bind_all(&v4, shared, None).unwrap();
        let port = ip(&first[0]).port();
        let second = Listener::bind_all(&v4, Binding { port, ..shared }, None).unwrap();
        assert_eq!(ip(&second[0]).port(), port);
        // Without it, the port stays taken.
        assert!(bind(port).is_err());
    }

    #[test]
    fn a_busy_port_is_an_error_naming_the_address() {
        let first = bind(0).unwrap();
        let port = ip(&first).port();
        let err = bind(port)
            .err()
            .expect("second bind of the same port must fail");
        let text = format!("{err:#}");
        assert!(
            text.starts_with(&format!("unable to bind 127.0.0.1:{port}: ")),
            "{text}"
        );
        assert!(text.contains("Address already in use"), "{text}");
        assert!(!no_family(&err));
        assert!(in_use(&err));
    }

    #[test]
    fn accept_on_an_idle_listener_would_block() {
        let listener = bind(0).unwrap();
        let err = listener.accept().expect_err("no connection is waiting");
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn accepted_sockets_inherit_nodelay_and_the_timeouts() {
        let listener = bind(0).unwrap();
        listener
            .set_connection_options(Duration::from_millis(1500))
            .unwrap();
        let _client = std::net::TcpStream::connect(ip(&listener)).unwrap();
        let accepted = loop {
            match listener.accept() {
                Ok((socket, _)) => break socket,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("accept: {e}"),
            }
        };
        assert!(accepted.tcp_nodelay().unwrap());
        assert_eq!(
            accepted.read_timeout().unwrap(),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            accepted.write_timeout().unwrap(),
            Some(Duration::from_millis(1500))
        );
        assert!(!accepted.nonblocking().unwrap(), "accepted sockets block");
    }
}
