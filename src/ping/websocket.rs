//! `forkecho ping ws://HOST:PORT/PATH` (and `wss://`): a WebSocket echo server, checked message
//! by message. Each probe is one binary message of `--size` bytes (the same payloads as over
//! TCP) that must come back as one binary message with exactly those bytes; pings the server
//! sends are answered on the way. The upgrade (and the TLS handshake, for wss://) is timed
//! apart as `handshake=`, on every new connection: one for the run, or one per probe with
//! `--connect`. A server that answers the upgrade with anything but 101 fails with what it said
//! (a plain TCP echo server sends the request back). The report and `--json` are TCP's.

use std::io;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use tungstenite::handshake::HandshakeError;
use tungstenite::{Error, Message, WebSocket};

use super::failure::Failure;
use super::interrupt::interrupted;
use super::link::{Client, Link};
use super::probe;
use super::reach::{self, host_of, next_probe, resolve};
use super::report::{Report, USAGE};
use crate::address::Addr;
use crate::cli::PingOptions;

/// A session's stream: plain, or TLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl io::Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl io::Write for Stream {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(data),
            Stream::Tls(s) => s.write(data),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

impl Stream {
    fn socket(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.sock,
        }
    }

    /// Reads and writes wait until `deadline` at most.
    fn until(&self, deadline: Instant) -> io::Result<()> {
        let left = deadline.saturating_duration_since(Instant::now());
        let left = left.max(Duration::from_millis(1));
        self.socket().set_read_timeout(Some(left))?;
        self.socket().set_write_timeout(Some(left))
    }
}

/// `ws://` or `wss://` and what follows: whether TLS, `HOST:PORT`, and the URL as given.
fn split(target: &str) -> Option<(bool, &str)> {
    let (tls, rest) = match target.split_once("://")? {
        ("ws", rest) => (false, rest),
        ("wss", rest) => (true, rest),
        _ => return None,
    };
    let authority = rest.split('/').next()?;
    Some((tls, authority))
}

/// Whether `target` names a WebSocket server.
pub fn names_websocket(target: &str) -> bool {
    target.starts_with("ws://") || target.starts_with("wss://")
}

/// Runs the probes against a WebSocket echo server and returns the exit status.
pub fn run(options: &PingOptions, say: &mut dyn FnMut(&str)) -> u8 {
    let target = options.target.as_str();
    let usage = |why: String| {
        crate::log::logln!("ping: {why}");
        USAGE
    };
    let Some((tls, authority)) = split(target) else {
        return usage(format!(
            "'{target}': expected ws://HOST:PORT/PATH or wss://…"
        ));
    };
    let addrs = match resolve(authority) {
        Ok(addrs) => addrs,
        Err(why) => return usage(why),
    };
    let host = host_of(authority);
    let client = match tls {
        true => match Client::new(options, host) {
            Ok(client) => Some(client),
            Err(why) => return usage(why),
        },
        false => None,
    };
    let lines = !options.quiet && !options.json;
    if !options.json {
        say(&format!(
            "PING {target} ({}): {} bytes per message",
            addrs[0], options.size
        ));
    }
    let mut report = Report::new(target, options.size, options.connect);
    report.tls = true;
    let mut session: Option<(WebSocket<Stream>, Addr)> = None;
    let started = Instant::now();
    for seq in 1.. {
        if !next_probe(options.count, options.interval, started, seq) {
            break;
        }
        let deadline = Instant::now() + options.timeout;
        let payload = probe::payload(seq, options.size);
        let line = match probe_once(
            &mut session,
            &addrs,
            target,
            client.as_ref(),
            &payload,
            deadline,
        ) {
            Ok((addr, connect, handshake, rtt)) => {
                let line = report.echoed(seq, &addr, connect, handshake, rtt);
                report.address = Some(addr);
                line
            }
            Err((_, Failure::Interrupted)) => break,
            Err((addr, failure)) => {
                session = None;
                let line = report.failed(seq, addr.as_ref(), &failure);
                report.address = addr.or(report.address.take());
                line
            }
        };
        if options.connect
            && let Some((mut ws, _)) = session.take()
        {
            let _ = ws.close(None);
            let _ = ws.flush();
        }
        if lines {
            say(&line);
        }
    }
    if let Some((mut ws, _)) = session.take() {
        let _ = ws.close(None);
        let _ = ws.flush();
    }
    let elapsed = started.elapsed();
    match options.json {
        true => say(&report.json(elapsed)),
        false => say(&format!("\n{}", report.summary(elapsed))),
    }
    report.exit_status()
}

/// What an intact echo reports: from where, the connect and handshake times (on a new
/// connection), and the round trip.
type Echoed = (Addr, Duration, Option<Duration>, Duration);

/// One probe, on the run's session, made first if there is none.
fn probe_once(
    session: &mut Option<(WebSocket<Stream>, Addr)>,
    addrs: &[Addr],
    url: &str,
    client: Option<&Client>,
    payload: &[u8],
    deadline: Instant,
) -> Result<Echoed, (Option<Addr>, Failure)> {
    let started = Instant::now();
    let (mut connect, mut handshake) = (Duration::ZERO, None);
    if session.is_none() {
        let (socket, addr) = reach::connect(addrs, deadline).map_err(|f| (None, f))?;
        connect = started.elapsed();
        let fail = |failure| (Some(addr.clone()), failure);
        let stream = match client {
            Some(client) => match client.handshake(socket, deadline, interrupted) {
                Ok(Link::Tls(tls)) => {
                    let (socket, conn) = *tls;
                    Stream::Tls(Box::new(rustls::StreamOwned::new(conn, socket.into())))
                }
                Ok(Link::Plain(socket)) => Stream::Plain(socket.into()),
                Err(failure) => return Err(fail(failure)),
            },
            None => Stream::Plain(socket.into()),
        };
        let _ = stream.socket().set_nonblocking(false);
        stream
            .until(deadline)
            .map_err(|err| fail(Failure::Error(err)))?;
        let ws = upgrade(url, stream).map_err(fail)?;
        handshake = Some(started.elapsed() - connect);
        *session = Some((ws, addr));
    }
    let (ws, addr) = session.as_mut().expect("made above");
    let addr = addr.clone();
    let fail = |failure| (Some(addr.clone()), failure);
    ws.get_ref()
        .until(deadline)
        .map_err(|err| fail(Failure::Error(err)))?;
    let sent = Instant::now();
    ws.send(Message::binary(payload.to_vec()))
        .map_err(|err| fail(failure_of(err)))?;
    loop {
        if interrupted() {
            return Err(fail(Failure::Interrupted));
        }
        match ws.read().map_err(|err| fail(failure_of(err)))? {
            Message::Binary(back) => {
                check(payload, &back).map_err(fail)?;
                return Ok((addr, connect, handshake, sent.elapsed()));
            }
            Message::Text(back) => {
                let failure = Failure::Message(format!(
                    "a text message came back ({} bytes) for a binary one",
                    back.len()
                ));
                return Err(fail(failure));
            }
            Message::Close(frame) => {
                let said = frame.map_or("no code".to_string(), |f| {
                    format!("{} {}", f.code, f.reason)
                });
                return Err(fail(Failure::Message(format!(
                    "the server closed ({said})"
                ))));
            }
            // Pings are answered by tungstenite as the reads go on.
            _ => {}
        }
    }
}

/// The upgrade; a server that is not a WebSocket one is said to be so.
fn upgrade(url: &str, stream: Stream) -> Result<WebSocket<Stream>, Failure> {
    match tungstenite::client(url, stream) {
        Ok((ws, _)) => Ok(ws),
        Err(HandshakeError::Interrupted(_)) => Err(Failure::Timeout { received: 0 }),
        Err(HandshakeError::Failure(Error::Http(response))) => Err(Failure::Message(format!(
            "not a WebSocket server: the upgrade was answered {}",
            response.status()
        ))),
        Err(HandshakeError::Failure(Error::Io(err))) => Err(failure_of(Error::Io(err))),
        Err(HandshakeError::Failure(err)) => Err(Failure::Message(format!(
            "not a WebSocket server: no upgrade came back ({err}); a plain TCP echo server \
             sends the request back"
        ))),
    }
}

/// The failure a tungstenite error stands for.
fn failure_of(err: Error) -> Failure {
    match err {
        Error::Io(err)
            if matches!(
                err.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Failure::Timeout { received: 0 }
        }
        Error::Io(err) => Failure::Error(err),
        Error::ConnectionClosed | Error::AlreadyClosed => Failure::Truncated { received: 0 },
        Error::Protocol(err) => Failure::Message(format!("broke the protocol: {err}")),
        other => Failure::Message(other.to_string()),
    }
}

/// An echo that is the payload exactly, or what is wrong with it.
fn check(payload: &[u8], back: &[u8]) -> Result<(), Failure> {
    if let Some(at) = payload.iter().zip(back).position(|(want, got)| want != got) {
        return Err(Failure::Corrupt {
            at,
            got: back[at],
            want: payload[at],
        });
    }
    match back.len().cmp(&payload.len()) {
        std::cmp::Ordering::Less => Err(Failure::Truncated {
            received: back.len(),
        }),
        std::cmp::Ordering::Greater => Err(Failure::Surplus {
            bytes: back.len() - payload.len(),
        }),
        std::cmp::Ordering::Equal => Ok(()),
    }
}
