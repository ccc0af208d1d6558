//! The listening socket: dual-stack by default, non-blocking, with errors that name the address.
//!
//! With no `--bind`, forkecho listens on `[::]` with IPV6_V6ONLY off, so one socket takes IPv6 and
//! IPv4 clients alike; on a host without IPv6 it falls back to `0.0.0.0`. The socket is
//! non-blocking because the main loop learns of connections from poll(2), never by blocking in
//! accept(2).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

use anyhow::{Context, Result};
use nix::errno::Errno;
use socket2::{Domain, Protocol, Socket, Type};

pub struct Listener {
    socket: Socket,
    addr: SocketAddr,
}

impl Listener {
    /// Binds `ip:port` (the dual-stack default when `ip` is None) and listens.
    pub fn bind(ip: Option<IpAddr>, port: u16, backlog: i32) -> Result<Listener> {
        match ip {
            Some(ip) => Listener::open(SocketAddr::new(ip, port), backlog),
            None => {
                let dual = SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port);
                match Listener::open(dual, backlog) {
                    Err(err) if no_ipv6(&err) => {
                        let v4 = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port);
                        Listener::open(v4, backlog)
                    }
                    result => result,
                }
            }
        }
    }

    fn open(addr: SocketAddr, backlog: i32) -> Result<Listener> {
        let socket = listen_on(addr, backlog).with_context(|| format!("unable to bind {addr}"))?;
        // With port 0 the kernel picked the port: report the real one.
        let addr = socket
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .with_context(|| format!("unable to read the address bound for {addr}"))?;
        Ok(Listener { socket, addr })
    }

    /// Serves a listening socket someone else bound (systemd socket activation): made
    /// non-blocking like ours; its address, port and backlog are whatever it was given.
    pub fn adopt(socket: Socket) -> Result<Listener> {
        socket
            .set_nonblocking(true)
            .context("unable to make the passed socket non-blocking")?;
        let addr = socket
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .context("unable to read the passed socket's address")?;
        Ok(Listener { socket, addr })
    }

    /// Sets what every connection should start with (see `connection_options`) on the listener:
    /// Linux copies these into every accepted socket, so they are set once here instead of
    /// three system calls in every child.
    pub fn set_connection_options(&self, idle_timeout: Duration) -> Result<()> {
        connection_options(&self.socket, idle_timeout)
            .with_context(|| format!("unable to set socket options on {}", self.addr))
    }

    /// The address actually bound, with the real port.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }

    pub fn raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// Accepts one connection; WouldBlock when none is waiting. The new socket is blocking and
    /// close-on-exec.
    pub fn accept(&self) -> io::Result<(Socket, SocketAddr)> {
        let (socket, addr) = self.socket.accept()?;
        let peer = addr
            .as_socket()
            .ok_or_else(|| io::Error::other("peer address is not an IP address"))?;
        Ok((socket, peer))
    }
}

/// On a TCP socket, TCP_NODELAY (each read is written back at once; Nagle's algorithm would only
/// hold small echoes back) and SO_OOBINLINE (an urgent byte, telnet's "send synch", is data to
/// echo in order; without it read(2) skips it); and, unless `idle_timeout` is zero,
/// SO_RCVTIMEO/SO_SNDTIMEO.
pub fn connection_options(socket: &Socket, idle_timeout: Duration) -> io::Result<()> {
    let domain = socket.domain()?;
    if domain == Domain::IPV4 || domain == Domain::IPV6 {
        socket.set_tcp_nodelay(true)?;
        socket.set_out_of_band_inline(true)?;
    }
    if !idle_timeout.is_zero() {
        socket.set_read_timeout(Some(idle_timeout))?;
        socket.set_write_timeout(Some(idle_timeout))?;
    }
    Ok(())
}

fn listen_on(addr: SocketAddr, backlog: i32) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED) {
        socket.set_only_v6(false)?;
    }
    // Lets a restarted server bind while old connections sit in TIME_WAIT; on Linux it does not
    // let two listeners share a port.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// True when the failure means "this host has no IPv6", so the IPv4 fallback applies.
fn no_ipv6(err: &anyhow::Error) -> bool {
    let errno = err
        .downcast_ref::<io::Error>()
        .and_then(io::Error::raw_os_error)
        .map(Errno::from_raw);
    matches!(
        errno,
        Some(Errno::EAFNOSUPPORT | Errno::EADDRNOTAVAIL | Errno::EPROTONOSUPPORT)
    )
}

/// True for accept(2) errors that concern only the connection being accepted: skip it, go on.
/// The network errors are those accept(2) on Linux passes through (see its man page).
pub fn is_per_connection(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error().map(Errno::from_raw),
        Some(
            Errno::ECONNABORTED
                | Errno::EINTR
                | Errno::EPROTO
                | Errno::EPERM
                | Errno::ENETDOWN
                | Errno::ENOPROTOOPT
                | Errno::EHOSTDOWN
                | Errno::ENONET
                | Errno::EHOSTUNREACH
                | Errno::EOPNOTSUPP
                | Errno::ENETUNREACH
                | Errno::ETIMEDOUT
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_zero_reports_the_real_port() {
        let listener = Listener::bind(Some(Ipv4Addr::LOCALHOST.into()), 0, 16).unwrap();
        assert_eq!(listener.addr().ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_ne!(listener.addr().port(), 0);
    }

    #[test]
    fn a_busy_port_is_an_error_naming_the_address() {
        let first = Listener::bind(Some(Ipv4Addr::LOCALHOST.into()), 0, 16).unwrap();
        let port = first.addr().port();
        let err = Listener::bind(Some(Ipv4Addr::LOCALHOST.into()), port, 16)
            .err()
            .expect("second bind of the same port must fail");
        let text = format!("{err:#}");
        assert!(
            text.starts_with(&format!("unable to bind 127.0.0.1:{port}: ")),
            "{text}"
        );
        assert!(text.contains("Address already in use"), "{text}");
        assert!(!no_ipv6(&err));
    }

    #[test]
    fn accept_on_an_idle_listener_would_block() {
        let listener = Listener::bind(Some(Ipv4Addr::LOCALHOST.into()), 0, 16).unwrap();
        let err = listener.accept().expect_err("no connection is waiting");
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn accepted_sockets_inherit_nodelay_and_the_timeouts() {
        let listener = Listener::bind(Some(Ipv4Addr::LOCALHOST.into()), 0, 16).unwrap();
        listener
            .set_connection_options(Duration::from_millis(1500))
            .unwrap();
        let _client = std::net::TcpStream::connect(listener.addr()).unwrap();
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

    #[test]
    fn aborted_connections_are_per_connection_but_fd_exhaustion_is_not() {
        let aborted = io::Error::from_raw_os_error(Errno::ECONNABORTED as i32);
        let emfile = io::Error::from_raw_os_error(Errno::EMFILE as i32);
        assert!(is_per_connection(&aborted));
        assert!(!is_per_connection(&emfile));
    }
}
