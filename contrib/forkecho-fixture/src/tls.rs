//! A TLS client for a `--tls` forkecho (the `rustls` feature, off by default so that a test build
//! without it never compiles a TLS stack): `Forkecho::connect_tls` trusts the run's CA, and
//! [`ClientSetup`] says what else a client offers and trusts (a client certificate for
//! `--tls-client-ca`, ALPN protocols, TLS 1.2 alone). Written by the test, read by rustls.
//!
//! ```
//! use std::io::{Read, Write};
//!
//! let fe = forkecho_fixture::Forkecho::with_args(["--tls"])?;
//! let mut client = fe.connect_tls()?;
//! client.write_all(b"secret")?;
//! let mut echoed = [0; 6];
//! client.read_exact(&mut echoed)?;
//! assert_eq!(&echoed, b"secret");
//! # Ok::<(), std::io::Error>(())
//! ```

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::Forkecho;

/// A client's TLS stream, the handshake done.
pub type Tls = StreamOwned<ClientConnection, TcpStream>;

/// What a client offers and trusts.
#[derive(Default, Clone)]
pub struct ClientSetup<'a> {
    /// The CA file to trust (PEM); none trusts nothing.
    pub ca: Option<&'a Path>,
    /// A client certificate and its key, both PEM.
    pub identity: Option<(String, String)>,
    /// ALPN protocols to offer.
    pub alpn: &'a [&'a str],
    /// Offer TLS 1.2 only.
    pub only_12: bool,
}

impl ClientSetup<'_> {
    /// The rustls configuration (ring's provider), for clients of your own; an error names a CA
    /// file or an identity that cannot be used.
    pub fn config(&self) -> io::Result<Arc<ClientConfig>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions: &[&rustls::SupportedProtocolVersion] = match self.only_12 {
            true => &[&rustls::version::TLS12],
            false => rustls::DEFAULT_VERSIONS,
        };
        let mut roots = RootCertStore::empty();
        if let Some(ca) = self.ca {
            let unusable = |err: &dyn std::fmt::Display| {
                io::Error::other(format!("the CA file {}: {err}", ca.display()))
            };
            for cert in CertificateDer::pem_file_iter(ca).map_err(|err| unusable(&err))? {
                let cert = cert.map_err(|err| unusable(&err))?;
                roots.add(cert).map_err(|err| unusable(&err))?;
            }
        }
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .map_err(io::Error::other)?
            .with_root_certificates(roots);
        let mut config = match &self.identity {
            Some((cert, key)) => {
                let chain = CertificateDer::pem_slice_iter(cert.as_bytes());
                let chain = chain.collect::<Result<_, _>>().map_err(io::Error::other)?;
                let key =
                    PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(io::Error::other)?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(io::Error::other)?
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = self.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        Ok(Arc::new(config))
    }

    /// Connects to `addr` and completes the handshake for `name`; the error is the handshake's
    /// (a `rustls::Error` inside, see [`tls_error`], when TLS refused it).
    pub fn connect(&self, addr: SocketAddr, name: &str) -> io::Result<Tls> {
        let mut socket = crate::connect_with_timeouts(addr)?;
        let name = ServerName::try_from(name.to_string()).map_err(io::Error::other)?;
        let mut conn = ClientConnection::new(self.config()?, name).map_err(io::Error::other)?;
        while conn.is_handshaking() {
            conn.complete_io(&mut socket)?;
        }
        Ok(StreamOwned::new(conn, socket))
    }
}

impl Forkecho {
    /// A TLS client connected as `connect` connects, for `localhost`, trusting the run's CA
    /// (`ca_path()`).
    pub fn connect_tls(&self) -> io::Result<Tls> {
        let ca = self
            .ca_path()
            .ok_or_else(|| io::Error::other("started without --tls"))?;
        let setup = ClientSetup {
            ca: Some(ca),
            ..ClientSetup::default()
        };
        setup.connect(self.client_addr(), "localhost")
    }
}

/// The rustls error inside a failed handshake's io::Error.
pub fn tls_error(err: &io::Error) -> Option<&rustls::Error> {
    err.get_ref()?.downcast_ref::<rustls::Error>()
}

/// Sends `data` a chunk at a time, reading each chunk's echo before the next goes, then
/// half-closes (close_notify, then FIN) and reads everything else back.
pub fn echo(mut tls: Tls, data: &[u8]) -> io::Result<Vec<u8>> {
    let mut back = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    for chunk in data.chunks(16 * 1024) {
        tls.write_all(chunk)?;
        tls.flush()?;
        let want = back.len() + chunk.len();
        while back.len() < want {
            let n = tls.read(&mut buf)?;
            if n == 0 {
                return Ok(back);
            }
            back.extend_from_slice(&buf[..n]);
        }
    }
    tls.conn.send_close_notify();
    tls.flush()?;
    tls.sock.shutdown(Shutdown::Write)?;
    loop {
        match tls.read(&mut buf) {
            Ok(0) => return Ok(back),
            Ok(n) => back.extend_from_slice(&buf[..n]),
            Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => return Ok(back),
            Err(err) => return Err(err),
        }
    }
}
