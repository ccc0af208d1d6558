//! What the shaped echo (`shaped`) needs of a connection: a plain socket, or a TLS session
//! (`child::tls_session`, which implements it over plaintext). Read by `shaped` alone.

use std::io;
use std::net::TcpStream;
use std::os::fd::AsRawFd;

use nix::sys::socket::{MsgFlags, recv};

use super::stall::Conn;

/// A connection the shaped echo can serve: a plain socket, or a TLS session over one
/// (`child::tls_session`), whose reads and writes move plaintext.
pub trait Shapeable: Conn {
    /// The socket under it: polled, and closed the way the end calls for.
    fn socket(&self) -> &TcpStream;

    /// Reads what has arrived, without waiting: WouldBlock if nothing has.
    fn read_now(&mut self, buf: &mut [u8]) -> io::Result<usize>;

    /// Whether a read would return something (or the end) though the socket may have nothing
    /// new: input held above the socket.
    fn holds_input(&mut self) -> bool {
        false
    }

    /// Whether written bytes are still held above the socket (a TLS session's records): what a
    /// flush must still move.
    fn holds_output(&self) -> bool {
        false
    }
}

impl Shapeable for TcpStream {
    fn socket(&self) -> &TcpStream {
        self
    }

    fn read_now(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Ok(recv(self.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT)?)
    }
}
