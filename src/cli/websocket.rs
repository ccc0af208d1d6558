//! The WebSocket options (`--websocket`, `--websocket-max-message`): their one definition,
//! flattened into `Options` (so `--help` and the man page list them under WebSocket). Read at
//! startup by `crate::settings`, which hands the child what they mean (`child::websocket`).

use clap::Args;

use std::time::Duration;

use super::help::WEBSOCKET;
use super::values::{parse_bytes, parse_millis};
use crate::faults::{REASON_MAX, WebSocketClose};

/// The most bytes one WebSocket message may hold by default: 16 MiB.
pub const MAX_MESSAGE: &str = "16M";

#[derive(Args, Debug, Clone)]
pub struct WebSocketOptions {
    /// Serve WebSocket echo (RFC 6455) on every TCP and Unix listener, on any path
    ///
    /// Each child answers the HTTP/1.1 upgrade (a request that is not one gets 400 or 426, and
    /// a close), then sends every message back as one message of the same type, text or binary,
    /// whatever fragments it came in; a ping gets a pong, a close the same close. A frame that
    /// breaks the protocol (unmasked, reserved bits or opcodes, a control frame over 125 bytes)
    /// is answered with close 1002, invalid UTF-8 in a text message 1007, a message over
    /// --websocket-max-message 1009. The faults act on messages (see WEBSOCKET in the man page).
    /// With --tls, wss://
    #[arg(
        long,
        conflicts_with_all = ["udp_only", "inetd", "inband"],
        help_heading = WEBSOCKET,
    )]
    pub websocket: bool,

    /// The most bytes one WebSocket message may hold (K, M and G suffixes); larger: close 1009
    #[arg(
        long,
        value_name = "BYTES",
        default_value = MAX_MESSAGE,
        value_parser = parse_max_message,
        requires = "websocket",
        help_heading = WEBSOCKET,
    )]
    pub websocket_max_message: u64,
}

/// A message limit: 1 byte to 1 GiB (tungstenite holds a whole message in memory).
fn parse_max_message(text: &str) -> Result<u64, String> {
    match parse_bytes(text)? {
        bytes @ 1..=0x4000_0000 => Ok(bytes),
        _ => Err("must be between 1 byte and 1G".to_string()),
    }
}

/// `--websocket-close CODE[:REASON]`: a code a server may send (RFC 6455 7.4, and the IANA
/// registry's 1012 to 1014), and a reason that fits a close frame.
pub fn parse_websocket_close(text: &str) -> Result<WebSocketClose, String> {
    let (code, reason) = text.split_once(':').unwrap_or((text, ""));
    let code: u16 = code
        .parse()
        .map_err(|_| "expected a close code such as 1011, or 1011:REASON".to_string())?;
    if !matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999) {
        return Err(format!(
            "{code} is no close code a server sends: 1000 to 1003, 1007 to 1014, 3000 to 4999"
        ));
    }
    if reason.len() > REASON_MAX {
        return Err(format!("the reason is over {REASON_MAX} bytes"));
    }
    Ok(WebSocketClose::new(code, reason))
}

/// `--websocket-ping MS`: at least a millisecond.
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    match parse_millis(text)? {
        interval if interval.is_zero() => Err("must be at least 1 ms".to_string()),
        interval => Ok(interval),
    }
}
