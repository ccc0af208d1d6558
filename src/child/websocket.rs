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

use std::fmt;
use std::io::{Read, Write};

use tungstenite::error::ProtocolError;
use tungstenite::handshake::HandshakeError;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tungstenite::{Error, Message, WebSocket};

use super::context::Context;
use super::echo::{End, Outcome};
use super::stop;

/// What the close line says of a WebSocket session: messages echoed, and the close code sent or
/// received (1006 for a connection that closed without one).
#[derive(Debug, Default)]
pub struct Info {
    pub messages: u64,
    pub close: Option<u16>,
}

/// The close line's WebSocket fields (` ws-messages=N ws-close=CODE`), or nothing.
pub struct Fields<'a>(pub Option<&'a Info>);

impl fmt::Display for Fields<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(info) = self.0 else {
            return Ok(());
        };
        write!(f, " ws-messages={}", info.messages)?;
        match info.close {
            Some(code) => write!(f, " ws-close={code}"),
            None => Ok(()),
        }
    }
}

/// Upgrades the connection and echoes its messages until it ends; `max` is the largest message.
pub fn echo<S: Read + Write>(
    stream: &mut S,
    context: &Context,
    max: usize,
    info: &mut Option<Info>,
) -> Outcome {
    let config = WebSocketConfig::default()
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
        .read_buffer_size(context.settings.buffer_size.min(max).max(4096));
    let mut ws = match tungstenite::accept_with_config(&mut *stream, Some(config)) {
        Ok(ws) => ws,
        Err(HandshakeError::Interrupted(_)) => {
            // The socket's read timeout (SO_RCVTIMEO) ran out mid-request.
            return Outcome {
                bytes: 0,
                end: End::IdleTimeout,
            };
        }
        Err(HandshakeError::Failure(err)) => {
            let end = refuse(stream, &err);
            return Outcome { bytes: 0, end };
        }
    };
    let session = info.insert(Info::default());
    let mut bytes = 0u64;
    let end = loop {
        let message = match ws.read() {
            Ok(message) => message,
            Err(err) => break ended(&mut ws, err, session),
        };
        let sent = match message {
            Message::Text(_) | Message::Binary(_) => {
                let len = message.len() as u64;
                let sent = ws.send(message);
                if sent.is_ok() {
                    bytes += len;
                    session.messages += 1;
                    context
                        .total
                        .fetch_add(len, std::sync::atomic::Ordering::Relaxed);
                }
                sent
            }
            // The pong (or the close's reply) tungstenite queued goes out now.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => ws.flush(),
            Message::Close(frame) => {
                session.close = Some(frame.map_or(1005, |frame| u16::from(frame.code)));
                ws.flush()
            }
        };
        if let Err(err) = sent {
            break ended(&mut ws, err, session);
        }
    };
    Outcome { bytes, end }
}

/// How the session ended, given the error that ended its loop; for a broken protocol, the close
/// frame that says so is sent first.
fn ended<S: Read + Write>(ws: &mut WebSocket<S>, err: Error, info: &mut Info) -> End {
    let (code, why) = match err {
        // The client answered our close, or closed after its own: the handshake is done.
        Error::ConnectionClosed | Error::AlreadyClosed => return End::ClientClosed,
        Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            info.close.get_or_insert(1006);
            return End::ClientClosed;
        }
        Error::Io(err) => {
            let end = End::from_error(err, End::IdleTimeout);
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
fn close<S: Read + Write>(ws: &mut WebSocket<S>, code: CloseCode, why: &str, info: &mut Info) {
    let mut reason = why;
    while reason.len() > 123 {
        let mut end = 123;
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
        let info = Info {
            messages: 3,
            close: Some(1000),
        };
        assert_eq!(
            Fields(Some(&info)).to_string(),
            " ws-messages=3 ws-close=1000"
        );
        assert_eq!(Fields(None).to_string(), "");
    }
}
