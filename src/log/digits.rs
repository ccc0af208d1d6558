//! Numbers, durations and IPv4 addresses in decimal, written by hand for the lines every
//! connection logs (accept and close): core's integer and address formatting is code and tables
//! (`pad_integral`, the table of digit pairs) that a child would fault in for its close line
//! alone, a page fault (some 2 µs, with the unmapping at exit) each. Used by the log lines'
//! `Display` impls (`Secs` here, `peer::Peer`) and the accept and close lines; nothing is kept.

use std::fmt::{self, Write as _};
use std::net::SocketAddrV4;
use std::time::Duration;

/// A `u64` in decimal, as `{}` writes it.
pub struct Dec(pub u64);

impl fmt::Display for Dec {
    #[unsafe(link_section = ".text.hot.child")]
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write(f, self.0, 1)
    }
}

/// Writes `value` to `f` in decimal, zero-padded to at least `width` digits.
#[unsafe(link_section = ".text.hot.child")]
pub fn write(f: &mut fmt::Formatter<'_>, value: u64, width: usize) -> fmt::Result {
    f.write_str(digits(value, width, &mut [0; 20]))
}

/// `value` in decimal, zero-padded to at least `width` digits (at most 20), at the end of `buf`.
#[unsafe(link_section = ".text.hot.child")]
pub fn digits(mut value: u64, width: usize, buf: &mut [u8; 20]) -> &str {
    let mut at = buf.len();
    let least = buf.len() - width.clamp(1, buf.len());
    while value > 0 || at > least {
        at -= 1;
        buf[at] = b'0' + (value % 10) as u8;
        value /= 10;
    }
    // SAFETY: buf[at..] holds ASCII digits only.
    unsafe { std::str::from_utf8_unchecked(&buf[at..]) }
}

/// `a.b.c.d:port`, as `SocketAddrV4`'s `{}` writes it.
#[unsafe(link_section = ".text.hot.child")]
pub fn ipv4(addr: &SocketAddrV4, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    for (i, octet) in addr.ip().octets().into_iter().enumerate() {
        if i > 0 {
            f.write_char('.')?;
        }
        write(f, u64::from(octet), 1)?;
    }
    f.write_char(':')?;
    write(f, u64::from(addr.port()), 1)
}

/// A duration in seconds with millisecond precision: `0.412s`.
pub struct Secs(pub Duration);

impl fmt::Display for Secs {
    /// In 64-bit integers: float formatting (and 128-bit division) is code, and tables, a child
    /// would fault in for this alone.
    #[unsafe(link_section = ".text.hot.child")]
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis =
            self.0.as_secs() * 1000 + u64::from(self.0.subsec_nanos() + 500_000) / 1_000_000;
        write(f, millis / 1000, 1)?;
        f.write_char('.')?;
        write(f, millis % 1000, 3)?;
        f.write_char('s')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_addresses_read_as_core_writes_them() {
        for n in [0, 7, 10, 999, 1000, 4_294_967_296, u64::MAX] {
            assert_eq!(Dec(n).to_string(), n.to_string());
        }
        assert_eq!(digits(7, 3, &mut [0; 20]), "007");
        assert_eq!(digits(1234, 3, &mut [0; 20]), "1234");
        assert_eq!(digits(0, 0, &mut [0; 20]), "0");
        struct V4(SocketAddrV4);
        impl fmt::Display for V4 {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                ipv4(&self.0, f)
            }
        }
        for addr in [
            "0.0.0.0:0",
            "127.0.0.1:80",
            "255.255.255.255:65535",
            "10.0.20.3:4242",
        ] {
            let addr: SocketAddrV4 = addr.parse().unwrap();
            assert_eq!(V4(addr).to_string(), addr.to_string());
        }
    }

    #[test]
    fn secs_shows_milliseconds() {
        assert_eq!(Secs(Duration::from_millis(412)).to_string(), "0.412s");
        assert_eq!(Secs(Duration::from_secs(61)).to_string(), "61.000s");
        assert_eq!(Secs(Duration::from_micros(1_999_500)).to_string(), "2.000s");
        assert_eq!(Secs(Duration::from_micros(499)).to_string(), "0.000s");
    }
}
