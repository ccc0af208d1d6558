//! The stream a WebSocket session runs on: the connection's socket or its TLS session, written
//! the way tungstenite expects (a write that blocks until it moves bytes) but timed as every
//! echo path is: a client that takes none of the echo for `--idle-timeout` ends the session as a
//! write timeout. Reads wait as the socket's SO_RCVTIMEO says, which `read_within` shortens for
//! the server's own pings and time-triggered limits. With `--websocket-no-pong`, once the pongs
//! are to stop, the frames written are followed one by one and the pongs among them dropped
//! (tungstenite queues a pong for every ping and offers no way not to). Written and read by
//! `websocket` alone.

use std::io::{self, ErrorKind, Read, Write};
use std::time::Duration;

use super::super::echo::shapeable::Shapeable;
use super::super::stop;

/// A `Shapeable` stream (a socket, a TLS session) whose writes wait.
pub struct Waiting<'a, S: Shapeable> {
    inner: &'a mut S,
    /// `--idle-timeout`: how long a write may find no room (None: no limit).
    timeout: Option<Duration>,
    /// Set when a write found no room for the whole timeout.
    pub write_timed_out: bool,
    /// Where the frames written stand, once pongs are dropped (None: every byte goes).
    pongs_dropped: Option<Frames>,
    /// The read timeout last set (SO_RCVTIMEO), so an unchanged one costs no system call.
    read_timeout: Option<Option<Duration>>,
}

/// Where the server's frames written so far stand: in a header (its bytes so far), or in a
/// payload (the bytes left of it, and whether it is a pong's).
enum Frames {
    Header(Vec<u8>),
    Payload { left: u64, pong: bool },
}

impl Frames {
    /// The bytes of `data` to write: all but the pongs' frames.
    fn filter(&mut self, data: &[u8]) -> Vec<u8> {
        let mut kept = Vec::with_capacity(data.len());
        let mut at = 0;
        while at < data.len() {
            match self {
                Frames::Header(head) => {
                    head.push(data[at]);
                    at += 1;
                    if let Some(len) = payload_len(head) {
                        let pong = head[0] & 0x0f == 0x0a;
                        if !pong {
                            kept.extend_from_slice(head);
                        }
                        *self = match len {
                            0 => Frames::Header(Vec::new()),
                            left => Frames::Payload { left, pong },
                        };
                    }
                }
                Frames::Payload { left, pong } => {
                    let n = (*left).min((data.len() - at) as u64) as usize;
                    if !*pong {
                        kept.extend_from_slice(&data[at..at + n]);
                    }
                    at += n;
                    *left -= n as u64;
                    if *left == 0 {
                        *self = Frames::Header(Vec::new());
                    }
                }
            }
        }
        kept
    }
}

/// A whole header's payload length (an unmasked server frame's), or None until it is whole.
fn payload_len(head: &[u8]) -> Option<u64> {
    let extended = match head.get(1)? & 0x7f {
        126 => 2,
        127 => 8,
        len => return Some(u64::from(len)),
    };
    let bytes = head.get(2..2 + extended)?;
    Some(bytes.iter().fold(0, |len, &b| (len << 8) | u64::from(b)))
}

impl<'a, S: Shapeable> Waiting<'a, S> {
    pub fn new(inner: &'a mut S, timeout: Duration) -> Waiting<'a, S> {
        Waiting {
            inner,
            timeout: (!timeout.is_zero()).then_some(timeout),
            write_timed_out: false,
            pongs_dropped: None,
            read_timeout: None,
        }
    }

    /// From now on, pongs are not written. Called between frames (every frame before is out).
    pub fn drop_pongs(&mut self) {
        self.pongs_dropped.get_or_insert(Frames::Header(Vec::new()));
    }

    /// Writes all of `data`, waiting for room.
    fn write_all_waiting(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = self.write_waiting(data)?;
            data = &data[n..];
        }
        Ok(())
    }

    /// Sets how long each of the next reads may wait (the socket's SO_RCVTIMEO, timed per read
    /// call; None: no limit).
    pub fn read_within(&mut self, timeout: Option<Duration>) {
        let timeout = timeout.map(|t| t.max(Duration::from_millis(1)));
        if self.read_timeout != Some(timeout) {
            let _ = self.inner.socket().set_read_timeout(timeout);
            self.read_timeout = Some(timeout);
        }
    }

    /// The connection's socket.
    pub fn socket(&self) -> &std::net::TcpStream {
        self.inner.socket()
    }

    /// Waits for room to write; false (and `write_timed_out`) once the timeout passed.
    fn room(&mut self) -> io::Result<bool> {
        if stop::stopped() {
            return Ok(false);
        }
        let room = self.inner.wait_writable(self.timeout)?;
        self.write_timed_out |= !room;
        Ok(room)
    }
}

impl<S: Shapeable> Read for Waiting<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

impl<S: Shapeable> Waiting<'_, S> {
    /// Writes what fits of `data`, waiting for room for some.
    fn write_waiting(&mut self, data: &[u8]) -> io::Result<usize> {
        loop {
            match self.inner.write_now(data) {
                Err(err) if err.kind() == ErrorKind::WouldBlock => {
                    if !self.room()? {
                        return Err(ErrorKind::WouldBlock.into());
                    }
                }
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                result => return result,
            }
        }
    }
}

impl<S: Shapeable> Write for Waiting<'_, S> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let Some(frames) = &mut self.pongs_dropped else {
            return self.write_waiting(data);
        };
        let kept = frames.filter(data);
        self.write_all_waiting(&kept)?;
        Ok(data.len())
    }

    /// Until everything written is with the kernel (a TLS session may hold records back; a
    /// socket holds nothing, and its flush makes no system call).
    fn flush(&mut self) -> io::Result<()> {
        while self.inner.holds_output() {
            match self.inner.write_now(&[]) {
                Err(err) if err.kind() == ErrorKind::WouldBlock => {
                    if !self.room()? {
                        return Err(ErrorKind::WouldBlock.into());
                    }
                }
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
                Ok(_) => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pong_frames_are_dropped_whatever_the_writes_cut() {
        let text = [0x81, 3, b'a', b'b', b'c'];
        let pong = [0x8a, 2, b'p', b'p'];
        let mut long = vec![0x82, 126, 0x01, 0x00];
        long.extend(vec![7u8; 256]);
        let stream: Vec<u8> = [&text[..], &pong, &long, &pong, &text].concat();
        let want: Vec<u8> = [&text[..], &long, &text].concat();
        for cut in [1, 2, 3, 5, 7, 300, stream.len()] {
            let mut frames = Frames::Header(Vec::new());
            let kept: Vec<u8> = stream.chunks(cut).flat_map(|c| frames.filter(c)).collect();
            assert_eq!(kept, want, "writes of {cut}");
        }
    }
}
