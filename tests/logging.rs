//! Logging never stalls serving: stderr that nobody reads (a pipe, a socket, a terminal), or a
//! log file at its size limit, costs log lines, never connections.
//!
//! Each test starts forkecho with stderr on something the test holds open and does not read, then
//! makes many more connections than that stderr can buffer lines for. Every one of them must be
//! echoed. Once stderr is read again, one line says how many lines were dropped, and the stats and
//! stopped lines count them.

use std::fs::File;
use std::io::{BufReader, Read};
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::thread;

use crate::util::{DEADLINE, Event, binary, fixture, round_trip};

/// forkecho on loopback with `stderr` as its stderr, started through `prefix` (a program that
/// execs it) if any; returns it and its address.
fn start_with_stderr(stderr: impl Into<Stdio>, prefix: &[&str]) -> (Child, SocketAddr) {
    start_with(stderr, prefix, &[])
}

fn start_with(stderr: impl Into<Stdio>, prefix: &[&str], args: &[&str]) -> (Child, SocketAddr) {
    let mut command = match prefix.split_first() {
        Some((program, args)) => {
            let mut command = Command::new(program);
            command.args(args).arg(binary());
            command
        }
        None => Command::new(binary()),
    };
    let mut process = command
        .args(["--bind", "127.0.0.1", "--port", "0"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("spawn forkecho");
    let mut stdout = BufReader::new(process.stdout.take().unwrap());
    let addr = fixture::read_readiness(&mut stdout).expect("the readiness line");
    (process, addr)
}

/// Makes `count` connections one after another, each a round trip; panics (naming it) if one
/// is not served within the deadline.
fn connections(addr: SocketAddr, count: usize) {
    for i in 0..count {
        let mut client = crate::util::connect(addr);
        let msg = format!("message {i}\n");
        assert_eq!(round_trip(&mut client, msg.as_bytes()), msg.as_bytes());
    }
}

/// Stops forkecho with SIGTERM; it must exit 0.
fn stop(process: Child) {
    let pid = nix::unistd::Pid::from_raw(process.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = crate::util::output_within_deadline(process, "forkecho").status;
    assert!(status.success(), "{status}");
}

/// Reads everything `reader` gives until the complete lines so far satisfy `done`, then returns
/// those lines.
fn read_until(
    mut reader: impl Read + Send + 'static,
    done: impl Fn(&str) -> bool + Send + 'static,
) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let mut text = String::new();
        let mut chunk = [0u8; 65536];
        while let Ok(n @ 1..) = reader.read(&mut chunk) {
            text.push_str(&String::from_utf8_lossy(&chunk[..n]));
            let complete = &text[..text.rfind('\n').map_or(0, |end| end + 1)];
            if done(complete) {
                let _ = tx.send(complete.to_string());
                return;
            }
        }
        let _ = tx.send(text);
    });
    rx.recv_timeout(DEADLINE).expect("the lines in time")
}

/// After a stall: reads stderr again, makes one more connection, and checks the dropped-lines
/// notice and the stats line's count.
fn recovers(reader: impl Read + Send + 'static, process: &Child, addr: SocketAddr) {
    let pid = process.id() as i32;
    // On a terminal a line that went in only in part is finished after a short wait, and another
    // process's line can land in between: look for the notice anywhere, and for a whole stats
    // line (one comes every round below).
    let wanted = |text: &str| dropped_notice(text).is_some() && stats_line(text).is_some();
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(read_until(reader, wanted));
    });
    // Lines flow again once stderr is read: keep logging until the notice and the stats line
    // have come through.
    let text = loop {
        connections(addr, 1);
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGUSR1,
        )
        .unwrap();
        match rx.recv_timeout(std::time::Duration::from_millis(50)) {
            Ok(text) => break text,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
            Err(err) => panic!("{err}"),
        }
    };
    let dropped = dropped_notice(&text).unwrap();
    assert!(dropped > 0, "{text}");
    let stats = stats_line(&text).unwrap();
    let counted: u64 = stats.u64("log-dropped").unwrap();
    assert!(counted >= dropped, "{dropped} dropped, but {stats}");
}

/// N from the first `log-dropped lines=N` notice in `text`.
fn dropped_notice(text: &str) -> Option<u64> {
    let (_, rest) = text.split_once("forkecho: log-dropped lines=")?;
    rest.split(' ').next()?.parse().ok()
}

/// The first whole stats line in `text`.
fn stats_line(text: &str) -> Option<Event> {
    text.lines()
        .map(Event::parse)
        .find(|l| l.name() == "stats" && l.get("uptime").is_some())
}

#[test]
fn a_stderr_pipe_nobody_reads_never_stops_serving() {
    let (reader, writer) = std::io::pipe().unwrap();
    let (process, addr) = start_with_stderr(writer, &[]);
    // About 150 bytes of log per connection: 2 000 fill a 64 KiB pipe several times over.
    connections(addr, 2000);
    recovers(reader, &process, addr);
    stop(process);
}

#[test]
fn a_stderr_pipe_nobody_reads_never_stops_serving_after_user_drops_root() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: dropping privileges needs root");
        return;
    }
    // The pipe is root's: once the server runs as nobody, it can no longer open it anew.
    let (reader, writer) = std::io::pipe().unwrap();
    let (process, addr) = start_with(writer, &[], &["--user", "nobody"]);
    connections(addr, 2000);
    recovers(reader, &process, addr);
    stop(process);
}

/// The prefix that runs forkecho in a mount namespace of its own with /proc unmounted (needs
/// root and unshare), or None where that cannot be had.
fn without_proc() -> Option<[&'static str; 7]> {
    let root = nix::unistd::geteuid().is_root();
    let unshare = Command::new("unshare").arg("--version").output().is_ok();
    (root && unshare).then_some([
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        "umount -l /proc && exec \"$0\" \"$@\"",
    ])
}

#[test]
fn without_proc_a_stderr_pipe_nobody_reads_never_stops_serving() {
    let Some(prefix) = without_proc() else {
        eprintln!("skipped: a mount namespace without /proc needs root and unshare");
        return;
    };
    let (reader, writer) = std::io::pipe().unwrap();
    let (process, addr) = start_with(writer, &prefix, &[]);
    connections(addr, 2000);
    recovers(reader, &process, addr);
    stop(process);
}

#[test]
fn without_proc_the_server_says_which_guarantee_it_cannot_keep() {
    let Some(prefix) = without_proc() else {
        eprintln!("skipped: a mount namespace without /proc needs root and unshare");
        return;
    };
    let mut command = Command::new(prefix[0]);
    command.args(&prefix[1..]).arg(binary());
    command.args(["--bind", "127.0.0.1", "--port", "0"]);
    let server = crate::util::Server::spawn(command);
    let warning = server
        .wait_for(|l| l.line.contains("OOM killer"))
        .expect("the OOM warning");
    assert!(warning.line.starts_with("forkecho: warning: "), "{warning}");
    let mut client = server.connect();
    assert_eq!(round_trip(&mut client, b"no /proc"), b"no /proc");
}

#[test]
fn a_stderr_socket_nobody_reads_never_stops_serving() {
    // journald's way: stderr is a stream socket.
    let (ours, theirs) = UnixStream::pair().unwrap();
    let (process, addr) = start_with_stderr(OwnedFd::from(theirs), &[]);
    connections(addr, 2000);
    recovers(ours, &process, addr);
    stop(process);
}

#[test]
fn a_stderr_terminal_nobody_reads_never_stops_serving() {
    let pty = nix::pty::openpty(None, None).expect("a pseudo-terminal");
    let (process, addr) = start_with_stderr(pty.slave, &[]);
    connections(addr, 2000);
    recovers(File::from(pty.master), &process, addr);
    stop(process);
}

#[test]
fn a_log_file_at_its_size_limit_costs_lines_not_the_server() {
    let dir = std::env::temp_dir().join(format!("forkecho-fsize-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("forkecho.log");
    let file = File::create(&path).unwrap();
    // prlimit sets the limit on itself and then execs forkecho: files may grow to 4 KiB.
    let (process, addr) = start_with_stderr(file, &["prlimit", "--fsize=4096", "--"]);
    connections(addr, 200);
    stop(process);
    let log = std::fs::read_to_string(&path).unwrap();
    assert!(log.len() <= 4096, "{} bytes", log.len());
    assert!(log.starts_with("forkecho: listening on "), "{log}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Every line of `log` as JSON, each parsed by a real parser; panics naming a line that is not.
fn json_lines(log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|err| panic!("{err}: {line:?}\n{log}"))
        })
        .collect()
}

#[test]
fn json_logs_carry_every_event_as_one_parsed_object_a_line() {
    use crate::util::Server;
    use nix::sys::signal::Signal;
    // --fault-rate 1 with a 1 ms delay: a faults line, and fault= on every close line. An
    // unknown test hook: a warning line.
    let args = [
        "--log-format",
        "json",
        "--proxy-protocol",
        "--max-per-ip",
        "1",
        "--delay",
        "1",
        "--fault-rate",
        "1",
        "--seed",
        "3",
    ];
    let mut server = Server::with_hooks("no-such-hook", &args);
    // A PROXY v2 header whose TLV is full of newlines and escape bytes: served, logged whole.
    let mut header = b"\r\n\r\n\0\r\nQUIT\n\x21\x11".to_vec();
    let tlv = b"\n\x1b[31m\r\n\"\\";
    let mut body = vec![192, 0, 2, 1, 127, 0, 0, 1, 0x10, 0x00, 0x27, 0x0f];
    body.extend_from_slice(&[0x05, 0x00, tlv.len() as u8]);
    body.extend_from_slice(tlv);
    header.extend_from_slice(&(body.len() as u16).to_be_bytes());
    header.extend_from_slice(&body);
    let mut first = server.connect();
    std::io::Write::write_all(&mut first, &header).unwrap();
    assert_eq!(round_trip(&mut first, b"json"), b"json");
    // The same source again: refused by --max-per-ip while the first is open.
    let mut second = server.connect();
    let mut header2 = header.clone();
    // Another source port (bytes 24-25: after the 16-byte preamble and the two addresses).
    header2[24..26].copy_from_slice(&[0x10, 0x01]);
    std::io::Write::write_all(&mut second, &header2).unwrap();
    let mut rest = Vec::new();
    let _ = second.read_to_end(&mut rest);
    // No header at all: a proxy-error.
    let mut third = server.connect();
    std::io::Write::write_all(&mut third, b"hello\r\n").unwrap();
    let _ = third.read_to_end(&mut rest);
    drop(first);
    server.signal(Signal::SIGUSR1);
    server
        .wait_for(|l| l.line.contains("\"event\":\"stats\""))
        .expect("the stats object");
    server.signal(Signal::SIGTERM);
    assert!(server.wait_exit(DEADLINE).success());
    server
        .wait_for(|l| l.line.contains("\"event\":\"stopped\""))
        .expect("the stopped object");
    let lines = json_lines(&server.log());
    let event = |name: &str| {
        lines
            .iter()
            .find(|v| v["event"] == name)
            .unwrap_or_else(|| panic!("no {name} event in {lines:#?}"))
    };
    for name in [
        "listening",
        "faults",
        "warning",
        "accept",
        "close",
        "refused",
        "proxy-error",
    ] {
        let v = event(name);
        let ts = v["ts"].as_str().expect("a time stamp");
        assert!(
            ts.len() == 27 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
            "{v}"
        );
    }
    let close = event("close");
    assert_eq!(close["peer"], "192.0.2.1:4096");
    assert_eq!(
        close["via"].as_str().map(|s| s.starts_with("127.0.0.1:")),
        Some(true)
    );
    assert_eq!(close["bytes"], 4);
    assert!(close["duration"].as_f64().is_some(), "{close}");
    assert_eq!(close["fault"], "delay");
    assert!(event("accept")["pid"].as_u64().is_some());
    assert_eq!(event("refused")["reason"], "max-per-ip");
    assert_eq!(event("refused")["limit"], 1);
    assert_eq!(event("stats")["accepted"], 1);
    assert!(event("stats")["uptime"].as_f64().is_some());
    assert_eq!(event("stopping")["signal"], "SIGTERM");
    assert_eq!(event("stopped")["killed"], 0);
    assert_eq!(event("stopped")["proxy-errors"], 1);
    assert!(
        event("warning")["message"]
            .as_str()
            .unwrap()
            .contains("no-such-hook")
    );
}

#[test]
fn log_time_stamps_each_text_line() {
    let mut server = crate::util::Server::start(&["--log-time"]);
    let mut client = server.connect();
    assert_eq!(round_trip(&mut client, b"timed"), b"timed");
    drop(client);
    server.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(server.wait_exit(DEADLINE).success());
    crate::util::eventually("the stopped line", DEADLINE, || {
        server.log().contains("forkecho: stopped ")
    });
    for line in server.log().lines() {
        let (stamp, rest) = line.split_once(' ').unwrap();
        assert!(stamp.len() == 27 && stamp.ends_with('Z'), "{line}");
        assert!(rest.starts_with("forkecho: "), "{line}");
    }
}

/// The keys of a JSON log line as written, repeats included (a parser keeps only one).
fn raw_keys(line: &str) -> Vec<String> {
    let value: serde_json::Value = serde_json::from_str(line).unwrap();
    let mut keys = Vec::new();
    for key in value.as_object().unwrap().keys() {
        for _ in 0..line.matches(&format!("\"{key}\":")).count() {
            keys.push(key.clone());
        }
    }
    keys
}

/// A server logging JSON, with a control socket the test writes raw requests to.
struct Controlled {
    server: crate::util::Server,
    stream: UnixStream,
    replies: BufReader<UnixStream>,
    _dir: crate::util::Scratch,
}

impl Controlled {
    fn start(what: &str) -> Controlled {
        let dir = crate::util::Scratch::new(what);
        let control = dir.path("control.sock");
        let control = control.to_str().unwrap();
        let server = crate::util::Server::start(&["--log-format", "json", "--control", control]);
        let stream = UnixStream::connect(control).unwrap();
        let replies = BufReader::new(stream.try_clone().unwrap());
        Controlled {
            server,
            stream,
            replies,
            _dir: dir,
        }
    }

    /// Sends `request` as one line and reads the reply's line.
    fn request(&mut self, request: serde_json::Value) {
        use std::io::{BufRead, Write};
        writeln!(self.stream, "{request}").unwrap();
        let mut reply = String::new();
        self.replies.read_line(&mut reply).unwrap();
    }
}

#[test]
fn json_log_fields_cannot_be_forged_through_the_control_socket() {
    let mut controlled = Controlled::start("json-forge");
    let forged_cmd = "x from=uid:4242 event=close";
    // A pattern's `\\` is one backslash.
    let forged_pattern = "q\" from=uid:4242 seed=7 \\\\";
    for request in [
        serde_json::json!({ "cmd": forged_cmd }),
        serde_json::json!({ "cmd": "faults", "set": { "close-on": forged_pattern } }),
    ] {
        controlled.request(request);
    }
    let server = &mut controlled.server;
    server.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(server.wait_exit(DEADLINE).success());
    server
        .wait_for(|l| l.line.contains("\"event\":\"stopped\""))
        .expect("the stopped object");
    let log = server.log();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("\"control\"")).collect();
    assert_eq!(lines.len(), 2, "{log}");
    for line in &lines {
        let keys = raw_keys(line);
        let mut unique = keys.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(keys.len(), unique.len(), "a key twice: {line}");
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["event"], "control", "{line}");
        assert_ne!(v["from"], "uid:4242", "{line}");
        assert!(v.get("seed").is_none() || v["seed"] != 7, "{line}");
    }
    let refused: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(refused["cmd"], forged_cmd);
    let set: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
    assert!(set.get("error").is_none(), "{set}");
    assert!(
        set["faults"]
            .as_str()
            .unwrap()
            .contains("from=uid:4242 seed=7"),
        "the pattern is inside the faults value: {set}"
    );
}

#[test]
fn json_lines_longer_than_the_first_buffer_are_written_whole() {
    let mut controlled = Controlled::start("json-long");
    // A text line that fits the first 512 bytes but not as JSON, and one that fits neither.
    for length in [440, 1500] {
        let cmd = "x".repeat(length);
        controlled.request(serde_json::json!({ "cmd": cmd }));
        let line = controlled
            .server
            .wait_for(|l| l.line.contains(&cmd))
            .expect("the refused command");
        let v: serde_json::Value = serde_json::from_str(&line.line).unwrap();
        assert_eq!(v["cmd"], cmd.as_str(), "{line}");
        assert!(v.get("truncated").is_none(), "{line}");
    }
}
