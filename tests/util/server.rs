//! The server harness: forkecho started by `forkecho-fixture`, the crate users get, on the binary
//! cargo built, with what forkecho's own tests read on top: the children and descriptors in
//! /proc, signals.
//!
//! `Server::start` starts it on `--port 0` on loopback (unless the test says otherwise), logging
//! text lines and without a control socket unless the test asks for one; `Server::spawn` runs a
//! command of the test's own (passed sockets, wrappers). Dropping a `Server` stops it and kills
//! any children it left.

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use forkecho_fixture::{Builder, Event, Forkecho};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{DEADLINE, binary, children_of, eventually, round_trip};

/// A running forkecho, stopped when dropped.
pub struct Server {
    fixture: Forkecho,
    /// The first TCP address of the readiness lines (with --udp-only, the first UDP one).
    pub addr: SocketAddr,
}

impl Server {
    /// forkecho with `args`, on loopback port 0 unless `args` name a port or address.
    pub fn start(args: &[&str]) -> Server {
        Server::build(Builder::new(), args)
    }

    /// forkecho on loopback port 0 with `args` and the debug-build fault hooks `hooks` armed
    /// (`FORKECHO_DEBUG`).
    pub fn with_hooks(hooks: &str, args: &[&str]) -> Server {
        Server::build(Builder::new().env("FORKECHO_DEBUG", hooks), args)
    }

    fn build(builder: Builder, args: &[&str]) -> Server {
        let mut builder = builder.binary(binary());
        if !args.iter().any(|a| a.starts_with("--log-format")) {
            builder = builder.args(["--log-format", "text"]);
        }
        if !args.iter().any(|a| a.starts_with("--control")) {
            builder = builder.without_control();
        }
        Server::new(builder.args(args).start())
    }

    /// Spawns `command` (a forkecho invocation of the test's own) and waits for its readiness.
    pub fn spawn(command: Command) -> Server {
        Server::new(Forkecho::spawn(command))
    }

    fn new(started: std::io::Result<Forkecho>) -> Server {
        let fixture = started.unwrap_or_else(|err| panic!("{err}"));
        let found = fixture.addresses();
        let addr = found.tcp.first().or(found.udp.first()).copied();
        Server {
            addr: addr.unwrap_or(([0, 0, 0, 0], 0).into()),
            fixture,
        }
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.fixture.pid() as i32)
    }

    /// The fixture's `connect`, which fails the test if it cannot connect.
    pub fn connect(&self) -> TcpStream {
        let connected = self.fixture.connect();
        connected.unwrap_or_else(|err| panic!("connect to {}: {err}", self.addr))
    }

    /// Every log line so far, each with its newline.
    pub fn log(&self) -> String {
        self.log_lines()
            .iter()
            .map(|line| format!("{line}\n"))
            .collect()
    }

    /// The child serving the client whose local address is `client`.
    pub fn child_for(&self, client: SocketAddr) -> Pid {
        let accept = self.accepted(client).unwrap();
        Pid::from_raw(accept.u64("pid").unwrap() as i32)
    }

    /// A connected client that has completed a round trip, and the child serving it.
    pub fn connected_child(&self) -> (TcpStream, Pid) {
        let mut client = self.connect();
        assert_eq!(round_trip(&mut client, b"ping"), b"ping");
        let pid = self.child_for(client.local_addr().unwrap());
        (client, pid)
    }

    /// Stops the server with SIGTERM, checks that it exited with status 0, and returns its
    /// `stopped` summary.
    pub fn stop(&mut self) -> Event {
        self.signal(Signal::SIGTERM);
        assert!(self.wait_exit(DEADLINE).success(), "{}", self.log());
        self.stopped()
    }

    /// The `stopped` summary (once the server has stopped).
    pub fn stopped(&self) -> Event {
        self.wait_for(|e| e.name() == "stopped")
            .expect("the stopped line")
    }

    /// The server's child processes (pid, state letter), read from /proc.
    pub fn children(&self) -> Vec<(i32, char)> {
        children_of(self.pid().as_raw())
    }

    pub fn wait_for_no_children(&self) {
        eventually("every child to be reaped", DEADLINE, || {
            self.children().is_empty()
        });
    }

    pub fn fd_count(&self) -> usize {
        fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("read the server's fd table")
            .count()
    }

    /// Sends `signal` to the server itself.
    pub fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).expect("signal the server");
    }

    /// Waits for the server to exit, at most `within`.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let exited = self.fixture.wait_exit(within);
        exited.unwrap_or_else(|err| panic!("{err}; the log:\n{}", self.log()))
    }
}

/// The fixture's own methods (`addresses`, `closed`, `accepted`, `connect_tls`, the control
/// verbs, ...) on the server itself.
impl std::ops::Deref for Server {
    type Target = Forkecho;

    fn deref(&self) -> &Forkecho {
        &self.fixture
    }
}

impl Drop for Server {
    /// The fixture stops the server; children it left are killed.
    fn drop(&mut self) {
        for (pid, _) in self.children() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}
