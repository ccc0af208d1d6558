//! `--inband`: a connection may ask for its own faults with a first line
//! `FORKECHO <flags>\r\n` (`FORKECHO --delay 50 --chunk 1\r\n`), so one shared server serves
//! many parallel tests that each want different faults.
//!
//! Read the way the PROXY header is (after it, when both are on): the child peeks at what the
//! client sent first, and only a line that begins `FORKECHO ` is taken off the stream; it is
//! never echoed. The flags are the command line's fault options, read by the same parser
//! (`settings::faults_from_flags`); that connection alone gets them, in place of the server's.
//! A connection that begins otherwise is served as configured, with nothing taken. A malformed
//! line is answered with one line, `FORKECHO error: …\r\n`, and the connection is closed.
//!
//! Written and read by the connection's child alone.

use std::io::{self, ErrorKind};
use std::net::TcpStream;
use std::os::fd::AsRawFd;

use nix::sys::socket::{MsgFlags, recv, send};

use crate::faults::Faults;

/// What a line must begin with.
const PREFIX: &[u8] = b"FORKECHO ";
/// The longest line, `\r\n` included.
pub const LINE_MAX: usize = 512;

/// What the connection's first bytes said.
#[derive(Debug)]
pub enum Asked {
    /// No `FORKECHO` line: serve as configured.
    Nothing,
    /// These faults for this connection (None: `FORKECHO` with no fault: none at all).
    Faults(Option<Box<Faults>>),
    /// A malformed line (answered and to be closed), or the client left first: why.
    Refused(String),
}

/// Reads the connection's first line if it is a `FORKECHO` line (waiting, within the socket's
/// receive timeout, only as long as the bytes so far could still begin one).
pub fn take(socket: &TcpStream) -> io::Result<Asked> {
    let mut buf = [0u8; LINE_MAX];
    let mut want = 1;
    let line = loop {
        // Waits until `want` bytes are there (or the end, or the idle timeout), and takes none.
        let flags = MsgFlags::MSG_PEEK | MsgFlags::MSG_WAITALL;
        let got = match recv(socket.as_raw_fd(), &mut buf[..want], flags) {
            Ok(0) => return Ok(Asked::Nothing),
            Ok(got) => got,
            Err(nix::errno::Errno::EINTR) if !super::stop::requested() => continue,
            Err(errno) => return Err(errno.into()),
        };
        let seen = &buf[..got];
        let prefix = got.min(PREFIX.len());
        if seen[..prefix] != PREFIX[..prefix] {
            return Ok(Asked::Nothing);
        }
        if let Some(at) = seen.windows(2).position(|w| w == b"\r\n") {
            break at + 2;
        }
        if got < want {
            // The client closed or sent less, then stopped: it is not a line.
            return Ok(Asked::Nothing);
        }
        if got == LINE_MAX {
            return refuse(
                socket,
                format!("a FORKECHO line is at most {LINE_MAX} bytes"),
            );
        }
        want = got + 1;
    };
    // Take the line off the stream: it was all there.
    let mut taken = 0;
    while taken < line {
        match recv(socket.as_raw_fd(), &mut buf[taken..line], MsgFlags::empty()) {
            Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
            Ok(n) => taken += n,
            Err(nix::errno::Errno::EINTR) => {}
            Err(errno) => return Err(errno.into()),
        }
    }
    let text = match std::str::from_utf8(&buf[PREFIX.len()..line - 2]) {
        Ok(text) => text,
        Err(_) => return refuse(socket, "the FORKECHO line is not UTF-8".into()),
    };
    match parse(text) {
        Ok(faults) => Ok(Asked::Faults(faults.map(Box::new))),
        Err(why) => refuse(socket, why),
    }
}

/// The faults a line's flags ask for: `--name value` or `--name=value` pairs.
fn parse(text: &str) -> Result<Option<Faults>, String> {
    let words: Vec<&str> = text.split_ascii_whitespace().collect();
    crate::cli::faults_from_flags(&crate::cli::fault_flags(&words)?)
}

/// Answers a malformed line with one error line.
fn refuse(socket: &TcpStream, why: String) -> io::Result<Asked> {
    let line = format!("FORKECHO error: {why}\r\n");
    let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
    let _ = send(socket.as_raw_fd(), line.as_bytes(), flags);
    Ok(Asked::Refused(why))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_s_flags_are_the_command_line_s() {
        let faults = parse("--delay 50 --chunk=1").unwrap().unwrap();
        assert_eq!(faults.chunk.map(|c| c.size), Some(1));
        assert!(faults.delay.is_some());
        assert_eq!(parse("").unwrap(), None);
        assert!(parse("--delay").unwrap_err().contains("needs a value"));
        assert!(parse("delay 5").unwrap_err().contains("expected --FAULT"));
        assert!(parse("--loss 0.1").unwrap_err().contains("is no fault"));
        assert!(parse("--delay soon").unwrap_err().contains("'soon'"));
    }
}
