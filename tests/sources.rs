//! Limits per source: `--rate-per-ip` (a token bucket per address group, checked before any
//! fork) and the address grouping both it and `--max-per-ip` use (`--ipv4-prefix`,
//! `--ipv6-prefix`). Clients connect from several loopback addresses (127.0.0.2, 127.0.0.3, ...);
//! the IPv6 test runs in a private network namespace with a /64 of its own on loopback.

use std::io::Read;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::util::{DEADLINE, Server, round_trip};
use socket2::{Domain, Socket, Type};

/// A connection to `to` from address `from` (any port).
fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let from: IpAddr = from.parse().unwrap();
    let socket = Socket::new(Domain::for_address(to), Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::new(from, 0).into()).unwrap();
    socket.connect_timeout(&to.into(), DEADLINE).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream
}

/// Whether the server echoes on this connection (true), or closed it unserved (false).
fn served(mut stream: TcpStream) -> bool {
    use std::io::Write;
    if stream.write_all(b"hello?").is_err() {
        return false;
    }
    let mut back = [0u8; 6];
    match stream.read_exact(&mut back) {
        Ok(()) => back == *b"hello?",
        Err(_) => false,
    }
}

fn accepts(server: &Server) -> usize {
    server
        .events()
        .iter()
        .filter(|l| l.name() == "accept")
        .count()
}

#[test]
fn rate_per_ip_closes_connections_over_the_rate_before_any_fork() {
    // Three a minute: no token comes back during the test.
    let mut server = Server::start(&["--rate-per-ip", "3/60"]);
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut client = connect_from("127.0.0.1", server.addr);
        assert_eq!(round_trip(&mut client, b"ok"), b"ok");
        held.push(client);
    }
    let over = connect_from("127.0.0.1", server.addr);
    let local = over.local_addr().unwrap();
    assert!(
        !served(over),
        "the fourth within the minute is closed unserved"
    );
    let refused = server
        .wait_for(|l| l.name() == "refused" && l.str("peer") == Some(&*local.to_string()))
        .expect("the refusal");
    assert_eq!(refused.str("reason"), Some("rate-per-ip"), "{refused}");
    assert_eq!(refused.str("limit"), Some("3/60s"), "{refused}");
    assert_eq!(accepts(&server), 3, "no child for the refused one");
    // Another source has its own bucket.
    assert!(served(connect_from("127.0.0.2", server.addr)));
    drop(held);
    let stopped = server.stop();
    assert_eq!(stopped.u64("rate-limited"), Some(1), "{stopped}");
    assert_eq!(stopped.u64("accepted"), Some(4), "{stopped}");
}

#[test]
fn a_token_comes_back_after_its_interval() {
    let server = Server::start(&["--rate-per-ip", "1/0.3"]);
    let first = Instant::now();
    assert!(served(connect_from("127.0.0.1", server.addr)));
    assert!(!served(connect_from("127.0.0.1", server.addr)));
    // Try again every 20 ms: refusals take no token, so the next one is served once 0.3 s
    // have passed, and not before.
    let deadline = Instant::now() + DEADLINE;
    while !served(connect_from("127.0.0.1", server.addr)) {
        assert!(Instant::now() < deadline, "never served again");
        thread::sleep(Duration::from_millis(20));
    }
    assert!(
        first.elapsed() >= Duration::from_millis(290),
        "{:?}",
        first.elapsed()
    );
}

#[test]
fn ipv4_prefix_groups_neighbours_for_max_per_ip() {
    let server = Server::start(&["--max-per-ip", "1", "--ipv4-prefix", "24"]);
    let mut holder = connect_from("127.0.0.2", server.addr);
    assert_eq!(round_trip(&mut holder, b"mine"), b"mine");
    // 127.0.0.3 is in the same /24: refused, and the log names the group.
    let neighbour = connect_from("127.0.0.3", server.addr);
    let local = neighbour.local_addr().unwrap().to_string();
    assert!(!served(neighbour));
    let refused = server
        .wait_for(|l| l.name() == "refused" && l.str("peer") == Some(local.as_str()))
        .expect("the refusal");
    assert_eq!(refused.str("group"), Some("127.0.0.0/24"), "{refused}");
    // 127.0.1.2 is not.
    assert!(served(connect_from("127.0.1.2", server.addr)));

    // Per address by default: the neighbour is served.
    let server = Server::start(&["--max-per-ip", "1"]);
    let mut holder = connect_from("127.0.0.2", server.addr);
    assert_eq!(round_trip(&mut holder, b"mine"), b"mine");
    assert!(served(connect_from("127.0.0.3", server.addr)));
}

#[test]
fn ipv6_clients_count_per_64_by_default() {
    const ADDRS: &[&str] = &["2001:db8:0:1::1", "2001:db8:0:1::2", "2001:db8:0:2::1"];
    crate::util::netns::in_private_network(ADDRS, || {
        let mut command = Command::new(crate::util::binary());
        command.args(["--port", "0", "--bind", "::", "--max-per-ip", "1"]);
        let server = Server::spawn(command);
        let to = SocketAddr::new("2001:db8:0:1::1".parse().unwrap(), server.addr.port());
        let mut holder = connect_from("2001:db8:0:1::1", to);
        assert_eq!(round_trip(&mut holder, b"mine"), b"mine");
        // Another address of the same /64: the same host, for all forkecho can tell.
        let same_host = connect_from("2001:db8:0:1::2", to);
        let local = same_host.local_addr().unwrap().to_string();
        assert!(!served(same_host));
        let refused = server
            .wait_for(|l| l.name() == "refused" && l.str("peer") == Some(local.as_str()))
            .expect("the refusal");
        assert_eq!(refused.str("group"), Some("2001:db8:0:1::/64"), "{refused}");
        // Another /64 is another host.
        assert!(served(connect_from("2001:db8:0:2::1", to)));
    });
}
