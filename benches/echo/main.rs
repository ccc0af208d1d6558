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
mod servers;
mod tls;
mod udp;
mod websocket;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use load::{Bulk, Burst, Crowd, Rate};
use servers::{Kind, Setup};

/// Connection-rate client threads.
pub const CLIENT_THREADS: usize = 4;
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
    pub rounds: usize,
    clients: usize,
    burst: usize,
    pub seconds: f64,
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

pub fn index(kinds: &[Kind], kind: Kind) -> usize {
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

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

struct Report<'a> {
    kinds: &'a [Kind],
    samples: &'a BTreeMap<usize, Vec<Sample>>,
    plan: &'a Plan,
}

impl Report<'_> {
    fn of(&self, kind: Kind) -> &[Sample] {
        &self.samples[&index(self.kinds, kind)]
    }

    fn median_of(&self, kind: Kind, f: impl Fn(&Sample) -> f64) -> f64 {
        median(self.of(kind).iter().map(f).collect())
    }

    /// The base of the headline ratios: the floor (the static C build) where there is one.
    fn floor(&self) -> Kind {
        match self.kinds.contains(&Kind::CForkStatic) {
            true => Kind::CForkStatic,
            false => Kind::CFork,
        }
    }

    /// The median over rounds of this kind's value divided by `base`'s in the same round.
    fn ratio_to(&self, kind: Kind, metric: &Metric, base: Kind) -> f64 {
        let base = self.of(base);
        median(
            self.of(kind)
                .iter()
                .zip(base)
                .map(|(s, b)| (metric.value)(s) / (metric.value)(b))
                .collect(),
        )
    }

    /// Per server (`base` excluded): its ratio to `base` for every metric.
    fn ratio_rows(&self, base: Kind) -> Vec<(&'static str, Vec<(&'static str, f64)>)> {
        self.kinds
            .iter()
            .filter(|&&k| k != base)
            .map(|&k| {
                let ratios = METRICS
                    .iter()
                    .map(|m| (m.name, self.ratio_to(k, m, base)))
                    .collect();
                (k.name(), ratios)
            })
            .collect()
    }

    /// A markdown table of `ratio_rows(base)`, under `title`.
    fn ratio_table(&self, title: &str, base: Kind) -> String {
        let mut out = format!(
            "\n{title} (median of per-round ratios; for CPU, KiB and setup, lower is better):\n\n"
        );
        out.push_str("| server |");
        for metric in &METRICS {
            let _ = write!(out, " {} |", metric.name);
        }
        out.push_str("\n|---|");
        out.push_str(&"---:|".repeat(METRICS.len()));
        out.push('\n');
        for (name, ratios) in self.ratio_rows(base) {
            let _ = write!(out, "| {name} |");
            for (_, ratio) in ratios {
                let _ = write!(out, " {ratio:.2} |");
            }
            out.push('\n');
        }
        out
    }

    fn markdown(&self) -> String {
        if self.plan.rate_only {
            return self.rate_markdown();
        }
        let ms = |d: f64| d * 1e3;
        let mut out = String::new();
        let _ = writeln!(out, "{}\n", machine_line(self.plan));
        out.push_str(concat!(
            "| server | connections/s | server CPU µs/conn | conn p50 ms | conn p99 ms ",
            "| round trips/s | server CPU µs/rtt | rtt p50 ms | rtt p99 ms | bulk MiB/s ",
            "| bulk server CPU ms/GiB | crowd setup s | KiB per connection | parent PSS KiB ",
            "| burst p50 ms | burst p99 ms | burst max ms |\n"
        ));
        out.push_str("|---|");
        out.push_str(&"---:|".repeat(16));
        out.push('\n');
        for &kind in self.kinds {
            let m = |f: fn(&Sample) -> f64| self.median_of(kind, f);
            let _ = writeln!(
                out,
                concat!(
                    "| {} | {:.0} | {:.1} | {:.3} | {:.3} | {:.0} | {:.1} | {:.3} | {:.3} ",
                    "| {:.0} | {:.0} | {:.2} | {:.0} | {:.0} | {:.1} | {:.1} | {:.1} |"
                ),
                kind.name(),
                m(|s| s.conn.per_sec),
                m(|s| s.conn_cpu_us),
                ms(m(|s| s.conn.p50.as_secs_f64())),
                ms(m(|s| s.conn.p99.as_secs_f64())),
                m(|s| s.rtt.per_sec),
                m(|s| s.rtt_cpu_us),
                ms(m(|s| s.rtt.p50.as_secs_f64())),
                ms(m(|s| s.rtt.p99.as_secs_f64())),
                m(|s| s.bulk.mib_per_s),
                m(|s| s.bulk.server_cpu_ms_per_gib),
                m(|s| s.crowd.setup.as_secs_f64()),
                m(|s| s.crowd.per_connection_kib),
                m(|s| s.crowd.parent_pss_kib),
                ms(m(|s| s.burst.p50.as_secs_f64())),
                ms(m(|s| s.burst.p99.as_secs_f64())),
                ms(m(|s| s.burst.max.as_secs_f64())),
            );
        }
        out.push_str(&self.curve_table());
        if self.floor() == Kind::CForkStatic {
            out.push_str(&self.ratio_table(
                "Ratios to the floor, the C fork server linked statically",
                Kind::CForkStatic,
            ));
        }
        out.push_str(&self.ratio_table(
            "Ratios to the C fork baseline, linked dynamically",
            Kind::CFork,
        ));
        out.push_str(&self.targets());
        out
    }

    /// `--rate-only`'s report: each server's medians, its ratios to the floor round by round (the
    /// spread a median hides), and the targets.
    fn rate_markdown(&self) -> String {
        let mut out = format!("{}\n\n", machine_line(self.plan));
        out.push_str(concat!(
            "| server | connections/s | server CPU µs/conn | connections/s ÷ the floor's, ",
            "round by round | CPU ÷ the floor's, round by round |\n|---|---:|---:|---|---|\n"
        ));
        let floor = self.floor();
        for &kind in self.kinds {
            let by_round = |metric: &Metric| {
                let ratios = self.of(kind).iter().zip(self.of(floor));
                let ratios =
                    ratios.map(|(s, b)| format!("{:.2}", (metric.value)(s) / (metric.value)(b)));
                ratios.collect::<Vec<_>>().join(" ")
            };
            let _ = writeln!(
                out,
                "| {} | {:.0} | {:.1} | {} | {} |",
                kind.name(),
                self.median_of(kind, |s| s.conn.per_sec),
                self.median_of(kind, |s| s.conn_cpu_us),
                by_round(&METRICS[0]),
                by_round(&METRICS[6]),
            );
        }
        out.push_str(&self.targets());
        out
    }

    /// Scenario 6: connections/s and server CPU per connection as concurrency grows, with
    /// forkecho -q's ratios to the floor.
    fn curve_table(&self) -> String {
        let mut out = String::from(
            "\nConcurrency curve (connect, echo 32 bytes, close; connections/s and server CPU \
             µs/connection at 1, 4, 16 and 64 concurrent clients):\n\n| server |",
        );
        for clients in CURVE {
            let _ = write!(out, " {clients}: conn/s | µs |");
        }
        out.push_str("\n|---|");
        out.push_str(&"---:|---:|".repeat(CURVE.len()));
        out.push('\n');
        for &kind in self.kinds {
            let _ = write!(out, "| {} |", kind.name());
            for i in 0..CURVE.len() {
                let rate = self.median_of(kind, |s| s.curve[i].0);
                let cpu = self.median_of(kind, |s| s.curve[i].1);
                let _ = write!(out, " {rate:.0} | {cpu:.1} |");
            }
            out.push('\n');
        }
        let floor = self.floor();
        let _ = write!(
            out,
            "\nforkecho -q against {} (median of per-round ratios):",
            floor.name()
        );
        for (i, clients) in CURVE.iter().enumerate() {
            let ratio = |f: fn(&(f64, f64)) -> f64| {
                median(
                    self.of(Kind::ForkechoQuiet)
                        .iter()
                        .zip(self.of(floor))
                        .map(|(s, b)| f(&s.curve[i]) / f(&b.curve[i]).max(1e-9))
                        .collect(),
                )
            };
            let _ = write!(
                out,
                " at {clients}, {:.2}× conn/s and {:.2}× CPU;",
                ratio(|c| c.0),
                ratio(|c| c.1)
            );
        }
        out.push('\n');
        out
    }

    /// forkecho against round 3's targets: `-q` against the floor, and logging (text and JSON,
    /// to a file) against `-q`.
    fn targets(&self) -> String {
        let floor = self.floor();
        let r = |kind: Kind, i: usize, base: Kind| self.ratio_to(kind, &METRICS[i], base);
        // A smoke run is too short to judge anything by: it shows the ratios and says so.
        let check = |ok: bool| match (self.plan.quick, ok) {
            (true, _) => "not judged (--quick)",
            (false, true) => "met",
            (false, false) => "NOT met",
        };
        let quiet = Kind::ForkechoQuiet;
        let mut out = format!("\nTargets (against {}):\n\n", floor.name());
        let (conn, cpu, kib) = (r(quiet, 0, floor), r(quiet, 6, floor), r(quiet, 4, floor));
        let mut lines = vec![
            (
                "forkecho -q server CPU per connection <= 1.05",
                cpu,
                cpu <= 1.05,
            ),
            ("forkecho -q connections/s >= 0.95", conn, conn >= 0.95),
        ];
        // The crowd, where memory is measured, is not in a rate-only run.
        if !self.plan.rate_only {
            lines.push(("forkecho -q KiB per connection <= 1.00", kib, kib <= 1.0));
        }
        for (kind, floor_logging, name, limit) in [
            (
                Kind::ForkechoLogging,
                Kind::CForkStaticLogging,
                "logging",
                1.05,
            ),
            (
                Kind::ForkechoJsonLogging,
                Kind::CForkStaticJsonLogging,
                "JSON logging",
                1.10,
            ),
        ] {
            let (conn, cpu) = (r(kind, 0, quiet), r(kind, 6, quiet));
            lines.push((
                leak(format!("{name} / -q connections/s >= 0.95")),
                conn,
                conn >= 0.95,
            ));
            lines.push((
                leak(format!(
                    "{name} / -q server CPU per connection <= {limit:.2}"
                )),
                cpu,
                cpu <= limit,
            ));
            // Against the same lines logged the same way by the floor, in the same round: what
            // per-connection logging costs here at all, whoever does it.
            if self.kinds.contains(&floor_logging) {
                let (against, own) = (r(kind, 6, floor_logging), r(floor_logging, 6, floor));
                lines.push((
                    leak(format!(
                        "{name}: server CPU per connection / the floor's own {name} <= 1.05 \
                         (the floor's own {name} / the floor: {own:.2})"
                    )),
                    against,
                    against <= 1.05,
                ));
            }
        }
        for (what, value, ok) in lines {
            let _ = writeln!(out, "- {what}: {value:.2}, {}", check(ok));
        }
        let again = Kind::CForkStaticAgain;
        if self.kinds.contains(&again) {
            let _ = write!(
                out,
                "- (the floor against itself, this run's noise: connections/s {:.2}, server CPU \
                 per connection {:.2}",
                r(again, 0, floor),
                r(again, 6, floor),
            );
            match self.plan.rate_only {
                true => out.push_str(")\n"),
                false => _ = writeln!(out, ", KiB per connection {:.2})", r(again, 4, floor)),
            }
        }
        if self.plan.rate_only {
            return out;
        }
        let metrics = Kind::ForkechoMetrics;
        let _ = writeln!(
            out,
            "- (--metrics on, against -q: connections/s {:.2}, server CPU per connection {:.2})",
            r(metrics, 0, quiet),
            r(metrics, 6, quiet)
        );
        let _ = writeln!(
            out,
            concat!(
                "- (forkecho -q against the floor: round trips/s {:.2}, bulk MiB/s {:.2}, ",
                "bulk server CPU per GiB {:.2}, burst p99 {:.2})"
            ),
            r(quiet, 1, floor),
            r(quiet, 2, floor),
            r(quiet, 3, floor),
            r(quiet, 8, floor)
        );
        let _ = writeln!(
            out,
            "- {} concurrent clients echoed by every server",
            self.plan.clients
        );
        out
    }

    fn json(&self) -> String {
        let mut out = String::from("{\n");
        let _ = writeln!(out, "  \"machine\": {:?},", machine_line(self.plan));
        out.push_str("  \"servers\": {\n");
        for (i, &kind) in self.kinds.iter().enumerate() {
            let _ = writeln!(out, "    {:?}: {{", kind.id());
            let _ = writeln!(out, "      \"name\": {:?},", kind.name());
            out.push_str("      \"rounds\": [\n");
            let rounds = self.of(kind);
            for (j, s) in rounds.iter().enumerate() {
                let _ = write!(
                    out,
                    concat!(
                        "        {{\"connections_per_s\": {:.1}, \"conn_p50_ms\": {:.4}, ",
                        "\"conn_p99_ms\": {:.4}, \"round_trips_per_s\": {:.1}, ",
                        "\"rtt_p50_ms\": {:.4}, \"rtt_p99_ms\": {:.4}, \"bulk_mib_per_s\": {:.1}, ",
                        "\"bulk_server_cpu_ms_per_gib\": {:.1}, \"crowd_clients\": {}, ",
                        "\"crowd_setup_s\": {:.4}, \"kib_per_connection\": {:.1}, ",
                        "\"parent_pss_kib\": {:.1}, \"children\": {}, ",
                        "\"server_cpu_us_per_connection\": {:.1}, ",
                        "\"server_cpu_us_per_round_trip\": {:.2}, \"burst_clients\": {}, ",
                        "\"burst_p50_ms\": {:.3}, \"burst_p99_ms\": {:.3}, ",
                        "\"burst_max_ms\": {:.3}, \"curve\": {}}}"
                    ),
                    s.conn.per_sec,
                    s.conn.p50.as_secs_f64() * 1e3,
                    s.conn.p99.as_secs_f64() * 1e3,
                    s.rtt.per_sec,
                    s.rtt.p50.as_secs_f64() * 1e3,
                    s.rtt.p99.as_secs_f64() * 1e3,
                    s.bulk.mib_per_s,
                    s.bulk.server_cpu_ms_per_gib,
                    self.plan.clients,
                    s.crowd.setup.as_secs_f64(),
                    s.crowd.per_connection_kib,
                    s.crowd.parent_pss_kib,
                    s.crowd.children,
                    s.conn_cpu_us,
                    s.rtt_cpu_us,
                    self.plan.burst,
                    s.burst.p50.as_secs_f64() * 1e3,
                    s.burst.p99.as_secs_f64() * 1e3,
                    s.burst.max.as_secs_f64() * 1e3,
                    curve_json(&s.curve)
                );
                out.push_str(if j + 1 < rounds.len() { ",\n" } else { "\n" });
            }
            out.push_str("      ]");
            for (key, base) in [
                ("ratio_to_c_fork", Kind::CFork),
                ("ratio_to_floor", self.floor()),
            ] {
                let _ = write!(out, ",\n      {key:?}: {{");
                for (k, metric) in METRICS.iter().enumerate() {
                    let sep = if k + 1 < METRICS.len() { ", " } else { "" };
                    let ratio = self.ratio_to(kind, metric, base);
                    let _ = write!(out, "{:?}: {:.4}{sep}", metric.name, ratio);
                }
                out.push('}');
            }
            out.push_str("\n    }");
            out.push_str(if i + 1 < self.kinds.len() {
                ",\n"
            } else {
                "\n"
            });
        }
        out.push_str("  }\n}\n");
        out
    }
}

/// The machine and the run, for the table's heading.
/// The concurrency curve as JSON: one object per step.
fn curve_json(curve: &[(f64, f64); 4]) -> String {
    let steps: Vec<String> = CURVE
        .iter()
        .zip(curve)
        .map(|(clients, (rate, cpu))| {
            format!(
                "{{\"clients\": {clients}, \"connections_per_s\": {rate:.1}, \
                 \"server_cpu_us_per_connection\": {cpu:.1}}}"
            )
        })
        .collect();
    format!("[{}]", steps.join(", "))
}

fn machine_line(plan: &Plan) -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let machine = format!("{cores} × {cpu}, Linux {}", kernel.trim());
    if plan.rate_only {
        return format!(
            "{machine}; {} round(s) of the connection rate alone (--rate-only), {} s per server",
            plan.rounds, plan.seconds
        );
    }
    format!(
        concat!(
            "{machine}; {} round(s), {} s per rate scenario, {} MiB bulk, ",
            "{} concurrent clients, bursts of {}{}"
        ),
        plan.rounds,
        plan.seconds,
        plan.bulk_bytes >> 20,
        plan.clients,
        plan.burst,
        if plan.quick { " (--quick)" } else { "" },
        machine = machine,
    )
}

/// A target's label, made once per report.
fn leak(text: String) -> &'static str {
    Box::leak(text.into_boxed_str())
}
