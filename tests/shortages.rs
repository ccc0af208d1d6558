//! Resource faults the server survives: fork failing at the process limit, accept failing for
//! want of descriptors. Neither ends the server, and neither makes it spin.

use std::io::Read;
use std::process::Command;

use crate::util::{DEADLINE, Server, round_trip};
use nix::sys::signal::Signal;

/// A uid no one else uses, so RLIMIT_NPROC counts only this test's server and its children.
const SPARE_UID: &str = "61234";

/// forkecho under `prlimit LIMIT`, as SPARE_UID when `as_spare_user` (setpriv needs root).
fn limited(limit: &str, as_spare_user: bool) -> Command {
    let mut command = if as_spare_user {
        let mut c = Command::new("setpriv");
        c.args([
            &format!("--reuid={SPARE_UID}"),
            &format!("--regid={SPARE_UID}"),
            "--clear-groups",
            "--",
            "prlimit",
        ]);
        c
    } else {
        Command::new("prlimit")
    };
    // prlimit sets the limit on itself and then execs forkecho, so the pid stays the server's.
    command
        .args([limit, "--", crate::util::binary()])
        .args(["--bind", "127.0.0.1", "--port", "0"]);
    command
}

#[test]
fn fork_failure_closes_that_client_and_serving_resumes_when_processes_free_up() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to run the server as a spare uid with a process limit");
        return;
    }
    // The server plus two children reach the limit of three processes.
    let mut server = Server::spawn(limited("--nproc=3", true));
    let mut first = server.connect();
    let mut second = server.connect();
    assert_eq!(round_trip(&mut first, b"one"), b"one");
    assert_eq!(round_trip(&mut second, b"two"), b"two");

    let mut refused = server.connect();
    let local = refused.local_addr().unwrap().to_string();
    let mut rest = Vec::new();
    // Closed at once with nothing echoed (EOF; a reset would also be acceptable).
    let _ = refused.read_to_end(&mut rest);
    assert!(rest.is_empty());
    let warning = server
        .wait_for(|l| l.line.contains("fork failed"))
        .expect("the fork warning");
    assert_eq!(warning.str("peer"), Some(local.as_str()), "{warning}");
    assert!(
        warning.line.contains("Resource temporarily unavailable"),
        "{warning}"
    );

    // More clients while processes are short: fork fails for each in turn, but with accepting
    // paused after every failure, so they are closed about ten a second, not all at once. The
    // second warning comes a second after the first and counts the failures in between.
    let mut more: Vec<_> = (0..15).map(|_| server.connect()).collect();
    let warnings = server
        .wait_for_events(2, DEADLINE, |l| l.line.contains("fork failed"))
        .unwrap();
    let held = suppressed_count(&warnings[1].line);
    assert!(
        (1..=30).contains(&held),
        "{held} fork failures in one second"
    );
    for client in &mut more {
        let mut rest = Vec::new();
        let _ = client.read_to_end(&mut rest);
        assert!(rest.is_empty());
    }

    drop(first);
    crate::util::eventually("a child slot to free up", DEADLINE, || {
        server.children().len() == 1
    });
    let mut third = server.connect();
    assert_eq!(round_trip(&mut third, b"back"), b"back");

    server.signal(Signal::SIGTERM);
    assert_eq!(server.wait_exit(DEADLINE).code(), Some(0));
    let stopped = server.stopped();
    assert_ne!(stopped.u64("fork-failures"), Some(0), "{stopped}");
}

#[test]
fn accept_failing_with_emfile_backs_off_instead_of_spinning() {
    // fds 0-2, the listener, the self-pipe, the log's own description of stderr (a pipe here)
    // and the oom_score_adj file fill a limit of eight: every accept gets EMFILE. (stdout's own
    // description finds no room either: the readiness line is written to fd 1 itself.)
    let mut server = Server::spawn(limited("--nofile=8", false));
    let _waiting = server.connect(); // completes in the kernel backlog; accept then fails
    let lines = server
        .wait_for_events(2, DEADLINE, |l| {
            l.line.contains("accept failed") && l.line.contains("Too many open files")
        })
        .unwrap();
    // The second warning comes a second after the first and counts the failures in between.
    // Pausing 100ms after each makes that about ten; a busy loop would make it thousands.
    let held: u64 = lines[1]
        .line
        .strip_suffix(" similar suppressed)")
        .and_then(|s| s.rsplit_once(" (("))
        .or_else(|| {
            lines[1]
                .line
                .strip_suffix(" similar suppressed)")?
                .rsplit_once('(')
        })
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or_else(|| panic!("no suppressed count in {:?}", lines[1]));
    assert!(
        (1..=30).contains(&held),
        "{held} accept failures in one second"
    );

    server.signal(Signal::SIGTERM);
    assert_eq!(
        server.wait_exit(DEADLINE).code(),
        Some(0),
        "{}",
        server.log()
    );
}

/// N in a warning that ends `(N similar suppressed)`.
fn suppressed_count(line: &str) -> u64 {
    line.strip_suffix(" similar suppressed)")
        .and_then(|s| s.rsplit_once('('))
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or_else(|| panic!("no suppressed count in {line:?}"))
}
