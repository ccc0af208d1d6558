//! The fault options (`--delay`, `--chunk`, `--close-after`, ..., `--seed`): their one
//! definition, flattened into `Options` (so `--help` and the man page list them under Faults),
//! and what they mean once read (`FaultOptions::faults`, `FaultOptions::datagram_faults`). The
//! names a control `faults` command and an in-band `FORKECHO` line may use are `FAULT_OPTIONS`,
//! read as flags by `fault_flags` and parsed by `parse::faults_from_flags`. Read at startup by
//! `crate::settings`, and by the control socket and in-band lines through `faults_from_flags`.

use std::time::Duration;

use clap::Args;

use super::help::FAULTS;
use super::values::{
    Pattern, parse_chunk, parse_delay, parse_fault_on, parse_fraction, parse_millis, parse_pattern,
    parse_rate, parse_trigger,
};
use super::websocket::{parse_interval, parse_websocket_close};
use crate::faults::{
    Acted, Chunk, DatagramFaults, Delay, Faults, Limit, LimitKind, Selectors, Trigger,
    WebSocketClose, WebSocketFaults,
};

/// The fault options, as typed.
#[derive(Args, Debug, Clone, Default)]
pub struct FaultOptions {
    /// Hold each echoed chunk back MS milliseconds, ± up to JITTER
    ///
    /// The jitter is uniform: a slow server or a long path. Input is still read meanwhile, so
    /// throughput does not suffer
    #[arg(long, value_name = "MS[:JITTER]", value_parser = parse_delay, help_heading = FAULTS)]
    pub delay: Option<Delay>,

    /// Throttle the echo to this many bytes a second (K and M suffixes)
    ///
    /// Bursts are at most a twentieth of a second's worth
    #[arg(long, value_name = "BYTES_PER_S", value_parser = parse_rate, help_heading = FAULTS)]
    pub rate: Option<u64>,

    /// Write the echo in pieces of at most SIZE bytes, DELAY_MS apart (default 1)
    ///
    /// Catches clients that assume one read is one message
    #[arg(long, value_name = "SIZE[:DELAY_MS]", value_parser = parse_chunk, help_heading = FAULTS)]
    pub chunk: Option<Chunk>,

    /// After echoing BYTES (or TIME after the accept: 500ms, 2s), close cleanly (FIN)
    ///
    /// What the client sends after that is read and dropped. At most one of --close-after,
    /// --reset-after, --stall-after, --close-on and --reset-on
    #[arg(long, value_name = "BYTES|TIME", value_parser = parse_trigger, group = "limit")]
    #[arg(help_heading = FAULTS)]
    pub close_after: Option<Trigger>,

    /// After echoing BYTES (or TIME after the accept: 500ms, 2s), reset the connection (RST)
    ///
    /// Once the client has acknowledged what was echoed; its next read fails with ECONNRESET. At
    /// most one of --close-after, --reset-after, --stall-after, --close-on and --reset-on
    #[arg(long, value_name = "BYTES|TIME", value_parser = parse_trigger, group = "limit")]
    #[arg(help_heading = FAULTS)]
    pub reset_after: Option<Trigger>,

    /// After echoing BYTES (or TIME after the accept: 500ms, 2s), read and write nothing more
    ///
    /// As a hung server: the connection is held open, the client's FIN unnoticed, until
    /// --idle-timeout or --max-duration passes or the client resets it. At most one of
    /// --close-after, --reset-after, --stall-after, --close-on and --reset-on
    #[arg(long, value_name = "BYTES|TIME", value_parser = parse_trigger, group = "limit")]
    #[arg(help_heading = FAULTS)]
    pub stall_after: Option<Trigger>,

    /// Close cleanly where the client's stream contains PATTERN, echoing only what came before
    ///
    /// The pattern may span reads (\r, \n, \t, \\ and \xNN escapes); until a read shows that the
    /// last bytes do not begin it, their echo waits. At most one limit, as --close-after
    #[arg(long, value_name = "PATTERN", value_parser = parse_pattern, group = "limit")]
    #[arg(help_heading = FAULTS)]
    pub close_on: Option<Pattern>,

    /// Reset where the client's stream contains PATTERN, echoing only what came before
    ///
    /// As --close-on, with a reset (RST) once the echo before the pattern is acknowledged
    #[arg(long, value_name = "PATTERN", value_parser = parse_pattern, group = "limit")]
    #[arg(help_heading = FAULTS)]
    pub reset_on: Option<Pattern>,

    /// After the client's FIN, wait MS milliseconds before closing
    #[arg(long, value_name = "MS", value_parser = parse_millis, help_heading = FAULTS)]
    pub slow_close: Option<Duration>,

    /// WebSocket: the close --close-after and --close-on send: CODE, and a REASON (1011:restart)
    ///
    /// CODE is 1000 to 1003, 1007 to 1014, or 3000 to 4999 (1001 going away, 1011 internal
    /// error: what reconnect logic meets); REASON at most 123 bytes. Needs a close limit
    #[arg(long, value_name = "CODE[:REASON]", value_parser = parse_websocket_close)]
    #[arg(help_heading = FAULTS)]
    pub websocket_close: Option<WebSocketClose>,

    /// WebSocket: ping the client every MS milliseconds (its pongs are counted on the close line)
    #[arg(long, value_name = "MS", value_parser = parse_interval, help_heading = FAULTS)]
    pub websocket_ping: Option<Duration>,

    /// WebSocket: answer the client's first N pings, then none (0: none at all)
    ///
    /// A keepalive that stops: the client's timeout for a missing pong is what is tested
    #[arg(long, value_name = "N", help_heading = FAULTS)]
    pub websocket_no_pong: Option<u64>,

    /// UDP: drop this fraction of datagrams unanswered (0 < P <= 1)
    ///
    /// Decided per datagram from --seed and its number, so a seed drops the same datagrams
    /// every run. --duplicate, --reorder, --corrupt and --delay likewise
    #[arg(long, value_name = "P", value_parser = parse_fraction, requires = "udp_any")]
    #[arg(help_heading = FAULTS)]
    pub loss: Option<f64>,

    /// UDP: answer this fraction of datagrams twice (0 < P <= 1)
    #[arg(long, value_name = "P", value_parser = parse_fraction, requires = "udp_any")]
    #[arg(help_heading = FAULTS)]
    pub duplicate: Option<f64>,

    /// UDP: hold this fraction of answers until the next one has gone (0 < P <= 1)
    ///
    /// A held answer waits at most 1 s for a next one
    #[arg(long, value_name = "P", value_parser = parse_fraction, requires = "udp_any")]
    #[arg(help_heading = FAULTS)]
    pub reorder: Option<f64>,

    /// UDP: flip one byte in this fraction of answers (0 < P <= 1); a log line says which
    #[arg(long, value_name = "P", value_parser = parse_fraction, requires = "udp_any")]
    #[arg(help_heading = FAULTS)]
    pub corrupt: Option<f64>,

    /// Apply the faults to this fraction of connections only (0 < P <= 1)
    ///
    /// Chosen per connection, from --seed and the connection's number. Needs a fault
    #[arg(
        long,
        value_name = "P",
        value_parser = parse_fraction,
        help_heading = FAULTS,
    )]
    pub fault_rate: Option<f64>,

    /// Let each connection ask for its own faults with a first line `FORKECHO <flags>\r\n`
    ///
    /// Such as `FORKECHO --delay 50 --chunk 1\r\n`: taken off the stream (after a PROXY header),
    /// never echoed, read like the command line's fault options; that connection gets them in
    /// place of the server's. Other connections are served as configured; a malformed line is
    /// answered with `FORKECHO error: ...` and a close. Not with TLS
    #[arg(long, conflicts_with_all = ["tls", "tls_cert"], help_heading = FAULTS)]
    pub inband: bool,

    /// Which connections get the faults: first:N, after:N, every:K, conn:A-B, from:ADDR[/LEN]
    ///
    /// Commas separate selectors (at most 8). By number, 1 being the first connection accepted;
    /// by source, the client's address (the PROXY header's, if one came). A connection is chosen
    /// if it matches a number selector (when there are any) and a from: selector (when there are
    /// any); --fault-rate then picks among the chosen. Needs a fault
    #[arg(
        long,
        value_name = "SELECTORS",
        value_parser = parse_fault_on,
        help_heading = FAULTS,
    )]
    pub fault_on: Option<Selectors>,

    /// Seed for the faults' random choices (jitter, --fault-rate, the UDP faults)
    ///
    /// The same seed makes the same choices for the same connection numbers; without it a random
    /// seed is used and logged. Needs a fault
    #[arg(long, value_name = "N", help_heading = FAULTS)]
    pub seed: Option<u64>,
}

impl FaultOptions {
    /// Whether any fault is asked for (the connections' or the datagrams').
    pub fn any(&self) -> bool {
        self.delay.is_some()
            || self.rate.is_some()
            || self.chunk.is_some()
            || self.close_after.is_some()
            || self.reset_after.is_some()
            || self.stall_after.is_some()
            || self.close_on.is_some()
            || self.reset_on.is_some()
            || self.slow_close.is_some()
            || self.websocket().any()
            || self.loss.is_some()
            || self.duplicate.is_some()
            || self.reorder.is_some()
            || self.corrupt.is_some()
    }

    /// An option that only shapes the faults (`--seed`, `--fault-rate`, `--fault-on`) given
    /// without one: what is wrong, in words (clap's own would list every fault option).
    pub fn unshaped(&self) -> Option<String> {
        if let Some(why) = self.close_unset() {
            return Some(why.to_string());
        }
        let shaping = [
            (
                self.seed.is_some(),
                "--seed seeds the faults' random choices",
            ),
            (
                self.fault_rate.is_some(),
                "--fault-rate picks the connections that get faults",
            ),
            (
                self.fault_on.is_some(),
                "--fault-on chooses the connections that get faults",
            ),
        ];
        let (_, what) = shaping.into_iter().find(|(given, _)| *given)?;
        (!self.any()).then(|| {
            format!(
                "{what}, and there is none: add one (--delay, --rate, --chunk, --close-after, \
                 --reset-after, --stall-after, --close-on, --reset-on, --slow-close, for \
                 WebSocket --websocket-ping, --websocket-no-pong, or for UDP --loss, \
                 --duplicate, --reorder, --corrupt)"
            )
        })
    }

    /// The WebSocket sessions' own faults asked for.
    pub fn websocket(&self) -> WebSocketFaults {
        WebSocketFaults {
            close: self.websocket_close,
            ping: self.websocket_ping,
            pongs: self.websocket_no_pong,
        }
    }

    /// `--websocket-close` without the close it sets the code of: what is wrong, in words.
    fn close_unset(&self) -> Option<&'static str> {
        let closes = self.close_after.is_some() || self.close_on.is_some();
        (self.websocket_close.is_some() && !closes).then_some(
            "--websocket-close sets the code of the close that --close-after or --close-on \
             sends: add one",
        )
    }

    /// The datagram faults asked for, with the run's seed; None without any.
    pub fn datagram_faults(&self, seed: u64) -> Option<DatagramFaults> {
        let any = [self.loss, self.duplicate, self.reorder, self.corrupt]
            .iter()
            .any(Option::is_some)
            || self.delay.is_some();
        any.then(|| DatagramFaults {
            loss: self.loss.unwrap_or(0.0),
            duplicate: self.duplicate.unwrap_or(0.0),
            reorder: self.reorder.unwrap_or(0.0),
            corrupt: self.corrupt.unwrap_or(0.0),
            delay: self.delay,
            seed,
        })
    }

    /// The connections' faults asked for, with the run's seed (`--seed`, or a random one); None
    /// without any.
    pub fn faults(&self, seed: u64) -> Option<Faults> {
        let pattern = |pattern: &Option<Pattern>| {
            // A leaked boxed slice: `parent::fault_set` frees the ones the control socket made.
            let bytes: Option<&'static [u8]> =
                pattern.clone().map(|p| &*Box::leak(p.0.into_boxed_slice()));
            bytes.map(Trigger::Pattern)
        };
        let limits = [
            (LimitKind::Close, self.close_after),
            (LimitKind::Reset, self.reset_after),
            (LimitKind::Stall, self.stall_after),
            (LimitKind::Close, pattern(&self.close_on)),
            (LimitKind::Reset, pattern(&self.reset_on)),
        ];
        let limit = limits
            .into_iter()
            .find_map(|(kind, at)| Some(Limit { kind, at: at? }));
        let websocket = self.websocket();
        let any = self.delay.is_some()
            || self.rate.is_some()
            || self.chunk.is_some()
            || limit.is_some()
            || self.slow_close.is_some()
            || websocket.any();
        any.then(|| Faults {
            delay: self.delay,
            rate: self.rate,
            chunk: self.chunk,
            limit,
            slow_close: self.slow_close,
            websocket,
            on: self.fault_on.unwrap_or_default(),
            fault_rate: self.fault_rate.unwrap_or(1.0),
            seed,
        })
    }
}

/// The options a connection's faults are made of, by name without the dashes: what the control
/// socket's `faults` and an in-band `FORKECHO` line may set (the UDP ones are the UDP worker's).
/// Every fault that acts (`faults::Acted::NAMES`, the close line's words), the two pattern
/// limits (which act as close-after and reset-after), and what chooses the connections.
pub const FAULT_OPTIONS: [&str; 15] = joined(
    Acted::NAMES,
    ["close-on", "reset-on", "fault-on", "fault-rate", "seed"],
);

/// `first` then `then`, as one array of `N` names (a compile error unless N is their sum).
const fn joined<const A: usize, const B: usize, const N: usize>(
    first: [&'static str; A],
    then: [&'static str; B],
) -> [&'static str; N] {
    assert!(A + B == N);
    let mut all = [""; N];
    let mut i = 0;
    while i < N {
        all[i] = if i < A { first[i] } else { then[i - A] };
        i += 1;
    }
    all
}

/// Fault options written as on the command line (`--delay 50 --chunk=1`), as (name, value)
/// pairs for `faults_from_flags`: how `forkecho ctl faults` and an in-band line read theirs.
pub fn fault_flags<'a>(words: &[&'a str]) -> Result<Vec<(&'a str, String)>, String> {
    let mut flags = Vec::new();
    let mut words = words.iter();
    while let Some(word) = words.next() {
        let Some(name) = word.strip_prefix("--") else {
            return Err(format!("'{word}': expected --FAULT VALUE"));
        };
        let (name, value) = match name.split_once('=') {
            Some((name, value)) => (name, value),
            None => (
                name,
                *words
                    .next()
                    .ok_or_else(|| format!("--{name} needs a value"))?,
            ),
        };
        flags.push((name, value.to_string()));
    }
    Ok(flags)
}

#[cfg(test)]
mod tests {
    use super::super::options::Options;
    use super::super::parse::faults_from_flags;
    use super::*;

    #[test]
    fn the_man_page_s_control_section_names_every_fault_key() {
        let reference = include_str!("reference.txt");
        let line = (reference.lines())
            .find(|l| l.starts_with("- {\"cmd\":\"faults\""))
            .unwrap();
        for name in FAULT_OPTIONS {
            assert!(line.contains(&format!("`{name}`")), "CONTROL lacks {name}");
        }
    }

    #[test]
    fn options_that_shape_faults_need_one_and_say_so() {
        let parse = |args: &[&str]| {
            <Options as clap::Parser>::try_parse_from([&["forkecho"], args].concat()).unwrap()
        };
        let why = parse(&["--seed", "7"]).faults.unshaped().unwrap();
        assert!(why.starts_with("--seed seeds"), "{why}");
        assert!(
            parse(&["--seed", "7", "--loss", "0.1", "--udp"])
                .faults
                .unshaped()
                .is_none()
        );
        assert!(
            parse(&["--fault-on", "first:1", "--delay", "5"])
                .faults
                .unshaped()
                .is_none()
        );
        assert!(parse(&[]).faults.unshaped().is_none());
    }

    #[test]
    fn the_fault_options_are_the_command_line_s_connection_faults() {
        use clap::CommandFactory;
        let command = Options::command();
        let mut listed: Vec<&str> = command
            .get_arguments()
            .filter(|arg| arg.get_help_heading() == Some(FAULTS))
            .filter_map(|arg| arg.get_long())
            // The datagrams' faults, and --inband, which is no fault but a way to ask for them.
            .filter(|long| !["loss", "duplicate", "reorder", "corrupt", "inband"].contains(long))
            .collect();
        listed.sort_unstable();
        let mut ours = FAULT_OPTIONS.to_vec();
        ours.sort_unstable();
        assert_eq!(ours, listed);
    }

    #[test]
    fn fault_flags_read_both_spellings_and_say_what_is_wrong() {
        let flags = fault_flags(&["--delay", "50", "--chunk=1"]).unwrap();
        assert_eq!(
            flags,
            [("delay", "50".to_string()), ("chunk", "1".to_string())]
        );
        assert!(
            fault_flags(&["delay"])
                .unwrap_err()
                .contains("expected --FAULT")
        );
        assert!(
            fault_flags(&["--delay"])
                .unwrap_err()
                .contains("needs a value")
        );
        assert_eq!(faults_from_flags::<&str>(&[]).unwrap(), None);
    }
}
