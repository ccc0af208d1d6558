//! Process lifecycle through the real binary: reaping, fds, killed children, stopping, logs.

use std::collections::HashSet;
use std::io::{ErrorKind, Read};
use std::net::TcpListener;
use std::sync::Barrier;
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::Duration;

use crate::util::{DEADLINE, Server, round_trip};
use nix::sys::signal::{Signal, kill};

#[test]
fn two_thousand_sequential_connections_leave_no_zombies_and_no_fds() {
    let server = Server::start(&["--quiet"]);
    let fds_before = server.fd_count();
    for i in 0..2000u32 {
        let mut client = server.connect();
        let msg = i.to_be_bytes();
        assert_eq!(round_trip(&mut client, &msg), msg, "connection {i}");
    }
    server.wait_for_no_children();
    crate::util::eventually("the fd count to return to its start", DEADLINE, || {
        server.fd_count() == fds_before
    });
    assert!(server.children().is_empty(), "no zombie may remain");
}

#[test]
fn a_child_killed_with_sigkill_is_reaped_and_logged_while_the_server_keeps_serving() {
    let server = Server::start(&[]);
    let (mut victim, pid) = server.connected_child();
    let local = victim.local_addr().unwrap().to_string();
    kill(pid, Signal::SIGKILL).unwrap();
    let line = server
        .wait_for(|l| l.name() == "child" && l.u64("pid") == Some(pid.as_raw() as u64))
        .expect("the reaper's line for the killed child");
    assert_eq!(line.str("signal"), Some("SIGKILL"), "{line}");
    assert_eq!(line.str("peer"), Some(local.as_str()), "{line}");
    let mut rest = Vec::new();
    match victim.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty(), "nothing more after the child died"),
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}"),
    }
    server.wait_for_no_children();
    let mut next = server.connect();
    assert_eq!(round_trip(&mut next, b"still here?"), b"still here?");
}

#[test]
fn sigterm_with_live_clients_ends_children_and_exits_zero() {
    let mut server = Server::start(&[]);
    let mut clients: Vec<_> = (0..3).map(|_| server.connect()).collect();
    for client in &mut clients {
        assert_eq!(round_trip(client, b"x"), b"x");
    }
    // Identify children by pid and start time: pid_max may be small and pids recycled.
    let children: Vec<(i32, Option<u64>)> = server
        .children()
        .iter()
        .map(|&(pid, _)| (pid, crate::util::start_time(pid)))
        .collect();
    assert_eq!(children.len(), 3);

    server.signal(Signal::SIGTERM);
    let status = server.wait_exit(DEADLINE);
    assert_eq!(status.code(), Some(0), "clean stop exits 0");
    for client in &mut clients {
        // Each child closed its connection cleanly: FIN (EOF here), not a reset.
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).expect("a clean EOF");
        assert!(rest.is_empty());
    }
    for (pid, started) in children {
        assert!(started.is_some());
        assert_ne!(
            crate::util::start_time(pid),
            started,
            "child {pid} outlived the server"
        );
    }
    // The port is free again at once.
    TcpListener::bind(server.addr).expect("rebind the port after shutdown");
    let log = server.log();
    assert!(
        log.contains("forkecho: stopping signal=SIGTERM live=3"),
        "{log}"
    );
    let shutdowns = (server.events().iter())
        .filter(|l| l.name() == "close" && l.str("end") == Some("shutdown"))
        .count();
    assert_eq!(shutdowns, 3, "every child logs its clean close:\n{log}");
    let stopped = server.stopped();
    assert_eq!(stopped.u64("accepted"), Some(3), "{stopped}");
    assert_eq!(stopped.u64("killed"), Some(0), "{stopped}");
    assert!(
        !log.contains("forkecho: child "),
        "no abnormal exits:\n{log}"
    );
}

#[test]
fn sigint_stops_an_idle_server_with_status_zero() {
    let mut server = Server::start(&[]);
    server.signal(Signal::SIGINT);
    assert_eq!(server.wait_exit(DEADLINE).code(), Some(0));
    // The process has exited; its last lines may still be on their way through the pipe.
    server
        .wait_for(|l| l.line.ends_with("stopping signal=SIGINT live=0"))
        .expect("the stopping line");
}

#[test]
fn log_lines_stay_whole_under_concurrency() {
    const CLIENTS: usize = 100;
    let mut server = Server::start(&[]);
    // All clients are connected at once before any closes, so no two share a local port (on
    // loopback Linux may reuse a port still in TIME_WAIT for a later connection).
    let all_connected = Barrier::new(CLIENTS);
    let locals: Vec<String> = thread::scope(|scope| {
        let workers: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let (server, all_connected) = (&server, &all_connected);
                scope.spawn(move || {
                    let client = server.connect();
                    let local = client.local_addr().unwrap().to_string();
                    all_connected.wait();
                    let data = crate::util::pattern(i as u64, 1000 + i);
                    crate::util::assert_same_bytes(
                        &crate::util::echo_through(client, &data),
                        &data,
                    );
                    local
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    server
        .wait_for_events(CLIENTS, DEADLINE, |l| l.name() == "close")
        .unwrap();
    server.signal(Signal::SIGTERM);
    server.wait_exit(DEADLINE);

    let log = server.log();
    let (mut accepts, mut closes) = (HashSet::new(), HashSet::new());
    for line in server.events() {
        let peer = line.str("peer").map(str::to_string);
        // The event's name and its fields.
        let count = line.fields().len() - 1;
        match line.name() {
            "accept" => {
                assert_eq!(count, 3, "whole accept line: {line}");
                assert!(line.u64("pid").is_some() && line.u64("live").is_some());
                assert!(accepts.insert(peer.unwrap()), "duplicate: {line}");
            }
            "close" => {
                assert_eq!(count, 5, "whole close line: {line}");
                assert!(line.u64("bytes").is_some());
                assert!(line.str("duration").unwrap().ends_with('s'), "{line}");
                assert_eq!(line.str("end"), Some("client-closed"), "{line}");
                assert!(closes.insert(peer.unwrap()), "duplicate: {line}");
            }
            "listening" | "stopping" | "stopped" => {}
            _ => panic!("malformed or unexpected line: {line:?}\nwhole log:\n{log}"),
        }
    }
    let expected: HashSet<String> = locals.into_iter().collect();
    assert_eq!(accepts, expected, "one accept line per client");
    assert_eq!(closes, expected, "one close line per client");
}

#[test]
fn close_line_reports_bytes_and_the_reason() {
    let server = Server::start(&[]);
    let mut client = server.connect();
    assert_eq!(round_trip(&mut client, b"12345"), b"12345");
    let local = client.local_addr().unwrap();
    let pid = server.child_for(local);
    drop(client);
    let close = server.closed(local).unwrap();
    assert_eq!(close.u64("pid"), Some(pid.as_raw() as u64), "{close}");
    assert_eq!(close.u64("bytes"), Some(5), "{close}");
    assert_eq!(close.str("end"), Some("client-closed"), "{close}");
}

#[test]
fn a_client_reset_ends_its_child_normally() {
    let server = Server::start(&[]);
    let mut client = server.connect();
    assert_eq!(round_trip(&mut client, b"bye"), b"bye");
    let local = client.local_addr().unwrap();
    // SO_LINGER 0 turns close into a RST.
    socket2::SockRef::from(&client)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(client);
    let close = server.closed(local).unwrap();
    assert_eq!(close.str("end"), Some("reset"), "{close}");
    server.wait_for_no_children();
    assert!(
        !server.log().contains("forkecho: child "),
        "a reset is not an abnormal exit"
    );
}

#[test]
fn quiet_mode_logs_no_connection_lines() {
    let mut server = Server::start(&["-q"]);
    let mut client = server.connect();
    assert_eq!(round_trip(&mut client, b"shh"), b"shh");
    drop(client);
    server.wait_for_no_children();
    server.signal(Signal::SIGTERM);
    server.wait_exit(DEADLINE);
    let log = server.log();
    assert!(log.contains("forkecho: listening on "), "{log}");
    assert_eq!(server.stopped().u64("accepted"), Some(1));
    assert!(!log.contains("accept peer="), "{log}");
    assert!(!log.contains("close peer="), "{log}");
}

/// forkecho spawned raw with stdout piped: the child process, its address, and what its stdout
/// holds after the readiness line once it reaches its end (read on a thread of its own).
fn stdout_watched() -> (std::process::Child, std::net::SocketAddr, Receiver<Vec<u8>>) {
    let mut process = std::process::Command::new(crate::util::binary())
        .args(["--bind", "127.0.0.1", "--port", "0"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(process.stdout.take().unwrap());
    let addr = crate::util::fixture::read_readiness(&mut stdout).unwrap();
    let (sender, rest) = mpsc::channel();
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stdout.read_to_end(&mut bytes);
        let _ = sender.send(bytes);
    });
    (process, addr, rest)
}

#[test]
fn stdout_holds_only_the_listening_line() {
    let (mut process, addr, rest) = stdout_watched();
    let mut client = crate::util::connect(addr);
    assert_eq!(round_trip(&mut client, b"data"), b"data");
    drop(client);
    crate::util::fixture::stop(&mut process, DEADLINE);
    assert_eq!(rest.recv_timeout(DEADLINE).unwrap(), b"");
}

#[test]
fn stdout_reaches_its_end_after_the_listening_line_while_the_server_serves() {
    // A harness that reads stdout to its end must not wait for the server, or a child, to exit.
    let (mut process, addr, rest) = stdout_watched();
    let mut client = crate::util::connect(addr);
    assert_eq!(round_trip(&mut client, b"serving"), b"serving");
    assert_eq!(rest.recv_timeout(DEADLINE).unwrap(), b"");
    let children = crate::util::children_of(process.id() as i32);
    assert_eq!(children.len(), 1, "the child still serves");
    drop(client);
    crate::util::fixture::stop(&mut process, DEADLINE);
}

#[test]
fn a_child_holds_neither_the_listener_nor_the_self_pipe() {
    let server = Server::start(&[]);
    let mut client = server.connect();
    assert_eq!(round_trip(&mut client, b"fds?"), b"fds?");
    let child = server.child_for(client.local_addr().unwrap());
    // Leave out stderr, and the log's own non-blocking description of it (another fd on the
    // same pipe): those the child keeps, to log its close line.
    let stderr = fd_targets_by_number(server.pid().as_raw())[2].1.clone();
    let without_stderr = |pid: i32| -> Vec<String> {
        fd_targets(pid)
            .into_iter()
            .filter(|t| *t != stderr)
            .collect()
    };
    let parent = without_stderr(server.pid().as_raw());
    let child = without_stderr(child.as_raw());

    // The parent's own fds: its one socket (the listener; it closes client sockets after fork)
    // and the self-pipe (one pipe inode on two fds). Anything else it got from whoever ran it.
    let sockets: Vec<&String> = parent.iter().filter(|t| t.starts_with("socket:")).collect();
    assert_eq!(sockets.len(), 1, "parent fds: {parent:?}");
    let self_pipe: Vec<&String> = parent
        .iter()
        .filter(|t| t.starts_with("pipe:") && parent.iter().filter(|u| u == t).count() == 2)
        .collect();
    assert_eq!(self_pipe.len(), 2, "parent fds: {parent:?}");

    assert!(
        !child.contains(sockets[0]),
        "child kept the listener: {child:?}"
    );
    assert!(
        !child.contains(self_pipe[0]),
        "child kept the self-pipe: {child:?}"
    );
    // stdin and stdout are /dev/null, not the harness's pipes (stderr is the log).
    let standard = fd_targets_by_number(server.child_for(client.local_addr().unwrap()).as_raw());
    assert_eq!(standard[0].1, "/dev/null", "{standard:?}");
    assert_eq!(standard[1].1, "/dev/null", "{standard:?}");
    // Its own: the connection. Small echoes go through read/write; no pipe yet.
    let own = |child: &[String]| -> (usize, usize, usize) {
        let own: Vec<&String> = child.iter().filter(|t| !parent.contains(t)).collect();
        let sockets = own.iter().filter(|t| t.starts_with("socket:")).count();
        let pipes: HashSet<&&String> = own.iter().filter(|t| t.starts_with("pipe:")).collect();
        let pipe_fds = own.iter().filter(|t| t.starts_with("pipe:")).count();
        assert_eq!(own.len(), sockets + pipe_fds, "child's own fds: {own:?}");
        (sockets, pipe_fds, pipes.len())
    };
    assert_eq!(own(&child), (1, 0, 0));

    // A read that fills the small buffer moves the connection to splice(2): then the child
    // also holds both ends of one pipe.
    let bulk: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
    assert_eq!(round_trip(&mut client, &bulk), bulk);
    let child = without_stderr(server.child_for(client.local_addr().unwrap()).as_raw());
    assert_eq!(own(&child), (1, 2, 1));
}

/// Each open fd of `pid` and what it points at, in fd order.
fn fd_targets_by_number(pid: i32) -> Vec<(i32, String)> {
    let mut fds: Vec<(i32, String)> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read the fd table")
        .flatten()
        .filter_map(|entry| {
            let fd = entry.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(entry.path()).ok()?;
            Some((fd, target.to_string_lossy().into_owned()))
        })
        .collect();
    fds.sort();
    fds
}

/// What each open fd of `pid` points at (`socket:[123]`, `pipe:[456]`, `/dev/null`, ...).
fn fd_targets(pid: i32) -> Vec<String> {
    fd_targets_by_number(pid)
        .into_iter()
        .map(|(_, target)| target)
        .collect()
}

#[test]
fn sigterm_sent_to_a_child_closes_only_that_connection_cleanly() {
    let server = Server::start(&[]);
    let (mut other, _) = server.connected_child();
    let (mut client, pid) = server.connected_child();
    // The child has its own handler: a SIGTERM closes its connection (FIN) and it exits 0. Had
    // it kept the parent's handler, it would only set a flag and live on.
    kill(pid, Signal::SIGTERM).unwrap();
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).expect("a clean EOF");
    assert!(rest.is_empty());
    let close = server.closed(client.local_addr().unwrap()).unwrap();
    assert_eq!(close.str("end"), Some("shutdown"), "{close}");
    assert_eq!(round_trip(&mut other, b"unaffected"), b"unaffected");
    crate::util::eventually("the child to be reaped", DEADLINE, || {
        server.children().len() == 1
    });
    assert!(
        !server.log().contains("forkecho: child "),
        "exit 0 is no abnormal exit"
    );
}

/// forkecho on loopback port 0, spawned with `prepare` run in the child before exec: the way a
/// careless launcher leaves things.
fn spawn_after(prepare: impl FnMut() -> std::io::Result<()> + Send + Sync + 'static) -> Server {
    use std::os::unix::process::CommandExt;
    let mut command = std::process::Command::new(crate::util::binary());
    command.args(["--bind", "127.0.0.1", "--port", "0"]);
    // SAFETY: `prepare` calls only async-signal-safe functions (sigprocmask, dup2).
    unsafe { command.pre_exec(prepare) };
    Server::spawn(command)
}

#[test]
fn signals_a_launcher_left_blocked_are_unblocked() {
    let mut server = spawn_after(|| {
        let mut blocked = nix::sys::signal::SigSet::empty();
        blocked.add(Signal::SIGCHLD);
        blocked.add(Signal::SIGTERM);
        nix::sys::signal::sigprocmask(
            nix::sys::signal::SigmaskHow::SIG_BLOCK,
            Some(&blocked),
            None,
        )?;
        Ok(())
    });
    let mut client = server.connect();
    assert_eq!(round_trip(&mut client, b"hello"), b"hello");
    drop(client);
    // With SIGCHLD blocked the child would stay a zombie, and SIGTERM would do nothing.
    server.wait_for_no_children();
    server.signal(Signal::SIGTERM);
    assert!(server.wait_exit(DEADLINE).success(), "{}", server.log());
}

#[test]
fn descriptors_a_launcher_left_open_are_closed() {
    let (reader, writer) = std::io::pipe().unwrap();
    let writer_fd = std::os::fd::AsRawFd::as_raw_fd(&writer);
    let harness_pipe = std::fs::read_link(format!("/proc/self/fd/{writer_fd}"))
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let server = spawn_after(move || {
        // A harness's pipe, inherited on fd 7 (dup2 clears close-on-exec).
        // SAFETY: dup2 is async-signal-safe; fd 7 is free or only the harness's.
        if unsafe { nix::libc::dup2(writer_fd, 7) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    });
    drop(writer);
    let (_client, child) = server.connected_child();
    for pid in [server.pid(), child] {
        let fds = fd_targets_by_number(pid.as_raw());
        assert!(
            fds.iter().all(|(_, target)| *target != harness_pipe),
            "{pid} holds the harness's {harness_pipe}: {fds:?}"
        );
    }
    // So the harness sees its pipe's end while forkecho and its child run on.
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let mut rest = Vec::new();
        let _ = tx.send((&reader).read_to_end(&mut rest).map(|_| rest));
    });
    let rest = rx
        .recv_timeout(DEADLINE)
        .expect("EOF on the harness's pipe");
    assert!(rest.unwrap().is_empty());
}

#[test]
fn children_are_the_oom_killers_first_choice() {
    children_are_first_for_the_oom_killer(&[]);
}

#[test]
fn children_are_the_oom_killers_first_choice_after_user_drops_root() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: dropping privileges needs root");
        return;
    }
    // The score file must be opened while the server can still open it.
    children_are_first_for_the_oom_killer(&["--user", "nobody"]);
}

fn children_are_first_for_the_oom_killer(args: &[&str]) {
    let server = Server::start(args);
    let (_client, child) = server.connected_child();
    let score = |pid: nix::unistd::Pid| -> i32 {
        std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    assert_eq!(score(child), 1000);
    assert!(score(server.pid()) < 1000);
    // The parent sets it through a file of its own, which no child keeps.
    let fds = fd_targets(child.as_raw());
    assert!(!fds.iter().any(|t| t.ends_with("oom_score_adj")), "{fds:?}");
}

#[test]
fn huge_limits_cost_nothing_until_clients_come() {
    // Memory and shutdown time follow the live clients, not the settings.
    let rss = |server: &Server| -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().strip_suffix(" kB"))
            .unwrap()
            .parse()
            .unwrap()
    };
    let small = Server::start(&[]);
    let mut huge = Server::start(&["--max-clients", "4194304", "--max-per-ip", "1000000"]);
    let (mut client, _) = huge.connected_child();
    assert_eq!(round_trip(&mut client, b"still"), b"still");
    let (small_kib, huge_kib) = (rss(&small), rss(&huge));
    assert!(
        huge_kib < small_kib + 1024,
        "{huge_kib} KiB resident against {small_kib} KiB with the default limits"
    );
    drop(client);
    huge.wait_for_no_children();
    let stopping = std::time::Instant::now();
    huge.signal(Signal::SIGTERM);
    assert!(huge.wait_exit(DEADLINE).success());
    assert!(
        stopping.elapsed() < Duration::from_secs(2),
        "stopping took {:?}",
        stopping.elapsed()
    );
}

/// A client that sends a byte stream (`i % 251`) and reads its echo at once, checking every
/// byte; it stops sending when the echo ends. Returns what it received and how reading ended.
fn streaming_client(
    stream: std::net::TcpStream,
    streaming: std::sync::mpsc::Sender<()>,
) -> thread::JoinHandle<(u64, std::io::Result<()>)> {
    use std::io::Write;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    thread::spawn(move || {
        let done = Arc::new(AtomicBool::new(false));
        let mut writer = stream.try_clone().unwrap();
        let writer_done = Arc::clone(&done);
        let sender = thread::spawn(move || {
            let chunk: Vec<u8> = (0..251 * 64).map(|i| (i % 251) as u8).collect();
            while !writer_done.load(Ordering::Acquire) && writer.write_all(&chunk).is_ok() {}
            let _ = writer.shutdown(std::net::Shutdown::Write);
        });
        let mut received = 0u64;
        let mut told = false;
        let mut buf = vec![0u8; 65536];
        let ended = loop {
            match (&stream).read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    for (i, &byte) in buf[..n].iter().enumerate() {
                        let at = received + i as u64;
                        assert_eq!(byte, (at % 251) as u8, "echo differs at byte {at}");
                    }
                    received += n as u64;
                    if !told && received > 1 << 20 {
                        told = true;
                        let _ = streaming.send(());
                    }
                }
                Err(err) => break Err(err),
            }
        };
        done.store(true, Ordering::Release);
        sender.join().unwrap();
        (received, ended)
    })
}

#[test]
fn at_sigterm_streaming_clients_get_all_that_was_echoed_then_fin() {
    for args in [&[][..], &["--no-splice"][..]] {
        let mut server = Server::start(args);
        let (tx, rx) = std::sync::mpsc::channel();
        let clients: Vec<_> = (0..4)
            .map(|_| {
                let stream = server.connect();
                let local = stream.local_addr().unwrap();
                (local, streaming_client(stream, tx.clone()))
            })
            .collect();
        for _ in 0..clients.len() {
            rx.recv_timeout(DEADLINE).expect("every client streaming");
        }
        server.signal(Signal::SIGTERM);
        for (local, client) in clients {
            let (received, ended) = client.join().unwrap();
            let close = server.closed(local).unwrap();
            assert!(
                ended.is_ok(),
                "{args:?}: {ended:?} after {received} bytes; {close}"
            );
            assert_eq!(close.str("end"), Some("shutdown"), "{close}");
            assert_eq!(
                close.u64("bytes"),
                Some(received),
                "{args:?}: the client got {received} bytes"
            );
        }
        assert!(server.wait_exit(DEADLINE).success(), "{}", server.log());
    }
}
