//! TLS as every child serves it: made once by the parent at startup (`setup::certificates`: the
//! certificates, the rustls configuration), read by each child after fork (`child::tls_session`:
//! the handshake, then the echo through the session). Nothing here changes after startup; each
//! child gets the configuration by inheritance, and with it the keys, without reading a file. Also
//! what both TLS sides share, the server's children and `forkecho ping --tls`: the provider, and
//! `NoWait`, the socket as rustls reads and writes it without waiting.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};

use nix::sys::socket::{MsgFlags, recv, send, sendmsg};

/// What `--tls` and its options set up, for every connection.
#[derive(Debug)]
pub struct Tls {
    /// Certificates, versions, ALPN and client verification: the rustls configuration.
    pub config: Arc<rustls::ServerConfig>,
    /// `--tls-fault stall-handshake` or `reset-in-handshake`: no handshake is done at all.
    pub handshake_fault: Option<HandshakeFault>,
}

/// `--tls-keylog`: the file the session secrets go to, opened at startup (`setup::dump`) after
/// the configuration that names `KeyLog` was made; -1 until then.
static KEYLOG: AtomicI32 = AtomicI32::new(-1);

/// Sends the session secrets to `fd` from now on (every child inherits it).
pub fn log_keys_to(fd: RawFd) {
    KEYLOG.store(fd, Ordering::Relaxed);
}

/// The session secrets of each handshake, written by the child that made it in the NSS key log
/// format (`LABEL CLIENT_RANDOM SECRET`, hex): what `SSLKEYLOGFILE` gives browsers and curl.
/// One write(2) per line on a file opened O_APPEND, so lines from children never mix.
#[derive(Debug)]
pub struct KeyLog;

impl rustls::KeyLog for KeyLog {
    fn log(&self, label: &str, client_random: &[u8], secret: &[u8]) {
        let fd = KEYLOG.load(Ordering::Relaxed);
        if fd < 0 {
            return;
        }
        let mut line =
            String::with_capacity(label.len() + 2 * (client_random.len() + secret.len()) + 3);
        line.push_str(label);
        line.push(' ');
        for byte in client_random {
            let _ = write!(line, "{byte:02x}");
        }
        line.push(' ');
        for byte in secret {
            let _ = write!(line, "{byte:02x}");
        }
        line.push('\n');
        // A failed write costs the line; the handshake goes on. Said nowhere: a full disk would
        // say it for every handshake.
        // SAFETY: write(2) reads `line`, which lives across the call.
        let _ = unsafe { nix::libc::write(fd, line.as_ptr().cast(), line.len()) };
    }
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
