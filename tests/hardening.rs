//! Limits, timeouts, signals and privileges, through the real binary.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use crate::util::{DEADLINE, Event, Server, eventually, round_trip, start_time};
use nix::sys::signal::{Signal, kill};
use socket2::{Domain, Socket, Type};

/// Connections waiting in the accept queue of the IPv4 listener on `port`, from /proc/net/tcp
/// (for a listening socket the rx_queue column is the accept queue's length).
fn accept_queue(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    let local = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cols| cols[1].ends_with(&local) && cols[3] == "0A")
        .map(|cols| usize::from_str_radix(cols[4].split(':').nth(1).unwrap(), 16).unwrap())
        .expect("the listener in /proc/net/tcp")
}

/// Connects to `to` from the loopback address `from` (any 127.x.y.z works on Linux).
fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from((from, 0)).into()).unwrap();
    socket.connect(&to.into()).unwrap();
    let stream = TcpStream::from(socket);
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.set_write_timeout(Some(DEADLINE)).unwrap();
    stream
}

/// Reads until EOF or reset: what a client of a closed connection sees. Returns the bytes.
fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut rest = Vec::new();
    match stream.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}"),
    }
    rest
}

/// CPU time (user + system) process `pid` has used.
fn cpu_time(pid: nix::unistd::Pid) -> Duration {
    crate::util::procfs::cpu(pid.as_raw()).unwrap().0
}

fn is_gone(pid: i32, started: Option<u64>) -> bool {
    start_time(pid) != started || crate::util::process_state(pid) == Some('Z')
}

/// A connected client whose child has been stopped with SIGSTOP.
fn stopped_child(server: &Server) -> (TcpStream, nix::unistd::Pid) {
    let (client, pid) = server.connected_child();
    kill(pid, Signal::SIGSTOP).unwrap();
    crate::util::eventually("the child to stop", DEADLINE, || {
        server.children().contains(&(pid.as_raw(), 'T'))
    });
    (client, pid)
}

#[test]
fn at_max_clients_new_connections_wait_and_are_served_when_a_slot_frees() {
    let server = Server::start(&["--max-clients", "2"]);
    let (first, _) = server.connected_child();
    let (_second, _) = server.connected_child();
    server
        .wait_for(|l| {
            l.line
                .contains("limit max-clients=2 reached: new connections wait in the backlog")
        })
        .expect("the limit line");
    let mut waiting = server.connect();
    crate::util::eventually(
        "the third connection to wait in the backlog",
        DEADLINE,
        || accept_queue(server.addr.port()) == 1,
    );
    assert_eq!(server.children().len(), 2, "no third child at the cap");
    // Waiting at the cap must not spin: over a second, an idle parent uses next to no CPU, a
    // parent polling its ready listener in a loop nearly a whole second.
    let (cpu_before, window) = (cpu_time(server.pid()), Instant::now());
    thread::sleep(Duration::from_secs(1));
    let used = cpu_time(server.pid()) - cpu_before;
    assert!(
        used < Duration::from_millis(300),
        "parent used {used:?} of CPU in {:?} at the cap",
        window.elapsed()
    );
    assert_eq!(accept_queue(server.addr.port()), 1, "still waiting");

    let freed = Instant::now();
    drop(first);
    assert_eq!(round_trip(&mut waiting, b"my turn"), b"my turn");
    eprintln!("served {:?} after the slot was freed", freed.elapsed());
    assert_eq!(accept_queue(server.addr.port()), 0);
}

#[test]
fn over_max_per_ip_a_client_is_closed_at_once_and_other_addresses_are_served() {
    let server = Server::start(&["--max-per-ip", "1"]);
    let (_first, _) = server.connected_child();

    let mut refused = server.connect();
    let local = refused.local_addr().unwrap().to_string();
    assert!(read_until_closed(&mut refused).is_empty(), "told nothing");
    let line = server
        .wait_for(|l| l.name() == "refused")
        .expect("the refusal");
    assert_eq!(line.str("peer"), Some(local.as_str()), "{line}");
    assert_eq!(line.str("reason"), Some("max-per-ip"), "{line}");

    let mut other = connect_from([127, 0, 0, 2], server.addr);
    assert_eq!(
        round_trip(&mut other, b"another address"),
        b"another address"
    );
    assert_eq!(server.children().len(), 2);
}

#[test]
fn a_silent_client_is_closed_after_the_idle_timeout() {
    silent_client_is_closed(&[]);
}

#[test]
fn a_silent_client_is_closed_after_the_idle_timeout_without_splice() {
    silent_client_is_closed(&["--no-splice"]);
}

fn silent_client_is_closed(extra: &[&str]) {
    let server = Server::start(&[&["--idle-timeout", "0.5"], extra].concat());
    let (mut silent, _) = server.connected_child();
    assert!(read_until_closed(&mut silent).is_empty());
    let close = server.closed(silent.local_addr().unwrap()).unwrap();
    assert_eq!(close.str("end"), Some("idle-timeout"), "{close}");
    assert_eq!(close.u64("bytes"), Some(4), "{close}");
}

#[test]
fn a_client_that_never_reads_is_closed_while_another_is_served() {
    stalled_client_is_closed(&[]);
}

#[test]
fn a_client_that_never_reads_is_closed_while_another_is_served_without_splice() {
    stalled_client_is_closed(&["--no-splice"]);
}

fn stalled_client_is_closed(extra: &[&str]) {
    let server = Server::start(&[&["--idle-timeout", "2"], extra].concat());
    let stalled = server.connect();
    let stalled_addr = stalled.local_addr().unwrap();
    // Send, never read: the echo backs up until the child's write stalls, then times out.
    let writer = thread::spawn(move || {
        let mut stalled = stalled;
        let chunk = vec![b's'; 64 * 1024];
        let mut sent = 0usize;
        // Bounded: the buffers on both sides hold far less than this.
        while sent < 512 << 20 {
            match stalled.write(&chunk) {
                Ok(n) => sent += n,
                Err(_) => break,
            }
        }
        sent
    });
    let mut other = server.connect();
    for i in 0..20u8 {
        assert_eq!(round_trip(&mut other, &[i; 100]), [i; 100]);
    }
    let close = server.closed(stalled_addr).unwrap();
    assert_eq!(close.str("end"), Some("write-timeout"), "{close}");
    // One timeout after the last byte the client took (plus the moment it takes to fill the
    // buffers): per-call socket timeouts once made it two (read/write) or three (splice).
    let lived: f64 = close
        .str("duration")
        .and_then(|d| d.strip_suffix('s'))
        .unwrap()
        .parse()
        .unwrap();
    assert!((2.0..2.6).contains(&lived), "{close}");
    let sent = writer.join().unwrap();
    assert!(
        sent < 512 << 20,
        "the stalled client's writes failed once its child left"
    );
    // `other` has been idle as long as the stalled client by now; a new client is served.
    let mut fresh = server.connect();
    assert_eq!(round_trip(&mut fresh, b"still fine"), b"still fine");
}

#[test]
fn children_die_with_the_parent_even_when_it_is_killed_with_sigkill() {
    let server = Server::start(&[]);
    let mut clients: Vec<(TcpStream, i32, Option<u64>)> = (0..3)
        .map(|_| {
            let (client, pid) = server.connected_child();
            (client, pid.as_raw(), start_time(pid.as_raw()))
        })
        .collect();
    server.signal(Signal::SIGKILL);
    let killed = Instant::now();
    for (_, pid, started) in &clients {
        crate::util::eventually(&format!("child {pid} to die"), DEADLINE, || {
            is_gone(*pid, *started)
        });
    }
    eprintln!(
        "children gone {:?} after SIGKILL of the parent",
        killed.elapsed()
    );
    for (client, _, _) in &mut clients {
        assert!(read_until_closed(client).is_empty());
    }
}

#[test]
fn sigusr1_logs_the_statistics_line() {
    let server = Server::start(&["--max-per-ip", "1"]);
    for _ in 0..2 {
        let mut client = server.connect();
        assert_eq!(round_trip(&mut client, b"12345"), b"12345");
        drop(client);
        server.wait_for_no_children();
    }
    let (mut live, child) = server.connected_child();
    let mut refused = server.connect();
    assert!(read_until_closed(&mut refused).is_empty());
    // A SIGUSR1 that reaches a child (pkill -USR1 forkecho) must not kill it.
    kill(child, Signal::SIGUSR1).unwrap();
    assert_eq!(round_trip(&mut live, b"ok"), b"ok");

    // The child adds what it echoed to the shared count just after the write that delivered
    // it (a byte is counted once it reached the client): ask until the last echo is in.
    let mut line = Event::parse("");
    let mut asked = 0;
    eventually("the stats line to count the last echo", DEADLINE, || {
        server.signal(Signal::SIGUSR1);
        asked += 1;
        line = server
            .wait_for_events(asked, DEADLINE, |l| l.name() == "stats")
            .unwrap()
            .pop()
            .unwrap();
        line.u64("bytes") == Some(5 + 5 + 4 + 2)
    });
    assert_eq!(line.u64("live"), Some(1), "{line}");
    assert_eq!(line.u64("accepted"), Some(3), "{line}");
    assert_eq!(line.u64("refused"), Some(1), "{line}");
    assert_eq!(line.u64("fork-failures"), Some(0), "{line}");
    assert_eq!(line.u64("accept-failures"), Some(0), "{line}");
    assert_eq!(line.u64("reaped"), Some(2), "{line}");
    assert_eq!(line.u64("bytes"), Some(5 + 5 + 4 + 2), "{line}");
    assert_eq!(line.u64("log-dropped"), Some(0), "{line}");
    assert!(line.str("uptime").unwrap().ends_with('s'), "{line}");
}

#[test]
fn sighup_stops_the_server_like_sigterm() {
    let mut server = Server::start(&[]);
    let (mut client, _) = server.connected_child();
    server.signal(Signal::SIGHUP);
    assert_eq!(server.wait_exit(DEADLINE).code(), Some(0));
    assert!(read_until_closed(&mut client).is_empty());
    // The process has exited; its last lines may still be on their way through the pipe.
    server
        .wait_for(|l| l.line.ends_with("stopping signal=SIGHUP live=1"))
        .expect("the stopping line");
}

#[test]
fn a_stopped_child_is_not_reaped_and_resumes_on_sigcont() {
    let server = Server::start(&[]);
    let (mut client, pid) = stopped_child(&server);
    let mut other = server.connect();
    assert_eq!(round_trip(&mut other, b"others go on"), b"others go on");
    server.signal(Signal::SIGUSR1);
    let stats = server
        .wait_for(|l| l.name() == "stats")
        .expect("the stats line");
    assert_eq!(stats.u64("live"), Some(2), "{stats}");
    assert_eq!(stats.u64("reaped"), Some(0), "{stats}");
    kill(pid, Signal::SIGCONT).unwrap();
    assert_eq!(round_trip(&mut client, b"back"), b"back");
}

#[test]
fn children_that_outlast_the_grace_period_are_killed() {
    let mut server = Server::start(&["--grace", "0.3"]);
    // A stopped child cannot act on SIGTERM: only SIGKILL ends it.
    let (_client, _) = stopped_child(&server);
    server.signal(Signal::SIGTERM);
    assert_eq!(server.wait_exit(DEADLINE).code(), Some(0));
    let stopped = server.stopped();
    assert_eq!(stopped.u64("killed"), Some(1), "{stopped}");
    assert_eq!(stopped.u64("unreaped"), Some(0), "{stopped}");
}

#[test]
fn a_short_grace_closes_idle_clients_instead_of_killing_their_children() {
    // A child's lingering close (and its wait on a client that reads nothing) fits within the
    // grace: clients that are merely idle are closed with FIN, not counted as killed.
    let mut server = Server::start(&["--grace", "0.5"]);
    let (mut idle, _) = server.connected_child();
    server.signal(Signal::SIGTERM);
    let mut rest = Vec::new();
    let _ = idle.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{rest:?}");
    assert_eq!(server.wait_exit(DEADLINE).code(), Some(0));
    let stopped = server.stopped();
    assert_eq!(stopped.u64("killed"), Some(0), "{stopped}");
    let close = server.closed(idle.local_addr().unwrap()).unwrap();
    assert_eq!(close.str("end"), Some("shutdown"), "{close}");
}

#[test]
fn a_second_stop_signal_cuts_the_grace_period_short() {
    // A grace period far beyond the test's deadline: only the second signal can end it in time.
    let mut server = Server::start(&["--grace", "3600"]);
    let (_client, _) = stopped_child(&server);
    server.signal(Signal::SIGTERM);
    server
        .wait_for(|l| l.name() == "stopping")
        .expect("the stopping line");
    server.signal(Signal::SIGINT);
    assert_eq!(server.wait_exit(DEADLINE).code(), Some(0));
    assert_eq!(server.stopped().u64("killed"), Some(1));
}

#[test]
fn a_flood_of_resets_leaves_the_server_serving_with_nothing_leaked() {
    let server = Server::start(&["--quiet"]);
    let fds_before = server.fd_count();
    for i in 0..300 {
        let client = server.connect();
        if i % 2 == 0 {
            // Some send first, so the child has something in flight when the RST comes.
            let _ = (&client).write_all(b"doomed");
        }
        socket2::SockRef::from(&client)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
    }
    let mut survivor = server.connect();
    assert_eq!(round_trip(&mut survivor, b"survived"), b"survived");
    drop(survivor);
    server.wait_for_no_children();
    crate::util::eventually("the fd count to return to its start", DEADLINE, || {
        server.fd_count() == fds_before
    });
    let log = server.log();
    assert!(
        !log.contains("forkecho: child "),
        "no abnormal exits:\n{log}"
    );
}

#[test]
fn user_and_group_are_dropped_after_binding_a_privileged_port() {
    let Some(nobody) = crate::util::nobody() else {
        return;
    };
    // A port below 1024 that is free now: only root can bind it, only nobody may serve on it.
    let port = (600..1024)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port below 1024");
    let server = Server::start(&["--port", &port.to_string(), "--user", "nobody"]);
    assert_eq!(server.addr.port(), port);
    let (mut client, child) = server.connected_child();
    assert_eq!(round_trip(&mut client, b"as nobody"), b"as nobody");
    let (uid, gid) = (nobody.uid.to_string(), nobody.gid.to_string());
    for pid in [server.pid(), child] {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .unwrap()
                .split_whitespace()
                .collect::<Vec<_>>()
        };
        assert_eq!(line("Uid:"), [uid.as_str(); 4], "pid {pid}");
        assert_eq!(line("Gid:"), [gid.as_str(); 4], "pid {pid}");
        assert!(
            line("Groups:").is_empty(),
            "pid {pid} kept supplementary groups"
        );
    }
    let dropped = server
        .wait_for(|l| l.line.contains("privileges dropped"))
        .expect("the privileges line");
    assert_eq!(dropped.str("user"), Some("nobody"), "{dropped}");
}

#[test]
fn an_unknown_user_or_group_is_refused_before_binding() {
    for (flag, name, message) in [
        (
            "--user",
            "no-such-user-here",
            "unknown user 'no-such-user-here'",
        ),
        (
            "--group",
            "no-such-group-here",
            "unknown group 'no-such-group-here'",
        ),
    ] {
        let mut command = std::process::Command::new(crate::util::binary());
        command.args(["--bind", "127.0.0.1", "--port", "0", flag, name]);
        let out = crate::util::run_to_completion(command);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!("forkecho: fatal: {message}")),
            "{stderr}"
        );
        assert!(out.stdout.is_empty(), "never announced as listening");
    }
}

#[test]
fn max_duration_ends_a_trickling_client_that_the_idle_timeout_never_would() {
    // One byte every 50 ms keeps a connection alive under --idle-timeout forever.
    let server = Server::start(&["--idle-timeout", "5", "--max-duration", "0.5"]);
    let mut client = server.connect();
    let local = client.local_addr().unwrap();
    let started = Instant::now();
    let mut echoed = 0;
    let ended = loop {
        assert!(
            started.elapsed() < DEADLINE,
            "still open after {DEADLINE:?}"
        );
        if let Err(err) = client.write_all(b".") {
            break err.to_string();
        }
        let mut byte = [0u8; 1];
        match client.read(&mut byte) {
            Ok(1) => echoed += 1,
            Ok(_) => break "closed".to_string(),
            Err(err) => break err.to_string(),
        }
        std::thread::sleep(Duration::from_millis(50)); // the trickle itself, not a wait for state
    };
    let lived = started.elapsed();
    assert!(
        lived >= Duration::from_millis(450),
        "closed after {lived:?}: {ended}"
    );
    let close = server.closed(local).unwrap();
    assert_eq!(close.str("end"), Some("max-duration"), "{close}");
    assert_eq!(close.u64("bytes"), Some(echoed as u64), "{close}");
}

#[test]
fn a_client_that_saw_its_connection_close_is_never_refused_for_it() {
    // With --max-per-ip 1, a client that waits for the server's FIN before it reconnects must
    // be served every time: the count once dropped only when the parent reaped the child, after
    // the client had already seen the close.
    let server = Server::start(&["--max-per-ip", "1", "--quiet"]);
    for i in 0..300u32 {
        let mut client = server.connect();
        let msg = i.to_be_bytes();
        assert_eq!(
            round_trip(&mut client, &msg),
            msg,
            "connection {i} was refused; log:\n{}",
            server.log()
        );
        client.shutdown(std::net::Shutdown::Write).unwrap();
        assert!(read_until_closed(&mut client).is_empty());
    }
    assert!(!server.log().contains("refused"), "{}", server.log());
}
