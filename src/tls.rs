//! TLS as every child serves it: made once by the parent at startup (`setup::certificates`: the
//! certificates, the rustls configuration), read by each child after fork (`child::tls_session`:
//! the handshake, then the echo through the session). Nothing here changes after startup; each
//! child gets the configuration by inheritance, and with it the keys, without reading a file. Also
//! what both TLS sides share, the server's children and `forkecho ping --tls`: the provider, and
//! `NoWait`, the socket as rustls reads and writes it without waiting.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use nix::sys::socket::{MsgFlags, recv, send, sendmsg};

/// What `--tls` and its options set up, for every connection.
#[derive(Debug)]
pub struct Tls {
    /// Certificates, versions, ALPN and client verification: the rustls configuration.
    pub config: Arc<rustls::ServerConfig>,
    /// `--tls-fault stall-handshake` or `reset-in-handshake`: no handshake is done at all.
    pub handshake_fault: Option<HandshakeFault>,
}

/// A handshake broken on purpose (`--tls-fault`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFault {
    /// Accept, then say nothing: the client waits until the idle timeout (or its own) ends it.
    Stall,
    /// Read the ClientHello, then reset the connection.
    Reset,
}

/// The crypto provider every TLS side uses: ring's.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Flags for a send that never waits and never raises SIGPIPE.
pub const SEND_NOW: MsgFlags = MsgFlags::MSG_DONTWAIT.union(MsgFlags::MSG_NOSIGNAL);

/// A socket read and written without waiting (recv and send with MSG_DONTWAIT): WouldBlock when
/// it has nothing, or no room.
pub struct NoWait<'a, S: AsRawFd>(pub &'a S);

impl<S: AsRawFd> Read for NoWait<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Ok(recv(self.0.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT)?)
    }
}

impl<S: AsRawFd> Write for NoWait<'_, S> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        Ok(send(self.0.as_raw_fd(), data, SEND_NOW)?)
    }

    /// Several records in one system call (rustls queues each message apart).
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        Ok(sendmsg::<()>(
            self.0.as_raw_fd(),
            bufs,
            &[],
            SEND_NOW,
            None,
        )?)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
