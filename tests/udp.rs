//! UDP echo (`--udp`, `--udp-only`): round trips of every size up to 65 507 bytes, answers from
//! the address each datagram was sent to, the reflection guards, the worker's restart, the
//! per-datagram faults with a seed, and the real clients (nc -u, socat, Python).

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::util::{DEADLINE, Event, Server, pattern, run_client};

/// A client socket on loopback that gives up after `wait`.
pub(crate) fn client(wait: Duration) -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(wait)).unwrap();
    socket
}

/// Sends `data` to `to` and returns the answer (None if none came within the socket's timeout).
pub(crate) fn ask(socket: &UdpSocket, to: SocketAddr, data: &[u8]) -> Option<Vec<u8>> {
    socket.send_to(data, to).unwrap();
    let mut buf = vec![0u8; 70_000];
    let (n, from) = socket.recv_from(&mut buf).ok()?;
    assert_eq!(from, to, "answered from the address asked");
    Some(buf[..n].to_vec())
}

/// The `stats` line's fields after SIGUSR1.
pub(crate) fn stats(server: &Server) -> Event {
    let before = server
        .events()
        .iter()
        .filter(|l| l.name() == "stats")
        .count();
    server.signal(Signal::SIGUSR1);
    server
        .wait_for_events(before + 1, DEADLINE, |l| l.name() == "stats")
        .unwrap()[before]
        .clone()
}

/// The `stats` line once its field `key` reads `value`: the worker counts an answer just after
/// sending it, so a client can have it a moment before the count does.
pub(crate) fn stats_when(server: &Server, key: &str, value: u64) -> Event {
    let mut line = Event::parse("");
    crate::util::eventually(&format!("{key}={value}"), DEADLINE, || {
        line = stats(server);
        line.u64(key) == Some(value)
    });
    line
}

#[test]
fn udp_echoes_every_size_beside_tcp_on_the_same_port() {
    let server = Server::start(&["--udp"]);
    let udp = server.addresses().udp.clone();
    assert_eq!(
        udp,
        [server.addr],
        "UDP on the TCP listener's address and port"
    );
    let socket = client(DEADLINE);
    for len in [0, 1, 1400, 9000, 65_507] {
        let data = pattern(len as u64, len);
        assert_eq!(
            ask(&socket, udp[0], &data).as_deref(),
            Some(&data[..]),
            "{len} bytes"
        );
    }
    let mut tcp = server.connect();
    assert_eq!(crate::util::round_trip(&mut tcp, b"and TCP"), b"and TCP");
    let line = stats_when(&server, "udp-echoed", 5);
    assert_eq!(line.u64("udp-bytes"), Some(1400 + 9000 + 65_507 + 1));
}

#[test]
fn udp_only_serves_no_tcp_and_a_datagram_larger_than_the_buffer_is_never_echoed_short() {
    let server = Server::start(&["--udp-only", "--buffer-size", "1000"]);
    let addr = server.addr;
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "no TCP listener"
    );
    let socket = client(Duration::from_millis(300));
    assert_eq!(ask(&socket, addr, &[7; 1000]), Some(vec![7; 1000]));
    assert_eq!(
        ask(&socket, addr, &[7; 1001]),
        None,
        "truncated: dropped, not cut"
    );
    let line = stats_when(&server, "udp-echoed", 1);
    assert_eq!(line.u64("udp-truncated"), Some(1), "{line}");
}

#[test]
fn reflecting_source_ports_are_never_answered() {
    let server = Server::start(&["--udp-only"]);
    let mut refused = 0;
    for port in [7u16, 13, 17, 19, 37] {
        // Binding a port below 1024 needs root: test those this host lets us bind.
        let Ok(socket) = UdpSocket::bind(("127.0.0.1", port)) else {
            continue;
        };
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        socket.send_to(b"chargen?", server.addr).unwrap();
        let mut buf = [0u8; 64];
        assert!(socket.recv_from(&mut buf).is_err(), "answered port {port}");
        refused += 1;
    }
    if refused == 0 {
        eprintln!("skipped: no reflecting port could be bound here");
        return;
    }
    // A client on an ordinary port is answered all the same.
    assert_eq!(
        ask(&client(DEADLINE), server.addr, b"ok"),
        Some(b"ok".to_vec())
    );
    let line = stats(&server);
    assert_eq!(line.u64("udp-source-port"), Some(refused as u64), "{line}");
}

#[test]
fn rate_per_ip_limits_datagrams_per_source() {
    let server = Server::start(&["--udp-only", "--rate-per-ip", "3/60"]);
    let socket = client(Duration::from_millis(200));
    let answered = (0..6)
        .filter(|_| ask(&socket, server.addr, b"x").is_some())
        .count();
    assert_eq!(answered, 3, "a burst of 3, then nothing for 20 s");
    let line = stats(&server);
    assert_eq!(line.u64("udp-rate-limited"), Some(3), "{line}");
}

#[test]
fn a_killed_worker_is_restarted_and_serves_again() {
    let server = Server::start(&["--udp-only"]);
    let socket = client(DEADLINE);
    assert_eq!(
        ask(&socket, server.addr, b"before"),
        Some(b"before".to_vec())
    );
    // Counted just after it was sent: killed before that, the worker would never count it.
    stats_when(&server, "udp-echoed", 1);
    let worker = server.children();
    assert_eq!(worker.len(), 1, "one worker: {worker:?}");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(worker[0].0), Signal::SIGKILL).unwrap();
    let restarted = server
        .wait_for(|l| l.line.contains("udp worker restarted"))
        .expect("the restart");
    let died = server
        .wait_for(|l| l.line.contains("killed signal=SIGKILL"))
        .expect("the death");
    assert!(died.line.contains("restarting in 100ms"), "{died}");
    let new = restarted.u64("pid").unwrap();
    assert_ne!(new, worker[0].0 as u64);
    assert_eq!(ask(&socket, server.addr, b"after"), Some(b"after".to_vec()));
    let line = stats_when(&server, "udp-echoed", 2);
    assert_eq!(line.u64("udp-restarts"), Some(1), "{line}");
    // No zombie, and a clean stop takes the worker too.
    let mut server = server;
    let stopped = server.stop();
    assert!(stopped.line.contains("killed=0"), "{stopped}");
}

/// Which of datagrams 1..=n a `--loss` server drops, as one client sees it.
fn lost(args: &[&str], n: usize) -> Vec<usize> {
    let mut all = vec!["--udp-only", "-q"];
    all.extend_from_slice(args);
    let server = Server::start(&all);
    let socket = client(Duration::from_millis(150));
    (1..=n)
        .filter(|&i| ask(&socket, server.addr, &i.to_be_bytes()).is_none())
        .collect()
}

#[test]
fn a_seed_loses_the_same_datagrams_every_run() {
    let first = lost(&["--loss", "0.5", "--seed", "7"], 24);
    let second = lost(&["--loss", "0.5", "--seed", "7"], 24);
    assert_eq!(first, second);
    assert!((4..=20).contains(&first.len()), "{first:?}");
    let other = lost(&["--loss", "0.5", "--seed", "8"], 24);
    assert_ne!(first, other, "another seed, other datagrams");
}

#[test]
fn duplicate_corrupt_and_reorder_do_what_they_say() {
    let server = Server::start(&["--udp-only", "--duplicate", "1", "--seed", "1"]);
    let socket = client(DEADLINE);
    socket.send_to(b"twice", server.addr).unwrap();
    let mut buf = [0u8; 64];
    for _ in 0..2 {
        let (n, _) = socket.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"twice");
    }
    drop(server);

    let server = Server::start(&["--udp-only", "--corrupt", "1", "--seed", "1"]);
    let sent = pattern(3, 100);
    let back = ask(&socket, server.addr, &sent).expect("an answer");
    let differ: Vec<usize> = (0..100).filter(|&i| back[i] != sent[i]).collect();
    assert_eq!(differ.len(), 1, "one byte flipped");
    let line = server
        .wait_for(|l| l.line.contains("udp corrupt"))
        .expect("the corrupt line");
    assert_eq!(line.u64("byte"), Some(differ[0] as u64), "{line}");
    assert_eq!(line.u64("datagram"), Some(1), "{line}");
    drop(server);

    // Every answer held until the next goes: the first comes back after the second.
    let server = Server::start(&["--udp-only", "--reorder", "1", "--seed", "1"]);
    socket.send_to(b"first", server.addr).unwrap();
    socket.send_to(b"second", server.addr).unwrap();
    let (n, _) = socket.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"first", "held until the second came");
    let line = stats(&server);
    assert_eq!(line.u64("udp-reordered"), Some(2), "{line}");
}

#[test]
fn a_quiet_source_gets_one_summary_line() {
    let server = Server::start(&["--udp-only", "--idle-timeout", "0.3"]);
    let socket = client(DEADLINE);
    for _ in 0..3 {
        assert!(ask(&socket, server.addr, b"abcd").is_some());
    }
    let line = server.wait_for(|l| l.name() == "udp").expect("the summary");
    let me = socket.local_addr().unwrap().to_string();
    assert_eq!(line.str("peer"), Some(me.as_str()), "{line}");
    assert_eq!(line.u64("datagrams"), Some(3), "{line}");
    assert_eq!(line.u64("bytes"), Some(12), "{line}");
    assert_eq!(line.u64("dropped"), Some(0), "{line}");
}

#[test]
fn a_wildcard_socket_answers_from_the_address_each_datagram_was_sent_to() {
    crate::util::netns::in_private_network(&["fd00:5::1"], || {
        let mut command = Command::new(crate::util::binary());
        command.args(["--port", "0", "--udp-only"]);
        let server = Server::spawn(command);
        let port = server.addr.port();
        assert!(server.addr.ip().is_unspecified(), "{}", server.addr);
        // Connected sockets take answers only from the address they sent to.
        for to in ["127.0.0.2", "127.0.0.1", "[fd00:5::1]", "[::1]"] {
            let to: SocketAddr = format!("{to}:{port}").parse().unwrap();
            let local = if to.is_ipv4() {
                "127.0.0.1:0"
            } else {
                "[::1]:0"
            };
            let socket = UdpSocket::bind(local).unwrap();
            socket.set_read_timeout(Some(DEADLINE)).unwrap();
            socket.connect(to).unwrap();
            socket.send(b"where from?").unwrap();
            let mut buf = [0u8; 64];
            let n = socket
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("no answer via {to}: {e}"));
            assert_eq!(&buf[..n], b"where from?");
        }
    });
}

/// `forkecho ping --udp` against a server with `faults`: its exit status and summary.
fn ping_udp(faults: &[&str], count: u32) -> (i32, String) {
    let mut args = vec!["--udp-only", "-q"];
    args.extend_from_slice(faults);
    if !faults.is_empty() {
        args.extend(["--seed", "5"]);
    }
    let server = Server::start(&args);
    let mut command = Command::new(crate::util::binary());
    let count = count.to_string();
    let target = server.addr.to_string();
    command.args([
        "ping", "--udp", "-c", &count, "-i", "0.01", "-W", "1", "-q", &target,
    ]);
    let out = crate::util::run_to_completion(command);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.code().unwrap(), text)
}

#[test]
fn ping_udp_ends_when_the_last_answer_is_in_and_i_0_waits_for_each() {
    // A server that holds each answer 100 ms: with -i 0 the probes go one at a time, each once
    // the last is back (300 ms at least), and the run ends then, not --timeout (5 s) later.
    let server = Server::start(&["--udp-only", "-q", "--delay", "100"]);
    let mut command = Command::new(crate::util::binary());
    let target = server.addr.to_string();
    command.args([
        "ping", "--udp", "-c", "3", "-i", "0", "-W", "5", "-q", &target,
    ]);
    let started = std::time::Instant::now();
    let out = crate::util::run_to_completion(command);
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("3 sent, 3 echoed"), "{text}");
    assert!(
        took >= Duration::from_millis(300),
        "probes overlapped: {took:?}"
    );
    assert!(
        took < Duration::from_secs(3),
        "waited out --timeout: {took:?}"
    );
}

#[test]
fn ping_udp_reports_each_fault_apart() {
    let (code, text) = ping_udp(&[], 5);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("5 sent, 5 echoed, 0 corrupt, 0 lost"),
        "{text}"
    );
    assert!(text.contains("0 duplicates, 0 reordered"), "{text}");
    let (code, text) = ping_udp(&["--loss", "1"], 4);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("4 sent, 0 echoed, 0 corrupt, 4 lost"),
        "{text}"
    );
    let (code, text) = ping_udp(&["--corrupt", "1"], 4);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("4 sent, 0 echoed, 4 corrupt, 0 lost"),
        "{text}"
    );
    let (code, text) = ping_udp(&["--duplicate", "1"], 4);
    assert_eq!(code, 0, "duplicates are reported, not failures: {text}");
    assert!(
        text.contains("4 sent, 4 echoed") && text.contains("4 duplicates"),
        "{text}"
    );
    // Half the answers held until the next has gone: those followed by one sent at once arrive
    // after it, late, yet intact.
    let (code, text) = ping_udp(&["--reorder", "0.5"], 20);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("20 sent, 20 echoed, 0 corrupt, 0 lost"),
        "{text}"
    );
    let reordered: u32 = text
        .split(" reordered")
        .next()
        .and_then(|head| head.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    assert!((1..=10).contains(&reordered), "{text}");
}

#[test]
#[ignore = "run with: cargo test -- --ignored (uses nc (netcat-openbsd), socat and python3)"]
fn nc_u_socat_and_python_get_their_datagrams_back() {
    let server = Server::start(&["--udp-only", "-b", "127.0.0.1", "-b", "::1"]);
    let port = server.addr.port().to_string();
    let runs: [(&str, Vec<String>); 4] = [
        (
            "nc",
            vec!["-u".into(), "-w1".into(), "127.0.0.1".into(), port.clone()],
        ),
        (
            "nc",
            vec![
                "-6".into(),
                "-u".into(),
                "-w1".into(),
                "::1".into(),
                port.clone(),
            ],
        ),
        (
            "socat",
            vec!["-T1".into(), "-".into(), format!("UDP:127.0.0.1:{port}")],
        ),
        (
            "python3",
            vec![
                "-c".into(),
                "import socket,sys; s=socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); \
                 s.settimeout(5); s.sendto(sys.stdin.buffer.read(), ('::1', int(sys.argv[1]))); \
                 sys.stdout.buffer.write(s.recv(65536))"
                    .into(),
                port.clone(),
            ],
        ),
    ];
    for (program, args) in runs {
        let line = format!("hello from {program}\n");
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run_client(program, &args, line.clone().into_bytes());
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            line,
            "{program} {args:?}"
        );
    }
}

#[test]
fn the_worker_serves_as_the_user_privileges_were_dropped_to() {
    let Some(nobody) = crate::util::nobody() else {
        return;
    };
    let server = Server::start(&["--udp-only", "--user", "nobody"]);
    assert_eq!(
        ask(&client(DEADLINE), server.addr, b"x"),
        Some(b"x".to_vec())
    );
    let worker = server.children();
    assert_eq!(worker.len(), 1);
    let status = std::fs::read_to_string(format!("/proc/{}/status", worker[0].0)).unwrap();
    let uid = nobody.uid.to_string();
    let uids: Vec<&str> = uid_line(&status);
    assert_eq!(uids, [uid.as_str(); 4], "{status}");
}

/// The four uids of a /proc/PID/status text.
fn uid_line(status: &str) -> Vec<&str> {
    let line = status.lines().find_map(|l| l.strip_prefix("Uid:")).unwrap();
    line.split_whitespace().collect()
}
