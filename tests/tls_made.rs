//! Certificates made the common way with `openssl`, which rustls refuses: what forkecho says
//! about them, on the server's close line and in `forkecho ping`, must tell the user what is
//! wrong with the certificate and how to make it instead.

use std::path::Path;
use std::process::Command;

use crate::util::{Scratch, Server, binary, run_client, run_to_completion};

/// Runs `openssl ARGS` in `dir`; panics with its stderr if it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`ca.pem`, `ca.key`: `openssl req -x509`, so CA:TRUE) naming localhost.
fn make_ca(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
        ],
    );
}

#[test]
#[ignore = "run with: cargo test -- --ignored (uses openssl)"]
fn a_version_1_client_certificate_is_refused_in_words() {
    let dir = Scratch::new("tls-made-v1");
    make_ca(&dir.0);
    // The client's certificate as `openssl x509 -req` makes it without -extfile: version 1.
    openssl(
        &dir.0,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "client.key",
            "-out",
            "client.csr",
            "-subj",
            "/CN=client",
        ],
    );
    openssl(
        &dir.0,
        &[
            "x509",
            "-req",
            "-in",
            "client.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "client.pem",
            "-days",
            "1",
        ],
    );
    let server_ca = dir.path("server-ca.pem");
    let server = Server::start(&[
        "--tls",
        "--tls-ca-out",
        server_ca.to_str().unwrap(),
        "--tls-client-ca",
        dir.path("ca.pem").to_str().unwrap(),
    ]);
    let connect = format!("localhost:{}", server.addr.port());
    let (cert, key) = (dir.path("client.pem"), dir.path("client.key"));
    let args = [
        "s_client",
        "-connect",
        &connect,
        "-CAfile",
        server_ca.to_str().unwrap(),
        "-cert",
        cert.to_str().unwrap(),
        "-key",
        key.to_str().unwrap(),
        "-quiet",
    ];
    let _ = run_client("openssl", &args, b"hello\n".to_vec());
    let line = server.wait_for_line("the refused handshake", |l| l.contains("end=tls-handshake"));
    assert!(
        line.contains("the certificate is X.509 version 1"),
        "{line}"
    );
    assert!(line.contains("extendedKeyUsage clientAuth"), "{line}");
    assert!(line.contains("UnsupportedCertVersion"), "{line}");
}

#[test]
#[ignore = "run with: cargo test -- --ignored (uses openssl)"]
fn a_ca_certificate_served_as_the_servers_own_is_explained_by_ping() {
    let dir = Scratch::new("tls-made-ca");
    make_ca(&dir.0);
    let (cert, key) = (dir.path("ca.pem"), dir.path("ca.key"));
    let server = Server::start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let mut command = Command::new(binary());
    command
        .args(["ping", "--tls", "-c", "1", "-W", "5", "--tls-ca"])
        .arg(&cert)
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
    openssl(
        &dir.0,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "client.key",
            "-out",
            "client.csr",
            "-subj",
            "/CN=client",
        ],
    );
    openssl(
        &dir.0,
        &[
            "x509",
            "-req",
            "-in",
            "client.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "7",
            "-out",
            "client.pem",
            "-extfile",
            "client.ext",
        ],
    );
    // The man page gives the same commands and extensions.
    let man = String::from_utf8(Command::new(binary()).arg("--man").output().unwrap().stdout)
        .unwrap()
        .replace("\\-", "-");
    for needle in CLIENT_EXT.iter().chain(&["-extfile client.ext"]) {
        assert!(man.contains(needle), "the man page's recipe lacks {needle}");
    }
    let server_ca = dir.path("server-ca.pem");
    let server = Server::start(&[
        "--tls",
        "--tls-ca-out",
        server_ca.to_str().unwrap(),
        "--tls-client-ca",
        dir.path("ca.pem").to_str().unwrap(),
        // s_client -quiet waits for the server to close: it does, after the 13 bytes.
        "--close-after",
        "13",
    ]);
    let connect = format!("localhost:{}", server.addr.port());
    let (cert, key) = (dir.path("client.pem"), dir.path("client.key"));
    let args = [
        "s_client",
        "-connect",
        &connect,
        "-CAfile",
        server_ca.to_str().unwrap(),
        "-cert",
        cert.to_str().unwrap(),
        "-key",
        key.to_str().unwrap(),
        "-quiet",
    ];
    let out = run_client("openssl", &args, b"made by hand\n".to_vec());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("made by hand"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = server.wait_for_line("the close", |l| l.contains(" end="));
    assert!(line.contains("client=\"CN=client\""), "{line}");
}
