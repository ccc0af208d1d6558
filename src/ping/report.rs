//! What `forkecho ping` prints: a line per probe, and ping(8)'s summary at the end, as text or
//! as one JSON object.

use std::fmt::{self, Write as _};
use std::time::Duration;

use super::failure::Failure;
use crate::address::Addr;

/// The exit status for usage and name-resolution errors.
pub const USAGE: u8 = 2;

/// Running min/avg/max/mdev of a series of times, in milliseconds (mdev as ping computes it:
/// the standard deviation, sqrt(mean(x²) − mean(x)²)).
#[derive(Debug, Default, Clone, Copy)]
pub struct Times {
    count: u64,
    sum: f64,
    squares: f64,
    min: f64,
    max: f64,
}

impl Times {
    pub fn add(&mut self, time: Duration) {
        let ms = time.as_secs_f64() * 1e3;
        if self.count == 0 || ms < self.min {
            self.min = ms;
        }
        self.max = self.max.max(ms);
        self.count += 1;
        self.sum += ms;
        self.squares += ms * ms;
    }

    /// The longest time so far (zero with no sample).
    pub fn max(&self) -> Duration {
        Duration::from_secs_f64(self.max / 1e3)
    }

    /// (min, avg, max, mdev), or None with no sample.
    pub fn summary(&self) -> Option<(f64, f64, f64, f64)> {
        if self.count == 0 {
            return None;
        }
        let avg = self.sum / self.count as f64;
        let mdev = (self.squares / self.count as f64 - avg * avg)
            .max(0.0)
            .sqrt();
        Some((self.min, avg, self.max, mdev))
    }
}

/// The counts and times of a run.
#[derive(Debug)]
pub struct Report {
    pub target: String,
    pub address: Option<Addr>,
    pub size: usize,
    pub sent: u64,
    pub echoed: u64,
    pub corrupt: u64,
    pub lost: u64,
    /// Probes whose echo was followed by bytes never sent (counted in `corrupt` too).
    pub surplus: u64,
    pub rtt: Times,
    /// With `--connect`: the connect times.
    pub connect: Option<Times>,
    /// With `--tls`: the handshakes' times.
    pub tls: bool,
    pub handshake: Times,
    /// With `--udp`: the probes are datagrams, which can also come back twice or out of order.
    pub udp: bool,
    pub duplicates: u64,
    pub reordered: u64,
}

impl Report {
    pub fn new(target: &str, size: usize, connect: bool) -> Report {
        Report {
            target: target.to_string(),
            address: None,
            size,
            sent: 0,
            echoed: 0,
            corrupt: 0,
            lost: 0,
            surplus: 0,
            rtt: Times::default(),
            connect: connect.then(Times::default),
            tls: false,
            handshake: Times::default(),
            udp: false,
            duplicates: 0,
            reordered: 0,
        }
    }

    /// Counts an intact echo and returns its line.
    /// `connect` is how long connecting took (reported with `--connect` only), `handshake` how
    /// long the TLS handshake took on a new connection.
    pub fn echoed(
        &mut self,
        seq: u64,
        from: &Addr,
        connect: Duration,
        handshake: Option<Duration>,
        rtt: Duration,
    ) -> String {
        self.sent += 1;
        self.echoed += 1;
        self.rtt.add(rtt);
        let mut line = format!("{} bytes from {from}: seq={seq}", self.size);
        if let Some(times) = &mut self.connect {
            times.add(connect);
            let _ = write!(line, " connect={:.3} ms", ms(connect));
        }
        if let Some(handshake) = handshake {
            self.handshake.add(handshake);
            let _ = write!(line, " handshake={:.3} ms", ms(handshake));
        }
        let _ = write!(line, " time={:.3} ms", ms(rtt));
        line
    }

    /// Counts a failed probe (corrupt or lost) and returns its line.
    pub fn failed(&mut self, seq: u64, from: Option<&Addr>, failure: &Failure) -> String {
        self.sent += 1;
        if let Failure::Surplus { .. } = failure {
            self.surplus += 1;
        }
        match failure.is_corrupt() {
            true => self.corrupt += 1,
            false => self.lost += 1,
        }
        match from {
            Some(from) => format!("From {from}: seq={seq} {failure}"),
            None => format!("From {}: seq={seq} {failure}", self.target),
        }
    }

    /// Probe `seq`, counted as echoed, turns out to have been followed by `bytes` more: it
    /// counts as corrupt instead, and gets a second line (as ping's `DUP!` comes after the reply).
    pub fn surplus_after(&mut self, seq: u64, from: &Addr, bytes: usize) -> String {
        if self.echoed > 0 {
            self.echoed -= 1;
            self.corrupt += 1;
            self.surplus += 1;
        }
        format!("From {from}: seq={seq} {}", Failure::Surplus { bytes })
    }

    /// The share of probes that got no intact echo, in percent.
    pub fn loss_percent(&self) -> f64 {
        match self.sent {
            0 => 0.0,
            sent => (self.corrupt + self.lost) as f64 * 100.0 / sent as f64,
        }
    }

    /// 0 if every probe came back intact (and there was one), 1 otherwise (`USAGE` for usage
    /// and name-resolution errors).
    pub fn exit_status(&self) -> u8 {
        match self.sent > 0 && self.echoed == self.sent {
            true => 0,
            false => 1,
        }
    }

    /// ping's summary: a title, the counts, and the times.
    pub fn summary(&self, elapsed: Duration) -> String {
        let mut text = format!(
            concat!(
                "--- {} forkecho ping statistics ---\n",
                "{} sent, {} echoed, {} corrupt, {} lost, {}% lost/corrupt, time {}ms"
            ),
            self.target,
            self.sent,
            self.echoed,
            self.corrupt,
            self.lost,
            Percent(self.loss_percent()),
            elapsed.as_millis()
        );
        if self.udp {
            let _ = write!(
                text,
                "\n{} duplicates, {} reordered",
                self.duplicates, self.reordered
            );
        }
        if let Some((min, avg, max, mdev)) = self.rtt.summary() {
            let _ = write!(
                text,
                "\nrtt min/avg/max/mdev = {min:.3}/{avg:.3}/{max:.3}/{mdev:.3} ms"
            );
        }
        if let Some((min, avg, max, mdev)) = self.connect.and_then(|t| t.summary()) {
            let _ = write!(
                text,
                "\nconnect min/avg/max/mdev = {min:.3}/{avg:.3}/{max:.3}/{mdev:.3} ms"
            );
        }
        if let Some((min, avg, max, mdev)) = self.handshake.summary() {
            let _ = write!(
                text,
                "\nhandshake min/avg/max/mdev = {min:.3}/{avg:.3}/{max:.3}/{mdev:.3} ms"
            );
        }
        text
    }

    /// The summary as one JSON object (times in milliseconds; null where there was no sample).
    pub fn json(&self, elapsed: Duration) -> String {
        let mut object = serde_json::json!({
            "target": self.target,
            "address": self.address.as_ref().map(|addr| addr.to_string()),
            "size": self.size,
            "sent": self.sent,
            "echoed": self.echoed,
            "corrupt": self.corrupt,
            "surplus": self.surplus,
            "lost": self.lost,
            "loss_percent": rounded(self.loss_percent()),
            "time_ms": elapsed.as_millis() as u64,
            "rtt_ms": json_times(Some(self.rtt)),
            "connect_ms": json_times(self.connect),
        });
        if self.tls {
            object["handshake_ms"] = json_times(Some(self.handshake));
        }
        if self.udp {
            object["duplicates"] = self.duplicates.into();
            object["reordered"] = self.reordered.into();
        }
        object.to_string()
    }
}

/// A figure to three decimals, as ping prints them; a whole one as an integer.
fn rounded(value: f64) -> serde_json::Value {
    let value = (value * 1e3).round() / 1e3;
    match value.fract() == 0.0 && value.abs() < 1e15 {
        true => (value as i64).into(),
        false => value.into(),
    }
}

fn ms(time: Duration) -> f64 {
    time.as_secs_f64() * 1e3
}

fn json_times(times: Option<Times>) -> serde_json::Value {
    match times.and_then(|t| t.summary()) {
        Some((min, avg, max, mdev)) => serde_json::json!({
            "min": rounded(min),
            "avg": rounded(avg),
            "max": rounded(max),
            "mdev": rounded(mdev),
        }),
        None => serde_json::Value::Null,
    }
}

/// A percentage as ping prints it: whole numbers without decimals, others with up to three.
struct Percent(f64);

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = format!("{:.3}", self.0);
        f.write_str(text.trim_end_matches('0').trim_end_matches('.'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_summarise_as_ping_does() {
        let mut times = Times::default();
        assert!(times.summary().is_none());
        for ms in [1, 2, 3] {
            times.add(Duration::from_millis(ms));
        }
        let (min, avg, max, mdev) = times.summary().unwrap();
        assert_eq!((min, avg, max), (1.0, 2.0, 3.0));
        assert!((mdev - (2.0f64 / 3.0).sqrt()).abs() < 1e-9);
    }

    #[test]
    fn the_summary_counts_corrupt_apart_from_lost() {
        let mut report = Report::new("h:7", 56, false);
        let addr = Addr::Ip("127.0.0.1:7".parse().unwrap());
        report.echoed(1, &addr, Duration::ZERO, None, Duration::from_micros(500));
        report.failed(2, Some(&addr), &Failure::Truncated { received: 3 });
        report.failed(3, None, &Failure::Timeout { received: 0 });
        assert_eq!(
            (report.sent, report.echoed, report.corrupt, report.lost),
            (3, 1, 1, 1)
        );
        assert_eq!(report.exit_status(), 1);
        let summary = report.summary(Duration::from_millis(2000));
        assert!(
            summary.contains("3 sent, 1 echoed, 1 corrupt, 1 lost, 66.667% lost/corrupt"),
            "{summary}"
        );
        assert!(summary.contains("rtt min/avg/max/mdev = 0.500/0.500/0.500/0.000 ms"));
    }

    #[test]
    fn json_is_one_object_with_nulls_for_missing_times() {
        let mut report = Report::new("a\"b", 8, true);
        report.failed(1, None, &Failure::Timeout { received: 0 });
        let json: serde_json::Value =
            serde_json::from_str(&report.json(Duration::from_millis(5))).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "target": "a\"b", "address": null, "size": 8, "sent": 1, "echoed": 0,
                "corrupt": 0, "surplus": 0, "lost": 1, "loss_percent": 100, "time_ms": 5,
                "rtt_ms": null, "connect_ms": null
            })
        );
    }
}
