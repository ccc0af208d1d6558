//! Command-line options, as the user types them: the one definition behind `--help`, the man
//! page and the completions (`man`), with the parsers for their values in `values`.
//!
//! clap rejects a bad value with a message that quotes it (`invalid value '70000' for '--port
//! <PORT>'`) and exit status 2, before anything is bound. What the options mean to the parent,
//! the listeners and the children is worked out once, in `crate::settings`.
//!
//! The build script compiles this folder too, to write the man page and the completions that
//! `cargo deb` packages (see build.rs): so it depends only on std, clap and `crate::faults`.

pub mod man;
pub mod values;

use std::time::Duration;

use clap::{ArgGroup, Args, Parser, Subcommand};
use clap_complete::Shell;

use crate::faults::{Chunk, Delay, Selectors, Trigger};
pub use values::{Bind, Pattern, Rate};
use values::{
    parse_bind, parse_chunk, parse_delay, parse_fault_on, parse_fraction, parse_metrics,
    parse_millis, parse_mode, parse_pattern, parse_positive, parse_rate, parse_rate_per_ip,
    parse_seconds, parse_size, parse_timeout, parse_trigger,
};

/// The most processes Linux can have (PID_MAX_LIMIT on 64-bit systems).
const PID_MAX_LIMIT: i64 = 4_194_304;

/// The help section of the faults.
pub const FAULTS: &str = "Faults (misbehave on purpose, to test clients)";
/// The help section of what a harness (a test suite, a service manager) is told.
const HARNESS: &str = "Harness (readiness, lifelines, logs)";
/// The help section of TLS.
const TLS: &str = "TLS (encrypted echo, certificates made per run, broken on demand)";

/// `--tls-fault`'s kinds: a certificate broken in one way, or a handshake that goes wrong.
pub const TLS_FAULTS: [&str; 7] = [
    "expired",
    "not-yet-valid",
    "wrong-name",
    "untrusted",
    "self-signed",
    "stall-handshake",
    "reset-in-handshake",
];

#[derive(Parser, Debug, Clone)]
#[command(
    args_conflicts_with_subcommands = true,
    // `-p -1` is a bad port, not an unknown flag: the value's parser says what is wrong with it.
    allow_negative_numbers = true,
    group(ArgGroup::new("faults").multiple(true).args([
        "delay", "rate", "chunk", "close_after", "reset_after", "stall_after", "close_on",
        "reset_on", "slow_close", "loss", "duplicate", "reorder", "corrupt",
    ])),
    group(ArgGroup::new("udp_any").args(["udp", "udp_only"])),
    group(ArgGroup::new("tls_on").multiple(true).args(["tls", "tls_cert"])),
    name = "forkecho",
    version,
    about = "A process-per-connection TCP echo server (RFC 862)",
    long_about = "A process-per-connection TCP echo server (RFC 862).\n\n\
        forkecho listens on a TCP port and forks one child process per client; the child sends \
        back every byte it receives, in order, until the client closes the connection.\n\n\
        Once listening, it prints one line to stdout, `listening on ADDR` (with the real port, \
        useful with --port 0; with several listeners, their addresses separated by spaces), and \
        nothing else. Logs go to stderr, one line per event. \
        SIGTERM, SIGINT or SIGHUP stops it: it closes the listening sockets, asks the children to \
        close their connections, and exits 0. SIGUSR1 logs a line of statistics. The man page \
        (forkecho --man) describes every log line, signal, limit and exit status.",
    after_help = "Examples:\n  \
        forkecho                                 port 9999, IPv6 and IPv4\n  \
        forkecho -p 0 -b 127.0.0.1               any free loopback port (stdout says which)\n  \
        forkecho -p 0 -b 127.0.0.1 -b ::1        two listeners, one port, one loop\n  \
        forkecho -q --max-per-ip 8 --idle-timeout 60   quieter; fair to many sources\n  \
        forkecho --udp                           TCP and UDP echo on port 9999\n  \
        forkecho --tls --tls-ca-out ca.pem       TLS, with the run's CA written for clients\n  \
        forkecho --tls --tls-fault expired       a certificate that expired yesterday\n  \
        forkecho --udp-only --loss 0.1 --seed 7  UDP echo that drops one datagram in ten\n  \
        forkecho --rate-per-ip 20/1              20 new connections a second per source\n  \
        forkecho --reuse-port                    one of several instances sharing the port\n  \
        forkecho --proxy-protocol -p 10001       behind HAProxy's send-proxy-v2\n  \
        sudo forkecho -p 7 --user nobody         the RFC 862 port, serving as nobody\n  \
        tcpserver 0 7 forkecho --inetd           one forkecho per connection\n  \
        forkecho --chunk 1 --delay 50            a slow server, one byte at a time\n  \
        forkecho --reset-after 1K --fault-rate 0.5 --seed 7   half the clients reset\n  \
        forkecho --fault-on first:2 --reset-after 0   the first two clients reset\n  \
        forkecho --control /tmp/fe.sock          then forkecho ctl /tmp/fe.sock down, up, ...\n  \
        nc localhost 9999                        talk to it\n  \
        forkecho ping -c 3 localhost:9999        three probes, checked byte for byte"
)]
pub struct Options {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// TCP port to listen on (0: any free port, named by the `listening on` line)
    #[arg(short, long, default_value_t = 9999)]
    pub port: u16,

    /// Address, host name or unix:PATH to listen on; repeat for several [default: `::`, dual stack]
    ///
    /// Give it several times for several listeners (-b 127.0.0.1 -b ::1), all served by the one
    /// loop on one port (after --port 0, the port picked for the first). A name listens on every
    /// address it resolves to; an address of a family the host lacks is skipped with a warning, as
    /// long as one binds. Multicast and broadcast addresses are refused: no TCP client can reach
    /// them. The default is one IPv6 socket that also takes IPv4 clients, or 0.0.0.0 where the host
    /// has no IPv6. `unix:/path/to/sock` listens on a Unix socket file (alone or beside IP
    /// listeners): a stale socket file nobody listens on is replaced, a live one or any other file
    /// is a startup error, and the file is removed at a clean stop. `unix:@name` is a socket in the
    /// abstract namespace (no file). Unix clients are logged by their credentials
    /// (peer=unix:uid=1000,pid=4242) and counted per user by --max-per-ip and --rate-per-ip
    #[arg(short, long, value_name = "ADDR", value_parser = parse_bind)]
    pub bind: Vec<Bind>,

    /// Permission bits of unix:PATH socket files (octal, such as 0660) [default: from the umask]
    ///
    /// A client needs write permission on a socket file to connect. With --user or --group, the
    /// files belong to that user and group
    #[arg(long, value_name = "MODE", value_parser = parse_mode)]
    pub unix_mode: Option<u32>,

    /// Also serve UDP echo on the same addresses and port
    ///
    /// One worker process answers every datagram, each from the address it was sent to. Never
    /// answered: datagrams larger than --buffer-size, from port 0 or the ports of services that
    /// answer unsolicited datagrams (7, 13, 17, 19, 37), from or to a broadcast or multicast
    /// address, or over --rate-per-ip. Announced on its own stdout line, `listening on udp ADDR`
    #[arg(long)]
    pub udp: bool,

    /// Serve UDP echo alone, no TCP (see --udp)
    #[arg(long, conflicts_with_all = ["proxy_protocol", "unix_mode"])]
    pub udp_only: bool,

    /// Set SO_REUSEPORT, so several forkecho processes can share the port
    ///
    /// The kernel then spreads new connections among the processes listening on the port (one
    /// per core, say)
    #[arg(long)]
    pub reuse_port: bool,

    /// Connections the kernel may queue before forkecho accepts them
    ///
    /// The kernel caps it at net.core.somaxconn
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1024,
        value_parser = clap::value_parser!(i32).range(1..)
    )]
    pub backlog: i32,

    /// No per-connection log lines (accept, close)
    ///
    /// Startup lines, warnings, refusals and abnormal child exits are still logged
    #[arg(short, long)]
    pub quiet: bool,

    /// Most bytes one transfer moves: 1 to 64M, with K and M suffixes
    ///
    /// The splice pipe's size, or the read/write buffer's (64K, 1M)
    #[arg(long, value_name = "BYTES", default_value = "64K", value_parser = parse_size)]
    pub buffer_size: usize,

    /// Most clients served at once, one process each (at most 4194304)
    ///
    /// At the limit new connections wait in the kernel's backlog and are accepted the moment a
    /// child exits. Memory follows the clients actually served, not this number
    #[arg(
        long,
        value_name = "N",
        default_value_t = 4096,
        value_parser = clap::value_parser!(u32).range(1..=PID_MAX_LIMIT),
    )]
    pub max_clients: u32,

    /// Most connections at once from one client address group (0: no limit)
    ///
    /// Address groups are set by --ipv4-prefix and --ipv6-prefix (by default an IPv4 address, or an
    /// IPv6 /64). More connections from a group are closed at once, before any fork, and logged
    /// as refused
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub max_per_ip: u32,

    /// Read a PROXY protocol header (v1 or v2) before each connection's data
    ///
    /// As HAProxy's send-proxy-v2, nginx, AWS NLB and Envoy send it: logs and the per-source
    /// limits then use the client address it names. A connection without a valid header within
    /// 5 s (or --idle-timeout, if shorter) is closed. Not with --inetd
    #[arg(long)]
    pub proxy_protocol: bool,

    /// Most new connections from one address group: N at once, then N every S s
    ///
    /// S defaults to 1 and takes decimals (--rate-per-ip 20 is 20 a second, 5/0.5 five every half
    /// second). Connections over the rate are closed before any fork and logged as refused
    #[arg(long, value_name = "N[/S]", value_parser = parse_rate_per_ip)]
    pub rate_per_ip: Option<Rate>,

    /// IPv6 clients count per /LEN for --max-per-ip and --rate-per-ip
    ///
    /// One host usually owns a whole /64, so a per-address count would be no limit; 128 counts per
    /// address
    #[arg(
        long,
        value_name = "LEN",
        default_value_t = 64,
        value_parser = clap::value_parser!(u8).range(0..=128),
    )]
    pub ipv6_prefix: u8,

    /// IPv4 clients count per /LEN for --max-per-ip and --rate-per-ip
    ///
    /// 32 counts per address; 24 groups a /24
    #[arg(
        long,
        value_name = "LEN",
        default_value_t = 32,
        value_parser = clap::value_parser!(u8).range(0..=32),
    )]
    pub ipv4_prefix: u8,

    /// Close a connection idle this long, sending or reading nothing (0: never)
    ///
    /// A client that sends nothing for this many seconds is closed; one that reads none of its
    /// echo for that long is reset. Decimals allowed, at least 0.001
    #[arg(long, value_name = "SECS", default_value = "300", value_parser = parse_timeout)]
    pub idle_timeout: Duration,

    /// Close a connection this long after it opened, busy or not (0: never)
    ///
    /// The defense against clients that trickle a byte just inside --idle-timeout to hold a
    /// process forever. Seconds, decimals allowed, at least 0.001
    #[arg(long, value_name = "SECS", default_value = "0", value_parser = parse_timeout)]
    pub max_duration: Duration,

    /// At shutdown, how long children get to close their connections
    ///
    /// Seconds, decimals allowed; children still there after it are killed
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_seconds)]
    pub grace: Duration,

    /// Echo with read(2)/write(2) only, never splice(2)
    ///
    /// splice moves the bytes inside the kernel and is used once a connection sends in bulk,
    /// with read/write wherever splice is refused
    #[arg(long)]
    pub no_splice: bool,

    /// Serve without the sandbox (seccomp allow-list and per-child limits)
    ///
    /// The sandbox is on by default; a kernel that refuses it stops the server at startup, with a
    /// message naming this flag
    #[arg(long)]
    pub no_sandbox: bool,

    /// After binding, run as this user (name or uid; needs root)
    ///
    /// Its primary group is used unless --group says otherwise
    #[arg(short, long, value_name = "USER")]
    pub user: Option<String>,

    /// After binding, run as this group (name or gid; needs root)
    #[arg(short, long, value_name = "GROUP")]
    pub group: Option<String>,

    /// Serve one connection a launcher accepted (inetd, tcpserver, systemd), then exit
    ///
    /// The connection is on stdin and stdout, or fd 3 with LISTEN_FDS (systemd's Accept=yes)
    #[arg(
        long,
        conflicts_with_all = [
            "port", "bind", "reuse_port", "backlog", "max_clients", "max_per_ip", "rate_per_ip",
            "ipv6_prefix", "ipv4_prefix", "proxy_protocol", "grace", "user", "group",
            "port_file", "ready_fd", "exit_with_parent", "stdin_lifeline", "metrics", "udp",
            "udp_only", "tls_ca_out", "control",
        ],
    )]
    pub inetd: bool,

    /// Once listening, write the port and a newline to PATH (removed at a clean stop)
    ///
    /// Written atomically (a temporary file made exclusively in the same directory, then a
    /// rename) at the moment of the `listening on` line, so `port=$(cat PATH)` never reads half
    /// a file. A path that cannot be written (a missing or read-only directory, a directory
    /// itself) is a startup error
    #[arg(long, value_name = "PATH", help_heading = HARNESS)]
    pub port_file: Option<std::path::PathBuf>,

    /// Once listening, write the `listening on` line to fd N and close it
    ///
    /// s6's notification-fd convention: a harness waits for the pipe's end. An fd that is not
    /// open is a startup error
    #[arg(
        long,
        value_name = "N",
        value_parser = clap::value_parser!(i32).range(3..),
        help_heading = HARNESS,
    )]
    pub ready_fd: Option<i32>,

    /// Stop (as at SIGTERM) when the process that started forkecho dies
    ///
    /// PR_SET_PDEATHSIG: Linux ties it to the thread that started forkecho, so a harness that
    /// spawns from a short-lived thread stops it when that thread ends. The parent is the one
    /// forkecho has when it starts: if that is already init (pid 1), because the launcher exited
    /// first, starting fails; a parent that dies while forkecho starts stops it at once
    #[arg(long, help_heading = HARNESS)]
    pub exit_with_parent: bool,

    /// Stop (as at SIGTERM) when stdin reaches its end
    ///
    /// A harness stops forkecho by closing the pipe it gave as stdin, and a harness that dies
    /// closes it too. What stdin sends is read and dropped
    #[arg(long, help_heading = HARNESS)]
    pub stdin_lifeline: bool,

    /// How log lines read: text (`forkecho: event key=value ...`) or json (one object a line)
    ///
    /// JSON lines carry the same events and fields as the text ones, plus "ts" (RFC 3339, UTC,
    /// microseconds) and "event"; numbers are numbers, durations seconds. Each line is still one
    /// write of at most 4096 bytes
    #[arg(
        long,
        value_name = "FORMAT",
        default_value = "text",
        value_parser = ["text", "json"],
        help_heading = HARNESS,
    )]
    pub log_format: String,

    /// Serve Prometheus metrics at http://ADDR/metrics (such as 127.0.0.1:9100; port 0: any)
    ///
    /// Each scrape is answered by a child of its own, outside --max-clients, --max-per-ip and the
    /// faults, within 2 s (at most 4 at once). Anything but GET /metrics is answered 404. The
    /// startup line `metrics on http://ADDR/metrics` names the real port
    #[arg(long, value_name = "ADDR", value_parser = parse_metrics, help_heading = HARNESS)]
    pub metrics: Option<std::net::SocketAddr>,

    /// Serve a control socket at PATH: change faults, go down and up, reset connections live
    ///
    /// A Unix socket of mode 0600 that the server's user (or root) drives with `forkecho ctl
    /// PATH COMMAND`, or by writing one JSON object a line: status, faults, down, up, blackhole,
    /// close, reset (see CONTROL in the man page). Removed at a clean stop
    #[arg(long, value_name = "PATH", help_heading = HARNESS)]
    pub control: Option<std::path::PathBuf>,

    /// Start each text log line with a time stamp (RFC 3339, UTC, microseconds)
    ///
    /// Off by default: journald and most collectors add one
    #[arg(long, help_heading = HARNESS)]
    pub log_time: bool,

    /// Append log lines to PATH instead of stderr
    ///
    /// Opened once at startup (a path that cannot be opened is a startup error). SIGHUP still
    /// stops forkecho: rotate with copytruncate, or log to the journal
    #[arg(long, value_name = "PATH", help_heading = HARNESS)]
    pub log_file: Option<std::path::PathBuf>,

    /// Serve TLS with a CA and a certificate made at startup, in memory
    ///
    /// The certificate (ECDSA P-256, valid from an hour ago for 7 days) names every --bind address
    /// and name, the host's name, localhost, 127.0.0.1 and ::1, and is signed by a CA made for
    /// this run alone: --tls-ca-out writes it for clients to trust. Each child does its own
    /// handshake, within --idle-timeout; the faults shape the plaintext (--chunk 1: one-byte
    /// records). TCP and Unix listeners; UDP stays plain
    #[arg(long, conflicts_with = "udp_only", help_heading = TLS)]
    pub tls: bool,

    /// Write the run's CA certificate (PEM) to PATH before the `listening on` line
    ///
    /// Written atomically (a temporary file made exclusively, then a rename); point a client's
    /// trust store at it
    #[arg(
        long,
        value_name = "PATH",
        requires = "tls",
        conflicts_with = "tls_cert",
        help_heading = TLS,
    )]
    pub tls_ca_out: Option<std::path::PathBuf>,

    /// Serve TLS with this certificate chain (PEM, leaf first) instead of a made one
    ///
    /// Needs --tls-key. A file that cannot be read, holds no certificate, or does not match the
    /// key is a startup error naming it
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_key",
        conflicts_with_all = ["udp_only"],
        help_heading = TLS,
    )]
    pub tls_cert: Option<std::path::PathBuf>,

    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1)
    #[arg(long, value_name = "FILE", requires = "tls_cert", help_heading = TLS)]
    pub tls_key: Option<std::path::PathBuf>,

    /// Break TLS on purpose: present a broken certificate, or break the handshake
    ///
    /// expired, not-yet-valid, wrong-name (names only wrong.name.invalid), untrusted (signed by
    /// a CA nobody is given), self-signed: the certificate is otherwise the one --tls makes,
    /// signed by the CA --tls-ca-out writes. stall-handshake: accept, then say nothing until
    /// --idle-timeout; reset-in-handshake: read the ClientHello, then reset. Needs --tls (the
    /// handshake kinds also work with --tls-cert)
    #[arg(
        long,
        value_name = "KIND",
        value_parser = TLS_FAULTS,
        requires = "tls_on",
        help_heading = TLS,
    )]
    pub tls_fault: Option<String>,

    /// Require a client certificate signed by a CA in FILE (PEM): mutual TLS
    ///
    /// A client without one, or with one that does not verify, fails its handshake; the close
    /// line names the subject of the client's certificate
    #[arg(long, value_name = "FILE", requires = "tls_on", help_heading = TLS)]
    pub tls_client_ca: Option<std::path::PathBuf>,

    /// Offer ALPN protocol PROTO (repeat for several, most preferred first)
    ///
    /// A client that offers protocols, none of them these, fails its handshake
    #[arg(long, value_name = "PROTO", requires = "tls_on", help_heading = TLS)]
    pub tls_alpn: Vec<String>,

    /// The oldest TLS version accepted: 1.2 or 1.3
    #[arg(
        long,
        value_name = "VERSION",
        default_value = "1.2",
        value_parser = ["1.2", "1.3"],
        help_heading = TLS,
    )]
    pub tls_min_version: String,

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
    #[arg(
        long,
        value_name = "BYTES|TIME",
        value_parser = parse_trigger,
        group = "limit",
        help_heading = FAULTS,
    )]
    pub close_after: Option<Trigger>,

    /// After echoing BYTES (or TIME after the accept: 500ms, 2s), reset the connection (RST)
    ///
    /// Once the client has acknowledged what was echoed; its next read fails with ECONNRESET. At
    /// most one of --close-after, --reset-after, --stall-after, --close-on and --reset-on
    #[arg(
        long,
        value_name = "BYTES|TIME",
        value_parser = parse_trigger,
        group = "limit",
        help_heading = FAULTS,
    )]
    pub reset_after: Option<Trigger>,

    /// After echoing BYTES (or TIME after the accept: 500ms, 2s), read and write nothing more
    ///
    /// The connection is held open until the client closes it or --idle-timeout passes. At most
    /// one of --close-after, --reset-after, --stall-after, --close-on and --reset-on
    #[arg(
        long,
        value_name = "BYTES|TIME",
        value_parser = parse_trigger,
        group = "limit",
        help_heading = FAULTS,
    )]
    pub stall_after: Option<Trigger>,

    /// Close cleanly where the client's stream contains PATTERN, echoing only what came before
    ///
    /// The pattern may span reads (\r, \n, \t, \\ and \xNN escapes); until a read shows that the
    /// last bytes do not begin it, their echo waits. At most one limit, as --close-after
    #[arg(
        long,
        value_name = "PATTERN",
        value_parser = parse_pattern,
        group = "limit",
        help_heading = FAULTS,
    )]
    pub close_on: Option<Pattern>,

    /// Reset where the client's stream contains PATTERN, echoing only what came before
    ///
    /// As --close-on, with a reset (RST) once the echo before the pattern is acknowledged
    #[arg(
        long,
        value_name = "PATTERN",
        value_parser = parse_pattern,
        group = "limit",
        help_heading = FAULTS,
    )]
    pub reset_on: Option<Pattern>,

    /// After the client's FIN, wait MS milliseconds before closing
    #[arg(long, value_name = "MS", value_parser = parse_millis, help_heading = FAULTS)]
    pub slow_close: Option<Duration>,

    /// UDP: drop this fraction of datagrams unanswered (0 < P <= 1)
    ///
    /// Decided per datagram from --seed and its number, so a seed drops the same datagrams
    /// every run. --duplicate, --reorder, --corrupt and --delay likewise
    #[arg(
        long,
        value_name = "P",
        value_parser = parse_fraction,
        requires = "udp_any",
        help_heading = FAULTS,
    )]
    pub loss: Option<f64>,

    /// UDP: answer this fraction of datagrams twice (0 < P <= 1)
    #[arg(
        long,
        value_name = "P",
        value_parser = parse_fraction,
        requires = "udp_any",
        help_heading = FAULTS,
    )]
    pub duplicate: Option<f64>,

    /// UDP: hold this fraction of answers until the next one has gone (0 < P <= 1)
    ///
    /// A held answer waits at most 1 s for a next one
    #[arg(
        long,
        value_name = "P",
        value_parser = parse_fraction,
        requires = "udp_any",
        help_heading = FAULTS,
    )]
    pub reorder: Option<f64>,

    /// UDP: flip one byte in this fraction of answers (0 < P <= 1); a log line says which
    #[arg(
        long,
        value_name = "P",
        value_parser = parse_fraction,
        requires = "udp_any",
        help_heading = FAULTS,
    )]
    pub corrupt: Option<f64>,

    /// Apply the faults to this fraction of connections only (0 < P <= 1)
    ///
    /// Chosen per connection, from --seed and the connection's number. Needs a fault
    #[arg(
        long,
        value_name = "P",
        value_parser = parse_fraction,
        requires = "faults",
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
        requires = "faults",
        help_heading = FAULTS,
    )]
    pub fault_on: Option<Selectors>,

    /// Seed for the faults' random choices (jitter, --fault-rate)
    ///
    /// The same seed makes the same choices for the same connection numbers; without it a random
    /// seed is used and logged. Needs a fault
    #[arg(long, value_name = "N", requires = "faults", help_heading = FAULTS)]
    pub seed: Option<u64>,

    /// Print the man page (roff) and exit
    #[arg(long, exclusive = true)]
    pub man: bool,

    /// Print a completion script for SHELL and exit
    #[arg(long, value_name = "SHELL", exclusive = true)]
    pub completions: Option<Shell>,
}

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
    /// The echo server: HOST:PORT (a name, an IPv4 address, or [IPv6]:PORT), or unix:PATH
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
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls",
        conflicts_with = "tls_insecure"
    )]
    pub tls_ca: Option<std::path::PathBuf>,

    /// Take any certificate, for any name (the handshake's signatures are still checked)
    #[arg(long, requires = "tls")]
    pub tls_insecure: bool,

    /// The server name to send and verify [default: the target's host, localhost for unix:]
    #[arg(long, value_name = "NAME", requires = "tls")]
    pub sni: Option<String>,

    /// A client certificate chain (PEM) for servers that ask for one (needs --tls-key)
    #[arg(long, value_name = "FILE", requires_all = ["tls", "tls_key"])]
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

/// What one invocation of forkecho does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Listen and fork a child per client (the default).
    Serve,
    /// Echo the one connection a launcher accepted (`--inetd`).
    Inetd,
    /// Print the man page (`--man`).
    Man,
    /// Print a completion script (`--completions SHELL`).
    Completions(Shell),
    /// Probe an echo server (`forkecho ping`).
    Ping,
    /// Drive a server's control socket (`forkecho ctl`).
    Ctl,
}

impl Options {
    /// The mode these options ask for; clap has already refused contradictory combinations.
    pub fn mode(&self) -> Mode {
        if let Some(command) = &self.command {
            match command {
                Command::Ping(_) => Mode::Ping,
                Command::Ctl(_) => Mode::Ctl,
            }
        } else if self.man {
            Mode::Man
        } else if let Some(shell) = self.completions {
            Mode::Completions(shell)
        } else if self.inetd {
            Mode::Inetd
        } else {
            Mode::Serve
        }
    }
}

#[cfg(test)]
mod tests;
