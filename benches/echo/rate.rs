//! `--rate-only`: the connection-rate scenario alone, for the servers the headline targets are
//! judged on, in many short rounds.
//!
//! A full round runs six scenarios against some fifteen servers, so the default three rounds
//! take ten minutes and cannot tell 5 % apart on a 2-core machine whose load generator shares
//! the cores (the floor against itself moves that much). The targets on CPU per connection and
//! connections per second need only the first scenario and a few servers: the floor, the floor
//! again (this run's noise), `forkecho -q` (and a `--compare` build), and the logging rows with
//! the floor's own logging. These rounds run just those, each server for `--seconds` (default
//! 2) in an order that alternates, 15 rounds by default: the same measurement as the full run's
//! (`load::rate_with_cpu`), with three to five times the rounds in half the time. The report
//! (`Report::markdown`, which reads these samples) gives the medians, the per-round ratios to the
//! floor and the targets.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, ensure};

use crate::servers::{Kind, Setup};
use crate::{CLIENT_THREADS, Plan, Sample, index, load};

/// The servers of a rate-only round, those of `setup.kinds()` that are in this list.
const KINDS: [Kind; 8] = [
    Kind::CForkStatic,
    Kind::CForkStaticAgain,
    Kind::ForkechoQuiet,
    Kind::ForkechoCompare,
    Kind::CForkStaticLogging,
    Kind::ForkechoLogging,
    Kind::CForkStaticJsonLogging,
    Kind::ForkechoJsonLogging,
];

/// The servers these rounds measure. The targets are against the floor, so without the static
/// C library (the reason was printed) there is nothing to judge.
pub fn kinds(setup: &Setup) -> Result<Vec<Kind>> {
    let available = setup.kinds();
    ensure!(
        available.contains(&Kind::CForkStatic),
        "--rate-only needs the floor, the C fork server linked statically"
    );
    Ok(KINDS
        .into_iter()
        .filter(|kind| available.contains(kind))
        .collect())
}

/// Runs `plan.rounds` rounds of the connection-rate scenario over `kinds`; each sample holds the
/// connection rate and the server's CPU per connection, nothing else.
pub fn rounds(setup: &Setup, plan: &Plan, kinds: &[Kind]) -> Result<BTreeMap<usize, Vec<Sample>>> {
    let run_for = Duration::from_secs_f64(plan.seconds);
    let mut samples: BTreeMap<usize, Vec<Sample>> = BTreeMap::new();
    for round in 0..plan.rounds {
        eprintln!("rate round {}/{}", round + 1, plan.rounds);
        let mut order = kinds.to_vec();
        if round % 2 == 1 {
            order.reverse();
        }
        for kind in order {
            let server = setup.start(kind, 4096 + 64)?;
            let to = load::Target {
                addr: server.addr,
                prelude: kind.prelude(),
            };
            let (conn, conn_cpu_us) =
                load::rate_with_cpu(to, server.pid(), kind.forks(), CLIENT_THREADS, run_for)
                    .with_context(|| format!("{} in rate round {}", kind.name(), round + 1))?;
            let sample = Sample {
                conn,
                conn_cpu_us,
                ..Sample::default()
            };
            samples.entry(index(kinds, kind)).or_default().push(sample);
        }
    }
    Ok(samples)
}
