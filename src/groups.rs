//! How clients are grouped for the per-source limits (`--max-per-ip`, `--rate-per-ip`): by
//! address prefix (`--ipv4-prefix`, `--ipv6-prefix`), or, for a Unix-socket client, by user id.
//!
//! Pure functions of a peer: the parent's admission (`parent/limits.rs`, `crate::rate`) groups
//! TCP clients with them, and the UDP worker (`child/udp`) groups datagram sources; neither
//! keeps any state here.

use std::net::IpAddr;

use crate::network::prefix;
use crate::peer::Peer;

/// A group of clients counted together: an address prefix, or a Unix user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Key {
    Ip(IpAddr),
    Uid(u32),
}

/// How clients are grouped for `--max-per-ip` and `--rate-per-ip`: by the first `v4` bits of an
/// IPv4 address and the first `v6` bits of an IPv6 one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grouping {
    pub v4: u8,
    pub v6: u8,
}

impl Grouping {
    /// The group `peer` counts under: its address with the bits past the prefix cleared (IPv4
    /// clients of a dual-stack socket as the IPv4 address they are), or its user.
    pub fn key(&self, peer: Peer) -> Key {
        let addr = match peer {
            Peer::Ip(addr) => addr,
            Peer::Unix(cred) => return Key::Uid(cred.uid),
        };
        let ip = addr.ip().to_canonical();
        let len = match ip {
            IpAddr::V4(_) => self.v4,
            IpAddr::V6(_) => self.v6,
        };
        Key::Ip(prefix(ip, len))
    }

    /// How a group reads in a log line: the address, `prefix/len` when it is more than one, or
    /// `uid:N`.
    pub fn show(&self, peer: Peer) -> Group {
        let key = self.key(peer);
        let len = match key {
            Key::Ip(IpAddr::V4(_)) => self.v4,
            Key::Ip(IpAddr::V6(_)) => self.v6,
            Key::Uid(_) => 0,
        };
        Group { key, len }
    }
}

/// A group as a log line shows it (see `Grouping::show`).
pub struct Group {
    key: Key,
    len: u8,
}

impl std::fmt::Display for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.key, self.len) {
            (Key::Uid(uid), _) => write!(f, "uid:{uid}"),
            (Key::Ip(ip @ IpAddr::V4(_)), 32) | (Key::Ip(ip @ IpAddr::V6(_)), 128) => ip.fmt(f),
            (Key::Ip(ip), len) => write!(f, "{ip}/{len}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> Peer {
        Peer::Ip(text.parse().unwrap())
    }

    const EXACT: Grouping = Grouping { v4: 32, v6: 128 };
    const DEFAULT: Grouping = Grouping { v4: 32, v6: 64 };

    #[test]
    fn ipv6_clients_group_by_prefix_and_ipv4_ones_by_address() {
        let key = |g: Grouping, a: &str| match g.key(addr(a)) {
            Key::Ip(ip) => ip.to_string(),
            Key::Uid(uid) => panic!("an address grouped as uid {uid}"),
        };
        assert_eq!(key(DEFAULT, "[2001:db8:1:2:aaaa::1]:5"), "2001:db8:1:2::");
        assert_eq!(key(DEFAULT, "[2001:db8:1:2:bbbb::9]:6"), "2001:db8:1:2::");
        assert_ne!(key(DEFAULT, "[2001:db8:1:3::1]:5"), "2001:db8:1:2::");
        assert_eq!(key(DEFAULT, "192.0.2.77:5"), "192.0.2.77");
        assert_eq!(key(DEFAULT, "[::ffff:192.0.2.77]:5"), "192.0.2.77");
        let wide = Grouping { v4: 24, v6: 48 };
        assert_eq!(key(wide, "192.0.2.77:5"), "192.0.2.0");
        assert_eq!(key(wide, "[2001:db8:1:2::1]:5"), "2001:db8:1::");
        let all = Grouping { v4: 0, v6: 0 };
        assert_eq!(key(all, "192.0.2.77:5"), "0.0.0.0");
        assert_eq!(key(all, "[2001:db8::1]:5"), "::");
        assert_eq!(key(EXACT, "[2001:db8::1]:5"), "2001:db8::1");
        assert_eq!(
            DEFAULT.show(addr("[2001:db8::1]:5")).to_string(),
            "2001:db8::/64"
        );
        assert_eq!(DEFAULT.show(addr("192.0.2.1:5")).to_string(), "192.0.2.1");
        assert_eq!(wide.show(addr("192.0.2.1:5")).to_string(), "192.0.2.0/24");
    }
}
