//! `--metrics ADDR`: Prometheus text over HTTP, answered by a child per scrape, outside
//! `--max-clients` and the faults; counters that add up at quiescence; `promtool check metrics`
//! and curl as the real clients.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;

use nix::sys::signal::{Signal, kill};

use crate::util::{DEADLINE, Server, binary, round_trip, run_to_completion};

/// A server with `--metrics` on loopback port 0, and where its scrapes go: read as a harness
/// does, from the last stdout line, `metrics on http://ADDR/metrics` (after the listening lines).
pub fn with_metrics(args: &[&str]) -> (Server, SocketAddr) {
    let mut all = vec!["--metrics", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let server = Server::start(&all);
    let rest = server.readiness_lines().to_string();
    let addr = rest
        .lines()
        .last()
        .and_then(|last| last.strip_prefix("metrics on http://"))
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("stdout after the listening line: {rest:?}"))
        .parse()
        .unwrap();
    (server, addr)
}

/// One HTTP request, the way a scraper sends it; the whole answer.
fn request(addr: SocketAddr, head: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

/// The samples of a scrape: `name{labels}` to value.
pub fn scrape(addr: SocketAddr) -> HashMap<String, f64> {
    let answer = request(addr, "GET /metrics HTTP/1.1\r\nHost: forkecho\r\n\r\n");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .unwrap();
    assert_eq!(length.parse::<usize>().unwrap(), body.len());
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap();
            (name.to_string(), value.parse().unwrap())
        })
        .collect()
}

fn sum(samples: &HashMap<String, f64>, family: &str) -> f64 {
    samples
        .iter()
        .filter(|(name, _)| name.split('{').next() == Some(family))
        .map(|(_, value)| value)
        .sum()
}

#[test]
fn a_scrape_counts_what_was_served_and_is_not_counted_itself() {
    let (server, metrics) = with_metrics(&[]);
    for _ in 0..3 {
        let mut client = server.connect();
        assert_eq!(round_trip(&mut client, b"0123456789"), b"0123456789");
    }
    server
        .wait_for_events(3, DEADLINE, |l| l.name() == "close")
        .unwrap();
    // Live until reaped.
    server.wait_for_no_children();
    let first = scrape(metrics);
    assert_eq!(first["forkecho_connections_accepted_total"], 3.0);
    assert_eq!(
        first["forkecho_connections_closed_total{end=\"client-closed\"}"],
        3.0
    );
    assert_eq!(first["forkecho_echoed_bytes_total"], 30.0);
    assert_eq!(first["forkecho_connection_duration_seconds_count"], 3.0);
    assert_eq!(
        first["forkecho_connection_duration_seconds_bucket{le=\"+Inf\"}"],
        3.0
    );
    assert_eq!(first["forkecho_live_connections"], 0.0);
    let build = format!(
        "forkecho_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(first[build.as_str()], 1.0);
    assert!(first["forkecho_uptime_seconds"] > 0.0);
    let second = scrape(metrics);
    assert_eq!(
        second["forkecho_connections_accepted_total"], 3.0,
        "scrapes are not clients"
    );
    assert!(second["forkecho_uptime_seconds"] >= first["forkecho_uptime_seconds"]);
    let log = server.log();
    assert_eq!(
        server
            .events()
            .iter()
            .filter(|l| l.name() == "accept")
            .count(),
        3,
        "{log}"
    );
    assert!(
        !second.keys().any(|name| name.starts_with("forkecho_udp_")),
        "no UDP families without --udp"
    );
}

#[test]
fn with_udp_the_worker_counts_are_scraped_too() {
    let (server, metrics) = with_metrics(&["--udp", "--buffer-size", "100"]);
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut buf = [0u8; 256];
    for _ in 0..2 {
        client.send_to(b"echo me", server.addr).unwrap();
        assert_eq!(client.recv_from(&mut buf).unwrap().0, 7);
    }
    client.send_to(&[1; 200], server.addr).unwrap();
    // The worker counts an answer just after sending it, a drop as it drops.
    let mut samples = scrape(metrics);
    crate::util::eventually("the worker's counts", DEADLINE, || {
        samples = scrape(metrics);
        samples["forkecho_udp_datagrams_received_total"] == 3.0
            && samples["forkecho_udp_datagrams_echoed_total"] == 2.0
    });
    assert_eq!(samples["forkecho_udp_echoed_bytes_total"], 14.0);
    assert_eq!(
        samples["forkecho_udp_datagrams_dropped_total{reason=\"truncated\"}"],
        1.0
    );
    assert_eq!(samples["forkecho_udp_worker_restarts_total"], 0.0);
}

#[test]
fn anything_but_get_metrics_is_404_and_garbage_is_400() {
    let (server, metrics) = with_metrics(&[]);
    let answer = request(metrics, "GET / HTTP/1.1\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 404 Not Found\r\n"), "{answer}");
    let answer = request(
        metrics,
        "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 404 Not Found\r\n"), "{answer}");
    let answer = request(metrics, "\x16\x03\x01\x02\x00\x01\x00\r\n\r\n");
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer}"
    );
    // A scraper that sends nothing is closed after the timeout; the server serves on.
    let mut silent = TcpStream::connect(metrics).unwrap();
    silent.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(silent.read(&mut buf).unwrap(), 0, "closed unanswered");
    let mut client = server.connect();
    assert_eq!(round_trip(&mut client, b"still here"), b"still here");
    assert_eq!(scrape(metrics)["forkecho_connections_accepted_total"], 1.0);
}

#[test]
fn a_full_server_is_still_scraped_and_faults_never_touch_a_scrape() {
    let (server, metrics) = with_metrics(&["--max-clients", "1", "--close-after", "3"]);
    let mut held = server.connect();
    held.write_all(b"ab").unwrap();
    let mut two = [0u8; 2];
    held.read_exact(&mut two).unwrap();
    // The one place is taken: a scrape is answered all the same, whole.
    let samples = scrape(metrics);
    assert_eq!(samples["forkecho_live_connections"], 1.0);
    assert_eq!(samples["forkecho_connections_accepted_total"], 1.0);
    drop(held);
    server
        .wait_for(|l| l.name() == "close")
        .expect("the close line");
    server.wait_for_no_children();
    let samples = scrape(metrics);
    assert_eq!(samples["forkecho_live_connections"], 0.0);
    // The held client sent two bytes and closed: --close-after did not act on it.
    assert_eq!(samples["forkecho_faults_total{fault=\"close-after\"}"], 0.0);
    let back = crate::util::echo_through(server.connect(), b"0123456789");
    assert_eq!(back, b"012");
    server
        .wait_for_events(2, DEADLINE, |l| l.name() == "close")
        .unwrap();
    let samples = scrape(metrics);
    assert_eq!(samples["forkecho_faults_total{fault=\"close-after\"}"], 1.0);
    assert_eq!(
        samples["forkecho_connections_closed_total{end=\"close-after\"}"],
        1.0
    );
}

#[test]
fn the_counts_add_up_at_quiescence_after_load_refusals_and_a_killed_child() {
    let (server, metrics) = with_metrics(&["--quiet", "--rate-per-ip", "60/1"]);
    let addr = server.addr;
    // First, one killed mid-connection: it never counts its own close.
    let mut victim = server.connect();
    assert_eq!(round_trip(&mut victim, b"x"), b"x");
    let child = server
        .children()
        .first()
        .map(|&(pid, _)| pid)
        .expect("the victim's child");
    kill(nix::unistd::Pid::from_raw(child), Signal::SIGKILL).unwrap();
    server
        .wait_for(|l| l.line.contains("signal=SIGKILL"))
        .expect("the killed child");
    // Bounded load: 4 threads of 30 connections; the rate lets about 60 through and refuses the
    // rest.
    let served: usize = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(move || {
                    let mut served = 0;
                    for _ in 0..30 {
                        let mut client = TcpStream::connect(addr).unwrap();
                        client.set_read_timeout(Some(DEADLINE)).unwrap();
                        if client.write_all(b"load").is_err() {
                            continue;
                        }
                        let mut back = [0u8; 4];
                        if client.read_exact(&mut back).is_ok() {
                            served += 1;
                        }
                    }
                    served
                })
            })
            .collect();
        // Scraped while the load runs: every scrape is whole and parses.
        for _ in 0..5 {
            let samples = scrape(metrics);
            assert!(samples.contains_key("forkecho_connections_accepted_total"));
        }
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    server.wait_for_no_children();
    let samples = scrape(metrics);
    let accepted = samples["forkecho_connections_accepted_total"];
    let closed = sum(&samples, "forkecho_connections_closed_total");
    let refused = sum(&samples, "forkecho_connections_refused_total");
    let live = samples["forkecho_live_connections"];
    assert_eq!(accepted, 121.0, "{samples:?}");
    assert_eq!(accepted, closed + live + refused, "{samples:?}");
    assert_eq!(
        samples["forkecho_connections_closed_total{end=\"abnormal\"}"],
        1.0
    );
    assert_eq!(
        samples["forkecho_connections_refused_total{reason=\"rate-per-ip\"}"],
        (120 - served) as f64
    );
    // The victim's one byte counts if its child added it before the SIGKILL landed (the add
    // follows the write the client saw).
    let bytes = samples["forkecho_echoed_bytes_total"] as usize;
    assert!(
        bytes == served * 4 || bytes == served * 4 + 1,
        "{bytes} for {served} served"
    );
}

#[test]
fn a_bad_metrics_address_is_refused_by_name() {
    let mut command = Command::new(binary());
    command.args(["-b", "127.0.0.1", "-p", "0", "--metrics", "localhost"]);
    let out = run_to_completion(command);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("'localhost'") && stderr.contains("--metrics"),
        "{stderr}"
    );
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().to_string();
    let stderr = crate::util::fails_to_start(&["-b", "127.0.0.1", "-p", "0", "--metrics", &busy]);
    assert!(
        stderr.contains(&format!("unable to bind {busy}")),
        "{stderr}"
    );
}

#[test]
#[ignore = "run with: cargo test -- --ignored (uses curl and promtool (package prometheus))"]
fn promtool_accepts_a_scrape_taken_by_curl_under_load() {
    let (server, metrics) = with_metrics(&["--quiet", "--delay", "1", "--udp"]);
    let addr = server.addr;
    let load = std::thread::spawn(move || {
        for _ in 0..50 {
            let mut client = TcpStream::connect(addr).unwrap();
            client.set_read_timeout(Some(DEADLINE)).unwrap();
            assert_eq!(round_trip(&mut client, b"load"), b"load");
        }
    });
    let url = format!("http://{metrics}/metrics");
    let curl = Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "5", &url])
        .output()
        .expect("run curl");
    assert!(
        curl.status.success(),
        "{}",
        String::from_utf8_lossy(&curl.stderr)
    );
    load.join().unwrap();
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run promtool");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(&curl.stdout)
        .unwrap();
    let out = crate::util::output_within_deadline(promtool, "promtool");
    let said = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "promtool: {said}");
    assert!(said.trim().is_empty(), "promtool found problems: {said}");
}

#[test]
fn the_metrics_address_is_on_stdout_and_a_json_field() {
    let (server, metrics) = with_metrics(&["--log-format", "json"]);
    assert_ne!(metrics.port(), 0);
    let line = server
        .wait_for(|l| l.line.contains(r#""event":"metrics""#))
        .expect("the metrics event");
    let event: serde_json::Value = serde_json::from_str(line.line.trim_start_matches("forkecho: "))
        .unwrap_or_else(|err| panic!("{err}: {line}"));
    assert_eq!(event["addresses"], serde_json::json!([metrics.to_string()]));
    assert_eq!(event["url"], format!("http://{metrics}/metrics"));
    let line = server
        .wait_for(|l| l.line.contains(r#""listening""#))
        .expect("the listening event");
    let event: serde_json::Value =
        serde_json::from_str(line.line.trim_start_matches("forkecho: ")).unwrap();
    assert_eq!(
        event["addresses"],
        serde_json::json!([server.addr.to_string()])
    );
    assert!(event.get("message").is_none(), "{line}");
    assert!(scrape(metrics).contains_key("forkecho_uptime_seconds"));
}
