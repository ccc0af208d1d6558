//! The tests' helpers, split by concern: the server harness (`server`; its log lines are read as
//! the fixture's `Event`s, as a user's tests read them), clients (`clients`), payloads
//! (`payload`, shared with the benchmark), processes (`procfs`), starting and stopping a fixture
//! (`fixture`, shared with the benchmark) and private network namespaces (`netns`). This file
//! holds the deadline every test waits with: waiting is always polling for a state with a
//! deadline, never a bare sleep.

pub mod clients;
pub mod fixture;
pub mod netns;
pub mod payload;
pub mod procfs;
pub mod scratch;
pub mod server;

pub use clients::*;
pub use forkecho_fixture::Event;
pub use payload::*;
pub use procfs::{children_of, process_state, start_time};
pub use scratch::Scratch;
pub use server::Server;

use std::io::Write;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The fixture's: generous for slow, busy CI machines; a passing test never waits this long.
pub use forkecho_fixture::DEADLINE;

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_forkecho")
}

/// The user `nobody`, for the tests of `--user`: None, and the test says it is skipped, when
/// this process is not root or the host has no such user.
pub fn nobody() -> Option<nix::unistd::User> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: dropping privileges needs root");
        return None;
    }
    let nobody = nix::unistd::User::from_name("nobody").unwrap();
    if nobody.is_none() {
        eprintln!("skipped: this host has no user 'nobody'");
    }
    nobody
}

/// Calls `check` until it returns true; panics naming `what` after `within`.
pub fn eventually(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

/// Runs forkecho to completion (for invocations that must fail fast), killing it at the deadline.
pub fn run_to_completion(command: Command) -> Output {
    run_with_input(command, Vec::new())
}

/// Runs `command`, feeding `input` on stdin then closing it, and returns its output; fails the
/// test if it has not finished within the deadline.
pub fn run_with_input(mut command: Command, input: Vec<u8>) -> Output {
    let what = format!("{command:?}");
    let mut child = (command.stdin(Stdio::piped()).stdout(Stdio::piped()))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {what} (is it installed?): {e}"));
    let mut stdin = child.stdin.take().unwrap();
    thread::spawn(move || stdin.write_all(&input));
    output_within_deadline(child, &what)
}

/// Runs forkecho with `args`, which must fail to start: exit status 1, no readiness line. Returns
/// its stderr.
pub fn fails_to_start(args: &[&str]) -> String {
    let mut command = Command::new(binary());
    command.args(args);
    let out = run_to_completion(command);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty(), "no readiness line: {stderr}");
    stderr
}

/// Waits for `child` (forkecho, or a client or launcher started by a test) to exit and returns
/// its output; kills it and fails the test, naming `what` and quoting its stderr, if it has not
/// exited within the deadline.
pub fn output_within_deadline(child: Child, what: &str) -> Output {
    let pid = Pid::from_raw(child.id() as i32);
    let (done_tx, done_rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = done_tx.send(child.wait_with_output());
    });
    match done_rx.recv_timeout(DEADLINE) {
        Ok(output) => output.expect("collect output"),
        Err(_) => {
            let _ = kill(pid, Signal::SIGKILL);
            // Killed, it exits and the waiting thread hands over what it wrote.
            let stderr = done_rx
                .recv_timeout(DEADLINE)
                .ok()
                .and_then(Result::ok)
                .map(|out| String::from_utf8_lossy(&out.stderr).into_owned())
                .unwrap_or_default();
            panic!("{what} did not finish within {DEADLINE:?}; stderr:\n{stderr}");
        }
    }
}
