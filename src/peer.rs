//! Who a connection is from, as every log line names it: the peer (an IP address and port, or
//! the credentials of a Unix-socket client), and how the connection reached forkecho (straight,
//! or through a balancer's PROXY header).
//!
//! The parent learns both at accept (SO_PEERCRED for a Unix client; the PROXY header,
//! `parent/proxy.rs`) and hands them to the child by value across fork; both sides only format
//! them, and the parent groups clients by them (`parent/limits.rs`).

use std::fmt;
use std::net::SocketAddr;

/// A client: its IP address and port, or, on a Unix socket, the credentials the kernel recorded
/// when it connected (SO_PEERCRED: a Unix client has no address worth naming).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    Ip(SocketAddr),
    Unix(Cred),
}

/// A Unix-socket client's user and process, as SO_PEERCRED gives them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cred {
    pub uid: u32,
    pub pid: i32,
}

/// As users expect to read it: IPv4 clients of a dual-stack socket arrive as IPv4-mapped IPv6
/// (`[::ffff:1.2.3.4]:80`) and are shown as plain IPv4 (`1.2.3.4:80`); a Unix client as
/// `unix:uid=1000,pid=4242`.
impl fmt::Display for Peer {
    #[unsafe(link_section = ".text.hot.child")]
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Ip(addr) => match SocketAddr::new(addr.ip().to_canonical(), addr.port()) {
                SocketAddr::V4(v4) => crate::log::ipv4(&v4, f),
                v6 => v6.fmt(f),
            },
            Peer::Unix(Cred { uid, pid }) => write!(f, "unix:uid={uid},pid={pid}"),
        }
    }
}

/// How a connection reached forkecho, for the log lines that name its peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// Straight from the peer.
    Direct,
    /// Through a balancer at this address, whose PROXY header named the peer.
    Proxy(SocketAddr),
    /// A balancer's own connection (a PROXY header saying LOCAL: a health check, say); the peer
    /// is the balancer.
    Local,
}

/// A peer and how it came: `192.0.2.1:5000`, `192.0.2.1:5000 via=127.0.0.1:41000`,
/// `127.0.0.1:41000 proxy=local`: the value of `peer=`, and the field after it.
pub struct PeerVia(pub Peer, pub Via);

impl fmt::Display for PeerVia {
    #[unsafe(link_section = ".text.hot.child")]
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)?;
        match self.1 {
            Via::Direct => Ok(()),
            Via::Proxy(balancer) => write!(f, " via={}", Peer::Ip(balancer)),
            Via::Local => f.write_str(" proxy=local"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_mapped_peer_is_shown_as_ipv4() {
        let mapped: SocketAddr = "[::ffff:192.0.2.7]:4242".parse().unwrap();
        assert_eq!(Peer::Ip(mapped).to_string(), "192.0.2.7:4242");
    }

    #[test]
    fn real_ipv6_and_ipv4_peers_are_shown_unchanged() {
        let v6: SocketAddr = "[::1]:80".parse().unwrap();
        let v4: SocketAddr = "127.0.0.1:80".parse().unwrap();
        assert_eq!(Peer::Ip(v6).to_string(), "[::1]:80");
        assert_eq!(Peer::Ip(v4).to_string(), "127.0.0.1:80");
    }

    #[test]
    fn a_unix_peer_is_named_by_its_credentials() {
        let peer = Peer::Unix(Cred {
            uid: 1000,
            pid: 4242,
        });
        assert_eq!(peer.to_string(), "unix:uid=1000,pid=4242");
    }

    #[test]
    fn a_proxied_peer_names_its_balancer() {
        let client = Peer::Ip("[::ffff:192.0.2.1]:5000".parse().unwrap());
        let balancer: SocketAddr = "127.0.0.1:41000".parse().unwrap();
        assert_eq!(PeerVia(client, Via::Direct).to_string(), "192.0.2.1:5000");
        assert_eq!(
            PeerVia(client, Via::Proxy(balancer)).to_string(),
            "192.0.2.1:5000 via=127.0.0.1:41000"
        );
        assert_eq!(
            PeerVia(Peer::Ip(balancer), Via::Local).to_string(),
            "127.0.0.1:41000 proxy=local"
        );
    }
}
