//! The UDP sockets (`--udp`, `--udp-only`): bound here, before privileges go, on the addresses
//! and the port of the TCP listeners (with `--udp-only`, on the addresses `--bind` names, or the
//! dual-stack default, as TCP would be), non-blocking, with packet info asked for on wildcard
//! ones (so the worker can answer from the address each datagram was sent to).
//!
//! The parent holds them and never reads them; the UDP worker (`child::udp`) serves them, and
//! every other child closes them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;

use anyhow::{Context, Result};
use socket2::{Domain, Protocol, Socket, Type};

use crate::child::udp::{Bound, want_packet_info};

/// A bound UDP socket and where.
pub struct UdpSocket {
    pub socket: Socket,
    pub addr: SocketAddr,
}

impl UdpSocket {
    /// Serves a datagram socket systemd passed (`ListenDatagram=`), which needs `--udp`.
    pub fn adopt(socket: Socket, udp: Udp) -> Result<UdpSocket> {
        let addr = socket
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .context("unable to read the passed datagram socket's address")?;
        anyhow::ensure!(
            udp != Udp::Off,
            "systemd passed a datagram socket ({addr}, ListenDatagram=): serve it with --udp"
        );
        socket
            .set_nonblocking(true)
            .context("unable to make the passed datagram socket non-blocking")?;
        if addr.ip().is_unspecified() {
            want_packet_info(socket.as_raw_fd(), addr.is_ipv6())
                .with_context(|| format!("unable to ask for packet info on udp {addr}"))?;
        }
        Ok(UdpSocket { socket, addr })
    }

    /// What the worker needs of it.
    pub fn bound(&self) -> Bound {
        Bound {
            fd: self.socket.as_raw_fd(),
            addr: self.addr,
            wildcard: self.addr.ip().is_unspecified(),
        }
    }
}

/// One socket per address, all on one port: `addrs`' own port if not 0, else the one the kernel
/// picks for the first.
pub fn bind(addrs: &[SocketAddr]) -> Result<Vec<UdpSocket>> {
    let mut sockets: Vec<UdpSocket> = Vec::new();
    let mut port = 0;
    for &addr in addrs {
        let addr = match (addr.port(), port) {
            (0, picked) => SocketAddr::new(addr.ip(), picked),
            _ => addr,
        };
        let socket = open(addr).with_context(|| format!("unable to bind udp {addr}"))?;
        let local = socket
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .with_context(|| format!("unable to read the address bound for udp {addr}"))?;
        port = local.port();
        sockets.push(UdpSocket {
            socket,
            addr: local,
        });
    }
    Ok(sockets)
}

/// The dual-stack default, `[::]` (or `0.0.0.0` where the host has no IPv6), on `port`.
pub fn bind_default(port: u16) -> Result<Vec<UdpSocket>> {
    let dual = SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port);
    match bind(&[dual]) {
        Err(err) if super::listener::no_family(&err) => {
            bind(&[SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port)])
        }
        result => result,
    }
}

fn open(addr: SocketAddr) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED) {
        socket.set_only_v6(false)?;
    }
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    if addr.ip().is_unspecified() {
        want_packet_info(socket.as_raw_fd(), addr.is_ipv6())?;
    }
    Ok(socket)
}

/// Whether UDP echo is served, and TCP too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Udp {
    Off,
    /// `--udp`: beside TCP, on the same addresses and port.
    Also,
    /// `--udp-only`.
    Only,
}
