//! The servers compared: forkecho (per-connection logging off, on, and on as JSON), the C
//! fork-per-connection and thread-per-connection baselines (compiled here with the system C
//! compiler), and socat.
//! forkecho is the default build, which `.cargo/config.toml` links statically; also forkecho
//! linked dynamically (`-C target-feature=-crt-static`, built here into the output directory):
//! the same code with a larger process image, which shows what dynamic linking costs per fork.

use std::io::BufReader;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use nix::unistd::Pid;

use crate::fixture;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The baseline the first ratio table is taken against: the textbook C fork server, built
    /// the ordinary way (dynamically linked).
    CFork,
    /// The same C source linked statically: the floor of this design on this kernel (a process
    /// that does nothing per connection but accept, fork, read, write, exit and be reaped), and
    /// the base of the second ratio table.
    CForkStatic,
    /// The floor again, as a server of its own in every round: the floor against itself is
    /// this run's noise, printed beside the targets (a ratio a target misses by less than that
    /// says nothing about forkecho).
    CForkStaticAgain,
    /// The floor logging what forkecho logs per connection, as forkecho does (an accept line
    /// from the parent, a close line from the child, each formatted with snprintf and written
    /// with one write(2) to a file): the physical floor of per-connection logging here, against
    /// which forkecho's logging is set.
    CForkStaticLogging,
    /// The same, the lines as JSON objects with a time stamp.
    CForkStaticJsonLogging,
    ForkechoQuiet,
    /// `forkecho -q --no-sandbox`: what the sandbox (on by default) costs.
    ForkechoNoSandbox,
    /// `forkecho -q --proxy-protocol`, every connection starting with a PROXY v2 header: what
    /// reading the header costs.
    ForkechoProxy,
    ForkechoLogging,
    /// Per-connection logging as JSON (`--log-format json`), to a file like the text row.
    ForkechoJsonLogging,
    /// `forkecho -q --metrics`: what each child's counting for the metrics costs (nothing scrapes
    /// during the run).
    ForkechoMetrics,
    /// `forkecho -q --dump DIR`: what writing every connection to a pcapng file costs (and
    /// echoing through a buffer instead of splice, which dumping needs).
    ForkechoDump,
    ForkechoDynamic,
    /// `--compare PATH`: another forkecho binary, run with `-q`.
    ForkechoCompare,
    CThread,
    Socat,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::CFork => "C fork (baseline)",
            Kind::CForkStatic => "C fork, static (the floor)",
            Kind::CForkStaticAgain => "C fork, static, again (the noise)",
            Kind::CForkStaticLogging => "C fork, static, logging",
            Kind::CForkStaticJsonLogging => "C fork, static, JSON logging",
            Kind::ForkechoQuiet => "forkecho -q",
            Kind::ForkechoNoSandbox => "forkecho -q --no-sandbox",
            Kind::ForkechoProxy => "forkecho -q --proxy-protocol",
            Kind::ForkechoLogging => "forkecho (logging)",
            Kind::ForkechoJsonLogging => "forkecho (JSON logging)",
            Kind::ForkechoMetrics => "forkecho -q --metrics",
            Kind::ForkechoDump => "forkecho -q --dump",
            Kind::ForkechoDynamic => "forkecho -q, dynamic build",
            Kind::ForkechoCompare => "forkecho -q, --compare build",
            Kind::CThread => "C threads",
            Kind::Socat => "socat fork",
        }
    }

    /// A short name for JSON and file names.
    pub fn id(self) -> &'static str {
        match self {
            Kind::CFork => "c_fork",
            Kind::CForkStatic => "c_fork_static",
            Kind::CForkStaticAgain => "c_fork_static_again",
            Kind::CForkStaticLogging => "c_fork_static_logging",
            Kind::CForkStaticJsonLogging => "c_fork_static_json_logging",
            Kind::ForkechoQuiet => "forkecho_quiet",
            Kind::ForkechoNoSandbox => "forkecho_no_sandbox",
            Kind::ForkechoProxy => "forkecho_proxy",
            Kind::ForkechoLogging => "forkecho_logging",
            Kind::ForkechoJsonLogging => "forkecho_json_logging",
            Kind::ForkechoMetrics => "forkecho_metrics",
            Kind::ForkechoDump => "forkecho_dump",
            Kind::ForkechoDynamic => "forkecho_dynamic",
            Kind::ForkechoCompare => "forkecho_compare",
            Kind::CThread => "c_thread",
            Kind::Socat => "socat",
        }
    }

    /// What each connection sends before its data: a PROXY v2 header (client 192.0.2.1:5000)
    /// for `--proxy-protocol`, nothing for the others.
    pub fn prelude(self) -> &'static [u8] {
        const V2_HEADER: &[u8] =
            b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c\xc0\x00\x02\x01\x7f\x00\x00\x01\x13\x88\x27\x0f";
        match self {
            Kind::ForkechoProxy => V2_HEADER,
            _ => b"",
        }
    }

    /// Whether each connection gets a process of its own (so memory is measured per child).
    pub fn forks(self) -> bool {
        self != Kind::CThread
    }
}

/// Where to find or put everything the servers need.
pub struct Setup {
    pub forkecho: PathBuf,
    pub c_fork: PathBuf,
    /// None where the C library has no static archive (the reason is printed).
    pub c_fork_static: Option<PathBuf>,
    pub c_thread: PathBuf,
    pub out_dir: PathBuf,
    pub have_socat: bool,
    /// None when the dynamic build failed (the reason is printed).
    pub forkecho_dynamic: Option<PathBuf>,
    /// `--compare PATH`.
    pub forkecho_compare: Option<PathBuf>,
}

impl Setup {
    /// Compiles the C baselines and the dynamically linked forkecho into `out_dir` and looks for
    /// socat.
    /// `manifest` is forkecho's Cargo.toml.
    pub fn prepare(
        forkecho: &Path,
        manifest: &Path,
        sources: &Path,
        out_dir: &Path,
        compare: Option<&Path>,
    ) -> Result<Setup> {
        std::fs::create_dir_all(out_dir)
            .with_context(|| format!("create {}", out_dir.display()))?;
        let compile = |source: &str, binary: &str, extra: &[&str]| -> Result<PathBuf> {
            let out = out_dir.join(binary);
            let status = Command::new("cc")
                .args(["-O2", "-Wall", "-o"])
                .arg(&out)
                .arg(sources.join(source))
                .args(extra)
                .status()
                .context("run cc (a C compiler is needed for the baselines)")?;
            ensure!(status.success(), "cc failed on {source}");
            Ok(out)
        };
        let have_socat = Command::new("socat")
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        Ok(Setup {
            forkecho: forkecho.to_path_buf(),
            c_fork: compile("fork_server.c", "c_fork_server", &[])?,
            c_fork_static: compile("fork_server.c", "c_fork_server_static", &["-static"])
                .inspect_err(|err| {
                    eprintln!("note: no static C build, its row is left out: {err:#}")
                })
                .ok(),
            c_thread: compile("thread_server.c", "c_thread_server", &["-pthread"])?,
            out_dir: out_dir.to_path_buf(),
            have_socat,
            forkecho_dynamic: build_dynamic(manifest, out_dir)
                .inspect_err(|err| {
                    eprintln!("note: no dynamic build, its row is left out: {err:#}")
                })
                .ok(),
            forkecho_compare: compare.map(Path::to_path_buf),
        })
    }

    pub fn kinds(&self) -> Vec<Kind> {
        let mut kinds = vec![Kind::CFork];
        if self.c_fork_static.is_some() {
            kinds.extend([
                Kind::CForkStatic,
                Kind::CForkStaticAgain,
                Kind::CForkStaticLogging,
                Kind::CForkStaticJsonLogging,
            ]);
        }
        kinds.extend([
            Kind::ForkechoQuiet,
            Kind::ForkechoNoSandbox,
            Kind::ForkechoProxy,
            Kind::ForkechoLogging,
            Kind::ForkechoJsonLogging,
            Kind::ForkechoMetrics,
            Kind::ForkechoDump,
        ]);
        if self.forkecho_dynamic.is_some() {
            kinds.push(Kind::ForkechoDynamic);
        }
        kinds.push(Kind::CThread);
        if self.forkecho_compare.is_some() {
            let quiet = kinds
                .iter()
                .position(|&k| k == Kind::ForkechoQuiet)
                .unwrap();
            kinds.insert(quiet + 1, Kind::ForkechoCompare);
        }
        if self.have_socat {
            kinds.push(Kind::Socat);
        }
        kinds
    }

    /// Where `forkecho --dump` writes: on tmpfs where there is one, since making a file on this
    /// machine's ext4 costs some 380 µs, which would measure the file system, not forkecho
    /// (benches/README.md). Removed by `remove_dumps`.
    pub fn dump_dir(&self) -> PathBuf {
        let shm = Path::new("/dev/shm");
        match shm.is_dir() {
            true => shm.join(format!("forkecho-bench-dumps-{}", std::process::id())),
            false => self.out_dir.join("dumps"),
        }
    }

    /// Removes what the dumping server wrote.
    pub fn remove_dumps(&self) {
        let _ = std::fs::remove_dir_all(self.dump_dir());
    }

    /// Starts a server of `kind` on a free loopback port, ready for connections.
    pub fn start(&self, kind: Kind, max_clients: usize) -> Result<Server> {
        let log = self.out_dir.join(format!("{}.log", kind.id()));
        let stderr = std::fs::File::create(&log)?;
        let max_clients = max_clients.to_string();
        let mut command = match kind {
            Kind::CFork => plain(&self.c_fork, &["0"]),
            Kind::CForkStatic
            | Kind::CForkStaticAgain
            | Kind::CForkStaticLogging
            | Kind::CForkStaticJsonLogging => {
                let program = self.c_fork_static.as_deref().context("static")?;
                // Its lines go to the file its stderr goes to, as forkecho's do.
                let file = log.to_str().context("a UTF-8 path")?;
                match kind {
                    Kind::CForkStaticLogging => plain(program, &["0", file]),
                    Kind::CForkStaticJsonLogging => plain(program, &["0", file, "json"]),
                    _ => plain(program, &["0"]),
                }
            }
            Kind::CThread => plain(&self.c_thread, &["0"]),
            Kind::ForkechoQuiet
            | Kind::ForkechoNoSandbox
            | Kind::ForkechoProxy
            | Kind::ForkechoLogging
            | Kind::ForkechoJsonLogging
            | Kind::ForkechoMetrics
            | Kind::ForkechoDump
            | Kind::ForkechoDynamic
            | Kind::ForkechoCompare => {
                let mut args = vec!["--bind", "127.0.0.1", "--port", "0"];
                args.extend(["--max-clients", &max_clients, "--backlog", "1024"]);
                match kind {
                    Kind::ForkechoLogging => {}
                    Kind::ForkechoJsonLogging => args.extend(["--log-format", "json"]),
                    _ => args.push("--quiet"),
                }
                if kind == Kind::ForkechoNoSandbox {
                    args.push("--no-sandbox");
                }
                if kind == Kind::ForkechoProxy {
                    args.push("--proxy-protocol");
                }
                if kind == Kind::ForkechoMetrics {
                    args.extend(["--metrics", "127.0.0.1:0"]);
                }
                let dumps = self.dump_dir();
                if kind == Kind::ForkechoDump {
                    // A fresh directory each time: a round writes one file per connection.
                    let _ = std::fs::remove_dir_all(&dumps);
                    std::fs::create_dir_all(&dumps)?;
                    args.extend(["--dump", dumps.to_str().context("a UTF-8 path")?]);
                }
                let program = match kind {
                    Kind::ForkechoDynamic => self.forkecho_dynamic.as_deref().context("dynamic")?,
                    Kind::ForkechoCompare => self.forkecho_compare.as_deref().context("compare")?,
                    _ => &self.forkecho,
                };
                plain(program, &args)
            }
            Kind::Socat => {
                let port = free_port()?;
                let listen =
                    format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,backlog=1024");
                let mut command = plain(Path::new("socat"), &[&listen, "PIPE"]);
                command.stdout(Stdio::null());
                let process = command.stderr(stderr).spawn().context("start socat")?;
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                let server = Server { process, addr };
                wait_until_accepting(addr)?;
                return Ok(server);
            }
        };
        let mut process = command
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("start {}", kind.name()))?;
        let mut stdout = BufReader::new(process.stdout.take().unwrap());
        let addr = fixture::read_readiness(&mut stdout).map_err(|line| {
            anyhow::anyhow!("{} did not announce its port: {line:?}", kind.name())
        })?;
        Ok(Server { process, addr })
    }
}

/// Builds forkecho's release binary with glibc linked dynamically (what the default build was
/// before `.cargo/config.toml` made it static), and returns its path.
fn build_dynamic(manifest: &Path, out_dir: &Path) -> Result<PathBuf> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let version = Command::new(rustc)
        .arg("-vV")
        .output()
        .context("run rustc -vV")?;
    let version = String::from_utf8_lossy(&version.stdout);
    let host = version
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .context("rustc -vV printed no host")?;
    let target_dir = out_dir.join("dynamic");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--quiet",
            "--bin",
            "forkecho",
            "--target",
            host,
        ])
        .arg("--manifest-path")
        .arg(manifest)
        .arg("--target-dir")
        .arg(&target_dir)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        // RUSTFLAGS overrides the project's .cargo/config.toml, which links statically.
        .env("RUSTFLAGS", "-C target-feature=-crt-static")
        .status()
        .context("run cargo build for the dynamic binary")?;
    ensure!(status.success(), "cargo build with -crt-static failed");
    Ok(target_dir.join(host).join("release/forkecho"))
}

fn plain(program: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(program);
    command.args(args).stdin(Stdio::null());
    command
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_until_accepting(addr: SocketAddr) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            bail!("nothing accepted connections on {addr}");
        }
        thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// A running server, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Server {
    process: Child,
    pub addr: SocketAddr,
}

impl Server {
    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.process.id() as i32)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        fixture::stop(&mut self.process, Duration::from_secs(10));
    }
}
