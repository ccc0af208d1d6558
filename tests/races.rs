//! The fork boundary's races, through the real binary: a stop signal arriving while the loop
//! takes a wake-up, pids recycled while their exits wait to be collected, and what a child can
//! reach of the parent's state.
//!
//! A stop signal can only be lost if it lands in a window of a few instructions, so that test
//! uses a fault hook of the debug build (`FORKECHO_DEBUG`) to raise it exactly there. Pid reuse
//! is made to happen in seconds by running the server in a pid namespace of its own with room
//! for twenty pids (Linux 6.14 and later let a namespace have its own pid_max); that needs root and
//! util-linux's `unshare`, and is skipped with a message without them.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::Command;
use std::thread;

use crate::util::{DEADLINE, Server, binary};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

#[test]
#[cfg_attr(
    not(debug_assertions),
    ignore = "fault hooks exist in debug builds only"
)]
fn a_stop_signal_that_lands_while_the_loop_takes_a_wake_up_is_not_lost() {
    let mut server = Server::with_hooks("sigterm-while-waking", &[]);
    // Any signal wakes the idle loop; while it takes that wake-up, the hook raises SIGTERM
    // between emptying the self-pipe and reading the flags.
    server.signal(Signal::SIGUSR1);
    let status = server.wait_exit(DEADLINE);
    assert!(status.success(), "{status}; stderr:\n{}", server.log());
    let stopping = server
        .wait_for(|l| l.name() == "stopping")
        .expect("the stopping line");
    assert_eq!(stopping.str("signal"), Some("SIGTERM"), "{stopping}");
}

/// The child's side: a stop signal that lands after a child looked for one and before it waits
/// in poll (on the spliced path, for more input; on the shaped path, for its next step) must end
/// that wait, not leave it to the idle timeout (30 s here). The hook raises it at the child's
/// first wait.
#[test]
#[cfg_attr(
    not(debug_assertions),
    ignore = "fault hooks exist in debug builds only"
)]
fn a_stop_signal_that_lands_just_before_a_child_waits_is_not_lost() {
    // 2 KiB fills a plain session's small first read: its first wait is on the spliced path. A
    // shaped session waits from the start: its client sends nothing, so that only the stop can
    // end that wait.
    for (faults, sent) in [(&[][..], 2048), (&["--stall-after", "1M"][..], 0)] {
        let args = [&["--idle-timeout", "30"][..], faults].concat();
        let server = Server::with_hooks("stop-before-wait", &args);
        let mut client = server.connect();
        client.write_all(&vec![b'x'; sent]).unwrap();
        let started = std::time::Instant::now();
        let mut back = Vec::new();
        let _ = client.read_to_end(&mut back);
        let waited = started.elapsed();
        assert!(
            waited < std::time::Duration::from_secs(10),
            "{faults:?}: closed after {waited:?}"
        );
        let close = server.closed(client.local_addr().unwrap()).unwrap();
        assert_eq!(close.str("end"), Some("shutdown"), "{faults:?}: {close}");
        // What the close line counts is what the client got.
        assert_eq!(close.u64("bytes"), Some(back.len() as u64));
    }
}

/// Whether this machine can give a pid namespace its own pid_max (root, `unshare`, Linux 6.14+).
fn namespaced_pid_max_works() -> bool {
    nix::unistd::geteuid().is_root()
        && Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc", "sh", "-c"])
            .arg("echo 310 > /proc/sys/kernel/pid_max")
            .status()
            .is_ok_and(|s| s.success())
}

/// One short connection: a byte, its echo, close. A connection whose fork failed (the
/// namespace has only twenty pids) is closed with nothing echoed; that is fine here.
fn short_connection(addr: SocketAddr) {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return;
    };
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let _ = stream.write_all(b"x");
    let _ = stream.shutdown(Shutdown::Write);
    let mut rest = Vec::new();
    match stream.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty() || rest == b"x", "echo {rest:?}"),
        Err(err) => assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}"),
    }
}

#[test]
fn recycled_pids_never_corrupt_the_child_table() {
    if !namespaced_pid_max_works() {
        eprintln!("skipped: needs root, unshare and a kernel with a pid_max per pid namespace");
        return;
    }
    // The server is pid 1 of a namespace whose children get pids 300 to 319, round and round:
    // a pid comes back every twenty forks, often while its last owner's exit is still in the
    // reaper's ring.
    let mut command = Command::new("unshare");
    command
        .args(["--pid", "--fork", "--mount-proc", "--kill-child=SIGTERM"])
        .args(["sh", "-c"])
        .arg(
            "echo 320 > /proc/sys/kernel/pid_max && echo 299 > /proc/sys/kernel/ns_last_pid \
             && exec \"$0\" \"$@\"",
        )
        .arg(binary())
        .args(["--bind", "127.0.0.1", "--port", "0", "--max-clients", "64"]);
    let mut server = Server::spawn(command);
    let forkecho = Pid::from_raw(
        server
            .children()
            .first()
            .expect("forkecho runs under unshare")
            .0,
    );
    let addr = server.addr;
    thread::scope(|scope| {
        for _ in 0..16 {
            scope.spawn(|| (0..60).for_each(|_| short_connection(addr)));
        }
    });
    crate::util::eventually("every child to be reaped", DEADLINE, || {
        crate::util::children_of(forkecho.as_raw()).is_empty()
    });
    kill(forkecho, Signal::SIGUSR1).unwrap();
    let stats = server
        .wait_for(|l| l.name() == "stats")
        .expect("the stats line");
    let log = server.log();
    assert!(!log.contains("not in the table"), "{log}");
    assert!(!log.contains("panic"), "{log}");
    let count = |name: &str| stats.u64(name).unwrap();
    assert_eq!(count("live"), 0, "{stats}");
    assert_eq!(
        count("reaped") + count("fork-failures"),
        count("accepted"),
        "{stats}"
    );
    let events = server.events();
    let accepts = events.iter().filter(|l| l.name() == "accept").count();
    let pids: std::collections::HashSet<u64> = (events.iter())
        .filter(|l| l.name() == "accept")
        .filter_map(|l| l.u64("pid"))
        .collect();
    assert!(
        pids.len() <= 20 && accepts > 100,
        "{accepts} children on {} pids: pids were not recycled as planned",
        pids.len()
    );
    // unshare ignores SIGTERM while it waits for its child: stop forkecho itself.
    kill(forkecho, Signal::SIGTERM).unwrap();
    assert!(server.wait_exit(DEADLINE).success(), "{}", server.log());
}

/// The writable mappings `pid` shares with other processes (`rw-s` in /proc/PID/maps), in bytes.
fn shared_writable(pid: Pid) -> Vec<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .expect("read the maps")
        .lines()
        .filter(|line| line.split_whitespace().nth(1) == Some("rw-s"))
        .map(|line| {
            let range = line.split_whitespace().next().unwrap();
            let (start, end) = range.split_once('-').unwrap();
            u64::from_str_radix(end, 16).unwrap() - u64::from_str_radix(start, 16).unwrap()
        })
        .collect()
}

#[test]
fn a_child_shares_no_writable_memory_with_the_parent_but_the_byte_counter() {
    let server = Server::start(&[]);
    let (_client, child) = server.connected_child();
    assert_eq!(
        shared_writable(child),
        vec![4096],
        "the child may write only the one shared page, the bytes-echoed counter"
    );
}

#[test]
#[cfg_attr(
    not(debug_assertions),
    ignore = "fault hooks exist in debug builds only"
)]
fn a_panicking_child_ends_alone_with_status_101_and_the_server_serves_on() {
    let mut server = Server::with_hooks("child-panics", &[]);
    for _ in 0..3 {
        let mut client = server.connect();
        let local = client.local_addr().unwrap();
        // The child panics before it echoes anything: the client sees its connection closed.
        let mut rest = Vec::new();
        let _ = client.write_all(b"anyone?");
        let _ = client.read_to_end(&mut rest);
        assert!(rest.is_empty(), "{rest:?}");
        let pid = server.child_for(local).as_raw() as u64;
        let panic = server
            .wait_for(|l| l.name() == "panic" && l.u64("pid") == Some(pid))
            .expect("the child's panic line");
        assert!(panic.line.contains("child-panics"), "{panic}");
        let exit = server
            .wait_for(|l| l.name() == "child" && l.u64("pid") == Some(pid))
            .expect("the child's exit line");
        assert_eq!(exit.u64("status"), Some(101), "{exit}");
    }
    server.wait_for_no_children();
    let stopped = server.stop();
    assert_eq!(stopped.u64("accepted"), Some(3), "{stopped}");
    assert_eq!(stopped.u64("reaped"), Some(3), "{stopped}");
}
