//! The UDP scenarios: datagrams echoed per second and the server's CPU per datagram, for
//! `forkecho --udp-only -q` (guards on), against the floor (a plain C recvfrom/sendto loop on one
//! socket, linked statically: `benches/baselines/udp_server.c`) and `socat UDP-RECVFROM:…,fork
//! PIPE` when socat is installed. Three loads, each verified datagram by datagram: 4 clients of
//! 64 bytes with one datagram in flight each, the same with 1 400 bytes, and one windowed client
//! keeping 32 datagrams of 64 bytes in flight. A datagram not back within 100 ms counts as lost
//! and is sent anew. The server's CPU is its whole tree's (the forkecho worker is a live child;
//! socat's children are reaped), from /proc, before and after each load.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::unistd::Pid;

use super::load;

/// The UDP servers compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum UdpKind {
    Floor,
    Forkecho,
    Socat,
}

impl UdpKind {
    pub fn name(self) -> &'static str {
        match self {
            UdpKind::Floor => "C recvfrom/sendto, static (the floor)",
            UdpKind::Forkecho => "forkecho --udp-only -q",
            UdpKind::Socat => "socat UDP-RECVFROM fork",
        }
    }
}

/// The loads, in the order of the table's columns.
const LOADS: [(&str, usize, usize, usize); 3] = [
    ("4 clients × 64 B", 4, 64, 1),
    ("4 clients × 1400 B", 4, 1400, 1),
    ("1 client, 32 in flight × 64 B", 1, 64, 32),
];

/// One server's figures in one round: per load, datagrams/s and server CPU µs per datagram.
pub type UdpSample = [(f64, f64); 3];

fn start(kind: UdpKind, floor: &Path, forkecho: &Path) -> Result<load::Running> {
    let command = match kind {
        UdpKind::Floor => {
            let mut c = Command::new(floor);
            c.arg("0");
            c
        }
        UdpKind::Forkecho => {
            let mut c = Command::new(forkecho);
            c.args(["--udp-only", "-q", "-b", "127.0.0.1", "-p", "0"]);
            c
        }
        UdpKind::Socat => {
            let port = UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
            let mut c = Command::new("socat");
            c.args([&format!("UDP-RECVFROM:{port},bind=127.0.0.1,fork"), "PIPE"]);
            let process = c
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("start socat")?;
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            // socat binds at once; a probe answered says it is there.
            let running = load::Running { process, addr };
            wait_answered(addr)?;
            return Ok(running);
        }
    };
    load::start_announced(command, kind.name())
}

fn wait_answered(addr: SocketAddr) -> Result<()> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.set_read_timeout(Some(Duration::from_millis(50)))?;
    socket.connect(addr)?;
    let mut buf = [0u8; 8];
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        // Before socat binds, the port is unreachable, and the next call says so at once.
        let _ = socket.send(b"probe");
        if socket.recv(&mut buf).is_ok() {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(10));
    }
    anyhow::bail!("nothing answered on udp {addr}")
}

/// Echoes datagrams of `size` with `clients` threads, `window` in flight each, for `run_for`:
/// how many came back intact. Each datagram carries its sequence number in its first 8 bytes,
/// as every load generator's does (forkecho's loop guard limits a client that sends the same
/// bytes again and again in lockstep with the answers: `child/udp/loops.rs`).
fn echo_load(to: SocketAddr, clients: usize, size: usize, window: usize, run_for: Duration) -> u64 {
    let deadline = Instant::now() + run_for;
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            thread::spawn(move || -> u64 {
                let socket = UdpSocket::bind("127.0.0.1:0").expect("a client socket");
                socket.connect(to).expect("connect");
                socket
                    .set_read_timeout(Some(Duration::from_millis(100)))
                    .expect("a timeout");
                let mut data: Vec<u8> = (0..size).map(|i| (i * 31 + c * 7) as u8).collect();
                let mut buf = vec![0u8; size + 1];
                let mut echoed = 0;
                let mut seq = 0u64;
                let mut send = |data: &mut Vec<u8>| {
                    seq += 1;
                    data[..8].copy_from_slice(&seq.to_le_bytes());
                    let _ = socket.send(data);
                };
                for _ in 0..window {
                    send(&mut data);
                }
                while Instant::now() < deadline {
                    match socket.recv(&mut buf) {
                        Ok(n) if n == size && buf[8..n] == data[8..] => echoed += 1,
                        Ok(_) => {}
                        // Lost: send another in its place.
                        Err(_) => {}
                    }
                    send(&mut data);
                }
                echoed
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap_or(0)).sum()
}

/// One round over every server, in `order`.
pub fn round(
    order: &[UdpKind],
    floor: &Path,
    forkecho: &Path,
    run_for: Duration,
) -> Result<Vec<(UdpKind, UdpSample)>> {
    let mut out = Vec::new();
    for &kind in order {
        eprintln!("udp: {}", kind.name());
        let server = start(kind, floor, forkecho)?;
        let pid = Pid::from_raw(server.process.id() as i32);
        let mut sample: UdpSample = [(0.0, 0.0); 3];
        for (i, &(_, clients, size, window)) in LOADS.iter().enumerate() {
            let before = load::tree_cpu(pid);
            let started = Instant::now();
            let echoed = echo_load(server.addr, clients, size, window, run_for);
            let elapsed = started.elapsed().as_secs_f64();
            load::settle(pid, kind == UdpKind::Socat);
            let cpu = load::tree_cpu(pid).saturating_sub(before).as_secs_f64() * 1e6;
            sample[i] = (echoed as f64 / elapsed, cpu / echoed.max(1) as f64);
        }
        out.push((kind, sample));
    }
    Ok(out)
}

/// The UDP tables: medians, and the medians of the per-round ratios to the floor.
pub fn markdown(kinds: &[UdpKind], samples: &BTreeMap<UdpKind, Vec<UdpSample>>) -> String {
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut out =
        String::from("\nUDP echo (datagrams/s, server CPU µs per datagram):\n\n| server |");
    for (name, ..) in LOADS {
        let _ = write!(out, " {name} /s | CPU µs |");
    }
    out.push_str("\n|---|");
    out.push_str(&"---:|---:|".repeat(LOADS.len()));
    out.push('\n');
    for kind in kinds {
        let Some(rounds) = samples.get(kind) else {
            continue;
        };
        let _ = write!(out, "| {} |", kind.name());
        for i in 0..LOADS.len() {
            let rate = median(rounds.iter().map(|s| s[i].0).collect());
            let cpu = median(rounds.iter().map(|s| s[i].1).collect());
            let _ = write!(out, " {rate:.0} | {cpu:.1} |");
        }
        out.push('\n');
    }
    let Some(floor) = samples.get(&UdpKind::Floor) else {
        return out;
    };
    out.push_str("\nRatios to the floor (median of per-round ratios; CPU: lower is better):\n\n");
    out.push_str("| server |");
    for (name, ..) in LOADS {
        let _ = write!(out, " {name} /s | CPU |");
    }
    out.push_str("\n|---|");
    out.push_str(&"---:|---:|".repeat(LOADS.len()));
    out.push('\n');
    let mut forkecho_ratios = Vec::new();
    for kind in kinds.iter().filter(|&&k| k != UdpKind::Floor) {
        let Some(rounds) = samples.get(kind) else {
            continue;
        };
        let _ = write!(out, "| {} |", kind.name());
        for i in 0..LOADS.len() {
            let ratio = |f: fn(&(f64, f64)) -> f64| {
                median(
                    rounds
                        .iter()
                        .zip(floor)
                        .map(|(s, b)| f(&s[i]) / f(&b[i]).max(1e-9))
                        .collect(),
                )
            };
            let (rate, cpu) = (ratio(|s| s.0), ratio(|s| s.1));
            let _ = write!(out, " {rate:.2} | {cpu:.2} |");
            if *kind == UdpKind::Forkecho {
                forkecho_ratios.push((LOADS[i].0, rate, cpu));
            }
        }
        out.push('\n');
    }
    out.push_str("\nUDP targets (forkecho --udp-only, guards on, against the floor):\n\n");
    for (name, rate, cpu) in forkecho_ratios {
        let _ = writeln!(
            out,
            "- {name}: datagrams/s {rate:.2} (target >= 1.00), CPU per datagram {cpu:.2} \
             (target <= 1.00)"
        );
    }
    out
}
