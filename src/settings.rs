//! The options translated once into the settings each side uses (ripgrep's `lowargs` →
//! `hiargs`).
//!
//! `cli::Options` is what the user typed; `Settings` is what it means: how the listeners are made
//! (`setup`), what the parent's loop enforces (`parent`), how every connection is served
//! (`child`), and whether the sandbox is on. The faults' random seed is chosen here, once. Serving
//! and `--inetd` both take their child settings from this one place. Built in `main` before
//! anything else happens, and only read afterwards.

use std::time::Duration;

use crate::child;
use crate::child::udp;
use crate::cli::Options;
use crate::faults;
use crate::groups::Grouping;
use crate::parent;
use crate::parent::admission;
use crate::setup;
use crate::setup::{Udp, harness, listener};

/// What the options mean, for every side.
#[derive(Debug, Clone)]
pub struct Settings {
    pub setup: setup::Settings,
    pub parent: parent::Settings,
    pub child: child::Settings,
    /// The seccomp sandbox (off with `--no-sandbox`).
    pub sandbox: bool,
}

/// The longest a connection may take to send its PROXY header.
const PROXY_WAIT: Duration = Duration::from_secs(5);

impl Settings {
    pub fn from_options(options: &Options) -> Settings {
        let proxy_deadline = options
            .proxy_protocol
            .then(|| proxy_deadline(options.idle_timeout));
        // One seed for the connections' faults and the datagrams'.
        let seed = options.faults.seed.unwrap_or_else(faults::random_seed);
        let grouping = Grouping {
            v4: options.ipv4_prefix,
            v6: options.ipv6_prefix,
        };
        let udp = match (options.udp, options.udp_only) {
            (false, false) => Udp::Off,
            (true, _) => Udp::Also,
            (false, true) => Udp::Only,
        };
        let backlog = setup::listener::backlog(options.backlog);
        Settings {
            setup: setup::Settings {
                binds: options.bind.clone(),
                listener: listener::Binding {
                    port: options.port,
                    backlog,
                    reuse_port: options.reuse_port,
                    unix_mode: options.unix_mode,
                },
                idle_timeout: options.idle_timeout,
                defer_accept: proxy_deadline,
                user: options.user.clone(),
                group: options.group.clone(),
                metrics: options.metrics,
                udp,
                tls: tls_of(options),
                control: options.control.clone(),
                dump: (options.dump.dump.clone()).map(|dir| (dir, options.dump.dump_limit)),
                tls_keylog: options.dump.tls_keylog.clone(),
                harness: harness::Ties {
                    port_file: options.port_file.clone(),
                    ready_fd: options.ready_fd,
                    exit_with_parent: options.exit_with_parent,
                    stdin_lifeline: options.stdin_lifeline,
                    log_file: options.log_file.clone(),
                },
            },
            parent: parent::Settings {
                admission: admission::Policy {
                    max_clients: options.max_clients as usize,
                    max_per_ip: options.max_per_ip,
                    grouping,
                    rate_per_ip: options.rate_per_ip,
                },
                udp: (udp != Udp::Off).then(|| udp::Serving {
                    buffer_size: options.buffer_size.min(udp::LARGEST),
                    idle_timeout: options.idle_timeout,
                    quiet: options.quiet,
                    rate_per_ip: options.rate_per_ip,
                    grouping,
                    faults: (options.faults)
                        .datagram_faults(seed)
                        .map(|f| &*Box::leak(Box::new(f))),
                    // Set with the children's (`server`).
                    dump: None,
                }),
                proxy_deadline,
                grace: options.grace,
                quiet: options.quiet,
                backlog,
            },
            child: child::Settings {
                buffer_size: options.buffer_size,
                quiet: options.quiet,
                splice: !options.no_splice,
                max_duration: options.max_duration,
                idle_timeout: options.idle_timeout,
                faults: (options.faults)
                    .faults(seed)
                    .map(|faults| &*Box::leak(Box::new(faults))),
                grace: options.grace,
                // Made by `setup::certificates::prepare`, which can fail: `server` and `inetd`
                // set it.
                tls: None,
                control: options.control.is_some(),
                inband: options.faults.inband,
                websocket: (options.websocket.websocket)
                    .then_some(options.websocket.websocket_max_message as usize),
                // Opened by `setup::dump::prepare`, which can fail: `server` sets it.
                dump: None,
            },
            sandbox: !options.no_sandbox,
        }
    }
}

/// How long a connection may take to send its PROXY header: 5 s, or `--idle-timeout` if shorter.
fn proxy_deadline(idle_timeout: Duration) -> Duration {
    match idle_timeout.is_zero() {
        true => PROXY_WAIT,
        false => idle_timeout.min(PROXY_WAIT),
    }
}

/// What `--tls` and its options ask for; None without TLS.
fn tls_of(options: &Options) -> Option<setup::certificates::Recipe> {
    let files = options.tls_cert.clone().zip(options.tls_key.clone());
    (options.tls || files.is_some()).then(|| setup::certificates::Recipe {
        files,
        ca_out: options.tls_ca_out.clone(),
        fault: options
            .tls_fault
            .as_deref()
            .and_then(setup::certificates::Fault::named),
        client_ca: options.tls_client_ca.clone(),
        client_out: options.tls_client_cert_out.clone(),
        alpn: options.tls_alpn.clone(),
        only_13: options.tls_min_version == "1.3",
        keylog: options.dump.tls_keylog.is_some(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::{CHUNK_GAP, Chunk, Delay, Faults, Limit, LimitKind, Trigger};
    use clap::Parser;

    fn parse(args: &[&str]) -> Options {
        Options::try_parse_from(std::iter::once("forkecho").chain(args.iter().copied())).unwrap()
    }

    fn faults_from(args: &[&str]) -> Option<Faults> {
        Settings::from_options(&parse(args)).child.faults.copied()
    }

    #[test]
    fn the_proxy_deadline_is_five_seconds_or_the_idle_timeout() {
        assert_eq!(proxy_deadline(Duration::ZERO), Duration::from_secs(5));
        assert_eq!(
            proxy_deadline(Duration::from_secs(300)),
            Duration::from_secs(5)
        );
        assert_eq!(
            proxy_deadline(Duration::from_millis(300)),
            Duration::from_millis(300)
        );
        let settings = Settings::from_options(&parse(&["--proxy-protocol"]));
        assert_eq!(settings.parent.proxy_deadline, Some(Duration::from_secs(5)));
        assert_eq!(settings.setup.defer_accept, Some(Duration::from_secs(5)));
        let settings = Settings::from_options(&parse(&[]));
        assert_eq!(settings.parent.proxy_deadline, None);
    }

    #[test]
    fn serving_and_the_children_read_the_same_options() {
        let settings = Settings::from_options(&parse(&[
            "--buffer-size",
            "4K",
            "-q",
            "--no-splice",
            "--max-per-ip",
            "3",
            "--ipv6-prefix",
            "56",
            "--no-sandbox",
        ]));
        assert_eq!(settings.child.buffer_size, 4096);
        assert!(settings.child.quiet && settings.parent.quiet);
        assert!(!settings.child.splice);
        assert_eq!(settings.parent.admission.max_per_ip, 3);
        assert_eq!(
            settings.parent.admission.grouping,
            Grouping { v4: 32, v6: 56 }
        );
        assert!(!settings.sandbox);
        assert!(settings.child.faults.is_none());
    }

    #[test]
    fn faults_parse_into_what_the_children_apply() {
        assert_eq!(faults_from(&[]), None);
        let faults = faults_from(&[
            "--delay",
            "100:20",
            "--rate",
            "64K",
            "--chunk",
            "1",
            "--reset-after",
            "1K",
            "--slow-close",
            "250",
            "--fault-rate",
            "0.5",
            "--seed",
            "7",
        ])
        .unwrap();
        let ms = Duration::from_millis;
        assert_eq!(
            faults.delay,
            Some(Delay {
                base: ms(100),
                jitter: ms(20)
            })
        );
        assert_eq!(faults.rate, Some(65536));
        assert_eq!(
            faults.chunk,
            Some(Chunk {
                size: 1,
                gap: CHUNK_GAP
            })
        );
        assert_eq!(
            faults.limit,
            Some(Limit {
                kind: LimitKind::Reset,
                at: Trigger::Bytes(1024)
            })
        );
        assert_eq!(faults.slow_close, Some(ms(250)));
        assert_eq!((faults.fault_rate, faults.seed), (0.5, 7));
        let faults = faults_from(&["--chunk", "8:0", "--stall-after", "0"]).unwrap();
        assert_eq!(
            faults.chunk,
            Some(Chunk {
                size: 8,
                gap: Duration::ZERO
            })
        );
        assert_eq!(
            faults.limit,
            Some(Limit {
                kind: LimitKind::Stall,
                at: Trigger::Bytes(0)
            })
        );
        assert_eq!(faults.fault_rate, 1.0);
    }
}
