//! `--tls`: a CA and a certificate made per run, the CA written for clients, each
//! `--tls-fault` failing verification exactly as it says, mutual TLS, ALPN, versions, faults on
//! the plaintext, handshakes that stall or reset, `--tls-cert` files and their errors, `--inetd`,
//! `forkecho ping --tls`, and the real clients (openssl s_client, Python's ssl, socat).

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rustls::{CertificateError, Error as TlsError};

use crate::util::{
    DEADLINE, Scratch, Server, assert_same_bytes, binary, fails_to_start, output_within_deadline,
    pattern, run_client, run_to_completion,
};
use forkecho_fixture::tls::{ClientSetup, echo as echo_tls, tls_error};

/// A `--tls` server (with `args`) whose CA is written to a scratch file; the scratch directory
/// and the CA's path.
fn tls_server(what: &str, args: &[&str]) -> (Server, Scratch, std::path::PathBuf) {
    let dir = Scratch::new(what);
    let ca = dir.path("ca.pem");
    let mut all = vec!["--tls", "--tls-ca-out", ca.to_str().unwrap()];
    all.extend_from_slice(args);
    let server = Server::start(&all);
    (server, dir, ca)
}

fn trusting(ca: &std::path::Path) -> ClientSetup<'_> {
    ClientSetup {
        ca: Some(ca),
        ..ClientSetup::default()
    }
}

#[test]
fn a_tls_echo_verifies_against_the_written_ca_and_logs_the_session() {
    let (server, dir, ca) = tls_server("tls-echo", &[]);
    // Written before the readiness line, whole, and with no temporary file beside it.
    let pem = std::fs::read_to_string(&ca).unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    assert_eq!(dir.names(), ["ca.pem"]);
    let data = pattern(26, 1 << 20);
    for name in ["localhost", "127.0.0.1"] {
        let tls = trusting(&ca).connect(server.addr, name).unwrap();
        let local = tls.sock.local_addr().unwrap();
        let back = echo_tls(tls, &data).unwrap();
        assert_same_bytes(&back, &data);
        let close = server.closed(local).unwrap();
        assert_eq!(close.str("end"), Some("client-closed"), "{close}");
        assert_eq!(close.u64("bytes"), Some(data.len() as u64));
        assert_eq!(close.str("tls"), Some("1.3"), "{close}");
        assert!(close.str("cipher").is_some_and(|c| c.starts_with("TLS13_")));
        // SNI carries names, never addresses.
        let sni = (name == "localhost").then_some("localhost");
        assert_eq!(close.str("sni"), sni, "{close}");
    }
    assert!(server.log().contains("tls certificate made for 127.0.0.1,"));
}

#[test]
fn each_certificate_fault_fails_verification_with_its_own_error() {
    use CertificateError::*;
    type Check = fn(&CertificateError) -> bool;
    let wanted: [(&str, Check); 5] = [
        ("expired", |e| matches!(e, Expired | ExpiredContext { .. })),
        ("not-yet-valid", |e| {
            matches!(e, NotValidYet | NotValidYetContext { .. })
        }),
        ("wrong-name", |e| {
            matches!(e, NotValidForName | NotValidForNameContext { .. })
        }),
        ("untrusted", |e| matches!(e, UnknownIssuer)),
        ("self-signed", |e| matches!(e, UnknownIssuer)),
    ];
    for (fault, is_wanted) in wanted {
        let (server, _dir, ca) = tls_server(fault, &["--tls-fault", fault]);
        let err = trusting(&ca)
            .connect(server.addr, "localhost")
            .err()
            .unwrap_or_else(|| panic!("--tls-fault {fault}: the handshake succeeded"));
        match tls_error(&err) {
            Some(TlsError::InvalidCertificate(cert)) => {
                assert!(is_wanted(cert), "--tls-fault {fault}: {cert:?}");
            }
            other => panic!("--tls-fault {fault}: {err} ({other:?})"),
        }
        let close = server
            .wait_for(|l| l.name() == "close")
            .expect("the failed handshake's close line");
        assert_eq!(close.str("end"), Some("tls-handshake"), "{close}");
        assert!(
            close.line.contains("reason=\"received fatal alert"),
            "{close}"
        );
        assert!(server.log().contains(&format!("fault={fault}")));
    }
}

#[test]
fn the_faulted_certificates_are_otherwise_sound() {
    // Trusting the leaf's own problem away shows it is broken in that one way only: an expired
    // certificate from the written CA verifies for localhost at a time it was valid.
    let (server, _dir, ca) = tls_server("tls-wrong-name", &["--tls-fault", "wrong-name"]);
    let tls = trusting(&ca)
        .connect(server.addr, "wrong.name.invalid")
        .unwrap();
    assert_eq!(echo_tls(tls, b"named wrong").unwrap(), b"named wrong");
}

#[test]
fn a_stalled_handshake_is_closed_at_the_idle_timeout_while_others_are_served() {
    let (server, _dir, ca) = tls_server("tls-stall", &["--idle-timeout", "0.5"]);
    let mut silent = TcpStream::connect(server.addr).unwrap();
    silent.set_read_timeout(Some(DEADLINE)).unwrap();
    let started = Instant::now();
    // Served meanwhile: the silent client holds its own child, not the loop.
    let tls = trusting(&ca).connect(server.addr, "localhost").unwrap();
    assert_eq!(echo_tls(tls, b"meanwhile").unwrap(), b"meanwhile");
    let mut buf = [0u8; 16];
    assert_eq!(silent.read(&mut buf).unwrap(), 0, "closed without a word");
    assert!(started.elapsed() >= Duration::from_millis(450));
    let close = server.closed(silent.local_addr().unwrap()).unwrap();
    assert_eq!(close.str("end"), Some("tls-handshake"), "{close}");
    assert!(close.line.contains("reason=\"timed out\""), "{close}");
}

#[test]
fn stall_handshake_says_nothing_to_a_client_hello_until_the_idle_timeout() {
    let (server, _dir, ca) = tls_server(
        "tls-stall-fault",
        &["--tls-fault", "stall-handshake", "--idle-timeout", "0.4"],
    );
    let started = Instant::now();
    let err = trusting(&ca)
        .connect(server.addr, "localhost")
        .expect_err("a stalled handshake cannot succeed");
    assert!(started.elapsed() >= Duration::from_millis(350), "{err}");
    let close = server.wait_for(|l| l.name() == "close").expect("close");
    assert!(
        close
            .line
            .contains("reason=\"stall-handshake fault, timed out\""),
        "{close}"
    );
}

#[test]
fn reset_in_handshake_resets_after_the_client_hello() {
    let (server, _dir, ca) = tls_server("tls-reset", &["--tls-fault", "reset-in-handshake"]);
    let err = trusting(&ca)
        .connect(server.addr, "localhost")
        .expect_err("a reset handshake cannot succeed");
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
    let close = server.wait_for(|l| l.name() == "close").expect("close");
    assert!(
        close.line.contains("reason=\"reset-in-handshake fault\""),
        "{close}"
    );
}

#[test]
fn mutual_tls_takes_a_client_certificate_from_its_ca_and_refuses_none() {
    let dir = Scratch::new("tls-mtls");
    let (client_ca, cert, key) = client_identity("test client");
    let client_ca_path = dir.path("clients.pem");
    std::fs::write(&client_ca_path, &client_ca).unwrap();
    let (server, _d, ca) = tls_server(
        "tls-mtls-server",
        &["--tls-client-ca", client_ca_path.to_str().unwrap()],
    );
    let setup = ClientSetup {
        ca: Some(&ca),
        identity: Some((cert.clone(), key.clone())),
        ..ClientSetup::default()
    };
    let tls = setup.connect(server.addr, "localhost").unwrap();
    let local = tls.sock.local_addr().unwrap();
    assert_eq!(
        echo_tls(tls, b"with a certificate").unwrap(),
        b"with a certificate"
    );
    let close = server.closed(local).unwrap();
    assert!(close.line.ends_with("client=\"CN=test client\""), "{close}");
    // Without one: TLS 1.3 clients learn of it at their first read.
    let refused = trusting(&ca)
        .connect(server.addr, "localhost")
        .and_then(|tls| echo_tls(tls, b"without"));
    assert!(refused.is_err(), "{refused:?}");
    let line = server
        .wait_for(|l| l.str("end") == Some("tls-handshake"))
        .expect("the refusal");
    assert!(
        line.line.contains("reason=\"peer sent no certificates\""),
        "{line}"
    );
    // A certificate from another CA is refused too.
    let (_, stranger, stranger_key) = client_identity("stranger");
    let setup = ClientSetup {
        ca: Some(&ca),
        identity: Some((stranger, stranger_key)),
        ..ClientSetup::default()
    };
    let refused = setup
        .connect(server.addr, "localhost")
        .and_then(|t| echo_tls(t, b"x"));
    assert!(refused.is_err(), "{refused:?}");
    // forkecho ping presents one with --tls-cert and --tls-key.
    let (cert_path, key_path) = (dir.path("client.pem"), dir.path("client.key"));
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    let out = ping(
        &server,
        &[
            "--tls-ca",
            ca.to_str().unwrap(),
            "--tls-cert",
            cert_path.to_str().unwrap(),
            "--tls-key",
            key_path.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

#[test]
fn alpn_is_negotiated_from_the_servers_list() {
    let (server, _dir, ca) = tls_server("tls-alpn", &["--tls-alpn", "echo", "--tls-alpn", "h2"]);
    let setup = ClientSetup {
        ca: Some(&ca),
        alpn: &["http/1.1", "h2"],
        ..ClientSetup::default()
    };
    let tls = setup.connect(server.addr, "localhost").unwrap();
    assert_eq!(tls.conn.alpn_protocol(), Some(&b"h2"[..]));
    let local = tls.sock.local_addr().unwrap();
    echo_tls(tls, b"alpn").unwrap();
    assert_eq!(server.closed(local).unwrap().str("alpn"), Some("h2"));
    let setup = ClientSetup {
        ca: Some(&ca),
        alpn: &["imap"],
        ..ClientSetup::default()
    };
    let err = setup.connect(server.addr, "localhost").err().unwrap();
    assert!(
        matches!(tls_error(&err), Some(TlsError::AlertReceived(_))),
        "{err}"
    );
}

#[test]
fn tls_1_2_is_served_unless_the_minimum_is_1_3() {
    let (server, _dir, ca) = tls_server("tls-12", &[]);
    let setup = ClientSetup {
        ca: Some(&ca),
        only_12: true,
        ..ClientSetup::default()
    };
    let tls = setup.connect(server.addr, "localhost").unwrap();
    let local = tls.sock.local_addr().unwrap();
    assert_eq!(echo_tls(tls, b"twelve").unwrap(), b"twelve");
    assert_eq!(server.closed(local).unwrap().str("tls"), Some("1.2"));
    let (strict, _dir, ca) = tls_server("tls-13", &["--tls-min-version", "1.3"]);
    let setup = ClientSetup {
        ca: Some(&ca),
        only_12: true,
        ..ClientSetup::default()
    };
    assert!(setup.connect(strict.addr, "localhost").is_err());
}

#[test]
fn chunk_1_sends_every_echoed_byte_in_a_record_of_its_own() {
    let (server, _dir, ca) = tls_server("tls-chunk", &["--chunk", "1:0"]);
    let tls = trusting(&ca).connect(server.addr, "localhost").unwrap();
    let (mut conn, mut socket) = (tls.conn, tls.sock);
    conn.writer().write_all(b"0123456789").unwrap();
    conn.write_tls(&mut socket).unwrap();
    // Read the records off the wire: a TLS 1.3 record of one byte of application data is 5
    // bytes of header and 1 + 1 + 16 (the byte, its content type, the AEAD tag).
    let mut wire = Vec::new();
    let mut buf = [0u8; 4096];
    let mut plain = Vec::new();
    while plain.len() < 10 {
        let n = socket.read(&mut buf).unwrap();
        assert!(n > 0, "closed early");
        wire.extend_from_slice(&buf[..n]);
        conn.read_tls(&mut &buf[..n]).unwrap();
        conn.process_new_packets().unwrap();
        let mut more = [0u8; 64];
        while let Ok(n @ 1..) = conn.reader().read(&mut more) {
            plain.extend_from_slice(&more[..n]);
        }
    }
    assert_eq!(plain, b"0123456789");
    let mut sizes = Vec::new();
    let mut rest = &wire[..];
    while rest.len() >= 5 {
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        sizes.push((rest[0], len));
        rest = &rest[(5 + len).min(rest.len())..];
    }
    let one_byte = sizes
        .iter()
        .filter(|&&(kind, len)| kind == 23 && len == 18)
        .count();
    assert_eq!(one_byte, 10, "records (type, length): {sizes:?}");
}

#[test]
fn close_after_over_tls_echoes_exactly_the_limit_then_close_notify() {
    let (server, _dir, ca) = tls_server("tls-close-after", &["--close-after", "100"]);
    let mut tls = trusting(&ca).connect(server.addr, "localhost").unwrap();
    let data = pattern(3, 1000);
    tls.write_all(&data).unwrap();
    let mut back = Vec::new();
    // A clean end: close_notify, so read_to_end sees Ok(0), not an unexpected EOF.
    tls.read_to_end(&mut back).unwrap();
    assert_same_bytes(&back, &data[..100]);
    let close = server.closed(tls.sock.local_addr().unwrap()).unwrap();
    assert_eq!(close.str("end"), Some("close-after"), "{close}");
    assert_eq!(close.u64("bytes"), Some(100));
}

#[test]
fn delay_over_tls_holds_the_echo_back() {
    let (server, _dir, ca) = tls_server("tls-delay", &["--delay", "200"]);
    let mut tls = trusting(&ca).connect(server.addr, "localhost").unwrap();
    let started = Instant::now();
    tls.write_all(b"later").unwrap();
    let mut back = [0u8; 5];
    tls.read_exact(&mut back).unwrap();
    assert!(started.elapsed() >= Duration::from_millis(190));
    assert_eq!(&back, b"later");
    drop(server);
}

#[test]
fn a_certificate_from_files_is_served_and_bad_files_are_named() {
    let dir = Scratch::new("tls-files");
    let (cert, key) = server_identity(&["localhost"]);
    let (cert_path, key_path) = (dir.path("srv.pem"), dir.path("srv.key"));
    std::fs::write(&cert_path, &cert).unwrap();
    std::fs::write(&key_path, &key).unwrap();
    let (c, k) = (cert_path.to_str().unwrap(), key_path.to_str().unwrap());
    let server = Server::start(&["--tls-cert", c, "--tls-key", k]);
    let tls = trusting(&cert_path)
        .connect(server.addr, "localhost")
        .unwrap();
    assert_eq!(echo_tls(tls, b"from files").unwrap(), b"from files");
    let from = format!("tls certificate from {c}");
    server
        .wait_for(|l| l.line.contains(&from))
        .unwrap_or_else(|e| panic!("{from}: {e}"));
    // Each broken start names the file and what is wrong with it.
    let (_, other_key) = server_identity(&["localhost"]);
    let other = dir.path("other.key");
    std::fs::write(&other, other_key).unwrap();
    let junk = dir.path("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let missing = dir.path("missing.pem");
    let (o, j, m) = (
        other.to_str().unwrap(),
        junk.to_str().unwrap(),
        missing.to_str().unwrap(),
    );
    let cases: [(&[&str], &str); 5] = [
        (&["--tls-cert", c, "--tls-key", o], "do not go together"),
        (&["--tls-cert", j, "--tls-key", k], "no certificate in it"),
        (&["--tls-cert", m, "--tls-key", k], "No such file"),
        (&["--tls-cert", c, "--tls-key", j], "no private key in it"),
        (
            &["--tls-cert", c, "--tls-key", k, "--tls-fault", "expired"],
            "cannot break",
        ),
    ];
    for (args, wanted) in cases {
        let err = fails_to_start(args);
        assert!(err.contains(wanted), "{args:?}: {err}");
        let named = args
            .iter()
            .skip(1)
            .step_by(2)
            .any(|value| err.contains(value));
        assert!(named, "{args:?}: {err}");
    }
    let err = fails_to_start(&["--tls", "--tls-client-ca", m]);
    assert!(err.contains(m), "{err}");
    let err = fails_to_start(&["--tls", "--tls-alpn", ""]);
    assert!(err.contains("--tls-alpn ''"), "{err}");
    // A usage error (exit status 2), naming what is missing.
    let mut command = Command::new(binary());
    command.args(["--tls-fault", "expired"]);
    let out = run_to_completion(command);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("<--tls|--tls-cert <FILE>>"));
}

#[test]
fn inetd_serves_tls_on_a_socket_a_launcher_accepted() {
    let dir = Scratch::new("tls-inetd");
    let (cert, key) = server_identity(&["localhost"]);
    let (cert_path, key_path) = (dir.path("srv.pem"), dir.path("srv.key"));
    std::fs::write(&cert_path, &cert).unwrap();
    std::fs::write(&key_path, &key).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let client = std::thread::spawn({
        let cert_path = cert_path.clone();
        move || {
            let tls = trusting(&cert_path).connect(addr, "localhost").unwrap();
            echo_tls(tls, b"inetd over tls").unwrap()
        }
    });
    let (server_end, _) = listener.accept().unwrap();
    let fd = OwnedFd::from(server_end);
    let child = Command::new(binary())
        .args(["--inetd", "--tls-cert", cert_path.to_str().unwrap()])
        .args(["--tls-key", key_path.to_str().unwrap()])
        .stdin(fd.try_clone().unwrap())
        .stdout(fd)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert_eq!(client.join().unwrap(), b"inetd over tls");
    let out = output_within_deadline(child, "forkecho --inetd --tls-cert");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("end=client-closed tls=1.3"), "{err}");
}

/// `forkecho ping --tls -c 2 -i 0` against `server` with `args`.
fn ping(server: &Server, args: &[&str]) -> std::process::Output {
    let mut command = Command::new(binary());
    command
        .args(["ping", "--tls", "-c", "2", "-i", "0", "-W", "5"])
        .args(args)
        .arg(format!("localhost:{}", server.addr.port()));
    run_to_completion(command)
}

#[test]
fn ping_verifies_the_server_and_times_the_handshake_apart() {
    let (server, _dir, ca) = tls_server("tls-ping", &[]);
    let out = ping(&server, &["--tls-ca", ca.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("seq=1 handshake="), "{text}");
    assert!(text.contains("\nhandshake min/avg/max/mdev = "), "{text}");
    // An untrusted server is a lost probe that says why, and exit status 1.
    let (other, _d, _) = tls_server("tls-ping-other", &[]);
    let out = ping(&other, &["--tls-ca", ca.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("invalid peer certificate: UnknownIssuer"),
        "{text}"
    );
    // --tls-insecure takes it, and the faults still shape the echo: --chunk splits it.
    let out = ping(&other, &["--tls-insecure", "--json"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let summary: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(summary["echoed"], 2);
    assert!(summary["handshake_ms"]["avg"].as_f64().unwrap() > 0.0);
}

#[test]
fn a_tls_server_keeps_serving_through_garbage_and_half_handshakes() {
    let (server, _dir, ca) = tls_server("tls-garbage", &[]);
    let mut garbage = TcpStream::connect(server.addr).unwrap();
    garbage.set_read_timeout(Some(DEADLINE)).unwrap();
    garbage.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut rest = Vec::new();
    // An alert, then the close; never an echo of the plaintext.
    let _ = garbage.read_to_end(&mut rest);
    assert!(!rest.windows(3).any(|w| w == b"GET"), "{rest:?}");
    let half = TcpStream::connect(server.addr).unwrap();
    (&half)
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .unwrap();
    drop(half);
    let tls = trusting(&ca).connect(server.addr, "localhost").unwrap();
    assert_eq!(echo_tls(tls, b"still here").unwrap(), b"still here");
    let lines = server
        .wait_for_events(2, DEADLINE, |l| l.str("end") == Some("tls-handshake"))
        .unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l.line.contains("reason=\"client closed\"")),
        "{lines:?}"
    );
}

// Real clients.

/// `openssl s_client` to `server` for localhost, verifying against `ca` (and `extra` options),
/// with `input` on its stdin.
fn s_client(
    server: &Server,
    ca: &std::path::Path,
    extra: &[&str],
    input: &[u8],
) -> std::process::Output {
    let connect = format!("localhost:{}", server.addr.port());
    let mut args = vec![
        "s_client",
        "-connect",
        &connect,
        "-CAfile",
        ca.to_str().unwrap(),
    ];
    args.extend([
        "-verify_return_error",
        "-verify_hostname",
        "localhost",
        "-quiet",
    ]);
    args.extend_from_slice(extra);
    run_client("openssl", &args, input.to_vec())
}

#[test]
#[ignore = "run with: cargo test -- --ignored (uses openssl (the command))"]
fn openssl_s_client_verifies_and_round_trips_and_reports_each_fault() {
    // s_client leaves at the end of its input without waiting for the echo, or (with -quiet's
    // -ign_eof) waits for the server to close: --close-after closes once the line is echoed.
    let (server, _dir, ca) = tls_server("tls-openssl", &["--close-after", "16"]);
    let out = s_client(&server, &ca, &[], b"through openssl\n");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "through openssl\n",
        "{out:?}"
    );
    let wanted = [
        ("expired", "certificate has expired"),
        ("not-yet-valid", "certificate is not yet valid"),
        ("wrong-name", "hostname mismatch"),
        ("untrusted", "unable to get local issuer certificate"),
        ("self-signed", "self-signed certificate"),
    ];
    for (fault, message) in wanted {
        let (server, _dir, ca) = tls_server(fault, &["--tls-fault", fault]);
        let out = s_client(&server, &ca, &["-no_ign_eof"], b"never echoed\n");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(message), "--tls-fault {fault}: {err}");
        assert!(out.stdout.is_empty());
        assert_ne!(out.status.code(), Some(0));
    }
}

#[test]
#[ignore = "run with: cargo test -- --ignored (uses python3)"]
fn python_ssl_round_trips_and_reports_each_fault() {
    let script = "import socket, ssl, sys\n\
        ctx = ssl.create_default_context(cafile=sys.argv[2])\n\
        try:\n\
        \x20   s = ctx.wrap_socket(socket.create_connection(('127.0.0.1', int(sys.argv[1]))),\n\
        \x20                       server_hostname='localhost')\n\
        except ssl.SSLCertVerificationError as e:\n\
        \x20   print('refused:', e.verify_message); sys.exit(0)\n\
        s.sendall(b'from python ' * 1000)\n\
        got = b''\n\
        while len(got) < 12000:\n\
        \x20   got += s.recv(65536)\n\
        print(s.version(), got == b'from python ' * 1000)\n";
    let run = |server: &Server, ca: &std::path::Path| {
        let mut command = Command::new("python3");
        command.args([
            "-c",
            script,
            &server.addr.port().to_string(),
            ca.to_str().unwrap(),
        ]);
        let out = run_to_completion(command);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let (server, _dir, ca) = tls_server("tls-python", &[]);
    assert_eq!(run(&server, &ca), "TLSv1.3 True");
    let wanted = [
        ("expired", "certificate has expired"),
        ("not-yet-valid", "certificate is not yet valid"),
        (
            "wrong-name",
            "Hostname mismatch, certificate is not valid for 'localhost'.",
        ),
        ("untrusted", "unable to get local issuer certificate"),
        ("self-signed", "self-signed certificate"),
    ];
    for (fault, message) in wanted {
        let (server, _dir, ca) = tls_server(fault, &["--tls-fault", fault]);
        assert_eq!(run(&server, &ca), format!("refused: {message}"), "{fault}");
    }
}

#[test]
#[ignore = "run with: cargo test -- --ignored (uses socat)"]
fn socat_openssl_is_a_client_too() {
    let (server, _dir, ca) = tls_server("tls-socat", &[]);
    let target = format!(
        "OPENSSL:localhost:{},cafile={},verify=1",
        server.addr.port(),
        ca.display()
    );
    let data = pattern(9, 100_000);
    let out = run_client("socat", &["-t", "5", "-", &target], data.clone());
    assert_same_bytes(&out.stdout, &data);
}

#[test]
fn tls_comes_after_a_proxy_header_and_works_on_unix_sockets() {
    let dir = Scratch::new("tls-proxy-unix");
    let ca = dir.path("ca.pem");
    let sock = dir.unix("fe.sock");
    let server = Server::start(&[
        "--tls",
        "--tls-ca-out",
        ca.to_str().unwrap(),
        "--proxy-protocol",
        "-b",
        "127.0.0.1",
    ]);
    // The PROXY header first, in the clear; then the handshake on the same connection.
    let mut socket = TcpStream::connect(server.addr).unwrap();
    socket.set_read_timeout(Some(DEADLINE)).unwrap();
    let local = socket.local_addr().unwrap();
    let header = format!("PROXY TCP4 192.0.2.7 127.0.0.1 4242 {}\r\n", local.port());
    socket.write_all(header.as_bytes()).unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(trusting(&ca).config().unwrap(), name).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut socket).unwrap();
    }
    let tls = rustls::StreamOwned::new(conn, socket);
    assert_eq!(echo_tls(tls, b"behind a proxy").unwrap(), b"behind a proxy");
    let close = server.wait_for(|l| l.name() == "close").expect("close");
    assert_eq!(close.str("peer"), Some("192.0.2.7:4242"), "{close}");
    assert_eq!(close.str("tls"), Some("1.3"), "{close}");
    // A Unix listener speaks TLS too: ping sends localhost as the name.
    let unix = Server::start(&["--tls", "--tls-ca-out", ca.to_str().unwrap(), "-b", &sock]);
    let mut command = Command::new(binary());
    command.args([
        "ping",
        "--tls",
        "--tls-ca",
        ca.to_str().unwrap(),
        "-c",
        "1",
        &sock,
    ]);
    let out = run_to_completion(command);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let close = unix.wait_for(|l| l.name() == "close").expect("close");
    assert_eq!(close.str("sni"), Some("localhost"), "{close}");
}

#[test]
fn failed_handshakes_are_counted_apart_by_the_metrics() {
    let dir = Scratch::new("tls-metrics");
    let ca = dir.path("ca.pem");
    let ca_out = ca.to_str().unwrap();
    let (server, metrics) = crate::metrics::with_metrics(&["--tls", "--tls-ca-out", ca_out]);
    let tls = trusting(&ca).connect(server.addr, "localhost").unwrap();
    echo_tls(tls, b"counted").unwrap();
    // Trusting nothing: the client refuses the certificate and says so with an alert.
    assert!(
        ClientSetup::default()
            .connect(server.addr, "localhost")
            .is_err()
    );
    server
        .wait_for_events(2, DEADLINE, |l| l.name() == "close")
        .unwrap();
    let samples = crate::metrics::scrape(metrics);
    let ended = |end: &str| samples[&format!("forkecho_connections_closed_total{{end=\"{end}\"}}")];
    assert_eq!(ended("tls-handshake"), 1.0);
    assert_eq!(ended("client-closed"), 1.0);
    assert_eq!(ended("error"), 0.0);
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
