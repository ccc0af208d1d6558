//! `forkecho ping`: against forkecho itself (healthy, and misbehaving on purpose), against
//! servers written here that corrupt or truncate the echo, against socat as a foreign server,
//! and with the arguments a user gets wrong.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Output, Stdio};
use std::thread;

use crate::util::{DEADLINE, Server, have_ipv6, run_to_completion};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn ping(args: &[&str]) -> Output {
    let mut command = Command::new(crate::util::binary());
    command.arg("ping").args(args);
    run_to_completion(command)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `N sent, N echoed, N corrupt, N lost` counts of the summary.
fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn counts(out: &Output) -> [u64; 4] {
    let text = stdout(out);
    let line = text
        .lines()
        .find(|l| l.contains(" sent, "))
        .unwrap_or_else(|| panic!("no summary in:\n{text}"));
    let numbers: Vec<u64> = line
        .split(", ")
        .take(4)
        .map(|part| part.split(' ').next().unwrap().parse().unwrap())
        .collect();
    numbers.try_into().unwrap()
}

fn probe_lines(out: &Output) -> Vec<String> {
    stdout(out)
        .lines()
        .filter(|l| l.contains(": seq="))
        .map(str::to_string)
        .collect()
}

#[test]
fn probes_to_forkecho_all_come_back_intact() {
    let server = Server::start(&[]);
    let target = server.addr.to_string();
    let out = ping(&["-c", "3", "-i", "0.01", &target]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let lines = probe_lines(&out);
    assert_eq!(lines.len(), 3, "{lines:?}");
    for (n, line) in lines.iter().enumerate() {
        let prefix = format!("56 bytes from {target}: seq={} time=", n + 1);
        assert!(line.starts_with(&prefix) && line.ends_with(" ms"), "{line}");
    }
    assert_eq!(counts(&out), [3, 3, 0, 0]);
    let text = stdout(&out);
    assert!(text.contains("0% lost/corrupt"), "{text}");
    assert!(text.contains("rtt min/avg/max/mdev = "), "{text}");
    // One connection for the whole run.
    server
        .wait_for_events(1, DEADLINE, |l| l.name() == "close")
        .unwrap();
    let accepts = server
        .events()
        .iter()
        .filter(|l| l.name() == "accept")
        .count();
    assert_eq!(accepts, 1);
}

#[test]
fn a_connection_the_server_closed_while_idle_is_replaced_not_counted_corrupt() {
    // The server drops the connection 0.1 s after each echo; the probes come 0.5 s apart.
    let server = Server::start(&["--idle-timeout", "0.1"]);
    let out = ping(&["-c", "2", "-i", "0.5", &server.addr.to_string()]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(counts(&out), [2, 2, 0, 0]);
    // The first connection timed out idle; the second served the second probe.
    let closes = server
        .wait_for_events(2, DEADLINE, |l| l.name() == "close")
        .unwrap();
    assert_eq!(closes[0].str("end"), Some("idle-timeout"), "{closes:?}");
}

#[test]
fn connect_opens_a_connection_per_probe_and_times_it_apart() {
    let server = Server::start(&[]);
    let out = ping(&["--connect", "-c", "3", "-i", "0", &server.addr.to_string()]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    for line in probe_lines(&out) {
        assert!(
            line.contains(" connect=") && line.contains(" time="),
            "{line}"
        );
    }
    assert!(stdout(&out).contains("connect min/avg/max/mdev = "));
    server
        .wait_for_events(3, DEADLINE, |l| l.name() == "close")
        .unwrap();
}

#[test]
fn large_payloads_are_sent_and_read_back_together() {
    // Larger than both sockets' buffers: sending it all before reading would deadlock.
    let server = Server::start(&[]);
    let out = ping(&["-c", "2", "-i", "0", "-s", "8M", &server.addr.to_string()]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(counts(&out), [2, 2, 0, 0]);
}

#[test]
fn a_host_name_resolves_and_ipv6_works() {
    let server = Server::start(&[]);
    let out = ping(&["-c", "1", &format!("localhost:{}", server.addr.port())]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).starts_with(&format!("PING localhost:{} (", server.addr.port())));
    if !have_ipv6() {
        eprintln!("skipping the IPv6 half: no ::1 on this machine");
        return;
    }
    let server = Server::start(&["-b", "::1"]);
    let out = ping(&["-c", "1", &format!("[::1]:{}", server.addr.port())]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

/// A server that echoes with `mangle` applied to each connection's bytes as they pass.
fn mangling_server(mangle: fn(usize, &mut Vec<u8>) -> bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { return };
            thread::spawn(move || {
                let mut seen = 0;
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = client.read(&mut buf) {
                    let mut chunk = buf[..n].to_vec();
                    let go_on = mangle(seen, &mut chunk);
                    seen += n;
                    if client.write_all(&chunk).is_err() || !go_on {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn a_flipped_byte_is_reported_as_corrupt_not_lost() {
    // Flips byte 10 of every connection: the first probe's byte 10, and after it (ping starts a
    // fresh connection once a probe fails) the next probe's.
    let addr = mangling_server(|seen, chunk| {
        if (seen..seen + chunk.len()).contains(&10) {
            chunk[10 - seen] ^= 0x20;
        }
        true
    });
    let out = ping(&["-c", "2", "-i", "0", &addr.to_string()]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let lines = probe_lines(&out);
    assert!(lines[0].contains("seq=1 corrupt: byte 10 is "), "{lines:?}");
    assert!(lines[1].contains("seq=2 corrupt: byte 10 is "), "{lines:?}");
    assert_eq!(counts(&out), [2, 0, 2, 0]);
    assert!(stdout(&out).contains("100% lost/corrupt"));
}

#[test]
fn an_echo_cut_short_is_reported_as_truncated() {
    // Echoes the first 20 bytes, then closes.
    let addr = mangling_server(|_, chunk| {
        chunk.truncate(20);
        false
    });
    let out = ping(&["-c", "1", &addr.to_string()]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let lines = probe_lines(&out);
    assert!(
        lines[0].contains("truncated: connection closed after 20 bytes"),
        "{lines:?}"
    );
    assert_eq!(counts(&out), [1, 0, 1, 0]);
}

#[test]
fn a_server_that_sends_back_more_than_it_received_fails_with_surplus() {
    // Every chunk twice: the whole echo comes back, then a copy of it.
    let twice = mangling_server(|_, chunk| {
        chunk.extend_from_within(..);
        true
    });
    // One stray byte after the echo.
    let stray = mangling_server(|_, chunk| {
        chunk.push(b'!');
        true
    });
    for addr in [twice, stray] {
        let target = addr.to_string();
        for args in [
            &["-c", "1"][..],
            &["-c", "3", "-i", "0", "--connect"],
            &["-c", "3", "-i", "0.05"],
        ] {
            let out = ping(&[args, &[target.as_str()]].concat());
            let text = stdout(&out);
            assert_eq!(out.status.code(), Some(1), "{args:?}: {text}");
            assert!(text.contains("seq=1 surplus: "), "{args:?}: {text}");
            // The surplus is never blamed on the probe after it as corruption.
            assert!(!text.contains("corrupt: byte"), "{args:?}: {text}");
            let [sent, echoed, corrupt, lost] = counts(&out);
            assert_eq!((sent, lost), (args[1].parse().unwrap(), 0), "{text}");
            assert_eq!(echoed + corrupt, sent, "{text}");
            assert!(echoed < sent, "{text}");
        }
    }
}

#[test]
fn a_healthy_server_shows_no_surplus_on_any_path() {
    let server = Server::start(&[]);
    let target = server.addr.to_string();
    for args in [
        &["-c", "2", "-i", "0"][..],
        &["-c", "2", "-i", "0", "--connect"],
    ] {
        let out = ping(&[args, &[target.as_str()], &["--json"]].concat());
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        assert_eq!(out.status.code(), Some(0), "{json}");
        assert_eq!(json["surplus"].as_u64(), Some(0), "{json}");
        assert_eq!(json["echoed"].as_u64(), Some(2), "{json}");
    }
}

#[test]
fn a_server_that_stalls_loses_probes_at_the_timeout() {
    // forkecho misbehaving on purpose: it echoes nothing at all.
    let server = Server::start(&["--stall-after", "0"]);
    let out = ping(&["-c", "2", "-i", "0", "-W", "0.2", &server.addr.to_string()]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(probe_lines(&out).iter().all(|l| l.contains("timeout")));
    assert_eq!(counts(&out), [2, 0, 0, 2]);
    assert!(stdout(&out).contains("100% lost/corrupt"));
}

#[test]
fn round_trips_include_the_servers_delay() {
    let server = Server::start(&["--delay", "50"]);
    let out = ping(&["-c", "2", "-i", "0", &server.addr.to_string()]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    for line in probe_lines(&out) {
        let ms: f64 = line
            .split("time=")
            .nth(1)
            .and_then(|t| t.strip_suffix(" ms"))
            .unwrap()
            .parse()
            .unwrap();
        assert!(ms >= 49.9, "{line}");
    }
}

#[test]
fn a_refused_connection_is_a_loss() {
    let port = crate::util::free_port();
    let out = ping(&["-c", "2", "-i", "0", &format!("127.0.0.1:{port}")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        probe_lines(&out).iter().all(|l| l.contains("refused")),
        "{}",
        stdout(&out)
    );
    assert_eq!(counts(&out), [2, 0, 0, 2]);
}

#[test]
fn quiet_prints_the_first_line_and_the_summary_and_json_only_the_summary() {
    let server = Server::start(&[]);
    let target = server.addr.to_string();
    let out = ping(&["-q", "-c", "2", "-i", "0", &target]);
    assert_eq!(out.status.code(), Some(0));
    assert!(probe_lines(&out).is_empty(), "{}", stdout(&out));
    assert!(stdout(&out).starts_with("PING "));
    assert_eq!(counts(&out), [2, 2, 0, 0]);

    let out = ping(&["--json", "-c", "2", "-i", "0", &target]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1, "{text}");
    let json: serde_json::Value = serde_json::from_str(&text).expect("one JSON object");
    assert_eq!(json["target"], target.as_str());
    assert_eq!(json["address"], target.as_str());
    assert_eq!(
        (json["sent"].as_u64(), json["echoed"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(
        (json["corrupt"].as_u64(), json["lost"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(json["loss_percent"].as_f64(), Some(0.0));
    assert!(json["rtt_ms"]["min"].as_f64().unwrap() > 0.0);
    assert!(json["connect_ms"].is_null());
}

#[test]
fn json_implies_quiet_so_q_with_json_is_no_error() {
    let server = Server::start(&[]);
    let target = server.addr.to_string();
    let out = ping(&["-c", "1", "-q", "--json", "-i", "0", &target]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1, "{text}");
    let json: serde_json::Value = serde_json::from_str(&text).expect("one JSON object");
    assert_eq!(json["echoed"].as_u64(), Some(1));
}

#[test]
fn ctrl_c_ends_the_run_with_the_summary() {
    let server = Server::start(&[]);
    let mut child = Command::new(crate::util::binary())
        .args(["ping", "-i", "0.05", &server.addr.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    // The first line, then two probes.
    while seen.lines().filter(|l| l.contains(": seq=")).count() < 2 {
        assert_ne!(stdout.read_line(&mut seen).unwrap(), 0, "{seen}");
    }
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    let status = crate::util::output_within_deadline(child, "forkecho ping").status;
    assert_eq!(status.code(), Some(0), "{seen}{rest}");
    assert!(rest.contains("forkecho ping statistics"), "{rest}");
    assert!(rest.contains("0% lost/corrupt"), "{rest}");
}

#[test]
fn usage_and_resolution_errors_exit_2_naming_the_value() {
    for (args, needle) in [
        (&["127.0.0.1"][..], "'127.0.0.1'"),
        (&["-c", "0", "127.0.0.1:7"], "'0'"),
        (&["-W", "0", "127.0.0.1:7"], "'0'"),
        (&["-s", "0", "127.0.0.1:7"], "'0'"),
        (&["-i", "soon", "127.0.0.1:7"], "'soon'"),
        (&["no-such-host.invalid:7"], "'no-such-host.invalid:7'"),
        (&[], "HOST:PORT"),
    ] {
        let out = ping(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    // Server options do not go with the subcommand.
    let out = run_to_completion({
        let mut command = Command::new(crate::util::binary());
        command.args(["--port", "7", "ping", "127.0.0.1:7"]);
        command
    });
    assert_eq!(out.status.code(), Some(2));
}

#[test]
#[ignore = "run with: cargo test -- --ignored (uses socat)"]
fn probes_to_socat_as_a_foreign_echo_server_come_back_intact() {
    let port = crate::util::free_port();
    let mut socat = Command::new("socat")
        .args([
            &format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork"),
            "PIPE",
        ])
        .spawn()
        .expect("run socat");
    let target = format!("127.0.0.1:{port}");
    let _ = crate::util::connect_when_up(target.parse().unwrap());
    let out = ping(&["-c", "3", "-i", "0", "-s", "1000", &target]);
    let _ = socat.kill();
    let _ = socat.wait();
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(counts(&out), [3, 3, 0, 0]);
}
