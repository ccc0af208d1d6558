//! Echo semantics through the real binary: exact bytes back, any content, any size, many clients.

use std::sync::Barrier;
use std::thread;

use crate::util::{Server, assert_same_bytes, echo_through, have_ipv6, pattern, round_trip};

#[test]
fn round_trip_returns_exactly_what_was_sent() {
    let server = Server::start(&[]);
    let mut client = server.connect();
    assert_eq!(
        round_trip(&mut client, b"hello, forkecho\n"),
        b"hello, forkecho\n"
    );
    assert_eq!(
        round_trip(&mut client, b"second line\r\n"),
        b"second line\r\n"
    );
}

#[test]
fn binary_bytes_including_nul_come_back_unchanged() {
    let server = Server::start(&[]);
    let data: Vec<u8> = (0..=255u8).cycle().take(256 * 64).collect();
    let echoed = echo_through(server.connect(), &data);
    assert_same_bytes(&echoed, &data);
}

#[test]
fn sixteen_mib_through_one_connection_with_half_close_is_byte_exact() {
    let server = Server::start(&[]);
    let data = pattern(16, 16 << 20);
    let echoed = echo_through(server.connect(), &data);
    assert_same_bytes(&echoed, &data);
    let close = server
        .wait_for(|l| l.name() == "close")
        .expect("the close line");
    assert_eq!(close.u64("bytes"), Some(16777216), "{close}");
    assert_eq!(close.str("end"), Some("client-closed"), "{close}");
}

#[test]
fn a_one_byte_buffer_still_echoes_exactly() {
    let server = Server::start(&["--buffer-size", "1"]);
    let data = pattern(1, 64 * 1024);
    assert_same_bytes(&echo_through(server.connect(), &data), &data);
}

#[test]
fn two_hundred_concurrent_clients_each_get_their_own_data() {
    const CLIENTS: usize = 200;
    let server = Server::start(&[]);
    // Everyone connects and completes one round trip, then all wait until the test has seen
    // 200 live children at once, then all send the rest and half-close.
    let connected = Barrier::new(CLIENTS + 1);
    let counted = Barrier::new(CLIENTS + 1);
    thread::scope(|scope| {
        let workers: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let (server, connected, counted) = (&server, &connected, &counted);
                scope.spawn(move || {
                    let mut client = server.connect();
                    let hello = format!("client {i} says hello\n");
                    assert_eq!(round_trip(&mut client, hello.as_bytes()), hello.as_bytes());
                    connected.wait();
                    counted.wait();
                    let data = pattern(1000 + i as u64, 32 * 1024);
                    let echoed = echo_through(client, &data);
                    assert_same_bytes(&echoed, &data);
                })
            })
            .collect();
        connected.wait();
        let live = server.children().len();
        counted.wait();
        assert_eq!(live, CLIENTS, "one live child per connected client");
        for worker in workers {
            worker.join().expect("client thread");
        }
    });
    server.wait_for_no_children();
}

#[test]
fn ipv6_loopback_is_served_and_logged_as_ipv6() {
    if !have_ipv6() {
        eprintln!("skipped: this host has no IPv6 on loopback");
        return;
    }
    let server = Server::start(&["--bind", "::1"]);
    assert!(server.addr.is_ipv6(), "{}", server.addr);
    let mut client = server.connect();
    assert_eq!(round_trip(&mut client, b"over IPv6\n"), b"over IPv6\n");
    let local = client.local_addr().unwrap();
    assert!(server.accepted(local).unwrap().line.contains("peer=[::1]:"));
}

#[test]
fn the_read_write_fallback_echoes_exactly_too() {
    // --no-splice forces the path forkecho takes where splice(2) is refused.
    let server = Server::start(&["--no-splice", "--buffer-size", "1000"]);
    let data = pattern(2, 4 << 20);
    assert_same_bytes(&echo_through(server.connect(), &data), &data);
    let binary: Vec<u8> = (0..=255u8).cycle().take(256 * 64).collect();
    assert_same_bytes(&echo_through(server.connect(), &binary), &binary);
}

/// Sends `before`, one urgent byte (MSG_OOB, as telnet's "send synch" does), then `after`,
/// half-closes, and returns everything echoed until the server closed.
fn echo_with_urgent_byte(server: &Server, before: &[u8], after: &[u8]) -> Vec<u8> {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    let stream = server.connect();
    let mut writer = stream.try_clone().unwrap();
    let (before, after) = (before.to_vec(), after.to_vec());
    let sender = thread::spawn(move || {
        writer.write_all(&before).unwrap();
        let fd = writer.as_raw_fd();
        let sent = nix::sys::socket::send(fd, b"!", nix::sys::socket::MsgFlags::MSG_OOB);
        assert_eq!(sent, Ok(1));
        writer.write_all(&after).unwrap();
        writer.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut back = Vec::new();
    (&stream).read_to_end(&mut back).expect("read the echo");
    sender.join().unwrap();
    back
}

#[test]
fn an_urgent_byte_is_data_echoed_in_order_on_every_path() {
    // Small messages (read/write), a bulk stream (splice after the first full read), and the
    // read/write fallback.
    let small = (b"abc".to_vec(), b"def".to_vec());
    let bulk = (pattern(3, 100_000), pattern(4, 100_000));
    for args in [&[][..], &["--no-splice"][..]] {
        let server = Server::start(args);
        for (before, after) in [&small, &bulk] {
            let back = echo_with_urgent_byte(&server, before, after);
            let sent = [&before[..], b"!", &after[..]].concat();
            assert_same_bytes(&back, &sent);
        }
    }
}
