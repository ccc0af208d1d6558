//! `--control PATH` and `forkecho ctl`: faults changed while serving (each connection keeps the
//! set it was born with), down and up on the same port, blackhole, close and reset, the socket's
//! owner-only access, and control clients that misbehave without ever stalling the echo.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{
    DEADLINE, Scratch, Server, binary, exchange, nobody, round_trip, run_to_completion,
};

/// A server with `--control` (and `args`), its scratch directory and the socket's path.
fn controlled(what: &str, args: &[&str]) -> (Server, Scratch, String) {
    let dir = Scratch::new(what);
    let path = dir.path("control.sock").to_str().unwrap().to_string();
    let mut all = vec!["--control", &path];
    all.extend_from_slice(args);
    let server = Server::start(&all);
    (server, dir, path)
}

/// `forkecho ctl PATH ARGS`: its exit status and the reply it printed.
fn ctl(path: &str, args: &[&str]) -> (Option<i32>, Value) {
    let mut command = Command::new(binary());
    command.args(["ctl", path]).args(args);
    let out = run_to_completion(command);
    let text = String::from_utf8_lossy(&out.stdout);
    let reply = serde_json::from_str(text.trim()).unwrap_or(Value::Null);
    (out.status.code(), reply)
}

fn ok(path: &str, args: &[&str]) -> Value {
    let (status, reply) = ctl(path, args);
    assert_eq!(status, Some(0), "ctl {args:?}: {reply}");
    assert_eq!(reply["ok"], true, "{reply}");
    reply
}

#[test]
fn a_retry_story_the_first_two_connections_reset_and_the_third_echoes() {
    let (server, _dir, path) = controlled("control-retry", &[]);
    let set = ok(&path, &["faults", "--reset-after", "0"]);
    assert_eq!(set["from_connection"], 1);
    for _ in 0..2 {
        let err = exchange(server.addr, b"try").expect_err("reset");
        assert_eq!(err.kind(), ErrorKind::ConnectionReset);
    }
    let cleared = ok(&path, &["faults", "--clear"]);
    assert_eq!(cleared["from_connection"], 3);
    assert!(cleared["faults"].is_null());
    assert_eq!(round_trip(&mut server.connect(), b"third"), b"third");
    let lines = server
        .wait_for_events(3, DEADLINE, |l| l.name() == "close")
        .unwrap();
    let ends: Vec<_> = lines.iter().map(|l| l.str("end").unwrap()).collect();
    assert_eq!(
        ends,
        ["reset-after", "reset-after", "client-closed"],
        "{lines:?}"
    );
    let log = server.log();
    assert!(log.contains("control cmd=faults from=uid:"), "{log}");
}

#[test]
fn each_connection_keeps_the_faults_it_was_born_with() {
    let (server, _dir, path) = controlled("control-born", &[]);
    let mut before = server.connect();
    assert_eq!(round_trip(&mut before, b"plain"), b"plain");
    ok(&path, &["faults", "--delay", "150"]);
    let mut after = server.connect();
    let started = Instant::now();
    assert_eq!(round_trip(&mut after, b"slow"), b"slow");
    assert!(started.elapsed() >= Duration::from_millis(140));
    // The connection from before the change is still served without it.
    let started = Instant::now();
    assert_eq!(round_trip(&mut before, b"still plain"), b"still plain");
    assert!(started.elapsed() < Duration::from_millis(140));
    let (b, a) = (before.local_addr().unwrap(), after.local_addr().unwrap());
    drop((before, after));
    assert_eq!(server.closed(b).unwrap().get("fault"), None);
    assert_eq!(server.closed(a).unwrap().str("fault"), Some("delay"));
    let status = ok(&path, &["status"]);
    assert_eq!(status["from_connection"], 2);
    assert!(
        status["faults"]
            .as_str()
            .unwrap()
            .starts_with("delay=150ms")
    );
    assert_eq!(status["accepted"], 2);
}

#[test]
fn down_refuses_connections_and_up_serves_the_same_port_again() {
    // --port 0: the port the kernel picked must come back with `up`.
    let (server, _dir, path) = controlled("control-down", &[]);
    assert_eq!(ok(&path, &["down"])["state"], "down");
    let refused = TcpStream::connect(server.addr).expect_err("down");
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);
    // The port is held while down: another socket with SO_REUSEADDR cannot take it.
    let squatter = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None);
    let squatter = squatter.unwrap();
    squatter.set_reuse_address(true).unwrap();
    let taken = squatter.bind(&server.addr.into());
    assert_eq!(
        taken.map_err(|err| err.kind()),
        Err(ErrorKind::AddrInUse),
        "the port was free to take while down"
    );
    drop(squatter);
    assert_eq!(ok(&path, &["status"])["state"], "down");
    assert_eq!(ok(&path, &["up"])["state"], "up");
    assert_eq!(round_trip(&mut server.connect(), b"back"), b"back");
    // A connection served while the listeners were down goes on.
    let mut live = server.connect();
    ok(&path, &["down"]);
    assert_eq!(round_trip(&mut live, b"through"), b"through");
    ok(&path, &["up"]);
}

#[test]
fn blackhole_lets_connects_hang_once_the_backlog_is_full() {
    let (server, _dir, path) = controlled("control-blackhole", &["--backlog", "1"]);
    ok(&path, &["blackhole"]);
    // The kernel completes what the backlog holds; after that, a connect gets no answer.
    let mut queued = Vec::new();
    let mut hung = false;
    for _ in 0..8 {
        match TcpStream::connect_timeout(&server.addr, Duration::from_millis(300)) {
            Ok(stream) => queued.push(stream),
            Err(err) => {
                assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
                hung = true;
                break;
            }
        }
    }
    assert!(hung, "{} connects completed", queued.len());
    ok(&path, &["up"]);
    // The queued ones are served once the hole closes.
    for mut stream in queued {
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        assert_eq!(round_trip(&mut stream, b"late"), b"late");
    }
}

#[test]
fn close_and_reset_end_live_connections_optionally_by_source() {
    let (server, _dir, path) = controlled("control-reset", &[]);
    let mut a = server.connect();
    assert_eq!(round_trip(&mut a, b"a"), b"a");
    let reply = ok(&path, &["reset", "--from", "192.0.2.0/24"]);
    assert_eq!(reply["connections"], 0);
    let reply = ok(&path, &["reset", "--from", "127.0.0.0/8"]);
    assert_eq!(reply["connections"], 1);
    let mut buf = [0u8; 4];
    let err = a.read(&mut buf).expect_err("reset");
    assert_eq!(err.kind(), ErrorKind::ConnectionReset);
    let close = server.closed(a.local_addr().unwrap()).unwrap();
    assert_eq!(close.str("end"), Some("control-reset"), "{close}");
    let mut b = server.connect();
    assert_eq!(round_trip(&mut b, b"b"), b"b");
    assert_eq!(ok(&path, &["close"])["connections"], 1);
    // A clean close: FIN, after everything echoed.
    assert_eq!(b.read(&mut buf).unwrap(), 0);
    let close = server.closed(b.local_addr().unwrap()).unwrap();
    assert_eq!(close.str("end"), Some("shutdown"), "{close}");
    // The server goes on.
    assert_eq!(round_trip(&mut server.connect(), b"on"), b"on");
}

#[test]
fn bad_requests_are_answered_with_errors_and_change_nothing() {
    let (server, _dir, path) = controlled("control-bad", &[]);
    let bad: [(&[&str], &str); 5] = [
        (&["faults", "--delay", "soon"], "'soon'"),
        (&["faults", "--loss", "0.5"], "\"loss\" is no fault"),
        (
            &["faults", "--close-after", "1", "--reset-after", "2"],
            "cannot be used with",
        ),
        (&["reset", "--from", "10.0.0.0/40"], "10.0.0.0/40"),
        (&["{\"cmd\":\"explode\"}"], "unknown cmd \"explode\""),
    ];
    for (args, wanted) in bad {
        let (status, reply) = ctl(&path, args);
        assert_eq!(status, Some(1), "{args:?}: {reply}");
        assert_eq!(reply["ok"], false);
        let error = reply["error"].as_str().unwrap();
        assert!(error.contains(wanted), "{args:?}: {error}");
    }
    assert!(ok(&path, &["status"])["faults"].is_null());
    // Usage errors are the client's own, status 2; so is a socket nobody serves.
    assert_eq!(ctl(&path, &["faults"]).0, Some(2));
    assert_eq!(ctl("/nonexistent/fe.sock", &["status"]).0, Some(2));
    assert_eq!(round_trip(&mut server.connect(), b"fine"), b"fine");
}

#[test]
fn misbehaving_control_clients_never_stall_the_echo() {
    let (server, _dir, path) = controlled("control-misbehave", &[]);
    let open = || {
        let stream = UnixStream::connect(&path).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        stream
    };
    let reply_of = |stream: &UnixStream| {
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).unwrap();
        serde_json::from_str::<Value>(&line).unwrap()
    };
    // Not JSON: an error, and the connection stays for the next request.
    let mut garbage = open();
    garbage.write_all(b"hello?\n").unwrap();
    assert!(
        reply_of(&garbage)["error"]
            .as_str()
            .unwrap()
            .starts_with("not JSON")
    );
    garbage.write_all(b"{\"cmd\":\"status\"}\n").unwrap();
    assert_eq!(reply_of(&garbage)["ok"], true);
    // A line longer than 4 KiB: an error, then the close.
    let mut long = open();
    long.write_all(&vec![b'x'; 5000]).unwrap();
    let reply = reply_of(&long);
    assert!(
        reply["error"].as_str().unwrap().contains("at most 4096"),
        "{reply}"
    );
    // Closed: an end of file, or a reset for the part of the line it never read.
    let mut rest = [0u8; 16];
    match long.read(&mut rest) {
        Ok(0) => {}
        Err(err) if err.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("the long line's connection stays open: {other:?}"),
    }
    // Silent ones hold their places; a fifth beyond the four is turned away at once.
    let silent: Vec<UnixStream> = (0..3).map(|_| open()).collect();
    let mut fifth = open();
    fifth.write_all(b"{\"cmd\":\"status\"}\n").unwrap();
    let reply = reply_of(&fifth);
    assert!(
        reply["error"].as_str().unwrap().contains("too many"),
        "{reply}"
    );
    // All the while the echo is served.
    let started = Instant::now();
    assert_eq!(round_trip(&mut server.connect(), b"served"), b"served");
    assert!(started.elapsed() < Duration::from_secs(1));
    drop((silent, garbage));
    // Places free again once they go.
    crate::util::eventually("a control place frees", DEADLINE, || {
        ctl(&path, &["status"]).0 == Some(0)
    });
}

#[test]
fn only_the_servers_user_may_control_it() {
    let Some(nobody) = nobody() else { return };
    let (_server, _dir, path) = controlled("control-uid", &[]);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let as_nobody = |path: &str| {
        let mut command = Command::new(binary());
        command
            .args(["ctl", path, "status"])
            .uid(nobody.uid.as_raw())
            .gid(nobody.gid.as_raw());
        run_to_completion(command)
    };
    // The file's mode keeps nobody out...
    let out = as_nobody(&path);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"));
    // ...and were it opened up, the server still asks the kernel who is calling.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let parent = std::path::Path::new(&path).parent().unwrap();
    std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = as_nobody(&path);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("may not control this server"), "{text}");
}

#[test]
fn faults_changed_under_load_split_the_connections_at_the_number_the_reply_gives() {
    let (server, _dir, path) = controlled("control-load", &["--chunk", "1:0"]);
    let addr = server.addr;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Connections one after another, all the while: the change lands between two of them.
    let loader = std::thread::spawn({
        let stop = stop.clone();
        move || {
            let mut served = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && served < 2000 {
                let mut client = TcpStream::connect(addr).unwrap();
                client.set_read_timeout(Some(DEADLINE)).unwrap();
                assert_eq!(round_trip(&mut client, b"load"), b"load");
                served += 1;
            }
            served
        }
    });
    let accepted = || ok(&path, &["status"])["accepted"].as_u64().unwrap_or(0);
    crate::util::eventually("20 connections served", DEADLINE, || accepted() >= 20);
    let reply = ok(&path, &["faults", "--rate", "1M"]);
    let from = reply["from_connection"].as_u64().unwrap();
    crate::util::eventually("20 more served", DEADLINE, || accepted() >= from + 20);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let served = loader.join().unwrap();
    let lines = server
        .wait_for_events(served as usize, DEADLINE, |l| l.name() == "close")
        .unwrap();
    let (mut before, mut after) = (0, 0);
    for line in lines {
        let conn: u64 = line.u64("conn").unwrap();
        let wanted = match conn < from {
            true => "chunk",
            false => "rate",
        };
        assert_eq!(line.str("fault"), Some(wanted), "from {from}: {line}");
        if conn < from {
            before += 1;
        } else {
            after += 1;
        }
    }
    assert!(
        before >= 20 && after >= 20,
        "{before} before, {after} after"
    );
}

/// The parent's resident memory, in KiB.
fn rss_kib(server: &Server) -> u64 {
    crate::util::procfs::status(server.pid().as_raw())
        .unwrap()
        .vmrss
        .unwrap()
}

#[test]
fn the_parent_stays_flat_through_thousands_of_fault_commands() {
    let (server, _dir, path) = controlled("control-soak", &["-q"]);
    let mut stream = UnixStream::connect(&path).unwrap();
    let mut replies = BufReader::new(stream.try_clone().unwrap());
    let mut send = |n: usize| {
        for i in 0..n {
            let (delay, pattern) = ((i % 50).to_string(), format!("pattern {i}"));
            let set = serde_json::json!({ "delay": delay, "close-on": pattern });
            let request = format!("{}\n", serde_json::json!({ "cmd": "faults", "set": set }));
            stream.write_all(request.as_bytes()).unwrap();
            let mut reply = String::new();
            replies.read_line(&mut reply).unwrap();
            assert!(reply.contains("\"ok\":true"), "{reply}");
        }
    };
    // Warmed up first: the heap's own growth to its working size is not a leak.
    send(1_000);
    let before = rss_kib(&server);
    send(5_000);
    let grown = rss_kib(&server).saturating_sub(before);
    // Leaking, each set with its pattern took about 700 bytes: 3.5 MB here.
    assert!(grown < 512, "the parent grew by {grown} KiB");
}

#[test]
fn down_and_up_under_load_count_no_accept_failure() {
    let (mut server, _dir, path) = controlled("control-flap", &["-q"]);
    let addr = server.addr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let stop = Arc::new(AtomicBool::new(false));
    let connected = Arc::new(AtomicU64::new(0));
    let hammer = {
        let (stop, connected) = (Arc::clone(&stop), Arc::clone(&connected));
        std::thread::spawn(move || {
            // Connections keep arriving through every down and up (refused while down).
            while !stop.load(Ordering::Relaxed) {
                if let Ok(mut client) = TcpStream::connect(addr) {
                    connected.fetch_add(1, Ordering::Relaxed);
                    let _ = client.write_all(b"x");
                }
            }
        })
    };
    // The load is on before the first down.
    crate::util::eventually("the first connection", DEADLINE, || {
        connected.load(Ordering::Relaxed) > 0
    });
    let before = connected.load(Ordering::Relaxed);
    let mut stream = UnixStream::connect(&path).unwrap();
    let mut replies = BufReader::new(stream.try_clone().unwrap());
    for _ in 0..200 {
        for cmd in ["down", "up"] {
            writeln!(stream, "{{\"cmd\":\"{cmd}\"}}").unwrap();
            let mut reply = String::new();
            replies.read_line(&mut reply).unwrap();
            assert!(reply.contains("\"ok\":true"), "{reply}");
        }
    }
    let during = connected.load(Ordering::Relaxed) - before;
    stop.store(true, Ordering::Relaxed);
    hammer.join().unwrap();
    let stopped = server.stop();
    assert_eq!(stopped.u64("accept-failures"), Some(0), "{stopped}");
    assert!(!server.log().contains("accept failed"), "{}", server.log());
    // Under load indeed: connections reached the listener between the downs.
    assert!(
        during > 0,
        "no connection got through while flapping: {stopped}"
    );
}
