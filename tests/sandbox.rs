//! The sandbox: the server and every child run under a seccomp allow-list with no new
//! privileges, children with no room for processes or descriptors; a child that steps outside it
//! dies alone of SIGSYS.

use std::fs;
use std::io::{Read, Write};
use std::process::{Command, Stdio};

use crate::util::{DEADLINE, Server, binary, round_trip};
use nix::sys::signal::Signal;

fn status_field(pid: i32, key: &str) -> String {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
        .trim()
        .to_string()
}

fn limit(pid: i32, name: &str) -> String {
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits.lines().find(|l| l.starts_with(name)).unwrap();
    line[name.len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn the_server_and_every_child_are_confined_and_children_have_no_room() {
    let server = Server::start(&[]);
    let startup = server
        .wait_for(|l| l.name() == "listening")
        .expect("the startup line");
    assert_eq!(startup.str("sandbox"), Some("on"), "{startup}");
    let (_client, child) = server.connected_child();
    let child = child.as_raw();
    let parent = server.pid().as_raw();
    // One filter, installed by the parent before it announced itself, inherited by the child.
    for pid in [parent, child] {
        assert_eq!(status_field(pid, "Seccomp"), "2", "filter mode, pid {pid}");
        assert_eq!(status_field(pid, "NoNewPrivs"), "1", "pid {pid}");
    }
    // Only children give up processes and descriptors.
    assert_eq!(limit(child, "Max processes"), "0");
    let files: u32 = limit(child, "Max open files").parse().unwrap();
    assert!(files < 32, "Max open files {files}");
    assert_ne!(limit(parent, "Max processes"), "0");
}

#[test]
fn no_sandbox_leaves_children_unconfined() {
    let server = Server::start(&["--no-sandbox"]);
    let startup = server
        .wait_for(|l| l.name() == "listening")
        .expect("the startup line");
    assert_eq!(startup.str("sandbox"), Some("off"), "{startup}");
    let (_client, child) = server.connected_child();
    assert_eq!(status_field(child.as_raw(), "Seccomp"), "0");
    assert_eq!(status_field(server.pid().as_raw(), "Seccomp"), "0");
    assert_ne!(limit(child.as_raw(), "Max processes"), "0");
}

#[test]
fn a_sandboxed_child_echoes_on_every_path() {
    // The splice path (bulk), the read/write path, and the fault loop (--reset-after's ioctl).
    for args in [
        &[][..],
        &["--no-splice"],
        &["--delay", "1", "--reset-after", "100000"],
    ] {
        let server = Server::start(args);
        let data = crate::util::pattern(9, 2 << 20);
        let mut client = server.connect();
        let mut writer = client.try_clone().unwrap();
        let sent = data.clone();
        let sender = std::thread::spawn(move || writer.write_all(&sent));
        let mut back = vec![0u8; 100_000];
        client.read_exact(&mut back).unwrap();
        crate::util::assert_same_bytes(&back, &data[..100_000]);
        drop(client);
        let _ = sender.join();
        assert!(
            !server.log().contains("SIGSYS"),
            "{args:?}: {}",
            server.log()
        );
    }
}

#[test]
#[cfg_attr(
    not(debug_assertions),
    ignore = "fault hooks exist in debug builds only"
)]
fn a_child_that_makes_a_forbidden_system_call_dies_of_sigsys_and_the_server_serves_on() {
    let mut server = Server::with_hooks("forbidden-syscall", &[]);
    // Connection 1: its child calls socket(2) inside the sandbox.
    let mut first = server.connect();
    let local = first.local_addr().unwrap();
    let _ = first.write_all(b"anyone?");
    let mut rest = Vec::new();
    let _ = first.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{rest:?}");
    let pid = server.child_for(local).as_raw() as u64;
    let death = server
        .wait_for(|l| l.name() == "child" && l.u64("pid") == Some(pid))
        .expect("the child's death");
    assert!(death.line.contains("killed signal=SIGSYS"), "{death}");
    // Connection 2 is served as usual.
    let mut second = server.connect();
    assert_eq!(round_trip(&mut second, b"still here"), b"still here");
    drop(second);
    server.wait_for_no_children();
    server.signal(Signal::SIGTERM);
    assert!(server.wait_exit(DEADLINE).success());
}

#[test]
#[cfg_attr(
    not(debug_assertions),
    ignore = "fault hooks exist in debug builds only"
)]
fn without_the_sandbox_the_same_system_call_is_harmless() {
    let server = Server::with_hooks("forbidden-syscall", &["--no-sandbox"]);
    let mut client = server.connect();
    assert_eq!(round_trip(&mut client, b"fine"), b"fine");
}

#[test]
#[cfg_attr(
    not(debug_assertions),
    ignore = "fault hooks exist in debug builds only"
)]
fn inetd_mode_is_sandboxed_too() {
    let run = |args: &[&str]| {
        let mut child = Command::new(binary())
            .args(args)
            .env("FORKECHO_DEBUG", "forbidden-syscall")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(b"hi").unwrap();
        crate::util::output_within_deadline(child, "forkecho --inetd")
    };
    use std::os::unix::process::ExitStatusExt;
    let out = run(&["--inetd"]);
    assert_eq!(out.status.signal(), Some(Signal::SIGSYS as i32), "{out:?}");
    let out = run(&["--inetd", "--no-sandbox"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout, b"hi");
}

#[test]
fn stopping_and_continuing_the_server_and_a_waiting_child_is_survived() {
    // SIGSTOP and SIGCONT (a terminal's Ctrl-Z and fg, a debugger attaching) make the kernel
    // resume an interrupted wait with restart_syscall(2): the sandbox must allow it.
    let server = Server::start(&["--delay", "300"]);
    let mut client = server.connect();
    client.write_all(b"held").unwrap();
    let child = server.child_for(client.local_addr().unwrap());
    // The child waits in poll for the echo's due time; the parent waits in poll for clients.
    for pid in [child, server.pid()] {
        nix::sys::signal::kill(pid, Signal::SIGSTOP).unwrap();
        crate::util::eventually("the process to stop", DEADLINE, || {
            crate::util::process_state(pid.as_raw()) == Some('T')
        });
        nix::sys::signal::kill(pid, Signal::SIGCONT).unwrap();
    }
    let mut back = [0u8; 4];
    client.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"held");
    let mut again = server.connect();
    assert_eq!(round_trip(&mut again, b"still serving"), b"still serving");
    assert!(!server.log().contains("SIGSYS"), "{}", server.log());
}
