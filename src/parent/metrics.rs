//! The parent's side of `--metrics`: accepting scrapes from their own listener and forking a
//! child for each (`fork::spawn_scrape`; the child's side is `child::scrape`).
//!
//! A scrape is not a client: it passes no admission, is not counted as accepted, takes no place
//! under `--max-clients` and gets no fault. The loop polls the metrics listener even when the
//! server is full, so a full server can still be watched; at most `MOST_AT_ONCE` scrapes are
//! answered at once, and one beyond that is closed unanswered. The parent only accepts and
//! forks: it never reads a request or writes an answer.

use std::io;

use super::state::Parent;

/// Scrapes answered at once; Prometheus sends one at a time per target. (`--metrics`' help
/// states it, and the timeout: a test below holds the two together.)
const MOST_AT_ONCE: usize = 4;

impl Parent {
    /// Accepts the scrapes waiting on the metrics listener.
    pub(super) fn accept_scrapes(&mut self) {
        for _ in 0..2 * MOST_AT_ONCE {
            let Some(listener) = &self.metrics else {
                return;
            };
            match listener.accept() {
                Ok((client, peer)) => match self.state.children.scrapes() < MOST_AT_ONCE {
                    true => self.spawn_scrape(client, peer),
                    false => drop(client),
                },
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) if super::accept::is_per_connection(&err) => {}
                // The pause leaves the metrics listener out of the poll set too.
                Err(err) => return self.accept_failed(&err),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::MOST_AT_ONCE;
    use crate::child::metrics::TIMEOUT;

    #[test]
    fn the_help_states_the_limits_these_constants_set() {
        let command = crate::cli::Options::command();
        let metrics = command
            .get_arguments()
            .find(|arg| arg.get_id() == "metrics")
            .expect("--metrics");
        let help = metrics.get_long_help().expect("a long help").to_string();
        assert!(
            help.contains(&format!("within {} s", TIMEOUT.as_secs())),
            "{help}"
        );
        assert!(
            help.contains(&format!("at most {MOST_AT_ONCE} at once")),
            "{help}"
        );
    }
}
