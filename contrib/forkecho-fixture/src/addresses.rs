//! Where a started forkecho serves, read from its readiness lines: the lines it writes to stdout
//! at the moment it serves (`listening on ADDR...`, `listening on udp ADDR...`, `metrics on
//! http://ADDR/metrics`), after which its stdout reaches its end. Written by `start`, read by
//! `Forkecho`'s address methods; public for harnesses that spawn forkecho themselves.

use std::net::SocketAddr;
use std::path::PathBuf;

/// The addresses of forkecho's readiness lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Addresses {
    /// The TCP listeners on IP addresses, in the order the line lists them.
    pub tcp: Vec<SocketAddr>,
    /// The Unix socket listeners: a path, or an abstract name as `@name`.
    pub unix: Vec<PathBuf>,
    /// The UDP sockets (`--udp`, `--udp-only`).
    pub udp: Vec<SocketAddr>,
    /// Where metrics are served (`--metrics`).
    pub metrics: Option<SocketAddr>,
}

impl Addresses {
    /// Reads the readiness lines; an error quotes what came instead.
    ///
    /// ```
    /// let text = "listening on 127.0.0.1:4000 unix:/tmp/fe.sock\n\
    ///             listening on udp 127.0.0.1:4000\n";
    /// let addrs = forkecho_fixture::Addresses::parse(text).unwrap();
    /// assert_eq!(addrs.tcp, ["127.0.0.1:4000".parse().unwrap()]);
    /// assert_eq!(addrs.udp, addrs.tcp);
    /// assert_eq!(addrs.unix, [std::path::PathBuf::from("/tmp/fe.sock")]);
    /// ```
    pub fn parse(text: &str) -> Result<Addresses, String> {
        let mut found = Addresses::default();
        let wrong = || format!("not forkecho's readiness lines: {text:?}");
        if text.is_empty() {
            return Err(wrong());
        }
        for line in text.lines() {
            if let Some(url) = line.strip_prefix("metrics on http://") {
                let addr = url.strip_suffix("/metrics").ok_or_else(wrong)?;
                found.metrics = Some(addr.parse().map_err(|_| wrong())?);
                continue;
            }
            let listed = line.strip_prefix("listening on ").ok_or_else(wrong)?;
            let (udp, listed) = match listed.strip_prefix("udp ") {
                Some(rest) => (true, rest),
                None => (false, listed),
            };
            for addr in listed.split(' ') {
                match (addr.strip_prefix("unix:"), udp) {
                    (Some(name), false) => found.unix.push(PathBuf::from(name)),
                    (None, true) => found.udp.push(addr.parse().map_err(|_| wrong())?),
                    (None, false) => found.tcp.push(addr.parse().map_err(|_| wrong())?),
                    (Some(_), true) => return Err(wrong()),
                }
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_forkecho_writes_is_read() {
        let text = "listening on 127.0.0.1:9 [::1]:9 unix:@fe\nlistening on udp [::1]:9\n\
                    metrics on http://127.0.0.1:10/metrics\n";
        let found = Addresses::parse(text).unwrap();
        assert_eq!(found.tcp.len(), 2);
        assert_eq!(found.unix, [PathBuf::from("@fe")]);
        assert_eq!(found.udp, ["[::1]:9".parse().unwrap()]);
        assert_eq!(found.metrics, Some("127.0.0.1:10".parse().unwrap()));
        for bad in ["", "error: --port: bad\n", "listening on nowhere\n"] {
            assert!(Addresses::parse(bad).is_err(), "{bad:?}");
        }
    }
}
