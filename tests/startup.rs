//! The server's first milliseconds and its first line: a signal sent while it sets itself up is
//! handled, never fatal, and a stdout nobody reads never keeps it from serving or stopping; the
//! listen backlog it announces is the kernel's.

use std::io::{BufRead, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::util::{DEADLINE, Server, binary, output_within_deadline};

/// Starts forkecho with `signal` blocked and sends it at once: it is pending until forkecho
/// unblocks its signals while it sets itself up (as with any launcher that leaves them blocked),
/// then delivered before the server is ready, whatever the time exec takes. Returns the output
/// once the server has stopped (with SIGTERM, once it logged the statistics SIGUSR1 asks for).
fn signal_during_setup(signal: Signal) -> std::process::Output {
    let mut command = Command::new(binary());
    command
        .args(["-b", "127.0.0.1", "-p", "0", "-q"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: sigprocmask is async-signal-safe, as code between fork and exec must be.
    unsafe {
        command.pre_exec(move || {
            let mut set = nix::sys::signal::SigSet::empty();
            set.add(signal);
            set.thread_block().map_err(std::io::Error::from)
        });
    }
    let mut child = command.spawn().expect("spawn forkecho");
    let pid = Pid::from_raw(child.id() as i32);
    kill(pid, signal).expect("signal forkecho");
    if signal == Signal::SIGUSR1 {
        // A server that survived logs the statistics line it was asked for; then it is stopped.
        let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut text = String::new();
        while !text.contains("forkecho: stats ") {
            if stderr.read_line(&mut text).unwrap_or(0) == 0 {
                break;
            }
        }
        let _ = kill(pid, Signal::SIGTERM);
        let mut out = output_within_deadline(child, "forkecho");
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
        out.stderr = (text + &rest).into_bytes();
        return out;
    }
    output_within_deadline(child, "forkecho")
}

#[test]
fn sigusr1_during_setup_never_kills_the_server() {
    for _ in 0..5 {
        let out = signal_during_setup(Signal::SIGUSR1);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{:?}\n{stderr}", out.status);
        // The statistics line it asked for, and a clean stop.
        assert!(stderr.contains("forkecho: stats live=0 "), "{stderr}");
        assert!(stderr.contains("forkecho: stopped "), "{stderr}");
    }
}

#[test]
fn sigterm_during_setup_stops_the_server_cleanly() {
    for _ in 0..5 {
        let out = signal_during_setup(Signal::SIGTERM);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{:?}\n{stderr}", out.status);
        assert!(stderr.contains("stopping signal=SIGTERM"), "{stderr}");
    }
}

#[test]
fn sigquit_stops_and_sigusr2_and_sigalrm_are_ignored() {
    let mut server = Server::start(&[]);
    for stray in [Signal::SIGUSR2, Signal::SIGALRM] {
        server.signal(stray);
    }
    let mut client = server.connect();
    assert_eq!(crate::util::round_trip(&mut client, b"still"), b"still");
    drop(client);
    server.signal(Signal::SIGQUIT);
    assert!(server.wait_exit(DEADLINE).success(), "{}", server.log());
    server
        .wait_for(|l| l.line.contains("stopping signal=SIGQUIT"))
        .expect("the stopping line");
}

#[test]
fn a_full_stdout_nobody_reads_costs_a_warning_not_serving_or_stopping() {
    let (reader, mut writer) = std::io::pipe().unwrap();
    // Fill the pipe: not one more byte fits.
    nix::fcntl::fcntl(
        &writer,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .unwrap();
    while writer.write(&[b'x'; 4096]).is_ok_and(|n| n > 0) {}
    nix::fcntl::fcntl(
        &writer,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
    )
    .unwrap();
    let mut child = Command::new(binary())
        .args(["-b", "127.0.0.1", "-p", "0"])
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn forkecho");
    let pid = Pid::from_raw(child.id() as i32);
    // The port, from the startup line on stderr: stdout is full.
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut early = String::new();
    let addr = loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "no startup line:\n{early}"
        );
        early.push_str(&line);
        if let Some(rest) = line.strip_prefix("forkecho: listening on ") {
            break rest
                .split(' ')
                .next()
                .unwrap()
                .parse::<std::net::SocketAddr>()
                .unwrap();
        }
    };
    assert!(
        early.contains("warning: unable to write the listening line to stdout"),
        "{early}"
    );
    let mut client = crate::util::connect(addr);
    assert_eq!(crate::util::round_trip(&mut client, b"served"), b"served");
    drop(client);
    kill(pid, Signal::SIGTERM).unwrap();
    let out = output_within_deadline(child, "forkecho");
    assert!(out.status.success(), "{:?}", out.status);
    assert!(reader.as_raw_fd() > 2);
}

#[test]
fn the_backlog_is_the_kernels_most_unless_asked_and_never_above_it() {
    let most: i32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    for (args, want) in [
        (&[][..], most),
        (&["--backlog", "5"][..], 5),
        (&["--backlog", "2000000000"][..], most),
    ] {
        let server = crate::util::Server::start(args);
        let line = server
            .wait_for(|l| l.name() == "listening")
            .expect("the startup line");
        let backlog = line.u64("backlog").unwrap();
        assert_eq!(backlog, want as u64, "{args:?}: {line}");
    }
}
