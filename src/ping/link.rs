//! `forkecho ping`'s connection to the server: the plain socket, or a TLS session over it
//! (`--tls`), read and written without waiting either way, so a probe keeps its one poll and its
//! one deadline.
//!
//! With `--tls` the server's certificate is verified against `--tls-ca` (or the system's trust
//! store; `--tls-insecure` skips the check but still verifies the handshake's signatures) for
//! `--sni` or the target's host name, and `--tls-cert`/`--tls-key` answer a server that asks for
//! a client certificate. The handshake is timed apart from the connect and the echo.

use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, poll};
use nix::sys::socket::{MsgFlags, recv, send};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore};
use rustls_pki_types::pem::PemObject;
use socket2::Socket;

use super::failure::Failure;
use crate::cli::PingOptions;
use crate::deadline;
use crate::tls::{NoWait, SEND_NOW};

/// Where a system keeps the CAs it trusts, as one PEM file (Debian's and Fedora's).
const SYSTEM_ROOTS: [&str; 2] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
];

/// A connection to the echo server.
pub enum Link {
    Plain(Socket),
    Tls(Box<(Socket, ClientConnection)>),
}

/// How `--tls` connections are made: the configuration and the name the server must have.
pub struct Client {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl Client {
    /// The TLS client `options` ask for, for `host` (the target's; None for a Unix socket); an
    /// error names the option and the file.
    pub fn new(options: &PingOptions, host: Option<&str>) -> Result<Client, String> {
        let name = options.sni.as_deref().or(host).unwrap_or("localhost");
        let name = ServerName::try_from(name.to_string())
            .map_err(|_| format!("--sni '{name}': not a host name or an address"))?;
        let provider = crate::tls::provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|err| format!("--tls: {err}"))?;
        let builder = match options.tls_insecure {
            true => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Insecure(provider))),
            false => builder.with_root_certificates(roots(options.tls_ca.as_deref())?),
        };
        let config = match (&options.tls_cert, &options.tls_key) {
            (Some(cert), Some(key)) => {
                let chain = certs(cert, "--tls-cert")?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|err| format!("--tls-key {}: {err}", key.display()))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|err| format!("--tls-cert {}: {err}", cert.display()))?
            }
            _ => builder.with_no_client_auth(),
        };
        Ok(Client {
            config: Arc::new(config),
            name,
        })
    }

    /// Does the handshake on the connected, non-blocking `socket` before `deadline`.
    pub fn handshake(
        &self,
        socket: Socket,
        deadline: Instant,
        interrupted: fn() -> bool,
    ) -> Result<Link, Failure> {
        let mut conn = ClientConnection::new(self.config.clone(), self.name.clone())
            .map_err(|err| tls_failure(&err))?;
        loop {
            let mut events = PollFlags::empty();
            if conn.wants_write() {
                match conn.write_tls(&mut NoWait(&socket)) {
                    Ok(_) => continue,
                    Err(err) if err.kind() == ErrorKind::WouldBlock => events |= PollFlags::POLLOUT,
                    Err(err) if err.kind() == ErrorKind::Interrupted => continue,
                    Err(err) => return Err(Failure::Error(err)),
                }
            }
            if !conn.is_handshaking() && !conn.wants_write() {
                return Ok(Link::Tls(Box::new((socket, conn))));
            }
            if conn.is_handshaking() {
                events |= PollFlags::POLLIN;
            }
            if interrupted() {
                return Err(Failure::Interrupted);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Failure::Timeout { received: 0 });
            }
            let mut fds = [PollFd::new(socket.as_fd(), events)];
            match poll(&mut fds, deadline::poll_timeout(Some(left))) {
                Ok(0) | Err(Errno::EINTR) => continue,
                Ok(_) => {}
                Err(errno) => return Err(Failure::Error(errno.into())),
            }
            if events.contains(PollFlags::POLLIN) {
                match conn.read_tls(&mut NoWait(&socket)) {
                    Ok(0) => {
                        let closed = "TLS: the server closed the connection in the handshake";
                        return Err(Failure::Error(io::Error::new(
                            ErrorKind::UnexpectedEof,
                            closed,
                        )));
                    }
                    Ok(_) => {}
                    Err(err)
                        if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) =>
                    {
                        continue;
                    }
                    Err(err) => return Err(Failure::Error(err)),
                }
                if let Err(err) = conn.process_new_packets() {
                    // The alert that tells the server why.
                    let _ = conn.write_tls(&mut NoWait(&socket));
                    return Err(tls_failure(&err));
                }
            }
        }
    }
}

fn tls_failure(err: &rustls::Error) -> Failure {
    let why = crate::tls_errors::explain(err);
    Failure::Error(io::Error::other(format!("TLS: {why}")))
}

impl Link {
    /// The socket under the link.
    pub fn socket(&self) -> &Socket {
        match self {
            Link::Plain(socket) => socket,
            Link::Tls(tls) => &tls.0,
        }
    }

    /// Sends what fits now: WouldBlock if nothing does. Over TLS, the bytes are taken once
    /// encrypted; `flush_now` moves what the socket could not take yet.
    pub fn send_now(&mut self, data: &[u8]) -> io::Result<usize> {
        if let Link::Plain(socket) = self {
            return Ok(send(socket.as_raw_fd(), data, SEND_NOW)?);
        }
        self.flush_now()?;
        let Link::Tls(tls) = self else {
            unreachable!("a plain link returned above")
        };
        if tls.1.wants_write() {
            return Err(ErrorKind::WouldBlock.into());
        }
        let n = tls.1.writer().write(&data[..data.len().min(16 * 1024)])?;
        self.flush_now()?;
        Ok(n)
    }

    /// Whether bytes taken by `send_now` still wait for room in the socket.
    pub fn wants_write(&self) -> bool {
        match self {
            Link::Plain(_) => false,
            Link::Tls(tls) => tls.1.wants_write(),
        }
    }

    /// Moves waiting TLS records to the socket, as far as they fit now.
    pub fn flush_now(&mut self) -> io::Result<()> {
        let Link::Tls(tls) = self else {
            return Ok(());
        };
        let (socket, conn) = &mut **tls;
        while conn.wants_write() {
            match conn.write_tls(&mut NoWait(socket)) {
                Ok(_) => {}
                Err(err) if err.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    /// Reads what has come, without waiting: Ok(0) at the end of the stream, WouldBlock if
    /// nothing has come.
    pub fn recv_now(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let (socket, conn) = match self {
            Link::Plain(socket) => {
                return Ok(recv(socket.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT)?);
            }
            Link::Tls(tls) => &mut **tls,
        };
        loop {
            match conn.reader().read(buf) {
                Err(err) if err.kind() == ErrorKind::UnexpectedEof => return Ok(0),
                Err(err) if err.kind() == ErrorKind::WouldBlock => {}
                result => return result,
            }
            // At the end of the stream too: the reader then says how it ended.
            conn.read_tls(&mut NoWait(socket))?;
            conn.process_new_packets()
                .map_err(|err| io::Error::other(format!("TLS: {err}")))?;
        }
    }

    /// Whether a read would return something the socket no longer shows (plaintext held by
    /// the TLS session).
    pub fn holds_input(&mut self) -> bool {
        match self {
            Link::Plain(_) => false,
            Link::Tls(tls) => tls
                .1
                .process_new_packets()
                .is_ok_and(|state| state.plaintext_bytes_to_read() > 0),
        }
    }

    /// Bytes that have already come beyond what was read, looked at without waiting (and, on
    /// a plain socket, left there).
    pub fn pending(&mut self) -> usize {
        match self {
            Link::Plain(socket) => {
                let mut buf = [0u8; 4096];
                let flags = MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT;
                recv(socket.as_raw_fd(), &mut buf, flags).unwrap_or(0)
            }
            Link::Tls(tls) => {
                let (socket, conn) = &mut **tls;
                let _ = conn.read_tls(&mut NoWait(socket));
                conn.process_new_packets()
                    .map_or(0, |state| state.plaintext_bytes_to_read())
            }
        }
    }

    /// Half-closes the connection (after close_notify, over TLS).
    pub fn shutdown_write(&mut self) -> io::Result<()> {
        if let Link::Tls(tls) = self {
            tls.1.send_close_notify();
            self.flush_now()?;
        }
        self.socket().shutdown(std::net::Shutdown::Write)
    }
}

/// The CAs to trust: `--tls-ca`'s, or the system's.
fn roots(file: Option<&Path>) -> Result<RootCertStore, String> {
    let (path, flag) = match file {
        Some(path) => (path.to_path_buf(), "--tls-ca"),
        None => {
            let found = SYSTEM_ROOTS.iter().map(PathBuf::from).find(|p| p.exists());
            let none =
                "no --tls-ca and no system trust store: give --tls-ca FILE or --tls-insecure";
            (found.ok_or(none)?, "the system trust store")
        }
    };
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs(&path, flag)?);
    match added {
        0 => Err(format!(
            "{flag} {}: no CA certificate in it",
            path.display()
        )),
        _ => Ok(roots),
    }
}

/// The certificates in the PEM file at `path` (at least one); `flag` names where it came from.
fn certs(path: &Path, flag: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|err| format!("{flag} {}: {err}", path.display()))?;
    match certs.is_empty() {
        true => Err(format!("{flag} {}: no certificate in it", path.display())),
        false => Ok(certs),
    }
}

/// `--tls-insecure`: any certificate for any name is taken; the handshake's signatures are
/// still checked, so the session is still one with the holder of the certificate's key.
#[derive(Debug)]
struct Insecure(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Insecure {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
