//! The load generator: four scenarios, every response verified byte for byte.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use nix::unistd::Pid;

/// Throughput with its latency distribution.
#[derive(Clone, Copy, Debug, Default)]
pub struct Rate {
    pub per_sec: f64,
    pub p50: Duration,
    pub p99: Duration,
}

fn rate(mut samples: Vec<Duration>, elapsed: Duration) -> Rate {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    Rate {
        per_sec: samples.len() as f64 / elapsed.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
    }
}

fn connect(addr: SocketAddr) -> Result<TcpStream> {
    let stream = TcpStream::connect(addr).with_context(|| format!("connect to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Scenario 1: `threads` clients each connect, echo 32 bytes, close, as fast as they can.
pub fn connection_rate(addr: SocketAddr, threads: usize, run_for: Duration) -> Result<Rate> {
    let started = Instant::now();
    let samples = thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || -> Result<Vec<Duration>> {
                    let mut samples = Vec::new();
                    let mut msg = [0u8; 32];
                    let mut back = [0u8; 32];
                    while started.elapsed() < run_for {
                        msg[..8].copy_from_slice(&(samples.len() as u64).to_le_bytes());
                        msg[8] = t as u8;
                        let begin = Instant::now();
                        let mut stream = connect(addr)?;
                        stream.write_all(&msg)?;
                        stream.read_exact(&mut back)?;
                        ensure!(back == msg, "connection echo differs");
                        drop(stream);
                        samples.push(begin.elapsed());
                    }
                    Ok(samples)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("client thread"))
            .collect::<Result<Vec<_>>>()
    })?;
    Ok(rate(samples.concat(), started.elapsed()))
}

/// Scenario 2: one connection, 64-byte ping-pong.
pub fn round_trips(addr: SocketAddr, run_for: Duration) -> Result<Rate> {
    let mut stream = connect(addr)?;
    let mut msg = [0u8; 64];
    let mut back = [0u8; 64];
    let mut samples = Vec::new();
    let started = Instant::now();
    while started.elapsed() < run_for {
        msg[..8].copy_from_slice(&(samples.len() as u64).to_le_bytes());
        let begin = Instant::now();
        stream.write_all(&msg)?;
        stream.read_exact(&mut back)?;
        samples.push(begin.elapsed());
        ensure!(back == msg, "round trip {} differs", samples.len());
    }
    Ok(rate(samples, started.elapsed()))
}

/// What scenario 3 found.
#[derive(Clone, Copy, Debug, Default)]
pub struct Bulk {
    pub mib_per_s: f64,
    /// CPU the server spent on the transfer (its own and its reaped children's), ms per GiB.
    pub server_cpu_ms_per_gib: f64,
}

/// Scenario 3 with the server's CPU: `bulk`, then the CPU the server (and, once reaped, the
/// child that served the transfer) used, from /proc/PID/stat.
pub fn bulk_with_cpu(addr: SocketAddr, total: usize, server: Pid, forks: bool) -> Result<Bulk> {
    // A child's time reaches the parent's cutime/cstime when it is reaped: wait for the
    // children of earlier scenarios before the first reading, and for this one's after.
    let all_reaped = || {
        let deadline = Instant::now() + Duration::from_secs(10);
        while forks && !children_of(server).is_empty() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
    };
    all_reaped();
    let before = cpu_ticks(server)?;
    let mib_per_s = bulk(addr, total)?;
    all_reaped();
    let used = cpu_ticks(server)? - before;
    // SAFETY: sysconf has no preconditions.
    let ticks_per_s = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) } as f64;
    let gib = total as f64 / (1u64 << 30) as f64;
    Ok(Bulk {
        mib_per_s,
        server_cpu_ms_per_gib: used as f64 / ticks_per_s * 1e3 / gib,
    })
}

/// utime + stime + cutime + cstime of `pid`, in clock ticks.
fn cpu_ticks(pid: Pid) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .context("malformed stat")?
        .1
        .split(' ')
        .collect();
    // Fields 14-17 overall are the 12th-15th after "pid (comm) ".
    fields[11..15]
        .iter()
        .map(|f| f.parse::<u64>().context("malformed stat"))
        .sum()
}

/// Scenario 3: one connection, `total` bytes each way at once, half-close at the end. MiB/s.
fn bulk(addr: SocketAddr, total: usize) -> Result<f64> {
    let block = pattern(1 << 20);
    let stream = connect(addr)?;
    let mut writer = stream.try_clone()?;
    let started = Instant::now();
    let received = thread::scope(|scope| -> Result<usize> {
        let sender = scope.spawn(|| -> Result<()> {
            let mut sent = 0;
            while sent < total {
                let n = (total - sent).min(block.len());
                writer.write_all(&block[..n])?;
                sent += n;
            }
            writer.shutdown(Shutdown::Write)?;
            Ok(())
        });
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = 0usize;
        let mut reader = &stream;
        loop {
            let n = reader.read(&mut buf)?;
            if n == 0 {
                break;
            }
            // The data is the block repeated: compare each piece with where it falls in it.
            let mut checked = 0;
            while checked < n {
                let at = (got + checked) % block.len();
                let len = (n - checked).min(block.len() - at);
                ensure!(
                    buf[checked..checked + len] == block[at..at + len],
                    "bulk echo differs near byte {}",
                    got + checked
                );
                checked += len;
            }
            got += n;
        }
        sender.join().expect("sender thread")?;
        Ok(got)
    })?;
    ensure!(
        received == total,
        "bulk echo returned {received} of {total} bytes"
    );
    Ok(total as f64 / (1 << 20) as f64 / started.elapsed().as_secs_f64())
}

/// What scenario 4 found.
#[derive(Clone, Copy, Debug, Default)]
pub struct Crowd {
    /// From the first connect until every client had its first echo back.
    pub setup: Duration,
    /// Unique memory per connection, KiB: the median child's USS for forking servers, the
    /// process's USS growth divided by the clients for the threaded one.
    pub per_connection_kib: f64,
    /// The serving process's (the parent's) proportional set size, KiB.
    pub parent_pss_kib: f64,
    pub children: usize,
}

/// Scenario 4: `clients` connections open at once, each echoing twice.
pub fn crowd(addr: SocketAddr, clients: usize, server: Pid, forks: bool) -> Result<Crowd> {
    let idle_uss = smaps_rollup(server)?.uss_kib();
    let started = Instant::now();
    let mut streams = Vec::with_capacity(clients);
    for _ in 0..clients {
        streams.push(connect(addr)?);
    }
    for (i, stream) in streams.iter_mut().enumerate() {
        stream.write_all(&(i as u64).to_le_bytes())?;
    }
    let mut back = [0u8; 8];
    for (i, stream) in streams.iter_mut().enumerate() {
        stream.read_exact(&mut back)?;
        ensure!(
            back == (i as u64).to_le_bytes(),
            "client {i}'s first echo differs"
        );
    }
    let setup = started.elapsed();

    let parent = smaps_rollup(server)?;
    let (per_connection_kib, children) = if forks {
        let pids = children_of(server);
        let mut uss: Vec<f64> = pids
            .iter()
            .filter_map(|&pid| smaps_rollup(pid).ok())
            .map(|m| m.uss_kib())
            .collect();
        uss.sort_by(f64::total_cmp);
        ensure!(!uss.is_empty(), "no children found under pid {server}");
        (uss[uss.len() / 2], pids.len())
    } else {
        ((parent.uss_kib() - idle_uss) / clients as f64, 0)
    };

    for (i, stream) in streams.iter_mut().enumerate() {
        let msg = (u64::MAX - i as u64).to_le_bytes();
        stream.write_all(&msg)?;
        stream.read_exact(&mut back)?;
        ensure!(back == msg, "client {i}'s second echo differs");
    }
    Ok(Crowd {
        setup,
        per_connection_kib,
        parent_pss_kib: parent.pss_kib,
        children,
    })
}

/// Memory totals from /proc/PID/smaps_rollup, KiB.
pub struct Rollup {
    pub pss_kib: f64,
    private_kib: f64,
}

impl Rollup {
    /// Unique set size: the pages only this process maps.
    pub fn uss_kib(&self) -> f64 {
        self.private_kib
    }
}

pub fn smaps_rollup(pid: Pid) -> Result<Rollup> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .with_context(|| format!("read /proc/{pid}/smaps_rollup"))?;
    let field = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .unwrap_or(0.0)
    };
    Ok(Rollup {
        pss_kib: field("Pss:"),
        private_kib: field("Private_Clean:") + field("Private_Dirty:") + field("Private_Hugetlb:"),
    })
}

/// Child pids of `parent`, from /proc/*/stat.
pub fn children_of(parent: Pid) -> Vec<Pid> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(") ")?
                        .1
                        .split(' ')
                        .nth(1)?
                        .parse::<i32>()
                        .ok()
                })
                == Some(parent.as_raw())
        })
        .map(Pid::from_raw)
        .collect()
}

/// Deterministic pseudo-random bytes (xorshift).
fn pattern(len: usize) -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}
