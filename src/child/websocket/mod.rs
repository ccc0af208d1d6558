//! `--websocket`: one connection's WebSocket echo (RFC 6455), over its socket or its TLS session.
//!
//! The protocol is tungstenite's (its blocking API, on the child's own stream): the HTTP/1.1
//! upgrade, frames, masking, fragments, UTF-8, ping and pong, the close handshake. This file says
//! what an echo server does with it: a request that is not an upgrade gets an HTTP error (426 if
//! it names no upgrade or another WebSocket version, 400 otherwise) and a close; every message
//! goes back as one message of its type; a ping's pong and a close's reply are tungstenite's; a
//! frame that breaks the protocol gets the RFC's close code (1002, 1007 for invalid UTF-8, 1009
//! for a message over `--websocket-max-message`) before the connection closes; a stopping server
//! says 1001 (going away). Called by `connection`, which logs what `Info` holds on the close line.

mod shaping;
mod stream;

use std::fmt;
use std::io::{ErrorKind, Write};
use std::os::fd::AsFd;
use std::time::Duration;

use nix::poll::PollFlags;
use tungstenite::error::ProtocolError;
use tungstenite::handshake::HandshakeError;
use tungstenite::protocol::frame::Frame;
use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tungstenite::{Error, Message, WebSocket};

use super::context::Context;
use super::echo::shapeable::Shapeable;
use super::echo::{End, Outcome, Session};
use super::stop;
use crate::clock::monotonic;
use crate::faults::{Acted, LimitKind, REASON_MAX};
use shaping::Shaping;
use stream::Waiting;

/// What the close line says of a WebSocket session: messages echoed, the close code sent or
/// received (1006 for a connection that closed without one), and the pings: the server's
/// (`--websocket-ping`) and the pongs that came back, the client's left unanswered
/// (`--websocket-no-pong`).
#[derive(Debug, Default)]
pub struct Info {
    pub messages: u64,
    pub close: Option<u16>,
    pub pings: u64,
    pub pongs: u64,
    pub client_pings: u64,
    pub unanswered: u64,
}

/// The close line's WebSocket fields (` ws-messages=N ws-close=CODE`), or nothing.
pub struct Fields<'a>(pub Option<&'a Info>);

impl fmt::Display for Fields<'_> {
    #[unsafe(link_section = ".text.hot.child")]
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(info) = self.0 else {
            return Ok(());
        };
        write!(f, " ws-messages={}", info.messages)?;
        if let Some(code) = info.close {
            write!(f, " ws-close={code}")?;
        }
        if info.pings > 0 {
            write!(f, " ws-pings={} ws-pongs={}", info.pings, info.pongs)?;
        }
        if info.unanswered > 0 {
            write!(f, " ws-unanswered={}", info.unanswered)?;
        }
        Ok(())
    }
}

/// A session over `S`, whose writes wait.
type Ws<'a, 'b, S> = WebSocket<&'b mut Waiting<'a, S>>;

/// Upgrades the connection and echoes its messages until it ends; `max` is the largest message.
/// Returns the outcome and, when faults were asked for, those that acted.
pub fn echo<S: Shapeable>(
    stream: &mut S,
    context: &Context,
    max: usize,
    info: &mut Option<Info>,
) -> (Outcome, Option<Acted>) {
    let settings = &context.settings;
    let faults = settings.faults;
    let mut shaping = faults
        .filter(|faults| faults.applies(context.serial, context.peer))
        .map(|faults| Shaping::new(faults, context.serial));
    let mut stream = Waiting::new(stream, settings.idle_timeout);
    let config = WebSocketConfig::default()
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
        .read_buffer_size(4096);
    let (bytes, end) = match tungstenite::accept_with_config(&mut stream, Some(config)) {
        // The socket's read timeout (SO_RCVTIMEO) ran out mid-request.
        Err(HandshakeError::Interrupted(_)) => (0, End::IdleTimeout),
        Err(HandshakeError::Failure(err)) => (0, refuse(&mut stream, &err)),
        Ok(mut ws) => {
            let session = info.insert(Info::default());
            serve(&mut ws, context, shaping.as_mut(), session)
        }
    };
    let acted = faults.map(|_| shaping.map(|s| s.acted).unwrap_or_default());
    (Outcome { bytes, end }, acted)
}

/// The echo loop: each message back as it came (shaped by the faults, if they apply), until the
/// client closes, breaks the protocol, goes idle, or a limit or a stop ends it. Returns the
/// payload bytes echoed and the end.
fn serve<S: Shapeable>(
    ws: &mut Ws<'_, '_, S>,
    context: &Context,
    mut shaping: Option<&mut Shaping>,
    info: &mut Info,
) -> (u64, End) {
    let idle = Some(context.settings.idle_timeout).filter(|idle| !idle.is_zero());
    let mut bytes = 0u64;
    let mut heard = monotonic();
    let every = shaping.as_ref().and_then(|s| s.ping_every());
    let mut ping_at = every.map(|every| heard + every);
    loop {
        if let Some(kind) = shaping.as_mut().and_then(|s| s.limit_due(bytes)) {
            return (bytes, limit(ws, kind, context, shaping, info));
        }
        let now = monotonic();
        if let (Some(at), Some(every), Some(s)) = (ping_at, every, shaping.as_mut())
            && now >= at
        {
            info.pings += 1;
            s.pinged();
            let payload = format!("forkecho ping {}", info.pings);
            if let Err(err) = ws.send(Message::Ping(payload.into_bytes().into())) {
                return (bytes, ended(ws, err, info));
            }
            ping_at = Some(at.max(now.saturating_sub(every)) + every);
        }
        // Reads wait until the client goes idle (SO_RCVTIMEO times each read call: the idle
        // timeout as it is), a ping is due, or a time-triggered limit comes.
        let idle_at = idle.map(|idle| heard + idle);
        let timer = [ping_at, shaping.as_ref().and_then(|s| s.limit_at())]
            .into_iter()
            .flatten()
            .min();
        let within = match timer {
            None => idle,
            Some(at) => [idle_at, Some(at)]
                .into_iter()
                .flatten()
                .min()
                .map(|at| at.saturating_sub(now)),
        };
        ws.get_mut().read_within(within);
        // After the timeout is set: a stop that came before has set its own 1 ms one over it.
        if stop::requested() {
            let err = std::io::Error::from(std::io::ErrorKind::WouldBlock);
            return (bytes, ended(ws, Error::Io(err), info));
        }
        let message = match ws.read() {
            Ok(message) => message,
            Err(Error::Io(err))
                if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) =>
            {
                let timed_out = idle_at.is_some_and(|at| monotonic() >= at);
                if timed_out || stop::requested() || ws.get_ref().write_timed_out {
                    return (bytes, ended(ws, Error::Io(err), info));
                }
                continue;
            }
            Err(err) => return (bytes, ended(ws, err, info)),
        };
        heard = monotonic();
        let sent = match message {
            Message::Text(_) | Message::Binary(_) => {
                if let Some(kind) = shaping
                    .as_mut()
                    .and_then(|s| s.pattern_in(&message.clone().into_data()))
                {
                    return (bytes, limit(ws, kind, context, shaping, info));
                }
                let len = message.len() as u64;
                let sent = send(ws, message, shaping.as_deref_mut());
                if sent.is_ok() {
                    bytes += len;
                    info.messages += 1;
                    context
                        .total
                        .fetch_add(len, std::sync::atomic::Ordering::Relaxed);
                }
                sent
            }
            // The pong tungstenite queued goes out now, unless pongs have stopped.
            Message::Ping(_) => {
                info.client_pings += 1;
                let count = info.client_pings;
                if shaping.as_mut().is_some_and(|s| !s.answers_ping(count)) {
                    info.unanswered += 1;
                    ws.get_mut().drop_pongs();
                }
                ws.flush()
            }
            Message::Pong(_) => {
                info.pongs += 1;
                ws.flush()
            }
            Message::Frame(_) => ws.flush(),
            Message::Close(frame) => {
                info.close = Some(frame.map_or(1005, |frame| u16::from(frame.code)));
                if let Some(wait) = shaping.as_mut().and_then(|s| s.slow_close()) {
                    pause(wait);
                }
                ws.flush()
            }
        };
        if let Err(err) = sent {
            return (bytes, ended(ws, err, info));
        }
    }
}

/// Sends a message back, as the faults shape it: held back, in frames, paced.
fn send<S: Shapeable>(
    ws: &mut Ws<'_, '_, S>,
    message: Message,
    shaping: Option<&mut Shaping>,
) -> tungstenite::Result<()> {
    let Some(shaping) = shaping else {
        return ws.send(message);
    };
    if let Some(delay) = shaping.delay() {
        pause(delay);
    }
    let opcode = match message {
        Message::Text(_) => Data::Text,
        _ => Data::Binary,
    };
    let data = message.into_data();
    let Some((size, gap)) = shaping.frames(data.len()) else {
        let len = data.len();
        ws.send(Message::Frame(Frame::message(
            data,
            OpCode::Data(opcode),
            true,
        )))?;
        if let Some(wait) = shaping.paced(len) {
            pause(wait);
        }
        return Ok(());
    };
    let mut at = 0;
    while at < data.len() {
        let end = (at + size).min(data.len());
        let kind = if at == 0 { opcode } else { Data::Continue };
        let frame = Frame::message(data.slice(at..end), OpCode::Data(kind), end == data.len());
        ws.send(Message::Frame(frame))?;
        let paced = shaping.paced(end - at).unwrap_or_default();
        at = end;
        if at < data.len() {
            pause(gap.max(paced));
        } else {
            pause(paced);
        }
    }
    Ok(())
}

/// Waits `wait`, or less if a stop comes.
fn pause(wait: Duration) {
    let until = monotonic() + wait;
    while !stop::requested() {
        let left = until.saturating_sub(monotonic());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

/// A limit acts: a close frame, a reset once the client has what came before, or a stall.
fn limit<S: Shapeable>(
    ws: &mut Ws<'_, '_, S>,
    kind: LimitKind,
    context: &Context,
    shaping: Option<&mut Shaping>,
    info: &mut Info,
) -> End {
    match kind {
        LimitKind::Close => {
            let (code, reason) = shaping.map_or((1000, "close-after"), |s| s.close_frame());
            let reason = reason.to_string();
            close(ws, CloseCode::from(code), &reason, info);
            End::CloseAfter
        }
        LimitKind::Reset => {
            let _ = ws.flush();
            let socket = ws.get_ref().socket();
            super::echo::shaped::wait_acknowledged(socket, &Session::of(context));
            End::ResetAfter
        }
        LimitKind::Stall => stall(ws.get_ref().socket(), context),
    }
}

/// Reads and writes nothing until the idle timeout, a reset, or a stop ends it (the client's
/// FIN changes nothing: a hung server does not notice it).
fn stall(socket: &std::net::TcpStream, context: &Context) -> End {
    let idle = Some(context.settings.idle_timeout).filter(|idle| !idle.is_zero());
    let until = idle.map(|idle| monotonic() + idle);
    loop {
        let left = until.map(|until| until.saturating_sub(monotonic()));
        if left.is_some_and(|left| left.is_zero()) || stop::requested() {
            return End::IdleTimeout;
        }
        // No events asked for: only an error (a reset), a signal or the time ends the wait.
        if let Ok(true) = stop::wait(socket.as_fd(), PollFlags::empty(), left)
            && !stop::requested()
            && socket.take_error().ok().flatten().is_some()
        {
            return End::Reset;
        }
    }
}

/// How the session ended, given the error that ended its loop; for a broken protocol, the close
/// frame that says so is sent first.
fn ended<S: Shapeable>(ws: &mut Ws<'_, '_, S>, err: Error, info: &mut Info) -> End {
    let (code, why) = match err {
        // The client answered our close, or closed after its own: the handshake is done.
        Error::ConnectionClosed | Error::AlreadyClosed => return End::ClientClosed,
        Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            info.close.get_or_insert(1006);
            return End::ClientClosed;
        }
        Error::Io(err) => {
            let timed_out = match ws.get_ref().write_timed_out {
                true => End::WriteTimeout,
                false => End::IdleTimeout,
            };
            let end = match err.kind() {
                // A stop signal's wake-up.
                ErrorKind::Interrupted => timed_out,
                _ => End::from_error(err, timed_out),
            };
            if matches!(end, End::IdleTimeout) && stop::stopped() {
                // A stopping server says so: 1001, going away.
                close(ws, CloseCode::Away, "server stopping", info);
            }
            return end;
        }
        Error::Protocol(err) => (CloseCode::Protocol, err.to_string()),
        Error::Utf8(err) => (CloseCode::Invalid, format!("invalid UTF-8: {err}")),
        Error::Capacity(err) => (CloseCode::Size, err.to_string()),
        other => (CloseCode::Error, other.to_string()),
    };
    close(ws, code, &why, info);
    End::WebSocket(why)
}

/// Sends a close frame with `code` and `why` (cut to fit a control frame), and flushes it.
fn close<S: Shapeable>(ws: &mut Ws<'_, '_, S>, code: CloseCode, why: &str, info: &mut Info) {
    let mut reason = why;
    while reason.len() > REASON_MAX {
        let mut end = REASON_MAX;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason = &reason[..end];
    }
    info.close = Some(u16::from(code));
    let frame = CloseFrame {
        code,
        reason: reason.to_string().into(),
    };
    let _ = ws.close(Some(frame));
    let _ = ws.flush();
}

/// Does, once in the parent before the first fork, what every session's child would otherwise
/// do first: the CPU feature detection of std (httparse's SIMD parsing asks it) and of sha1
/// (the accept key), each a run of CPUID instructions, which a virtual machine traps: measured
/// here, 19 % of a WebSocket session's CPU. A child inherits the answers with the parent's
/// memory. A whole upgrade, in memory, is the way to reach every one of them.
pub fn warm() {
    struct Memory {
        request: std::io::Cursor<&'static [u8]>,
        response: Vec<u8>,
    }
    impl std::io::Read for Memory {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.request.read(buf)
        }
    }
    impl Write for Memory {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            self.response.write(data)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let request: &[u8] = b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\n\r\n";
    let memory = Memory {
        request: std::io::Cursor::new(request),
        response: Vec::new(),
    };
    let _ = tungstenite::accept(memory);
}

/// Answers a request that is not a WebSocket upgrade with an HTTP error and returns the end.
fn refuse(stream: &mut impl Write, err: &Error) -> End {
    let upgrade = matches!(
        err,
        Error::Protocol(
            ProtocolError::MissingConnectionUpgradeHeader
                | ProtocolError::MissingUpgradeWebSocketHeader
                | ProtocolError::MissingSecWebSocketVersionHeader
        )
    );
    let (status, extra) = match upgrade {
        true => (
            "426 Upgrade Required",
            "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n",
        ),
        false => ("400 Bad Request", ""),
    };
    let body = format!("forkecho serves WebSocket echo here: {err}\n");
    let response = format!(
        "HTTP/1.1 {status}\r\nConnection: close\r\n{extra}Content-Type: text/plain\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    match stream.write_all(response.as_bytes()) {
        Ok(()) => End::WebSocket(format!("not an upgrade: {err}")),
        Err(err) => End::from_error(err, End::WriteTimeout),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_close_line_fields_say_messages_and_the_code() {
        let mut info = Info {
            messages: 3,
            close: Some(1000),
            ..Info::default()
        };
        assert_eq!(
            Fields(Some(&info)).to_string(),
            " ws-messages=3 ws-close=1000"
        );
        (info.pings, info.pongs, info.unanswered) = (2, 1, 4);
        assert_eq!(
            Fields(Some(&info)).to_string(),
            " ws-messages=3 ws-close=1000 ws-pings=2 ws-pongs=1 ws-unanswered=4"
        );
        assert_eq!(Fields(None).to_string(), "");
    }
}
