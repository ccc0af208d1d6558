//! [forkecho](https://crates.io/crates/forkecho), the process-per-connection echo server that
//! misbehaves on purpose, as a fixture for Rust tests: one line starts it on a free loopback
//! port, and it stops with the test.
//!
//! ```
//! use std::io::{Read, Write};
//!
//! let fe = forkecho_fixture::Forkecho::start()?;
//! let mut client = std::net::TcpStream::connect(fe.addr())?;
//! client.write_all(b"hello")?;
//! let mut echoed = [0; 5];
//! client.read_exact(&mut echoed)?;
//! assert_eq!(&echoed, b"hello");
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! Any of forkecho's options passes through (`man forkecho` lists them): a fault, and what the
//! server's log says it did.
//!
//! ```
//! use std::io::{Read, Write};
//!
//! let fe = forkecho_fixture::Forkecho::with_args(["--reset-after", "5"])?;
//! let mut client = std::net::TcpStream::connect(fe.addr())?;
//! client.write_all(b"more than five bytes")?;
//! let mut echoed = Vec::new();
//! let err = client.read_to_end(&mut echoed).unwrap_err();
//! assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
//! assert_eq!(echoed, b"more ");
//! let close = fe.wait_for(|e| e.name() == "close")?;
//! assert_eq!(close.str("end"), Some("reset-after"));
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! TLS with a certificate made for this run: with the `rustls` feature, `connect_tls()` trusts
//! the run's CA (`ca_path()`); the `tls` module has the example.
//!
//! The control socket changes it while it runs: faults from the next connection on, the
//! listeners down and up again, live connections closed or reset.
//!
//! ```
//! use std::net::TcpStream;
//!
//! let fe = forkecho_fixture::Forkecho::start()?;
//! fe.down()?;
//! assert!(TcpStream::connect(fe.addr()).is_err());
//! fe.up()?;
//! let reply = fe.set_faults([("delay", "50")])?;
//! assert_eq!(reply["from_connection"], 1);
//! assert_eq!(fe.status()?["state"], "up");
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! UDP echo (RFC 862) beside TCP, on the same port:
//!
//! ```
//! let fe = forkecho_fixture::Forkecho::with_args(["--udp"])?;
//! let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
//! socket.send_to(b"datagram", fe.udp_addr().unwrap())?;
//! let mut buf = [0; 64];
//! let (len, _) = socket.recv_from(&mut buf)?;
//! assert_eq!(&buf[..len], b"datagram");
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # What the fixture does
//! - The binary: `FORKECHO_BIN`, else `forkecho` on PATH ([`Builder::binary`] overrides both).
//! - Around the test's arguments: `--bind 127.0.0.1 --port 0` (unless it names a bind or a port),
//!   `--log-format json` (unless it names a format), `--stdin-lifeline`, a control socket, and
//!   with `--tls` (and neither `--tls-ca-out` nor `--tls-cert`) `--tls-ca-out`, all in a
//!   directory of its own under the temporary directory.
//! - Readiness: forkecho's readiness lines on stdout, never a log line and never a sleep. They
//!   come in one write when every listener is bound and the CA written.
//! - Lifetime: forkecho stops when the fixture is stopped or dropped, and when the test process
//!   ends however it ends (SIGKILL too, from any thread): the fixture holds forkecho's stdin,
//!   and its end stops it. Its children close their connections as it stops.
//! - Files: the fixture's directory goes with it; one a killed test process left is removed by
//!   the next fixture that starts.

mod addresses;
mod log;
mod start;
#[cfg(feature = "rustls")]
pub mod tls;

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ExitStatus};
use std::sync::Arc;
use std::time::{Duration, Instant};
use std::{ffi::OsStr, thread};

use serde_json::Value;

pub use addresses::Addresses;
pub use forkecho_control::{FaultChange, Request};
pub use log::Event;
pub use start::{Builder, DEADLINE};

/// A running forkecho, stopped when dropped.
pub struct Forkecho {
    child: Child,
    stdin: Option<ChildStdin>,
    lifeline: bool,
    readiness: String,
    log: Arc<log::Log>,
    dir: start::Dir,
    control: Option<PathBuf>,
    ca: Option<PathBuf>,
    addresses: Addresses,
}

/// How a stopped forkecho ended: its exit status and its `stopped` line's counts.
#[derive(Debug, Clone)]
pub struct Stopped {
    pub status: ExitStatus,
    /// The `stopped` line: `accepted`, `refused`, `reaped`, `bytes`, `killed`, ...
    pub event: Event,
}

impl Forkecho {
    /// forkecho on a free port on 127.0.0.1, serving when this returns.
    pub fn start() -> io::Result<Forkecho> {
        Builder::new().start()
    }

    /// forkecho with `args` (faults, `--tls`, `--udp`, ...), serving when this returns.
    pub fn with_args<I, S>(args: I) -> io::Result<Forkecho>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Builder::new().args(args).start()
    }

    /// A forkecho to configure further (its binary, its environment, no control socket).
    pub fn builder() -> Builder {
        Builder::new()
    }

    /// forkecho started by a `Command` of your own, for what the fixture's arguments cannot
    /// say: a wrapper (`ip netns exec`, `systemd-socket-activate`), a listening socket passed
    /// in. Nothing is added to its arguments; the fixture reads its readiness lines, collects
    /// its log, and stops it with SIGTERM when dropped or stopped (or, if the command has
    /// `--stdin-lifeline`, as for `start`).
    pub fn spawn(command: std::process::Command) -> io::Result<Forkecho> {
        let lifeline = command.get_args().any(|arg| arg == "--stdin-lifeline");
        start::launch(command, start::Dir::new(), None, None, lifeline)
    }

    pub(crate) fn new(started: start::Started, addresses: Addresses, readiness: String) -> Self {
        Forkecho {
            child: started.child,
            stdin: started.stdin,
            lifeline: started.lifeline,
            readiness,
            log: started.log,
            dir: started.dir,
            control: started.control,
            ca: started.ca,
            addresses,
        }
    }

    /// The first TCP listener on an IP address. Panics if there is none (`--udp-only`, Unix
    /// sockets alone): see `udp_addr` and `unix_path`.
    pub fn addr(&self) -> SocketAddr {
        *self.addresses.tcp.first().unwrap_or_else(|| {
            panic!(
                "forkecho has no TCP listener on an IP address: {:?}",
                self.addresses
            )
        })
    }

    /// A client connected to `addr()` (to loopback on its port when forkecho listens on a
    /// wildcard address), with read and write timeouts of `DEADLINE`: a server that stalls fails
    /// the test instead of hanging it.
    pub fn connect(&self) -> io::Result<TcpStream> {
        connect_with_timeouts(self.client_addr())
    }

    /// Where a client connects: `addr()`, or loopback on its port when that is a wildcard
    /// address (`connect`, `connect_tls`).
    pub(crate) fn client_addr(&self) -> SocketAddr {
        let mut addr = self.addr();
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr {
                SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
            });
        }
        addr
    }

    /// Every address of the readiness lines.
    pub fn addresses(&self) -> &Addresses {
        &self.addresses
    }

    /// The first UDP socket (`--udp`, `--udp-only`).
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.addresses.udp.first().copied()
    }

    /// The first Unix socket listener (`--bind unix:PATH`; an abstract one as `@name`).
    pub fn unix_path(&self) -> Option<&Path> {
        self.addresses.unix.first().map(PathBuf::as_path)
    }

    /// The CA certificate (PEM) of the run's TLS certificate, with `--tls`.
    pub fn ca_path(&self) -> Option<&Path> {
        self.ca.as_deref()
    }

    /// Where Prometheus metrics are served (`--metrics 127.0.0.1:0`).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.addresses.metrics
    }

    /// The fixture's own directory (the control socket, the CA), removed with the fixture.
    pub fn directory(&self) -> &Path {
        self.dir.path()
    }

    /// The readiness lines, as forkecho wrote them to stdout (all it ever writes there).
    pub fn readiness_lines(&self) -> &str {
        &self.readiness
    }

    /// forkecho's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends one control request and returns the reply; a refusal is an error with the server's
    /// reason.
    pub fn control(&self, request: &Request) -> io::Result<Value> {
        let path = self.control.as_ref().ok_or_else(|| {
            io::Error::other("this forkecho was started without a control socket")
        })?;
        let reply = control_exchange(path, &request.to_json())?;
        match reply["ok"] == true {
            true => Ok(reply),
            false => Err(io::Error::other(format!(
                "forkecho refused {}: {}",
                request.name(),
                reply["error"]
            ))),
        }
    }

    /// New faults for the connections accepted from now on, each a fault option's name without
    /// its dashes and the value the option takes: `[("delay", "100"), ("reset-after", "500")]`.
    /// The reply's `from_connection` is the first connection that gets them.
    pub fn set_faults<I, K, V>(&self, faults: I) -> io::Result<Value>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: ToString,
    {
        let set = faults.into_iter().map(|(k, v)| (k.into(), v.to_string()));
        self.control(&Request::Faults(FaultChange::Set(set.collect())))
    }

    /// No faults from the next connection on.
    pub fn clear_faults(&self) -> io::Result<Value> {
        self.control(&Request::Faults(FaultChange::Clear))
    }

    /// Shuts the listeners: connecting is refused until `up`.
    pub fn down(&self) -> io::Result<Value> {
        self.control(&Request::Down)
    }

    /// Listens again after `down` or `blackhole`.
    pub fn up(&self) -> io::Result<Value> {
        self.control(&Request::Up)
    }

    /// Listens but accepts nothing: connects hang once the backlog is full.
    pub fn blackhole(&self) -> io::Result<Value> {
        self.control(&Request::Blackhole)
    }

    /// Closes every live connection (from one network, `"10.0.0.0/8"`, if `from` names one).
    pub fn close_connections(&self, from: Option<&str>) -> io::Result<Value> {
        let from = from.map(str::to_string);
        self.control(&Request::Close { from })
    }

    /// Resets every live connection (from one network, if `from` names one).
    pub fn reset_connections(&self, from: Option<&str>) -> io::Result<Value> {
        let from = from.map(str::to_string);
        self.control(&Request::Reset { from })
    }

    /// The counts, the state (`up`, `down`, `blackhole`), the listeners and the faults.
    pub fn status(&self) -> io::Result<Value> {
        self.control(&Request::Status)
    }

    /// Every log line read so far, as forkecho wrote it. Lines are read as they come, so one
    /// written just now, even the startup lines written as `start()` returned, may still be on
    /// its way: `wait_for` a line rather than look for it here.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lines()
    }

    /// Every log line read so far, as events (see `log_lines`).
    pub fn events(&self) -> Vec<Event> {
        self.log.lines().iter().map(|l| Event::parse(l)).collect()
    }

    /// Waits (up to `DEADLINE`) for the first event that `matches`; an error quotes the log.
    pub fn wait_for(&self, matches: impl Fn(&Event) -> bool) -> io::Result<Event> {
        let mut found = self.wait_for_events(1, DEADLINE, matches)?;
        Ok(found.remove(0))
    }

    /// Waits (up to `DEADLINE`) for the `close` event of the connection whose client end is
    /// `client` (`stream.local_addr()`): how it ended (`end`), what was echoed (`bytes`), the
    /// faults that acted (`fault`).
    pub fn closed(&self, client: SocketAddr) -> io::Result<Event> {
        self.event_of("close", client)
    }

    /// Waits (up to `DEADLINE`) for the `accept` event of the connection whose client end is
    /// `client`: the child serving it (`pid`).
    pub fn accepted(&self, client: SocketAddr) -> io::Result<Event> {
        self.event_of("accept", client)
    }

    fn event_of(&self, name: &str, client: SocketAddr) -> io::Result<Event> {
        let peer = client.to_string();
        self.wait_for(|e| e.name() == name && e.str("peer") == Some(peer.as_str()))
    }

    /// Waits up to `within` for `count` events that match, and returns every one that does.
    pub fn wait_for_events(
        &self,
        count: usize,
        within: Duration,
        matches: impl Fn(&Event) -> bool,
    ) -> io::Result<Vec<Event>> {
        let found = self
            .log
            .wait_for(count, within, |l| matches(&Event::parse(l)));
        match found {
            Ok(lines) => Ok(lines.iter().map(|l| Event::parse(l)).collect()),
            Err(lines) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "{count} matching log lines not seen within {within:?}; the log:\n{}",
                    lines.join("\n")
                ),
            )),
        }
    }

    /// Stops forkecho the way the end of a test does (its stdin closed: every connection
    /// closed, then exit 0) and returns its exit status and its `stopped` line.
    pub fn stop(mut self) -> io::Result<Stopped> {
        let status = self.end()?;
        self.log.wait_for_end(DEADLINE);
        let event = self
            .events()
            .into_iter()
            .rev()
            .find(|e| e.name() == "stopped");
        let event = event.ok_or_else(|| {
            io::Error::other(format!(
                "forkecho exited ({status}) without a stopped line:\n{}",
                self.log.lines().join("\n")
            ))
        })?;
        Ok(Stopped { status, event })
    }

    /// Waits up to `within` for forkecho to exit on its own (after a signal the test sent).
    pub fn wait_exit(&mut self, within: Duration) -> io::Result<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("forkecho still running after {within:?}"),
                ));
            }
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// Closes the lifeline (or sends SIGTERM, without one) and waits for the exit; kills
    /// forkecho if it takes over `DEADLINE`.
    fn end(&mut self) -> io::Result<ExitStatus> {
        drop(self.stdin.take());
        if !self.lifeline {
            terminate(self.child.id());
        }
        match self.wait_exit(DEADLINE) {
            Ok(status) => Ok(status),
            Err(err) => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                Err(err)
            }
        }
    }
}

/// A TCP client of `addr` that waits at most `DEADLINE` to connect, read or write (`connect`,
/// and the `rustls` feature's TLS clients).
pub(crate) fn connect_with_timeouts(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, DEADLINE)?;
    stream.set_read_timeout(Some(DEADLINE))?;
    stream.set_write_timeout(Some(DEADLINE))?;
    Ok(stream)
}

impl Drop for Forkecho {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.end();
        }
        self.dir.remove();
    }
}

/// SIGTERM to `pid` (std's `Child::kill` sends only SIGKILL).
fn terminate(pid: u32) {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
}

/// One request line out, one reply line back.
fn control_exchange(path: &Path, request: &Value) -> io::Result<Value> {
    use std::io::{BufRead, BufReader, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(path)?;
    stream.set_read_timeout(Some(DEADLINE))?;
    // A refusal may come before the request is read: read the reply whatever the write did.
    let sent = stream.write_all(format!("{request}\n").as_bytes());
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    if line.is_empty() {
        sent?;
        return Err(io::Error::other(
            "the control socket closed without a reply",
        ));
    }
    serde_json::from_str(&line).map_err(|err| io::Error::other(format!("{err}: {line}")))
}
