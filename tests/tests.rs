//! forkecho's integration tests: one test crate (ripgrep's `tests/tests.rs`), a module per area,
//! each driving the built binary (`env!("CARGO_BIN_EXE_forkecho")`) from outside, as users do.
//! Tests that need third-party programs are `#[ignore]`d; `.ci/run` installs the programs and runs
//! them with `cargo test -- --ignored`.

/// The helpers: server harness, clients, payloads, /proc, namespaces.
mod util;

/// Round trips with nc, socat and telnet.
mod clients;
/// --control and `forkecho ctl`: faults, down and up, blackhole, close and reset while serving.
mod control;
/// The README's option reference, Rust fixture and pytest example, against the binary.
mod docs;
/// The default dual-stack bind, in a private network namespace.
mod dualstack;
/// --dump and --tls-keylog: pcapng files read back, with tshark too.
mod dump;
/// Echo semantics: exact bytes back, any content, any size, many clients.
mod echo;
/// Bad flags, files and bind failures: non-zero exit and a message naming the value.
mod errors;
/// The faults clients are served on purpose: --delay, --rate, --chunk, --close-after and the rest.
mod faults;
/// Limits, timeouts, signals and privileges.
mod hardening;
/// What a harness is told (port file, ready fd, sd_notify) and the lifelines that tie to it.
mod harness;
/// The house rules on src/ itself: no import that climbs, no import circle, no file over 500
/// lines.
mod house;
/// Started by other programs: systemd socket activation, inetd, tcpserver.
mod launchers;
/// Where the data every child writes lies in the binary: on as few pages as it can.
mod layout;
/// Reaping, fds, killed children, stopping, logs.
mod lifecycle;
/// Several --bind addresses and several processes on one port.
mod listeners;
/// Logging never stalls serving, whatever stderr is.
mod logging;
/// --metrics: Prometheus scrapes answered by children, counts that add up.
pub mod metrics;
/// `forkecho ping` against forkecho and against broken servers.
mod ping;
/// Links, FIFOs and directories planted where forkecho writes; socket files replaced under it.
mod planted;
/// --proxy-protocol: PROXY v1 and v2 headers.
mod proxy;
/// The fork boundary's races.
mod races;
/// The seccomp sandbox and the children's resource limits.
mod sandbox;
/// The HAProxy scale-out recipe.
mod scaleout;
/// Resource shortages the server survives: fork and accept failing, descriptors running out.
mod shortages;
/// Per-source limits: --rate-per-ip and --max-per-ip.
mod sources;
/// The first milliseconds: signals before the server is ready, a stdout nobody reads.
mod startup;
/// TLS echo: certificates made per run, broken on demand, mutual TLS, real clients.
mod tls;
/// Certificates made with openssl that rustls refuses, explained.
mod tls_made;
/// UDP echo: sizes, guards, the worker's restart, datagram faults, real clients.
mod udp;
/// UDP loops with other echo servers, and floods under --delay: survived, bounded.
mod udp_loops;
/// Unix-socket listeners: credentials, stale and live files, modes, real clients.
mod unix;
/// --websocket: RFC 6455 echo over ws:// and wss://, close codes, with our frames and real
/// clients (Python websockets, node ws).
pub mod websocket;
