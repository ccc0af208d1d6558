//! A TLS client for the tests (rustls, as the server is), and certificates made on the spot
//! (rcgen): what a test suite that uses `forkecho --tls` as a fixture would write.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use super::DEADLINE;

/// A client's TLS stream.
pub type Tls = StreamOwned<ClientConnection, TcpStream>;

/// What a test's client offers and trusts.
#[derive(Default)]
pub struct ClientSetup<'a> {
    /// The CA file to trust (PEM).
    pub ca: Option<&'a Path>,
    /// A client certificate and its key, both PEM.
    pub identity: Option<(String, String)>,
    pub alpn: &'a [&'a str],
    /// Offer TLS 1.2 only.
    pub only_12: bool,
}

impl ClientSetup<'_> {
    pub fn config(&self) -> Arc<ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions: &[&rustls::SupportedProtocolVersion] = match self.only_12 {
            true => &[&rustls::version::TLS12],
            false => rustls::DEFAULT_VERSIONS,
        };
        let mut roots = RootCertStore::empty();
        if let Some(ca) = self.ca {
            for cert in CertificateDer::pem_file_iter(ca).unwrap() {
                roots.add(cert.unwrap()).unwrap();
            }
        }
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots);
        let mut config = match &self.identity {
            Some((cert, key)) => {
                let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap();
                let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
                builder.with_client_auth_cert(chain, key).unwrap()
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = self.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        Arc::new(config)
    }
}

/// Connects to `addr` and completes the handshake for `name`; the error is the handshake's
/// (a `rustls::Error` inside the io::Error when TLS refused it).
pub fn connect_tls(addr: SocketAddr, setup: &ClientSetup, name: &str) -> io::Result<Tls> {
    let mut socket = TcpStream::connect(addr)?;
    socket.set_read_timeout(Some(DEADLINE))?;
    let name = ServerName::try_from(name.to_string()).unwrap();
    let mut conn = ClientConnection::new(setup.config(), name).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut socket)?;
    }
    Ok(StreamOwned::new(conn, socket))
}

/// The rustls error inside a failed handshake's io::Error.
pub fn tls_error(err: &io::Error) -> Option<&rustls::Error> {
    err.get_ref()?.downcast_ref::<rustls::Error>()
}

/// Sends `data`, half-closes (close_notify, then FIN) and reads everything back.
pub fn echo_tls(mut tls: Tls, data: &[u8]) -> io::Result<Vec<u8>> {
    // The echo comes back while the data goes: read as we write, or a large payload deadlocks
    // against its own echo.
    let mut back = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    for chunk in data.chunks(16 * 1024) {
        tls.write_all(chunk)?;
        tls.flush()?;
        // This chunk's echo, before the next chunk goes.
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
    tls.sock.shutdown(std::net::Shutdown::Write)?;
    loop {
        match tls.read(&mut buf) {
            Ok(0) => return Ok(back),
            Ok(n) => back.extend_from_slice(&buf[..n]),
            Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => return Ok(back),
            Err(err) => return Err(err),
        }
    }
}

/// A CA made for a test, and a client certificate it signs: (CA PEM, cert PEM, key PEM).
pub fn client_identity(common_name: &str) -> (String, String, String) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let mut name = rcgen::DistinguishedName::new();
    name.push(rcgen::DnType::CommonName, "test client CA");
    ca_params.distinguished_name = name;
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let mut params = rcgen::CertificateParams::new(Vec::new()).unwrap();
    let mut name = rcgen::DistinguishedName::new();
    name.push(rcgen::DnType::CommonName, common_name);
    params.distinguished_name = name;
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

/// A self-signed server certificate for `names` and its key, both PEM (for --tls-cert).
pub fn server_identity(names: &[&str]) -> (String, String) {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(names)
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (cert.pem(), key.serialize_pem())
}
