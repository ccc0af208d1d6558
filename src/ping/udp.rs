//! `forkecho ping --udp HOST:PORT`: the probes as datagrams, for a UDP echo server.
//!
//! Each probe carries its sequence number and a checksum over the rest (FNV-1a), inside the same
//! per-probe payload the TCP probes use, so every answer is told apart: intact (its number, its
//! time), corrupt (the checksum or the payload does not match), a duplicate (a number seen
//! already), or reordered (a number lower than one already answered). Probes with no intact
//! answer by the end are lost. Probes go out every `--interval` whatever comes back; after the
//! last, answers are awaited for `--timeout`. The exit status is ping's: 0 when every probe came
//! back intact (duplicates and reordering are reported, not failures), 1 otherwise.

use std::collections::HashSet;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use super::interrupt::interrupted;
use super::probe::payload;
use super::report::{Report, USAGE};
use crate::address::Addr;
use crate::cli::PingOptions;

/// The sequence number and the checksum come first.
pub const HEADER: usize = 16;

/// A probe: the payload of `seq`, its first 8 bytes the number, the next 8 the checksum.
pub fn probe(seq: u64, size: usize) -> Vec<u8> {
    let mut data = payload(seq, size.max(HEADER));
    data[..8].copy_from_slice(&seq.to_be_bytes());
    let sum = checksum(&data);
    data[8..16].copy_from_slice(&sum.to_be_bytes());
    data
}

/// FNV-1a over everything but the checksum's own bytes.
fn checksum(data: &[u8]) -> u64 {
    data[..8]
        .iter()
        .chain(&data[HEADER..])
        .fold(0xCBF2_9CE4_8422_2325, |hash, &byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01B3)
        })
}

/// What an answer is.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    Intact(u64),
    Corrupt,
}

/// Reads an answer to probes of `size` bytes, numbered 1 to `sent`.
pub fn read(data: &[u8], size: usize, sent: u64) -> Answer {
    if data.len() != size.max(HEADER) {
        return Answer::Corrupt;
    }
    let seq = u64::from_be_bytes(data[..8].try_into().expect("eight bytes"));
    let sum = u64::from_be_bytes(data[8..16].try_into().expect("eight bytes"));
    match (1..=sent).contains(&seq) && sum == checksum(data) && data == probe(seq, size) {
        true => Answer::Intact(seq),
        false => Answer::Corrupt,
    }
}

/// Runs the probes against `addrs` (the first of them) and returns the exit status.
///
/// Long on purpose: one loop that reads like ping(8)'s, sending, reading and reporting in
/// the order they happen.
pub fn run(options: &PingOptions, addrs: &[Addr], say: &mut dyn FnMut(&str)) -> u8 {
    let Some(Addr::Ip(to)) = addrs.first().cloned() else {
        crate::log::logln!("ping: --udp needs HOST:PORT, not a Unix socket");
        return USAGE;
    };
    let socket = match open(to) {
        Ok(socket) => socket,
        Err(err) => {
            crate::log::logln!("ping: unable to open a UDP socket for {to}: {err}");
            return USAGE;
        }
    };
    let lines = !options.quiet && !options.json;
    let size = options.size.max(HEADER);
    if !options.json {
        say(&format!(
            "PING {} ({to}) udp: {size} bytes per probe",
            options.target
        ));
    }
    let mut report = Report::new(&options.target, size, false);
    report.udp = true;
    report.address = Some(Addr::Ip(to));
    let started = Instant::now();
    let mut sent_at: Vec<Instant> = Vec::new();
    let mut answered: HashSet<u64> = HashSet::new();
    let mut highest = 0;
    let mut buf = vec![0u8; 65_536];
    let mut seq = 0u64;
    // When every probe sent had its answer, with none left to send.
    let mut all_in: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let more = options.count.is_none_or(|count| seq < count);
        let next_send = more.then(|| match (options.interval.is_zero(), sent_at.last()) {
            // -i 0: the next probe once the last one's answer is in, or its time is up.
            (true, Some(&last)) if !answered.contains(&seq) => last + options.timeout,
            _ => started + options.interval * seq as u32,
        });
        let last_sent = sent_at.last().copied();
        let give_up = match (next_send, last_sent) {
            (Some(at), _) => at,
            // Every answer is in: a moment more for a duplicate (twice the slowest round trip,
            // 10 ms at least), not the whole --timeout.
            (None, Some(_)) if answered.len() as u64 == report.sent => {
                let linger = (report.rtt.max() * 2).max(Duration::from_millis(10));
                *all_in.get_or_insert(now) + linger.min(options.timeout)
            }
            (None, Some(last)) => last + options.timeout,
            (None, None) => break,
        };
        if interrupted() {
            break;
        }
        if now >= give_up {
            if next_send.is_none() {
                break;
            }
            seq += 1;
            let datagram = probe(seq, size);
            sent_at.push(Instant::now());
            let _ = socket.send(&datagram);
            report.sent += 1;
            continue;
        }
        // Wait for an answer until the next thing to do.
        let _ = socket.set_read_timeout(Some((give_up - now).max(Duration::from_millis(1))));
        let n = match socket.recv(&mut buf) {
            Ok(n) => n,
            Err(err) if is_timeout(&err) || err.kind() == io::ErrorKind::Interrupted => continue,
            // An ICMP port unreachable for an earlier probe: nobody there (yet).
            Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => continue,
            Err(err) => {
                crate::log::logln!("ping: receive failed: {err}");
                break;
            }
        };
        let line = match read(&buf[..n], size, seq) {
            Answer::Corrupt => {
                report.corrupt += 1;
                format!("From {to}: corrupt datagram of {n} bytes (no intact probe matches)")
            }
            Answer::Intact(got) if !answered.insert(got) => {
                report.duplicates += 1;
                format!("From {to}: seq={got} DUP!")
            }
            Answer::Intact(got) => {
                let rtt = sent_at[got as usize - 1].elapsed();
                report.echoed += 1;
                report.rtt.add(rtt);
                let late = got < highest;
                highest = highest.max(got);
                let mut line = format!(
                    "{n} bytes from {to}: seq={got} time={:.3} ms",
                    rtt.as_secs_f64() * 1e3
                );
                if late {
                    report.reordered += 1;
                    line.push_str(" (reordered)");
                }
                line
            }
        };
        if lines {
            say(&line);
        }
    }
    // Each corrupt answer stands for one probe with no intact answer, as far as they go.
    let unanswered = report.sent - report.echoed;
    report.corrupt = report.corrupt.min(unanswered);
    report.lost = unanswered - report.corrupt;
    let elapsed = started.elapsed();
    match options.json {
        true => say(&report.json(elapsed)),
        false => say(&format!("\n{}", report.summary(elapsed))),
    }
    report.exit_status()
}

fn open(to: SocketAddr) -> io::Result<UdpSocket> {
    let local: SocketAddr = match to {
        SocketAddr::V4(_) => "0.0.0.0:0".parse().expect("an address"),
        SocketAddr::V6(_) => "[::]:0".parse().expect("an address"),
    };
    let socket = UdpSocket::bind(local)?;
    // Connected: answers from any other address are not ours, and port unreachable is seen.
    socket.connect(to)?;
    Ok(socket)
}

fn is_timeout(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_reads_back_as_itself_and_any_flipped_byte_as_corrupt() {
        let data = probe(5, 56);
        assert_eq!(data.len(), 56);
        assert_eq!(read(&data, 56, 9), Answer::Intact(5));
        assert_eq!(read(&data, 56, 4), Answer::Corrupt, "never sent");
        for at in 0..data.len() {
            let mut bad = data.clone();
            bad[at] ^= 0xFF;
            assert_eq!(read(&bad, 56, 9), Answer::Corrupt, "byte {at}");
        }
        assert_eq!(read(&data[..55], 56, 9), Answer::Corrupt, "short");
        assert_eq!(probe(1, 4).len(), HEADER, "never shorter than its header");
    }
}
