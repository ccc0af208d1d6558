//! `--proxy-protocol`: PROXY v1 and v2 headers from a client that plays the balancer. The echo
//! never sees the header and loses nothing after it; logs and `--max-per-ip` use the address the
//! header names; a missing, broken or late header closes that connection alone, and a client
//! that sends nothing never holds up the others. (HAProxy itself: tests/scaleout.rs.)

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::util::{Event, Server, round_trip};

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

fn v1(client: &str, port: u16) -> Vec<u8> {
    format!("PROXY TCP4 {client} 127.0.0.1 {port} 9999\r\n").into_bytes()
}

/// A v2 PROXY header for an IPv4 client, with a TLV (a unique id) HAProxy may add.
fn v2(client: [u8; 4], port: u16) -> Vec<u8> {
    let mut body = client.to_vec();
    body.extend_from_slice(&[127, 0, 0, 1]);
    body.extend_from_slice(&port.to_be_bytes());
    body.extend_from_slice(&9999u16.to_be_bytes());
    body.extend_from_slice(&[0x05, 0x00, 0x03, b'a', b'b', b'c']);
    let mut header = V2_SIGNATURE.to_vec();
    header.extend_from_slice(&[0x21, 0x11]);
    header.extend_from_slice(&(body.len() as u16).to_be_bytes());
    header.extend_from_slice(&body);
    header
}

fn v2_local() -> Vec<u8> {
    let mut header = V2_SIGNATURE.to_vec();
    header.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
    header
}

/// Sends `header` and `data` in one write, half-closes, and returns the whole echo.
fn through(server: &Server, header: &[u8], data: &[u8]) -> (Vec<u8>, String) {
    let client = server.connect();
    let local = client.local_addr().unwrap().to_string();
    let mut first = header.to_vec();
    first.extend_from_slice(data);
    let back = crate::util::echo_through(client, &first);
    (back, local)
}

fn close_line_via(server: &Server, balancer: &str) -> Event {
    server
        .wait_for(|l| l.name() == "close" && l.line.contains(&format!(" via={balancer} ")))
        .unwrap_or_else(|e| panic!("the close line via {balancer}: {e}"))
}

#[test]
fn a_v1_header_names_the_client_and_is_not_echoed() {
    let server = Server::start(&["--proxy-protocol"]);
    let data = crate::util::pattern(1, 300_000);
    let (back, local) = through(&server, &v1("192.0.2.7", 41000), &data);
    crate::util::assert_same_bytes(&back, &data);
    let close = close_line_via(&server, &local);
    assert_eq!(close.str("peer"), Some("192.0.2.7:41000"), "{close}");
    assert_eq!(close.u64("bytes"), Some(300000), "{close}");
    let accept = server
        .wait_for(|l| l.name() == "accept")
        .expect("the accept line");
    assert!(
        accept
            .line
            .contains(&format!("peer=192.0.2.7:41000 via={local} ")),
        "{accept}"
    );
}

#[test]
fn a_v2_header_with_tlvs_names_the_client_and_nothing_after_it_is_lost() {
    let server = Server::start(&["--proxy-protocol"]);
    let (back, local) = through(
        &server,
        &v2([203, 0, 113, 9], 5000),
        b"right after the header",
    );
    assert_eq!(back, b"right after the header");
    let close = close_line_via(&server, &local);
    assert_eq!(close.str("peer"), Some("203.0.113.9:5000"), "{close}");
}

#[test]
fn a_header_in_pieces_is_waited_for_without_holding_up_others() {
    let server = Server::start(&["--proxy-protocol"]);
    let header = v2([198, 51, 100, 1], 6000);
    let mut slow = server.connect();
    slow.write_all(&header[..10]).unwrap();
    // Meanwhile another connection is served at once.
    let (back, _) = through(&server, &v1("192.0.2.8", 7000), b"not held up");
    assert_eq!(back, b"not held up");
    slow.write_all(&header[10..]).unwrap();
    assert_eq!(round_trip(&mut slow, b"late but whole"), b"late but whole");
}

#[test]
fn local_connections_are_served_under_the_balancers_address() {
    let server = Server::start(&["--proxy-protocol"]);
    let (back, local) = through(&server, &v2_local(), b"health check");
    assert_eq!(back, b"health check");
    let close = server
        .wait_for(|l| l.name() == "close")
        .expect("the close line");
    assert_eq!(close.str("peer"), Some(local.as_str()), "{close}");
    assert!(close.line.contains(" proxy=local "), "{close}");
    // v1's UNKNOWN is the same.
    let (back, _) = through(&server, b"PROXY UNKNOWN\r\n", b"unknown");
    assert_eq!(back, b"unknown");
}

/// Sends `first` and returns what comes back before the server closes (nothing, here), and the
/// proxy-error line for this connection.
fn refused(server: &Server, first: &[u8]) -> Event {
    let mut client = server.connect();
    let local = client.local_addr().unwrap().to_string();
    let _ = client.write_all(first);
    let mut back = Vec::new();
    let _ = client.read_to_end(&mut back);
    assert!(back.is_empty(), "{back:?}");
    server
        .wait_for(|l| l.name() == "proxy-error" && l.str("peer") == Some(local.as_str()))
        .expect("the proxy-error line")
}

#[test]
fn a_missing_broken_or_over_long_header_closes_that_connection_and_says_why() {
    let mut huge = v2([192, 0, 2, 1], 1);
    huge[14..16].copy_from_slice(&60000u16.to_be_bytes());
    let cases = [
        (
            b"hello, no header\r\n".to_vec(),
            "error=\"no PROXY protocol header\"",
        ),
        (
            b"PROXY TCP4 192.0.2.1 127.0.0.1 99999 1\r\n".to_vec(),
            "bad address or port",
        ),
        (
            [b"PROXY TCP4 ".as_slice(), &[b'9'; 200]].concat(),
            "longer than 107 bytes",
        ),
        (huge, "longer than 4096 bytes"),
        (
            b"PROXY TCP4 192.0.2.1 127.0.0.1 1000 9999\n".to_vec(),
            "ends in a bare LF",
        ),
        (
            b"PROXY TCP4 192.0.2.1 \x1b[31mX 1000 9999\r\n".to_vec(),
            "bad address or port",
        ),
        (v2([192, 0, 2, 1], 0), "v2 header with port 0"),
    ];
    // A server each: the proxy-error lines are rate-limited to one a second.
    for (first, why) in cases {
        let mut server = Server::start(&["--proxy-protocol"]);
        let line = refused(&server, &first);
        assert!(line.line.contains(why), "{line}");
        // The server goes on.
        let (back, _) = through(&server, &v1("192.0.2.9", 1234), b"still serving");
        assert_eq!(back, b"still serving");
        let stopped = server.stop();
        assert_eq!(stopped.u64("proxy-errors"), Some(1), "{stopped}");
        assert_eq!(stopped.u64("accepted"), Some(1), "{stopped}");
    }
}

#[test]
fn a_client_that_sends_no_header_is_closed_at_the_deadline() {
    let server = Server::start(&["--proxy-protocol", "--idle-timeout", "0.3"]);
    let mut silent = server.connect();
    let local = silent.local_addr().unwrap().to_string();
    let started = Instant::now();
    let mut back = Vec::new();
    let _ = silent.read_to_end(&mut back);
    let waited = started.elapsed();
    assert!(back.is_empty());
    // The kernel holds a silent connection back for a second or so (TCP_DEFER_ACCEPT), then the
    // parent gives it the deadline.
    assert!(waited >= Duration::from_millis(290), "{waited:?}");
    assert!(waited < Duration::from_secs(10), "{waited:?}");
    let line = server
        .wait_for(|l| l.name() == "proxy-error" && l.str("peer") == Some(local.as_str()))
        .expect("the proxy-error line");
    assert!(
        line.line.contains("no complete PROXY header within 0.300s"),
        "{line}"
    );
}

#[test]
fn an_incomplete_header_costs_the_parent_nothing_while_it_waits() {
    // Its bytes stay in the socket (the header is only peeked): the parent must not find it
    // readable again and again until its deadline, 1 s here.
    let server = Server::start(&["--proxy-protocol", "--idle-timeout", "1"]);
    let parent = server.pid().as_raw();
    let cpu = || crate::util::procfs::cpu(parent).expect("the parent").0;
    let mut halves = Vec::new();
    for first in [&b"PROXY "[..], &V2_SIGNATURE[..8]] {
        let mut client = server.connect();
        client.write_all(first).unwrap();
        halves.push(client);
    }
    let before = cpu();
    let started = Instant::now();
    for mut client in halves {
        let mut back = Vec::new();
        let _ = client.read_to_end(&mut back);
        assert!(back.is_empty(), "{back:?}");
    }
    let (waited, spent) = (started.elapsed(), cpu() - before);
    assert!(
        waited >= Duration::from_millis(500),
        "closed after {waited:?}"
    );
    // Spinning, the parent spent all of it (a core for the whole wait).
    assert!(
        spent < Duration::from_millis(150),
        "the parent spent {spent:?} of CPU in {waited:?} waiting for two headers"
    );
    // The connections waited their deadline out, and the server still serves.
    let (back, _) = through(&server, &v1("192.0.2.9", 1234), b"still serving");
    assert_eq!(back, b"still serving");
}

#[test]
fn a_partial_header_then_the_clients_fin_is_a_failed_header_at_once() {
    // The deadline is 5 s; the FIN says no more is coming, so nothing is waited for.
    let mut server = Server::start(&["--proxy-protocol"]);
    let parent = server.pid().as_raw();
    let cpu = || crate::util::procfs::cpu(parent).expect("the parent").0;
    let before = cpu();
    let started = Instant::now();
    let mut clients = Vec::new();
    for first in [&b"PROXY TCP4 1.2.3.4"[..], &V2_SIGNATURE[..8]] {
        let mut client = server.connect();
        client.write_all(first).unwrap();
        client.shutdown(std::net::Shutdown::Write).unwrap();
        clients.push(client);
    }
    for mut client in clients {
        let mut back = Vec::new();
        let _ = client.read_to_end(&mut back);
        assert!(back.is_empty(), "{back:?}");
    }
    let (waited, spent) = (started.elapsed(), cpu() - before);
    assert!(waited < Duration::from_secs(2), "closed after {waited:?}");
    assert!(
        spent < Duration::from_millis(150),
        "the parent spent {spent:?}"
    );
    // One line a second at most: the second is counted.
    let line = server
        .wait_for(|l| l.name() == "proxy-error")
        .expect("proxy-error");
    assert!(
        line.line.contains("closed before its whole PROXY header"),
        "{line}"
    );
    let (back, _) = through(&server, &v1("192.0.2.9", 1234), b"still serving");
    assert_eq!(back, b"still serving");
    let stopped = server.stop();
    assert_eq!(stopped.u64("proxy-errors"), Some(2), "{stopped}");
}

#[test]
fn max_per_ip_counts_the_client_the_header_names() {
    let server = Server::start(&["--proxy-protocol", "--max-per-ip", "1"]);
    let mut first = server.connect();
    first.write_all(&v1("192.0.2.50", 1000)).unwrap();
    assert_eq!(round_trip(&mut first, b"mine"), b"mine");
    // The same client through the same balancer address: refused.
    let mut second: TcpStream = server.connect();
    second.write_all(&v1("192.0.2.50", 1001)).unwrap();
    let mut back = Vec::new();
    let _ = second.read_to_end(&mut back);
    assert!(back.is_empty());
    let refused = server
        .wait_for(|l| l.name() == "refused")
        .expect("the refusal");
    assert!(
        refused.line.contains("peer=192.0.2.50:1001 via="),
        "{refused}"
    );
    // Another client through the same balancer: served.
    let (back, _) = through(&server, &v1("192.0.2.51", 1000), b"other client");
    assert_eq!(back, b"other client");
}

#[test]
fn without_the_flag_a_header_is_just_data() {
    let server = Server::start(&[]);
    let header = v1("192.0.2.7", 41000);
    let (back, _) = through(&server, &header, b"x");
    assert_eq!(back, [header.as_slice(), b"x"].concat());
}
