//! `cargo bench`: forkecho against the textbook C fork server, a C thread-per-connection server
//! and socat, side by side in one run.
//!
//! Each round starts every server in turn (the order alternates between rounds, A B … B A …)
//! and runs six scenarios against it: connection rate, round-trip latency, bulk throughput, a
//! crowd of concurrent clients with their memory, a burst of clients connecting at one instant,
//! and the connection rate again at 1, 4, 16 and 64 concurrent clients (the concurrency curve).
//! Around the first two it reads the server's own CPU time (parent and reaped children, from
//! /proc), so the report gives server CPU per connection and per round trip: figures the load
//! generator, which shares the machine, cannot skew. Every response is verified byte for byte,
//! and progress goes to stderr as it runs. The
//! report gives each server's medians over the rounds and the median of its per-round ratios to
//! the C fork baseline, as a markdown table on stdout and JSON, a copy of the table and an SVG
//! chart under target/<host>/forkecho-bench/.
//!
//! Then the UDP scenarios (`udp`), in rounds of their own: forkecho's UDP worker against a plain
//! C recvfrom/sendto loop (the floor) and socat. Then the TLS scenarios (`tls`): forkecho
//! serving TLS against socat and ncat with the same certificate.
//!
//! Flags (after `cargo bench --`): `--quick` (a short smoke run, as CI does), `--rounds N`,
//! `--clients N` (scenario 4; default 2000), `--burst N` (scenario 5; default 1000), `--seconds S`
//! (scenarios 1 and 2), `--compare PATH`
//! (another forkecho binary, say a build of an earlier commit, measured `-q` in the same rounds:
//! an A/B of a change, interleaved with everything else), `--udp-only` (the UDP rounds alone),
//! `--tls-only` (the TLS rounds alone), `--websocket-only` (the WebSocket rounds alone),
//! `--tcp-only` (the TCP rounds alone), `--rate-only` (the connection rate alone, for the
//! servers the targets are judged on, in 15 rounds of 2 s by default: `rate`).

mod chart;
#[path = "../../tests/util/fixture.rs"]
mod fixture;
mod load;
#[path = "../../tests/util/payload.rs"]
mod payload;
#[path = "../../tests/util/procfs.rs"]
mod procfs;
mod rate;
mod report;
mod servers;
mod tls;
mod udp;
mod websocket;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use load::{Bulk, Burst, Crowd, Rate};
use report::Report;
use servers::{Kind, Setup};

/// Connection-rate client threads.
const CLIENT_THREADS: usize = 4;
/// The concurrency curve: connect-echo-close with this many clients at once.
const CURVE: [usize; 4] = [1, 4, 16, 64];

pub struct Plan {
    quick: bool,
    /// `--rate-only`: the connection-rate scenario alone, for the targets' servers (`rate`).
    rate_only: bool,
    /// `--udp-only`: the UDP rounds alone.
    udp_only: bool,
    /// `--tls-only`: the TLS rounds alone.
    tls_only: bool,
    /// `--websocket-only`: the WebSocket rounds alone.
    websocket_only: bool,
    /// `--tcp-only`: the TCP rounds alone (an A/B of a change to the plain path).
    tcp_only: bool,
    compare: Option<std::path::PathBuf>,
    rounds: usize,
    clients: usize,
    burst: usize,
    seconds: f64,
    bulk_bytes: usize,
}

impl Plan {
    fn from_args() -> Result<Plan> {
        let mut args = std::env::args().skip(1);
        let mut plan = Plan {
            quick: false,
            rate_only: false,
            udp_only: false,
            tls_only: false,
            websocket_only: false,
            tcp_only: false,
            compare: None,
            rounds: 3,
            clients: 2000,
            burst: 1000,
            seconds: 5.0,
            bulk_bytes: 512 << 20,
        };
        let (mut rounds, mut clients, mut seconds, mut burst) = (None, None, None, None);
        while let Some(arg) = args.next() {
            let mut value = |name: &str| -> Result<String> {
                args.next().with_context(|| format!("{name} needs a value"))
            };
            match arg.as_str() {
                "--quick" => plan.quick = true,
                "--udp-only" => plan.udp_only = true,
                "--tls-only" => plan.tls_only = true,
                "--websocket-only" => plan.websocket_only = true,
                "--tcp-only" => plan.tcp_only = true,
                "--rate-only" => plan.rate_only = true,
                "--rounds" => rounds = Some(value("--rounds")?.parse()?),
                "--clients" => clients = Some(value("--clients")?.parse()?),
                "--burst" => burst = Some(value("--burst")?.parse()?),
                "--seconds" => seconds = Some(value("--seconds")?.parse()?),
                "--compare" => plan.compare = Some(value("--compare")?.into()),
                // cargo passes --bench to harness = false targets.
                "--bench" => {}
                other => bail!(
                    "unknown argument {other:?} (try --quick, --rounds N, --clients N, --burst N, \
                     --seconds S, --compare PATH, --udp-only, --tls-only, --websocket-only, \
                     --tcp-only, --rate-only)"
                ),
            }
        }
        if plan.quick {
            (plan.rounds, plan.clients, plan.seconds, plan.burst) = (1, 100, 0.5, 100);
            plan.bulk_bytes = 16 << 20;
        } else if plan.rate_only {
            (plan.rounds, plan.seconds) = (15, 2.0);
        }
        plan.rounds = rounds.unwrap_or(plan.rounds).max(1);
        plan.clients = clients.unwrap_or(plan.clients).max(1);
        plan.burst = burst.unwrap_or(plan.burst).max(1);
        plan.seconds = seconds.unwrap_or(plan.seconds);
        Ok(plan)
    }
}

/// One server's results in one round.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    pub conn: Rate,
    /// The server's CPU per connection in scenario 1, µs.
    pub conn_cpu_us: f64,
    pub rtt: Rate,
    /// The server's CPU per round trip in scenario 2, µs.
    pub rtt_cpu_us: f64,
    pub bulk: Bulk,
    pub crowd: Crowd,
    pub burst: Burst,
    /// Scenario 6, per `CURVE` step: connections/s and server CPU µs per connection.
    pub curve: [(f64, f64); 4],
}

/// What is compared, and which way is better.
#[derive(Clone, Copy)]
pub struct Metric {
    pub name: &'static str,
    pub higher_is_better: bool,
    pub value: fn(&Sample) -> f64,
}

pub const METRICS: [Metric; 9] = [
    Metric {
        name: "connections/s",
        higher_is_better: true,
        value: |s| s.conn.per_sec,
    },
    Metric {
        name: "round trips/s",
        higher_is_better: true,
        value: |s| s.rtt.per_sec,
    },
    Metric {
        name: "bulk MiB/s",
        higher_is_better: true,
        value: |s| s.bulk.mib_per_s,
    },
    Metric {
        name: "bulk server CPU ms/GiB",
        higher_is_better: false,
        value: |s| s.bulk.server_cpu_ms_per_gib,
    },
    Metric {
        name: "KiB per connection",
        higher_is_better: false,
        value: |s| s.crowd.per_connection_kib,
    },
    Metric {
        name: "crowd setup s",
        higher_is_better: false,
        value: |s| s.crowd.setup.as_secs_f64(),
    },
    Metric {
        name: "server CPU µs/connection",
        higher_is_better: false,
        value: |s| s.conn_cpu_us,
    },
    Metric {
        name: "server CPU µs/round trip",
        higher_is_better: false,
        value: |s| s.rtt_cpu_us,
    },
    Metric {
        name: "burst p99 ms",
        higher_is_better: false,
        value: |s| s.burst.p99.as_secs_f64() * 1e3,
    },
];

fn main() {
    if let Err(err) = run() {
        eprintln!("benchmark failed: {err:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let plan = Plan::from_args()?;
    raise_fd_limit(plan.clients.max(plan.burst) + 256)?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .context("target directory")?
        .join("forkecho-bench");
    let setup = Setup::prepare(
        Path::new(env!("CARGO_BIN_EXE_forkecho")),
        &root.join("Cargo.toml"),
        &root.join("benches/baselines"),
        &out_dir,
        plan.compare.as_deref(),
    )?;
    if !setup.have_socat {
        eprintln!("note: socat is not installed; its column is left out");
    }
    if plan.rate_only {
        let kinds = rate::kinds(&setup)?;
        let samples = rate::rounds(&setup, &plan, &kinds)?;
        let report = Report {
            kinds: &kinds,
            samples: &samples,
            plan: &plan,
        };
        let markdown = report.markdown();
        println!("{markdown}");
        std::fs::write(out_dir.join("results-rate.md"), &markdown)?;
        eprintln!("wrote results-rate.md to {}", out_dir.display());
        return Ok(());
    }
    let kinds = setup.kinds();
    let mut samples: BTreeMap<usize, Vec<Sample>> = BTreeMap::new();
    let only = plan.udp_only || plan.tls_only || plan.websocket_only;
    let tcp_rounds = if only { 0 } else { plan.rounds };
    for round in 0..tcp_rounds {
        let mut order = kinds.clone();
        if round % 2 == 1 {
            order.reverse();
        }
        for (n, &kind) in order.iter().enumerate() {
            let at = format!(
                "round {}/{}, server {}/{}: {}",
                round + 1,
                plan.rounds,
                n + 1,
                order.len(),
                kind.name()
            );
            let sample = measure(&setup, kind, &plan, &at)
                .with_context(|| format!("{} in round {}", kind.name(), round + 1))?;
            samples.entry(index(&kinds, kind)).or_default().push(sample);
        }
    }
    setup.remove_dumps();
    let report = Report {
        kinds: &kinds,
        samples: &samples,
        plan: &plan,
    };
    // The TCP report first, on its own: a later round that fails must not take it along.
    if tcp_rounds > 0 {
        std::fs::write(out_dir.join("results-tcp.md"), report.markdown())?;
    }
    let only = only || plan.tcp_only;
    let udp_markdown = match !only || plan.udp_only {
        false => String::new(),
        true => udp_rounds(&setup, &plan, &root.join("benches/baselines"), &out_dir)?,
    };
    let tls_markdown = match !only || plan.tls_only {
        false => String::new(),
        true => tls_rounds(&setup, &plan, &out_dir)?,
    };
    let websocket_markdown = match !only || plan.websocket_only {
        false => String::new(),
        true => websocket_rounds(&setup, &plan, &root.join("benches/baselines"))?,
    };
    let markdown = match only && !plan.tcp_only {
        true => udp_markdown + &tls_markdown + &websocket_markdown,
        false => report.markdown() + &udp_markdown + &tls_markdown + &websocket_markdown,
    };
    println!("{markdown}");
    std::fs::write(out_dir.join("results.md"), &markdown)?;
    if tcp_rounds > 0 {
        std::fs::write(out_dir.join("results.json"), report.json())?;
        chart::draw(
            &out_dir.join("chart.svg"),
            &report.ratio_rows(report.floor()),
        )?;
    }
    eprintln!(
        "wrote results.md, results.json and chart.svg to {}",
        out_dir.display()
    );
    Ok(())
}

/// The UDP rounds: the floor (compiled here), forkecho's worker, and socat when installed.
fn udp_rounds(setup: &Setup, plan: &Plan, sources: &Path, out_dir: &Path) -> Result<String> {
    let floor = out_dir.join("udp_server_static");
    let compiled = std::process::Command::new("cc")
        .args(["-O2", "-Wall", "-static", "-o"])
        .arg(&floor)
        .arg(sources.join("udp_server.c"))
        .status()
        .context("run cc for the UDP floor")?;
    anyhow::ensure!(compiled.success(), "cc failed on udp_server.c");
    let mut kinds = vec![udp::UdpKind::Floor, udp::UdpKind::Forkecho];
    if setup.have_socat {
        kinds.push(udp::UdpKind::Socat);
    }
    let run_for = Duration::from_secs_f64(plan.seconds.min(3.0));
    let mut samples: BTreeMap<udp::UdpKind, Vec<udp::UdpSample>> = BTreeMap::new();
    for round in 0..plan.rounds {
        eprintln!("udp round {}/{}", round + 1, plan.rounds);
        let mut order = kinds.clone();
        if round % 2 == 1 {
            order.reverse();
        }
        for (kind, sample) in udp::round(&order, &floor, &setup.forkecho, run_for)? {
            samples.entry(kind).or_default().push(sample);
        }
    }
    Ok(udp::markdown(&kinds, &samples))
}

/// The TLS rounds: forkecho, and socat and ncat where installed, with one certificate.
fn tls_rounds(setup: &Setup, plan: &Plan, out_dir: &Path) -> Result<String> {
    let identity = tls::Identity::make(out_dir)?;
    let kinds: Vec<tls::TlsKind> = [
        tls::TlsKind::Forkecho,
        tls::TlsKind::Socat,
        tls::TlsKind::Ncat,
    ]
    .into_iter()
    .filter(|kind| kind.available())
    .collect();
    let run_for = Duration::from_secs_f64(plan.seconds.min(5.0));
    let bulk = (plan.bulk_bytes / 4).max(4 << 20);
    let mut samples = BTreeMap::new();
    for round in 0..plan.rounds {
        eprintln!("tls round {}/{}", round + 1, plan.rounds);
        let mut order = kinds.clone();
        if round % 2 == 1 {
            order.reverse();
        }
        for (kind, sample) in tls::round(&order, &setup.forkecho, &identity, run_for, bulk)? {
            samples.entry(kind).or_insert_with(Vec::new).push(sample);
        }
    }
    Ok(tls::markdown(&kinds, &samples))
}

fn websocket_rounds(setup: &Setup, plan: &Plan, baselines: &Path) -> Result<String> {
    let kinds: Vec<websocket::WsKind> = [
        websocket::WsKind::Forkecho,
        websocket::WsKind::PythonWebsockets,
    ]
    .into_iter()
    .filter(|kind| kind.available())
    .collect();
    let run_for = Duration::from_secs_f64(plan.seconds.min(5.0));
    let mut samples = BTreeMap::new();
    let mut plain = Vec::new();
    for round in 0..plan.rounds {
        eprintln!("websocket round {}/{}", round + 1, plan.rounds);
        let mut order = kinds.clone();
        if round % 2 == 1 {
            order.reverse();
        }
        let (measured, per_write) = websocket::round(&order, &setup.forkecho, baselines, run_for)?;
        for (kind, sample) in measured {
            samples.entry(kind).or_insert_with(Vec::new).push(sample);
        }
        plain.push(per_write);
    }
    Ok(websocket::markdown(&kinds, &samples, &plain))
}

fn index(kinds: &[Kind], kind: Kind) -> usize {
    kinds.iter().position(|&k| k == kind).expect("known kind")
}

fn measure(setup: &Setup, kind: Kind, plan: &Plan, at: &str) -> Result<Sample> {
    let run_for = Duration::from_secs_f64(plan.seconds);
    let server = setup.start(kind, plan.clients.max(plan.burst).max(4096) + 64)?;
    let pid = server.pid();
    let to = load::Target {
        addr: server.addr,
        prelude: kind.prelude(),
    };
    // Server CPU per unit of work: its CPU time (and its reaped children's) before and after,
    // the children of the scenario all reaped.
    let per = |before: Duration, count: usize| {
        load::settle(pid, kind.forks());
        (load::server_cpu(pid).saturating_sub(before)).as_secs_f64() * 1e6 / count.max(1) as f64
    };
    eprintln!("{at}: connection rate");
    let (conn, conn_cpu_us) = load::rate_with_cpu(to, pid, kind.forks(), CLIENT_THREADS, run_for)
        .context("connection rate")?;
    eprintln!("{at}: round trips");
    let before = load::server_cpu(pid);
    let rtt = load::round_trips(to, run_for).context("round trips")?;
    let rtt_cpu_us = per(before, rtt.count);
    eprintln!("{at}: bulk");
    let bulk = match load::bulk_with_cpu(to, plan.bulk_bytes, pid, kind.forks()) {
        Ok(bulk) => bulk,
        // socat's PIPE has stalled a two-way bulk until the client's 30 s timeout (seen once in
        // CI): a peer's failure is noted and its bulk left out, never the benchmark's end.
        Err(err) if kind == Kind::Socat => {
            eprintln!("note: {at}: bulk failed ({err:#}); its bulk figures are left out");
            load::Bulk {
                mib_per_s: f64::NAN,
                server_cpu_ms_per_gib: f64::NAN,
            }
        }
        Err(err) => return Err(err.context("bulk")),
    };
    eprintln!("{at}: crowd of {}", plan.clients);
    let crowd = load::crowd(to, plan.clients, pid, kind.forks()).context("crowd")?;
    load::settle(pid, kind.forks());
    eprintln!("{at}: burst of {}", plan.burst);
    let burst = load::burst(to, plan.burst).context("burst")?;
    load::settle(pid, kind.forks());
    let mut curve = [(0.0, 0.0); 4];
    for (i, &clients) in CURVE.iter().enumerate() {
        eprintln!("{at}: {clients} concurrent clients");
        let (rate, cpu) =
            load::rate_with_cpu(to, pid, kind.forks(), clients, run_for / 2).context("curve")?;
        curve[i] = (rate.per_sec, cpu);
    }
    Ok(Sample {
        conn,
        conn_cpu_us,
        rtt,
        rtt_cpu_us,
        bulk,
        crowd,
        burst,
        curve,
    })
}

fn raise_fd_limit(needed: usize) -> Result<()> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if (hard as usize) < needed {
        bail!("--clients needs {needed} file descriptors; the hard limit is {hard} (ulimit -Hn)");
    }
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    Ok(())
}
