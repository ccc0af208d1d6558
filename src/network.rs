//! Addresses and the networks they are in: pure functions of addresses, for the per-source
//! grouping (`groups`), `--fault-on from:` (`faults`) and the control socket's `"from"`
//! (`parent/control.rs`).

use std::net::IpAddr;

/// `ip` with every bit past its first `len` cleared: the network of `ip`/`len`.
pub fn prefix(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4((v4.to_bits() & mask).into())
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6((v6.to_bits() & mask).into())
        }
    }
}

/// Whether `addr` is in `net`/`len` (an IPv4-mapped IPv6 address counts as IPv4).
pub fn in_network(addr: IpAddr, net: IpAddr, len: u8) -> bool {
    let addr = addr.to_canonical();
    addr.is_ipv4() == net.is_ipv4() && prefix(addr, len) == prefix(net, len)
}
