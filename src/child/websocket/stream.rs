//! The stream a WebSocket session runs on: the connection's socket or its TLS session, written
//! the way tungstenite expects (a write that blocks until it moves bytes) but timed as every
//! echo path is: a client that takes none of the echo for `--idle-timeout` ends the session as a
//! write timeout. Reads wait as the socket's SO_RCVTIMEO says, which `read_within` shortens for
//! the server's own pings and time-triggered limits. Written and read by `websocket` alone.

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
}

impl<'a, S: Shapeable> Waiting<'a, S> {
    pub fn new(inner: &'a mut S, timeout: Duration) -> Waiting<'a, S> {
        Waiting {
            inner,
            timeout: (!timeout.is_zero()).then_some(timeout),
            write_timed_out: false,
        }
    }

    /// Sets how long the next reads may wait (the socket's SO_RCVTIMEO; None: no limit).
    pub fn read_within(&self, timeout: Option<Duration>) {
        let timeout = timeout.filter(|t| !t.is_zero());
        let _ = self.inner.socket().set_read_timeout(timeout);
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

impl<S: Shapeable> Write for Waiting<'_, S> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
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

    /// Until everything written is with the kernel (a TLS session may hold records back).
    fn flush(&mut self) -> io::Result<()> {
        loop {
            match self.inner.write_now(&[]) {
                Err(err) if err.kind() == ErrorKind::WouldBlock => {
                    if !self.room()? {
                        return Err(ErrorKind::WouldBlock.into());
                    }
                }
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                result => return result.map(drop),
            }
        }
    }
}
