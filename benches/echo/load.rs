//! The load generator: five scenarios, every response verified byte for byte, and the server's
//! own CPU time around them.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use nix::unistd::Pid;

use crate::{fixture, procfs};

/// Throughput with its latency distribution.
#[derive(Clone, Copy, Debug, Default)]
pub struct Rate {
    pub per_sec: f64,
    pub p50: Duration,
    pub p99: Duration,
    /// How many (connections, round trips) were made.
    pub count: usize,
}

fn rate(mut samples: Vec<Duration>, elapsed: Duration) -> Rate {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    Rate {
        per_sec: samples.len() as f64 / elapsed.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
        count: samples.len(),
    }
}

/// The server's CPU time so far: the process's own (every thread's) and its reaped children's,
/// from /proc/PID/stat. The load generator's CPU is not in it, whatever it costs.
pub fn server_cpu(server: Pid) -> Duration {
    procfs::cpu(server.as_raw()).map_or(Duration::ZERO, |(own, reaped)| own + reaped)
}

/// Waits (up to 5 s) until a forking server has reaped every child, so their CPU time is in
/// `server_cpu`.
pub fn settle(server: Pid, forks: bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while forks && !children_of(server).is_empty() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
}

/// A server the UDP and TLS rounds started, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Running {
    pub process: std::process::Child,
    pub addr: SocketAddr,
}

impl Drop for Running {
    fn drop(&mut self) {
        fixture::stop(&mut self.process, Duration::from_secs(10));
    }
}

/// The CPU time of `root` and every process below it, live or reaped: a server whose children
/// stay (the UDP worker) or are someone else's (ncat's cats).
pub fn tree_cpu(root: Pid) -> Duration {
    let own = procfs::cpu(root.as_raw()).map_or(Duration::ZERO, |(own, reaped)| own + reaped);
    own + children_of(root)
        .into_iter()
        .map(tree_cpu)
        .sum::<Duration>()
}

/// Where the load goes: the server's address, and what every connection sends first (a PROXY
/// protocol header for `forkecho --proxy-protocol`, nothing for the others).
#[derive(Clone, Copy, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    pub prelude: &'static [u8],
}

fn connect(to: Target) -> Result<TcpStream> {
    let addr = to.addr;
    let mut stream = TcpStream::connect(addr).with_context(|| format!("connect to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    stream.set_nodelay(true)?;
    if !to.prelude.is_empty() {
        stream.write_all(to.prelude)?;
    }
    Ok(stream)
}

/// Scenario 1: `threads` clients each connect, echo 32 bytes, close, as fast as they can.
pub fn connection_rate(addr: Target, threads: usize, run_for: Duration) -> Result<Rate> {
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

/// Scenario 1 (or a step of the concurrency curve) with the server's CPU around it: the rate,
/// and the server's CPU time per connection in µs, read once every child of the scenario is
/// reaped.
pub fn rate_with_cpu(
    to: Target,
    server: Pid,
    forks: bool,
    threads: usize,
    run_for: Duration,
) -> Result<(Rate, f64)> {
    let before = server_cpu(server);
    let rate = connection_rate(to, threads, run_for)?;
    settle(server, forks);
    let cpu = server_cpu(server).saturating_sub(before);
    Ok((rate, cpu.as_secs_f64() * 1e6 / rate.count.max(1) as f64))
}

/// Scenario 2: one connection, 64-byte ping-pong.
pub fn round_trips(addr: Target, run_for: Duration) -> Result<Rate> {
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

/// Scenario 3 with the server's CPU time for it: the child serving the transfer, from its
/// /proc/PID/schedstat (nanoseconds) while it waits for the half-close; or the threaded
/// server's process time.
pub fn bulk_with_cpu(addr: Target, total: usize, server: Pid, forks: bool) -> Result<Bulk> {
    // Earlier scenarios' children must be gone so the serving child is the only one.
    let deadline = Instant::now() + Duration::from_secs(10);
    while forks && !children_of(server).is_empty() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    let before = if forks { 0 } else { process_cpu_ns(server) };
    let measure = || -> Result<u64> {
        if !forks {
            return Ok(process_cpu_ns(server).saturating_sub(before));
        }
        let child = *children_of(server)
            .first()
            .context("no child serving the transfer")?;
        schedstat_ns(&format!("/proc/{child}/schedstat"))
    };
    let (mib_per_s, cpu_ns) = bulk(addr, total, measure)?;
    let gib = total as f64 / (1u64 << 30) as f64;
    Ok(Bulk {
        mib_per_s,
        server_cpu_ms_per_gib: cpu_ns as f64 / 1e6 / gib,
    })
}

/// Nanoseconds on CPU, the first field of a schedstat file.
fn schedstat_ns(path: &str) -> Result<u64> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {path}"))?;
    text.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("malformed {path}"))
}

/// Nanoseconds on CPU of process `pid`, all its threads, exited ones included: utime + stime
/// from /proc/PID/stat (clock-tick resolution; per-thread schedstat loses exited threads).
fn process_cpu_ns(pid: Pid) -> u64 {
    procfs::cpu(pid.as_raw()).map_or(0, |(own, _)| own.as_nanos() as u64)
}

/// Scenario 3: one connection, `total` bytes each way at once, half-close at the end. Returns
/// MiB/s and what `measure` returned once every byte had come back, just before the half-close.
fn bulk(addr: Target, total: usize, measure: impl Fn() -> Result<u64>) -> Result<(f64, u64)> {
    let block = crate::payload::pattern(1, 1 << 20);
    let stream = connect(addr)?;
    let mut writer = stream.try_clone()?;
    let started = Instant::now();
    let received = thread::scope(|scope| -> Result<(usize, Option<u64>)> {
        let sender = scope.spawn(|| -> Result<()> {
            let mut sent = 0;
            while sent < total {
                let n = (total - sent).min(block.len());
                writer.write_all(&block[..n])?;
                sent += n;
            }
            Ok(())
        });
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = 0usize;
        let mut reader = &stream;
        let mut measured = None;
        loop {
            if got == total && measured.is_none() {
                // Everything came back and the server is waiting for more: measure it now,
                // then half-close; the server must answer with EOF.
                measured = Some(measure()?);
                stream.shutdown(Shutdown::Write)?;
            }
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
        Ok((got, measured))
    })?;
    let (received, measured) = received;
    ensure!(
        received == total,
        "bulk echo returned {received} of {total} bytes"
    );
    let measured = measured.context("the echo ended before all bytes came back")?;
    let mib_per_s = total as f64 / (1 << 20) as f64 / started.elapsed().as_secs_f64();
    Ok((mib_per_s, measured))
}

/// What scenario 5 found: from the instant every client started connecting to each one's first
/// echo.
#[derive(Clone, Copy, Debug, Default)]
pub struct Burst {
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

/// Scenario 5: `clients` connections started at the same instant (non-blocking connects, one
/// after the other, then one poll loop), each sending 32 bytes as soon as it is connected; the
/// time until each one's echo is complete. What a test suite that opens many connections at once
/// sees.
pub fn burst(to: Target, clients: usize) -> Result<Burst> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use socket2::{Domain, Socket, Type};
    use std::os::fd::AsFd;

    struct Client {
        socket: Socket,
        /// Bytes of the message (prelude included) sent, and echo bytes received.
        sent: usize,
        received: usize,
        done: Option<Duration>,
    }
    let message = |i: usize| -> [u8; 32] {
        let mut msg = [0u8; 32];
        msg[..8].copy_from_slice(&(i as u64).to_le_bytes());
        msg[8..16].copy_from_slice(&(!(i as u64)).to_le_bytes());
        msg
    };
    let mut all = Vec::with_capacity(clients);
    for _ in 0..clients {
        let socket = Socket::new(Domain::for_address(to.addr), Type::STREAM, None)?;
        socket.set_nonblocking(true)?;
        socket.set_tcp_nodelay(true)?;
        all.push(Client {
            socket,
            sent: 0,
            received: 0,
            done: None,
        });
    }
    let started = Instant::now();
    for client in &all {
        match client.socket.connect(&to.addr.into()) {
            Ok(()) => {}
            Err(err) if err.raw_os_error() == Some(nix::libc::EINPROGRESS) => {}
            Err(err) => return Err(err).context("burst connect"),
        }
    }
    let deadline = started + Duration::from_secs(60);
    let mut left = clients;
    let mut buf = [0u8; 64];
    while left > 0 {
        ensure!(
            Instant::now() < deadline,
            "burst: {left} of {clients} clients never echoed"
        );
        let waiting: Vec<usize> = (0..clients).filter(|&i| all[i].done.is_none()).collect();
        let mut fds: Vec<PollFd> = waiting
            .iter()
            .map(|&i| {
                let c = &all[i];
                let whole = to.prelude.len() + 32;
                let events = if c.sent < whole {
                    PollFlags::POLLOUT
                } else {
                    PollFlags::POLLIN
                };
                PollFd::new(c.socket.as_fd(), events)
            })
            .collect();
        poll(&mut fds, PollTimeout::from(100u16))?;
        let ready: Vec<bool> = fds.iter().map(|f| f.any().unwrap_or(false)).collect();
        drop(fds);
        for (&i, ready) in waiting.iter().zip(ready) {
            if !ready {
                continue;
            }
            let client = &mut all[i];
            let msg = message(i);
            let whole = [to.prelude, &msg].concat();
            if client.sent < whole.len() {
                if let Some(err) = client.socket.take_error()? {
                    return Err(err).context("burst connect");
                }
                match client.socket.send(&whole[client.sent..]) {
                    Ok(n) => client.sent += n,
                    Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(err) => return Err(err).context("burst send"),
                }
                continue;
            }
            match client
                .socket
                .recv(unsafe_uninit(&mut buf[..32 - client.received]))
            {
                Ok(0) => anyhow::bail!("burst: the server closed client {i} before its echo"),
                Ok(n) => {
                    let got = &buf[..n];
                    ensure!(
                        got == &msg[client.received..client.received + n],
                        "burst: client {i}'s echo differs"
                    );
                    client.received += n;
                    if client.received == 32 {
                        client.done = Some(started.elapsed());
                        left -= 1;
                    }
                }
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(err) => return Err(err).context("burst recv"),
            }
        }
    }
    let mut times: Vec<Duration> = all.iter().filter_map(|c| c.done).collect();
    times.sort_unstable();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    Ok(Burst {
        p50: at(0.50),
        p99: at(0.99),
        max: *times.last().expect("at least one client"),
    })
}

/// socket2's recv takes uninitialised memory; an initialised buffer is a valid one.
fn unsafe_uninit(buf: &mut [u8]) -> &mut [std::mem::MaybeUninit<u8>] {
    // recv only writes initialised bytes into the slice.
    // SAFETY: u8 and MaybeUninit<u8> have the same layout.
    unsafe { &mut *(buf as *mut [u8] as *mut [std::mem::MaybeUninit<u8>]) }
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
pub fn crowd(addr: Target, clients: usize, server: Pid, forks: bool) -> Result<Crowd> {
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
    procfs::children_of(parent.as_raw())
        .into_iter()
        .map(|(pid, _)| Pid::from_raw(pid))
        .collect()
}

/// Runs `work` on `threads` threads at once (each given its number) and adds up what they
/// count: the clients of a rate scenario.
pub fn count_on_threads<F>(threads: u64, work: F) -> Result<u64>
where
    F: Fn(u64) -> Result<u64> + Send + Clone + 'static,
{
    let running: Vec<_> = (0..threads)
        .map(|t| {
            let work = work.clone();
            std::thread::spawn(move || work(t))
        })
        .collect();
    let mut total = 0;
    for thread in running {
        total += thread
            .join()
            .map_err(|_| anyhow::anyhow!("a client panicked"))??;
    }
    Ok(total)
}

/// Starts `command` (a server that announces itself as forkecho does, `listening on ADDR` on
/// stdout) with stdin and stderr closed, and returns it serving at the address it named. What it
/// prints after that line is read away on a thread, so it never blocks on stdout.
pub fn start_announced(mut command: std::process::Command, name: &str) -> Result<Running> {
    use std::io::BufRead;
    use std::process::Stdio;
    let mut process = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("start {name}"))?;
    let mut stdout = std::io::BufReader::new(process.stdout.take().expect("piped"));
    let addr = fixture::read_readiness(&mut stdout)
        .map_err(|line| anyhow::anyhow!("{name} did not announce: {line:?}"))?;
    thread::spawn(move || {
        let mut rest = String::new();
        while stdout.read_line(&mut rest).is_ok_and(|n| n > 0) {}
    });
    Ok(Running { process, addr })
}
