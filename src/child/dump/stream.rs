//! `Dumped`: a connection's stream that records what crosses it. Every echo path reads and
//! writes through the `Conn` and `Shapeable` traits, so wrapping the stream records them all: the
//! copying and shaped echo of a socket, the plaintext of a TLS session, the bytes under a
//! WebSocket session. Splice moves bytes the child never sees: a dumped connection is echoed
//! through a buffer (`echo::echo_unspliced`). Made by `connection::serve`, which owns the
//! `Recorder`; read by nothing else.

use std::io::{self, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use super::recorder::Recorder;
use crate::child::echo::shapeable::Shapeable;
use crate::child::echo::stall::Conn;

/// `inner`, recording each read and write in `recorder`.
pub struct Dumped<'a, S> {
    pub inner: &'a mut S,
    pub recorder: &'a mut Recorder,
}

impl<S> Dumped<'_, S> {
    fn read_was(&mut self, result: io::Result<usize>, buf: &[u8]) -> io::Result<usize> {
        match &result {
            Ok(0) if !buf.is_empty() => self.recorder.client_ended(false),
            Ok(n) => self.recorder.read(&buf[..*n]),
            Err(err) if err.kind() == ErrorKind::ConnectionReset => {
                self.recorder.client_ended(true)
            }
            Err(_) => {}
        }
        result
    }

    fn wrote(&mut self, result: io::Result<usize>, data: &[u8]) -> io::Result<usize> {
        if let Ok(n) = result {
            self.recorder.wrote(&data[..n]);
        }
        result
    }
}

impl<S: Read> Read for Dumped<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let result = self.inner.read(buf);
        self.read_was(result, buf)
    }
}

impl<S: Write> Write for Dumped<'_, S> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let result = self.inner.write(data);
        self.wrote(result, data)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<S: Conn> Conn for Dumped<'_, S> {
    fn write_now(&mut self, data: &[u8]) -> io::Result<usize> {
        let result = self.inner.write_now(data);
        self.wrote(result, data)
    }

    fn wait_writable(&mut self, timeout: Option<Duration>) -> io::Result<bool> {
        self.inner.wait_writable(timeout)
    }
}

impl<S: Shapeable> Shapeable for Dumped<'_, S> {
    fn socket(&self) -> &TcpStream {
        self.inner.socket()
    }

    fn read_now(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let result = self.inner.read_now(buf);
        self.read_was(result, buf)
    }

    fn holds_input(&mut self) -> bool {
        self.inner.holds_input()
    }

    fn holds_output(&self) -> bool {
        self.inner.holds_output()
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::fd::IntoRawFd;
    use std::sync::atomic::Ordering;

    use pcap_file::pcapng::{Block, PcapNgReader};

    use super::*;
    use crate::child::dump::settings::{Dump, DumpCounts};

    /// A peer that hands out `input` and takes at most `most` bytes a write.
    struct Stingy {
        input: &'static [u8],
        taken: Vec<u8>,
        most: usize,
    }

    impl Read for Stingy {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.input.len());
            buf[..n].copy_from_slice(&self.input[..n]);
            self.input = &self.input[n..];
            Ok(n)
        }
    }

    impl Write for Stingy {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            let n = data.len().min(self.most);
            self.taken.extend_from_slice(&data[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Conn for Stingy {}

    #[test]
    fn a_write_taken_in_part_is_recorded_as_the_part_taken() {
        let dir = std::env::temp_dir().join(format!("forkecho-dumped-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let fd = nix::fcntl::open(
            &dir,
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY,
            nix::sys::stat::Mode::empty(),
        )
        .unwrap();
        let counts: &'static DumpCounts = Box::leak(Box::default());
        let dump = Dump {
            dir: fd.into_raw_fd(),
            limit: 1 << 20,
            counts,
        };
        let ends = (
            "127.0.0.1:4000".parse().unwrap(),
            "127.0.0.1:7".parse().unwrap(),
        );
        let mut recorder = Recorder::tcp(&dump, 1, "127.0.0.1:4000", ends).unwrap();
        let mut peer = Stingy {
            input: b"hello, world",
            taken: Vec::new(),
            most: 5,
        };
        let mut dumped = Dumped {
            inner: &mut peer,
            recorder: &mut recorder,
        };
        let mut buf = [0u8; 64];
        let n = dumped.read(&mut buf).unwrap();
        let mut done = 0;
        while done < n {
            done += dumped.write_now(&buf[done..n]).unwrap();
        }
        assert_eq!(dumped.read(&mut buf).unwrap(), 0);
        let (name, _) = recorder.finish(false);
        assert_eq!(peer.taken, b"hello, world");
        assert_eq!(counts.files.load(Ordering::Relaxed), 1);
        let file = std::fs::File::open(dir.join(name.as_str())).unwrap();
        let mut reader = PcapNgReader::new(file).unwrap();
        let mut payloads = Vec::new();
        while let Some(block) = reader.next_block() {
            if let Block::EnhancedPacket(packet) = block.unwrap() {
                // Raw IPv4, 20 bytes of IP and 20 of TCP.
                payloads.push(packet.data[40..].to_vec());
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
        let sent = payloads.iter().map(Vec::as_slice).filter(|p| !p.is_empty());
        let sent: Vec<&[u8]> = sent.collect();
        // The read whole, then each write as the part the peer took.
        assert_eq!(sent, [&b"hello, world"[..], b"hello", b", wor", b"ld"]);
    }
}
