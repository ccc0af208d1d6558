//! `forkecho ping HOST:PORT`: the client side of a network-path test, like ping(8) for an echo
//! server.
//!
//! Every `--interval`, a probe of `--size` bytes (a payload that differs per sequence number:
//! `probe`) is sent and read back within `--timeout`, and checked byte for byte: a middlebox that
//! corrupts or truncates is reported as such, not as loss. By default one connection carries
//! the whole run (a probe that fails leaves the stream out of step, so the next probe opens a
//! fresh one); `--connect` opens one per probe and times the connect apart from the echo, as
//! echoping does. An echo is intact only if exactly the bytes sent come back and nothing more:
//! bytes beyond the echo are reported as `surplus` on the probe they followed, found right after
//! the echo, at the next probe (a later line for that probe, as ping's `DUP!`), or when the
//! connection ends with a half-close and the server's FIN. Ctrl-C or `--count` ends the run with
//! ping's summary (`report`). The exit
//! status is 0 when every probe came back intact, 1 when some did not, and 2 for usage and
//! name-resolution errors, so scripts can use it as a health check.

mod failure;
mod interrupt;
mod link;
mod probe;
mod reach;
mod report;
mod udp;
mod websocket;

use std::io::{self, Write};
use std::time::{Duration, Instant};

use crate::address::Addr;
use crate::cli::PingOptions;
use failure::Failure;
use interrupt::{interrupted, on_ctrl_c};
use link::{Client, Link};
use reach::{host_of, next_probe, resolve};
use report::Report;

pub use report::USAGE;

/// Runs the probes and returns the exit status.
///
/// Long on purpose: the run from the command line to the summary, in the order it happens.
pub fn run(options: &PingOptions) -> u8 {
    if let Some(option) = options.tls_unused() {
        crate::log::logln!("ping: {option} needs --tls (or a wss:// target)");
        return USAGE;
    }
    if websocket::names_websocket(&options.target) {
        on_ctrl_c();
        let mut out = io::stdout().lock();
        let mut say = |line: &str| {
            let _ = writeln!(out, "{line}").and_then(|()| out.flush());
        };
        return websocket::run(options, &mut say);
    }
    let addrs = match resolve(&options.target) {
        Ok(addrs) => addrs,
        Err(message) => {
            crate::log::logln!("ping: {message}");
            return USAGE;
        }
    };
    let tls = match options.tls {
        true => match Client::new(options, host_of(&options.target)) {
            Ok(client) => Some(client),
            Err(message) => {
                crate::log::logln!("ping: {message}");
                return USAGE;
            }
        },
        false => None,
    };
    on_ctrl_c();
    let mut out = io::stdout().lock();
    let mut say = |line: &str| {
        // A reader that went away (`| head`) does not stop the probes or change the status.
        let _ = writeln!(out, "{line}").and_then(|()| out.flush());
    };
    if options.udp {
        return udp::run(options, &addrs, &mut say);
    }
    let lines = !options.quiet && !options.json;
    if !options.json {
        say(&format!(
            "PING {} ({}): {} bytes per probe",
            options.target, addrs[0], options.size
        ));
    }
    let mut report = Report::new(&options.target, options.size, options.connect);
    report.tls = options.tls;
    let mut connection: Option<(Link, Addr)> = None;
    // The last probe sent.
    let mut last = 0;
    let started = Instant::now();
    for seq in 1.. {
        if !next_probe(options.count, options.interval, started, seq) {
            break;
        }
        // Bytes that came in on the kept connection since the last probe's echo: its surplus.
        if let Some((link, addr)) = &mut connection
            && let bytes @ 1.. = link.pending()
        {
            let late = report.surplus_after(seq - 1, addr, bytes);
            connection = None;
            if lines {
                say(&late);
            }
        }
        let deadline = Instant::now() + options.timeout;
        let payload = probe::payload(seq, options.size);
        let result = attempt(&mut connection, &addrs, tls.as_ref(), &payload, deadline)
            .and_then(|echo| surplus(&mut connection, options.connect, deadline, echo));
        let line = match result {
            Ok(echo) => {
                let line = report.echoed(seq, &echo.addr, echo.connect, echo.handshake, echo.rtt);
                report.address = Some(echo.addr);
                line
            }
            Err((_, Failure::Interrupted)) => break,
            Err((addr, failure)) => {
                let line = report.failed(seq, addr.as_ref(), &failure);
                report.address = addr.or(report.address.take());
                line
            }
        };
        if lines {
            say(&line);
        }
        last = seq;
    }
    // The run's connection ends with a half-close: what the server still sends is surplus.
    if let Some((mut link, addr)) = connection.take() {
        let deadline = Instant::now() + options.timeout;
        if let bytes @ 1.. = probe::finish(&mut link, deadline, interrupted) {
            let late = report.surplus_after(last, &addr, bytes);
            if lines {
                say(&late);
            }
        }
    }
    let elapsed = started.elapsed();
    match options.json {
        true => say(&report.json(elapsed)),
        false => say(&format!("\n{}", report.summary(elapsed))),
    }
    report.exit_status()
}

/// A probe that came back intact.
struct Echo {
    addr: Addr,
    /// How long connecting took (zero on a connection kept from the probe before).
    connect: Duration,
    /// With `--tls`, on a new connection: how long the handshake took.
    handshake: Option<Duration>,
    rtt: Duration,
}

/// Checks an intact echo for bytes beyond it: with `--connect` the connection ends here (a
/// half-close, then whatever the server sends before its FIN), otherwise whatever has come in
/// already. Surplus makes the probe fail, and leaves the stream out of step.
fn surplus(
    connection: &mut Option<(Link, Addr)>,
    per_probe: bool,
    deadline: Instant,
    echo: Echo,
) -> Result<Echo, (Option<Addr>, Failure)> {
    let Some((link, _)) = connection.as_mut() else {
        return Ok(echo);
    };
    let bytes = match per_probe {
        true => probe::finish(link, deadline, interrupted),
        false => link.pending(),
    };
    if per_probe || bytes > 0 {
        *connection = None;
    }
    match bytes {
        0 => Ok(echo),
        bytes => Err((Some(echo.addr), Failure::Surplus { bytes })),
    }
}

/// One probe on the run's connection, made first if there is none. After a failure the
/// connection is dropped: its stream is out of step (or gone). A connection kept from an earlier
/// probe may have been closed by the server meanwhile (an idle timeout, a restart): if it turns
/// out closed before any of the echo came back, the probe goes once more on a fresh connection.
fn attempt(
    connection: &mut Option<(Link, Addr)>,
    addrs: &[Addr],
    tls: Option<&Client>,
    payload: &[u8],
    deadline: Instant,
) -> Result<Echo, (Option<Addr>, Failure)> {
    loop {
        let kept = connection.is_some();
        let started = Instant::now();
        let (mut connect, mut handshake) = (Duration::ZERO, None);
        if !kept {
            let (socket, addr) = reach::connect(addrs, deadline).map_err(|f| (None, f))?;
            connect = started.elapsed();
            let link = match tls {
                Some(tls) => {
                    let link = tls
                        .handshake(socket, deadline, interrupted)
                        .map_err(|failure| (Some(addr.clone()), failure))?;
                    handshake = Some(started.elapsed() - connect);
                    link
                }
                None => Link::Plain(socket),
            };
            *connection = Some((link, addr));
        }
        let (link, addr) = connection.as_mut().expect("connected above");
        let addr = addr.clone();
        match probe::echo(link, payload, deadline, interrupted) {
            Ok(rtt) => {
                return Ok(Echo {
                    addr,
                    connect,
                    handshake,
                    rtt,
                });
            }
            Err(failure) => {
                *connection = None;
                if !(kept && failure.is_closed_before_echo()) {
                    return Err((Some(addr), failure));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_need_a_host_and_a_port() {
        assert!(resolve("127.0.0.1:7").is_ok());
        assert!(resolve("[::1]:7").is_ok());
        assert!(resolve("unix:/run/fe.sock").is_ok());
        assert!(resolve("unix:@fe").is_ok());
        let long = format!("unix:/{}", "a".repeat(200));
        for bad in [
            "127.0.0.1",
            ":7",
            "host:",
            "host:port",
            "h:70000",
            "unix:",
            "unix:@",
            &long,
        ] {
            let err = resolve(bad).expect_err(bad);
            assert!(err.contains(bad), "{err}");
        }
    }
}
