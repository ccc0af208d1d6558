//! Certificates made the common way with `openssl`, which rustls refuses: what forkecho says
//! about them, on the server's close line and in `forkecho ping`, must tell the user what is
//! wrong with the certificate and how to make it instead; and the man page's recipe for one it
//! takes; and `--tls-client-cert-out`, which makes the client certificate itself.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use crate::util::{
    DEADLINE, Scratch, Server, binary, fails_to_start, run_client, run_to_completion,
};

/// Runs `openssl` with `args` (split at spaces) in `dir`; panics with its stderr if it fails.
fn openssl(dir: &Path, args: &str) {
    let out = Command::new("openssl")
        .args(args.split(' '))
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`ca.pem`, `ca.key`: `openssl req -x509`, so CA:TRUE) that names localhost.
fn make_ca(dir: &Path) {
    openssl(
        dir,
        "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key \
         -out ca.pem -days 1 -subj /CN=localhost -addext subjectAltName=DNS:localhost",
    );
}

/// A client certificate (`client.pem`, `client.key`) the CA signs: with `extfile`'s extensions
/// (X.509 v3), or without (what `openssl x509 -req` then makes: v1).
fn make_client(dir: &Path, extfile: Option<&str>) {
    openssl(
        dir,
        "req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout client.key \
         -out client.csr -subj /CN=client",
    );
    let sign = "x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 7 \
                -out client.pem";
    match extfile {
        Some(extfile) => openssl(dir, &format!("{sign} -extfile {extfile}")),
        None => openssl(dir, sign),
    }
}

/// A `--tls` server that asks for client certificates from `dir`'s CA (and `args`), and
/// `openssl s_client` sending it `input` with `dir`'s client certificate.
fn mutual_tls(dir: &Scratch, args: &[&str], input: &[u8]) -> (Server, Output) {
    let (server_ca, ca) = (dir.path("server-ca.pem"), dir.path("ca.pem"));
    let mut all = vec!["--tls", "--tls-ca-out", server_ca.to_str().unwrap()];
    all.extend(["--tls-client-ca", ca.to_str().unwrap()]);
    all.extend_from_slice(args);
    let server = Server::start(&all);
    let connect = format!("localhost:{}", server.addr.port());
    let (cert, key) = (dir.path("client.pem"), dir.path("client.key"));
    let mut args = vec!["s_client", "-connect", &connect, "-quiet"];
    args.extend(["-CAfile", server_ca.to_str().unwrap()]);
    args.extend([
        "-cert",
        cert.to_str().unwrap(),
        "-key",
        key.to_str().unwrap(),
    ]);
    let out = run_client("openssl", &args, input.to_vec());
    (server, out)
}

#[test]
#[ignore = "run with: cargo test -- --ignored (uses openssl)"]
fn a_version_1_client_certificate_is_refused_in_words() {
    let dir = Scratch::new("tls-made-v1");
    make_ca(&dir.0);
    make_client(&dir.0, None);
    let (server, _) = mutual_tls(&dir, &[], b"hello\n");
    let line = server
        .wait_for(|l| l.str("end") == Some("tls-handshake"))
        .expect("the refused handshake");
    assert!(
        line.line.contains("the certificate is X.509 version 1"),
        "{line}"
    );
    assert!(line.line.contains("extendedKeyUsage clientAuth"), "{line}");
    assert!(line.line.contains("UnsupportedCertVersion"), "{line}");
}

#[test]
#[ignore = "run with: cargo test -- --ignored (uses openssl)"]
fn a_ca_certificate_served_as_the_servers_own_is_explained_by_ping() {
    let dir = Scratch::new("tls-made-ca");
    make_ca(&dir.0);
    let (cert, key) = (dir.path("ca.pem"), dir.path("ca.key"));
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let server = Server::start(&["--tls-cert", cert, "--tls-key", key]);
    let mut command = Command::new(binary());
    command
        .args(["ping", "--tls", "-c", "1", "-W", "5", "--tls-ca", cert])
        .arg(format!("localhost:{}", server.addr.port()));
    let out = run_to_completion(command);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("the certificate is a CA's"), "{text}");
    assert!(text.contains("CA:FALSE"), "{text}");
}

/// The extensions the man page's recipe for a client certificate puts in `client.ext`.
const CLIENT_EXT: [&str; 3] = [
    "basicConstraints=CA:FALSE",
    "keyUsage=digitalSignature",
    "extendedKeyUsage=clientAuth",
];

#[test]
#[ignore = "run with: cargo test -- --ignored (uses openssl)"]
fn the_man_page_recipe_for_a_client_certificate_is_taken() {
    let dir = Scratch::new("tls-made-v3");
    make_ca(&dir.0);
    std::fs::write(dir.path("client.ext"), CLIENT_EXT.join("\n") + "\n").unwrap();
    make_client(&dir.0, Some("client.ext"));
    // The man page gives the same extensions and the same signing step.
    let man = Command::new(binary()).arg("--man").output().unwrap().stdout;
    let man = String::from_utf8(man).unwrap().replace("\\-", "-");
    for needle in CLIENT_EXT.iter().chain(&["-extfile client.ext"]) {
        assert!(man.contains(needle), "the man page's recipe lacks {needle}");
    }
    // s_client -quiet waits for the server to close: it does, after the 13 bytes.
    let (server, out) = mutual_tls(&dir, &["--close-after", "13"], b"made by hand\n");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("made by hand"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = server.wait_for(|l| l.name() == "close").expect("the close");
    assert!(line.line.contains("client=\"CN=client\""), "{line}");
}

/// A server that makes the run's client certificate in `dir` (with `args`), and the path of
/// the CA that signs its own certificate.
fn made_client(dir: &Scratch, args: &[&str]) -> (Server, String) {
    let server_ca = dir.path("server-ca.pem").to_str().unwrap().to_string();
    let mut all = vec!["--tls", "--tls-ca-out", &server_ca];
    all.extend(["--tls-client-cert-out", dir.0.to_str().unwrap()]);
    all.extend_from_slice(args);
    (Server::start(&all), server_ca)
}

/// `forkecho ping --tls` against `server`, with the client certificate in `dir` or none.
fn ping(server: &Server, server_ca: &str, dir: Option<&Scratch>) -> Output {
    let mut command = Command::new(binary());
    command.args(["ping", "--tls", "-c", "1", "-W", "5", "--tls-ca", server_ca]);
    if let Some(dir) = dir {
        command.arg("--tls-cert").arg(dir.path("client.pem"));
        command.arg("--tls-key").arg(dir.path("client.key"));
    }
    command.arg(format!("localhost:{}", server.addr.port()));
    run_to_completion(command)
}

#[test]
fn the_made_client_certificate_is_written_and_required() {
    let dir = Scratch::new("tls-client-out");
    let (server, server_ca) = made_client(&dir, &[]);
    for (file, mode) in [
        ("client-ca.pem", 0o644),
        ("client.pem", 0o644),
        ("client.key", 0o600),
    ] {
        let meta = std::fs::metadata(dir.path(file)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, mode, "{file}");
    }
    // Log lines are collected as they come, maybe after the readiness line: waited for.
    server
        .wait_for(|l| l.line.contains("client-ca=\""))
        .expect("the client CA");
    let out = ping(&server, &server_ca, Some(&dir));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = server
        .wait_for(|l| l.str("end") == Some("client-closed"))
        .expect("the close");
    assert!(
        line.line.contains("client=\"CN=forkecho client\""),
        "{line}"
    );
    // Without the certificate, the handshake is refused.
    let out = ping(&server, &server_ca, None);
    assert_eq!(out.status.code(), Some(1));
    server
        .wait_for(|l| l.str("end") == Some("tls-handshake"))
        .expect("the refusal");
}

#[test]
fn another_client_ca_decides_over_the_made_one() {
    let dir = Scratch::new("tls-client-out-other");
    let other = Scratch::new("tls-client-out-ca");
    // A CA of another run: the made client certificate is not signed by it.
    let (first, _) = made_client(&other, &[]);
    drop(first);
    let other_ca = other.path("client-ca.pem");
    let (server, server_ca) = made_client(&dir, &["--tls-client-ca", other_ca.to_str().unwrap()]);
    let out = ping(&server, &server_ca, Some(&dir));
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let line = server
        .wait_for(|l| l.str("end") == Some("tls-handshake"))
        .expect("the refusal");
    assert!(line.line.contains("UnknownIssuer"), "{line}");
    assert!(
        server
            .log()
            .contains(&format!("client-ca=\"{}\"", other_ca.display())),
        "{}",
        server.log()
    );
}

#[test]
fn an_unusable_client_certificate_directory_is_a_startup_error() {
    let dir = Scratch::new("tls-client-out-bad");
    let missing = dir.path("missing");
    let stderr = fails_to_start(&["--tls", "--tls-client-cert-out", missing.to_str().unwrap()]);
    assert!(
        stderr.contains(&format!("--tls-client-cert-out {}", missing.display())),
        "{stderr}"
    );
    // Without --tls, a usage error (exit status 2) that says what it needs.
    let mut command = Command::new(binary());
    command.args(["--tls-client-cert-out", dir.0.to_str().unwrap()]);
    let out = run_to_completion(command);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("<--tls|--tls-cert <FILE>>"), "{stderr}");
    assert!(dir.names().is_empty(), "{:?}", dir.names());
}

#[test]
#[ignore = "run with: cargo test -- --ignored (uses openssl, python3)"]
fn openssl_and_python_present_the_made_client_certificate() {
    let dir = Scratch::new("tls-client-out-real");
    let (server, server_ca) = made_client(&dir, &["--close-after", "6"]);
    let (cert, key) = (dir.path("client.pem"), dir.path("client.key"));
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let connect = format!("localhost:{}", server.addr.port());
    let args = [
        "s_client", "-connect", &connect, "-quiet", "-CAfile", &server_ca, "-cert", cert, "-key",
        key,
    ];
    let out = run_client("openssl", &args, b"hello\n".to_vec());
    assert_eq!(
        out.stdout,
        b"hello\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let script = format!(
        "import socket, ssl\n\
         c = ssl.create_default_context(cafile={server_ca:?})\n\
         c.load_cert_chain({cert:?}, {key:?})\n\
         s = c.wrap_socket(socket.create_connection(('localhost', {port})), \
         server_hostname='localhost')\n\
         s.sendall(b'python')\n\
         print(s.recv(6).decode())\n",
        port = server.addr.port()
    );
    let out = run_client("python3", &["-c", &script], Vec::new());
    assert_eq!(
        out.stdout,
        b"python\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = server
        .wait_for_events(2, DEADLINE, |l| {
            l.line.contains("client=\"CN=forkecho client\"")
        })
        .unwrap();
    assert_eq!(lines.len(), 2);
}
