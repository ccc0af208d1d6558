//! `--tls` at startup: the certificates (made here, or read from `--tls-cert`/`--tls-key`), the
//! CA written for clients (`--tls-ca-out`), and the rustls configuration every child inherits
//! (`crate::tls::Tls`). Everything that can go wrong with TLS goes wrong here, before the
//! readiness line: an unreadable file, a key that does not match, a bad ALPN name.
//!
//! The made certificates follow what a test needs from a CA of its own (the way rcgen's and
//! mkcert's users do it): a CA made for this run alone, whose private key never leaves the
//! process, and a leaf (ECDSA P-256) for every name a client may use to reach the server. The
//! `--tls-fault` certificate kinds are the same leaf broken in exactly one way.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::{Duration, OffsetDateTime};

use super::exclusive;
use crate::cli::{Bind, TLS_FAULTS};
use crate::tls::{HandshakeFault, Tls};

/// How long a made certificate is valid: from `BEFORE` ago (clocks differ a little) for
/// `VALID`.
const BEFORE: Duration = Duration::hours(1);
const VALID: Duration = Duration::days(7);

/// The only name a `wrong-name` certificate carries (.invalid never resolves: RFC 6761).
pub const WRONG_NAME: &str = "wrong.name.invalid";

/// What `--tls` and its options ask for.
#[derive(Debug, Clone)]
pub struct Recipe {
    /// `--tls-cert` and `--tls-key`; None: make them.
    pub files: Option<(PathBuf, PathBuf)>,
    /// `--tls-ca-out`.
    pub ca_out: Option<PathBuf>,
    /// `--tls-fault`.
    pub fault: Option<Fault>,
    /// `--tls-client-ca`.
    pub client_ca: Option<PathBuf>,
    /// `--tls-client-cert-out`: where the run's client certificate goes.
    pub client_out: Option<PathBuf>,
    /// `--tls-alpn`, in order of preference.
    pub alpn: Vec<String>,
    /// `--tls-min-version 1.3`: TLS 1.2 refused.
    pub only_13: bool,
    /// `--tls-keylog`: the sessions' secrets are logged (`tls::KeyLog`).
    pub keylog: bool,
}

/// `--tls-fault`: one of `cli::TLS_FAULTS`, in that order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Expired,
    NotYetValid,
    WrongName,
    Untrusted,
    SelfSigned,
    StallHandshake,
    ResetInHandshake,
}

impl Fault {
    const ALL: [Fault; 7] = [
        Fault::Expired,
        Fault::NotYetValid,
        Fault::WrongName,
        Fault::Untrusted,
        Fault::SelfSigned,
        Fault::StallHandshake,
        Fault::ResetInHandshake,
    ];

    /// The fault `--tls-fault` names (clap has checked it is one of `TLS_FAULTS`).
    pub fn named(name: &str) -> Option<Fault> {
        let at = TLS_FAULTS.iter().position(|known| *known == name)?;
        Some(Fault::ALL[at])
    }

    fn handshake(self) -> Option<HandshakeFault> {
        match self {
            Fault::StallHandshake => Some(HandshakeFault::Stall),
            Fault::ResetInHandshake => Some(HandshakeFault::Reset),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        TLS_FAULTS[Fault::ALL.iter().position(|f| *f == self).unwrap_or(0)]
    }
}

/// Makes (or reads) the certificates, writes the CA if asked, and builds the configuration every
/// child serves with. `binds` are the `--bind` values, whose addresses and names the made
/// certificate carries. `say`: log which certificate is served.
///
/// Long on purpose: the certificate's making, writing and loading in the order they happen.
pub fn prepare(settings: &Recipe, binds: &[Bind], say: bool) -> Result<&'static Tls> {
    let (chain, key, what) = match &settings.files {
        Some((cert, key)) => {
            if let Some(fault) = settings.fault.filter(|f| f.handshake().is_none()) {
                bail!(
                    concat!(
                        "--tls-fault {fault} breaks the certificate --tls makes; ",
                        "it cannot break --tls-cert {cert}"
                    ),
                    fault = fault.name(),
                    cert = cert.display()
                );
            }
            let (chain, key) = read_pair(cert, key)?;
            (chain, key, format!("certificate from {}", cert.display()))
        }
        None => {
            let made = make(binds, settings.fault)?;
            if let Some(path) = &settings.ca_out {
                exclusive::write(path, made.ca_pem.as_bytes(), 0o644)
                    .with_context(|| format!("--tls-ca-out {}: unable to write", path.display()))?;
            }
            let what = format!("certificate made for {}", made.names.join(","));
            (made.chain, made.key, what)
        }
    };
    let provider = crate::tls::provider();
    let versions: &[&rustls::SupportedProtocolVersion] = match settings.only_13 {
        true => &[&rustls::version::TLS13],
        false => &[&rustls::version::TLS13, &rustls::version::TLS12],
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .context("--tls: unable to set up TLS")?;
    // Client certificates: verified against --tls-client-ca, else the client CA made for
    // --tls-client-cert-out.
    let made_client_ca = match &settings.client_out {
        Some(dir) => Some(write_client(dir)?),
        None => None,
    };
    let client_roots = match (&settings.client_ca, made_client_ca) {
        (Some(path), _) => Some((read_certs(path, "--tls-client-ca")?, path.clone())),
        (None, Some((ca, path))) => Some((vec![ca], path)),
        (None, None) => None,
    };
    let builder = match &client_roots {
        Some((certs, path)) => {
            let mut roots = RootCertStore::empty();
            for cert in certs {
                roots
                    .add(cert.clone())
                    .map_err(|err| anyhow!("{}: not a CA certificate: {err}", path.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                .build()
                .map_err(|err| anyhow!("{}: {err}", path.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|err| match &settings.files {
            Some((cert, key)) => anyhow!(
                "--tls-cert {} and --tls-key {} do not go together: {err}",
                cert.display(),
                key.display()
            ),
            None => anyhow!("--tls: unable to use the made certificate: {err}"),
        })?;
    if settings.keylog {
        config.key_log = Arc::new(crate::tls::KeyLog);
    }
    for proto in &settings.alpn {
        if proto.is_empty() || proto.len() > 255 {
            bail!("--tls-alpn '{proto}': a protocol name is 1 to 255 bytes");
        }
        config.alpn_protocols.push(proto.as_bytes().to_vec());
    }
    // No resumption: every child is a new process with an empty cache, so a ticket or a session
    // id would never be honoured. Sending none saves each handshake two messages.
    config.send_tls13_tickets = 0;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    let handshake_fault = settings.fault.and_then(Fault::handshake);
    let fault = settings
        .fault
        .map_or(String::new(), |f| format!(" fault={}", f.name()));
    let clients = client_roots.map_or(String::new(), |(_, path)| {
        format!(
            " client-ca={}",
            crate::log::Quoted(&path.display().to_string())
        )
    });
    if say {
        crate::log::logln!("tls {what}{fault}{clients}");
    }
    Ok(Box::leak(Box::new(Tls {
        config: Arc::new(config),
        handshake_fault,
    })))
}

/// A made CA and leaf.
struct Made {
    ca_pem: String,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    /// The names and addresses the leaf carries, for the startup line.
    names: Vec<String>,
}

/// Makes the run's CA and a leaf for `binds`, broken as `fault` says.
fn make(binds: &[Bind], fault: Option<Fault>) -> Result<Made> {
    let now = OffsetDateTime::now_utc();
    // Named apart from every other run's CA: a client trusting several runs' CAs must find this
    // run's by its name, and never try another's key on it.
    let run = crate::faults::random_seed();
    let ca = make_ca(&format!("forkecho test CA {run:016x}"), now)?;
    let mut names = leaf_names(binds);
    if fault == Some(Fault::WrongName) {
        names = vec![WRONG_NAME.to_string()];
    }
    let mut params = CertificateParams::new(Vec::new()).map_err(rcgen_error)?;
    params.subject_alt_names = names.iter().map(|name| san(name)).collect::<Result<_>>()?;
    params.distinguished_name = name("forkecho");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    (params.not_before, params.not_after) = match fault {
        Some(Fault::Expired) => (now - VALID - BEFORE, now - BEFORE),
        Some(Fault::NotYetValid) => (now + BEFORE, now + BEFORE + VALID),
        _ => (now - BEFORE, now + VALID),
    };
    let key = KeyPair::generate().map_err(rcgen_error)?;
    let leaf = match fault {
        Some(Fault::SelfSigned) => params.self_signed(&key),
        Some(Fault::Untrusted) => {
            let stranger = make_ca(&format!("forkecho untrusted CA {run:016x}"), now)?;
            params.signed_by(&key, &stranger.issuer)
        }
        _ => params.signed_by(&key, &ca.issuer),
    }
    .map_err(rcgen_error)?;
    let key = PrivateKeyDer::try_from(key.serialize_der())
        .map_err(|err| anyhow!("--tls: unable to use the made key: {err}"))?;
    Ok(Made {
        ca_pem: ca.pem,
        chain: vec![leaf.der().clone()],
        key,
        names,
    })
}

/// The files `--tls-client-cert-out DIR` writes: the client CA, the certificate it signs, and
/// that certificate's key (mode 0600).
pub const CLIENT_FILES: [&str; 3] = ["client-ca.pem", "client.pem", "client.key"];

/// `--tls-client-cert-out DIR`: a client CA made for this run alone, and a client certificate
/// (ECDSA P-256, CN `forkecho client`, extendedKeyUsage clientAuth) and key it signs, written to
/// DIR as `CLIENT_FILES` say. Returns the CA and the path it was written to.
fn write_client(dir: &Path) -> Result<(CertificateDer<'static>, PathBuf)> {
    let unable =
        |err: &dyn std::fmt::Display| anyhow!("--tls-client-cert-out {}: {err}", dir.display());
    if !dir.is_dir() {
        return Err(unable(&"not a directory"));
    }
    let now = OffsetDateTime::now_utc();
    let run = crate::faults::random_seed();
    let ca = make_ca(&format!("forkecho client CA {run:016x}"), now)?;
    let mut params = CertificateParams::new(Vec::new()).map_err(rcgen_error)?;
    params.distinguished_name = name("forkecho client");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    (params.not_before, params.not_after) = (now - BEFORE, now + VALID);
    let key = KeyPair::generate().map_err(rcgen_error)?;
    let cert = params.signed_by(&key, &ca.issuer).map_err(rcgen_error)?;
    let [ca_file, cert_file, key_file] = CLIENT_FILES.map(|file| dir.join(file));
    for (path, data, mode) in [
        (&ca_file, ca.pem.as_str(), 0o644),
        (&cert_file, &cert.pem(), 0o644),
        (&key_file, &key.serialize_pem(), 0o600),
    ] {
        exclusive::write(path, data.as_bytes(), mode)
            .map_err(|err| unable(&format!("unable to write {}: {err}", path.display())))?;
    }
    Ok((ca.der, ca_file))
}

/// A CA: its certificate in PEM and DER, and what signs with its key.
struct Ca {
    pem: String,
    der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

fn make_ca(common_name: &str, now: OffsetDateTime) -> Result<Ca> {
    let mut params = CertificateParams::new(Vec::new()).map_err(rcgen_error)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.distinguished_name = name(common_name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = now - BEFORE;
    params.not_after = now + VALID;
    let key = KeyPair::generate().map_err(rcgen_error)?;
    let cert = params.self_signed(&key).map_err(rcgen_error)?;
    Ok(Ca {
        pem: cert.pem(),
        der: cert.der().clone(),
        issuer: Issuer::new(params, key),
    })
}

fn name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

/// What the leaf names: every `--bind` address and name (Unix sockets have none), this host's
/// name, localhost, 127.0.0.1 and ::1; each once, in that order.
pub fn leaf_names(binds: &[Bind]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let mut add = |name: String| {
        if !names.contains(&name) {
            names.push(name);
        }
    };
    for bind in binds {
        match bind {
            Bind::Ip(ip) if !ip.is_unspecified() => add(ip.to_string()),
            Bind::Scoped(ip, _) => add(ip.to_string()),
            Bind::Name(name) => add(name.to_ascii_lowercase()),
            _ => {}
        }
    }
    if let Ok(host) = nix::unistd::gethostname()
        && let Some(host) = host.to_str()
        && rustls_pki_types::DnsName::try_from(host).is_ok()
        && host.parse::<IpAddr>().is_err()
    {
        add(host.to_ascii_lowercase());
    }
    add("localhost".to_string());
    add(Ipv4Addr::LOCALHOST.to_string());
    add(Ipv6Addr::LOCALHOST.to_string());
    names
}

fn san(name: &str) -> Result<SanType> {
    Ok(match name.parse::<IpAddr>() {
        Ok(ip) => SanType::IpAddress(ip),
        Err(_) => SanType::DnsName(name.try_into().map_err(rcgen_error)?),
    })
}

fn rcgen_error(err: rcgen::Error) -> anyhow::Error {
    anyhow!("--tls: unable to make the certificate: {err}")
}

/// Reads `--tls-cert`'s chain and `--tls-key`'s key.
fn read_pair(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let chain = read_certs(cert, "--tls-cert")?;
    let text = fs::read(key).with_context(|| format!("--tls-key {}", key.display()))?;
    let key = PrivateKeyDer::from_pem_slice(&text)
        .map_err(|err| anyhow!("--tls-key {}: no private key in it ({err})", key.display()))?;
    Ok((chain, key))
}

/// Every certificate in the PEM file at `path`; at least one. `flag` names the option.
fn read_certs(path: &Path, flag: &str) -> Result<Vec<CertificateDer<'static>>> {
    let text = fs::read(path).with_context(|| format!("{flag} {}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| anyhow!("{flag} {}: not PEM ({err})", path.display()))?;
    if certs.is_empty() {
        bail!("{flag} {}: no certificate in it", path.display());
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fault_name_maps_to_its_fault_and_back() {
        for name in TLS_FAULTS {
            assert_eq!(Fault::named(name).map(Fault::name), Some(name));
        }
        assert_eq!(Fault::named("nope"), None);
    }

    #[test]
    fn the_leaf_names_the_binds_and_the_loopback_names() {
        let binds = [
            Bind::Ip("127.0.0.2".parse().unwrap()),
            Bind::Ip("::".parse().unwrap()),
            Bind::Name("Echo.Example".into()),
            Bind::Unix("/tmp/x".into()),
        ];
        let names = leaf_names(&binds);
        assert_eq!(names[..2], ["127.0.0.2", "echo.example"]);
        assert_eq!(names[names.len() - 3..], ["localhost", "127.0.0.1", "::1"]);
        assert!(!names.iter().any(|n| n == "::" || n.contains("tmp")));
    }
}
