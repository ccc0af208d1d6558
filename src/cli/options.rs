//! The server's options (`Options`, clap's derive: the one definition behind `--help`, the man
//! page and the completions) and the mode one invocation runs in. What they mean to each side is
//! worked out once, in `crate::settings`.

use std::time::Duration;

use clap::{ArgGroup, Parser};
use clap_complete::Shell;

use super::commands::Command;
use super::faults::FaultOptions;
use super::help::{HARNESS, TLS, TLS_FAULTS};
use super::values::{
    Bind, Rate, parse_bind, parse_metrics, parse_mode, parse_rate_per_ip, parse_seconds,
    parse_size, parse_timeout,
};

/// The most processes Linux can have (PID_MAX_LIMIT on 64-bit systems).
const PID_MAX_LIMIT: i64 = 4_194_304;

#[derive(Parser, Debug, Clone)]
#[command(
    args_conflicts_with_subcommands = true,
    // `-p -1` is a bad port, not an unknown flag: the value's parser says what is wrong with it.
    allow_negative_numbers = true,
    group(ArgGroup::new("udp_any").args(["udp", "udp_only"])),
    group(ArgGroup::new("tls_on").multiple(true).args(["tls", "tls_cert"])),
    name = "forkecho",
    version,
    about = "A process-per-connection TCP echo server (RFC 862)",
    long_about = "A process-per-connection TCP echo server (RFC 862).\n\n\
        forkecho listens on a TCP port and forks one child process per client; the child sends \
        back every byte it receives, in order, until the client closes the connection.\n\n\
        Once listening, it prints one line to stdout, `listening on ADDR` (with the real port, \
        useful with --port 0; with several listeners, their addresses separated by spaces), a \
        second, `listening on udp ADDR`, with --udp, a last, `metrics on http://ADDR/metrics`, \
        with --metrics, and nothing else. Logs go to stderr, one \
        line per event. \
        SIGTERM, SIGINT, SIGQUIT or SIGHUP stops it: it closes the listening sockets, asks the \
        children to close their connections, and exits 0. SIGUSR1 logs a line of statistics. \
        The man page (forkecho --man) describes every log line, signal, limit and exit status.",
    after_help = "Examples:\n  \
        forkecho                                 port 9999, IPv6 and IPv4\n  \
        forkecho -p 0 -b 127.0.0.1               any free loopback port (stdout says which)\n  \
        forkecho -p 0 -b 127.0.0.1 -b ::1        two listeners, one port, one loop\n  \
        forkecho -q --max-per-ip 8 --idle-timeout 60   quieter; fair to many sources\n  \
        forkecho --udp                           TCP and UDP echo on port 9999\n  \
        forkecho --tls --tls-ca-out ca.pem       TLS, with the run's CA written for clients\n  \
        forkecho --tls --tls-fault expired       a certificate that expired an hour ago\n  \
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

    /// Connections the kernel may queue before forkecho accepts them [default: the kernel's most]
    ///
    /// The kernel's most is net.core.somaxconn (4096 on Linux since 5.4); a larger N is cut to
    /// it. Deep by default: a crowd of clients connecting at once that overflows the queue while
    /// the parent forks waits a second for the kernel's SYN-ACK retry
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..))]
    pub backlog: Option<i32>,

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
    /// last stdout line, `metrics on http://ADDR/metrics`, names the real port
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

    /// Make a client certificate for this run and require it: write it to DIR for clients
    ///
    /// DIR gets client-ca.pem (a CA made for this run alone), client.pem (a certificate it signs,
    /// CN "forkecho client", for clientAuth) and client.key (its key, mode 0600), each written
    /// atomically. Clients must then present a certificate that CA signs, unless
    /// --tls-client-ca names another CA to verify them against
    #[arg(long, value_name = "DIR", requires = "tls_on", help_heading = TLS)]
    pub tls_client_cert_out: Option<std::path::PathBuf>,

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
    #[command(flatten)]
    pub faults: FaultOptions,
    #[command(flatten)]
    pub websocket: super::websocket::WebSocketOptions,
    #[command(flatten)]
    pub dump: super::dump::DumpOptions,

    /// Print the man page (roff) and exit
    #[arg(long, exclusive = true)]
    pub man: bool,

    /// Print a completion script for SHELL and exit
    #[arg(long, value_name = "SHELL", exclusive = true)]
    pub completions: Option<Shell>,
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
