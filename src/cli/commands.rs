//! `forkecho ping` and `forkecho ctl`: the subcommands' options, read by `crate::ping` and
//! `crate::ctl`.

use std::time::Duration;

use clap::{Args, Subcommand};

use super::values::{parse_positive, parse_seconds, parse_size};

/// forkecho's subcommands.
#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Send probes to an echo server and check every echo byte for byte, like ping(8)
    #[command(
        long_about = "Send probes to an echo server (forkecho or any RFC 862 server) and check \
            every echo byte for byte, like ping(8).\n\n\
            Each probe carries a payload that differs per sequence number; an echo that comes \
            back different or cut short is reported as corrupt, one followed by bytes that were \
            never sent as surplus (counted with the corrupt ones), one that does not come back \
            within --timeout as lost. One line per probe, then ping's summary (on Ctrl-C or \
            after --count probes). Exit status: 0 if every probe came back intact, 1 if some \
            were lost or corrupt, 2 for usage or name-resolution errors.",
        after_help = "Examples:\n  \
            forkecho ping localhost:9999               a probe a second until Ctrl-C\n  \
            forkecho ping -c 3 -W 1 host:7 || alert    a health check\n  \
            forkecho ping -c 100 -i 0 -s 1400 [::1]:7  a hundred back to back, 1400 bytes each\n  \
            forkecho ping --connect -c 5 host:7        a connection per probe (times connect)\n  \
            forkecho ping -c 10 --json host:7          the summary as JSON, for scripts\n  \
            forkecho ping --tls --tls-ca ca.pem -c 3 localhost:9999   over TLS, verified"
    )]
    Ping(PingOptions),
    /// Drive a running forkecho through its control socket (forkecho --control PATH)
    #[command(
        long_about = "Drive a running forkecho through its control socket (forkecho --control \
            PATH): send one command, print the JSON reply.\n\n\
            Commands: status; faults --delay 100 --reset-after 500 (the fault options, as \
            forkecho takes them, for the connections accepted from now on) or faults --clear; \
            down (connecting is refused) and up; blackhole (connections hang); close and reset \
            (every live connection, or with --from CIDR those from one network). A JSON object \
            is sent as it is. Exit status: 0 if the server said ok, 1 if it refused, 2 for \
            usage errors and a socket that does not answer.",
        after_help = "Examples:\n  \
            forkecho ctl /tmp/fe.sock status\n  \
            forkecho ctl /tmp/fe.sock faults --reset-after 0     every new connection reset\n  \
            forkecho ctl /tmp/fe.sock faults --clear\n  \
            forkecho ctl /tmp/fe.sock down                       clients get ECONNREFUSED\n  \
            forkecho ctl /tmp/fe.sock up\n  \
            forkecho ctl /tmp/fe.sock reset --from 127.0.0.1\n  \
            forkecho ctl /tmp/fe.sock '{\"cmd\":\"status\"}'"
    )]
    Ctl(CtlOptions),
}

/// `forkecho ctl`'s options.
#[derive(Args, Debug, Clone)]
pub struct CtlOptions {
    /// Seconds to wait for the reply
    #[arg(
        short = 'W',
        long,
        value_name = "SECS",
        default_value = "5",
        value_parser = parse_positive,
    )]
    pub timeout: Duration,

    /// The control socket (forkecho --control PATH)
    #[arg(value_name = "PATH")]
    pub socket: std::path::PathBuf,

    /// status, faults, down, up, blackhole, close or reset; or a JSON request
    #[arg(value_name = "COMMAND")]
    pub command: String,

    /// faults: the fault options, or --clear; close and reset: --from ADDR[/LEN]
    #[arg(
        value_name = "ARGS",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub args: Vec<String>,
}

/// `forkecho ping`'s options.
#[derive(Args, Debug, Clone)]
#[command(allow_negative_numbers = true)]
pub struct PingOptions {
    /// The echo server: HOST:PORT (a name, an IPv4 address, or [IPv6]:PORT), unix:PATH, or a
    /// WebSocket one: ws://HOST:PORT/PATH or wss://HOST:PORT/PATH
    #[arg(value_name = "HOST:PORT")]
    pub target: String,

    /// Stop after COUNT probes [default: until Ctrl-C]
    #[arg(short, long, value_name = "COUNT", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,

    /// Seconds between probes (decimals allowed; 0 sends each as soon as the last is back)
    #[arg(short, long, value_name = "SECS", default_value = "1", value_parser = parse_seconds)]
    pub interval: Duration,

    /// Payload bytes per probe; K and M suffixes work
    #[arg(short, long, value_name = "BYTES", default_value = "56", value_parser = parse_size)]
    pub size: usize,

    /// Seconds to wait for each probe's whole echo (connect included), at least 0.001
    #[arg(
        short = 'W',
        long,
        value_name = "SECS",
        default_value = "10",
        value_parser = parse_positive,
    )]
    pub timeout: Duration,

    /// Open a new connection for every probe, and report connect time and echo time apart
    #[arg(long)]
    pub connect: bool,

    /// Probe a UDP echo server: datagrams with sequence numbers and a checksum
    ///
    /// Loss, corruption, duplicates and reordering are reported apart; --size is at least 16
    #[arg(long, conflicts_with = "connect")]
    pub udp: bool,

    /// Speak TLS: verify the server's certificate and every echo; handshake times reported apart
    ///
    /// The certificate must verify against --tls-ca (or the system's trust store) for --sni or
    /// the target's host name; a failed verification is a lost probe that names the reason
    #[arg(long, conflicts_with = "udp")]
    pub tls: bool,

    /// Trust the CAs in FILE (PEM), such as the one forkecho --tls-ca-out writes
    #[arg(long, value_name = "FILE", conflicts_with = "tls_insecure")]
    pub tls_ca: Option<std::path::PathBuf>,

    /// Take any certificate, for any name (the handshake's signatures are still checked)
    #[arg(long)]
    pub tls_insecure: bool,

    /// The server name to send and verify [default: the target's host, localhost for unix:]
    #[arg(long, value_name = "NAME")]
    pub sni: Option<String>,

    /// A client certificate chain (PEM) for servers that ask for one (needs --tls-key)
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,

    /// The private key of --tls-cert (PEM)
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,

    /// Print only the first line and the summary
    #[arg(short, long)]
    pub quiet: bool,

    /// Print only the summary, as one JSON object (implies --quiet)
    #[arg(long)]
    pub json: bool,
}

impl PingOptions {
    /// The TLS option given without TLS to use it for (`--tls`, or a wss:// target), if any.
    pub fn tls_unused(&self) -> Option<&'static str> {
        if self.tls || self.target.starts_with("wss://") {
            return None;
        }
        let given = [
            (self.tls_ca.is_some(), "--tls-ca"),
            (self.tls_insecure, "--tls-insecure"),
            (self.sni.is_some(), "--sni"),
            (self.tls_cert.is_some(), "--tls-cert"),
        ];
        given
            .into_iter()
            .find_map(|(given, name)| given.then_some(name))
    }
}
