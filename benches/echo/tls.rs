//! The TLS scenarios, in rounds of their own: `forkecho --tls-cert … -q` against socat
//! (`OPENSSL-LISTEN,fork` to `PIPE`) and ncat (`--ssl -k`, `--exec /bin/cat`), each where it is
//! installed, all with the same ECDSA P-256 certificate (made here with rcgen).
//!
//! Three figures per server, every echo verified byte for byte:
//! - TLS connections per second: 4 client threads, each connecting, completing a full handshake
//!   (no resumption: none of the servers offers it across processes), echoing 64 bytes and
//!   closing, for the run's seconds; with the server's CPU per connection (its tree's, from
//!   /proc, reaped children included).
//! - Child USS: 32 TLS connections held open after one echo each, the median of the children's
//!   unique memory (smaps_rollup).
//! - Bulk: one connection echoing a large payload through TLS, MiB/s and server CPU per GiB.
//!
//! The client is rustls with ring, as the server is; it shares the 2 cores with the servers, the
//! same for every server.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::unistd::Pid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use super::{fixture, load};

/// The TLS servers compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsKind {
    Forkecho,
    Socat,
    Ncat,
}

impl TlsKind {
    pub fn name(self) -> &'static str {
        match self {
            TlsKind::Forkecho => "forkecho --tls-cert … -q",
            TlsKind::Socat => "socat OPENSSL-LISTEN fork nodelay, PIPE",
            TlsKind::Ncat => "ncat --ssl -k --exec /bin/cat",
        }
    }

    /// Whether the program is installed.
    pub fn available(self) -> bool {
        let (program, flag) = match self {
            TlsKind::Forkecho => return true,
            TlsKind::Socat => ("socat", "-V"),
            TlsKind::Ncat => ("ncat", "--version"),
        };
        Command::new(program)
            .arg(flag)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

/// One server's figures in one round.
#[derive(Debug, Clone, Copy, Default)]
pub struct TlsSample {
    conn_per_sec: f64,
    conn_cpu_us: f64,
    child_uss_kib: f64,
    bulk_mib_s: f64,
    bulk_cpu_s_per_gib: f64,
}

/// The certificate every server presents: written once per run.
pub struct Identity {
    cert: PathBuf,
    key: PathBuf,
    config: Arc<ClientConfig>,
}

impl Identity {
    pub fn make(out_dir: &Path) -> Result<Identity> {
        let key = rcgen::KeyPair::generate()?;
        let params = rcgen::CertificateParams::new(vec!["localhost".to_string()])?;
        let cert = params.self_signed(&key)?;
        let (cert_path, key_path) = (out_dir.join("tls-cert.pem"), out_dir.join("tls-key.pem"));
        std::fs::write(&cert_path, cert.pem())?;
        std::fs::write(&key_path, key.serialize_pem())?;
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from_pem_file(&cert_path)?)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Identity {
            cert: cert_path,
            key: key_path,
            config: Arc::new(config),
        })
    }
}

fn start(kind: TlsKind, forkecho: &Path, id: &Identity) -> Result<load::Running> {
    let (cert, key) = (id.cert.to_str().unwrap(), id.key.to_str().unwrap());
    if kind == TlsKind::Forkecho {
        let mut process = Command::new(forkecho)
            .args(["-q", "-b", "127.0.0.1", "-p", "0", "--max-clients", "1024"])
            .args(["--tls-cert", cert, "--tls-key", key])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("start forkecho --tls")?;
        let mut stdout = BufReader::new(process.stdout.take().expect("piped"));
        let addr = fixture::read_readiness(&mut stdout)
            .map_err(|line| anyhow::anyhow!("forkecho did not announce: {line:?}"))?;
        return Ok(load::Running { process, addr });
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut command = match kind {
        TlsKind::Socat => {
            let mut c = Command::new("socat");
            c.arg(format!(
                "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,backlog=1024,nodelay,\
                 cert={cert},key={key},verify=0"
            ))
            .arg("PIPE");
            c
        }
        _ => {
            let mut c = Command::new("ncat");
            c.args(["--ssl", "--ssl-cert", cert, "--ssl-key", key, "-l", "-k"])
                .args(["--max-conns", "1024", "--exec", "/bin/cat", "127.0.0.1"])
                .arg(port.to_string());
            c
        }
    };
    let process = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("start {}", kind.name()))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let running = load::Running { process, addr };
    let deadline = Instant::now() + Duration::from_secs(10);
    // socat and ncat say nothing when they listen: a handshake that works says it.
    while session(addr, &id.config).is_err() {
        if Instant::now() > deadline {
            bail!("{} did not answer a handshake on {addr}", kind.name());
        }
        thread::sleep(Duration::from_millis(10));
    }
    Ok(running)
}

type Tls = StreamOwned<ClientConnection, TcpStream>;

/// A connection with its handshake done.
fn session(addr: SocketAddr, config: &Arc<ClientConfig>) -> Result<Tls> {
    let mut socket = TcpStream::connect(addr)?;
    socket.set_nodelay(true)?;
    socket.set_read_timeout(Some(Duration::from_secs(10)))?;
    let name = ServerName::try_from("localhost")?;
    let mut conn = ClientConnection::new(config.clone(), name)?;
    while conn.is_handshaking() {
        conn.complete_io(&mut socket)?;
    }
    Ok(StreamOwned::new(conn, socket))
}

/// Writes `data` and reads its echo back, checked.
fn echo(tls: &mut Tls, data: &[u8]) -> Result<()> {
    tls.write_all(data)?;
    tls.flush()?;
    let mut back = vec![0u8; data.len()];
    tls.read_exact(&mut back)?;
    anyhow::ensure!(back == data, "the echo differs from what was sent");
    Ok(())
}

/// Every process below `root` (ncat's children are shells' cats).
fn descendants(root: Pid) -> Vec<Pid> {
    let mut all = Vec::new();
    for child in load::children_of(root) {
        all.push(child);
        all.extend(descendants(child));
    }
    all
}

/// Full handshakes with one 64-byte echo each, by 4 threads for `run_for`: how many.
fn connections(addr: SocketAddr, config: &Arc<ClientConfig>, run_for: Duration) -> Result<u64> {
    let deadline = Instant::now() + run_for;
    let config = config.clone();
    load::count_on_threads(4, move |t| {
        let payload = super::payload::pattern(t, 64);
        let mut count = 0;
        while Instant::now() < deadline {
            let mut tls = session(addr, &config)?;
            echo(&mut tls, &payload)?;
            tls.conn.send_close_notify();
            let _ = tls.flush();
            count += 1;
        }
        Ok(count)
    })
}

/// The unique memory per connection of the server's children, with 32 connections open and
/// echoed once.
fn child_uss(addr: SocketAddr, pid: Pid, config: &Arc<ClientConfig>) -> Result<f64> {
    let mut open = Vec::new();
    for i in 0..32 {
        let mut tls = session(addr, config)?;
        echo(&mut tls, &super::payload::pattern(i, 64))?;
        open.push(tls);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut children = descendants(pid);
    while children.len() < 32 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
        children = descendants(pid);
    }
    let uss: Vec<f64> = children
        .iter()
        .filter_map(|&child| load::smaps_rollup(child).ok())
        .map(|rollup| rollup.uss_kib())
        .collect();
    anyhow::ensure!(!uss.is_empty(), "no child to measure");
    // Summed and shared out: ncat serves every session in its own process and runs one cat per
    // connection, so its figure is the cat's alone.
    let per_connection = uss.iter().sum::<f64>() / 32.0;
    drop(open);
    Ok(per_connection)
}

/// One connection echoing up to `total` bytes in 16 KiB writes, for `run_for` at most (ncat
/// waits on Nagle for every write): MiB/s, and the bytes echoed.
fn bulk(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
    total: usize,
    run_for: Duration,
) -> Result<(f64, usize)> {
    let mut tls = session(addr, config)?;
    let chunk = super::payload::pattern(77, 16 * 1024);
    let started = Instant::now();
    let mut done = 0;
    while done < total && started.elapsed() < run_for {
        echo(&mut tls, &chunk)?;
        done += chunk.len();
    }
    let mib_s = done as f64 / (1 << 20) as f64 / started.elapsed().as_secs_f64();
    Ok((mib_s, done))
}

/// One round over every server, in `order`.
pub fn round(
    order: &[TlsKind],
    forkecho: &Path,
    id: &Identity,
    run_for: Duration,
    bulk_bytes: usize,
) -> Result<Vec<(TlsKind, TlsSample)>> {
    let mut out = Vec::new();
    for &kind in order {
        eprintln!("tls: {}", kind.name());
        let server = match start(kind, forkecho, id) {
            Ok(server) => server,
            // A peer that does not come up (socat once answered no handshake for 10 s in a
            // full run) is noted and left out of this round, never the benchmark's end.
            Err(err) if kind != TlsKind::Forkecho => {
                eprintln!("note: tls: {err:#}; left out of this round");
                continue;
            }
            Err(err) => return Err(err),
        };
        let pid = Pid::from_raw(server.process.id() as i32);
        load::settle(pid, true);
        let before = load::tree_cpu(pid);
        let started = Instant::now();
        let count = connections(server.addr, &id.config, run_for)
            .with_context(|| format!("{}: connections", kind.name()))?;
        let elapsed = started.elapsed().as_secs_f64();
        load::settle(pid, true);
        let conn_cpu_us =
            load::tree_cpu(pid).saturating_sub(before).as_secs_f64() * 1e6 / count as f64;
        let child_uss_kib = child_uss(server.addr, pid, &id.config)?;
        load::settle(pid, true);
        let before = load::tree_cpu(pid);
        let (bulk_mib_s, echoed) = bulk(server.addr, &id.config, bulk_bytes, run_for * 2)?;
        load::settle(pid, true);
        let gib = echoed as f64 / (1u64 << 30) as f64;
        let bulk_cpu_s_per_gib = load::tree_cpu(pid).saturating_sub(before).as_secs_f64() / gib;
        out.push((
            kind,
            TlsSample {
                conn_per_sec: count as f64 / elapsed,
                conn_cpu_us,
                child_uss_kib,
                bulk_mib_s,
                bulk_cpu_s_per_gib,
            },
        ));
    }
    Ok(out)
}

/// The TLS table: medians, and forkecho's ratios to socat (median of per-round ratios).
pub fn markdown(kinds: &[TlsKind], samples: &BTreeMap<TlsKind, Vec<TlsSample>>) -> String {
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut out = String::from(
        "\nTLS echo (ECDSA P-256, full handshakes, one 64-byte echo each; bulk over one \
         connection):\n\n| server | TLS conn/s | CPU µs/conn | child USS KiB | bulk MiB/s | \
         bulk CPU s/GiB |\n|---|---:|---:|---:|---:|---:|\n",
    );
    for kind in kinds {
        let Some(rounds) = samples.get(kind) else {
            continue;
        };
        let m = |f: fn(&TlsSample) -> f64| median(rounds.iter().map(f).collect());
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} |",
            kind.name(),
            m(|s| s.conn_per_sec),
            m(|s| s.conn_cpu_us),
            m(|s| s.child_uss_kib),
            m(|s| s.bulk_mib_s),
            m(|s| s.bulk_cpu_s_per_gib),
        );
    }
    let (Some(ours), Some(socat)) = (
        samples.get(&TlsKind::Forkecho),
        samples.get(&TlsKind::Socat),
    ) else {
        return out;
    };
    let ratio = |f: fn(&TlsSample) -> f64| {
        median(
            ours.iter()
                .zip(socat)
                .map(|(a, b)| f(a) / f(b).max(1e-9))
                .collect(),
        )
    };
    let _ = write!(
        out,
        "\nTLS targets (forkecho against socat, median of per-round ratios): connections/s {:.2} \
         (target >= 2.00), CPU per connection {:.2}, child USS {:.2} (target <= 1.00)\n",
        ratio(|s| s.conn_per_sec),
        ratio(|s| s.conn_cpu_us),
        ratio(|s| s.child_uss_kib),
    );
    out
}
