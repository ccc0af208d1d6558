//! A metrics scrape (`--metrics ADDR`): one HTTP request, answered by a child like any
//! connection, with Prometheus' text exposition format (version 0.0.4).
//!
//! The parent accepts the scrape on its metrics listener and forks a child for it outside
//! `--max-clients`, `--max-per-ip` and the faults, handing it the parent's own counts by value
//! (`Figures`, taken just before the fork: they live in memory children do not inherit). The
//! child adds what the children count in the shared page (`crate::shared`: bytes echoed, log
//! lines dropped, and the `Tally` of how connections ended), reads one request within
//! `TIMEOUT`, answers `GET /metrics` with the exposition and anything else with 404, and
//! closes. The parent never formats or writes a scrape.
//!
//! The text format is written here, not by the prometheus-client crate: that crate writes
//! OpenMetrics only (counters typed without their `_total`, an `info` type, a `# EOF` line),
//! which `promtool check metrics` (Prometheus 2.42, Debian's) rejects; the 0.0.4 text format
//! is what every Prometheus server and promtool read.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::echo::End;
use crate::faults::Acted;
use crate::shared::{DURATION_BUCKETS, Shared, WEBSOCKET_CLOSES};

/// How long a scrape may take to send its request, and to take the answer.
pub const TIMEOUT: Duration = Duration::from_secs(2);
/// The longest request read: the request line and headers of any scraper fit.
const MOST: usize = 8192;

/// What the parent counts, as it stood at the scrape's fork.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Figures {
    /// Connections served (a child forked for each, or its fork failed).
    pub admitted: u64,
    pub refused_per_ip: u64,
    pub rate_limited: u64,
    pub proxy_errors: u64,
    pub fork_failures: u64,
    pub accept_failures: u64,
    /// Children that died without counting their connection (killed by a signal, or panicked).
    pub abnormal: u64,
    /// Connections being served: children, and connections waiting for their PROXY header.
    pub live: u64,
    pub uptime: Duration,
    /// With `--udp`: the worker's restarts (the UDP families are left out without it).
    pub udp_restarts: Option<u64>,
    /// With `--dump`: the dumps' counts as they stood (the dump families are left out without).
    pub dumps: Option<[(&'static str, u64); 3]>,
}

/// Answers the one request on `stream` and closes it. Never inlined into `child::work`, whose
/// code every connection's child runs through: a scrape's stays out of those pages.
#[inline(never)]
pub fn answer(mut stream: TcpStream, figures: Figures, shared: &Shared) {
    // Reads and writes time out after `TIMEOUT`: set on the metrics listener, which its
    // connections inherit.
    let started = Instant::now();
    let Some(request) = read_request(&mut stream, started) else {
        return;
    };
    let answer = match request_line(&request) {
        Some(("GET", "/metrics")) => {
            let body = exposition(&figures, shared);
            response("200 OK", "text/plain; version=0.0.4; charset=utf-8", &body)
        }
        Some(_) => response("404 Not Found", "text/plain; charset=utf-8", "not found\n"),
        None => response(
            "400 Bad Request",
            "text/plain; charset=utf-8",
            "bad request\n",
        ),
    };
    if stream.write_all(answer.as_bytes()).is_ok() {
        // FIN after the answer, then take what the client still sends (a body nobody asked for)
        // until it closes, so the close does not reset the answer away.
        let _ = stream.shutdown(Shutdown::Write);
        let mut sink = [0u8; 512];
        while started.elapsed() < TIMEOUT * 2 && matches!(stream.read(&mut sink), Ok(1..)) {}
    }
}

/// The request's head (up to its blank line), or None if it did not come in time or whole.
fn read_request(stream: &mut TcpStream, started: Instant) -> Option<Vec<u8>> {
    let mut request = Vec::new();
    let mut chunk = [0u8; 1024];
    while started.elapsed() < TIMEOUT && request.len() < MOST {
        let n = stream.read(&mut chunk).ok().filter(|&n| n > 0)?;
        request.extend_from_slice(&chunk[..n]);
        if request.windows(4).any(|w| w == b"\r\n\r\n") || request.windows(2).any(|w| w == b"\n\n")
        {
            return Some(request);
        }
    }
    None
}

/// The method and the path (without a query) of an HTTP/1 request line.
fn request_line(request: &[u8]) -> Option<(&str, &str)> {
    let line = request.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
    let mut words = line.split(' ');
    let (method, target, version) = (words.next()?, words.next()?, words.next()?);
    if words.next().is_some() || !version.starts_with("HTTP/1.") {
        return None;
    }
    Some((method, target.split('?').next().unwrap_or(target)))
}

fn response(status: &str, kind: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\
         \r\n{body}",
        body.len()
    )
}

/// The metrics, in Prometheus' text format.
///
/// Long on purpose: one family after another, in the order the exposition lists them.
pub fn exposition(figures: &Figures, shared: &Shared) -> String {
    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    let tally = &shared.tally;
    let mut out = Exposition(String::with_capacity(4096));
    out.family(
        "forkecho_build_info",
        "gauge",
        "The forkecho version serving.",
    );
    out.labelled(
        "forkecho_build_info",
        "version",
        env!("CARGO_PKG_VERSION"),
        1,
    );
    out.family(
        "forkecho_uptime_seconds",
        "gauge",
        "Seconds since the server started.",
    );
    out.sample_f64("forkecho_uptime_seconds", figures.uptime.as_secs_f64());
    out.counter(
        "forkecho_connections_accepted_total",
        "Connections accepted from the listeners: served, or closed unserved (refused).",
        figures.admitted + figures.refused_per_ip + figures.rate_limited + figures.proxy_errors,
    );
    out.by_label(
        "forkecho_connections_refused_total",
        "Connections closed unserved, by reason.",
        "reason",
        [
            ("max-per-ip", figures.refused_per_ip),
            ("rate-per-ip", figures.rate_limited),
            ("proxy-error", figures.proxy_errors),
            ("fork-failed", figures.fork_failures),
        ],
    );
    let ended = End::KINDS
        .iter()
        .zip(&tally.ended)
        .map(|(end, n)| (*end, load(n)));
    out.by_label(
        "forkecho_connections_closed_total",
        "Connections served and ended, by how they ended (abnormal: the child died first).",
        "end",
        ended.chain([("abnormal", figures.abnormal)]),
    );
    out.family(
        "forkecho_live_connections",
        "gauge",
        "Connections being served (children, and connections waiting for a PROXY header).",
    );
    out.sample("forkecho_live_connections", figures.live);
    out.by_label(
        "forkecho_faults_total",
        "Connections each fault acted on.",
        "fault",
        Acted::NAMES
            .iter()
            .zip(&tally.faults)
            .map(|(fault, n)| (*fault, load(n))),
    );
    out.counter(
        "forkecho_websocket_messages_total",
        "WebSocket messages echoed (--websocket).",
        load(&tally.websocket_messages),
    );
    out.by_label(
        "forkecho_websocket_closes_total",
        "WebSocket sessions by the close code sent or received (1006: none).",
        "code",
        WEBSOCKET_CLOSES
            .iter()
            .zip(&tally.websocket_closes)
            .map(|(code, n)| (*code, load(n))),
    );
    out.counter(
        "forkecho_echoed_bytes_total",
        "Bytes echoed to clients (every one of them reached its client).",
        load(&shared.bytes),
    );
    out.counter(
        "forkecho_fork_failures_total",
        "Children that could not be made (the connection was closed).",
        figures.fork_failures,
    );
    out.counter(
        "forkecho_accept_failures_total",
        "Failed accepts and polls for want of descriptors or memory (accepting paused).",
        figures.accept_failures,
    );
    out.counter(
        "forkecho_log_lines_dropped_total",
        "Log lines nobody could write without waiting.",
        load(&shared.log.total),
    );
    let name = "forkecho_connection_duration_seconds";
    out.family(
        name,
        "histogram",
        "How long served connections lasted, from fork to close.",
    );
    let mut cumulative = 0;
    for (i, count) in tally.durations.iter().enumerate() {
        cumulative += load(count);
        let bound = match DURATION_BUCKETS.get(i) {
            Some(bound) => bound.to_string(),
            None => "+Inf".to_string(),
        };
        out.labelled(&format!("{name}_bucket"), "le", &bound, cumulative);
    }
    let sum = load(&tally.duration_micros) as f64 / 1e6;
    out.sample_f64(&format!("{name}_sum"), sum);
    out.sample(&format!("{name}_count"), cumulative);
    if let Some(restarts) = figures.udp_restarts {
        udp_families(&mut out, shared, restarts);
    }
    if let Some([(_, files), (_, cut), (_, failed)]) = figures.dumps {
        out.counter(
            "forkecho_dump_files_total",
            "Dump files made (--dump): one per connection, one per UDP worker run.",
            files,
        );
        out.by_label(
            "forkecho_dumps_incomplete_total",
            "Dumps that do not hold everything: cut at --dump-limit, or lost to a failed write.",
            "reason",
            [("cut", cut), ("failed", failed)],
        );
    }
    out.0
}

/// The UDP worker's counts (`crate::shared::UdpCounts`), with `--udp`.
fn udp_families(out: &mut Exposition, shared: &Shared, restarts: u64) {
    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    let u = &shared.udp;
    out.counter(
        "forkecho_udp_datagrams_received_total",
        "Datagrams the UDP worker received.",
        load(&u.received),
    );
    out.counter(
        "forkecho_udp_datagrams_echoed_total",
        "Answers sent (a duplicated datagram counts twice).",
        load(&u.echoed),
    );
    out.counter(
        "forkecho_udp_echoed_bytes_total",
        "Bytes of the answers sent.",
        load(&u.bytes),
    );
    out.counter(
        "forkecho_udp_worker_restarts_total",
        "Times the UDP worker was forked anew after it died.",
        restarts,
    );
    out.by_label(
        "forkecho_udp_datagrams_dropped_total",
        concat!(
            "Datagrams never answered, by reason ",
            "(the guards, --loss, a full --delay queue, a refused send)."
        ),
        "reason",
        [
            ("truncated", load(&u.truncated)),
            ("source-port", load(&u.source_port)),
            ("broadcast", load(&u.broadcast)),
            ("rate-per-ip", load(&u.rate_limited)),
            ("loop", load(&u.looping)),
            ("queue-full", load(&u.queue_full)),
            ("lost", load(&u.lost)),
            ("send-failed", load(&u.send_failed)),
        ],
    );
    out.by_label(
        "forkecho_udp_faults_total",
        "Datagrams the other datagram faults acted on.",
        "fault",
        [
            ("duplicate", load(&u.duplicated)),
            ("reorder", load(&u.reordered)),
            ("corrupt", load(&u.corrupted)),
        ],
    );
}

/// The text format, line by line.
struct Exposition(String);

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = write!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
    }

    fn sample(&mut self, name: &str, value: u64) {
        let _ = writeln!(self.0, "{name} {value}");
    }

    fn sample_f64(&mut self, name: &str, value: f64) {
        let _ = writeln!(self.0, "{name} {value}");
    }

    /// A sample with one label, whose value is one of ours (no quotes or backslashes to escape).
    fn labelled(&mut self, name: &str, label: &str, value: &str, count: u64) {
        let _ = writeln!(self.0, "{name}{{{label}=\"{value}\"}} {count}");
    }

    /// A counter family of one sample.
    fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, "counter", help);
        self.sample(name, value);
    }

    /// A counter family with one sample per value of `label`.
    fn by_label<'a>(
        &mut self,
        name: &str,
        help: &str,
        label: &str,
        samples: impl IntoIterator<Item = (&'a str, u64)>,
    ) {
        self.family(name, "counter", help);
        for (value, count) in samples {
            self.labelled(name, label, value, count);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_give_the_method_and_the_path() {
        assert_eq!(
            request_line(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(("GET", "/metrics"))
        );
        assert_eq!(
            request_line(b"GET /metrics?x=1 HTTP/1.0\n\n"),
            Some(("GET", "/metrics"))
        );
        assert_eq!(
            request_line(b"POST / HTTP/1.1\r\n\r\n"),
            Some(("POST", "/"))
        );
        assert_eq!(request_line(b"GET /metrics\r\n\r\n"), None);
        assert_eq!(request_line(b"\x16\x03\x01 tls\r\n\r\n"), None);
    }

    #[test]
    fn the_exposition_names_every_family_with_help_and_type() {
        let shared = crate::shared::map().unwrap();
        shared.tally.record(0, 0b1, Duration::from_millis(2));
        shared.bytes.fetch_add(7, Ordering::Relaxed);
        let figures = Figures {
            admitted: 3,
            refused_per_ip: 1,
            rate_limited: 2,
            proxy_errors: 4,
            fork_failures: 1,
            live: 1,
            abnormal: 1,
            ..Figures::default()
        };
        let text = exposition(&figures, shared);
        for line in [
            "forkecho_connections_accepted_total 10",
            "forkecho_connections_refused_total{reason=\"max-per-ip\"} 1",
            "forkecho_connections_refused_total{reason=\"fork-failed\"} 1",
            "forkecho_connections_closed_total{end=\"client-closed\"} 1",
            "forkecho_connections_closed_total{end=\"abnormal\"} 1",
            "forkecho_faults_total{fault=\"delay\"} 1",
            "forkecho_echoed_bytes_total 7",
            "forkecho_live_connections 1",
            "forkecho_connection_duration_seconds_bucket{le=\"0.001\"} 0",
            "forkecho_connection_duration_seconds_bucket{le=\"0.005\"} 1",
            "forkecho_connection_duration_seconds_bucket{le=\"+Inf\"} 1",
            "forkecho_connection_duration_seconds_count 1",
            "forkecho_connection_duration_seconds_sum 0.002",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from:\n{text}"
            );
        }
        let families = text.lines().filter(|l| l.starts_with("# TYPE")).count();
        let helps = text.lines().filter(|l| l.starts_with("# HELP")).count();
        assert_eq!((families, helps), (14, 14), "{text}");
    }
}
