//! What the UDP worker must not be drawn into: a loop with another echo server or with itself,
//! started by one forged datagram, and a flood that would queue without end under `--delay`.
//! Forging a source address takes a raw socket (root); without one these tests say skipped.

use std::net::{SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::udp::{ask, client, stats, stats_when};
use crate::util::procfs::status;
use crate::util::{DEADLINE, Event, Server, eventually};

/// Sends one UDP datagram "from" `from` to `to` (IPv4) through a raw socket: None when this
/// process may not open one.
fn forge(from: SocketAddrV4, to: SocketAddrV4, payload: &[u8]) -> Option<()> {
    use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockType, SockaddrIn, sendto};
    let raw = nix::sys::socket::socket(
        AddressFamily::Inet,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        Some(nix::sys::socket::SockProtocol::Raw),
    );
    let Ok(raw) = raw else {
        eprintln!("skipped: forging a source address needs a raw socket (root)");
        return None;
    };
    let total = (20 + 8 + payload.len()) as u16;
    let mut packet = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0];
    packet[2..4].copy_from_slice(&total.to_be_bytes());
    packet.extend_from_slice(&from.ip().octets());
    packet.extend_from_slice(&to.ip().octets());
    packet.extend_from_slice(&from.port().to_be_bytes());
    packet.extend_from_slice(&to.port().to_be_bytes());
    packet.extend_from_slice(&(total - 20).to_be_bytes());
    // A zero UDP checksum: none (allowed over IPv4); the kernel fills in the IP checksum.
    packet.extend_from_slice(&[0, 0]);
    packet.extend_from_slice(payload);
    let dest = SockaddrIn::from(to);
    sendto(raw.as_raw_fd(), &packet, &dest, MsgFlags::empty()).expect("send the forged datagram");
    Some(())
}

fn v4(addr: SocketAddr) -> SocketAddrV4 {
    match addr {
        SocketAddr::V4(v4) => v4,
        SocketAddr::V6(_) => panic!("an IPv4 listener"),
    }
}

fn count(line: &Event, key: &str) -> u64 {
    line.u64(key).unwrap_or(0)
}

#[test]
fn a_forged_datagram_between_two_forkechos_dies_out_at_once() {
    let (a, b) = (
        Server::start(&["--udp-only", "-q"]),
        Server::start(&["--udp-only", "-q"]),
    );
    let started = Instant::now();
    if forge(v4(a.addr), v4(b.addr), b"ping-pong").is_none() {
        return;
    }
    // The loop runs until one side's guard drops an echo of its own echo.
    let mut lines = (Event::parse(""), Event::parse(""));
    eventually("one side drops the loop", DEADLINE, || {
        lines = (stats(&a), stats(&b));
        count(&lines.0, "udp-loop") + count(&lines.1, "udp-loop") >= 1
    });
    let echoed = |(a, b): &(Event, Event)| count(a, "udp-echoed") + count(b, "udp-echoed");
    // The two were read one after the other, the first perhaps while the loop still ran: once a
    // side has dropped, nothing is in flight, so both are read again.
    let lines = (stats(&a), stats(&b));
    let before = echoed(&lines);
    assert!(before <= 2 * 1100, "a loop cut at its burst: {lines:?}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "ended within the first second"
    );
    // A measured second with nothing more: the loop is over for good.
    std::thread::sleep(Duration::from_secs(1));
    let after = (stats(&a), stats(&b));
    assert_eq!(echoed(&after), before, "{after:?}");
    // Ordinary clients of both are answered, every time, the same bytes again and again too.
    for server in [&a, &b] {
        let socket = client(DEADLINE);
        for _ in 0..50 {
            assert_eq!(ask(&socket, server.addr, b"same"), Some(b"same".to_vec()));
        }
    }
}

#[test]
fn a_datagram_from_the_servers_own_address_is_never_answered() {
    let server = Server::start(&["--udp-only"]);
    if forge(v4(server.addr), v4(server.addr), b"myself").is_none() {
        return;
    }
    let line = stats_when(&server, "udp-loop", 1);
    assert_eq!(line.u64("udp-received"), Some(1), "{line}");
    assert_eq!(line.u64("udp-echoed"), Some(0), "{line}");
}

#[test]
fn delayed_answers_wait_in_a_bounded_queue_and_the_rest_are_dropped_and_counted() {
    let server = Server::start(&["--udp-only", "--delay", "30000"]);
    let socket = client(Duration::from_millis(1));
    let big = vec![7u8; 60_000];
    let mut sent = 0;
    let mut line = Event::parse("");
    // 16 MiB hold about 280 such datagrams; the socket buffer loses most on the way, so send
    // until the worker says its queue was full (at most 20 000: 1.2 GB through loopback).
    eventually("the queue fills", DEADLINE, || {
        for _ in 0..500 {
            if sent < 20_000 {
                socket.send_to(&big, server.addr).unwrap();
                sent += 1;
            }
        }
        line = stats(&server);
        count(&line, "udp-queue-full") >= 50
    });
    assert_eq!(line.u64("udp-restarts"), Some(0), "{line}");
    assert_eq!(line.u64("udp-echoed"), Some(0), "still delayed: {line}");
    let worker = server.children()[0].0;
    let rss_kib = status(worker).unwrap().vmrss.unwrap();
    assert!(rss_kib < 40 * 1024, "the worker holds {rss_kib} KiB");
    server
        .wait_for(|l| l.line.contains("udp dropped reason=queue-full"))
        .expect("a queue-full line");
}

#[test]
fn a_worker_out_of_memory_is_logged_as_an_abort_not_a_sandbox_kill() {
    // As a test runner often leaves it: std would then print a backtrace first.
    let mut command = std::process::Command::new(crate::util::binary());
    command
        .args(["--bind", "127.0.0.1", "--port", "0", "--udp-only"])
        .args(["--delay", "30000"])
        .env("RUST_BACKTRACE", "1");
    let server = Server::spawn(command);
    let worker = server.children()[0].0;
    // The worker may map 2 MB more than it has now: a few delayed 60 KB answers, then no more.
    let size_kib = status(worker).unwrap().vmsize.unwrap();
    let limit = size_kib * 1024 + (2 << 20);
    let pid = nix::unistd::Pid::from_raw(worker);
    if let Err(err) = prlimit_as(pid, limit) {
        eprintln!("skipped: unable to limit the worker's memory: {err}");
        return;
    }
    let socket = client(Duration::from_millis(1));
    let big = vec![7u8; 60_000];
    eventually("the worker runs out of memory", DEADLINE, || {
        for _ in 0..100 {
            socket.send_to(&big, server.addr).unwrap();
        }
        server.log().contains("udp worker restarted")
    });
    let log = server.log();
    assert!(
        log.contains("memory allocation of 60000 bytes failed"),
        "{log}"
    );
    assert!(
        log.contains(&format!("udp worker pid={worker} killed signal=SIGABRT")),
        "{log}"
    );
    assert!(!log.contains("SIGSYS"), "{log}");
}

/// prlimit(2) on another process: its address-space limit, soft and hard.
fn prlimit_as(pid: nix::unistd::Pid, bytes: u64) -> std::io::Result<()> {
    let limit = nix::libc::rlimit64 {
        rlim_cur: bytes,
        rlim_max: bytes,
    };
    // SAFETY: `limit` is a valid rlimit64 for the call's duration; no old limit is asked for.
    let done = unsafe {
        nix::libc::prlimit64(
            pid.as_raw(),
            nix::libc::RLIMIT_AS,
            &limit,
            std::ptr::null_mut(),
        )
    };
    match done {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}
