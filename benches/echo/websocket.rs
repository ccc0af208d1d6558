//! The WebSocket scenarios, in rounds of their own: `forkecho --websocket -q` against Python
//! websockets' asyncio echo server (benches/baselines/websocket_echo.py, where websockets is
//! installed), and `forkecho -q` plain TCP for the per-message cost.
//!
//! Per server, every echo verified byte for byte:
//! - Sessions per second: 4 client threads, each connecting, upgrading, echoing one 64-byte
//!   binary message and closing (the close handshake, then the TCP close), for the run's
//!   seconds; with the server's CPU per session (its tree's, from /proc, reaped children
//!   included).
//! - Messages per second on one session: 64-byte binary messages, one in flight, for the run's
//!   seconds; with the server's CPU per message. Beside it, plain TCP round trips of 64 bytes on
//!   one connection to `forkecho -q`: the per-write cost a message is held to (target: a
//!   message's CPU within 1.5x of a round trip's).
//!
//! The client is tungstenite over std's TcpStream, the same for every server; it shares the 2
//! cores with the servers.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Result;
use nix::unistd::Pid;
use tungstenite::Message;

use super::load;

/// The servers compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum WsKind {
    Forkecho,
    PythonWebsockets,
}

impl WsKind {
    pub fn name(self) -> &'static str {
        match self {
            WsKind::Forkecho => "forkecho --websocket -q",
            WsKind::PythonWebsockets => "Python websockets (asyncio echo)",
        }
    }

    pub fn available(self) -> bool {
        match self {
            WsKind::Forkecho => true,
            WsKind::PythonWebsockets => Command::new("python3")
                .args(["-c", "import websockets.asyncio.server"])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
        }
    }
}

/// One server's figures in one round.
#[derive(Debug, Clone, Copy, Default)]
pub struct WsSample {
    sessions_per_sec: f64,
    session_cpu_us: f64,
    messages_per_sec: f64,
    message_cpu_us: f64,
}

fn start(kind: WsKind, forkecho: &Path, baselines: &Path) -> Result<load::Running> {
    let command = match kind {
        WsKind::Forkecho => {
            let mut c = Command::new(forkecho);
            c.args(["-q", "-b", "127.0.0.1", "-p", "0", "--max-clients", "1024"])
                .arg("--websocket");
            c
        }
        WsKind::PythonWebsockets => {
            let mut c = Command::new("python3");
            c.arg(baselines.join("websocket_echo.py"));
            c
        }
    };
    load::start_announced(command, kind.name())
}

type Ws = tungstenite::WebSocket<TcpStream>;

fn session(addr: SocketAddr) -> Result<Ws> {
    let socket = TcpStream::connect(addr)?;
    socket.set_nodelay(true)?;
    socket.set_read_timeout(Some(Duration::from_secs(10)))?;
    let url = format!("ws://{addr}/bench");
    let (ws, _) = tungstenite::client(url.as_str(), socket)
        .map_err(|err| anyhow::anyhow!("upgrade: {err}"))?;
    Ok(ws)
}

/// Sends one binary message and reads its echo back, checked.
fn echo(ws: &mut Ws, data: &[u8]) -> Result<()> {
    ws.send(Message::binary(data.to_vec()))?;
    loop {
        match ws.read()? {
            Message::Binary(back) => {
                anyhow::ensure!(back == data, "the echo differs from what was sent");
                return Ok(());
            }
            Message::Ping(_) | Message::Pong(_) => {}
            other => anyhow::bail!("unexpected {other:?}"),
        }
    }
}

/// Closes a session: the close handshake, then the TCP close.
fn close(mut ws: Ws) {
    let _ = ws.close(None);
    while ws.read().is_ok() {}
}

/// Sessions of one 64-byte message, by 4 threads for `run_for`: how many.
fn sessions(addr: SocketAddr, run_for: Duration) -> Result<u64> {
    let deadline = Instant::now() + run_for;
    load::count_on_threads(4, move |t| {
        let payload = super::payload::pattern(t, 64);
        let mut count = 0;
        while Instant::now() < deadline {
            let mut ws = session(addr)?;
            echo(&mut ws, &payload)?;
            close(ws);
            count += 1;
        }
        Ok(count)
    })
}

/// 64-byte messages on one session, one in flight, for `run_for`: how many.
fn messages(addr: SocketAddr, run_for: Duration) -> Result<u64> {
    let mut ws = session(addr)?;
    let payload = super::payload::pattern(9, 64);
    let deadline = Instant::now() + run_for;
    let mut count = 0;
    while Instant::now() < deadline {
        echo(&mut ws, &payload)?;
        count += 1;
    }
    close(ws);
    Ok(count)
}

/// 64-byte round trips on one plain TCP connection, for `run_for`: how many.
fn round_trips(addr: SocketAddr, run_for: Duration) -> Result<u64> {
    let mut socket = TcpStream::connect(addr)?;
    socket.set_nodelay(true)?;
    let payload = super::payload::pattern(9, 64);
    let mut back = [0u8; 64];
    let deadline = Instant::now() + run_for;
    let mut count = 0;
    while Instant::now() < deadline {
        socket.write_all(&payload)?;
        socket.read_exact(&mut back)?;
        anyhow::ensure!(back[..] == payload[..], "the echo differs");
        count += 1;
    }
    Ok(count)
}

/// The server's CPU (its tree's, settled) per unit of `work`, which returns how many units.
fn per_unit(pid: Pid, forks: bool, work: impl FnOnce() -> Result<u64>) -> Result<(u64, f64)> {
    load::settle(pid, forks);
    let before = load::tree_cpu(pid);
    let count = work()?;
    load::settle(pid, forks);
    let cpu = load::tree_cpu(pid).saturating_sub(before).as_secs_f64();
    Ok((count, cpu * 1e6 / count.max(1) as f64))
}

/// One round over every server, in `order`, and the plain TCP per-write figure (CPU µs per
/// 64-byte round trip to `forkecho -q`).
pub fn round(
    order: &[WsKind],
    forkecho: &Path,
    baselines: &Path,
    run_for: Duration,
) -> Result<(Vec<(WsKind, WsSample)>, f64)> {
    let mut out = Vec::new();
    for &kind in order {
        eprintln!("websocket: {}", kind.name());
        let server = start(kind, forkecho, baselines)?;
        let pid = Pid::from_raw(server.process.id() as i32);
        let forks = kind == WsKind::Forkecho;
        let started = Instant::now();
        let (count, session_cpu_us) = per_unit(pid, forks, || sessions(server.addr, run_for))?;
        let sessions_per_sec = count as f64 / started.elapsed().as_secs_f64();
        let started = Instant::now();
        let (count, message_cpu_us) = per_unit(pid, forks, || messages(server.addr, run_for))?;
        let messages_per_sec = count as f64 / started.elapsed().as_secs_f64();
        out.push((
            kind,
            WsSample {
                sessions_per_sec,
                session_cpu_us,
                messages_per_sec,
                message_cpu_us,
            },
        ));
    }
    let mut command = Command::new(forkecho);
    command.args(["-q", "-b", "127.0.0.1", "-p", "0"]);
    let plain = load::start_announced(command, "forkecho -q")?;
    let pid = Pid::from_raw(plain.process.id() as i32);
    let (_, write_cpu_us) = per_unit(pid, true, || round_trips(plain.addr, run_for))?;
    Ok((out, write_cpu_us))
}

/// The WebSocket table: medians, and the targets' ratios (medians of per-round ratios).
pub fn markdown(
    kinds: &[WsKind],
    samples: &BTreeMap<WsKind, Vec<WsSample>>,
    plain_write_cpu_us: &[f64],
) -> String {
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let mut out = String::from(
        "\nWebSocket echo (sessions of one 64-byte binary message, close handshake included; \
         64-byte messages on one session):\n\n| server | sessions/s | CPU µs/session | \
         messages/s | CPU µs/message |\n|---|---:|---:|---:|---:|\n",
    );
    for kind in kinds {
        let Some(rounds) = samples.get(kind) else {
            continue;
        };
        let m = |f: fn(&WsSample) -> f64| median(rounds.iter().map(f).collect());
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.0} | {:.0} | {:.1} |",
            kind.name(),
            m(|s| s.sessions_per_sec),
            m(|s| s.session_cpu_us),
            m(|s| s.messages_per_sec),
            m(|s| s.message_cpu_us),
        );
    }
    let Some(ours) = samples.get(&WsKind::Forkecho) else {
        return out;
    };
    let per_write = median(plain_write_cpu_us.to_vec());
    let _ = write!(
        out,
        "\nPlain TCP, `forkecho -q`, 64-byte round trips on one connection: {per_write:.1} CPU \
         µs each. WebSocket message against it: {:.2} (target <= 1.50)",
        median(
            ours.iter()
                .zip(plain_write_cpu_us)
                .map(|(s, w)| s.message_cpu_us / w.max(1e-9))
                .collect()
        ),
    );
    if let Some(python) = samples.get(&WsKind::PythonWebsockets) {
        let ratio = |f: fn(&WsSample) -> f64| {
            median(
                ours.iter()
                    .zip(python)
                    .map(|(a, b)| f(a) / f(b).max(1e-9))
                    .collect(),
            )
        };
        let _ = write!(
            out,
            "; against Python websockets: sessions/s {:.2}, CPU per session {:.2}, messages/s \
             {:.2}, CPU per message {:.2}",
            ratio(|s| s.sessions_per_sec),
            ratio(|s| s.session_cpu_us),
            ratio(|s| s.messages_per_sec),
            ratio(|s| s.message_cpu_us),
        );
    }
    out.push('\n');
    out
}
