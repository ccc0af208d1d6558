//! The packets of a dump: IP and TCP or UDP headers made up around the bytes a child read and
//! wrote, so that a capture tool sees the conversation it was. Only the headers are invented:
//! the addresses and ports are the connection's, the payload is exactly what crossed, and the
//! sequence numbers count it, so Wireshark's `Follow TCP Stream` and `tcp.payload` put it back
//! together. Written by `Recorder` (`child::dump`) into its file; read by nobody else.
//!
//! Raw IP (pcapng link type 101: no link-layer header), IPv4 or IPv6 by the version nibble; both
//! ends in one family (an IPv4 client of a dual-stack socket is shown as IPv4). Checksums are
//! right, so no tool flags them.

use super::gather::Gather;

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// The most payload one packet carries: a read or write larger than this is several segments
/// (an IP packet's length field has 16 bits).
pub const MOST: usize = 65_000;

/// TCP flags.
pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

const TCP: u8 = 6;
const UDP: u8 = 17;

/// The headers' lengths: TCP without options, UDP.
pub const TCP_HEADER: usize = 20;
pub const UDP_HEADER: usize = 8;

/// The length of a packet from `from` with a `header` of that length and `payload` bytes.
pub fn length(from: SocketAddr, header: usize, payload: usize) -> usize {
    let ip = if from.is_ipv4() { 20 } else { 40 };
    ip + header + payload
}

/// Both ends in one family: an IPv4 end beside an IPv6 one is written IPv4-mapped, but an
/// IPv4-mapped end (a dual-stack socket's IPv4 client) is written as the IPv4 address it is.
pub fn same_family(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    let canonical = |s: SocketAddr| SocketAddr::new(s.ip().to_canonical(), s.port());
    let mapped = |s: SocketAddr| SocketAddr::new(IpAddr::V6(v6(s.ip())), s.port());
    let (a, b) = (canonical(a), canonical(b));
    match (a.is_ipv4(), b.is_ipv4()) {
        (true, false) => (mapped(a), b),
        (false, true) => (a, mapped(b)),
        _ => (a, b),
    }
}

/// One TCP segment from `from` to `to`, appended to `out`: headers, then `payload`.
pub fn tcp(
    out: &mut Gather,
    (from, to): (SocketAddr, SocketAddr),
    (seq, ack, flags): (u32, u32, u8),
    payload: &[u8],
) {
    let mut header = [0u8; TCP_HEADER];
    header[0..2].copy_from_slice(&from.port().to_be_bytes());
    header[2..4].copy_from_slice(&to.port().to_be_bytes());
    header[4..8].copy_from_slice(&seq.to_be_bytes());
    let ack = if flags & ACK != 0 { ack } else { 0 };
    header[8..12].copy_from_slice(&ack.to_be_bytes());
    header[12] = 5 << 4;
    header[13] = flags;
    // The window: as large as the field holds, so no tool calls the receiver's window full.
    header[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
    packet(out, (from.ip(), to.ip()), TCP, &header, payload);
}

/// One UDP datagram from `from` to `to`, appended to `out`.
pub fn udp(out: &mut Gather, (from, to): (SocketAddr, SocketAddr), payload: &[u8]) {
    let mut header = [0u8; UDP_HEADER];
    header[0..2].copy_from_slice(&from.port().to_be_bytes());
    header[2..4].copy_from_slice(&to.port().to_be_bytes());
    let len = (8 + payload.len()).min(usize::from(u16::MAX)) as u16;
    header[4..6].copy_from_slice(&len.to_be_bytes());
    packet(out, (from.ip(), to.ip()), UDP, &header, payload);
}

/// The IP header, then `header` (TCP or UDP, its checksum filled in here), then `payload`.
fn packet(
    out: &mut Gather,
    (from, to): (IpAddr, IpAddr),
    proto: u8,
    header: &[u8],
    payload: &[u8],
) {
    let len = header.len() + payload.len();
    let mut sum = Checksum::default();
    match (from, to) {
        (IpAddr::V4(from), IpAddr::V4(to)) => {
            let mut ip = [0u8; 20];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&((20 + len) as u16).to_be_bytes());
            // Don't fragment; time to live 64.
            ip[6] = 0x40;
            ip[8] = 64;
            ip[9] = proto;
            ip[12..16].copy_from_slice(&from.octets());
            ip[16..20].copy_from_slice(&to.octets());
            let mut own = Checksum::default();
            own.add(&ip);
            ip[10..12].copy_from_slice(&own.finish().to_be_bytes());
            out.extend_from_slice(&ip);
            sum.add(&from.octets());
            sum.add(&to.octets());
        }
        (from, to) => {
            let (from, to) = (v6(from), v6(to));
            let mut ip = [0u8; 40];
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&(len as u16).to_be_bytes());
            ip[6] = proto;
            ip[7] = 64;
            ip[8..24].copy_from_slice(&from.octets());
            ip[24..40].copy_from_slice(&to.octets());
            out.extend_from_slice(&ip);
            sum.add(&from.octets());
            sum.add(&to.octets());
        }
    }
    // The pseudo-header's protocol and length, then the header and payload themselves.
    sum.add(&[0, proto]);
    sum.add(&(len as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(header);
    out.extend_from_slice(payload);
    sum.add(&out[start..out.len()]);
    let at = start + if proto == TCP { 16 } else { 6 };
    let mut checksum = sum.finish();
    if proto == UDP && checksum == 0 {
        // UDP's zero means "no checksum": a real zero is sent as all ones.
        checksum = 0xffff;
    }
    out[at..at + 2].copy_from_slice(&checksum.to_be_bytes());
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// The Internet checksum (RFC 1071), over pieces added in order (each of even length but the
/// last).
#[derive(Default)]
struct Checksum(u64);

impl Checksum {
    fn add(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(2);
        for word in &mut words {
            self.0 += u64::from(u16::from_be_bytes([word[0], word[1]]));
        }
        if let [last] = words.remainder() {
            self.0 += u64::from(*last) << 8;
        }
    }

    fn finish(&self) -> u16 {
        let mut sum = self.0;
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum_of(bytes: &[u8]) -> u16 {
        let mut sum = Checksum::default();
        sum.add(bytes);
        sum.finish()
    }

    #[test]
    fn an_ipv4_segment_checks_out() {
        let mut out = Gather::new().unwrap();
        let ends = (
            "127.0.0.1:40000".parse().unwrap(),
            "127.0.0.2:7".parse().unwrap(),
        );
        tcp(&mut out, ends, (1000, 2000, PSH | ACK), b"hello");
        let out = out.as_slice().to_vec();
        assert_eq!(out.len(), 20 + 20 + 5);
        assert_eq!(out[0], 0x45);
        assert_eq!(u16::from_be_bytes([out[2], out[3]]), 45);
        // A header with its checksum in sums to zero.
        assert_eq!(sum_of(&out[..20]), 0);
        // The TCP checksum over the pseudo-header and the segment sums to zero too.
        let mut pseudo = out[12..20].to_vec();
        pseudo.extend_from_slice(&[0, TCP, 0, 25]);
        pseudo.extend_from_slice(&out[20..]);
        assert_eq!(sum_of(&pseudo), 0);
        assert_eq!(&out[40..], b"hello");
        assert_eq!(u32::from_be_bytes(out[24..28].try_into().unwrap()), 1000);
        assert_eq!(u32::from_be_bytes(out[28..32].try_into().unwrap()), 2000);
    }

    #[test]
    fn an_ipv6_datagram_checks_out() {
        let mut out = Gather::new().unwrap();
        let ends = ("[::1]:5000".parse().unwrap(), "[::1]:7".parse().unwrap());
        udp(&mut out, ends, b"odd");
        let out = out.as_slice().to_vec();
        assert_eq!(out.len(), 40 + 8 + 3);
        assert_eq!(out[0] >> 4, 6);
        let mut pseudo = out[8..40].to_vec();
        pseudo.extend_from_slice(&[0, 0, 0, 11, 0, 0, 0, UDP]);
        pseudo.extend_from_slice(&out[40..]);
        assert_eq!(sum_of(&pseudo), 0);
    }

    #[test]
    fn mixed_families_become_one() {
        let v4: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:2".parse().unwrap();
        let (a, b) = same_family(mapped, v4);
        assert!(a.is_ipv4() && b.is_ipv4());
        let v6: SocketAddr = "[::1]:3".parse().unwrap();
        let (a, b) = same_family(v4, v6);
        assert!(a.is_ipv6() && b.is_ipv6());
        assert_eq!(b, v6);
    }
}
