//! A connection's TLS, all of it in its child: the handshake (or the `--tls-fault` that breaks
//! it), then the echo through the session, then close_notify.
//!
//! The parent never touches TLS: it accepts and forks as for plain TCP, and the child does the
//! handshake with the configuration it inherited (`crate::tls::Tls`), so a client that stalls
//! the handshake holds one process and never the loop. The handshake is bounded by
//! `--idle-timeout` as a whole, not per read, and ends early at a stop signal. Once it is done,
//! `TlsStream` is the connection as the echo paths see it (`echo::stall::Conn`, and
//! `echo::shapeable::Shapeable` for the faults): reads return plaintext; a write encrypts one
//! record and reports its bytes only once the whole record is in the kernel, so the count of
//! bytes echoed never includes a record still held here.
//!
//! Written by this child alone; read by its close line (`Info`: version, cipher suite, SNI,
//! ALPN, the client certificate's subject).

use std::fmt;
use std::io::{self, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::PollFlags;
use rustls::ServerConnection;
use socket2::SockRef;

use super::echo::outcome::End;
use super::echo::shapeable::Shapeable;
use super::echo::stall::Conn;
use super::stop;
use crate::tls::{HandshakeFault, NoWait, Tls};

/// The most plaintext one write puts in a record (TLS's own limit).
const RECORD: usize = 16 * 1024;

/// An established TLS session over the connection's socket.
pub struct TlsStream {
    conn: ServerConnection,
    socket: TcpStream,
    /// Plaintext bytes of the last write whose records are not all in the kernel yet: the next
    /// `write_now`, given the same bytes again, reports them once they are.
    owed: usize,
}

/// What the close line says about the session.
#[derive(Debug, Default)]
pub struct Info {
    version: &'static str,
    cipher: String,
    sni: Option<String>,
    alpn: Option<String>,
    client: Option<String>,
}

/// The close line's TLS fields: ` tls=1.3 cipher=… sni=… alpn=… client="…"`, or nothing.
pub struct Fields<'a>(pub Option<&'a Info>);

impl fmt::Display for Fields<'_> {
    #[unsafe(link_section = ".text.hot.child")]
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(info) = self.0 else {
            return Ok(());
        };
        write!(f, " tls={} cipher={}", info.version, info.cipher)?;
        if let Some(sni) = &info.sni {
            write!(f, " sni={sni}")?;
        }
        if let Some(alpn) = &info.alpn {
            write!(f, " alpn={alpn}")?;
        }
        if let Some(client) = &info.client {
            write!(f, " client=\"{client}\"")?;
        }
        Ok(())
    }
}

/// Does the connection's handshake within `idle_timeout` (zero: no limit). On failure, the
/// socket comes back with the end to log: `tls-handshake` and its reason, or a stop.
pub fn handshake(
    mut socket: TcpStream,
    tls: &Tls,
    idle_timeout: Duration,
) -> Result<(TlsStream, Info), (TcpStream, End)> {
    let deadline = Some(idle_timeout)
        .filter(|t| !t.is_zero())
        .map(|t| Instant::now() + t);
    if let Some(fault) = tls.handshake_fault {
        let end = broken_handshake(&socket, fault, deadline);
        return Err((socket, end));
    }
    let mut conn = match ServerConnection::new(tls.config.clone()) {
        Ok(conn) => conn,
        Err(err) => return Err((socket, failed(err.to_string()))),
    };
    loop {
        if stop::requested() {
            return Err((socket, End::Shutdown));
        }
        let left = deadline.map(|at| at.saturating_duration_since(Instant::now()));
        if left.is_some_and(|left| left.is_zero()) {
            return Err((socket, failed("timed out".into())));
        }
        // Written without waiting, and waited for within the deadline: a client that reads
        // nothing holds the handshake no longer than one that sends nothing.
        let events = match conn.wants_write() {
            true => match conn.write_tls(&mut NoWait(&socket)) {
                Ok(_) => continue,
                Err(err) if err.kind() == ErrorKind::WouldBlock => PollFlags::POLLOUT,
                Err(err) if err.kind() == ErrorKind::Interrupted => continue,
                Err(err) => return Err((socket, End::from_error(err, End::WriteTimeout))),
            },
            false if conn.is_handshaking() => PollFlags::POLLIN,
            false => break,
        };
        match stop::wait(socket.as_fd(), events, left) {
            Ok(true) if events == PollFlags::POLLIN && !stop::requested() => {}
            Ok(_) => continue,
            Err(err) => return Err((socket, End::Failed(err))),
        }
        match conn.read_tls(&mut socket) {
            Ok(0) => return Err((socket, failed("client closed".into()))),
            Ok(_) => {}
            Err(err) if matches!(err.kind(), ErrorKind::Interrupted | ErrorKind::WouldBlock) => {}
            Err(err) => return Err((socket, End::from_error(err, End::IdleTimeout))),
        }
        if let Err(err) = conn.process_new_packets() {
            // The alert that says why (after whatever else is queued before it, a ServerHello
            // say), if the client is still there to read it.
            while conn.wants_write() && conn.write_tls(&mut NoWait(&socket)).is_ok() {}
            return Err((socket, failed(crate::tls_errors::explain(&err))));
        }
    }
    let info = info(&conn);
    let stream = TlsStream {
        conn,
        socket,
        owed: 0,
    };
    Ok((stream, info))
}

fn failed(reason: String) -> End {
    End::TlsHandshake(reason)
}

/// `--tls-fault stall-handshake`: say nothing until the client gives up, the idle timeout or a
/// stop; `reset-in-handshake`: read the ClientHello, then reset.
fn broken_handshake(socket: &TcpStream, fault: HandshakeFault, deadline: Option<Instant>) -> End {
    let (events, reason) = match fault {
        // POLLRDHUP: the client's FIN, even with its ClientHello unread.
        HandshakeFault::Stall => (
            PollFlags::from_bits_retain(nix::libc::POLLRDHUP),
            "stall-handshake fault",
        ),
        HandshakeFault::Reset => (PollFlags::POLLIN, "reset-in-handshake fault"),
    };
    loop {
        if stop::requested() {
            return End::Shutdown;
        }
        let left = deadline.map(|at| at.saturating_duration_since(Instant::now()));
        if left.is_some_and(|left| left.is_zero()) {
            return failed(format!("{reason}, timed out"));
        }
        match stop::wait(socket.as_fd(), events, left) {
            Ok(true) if !stop::requested() => break,
            Ok(_) => {}
            Err(err) => return End::Failed(err),
        }
    }
    if fault == HandshakeFault::Reset {
        let mut hello = [0u8; 512];
        let _ = (&*socket).read(&mut hello);
        let _ = SockRef::from(socket).set_linger(Some(Duration::ZERO));
        return failed(reason.into());
    }
    failed(format!("{reason}, client closed"))
}

fn info(conn: &ServerConnection) -> Info {
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "1.2",
        _ => "?",
    };
    let cipher = conn
        .negotiated_cipher_suite()
        .map(|suite| format!("{:?}", suite.suite()))
        .unwrap_or_default();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).replace([' ', '"', '\\'], "_");
    Info {
        version,
        cipher,
        sni: conn.server_name().map(|name| text(name.as_bytes())),
        alpn: conn.alpn_protocol().map(text),
        client: conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|cert| {
                subject(cert)
                    .unwrap_or_else(|| "?".into())
                    .replace('"', "'")
            }),
    }
}

impl TlsStream {
    /// Ends the session: close_notify, if the client can take it now. Returns the socket.
    pub fn close_notify(mut self) -> TcpStream {
        self.conn.send_close_notify();
        let _ = self.flush_now();
        self.socket
    }

    /// The socket, with nothing more said.
    pub fn into_socket(self) -> TcpStream {
        self.socket
    }

    /// Moves records the session holds to the kernel, as far as they fit now.
    fn flush_now(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut NoWait(&self.socket)) {
                Ok(_) => {}
                Err(err) if err.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    /// Takes the client's records in, from a read that waits (`wait`) or one that does not.
    fn fill(&mut self, wait: bool) -> io::Result<()> {
        let read = match wait {
            true => self.conn.read_tls(&mut self.socket),
            false => self.conn.read_tls(&mut NoWait(&self.socket)),
        };
        read?;
        if let Err(err) = self.conn.process_new_packets() {
            let _ = self.flush_now();
            return Err(io::Error::new(ErrorKind::InvalidData, err));
        }
        // Whatever the session has to say besides the echo (a key update's answer) goes now,
        // unless a record of the echo is still on its way.
        if self.owed == 0 {
            self.flush_now()?;
        }
        Ok(())
    }

    /// The plaintext the session holds, if any: Ok(0) once the client has closed (with
    /// close_notify or without), WouldBlock if it holds none.
    fn take(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.conn.reader().read(buf) {
            // A client that closes without close_notify ends the stream as well: most test
            // clients do, and nothing is lost to a truncation the echo could notice.
            Err(err) if err.kind() == ErrorKind::UnexpectedEof => Ok(0),
            result => result,
        }
    }
}

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.take(buf) {
                Err(err) if err.kind() == ErrorKind::WouldBlock => self.fill(true)?,
                result => return result,
            }
        }
    }
}

impl Write for TlsStream {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.write_now(data)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_now()
    }
}

impl Conn for TlsStream {
    /// Encrypts up to one record of `data` and moves it to the kernel without waiting; its bytes
    /// count only once all of the record is there (WouldBlock until then: the caller offers the
    /// same bytes again).
    fn write_now(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.owed == 0 {
            self.flush_now()?;
            if self.conn.wants_write() {
                return Err(ErrorKind::WouldBlock.into());
            }
            self.owed = self.conn.writer().write(&data[..data.len().min(RECORD)])?;
        }
        self.flush_now()?;
        if self.conn.wants_write() {
            return Err(ErrorKind::WouldBlock.into());
        }
        let done = self.owed.min(data.len());
        self.owed -= done;
        Ok(done)
    }

    fn wait_writable(&mut self, timeout: Option<Duration>) -> io::Result<bool> {
        stop::wait(self.socket.as_fd(), PollFlags::POLLOUT, timeout)
    }
}

impl Shapeable for TlsStream {
    fn socket(&self) -> &TcpStream {
        &self.socket
    }

    fn read_now(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.take(buf) {
                Err(err) if err.kind() == ErrorKind::WouldBlock => self.fill(false)?,
                result => return result,
            }
        }
    }

    fn holds_output(&self) -> bool {
        self.owed > 0 || self.conn.wants_write()
    }

    fn holds_input(&mut self) -> bool {
        self.conn
            .process_new_packets()
            .is_ok_and(|state| state.plaintext_bytes_to_read() > 0 || state.peer_has_closed())
    }
}

/// The subject of a DER certificate, as `CN=name,O=org`: read off the structure RFC 5280
/// gives it (Certificate → TBSCertificate → [version], serial, signature, issuer, validity,
/// subject). None if the certificate is not shaped so.
pub fn subject(cert: &[u8]) -> Option<String> {
    let (_, certificate, _) = der(cert)?;
    let (_, mut tbs, _) = der(certificate)?;
    let (tag, _, rest) = der(tbs)?;
    if tag == 0xa0 {
        // The explicit [0] version.
        tbs = rest;
    }
    for _ in 0..4 {
        // serial, signature algorithm, issuer, validity.
        tbs = der(tbs)?.2;
    }
    let (_, mut name, _) = der(tbs)?;
    let mut parts = Vec::new();
    while !name.is_empty() {
        let (_, set, rest) = der(name)?;
        name = rest;
        let (_, attribute, _) = der(set)?;
        let (_, oid, value) = der(attribute)?;
        let (_, value, _) = der(value)?;
        let key = match oid {
            [0x55, 0x04, 0x03] => "CN",
            [0x55, 0x04, 0x06] => "C",
            [0x55, 0x04, 0x07] => "L",
            [0x55, 0x04, 0x08] => "ST",
            [0x55, 0x04, 0x0a] => "O",
            [0x55, 0x04, 0x0b] => "OU",
            _ => "?",
        };
        parts.push(format!("{key}={}", String::from_utf8_lossy(value)));
    }
    Some(parts.join(","))
}

/// One DER element at the start of `data`: its tag, its contents and what follows it.
fn der(data: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = data.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = match first {
        0..=0x7f => usize::from(first),
        0x81..=0x84 => {
            let octets = usize::from(first & 0x7f);
            let (len, after) = rest.split_at_checked(octets)?;
            rest = after;
            len.iter().fold(0usize, |len, b| len << 8 | usize::from(*b))
        }
        _ => return None,
    };
    let (contents, after) = rest.split_at_checked(len)?;
    Some((tag, contents, after))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_subject_is_read_from_a_certificate() {
        let mut params = rcgen::CertificateParams::new(vec!["client.test".into()]).unwrap();
        let mut name = rcgen::DistinguishedName::new();
        name.push(rcgen::DnType::CommonName, "test client");
        name.push(rcgen::DnType::OrganizationName, "forkecho");
        params.distinguished_name = name;
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            subject(cert.der()).as_deref(),
            Some("CN=test client,O=forkecho")
        );
        assert_eq!(subject(b"\x30\x03\x02\x01"), None);
        assert_eq!(subject(b""), None);
    }

    #[test]
    fn the_fields_name_what_was_negotiated() {
        let info = Info {
            version: "1.3",
            cipher: "TLS13_AES_128_GCM_SHA256".into(),
            sni: Some("localhost".into()),
            alpn: None,
            client: Some("CN=a b".into()),
        };
        assert_eq!(
            Fields(Some(&info)).to_string(),
            " tls=1.3 cipher=TLS13_AES_128_GCM_SHA256 sni=localhost client=\"CN=a b\""
        );
        assert_eq!(Fields(None).to_string(), "");
    }
}
