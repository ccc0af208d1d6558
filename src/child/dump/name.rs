//! A dump file's name, made without allocating (a forked child's malloc touches pages it shares
//! with the parent): `conn-7_127.0.0.1-40112_20261206T101500.123Z.pcapng`, the connection's
//! number, its client as the log names it (a port after a dash, no brackets, nothing a shell
//! would trip on) and the time to the millisecond; the UDP worker's is `udp-TIME-pidN.pcapng`.
//! Made by `Recorder`, which opens the file under it and hands it to the close line.

use std::fmt::{self, Write};

use crate::log::time::Stamp;

/// A name in a fixed buffer (longer ones are cut).
#[derive(Clone, Copy)]
pub struct Name {
    buf: [u8; 160],
    len: usize,
}

impl Name {
    fn empty() -> Name {
        Name {
            buf: [0; 160],
            len: 0,
        }
    }

    /// A TCP connection's: number `serial`, client `peer`, made now.
    pub fn connection(serial: u32, peer: impl fmt::Display) -> Name {
        let mut name = Name::empty();
        let _ = write!(name, "conn-{serial}_");
        let start = name.len;
        let _ = write!(name, "{peer}");
        name.word(start);
        name.push(b'_');
        name.time(&Stamp::now());
        name
    }

    /// The UDP worker's, for process `pid`.
    pub fn udp(pid: u32) -> Name {
        let mut name = Name::empty();
        let _ = write!(name, "udp-");
        name.time(&Stamp::now());
        let _ = write!(name, "-pid{pid}");
        name
    }

    /// This name with `-N` added before the extension (a second try after a clash).
    pub fn numbered(&self, n: u32) -> Name {
        let mut name = *self;
        let _ = write!(name, "-{n}");
        name
    }

    /// The file's name: this and `.pcapng`.
    pub fn file(&self) -> Name {
        let mut name = *self;
        let _ = name.write_str(".pcapng");
        name
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("dump")
    }

    fn push(&mut self, byte: u8) {
        if self.len < self.buf.len() {
            self.buf[self.len] = byte;
            self.len += 1;
        }
    }

    /// Makes what follows `start` (a peer as the log shows it) a word: `[::1]:80` → `::1-80`,
    /// `127.0.0.1:80` → `127.0.0.1-80`, `unix:uid=1000,pid=42` → `unix-uid-1000-pid-42`.
    fn word(&mut self, start: usize) {
        let unix = self.buf[start..self.len].starts_with(b"unix:");
        let port = (!unix)
            .then(|| self.buf[start..self.len].iter().rposition(|&b| b == b':'))
            .flatten();
        let mut out = start;
        for at in start..self.len {
            let byte = match self.buf[at] {
                b'[' | b']' => continue,
                b':' if unix || Some(at - start) == port => b'-',
                b'=' | b',' | b'/' | b' ' => b'-',
                byte => byte,
            };
            self.buf[out] = byte;
            out += 1;
        }
        self.len = out;
    }

    /// `2026-12-06T10:15:00.123456Z` as `20261206T101500.123Z`.
    fn time(&mut self, stamp: &Stamp) {
        let text = stamp.as_str().as_bytes();
        let cut = text.len().saturating_sub(4);
        for &byte in &text[..cut] {
            if byte != b'-' && byte != b':' {
                self.push(byte);
            }
        }
        self.push(b'Z');
    }
}

impl Write for Name {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &byte in s.as_bytes() {
            self.push(byte);
        }
        Ok(())
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn word(peer: &str) -> String {
        let mut name = Name::empty();
        let _ = name.write_str(peer);
        name.word(0);
        name.as_str().to_string()
    }

    #[test]
    fn names_read_as_the_peer_and_the_time() {
        assert_eq!(word("127.0.0.1:40112"), "127.0.0.1-40112");
        assert_eq!(word("[::1]:40112"), "::1-40112");
        assert_eq!(word("unix:uid=1000,pid=4242"), "unix-uid-1000-pid-4242");
        let mut name = Name::empty();
        name.time(&Stamp::at(1_765_016_100, 123_456));
        assert_eq!(name.as_str(), "20251206T101500.123Z");
        let name = Name::connection(7, "127.0.0.1:40112").numbered(2).file();
        assert!(name.as_str().starts_with("conn-7_127.0.0.1-40112_"));
        assert!(name.as_str().ends_with("Z-2.pcapng"), "{name}");
    }
}
