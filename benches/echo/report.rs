//! The TCP rounds' report (`Report`): every server's medians as a markdown table, the
//! concurrency curve, the ratio tables to the floor and to the dynamically linked C baseline, the
//! targets with the floor against itself beside them, and the same as JSON for `results.json`;
//! for `--rate-only`, the connection-rate table with every round's ratio. `main` fills the
//! samples (`measure`, `rate::rounds`) and writes what this returns.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::servers::Kind;
use crate::{CURVE, METRICS, Metric, Plan, Sample, index};

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

pub struct Report<'a> {
    pub kinds: &'a [Kind],
    pub samples: &'a BTreeMap<usize, Vec<Sample>>,
    pub plan: &'a Plan,
}

impl Report<'_> {
    fn of(&self, kind: Kind) -> &[Sample] {
        &self.samples[&index(self.kinds, kind)]
    }

    fn median_of(&self, kind: Kind, f: impl Fn(&Sample) -> f64) -> f64 {
        median(self.of(kind).iter().map(f).collect())
    }

    /// The base of the headline ratios: the floor (the static C build) where there is one.
    pub fn floor(&self) -> Kind {
        match self.kinds.contains(&Kind::CForkStatic) {
            true => Kind::CForkStatic,
            false => Kind::CFork,
        }
    }

    /// The median over rounds of this kind's value divided by `base`'s in the same round.
    fn ratio_to(&self, kind: Kind, metric: &Metric, base: Kind) -> f64 {
        median(self.ratios(kind, metric, base))
    }

    /// This kind's value divided by `base`'s, round by round.
    fn ratios(&self, kind: Kind, metric: &Metric, base: Kind) -> Vec<f64> {
        let pairs = self.of(kind).iter().zip(self.of(base));
        pairs
            .map(|(s, b)| (metric.value)(s) / (metric.value)(b))
            .collect()
    }

    /// Per server (`base` excluded): its ratio to `base` for every metric.
    pub fn ratio_rows(&self, base: Kind) -> Vec<(&'static str, Vec<(&'static str, f64)>)> {
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

    pub fn markdown(&self) -> String {
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
                let ratios = self.ratios(kind, metric, floor).into_iter();
                ratios
                    .map(|r| format!("{r:.2}"))
                    .collect::<Vec<_>>()
                    .join(" ")
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

    pub fn json(&self) -> String {
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
