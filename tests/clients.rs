//! Round trips with the real clients users reach for: nc (netcat-openbsd), socat and telnet.
//!
//! Ignored in plain `cargo test` because they need those programs; `.ci/run` installs them and
//! runs these with `cargo test -- --ignored`.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;

use crate::util::{DEADLINE, Server, assert_same_bytes, have_ipv6, pattern, run_client};

fn binary_payload() -> Vec<u8> {
    let mut data: Vec<u8> = (0..=255u8).collect();
    data.extend(pattern(7, 200 * 1024));
    data
}

/// Runs a client that sends its stdin and prints what comes back: it must exit successfully
/// with the binary payload echoed byte for byte.
fn echo_with_client(program: &str, args: &[&str]) {
    let data = binary_payload();
    let out = run_client(program, args, data.clone());
    assert!(
        out.status.success(),
        "{program}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same_bytes(&out.stdout, &data);
}

/// `nc -N HOST PORT` against a server bound to `bind`.
fn nc_round_trip(bind: &str, host: &str) {
    let server = Server::start(&["--bind", bind]);
    echo_with_client("nc", &["-N", host, &server.addr.port().to_string()]);
}

#[test]
#[ignore = "run with: cargo test -- --ignored (uses nc from netcat-openbsd)"]
fn nc_round_trip_over_ipv4_is_byte_exact() {
    nc_round_trip("127.0.0.1", "127.0.0.1");
}

#[test]
#[ignore = "run with: cargo test -- --ignored (uses nc from netcat-openbsd)"]
fn nc_round_trip_over_ipv6_is_byte_exact() {
    if !have_ipv6() {
        eprintln!("skipped: this host has no IPv6 on loopback");
        return;
    }
    nc_round_trip("::1", "::1");
}

#[test]
#[ignore = "run with: cargo test -- --ignored (uses socat)"]
fn socat_round_trip_is_byte_exact() {
    let server = Server::start(&[]);
    // -t: after stdin's EOF socat half-closes and waits up to this long for the server to
    // finish; it exits as soon as the server closes, so the bound is never reached.
    echo_with_client("socat", &["-t", "20", "-", &format!("TCP:{}", server.addr)]);
}

#[test]
#[ignore = "run with: cargo test -- --ignored (uses telnet)"]
fn telnet_gets_back_what_was_typed() {
    let server = Server::start(&[]);
    let mut telnet = Command::new("telnet")
        .args(["127.0.0.1", &server.addr.port().to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run telnet (is it installed?)");
    let mut stdin = telnet.stdin.take().unwrap();
    let stdout = BufReader::new(telnet.stdout.take().unwrap());
    let (lines_tx, lines_rx) = mpsc::channel();
    thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    stdin.write_all(b"typed into telnet\n").unwrap();
    stdin.flush().unwrap();
    // telnet prints its banner (Trying / Connected / Escape character), then the echo.
    let mut seen = Vec::new();
    let echoed = loop {
        match lines_rx.recv_timeout(DEADLINE) {
            Ok(line) if line.trim_end() == "typed into telnet" => break true,
            Ok(line) => seen.push(line),
            Err(_) => break false,
        }
    };
    drop(stdin);
    let _ = telnet.kill();
    let _ = telnet.wait();
    assert!(echoed, "telnet never showed the echo; it printed {seen:?}");
    assert!(
        seen.iter().any(|l| l.starts_with("Connected to")),
        "{seen:?}"
    );
    let close = server
        .wait_for(|l| l.name() == "close")
        .expect("the close line");
    // telnet sends the typed line with CRLF: 17 characters + "\r\n".
    assert_eq!(close.u64("bytes"), Some(19), "{close}");
}
