//! The server harness: runs the built forkecho binary as a fixture, the way users are told to.
//!
//! `Server::start` spawns it on `--port 0` (loopback unless the test says otherwise), reads the
//! `listening on ADDR` line to learn the port, and collects stderr in the background so the server
//! never blocks on a full pipe. Dropping a `Server` stops it (SIGTERM, then SIGKILL) and kills any
//! children it left.

use std::fs;
use std::io::{BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{
    DEADLINE, binary, children_of, connect, event, eventually, field, fixture, round_trip,
};

/// Everything the server wrote to stderr so far, with a condvar to wait for more.
#[derive(Default)]
struct Sink {
    text: Mutex<String>,
    grew: Condvar,
}

/// A running forkecho, stopped when dropped.
pub struct Server {
    process: Child,
    /// The first address of the readiness line.
    pub addr: SocketAddr,
    /// Every IP address of the readiness line (several with several --bind).
    pub addrs: Vec<SocketAddr>,
    /// Every Unix socket of the readiness line, as it shows them (`unix:/path`).
    pub unix: Vec<String>,
    stderr: Arc<Sink>,
    /// Bytes after the listening line, and whether stdout has reached EOF.
    stdout_rest: Arc<(Mutex<Vec<u8>>, AtomicBool)>,
}

impl Server {
    /// forkecho with `args`, on loopback port 0 unless `args` name a port or address.
    pub fn start(args: &[&str]) -> Server {
        let mut command = Command::new(binary());
        if !args.iter().any(|a| *a == "-b" || *a == "--bind") {
            command.args(["--bind", "127.0.0.1"]);
        }
        if !args.iter().any(|a| *a == "-p" || *a == "--port") {
            command.args(["--port", "0"]);
        }
        command.args(args);
        Server::spawn(command)
    }

    /// forkecho on loopback port 0 with `args` and the debug-build fault hooks `hooks` armed
    /// (`FORKECHO_DEBUG`).
    pub fn with_hooks(hooks: &str, args: &[&str]) -> Server {
        let mut command = Command::new(binary());
        command
            .args(["--bind", "127.0.0.1", "--port", "0"])
            .args(args)
            .env("FORKECHO_DEBUG", hooks);
        Server::spawn(command)
    }

    /// Spawns `command` (a forkecho invocation) and waits for its `listening on` line.
    pub fn spawn(mut command: Command) -> Server {
        let mut process = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn forkecho");
        let stderr = Arc::new(Sink::default());
        let mut err_pipe = process.stderr.take().unwrap();
        let sink = Arc::clone(&stderr);
        thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            while let Ok(n @ 1..) = err_pipe.read(&mut chunk) {
                sink.text
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&chunk[..n]));
                sink.grew.notify_all();
            }
        });
        let (ready_tx, ready_rx) = mpsc::channel();
        let stdout_rest = Arc::new((Mutex::new(Vec::new()), AtomicBool::new(false)));
        let rest = Arc::clone(&stdout_rest);
        let mut out = BufReader::new(process.stdout.take().unwrap());
        thread::spawn(move || {
            let _ = ready_tx.send(fixture::read_readiness_split(&mut out));
            let mut bytes = Vec::new();
            let _ = out.read_to_end(&mut bytes);
            *rest.0.lock().unwrap() = bytes;
            rest.1.store(true, Ordering::Release);
        });
        let ready = ready_rx
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|_| Err(String::new()));
        let mut server = Server {
            process,
            addr: "0.0.0.0:0".parse().unwrap(),
            addrs: Vec::new(),
            unix: Vec::new(),
            stderr,
            stdout_rest,
        };
        match ready {
            Ok((addrs, unix)) => {
                server.addr = addrs.first().copied().unwrap_or(server.addr);
                server.addrs = addrs;
                server.unix = unix;
            }
            Err(first) => {
                let _ = server.process.kill();
                let _ = server.process.wait();
                panic!(
                    "no readiness line; stdout began {first:?}; stderr:\n{}",
                    server.log()
                );
            }
        }
        server
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.process.id() as i32)
    }

    /// The port on loopback: `127.0.0.1:PORT` or `[::1]:PORT` to match the bound family.
    pub fn loopback(&self) -> SocketAddr {
        let ip = match self.addr {
            SocketAddr::V4(_) => "127.0.0.1".parse().unwrap(),
            SocketAddr::V6(_) => "::1".parse().unwrap(),
        };
        SocketAddr::new(ip, self.addr.port())
    }

    pub fn connect(&self) -> TcpStream {
        connect(self.loopback())
    }

    /// The UDP addresses of the readiness lines (`listening on udp ADDR...`), once stdout has
    /// ended (forkecho points it at /dev/null right after them).
    pub fn udp_addrs(&self) -> Vec<SocketAddr> {
        eventually("stdout to end after the readiness lines", DEADLINE, || {
            self.stdout_rest.1.load(Ordering::Acquire)
        });
        let rest = self.stdout_rest.0.lock().unwrap();
        let rest = String::from_utf8_lossy(&rest);
        let line = rest
            .lines()
            .find_map(|l| l.strip_prefix("listening on udp "))
            .unwrap_or_else(|| panic!("no udp line after the first; stdout went on {rest:?}"));
        line.split(' ').map(|a| a.parse().unwrap()).collect()
    }

    /// All of stderr so far.
    pub fn log(&self) -> String {
        self.stderr.text.lock().unwrap().clone()
    }

    /// Waits for a stderr line satisfying `matches` and returns it.
    pub fn wait_for_line(&self, what: &str, matches: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + DEADLINE;
        let mut text = self.stderr.text.lock().unwrap();
        loop {
            if let Some(line) = text.lines().find(|l| matches(l)) {
                return line.to_string();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no log line with {what}; stderr:\n{text}");
            text = self.stderr.grew.wait_timeout(text, left).unwrap().0;
        }
    }

    /// Waits until `count` stderr lines satisfy `matches`, and returns them.
    pub fn wait_for_lines(&self, count: usize, matches: impl Fn(&str) -> bool) -> Vec<String> {
        let deadline = Instant::now() + DEADLINE;
        let mut text = self.stderr.text.lock().unwrap();
        loop {
            let lines: Vec<String> = text
                .lines()
                .filter(|l| matches(l))
                .map(str::to_string)
                .collect();
            if lines.len() >= count {
                return lines;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "{} of {count} expected log lines; stderr:\n{text}",
                lines.len()
            );
            text = self.stderr.grew.wait_timeout(text, left).unwrap().0;
        }
    }

    /// The accept line for the client whose local address is `client`.
    pub fn accept_line_for(&self, client: SocketAddr) -> String {
        self.line_for("accept", client)
    }

    /// The close line for the client whose local address is `client`.
    pub fn close_line_for(&self, client: SocketAddr) -> String {
        self.line_for("close", client)
    }

    fn line_for(&self, what: &str, client: SocketAddr) -> String {
        let peer = client.to_string();
        self.wait_for_line(&format!("{what} peer={peer}"), |l| {
            event(l) == Some(what) && field(l, "peer") == Some(peer.as_str())
        })
    }

    /// The child serving the client whose local address is `client`.
    pub fn child_for(&self, client: SocketAddr) -> Pid {
        let line = self.accept_line_for(client);
        Pid::from_raw(field(&line, "pid").unwrap().parse().unwrap())
    }

    /// A connected client that has completed a round trip, and the child serving it.
    pub fn connected_child(&self) -> (TcpStream, Pid) {
        let mut client = self.connect();
        assert_eq!(round_trip(&mut client, b"ping"), b"ping");
        let pid = self.child_for(client.local_addr().unwrap());
        (client, pid)
    }

    /// Stops the server with SIGTERM, checks that it exited with status 0, and returns its
    /// `stopped` summary line.
    pub fn stop(&mut self) -> String {
        self.signal(Signal::SIGTERM);
        assert!(self.wait_exit(DEADLINE).success(), "{}", self.log());
        self.stopped_line()
    }

    /// The `stopped` summary line (once the server has stopped).
    pub fn stopped_line(&self) -> String {
        self.wait_for_line("the stopped line", |l| event(l) == Some("stopped"))
    }

    /// The server's child processes (pid, state letter), read from /proc.
    pub fn children(&self) -> Vec<(i32, char)> {
        children_of(self.pid())
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
        let mut status = None;
        eventually("forkecho to exit", within, || {
            status = self.process.try_wait().expect("try_wait");
            status.is_some()
        });
        status.unwrap()
    }

    /// What the server and its children wrote to stdout after the listening line, once every
    /// one of them has closed it (so call it after the server exited).
    pub fn stdout_after_listening(&self) -> Vec<u8> {
        eventually("stdout to reach EOF", DEADLINE, || {
            self.stdout_rest.1.load(Ordering::Acquire)
        });
        self.stdout_rest.0.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.process.try_wait() {
            let children = self.children();
            fixture::stop(&mut self.process, DEADLINE);
            for (pid, _) in children {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}
