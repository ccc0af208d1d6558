//! The PROXY protocol header itself (haproxy's doc/proxy-protocol.txt): what the first bytes of a
//! connection say, v1 (a text line) or v2 (binary), checked byte for byte. Pure parsing, no I/O:
//! the waiting room (`parent/proxy.rs`) peeks the bytes and takes the header off the socket.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// What the header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A proxied connection from this client.
    Client(SocketAddr),
    /// `LOCAL` (v2) or `UNKNOWN` (v1), or a family other than TCP over IPv4/IPv6: the balancer's
    /// own connection, a health check say. Served under the connection's address.
    Local,
}

/// What the bytes so far amount to.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A complete header of `len` bytes.
    Complete { source: Source, len: usize },
    /// A header's beginning, good so far.
    Incomplete,
    /// Not a header, or a broken one: why.
    Invalid(&'static str),
}

/// The v2 signature.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 header, CRLF included.
const V1_MAX: usize = 107;
/// The longest v2 header accepted: the 16 fixed bytes, the addresses, and TLVs up to this total
/// (HAProxy's own TLVs, unique id and SSL details, fit easily).
pub const V2_MAX: usize = 4096;

/// Parses the beginning of a connection.
pub fn parse(bytes: &[u8]) -> Parsed {
    if bytes.is_empty() {
        return Parsed::Incomplete;
    }
    let v1 = b"PROXY ";
    let prefix =
        |sig: &[u8]| bytes[..bytes.len().min(sig.len())] == sig[..bytes.len().min(sig.len())];
    if prefix(v1) {
        return parse_v1(bytes);
    }
    if prefix(V2_SIGNATURE) {
        return parse_v2(bytes);
    }
    Parsed::Invalid("no PROXY protocol header")
}

fn parse_v1(bytes: &[u8]) -> Parsed {
    // The line ends at its first LF, which must follow a CR: a bare LF is a broken header now,
    // not a reason to wait for a CRLF that will never come.
    if let Some(lf) = bytes.iter().position(|&b| b == b'\n')
        && (lf == 0 || bytes[lf - 1] != b'\r')
    {
        return Parsed::Invalid("v1 header ends in a bare LF");
    }
    let Some(end) = bytes.windows(2).position(|w| w == b"\r\n") else {
        return match bytes.len() >= V1_MAX {
            true => Parsed::Invalid("v1 header longer than 107 bytes"),
            false => Parsed::Incomplete,
        };
    };
    if end + 2 > V1_MAX {
        return Parsed::Invalid("v1 header longer than 107 bytes");
    }
    let Ok(line) = std::str::from_utf8(&bytes[..end]) else {
        return Parsed::Invalid("v1 header is not text");
    };
    let words: Vec<&str> = line.split(' ').collect();
    let len = end + 2;
    match words.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Parsed::Complete {
            source: Source::Local,
            len,
        },
        [
            "PROXY",
            family @ ("TCP4" | "TCP6"),
            source,
            destination,
            source_port,
            destination_port,
        ] => {
            // Both halves are checked alike: an address of the family named, and a port.
            let ip = |text: &str| -> Option<IpAddr> {
                match *family {
                    "TCP4" => text.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
                    _ => text.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
                }
            };
            let client = ip(source).zip(v1_port(source_port));
            let server = ip(destination).zip(v1_port(destination_port));
            match (client, server) {
                (Some((ip, port)), Some(_)) => Parsed::Complete {
                    source: Source::Client(SocketAddr::new(ip, port)),
                    len,
                },
                _ => Parsed::Invalid("v1 header with a bad address or port"),
            }
        }
        _ => Parsed::Invalid("malformed v1 header"),
    }
}

/// A v1 port: decimal, 1 to 65535, without sign or leading zeros (u16's parser would accept
/// "+1" and "01").
fn v1_port(text: &str) -> Option<u16> {
    let decimal = text.bytes().all(|b| b.is_ascii_digit()) && !text.starts_with('0');
    decimal.then(|| text.parse::<u16>().ok()).flatten()
}

/// A v2 port, big-endian: 0 is no TCP port, on either side.
fn v2_port(bytes: [u8; 2]) -> Option<u16> {
    Some(u16::from_be_bytes(bytes)).filter(|&port| port != 0)
}

fn parse_v2(bytes: &[u8]) -> Parsed {
    if bytes.len() < 16 {
        return Parsed::Incomplete;
    }
    let (version, command) = (bytes[12] >> 4, bytes[12] & 0x0f);
    if version != 2 {
        return Parsed::Invalid("v2 header with an unknown version");
    }
    let len = 16 + usize::from(u16::from_be_bytes([bytes[14], bytes[15]]));
    if len > V2_MAX {
        return Parsed::Invalid("v2 header longer than 4096 bytes");
    }
    if bytes.len() < len {
        return Parsed::Incomplete;
    }
    let body = &bytes[16..len];
    let source = match (command, bytes[13]) {
        (0, _) => Source::Local,
        (1, family @ (0x11 | 0x21)) if body.len() >= if family == 0x11 { 12 } else { 36 } => {
            // The addresses, then the source port and the destination port.
            let (ip, ports): (IpAddr, &[u8]) = match family {
                0x11 => {
                    let ip = <[u8; 4]>::try_from(&body[..4]).expect("4 bytes");
                    (Ipv4Addr::from(ip).into(), &body[8..12])
                }
                _ => {
                    let ip = <[u8; 16]>::try_from(&body[..16]).expect("16 bytes");
                    (Ipv6Addr::from(ip).into(), &body[32..36])
                }
            };
            match (v2_port([ports[0], ports[1]]), v2_port([ports[2], ports[3]])) {
                (Some(port), Some(_)) => Source::Client(SocketAddr::new(ip, port)),
                _ => return Parsed::Invalid("v2 header with port 0"),
            }
        }
        (1, 0x11 | 0x21) => return Parsed::Invalid("v2 header too short for its addresses"),
        // UNSPEC, UNIX, UDP: nothing forkecho can count a TCP client under.
        (1, _) => Source::Local,
        _ => return Parsed::Invalid("v2 header with an unknown command"),
    };
    Parsed::Complete { source, len }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(text: &str) -> Source {
        Source::Client(text.parse().unwrap())
    }

    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut header = V2_SIGNATURE.to_vec();
        header.push(0x20 | command);
        header.push(family);
        header.extend_from_slice(&(body.len() as u16).to_be_bytes());
        header.extend_from_slice(body);
        header
    }

    #[test]
    fn v1_headers_name_the_client_and_their_length() {
        let line = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nhello";
        assert_eq!(
            parse(line),
            Parsed::Complete {
                source: client("192.0.2.1:56324"),
                len: line.len() - 5
            }
        );
        let line = b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 7\r\n";
        assert_eq!(
            parse(line),
            Parsed::Complete {
                source: client("[2001:db8::1]:4000"),
                len: line.len()
            }
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n"),
            Parsed::Complete {
                source: Source::Local,
                len: 15
            }
        );
    }

    #[test]
    fn v1_beginnings_wait_and_bad_headers_are_named() {
        assert_eq!(parse(b"PRO"), Parsed::Incomplete);
        assert_eq!(parse(b"PROXY TCP4 192.0.2.1 19"), Parsed::Incomplete);
        for bad in [
            &b"PROXY TCP4 192.0.2.1 198.51.100.2 56324\r\n"[..],
            b"PROXY TCP4 2001:db8::1 198.51.100.2 1 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 65536 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 +1 2\r\n",
            b"PROXY UDP4 192.0.2.1 198.51.100.2 1 2\r\n",
            b"hello world\r\n",
            b"GET / HTTP/1.0\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 0 443\r\n",
            b"PROXY TCP4 192.0.2.1 \x1b[31mX 56324 443\r\n",
            b"PROXY TCP4 192.0.2.1 2001:db8::1 56324 443\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 0\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 +443\r\n",
        ] {
            assert!(
                matches!(parse(bad), Parsed::Invalid(_)),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 120]].concat();
        assert_eq!(
            parse(&long),
            Parsed::Invalid("v1 header longer than 107 bytes")
        );
    }

    #[test]
    fn v2_headers_name_the_client_and_skip_their_tlvs() {
        let mut body = vec![192, 0, 2, 1, 198, 51, 100, 2];
        body.extend_from_slice(&56324u16.to_be_bytes());
        body.extend_from_slice(&443u16.to_be_bytes());
        body.extend_from_slice(&[0x05, 0x00, 0x02, b'i', b'd']); // a TLV: unique id
        let header = v2(1, 0x11, &body);
        let mut with_data = header.clone();
        with_data.extend_from_slice(b"echo me");
        assert_eq!(
            parse(&with_data),
            Parsed::Complete {
                source: client("192.0.2.1:56324"),
                len: header.len()
            }
        );
        let mut body6 = Ipv6Addr::LOCALHOST.octets().to_vec();
        body6.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        body6.extend_from_slice(&[0x1f, 0x90, 0x00, 0x07]);
        assert_eq!(
            parse(&v2(1, 0x21, &body6)),
            Parsed::Complete {
                source: client("[::1]:8080"),
                len: 16 + 36
            }
        );
        // LOCAL: a health check, whatever follows.
        assert_eq!(
            parse(&v2(0, 0x00, &[])),
            Parsed::Complete {
                source: Source::Local,
                len: 16
            }
        );
        // AF_UNIX: no TCP client to count.
        assert_eq!(
            parse(&v2(1, 0x31, &[0; 216])),
            Parsed::Complete {
                source: Source::Local,
                len: 16 + 216
            }
        );
    }

    #[test]
    fn v2_beginnings_wait_and_bad_headers_are_named() {
        assert_eq!(parse(&V2_SIGNATURE[..5]), Parsed::Incomplete);
        let header = v2(1, 0x11, &[0; 12]);
        assert_eq!(parse(&header[..20]), Parsed::Incomplete);
        assert!(matches!(parse(&v2(1, 0x11, &[0; 4])), Parsed::Invalid(_)));
        assert!(matches!(parse(&v2(7, 0x11, &[0; 12])), Parsed::Invalid(_)));
        // Port 0, on either side.
        let mut ports = vec![192, 0, 2, 1, 198, 51, 100, 2, 0, 0, 1, 187];
        assert_eq!(
            parse(&v2(1, 0x11, &ports)),
            Parsed::Invalid("v2 header with port 0")
        );
        ports[8..12].copy_from_slice(&[1, 187, 0, 0]);
        assert_eq!(
            parse(&v2(1, 0x11, &ports)),
            Parsed::Invalid("v2 header with port 0")
        );
        let mut wrong_version = header.clone();
        wrong_version[12] = 0x11;
        assert!(matches!(parse(&wrong_version), Parsed::Invalid(_)));
        let mut huge = header;
        huge[14..16].copy_from_slice(&5000u16.to_be_bytes());
        assert_eq!(
            parse(&huge),
            Parsed::Invalid("v2 header longer than 4096 bytes")
        );
    }
}
