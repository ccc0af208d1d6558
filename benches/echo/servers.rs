//! The servers compared: forkecho (per-connection logging off and on), the C fork-per-connection
//! and thread-per-connection baselines (compiled here with the system C compiler), and socat.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The baseline every ratio is taken against.
    CFork,
    ForkechoQuiet,
    ForkechoLogging,
    CThread,
    Socat,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::CFork => "C fork (baseline)",
            Kind::ForkechoQuiet => "forkecho -q",
            Kind::ForkechoLogging => "forkecho (logging)",
            Kind::CThread => "C threads",
            Kind::Socat => "socat fork",
        }
    }

    /// A short name for JSON and file names.
    pub fn id(self) -> &'static str {
        match self {
            Kind::CFork => "c_fork",
            Kind::ForkechoQuiet => "forkecho_quiet",
            Kind::ForkechoLogging => "forkecho_logging",
            Kind::CThread => "c_thread",
            Kind::Socat => "socat",
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
    pub c_thread: PathBuf,
    pub out_dir: PathBuf,
    pub have_socat: bool,
}

impl Setup {
    /// Compiles the C baselines into `out_dir` and looks for socat.
    pub fn prepare(forkecho: &Path, sources: &Path, out_dir: &Path) -> Result<Setup> {
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
            c_thread: compile("thread_server.c", "c_thread_server", &["-pthread"])?,
            out_dir: out_dir.to_path_buf(),
            have_socat,
        })
    }

    pub fn kinds(&self) -> Vec<Kind> {
        let mut kinds = vec![
            Kind::CFork,
            Kind::ForkechoQuiet,
            Kind::ForkechoLogging,
            Kind::CThread,
        ];
        if self.have_socat {
            kinds.push(Kind::Socat);
        }
        kinds
    }

    /// Starts a server of `kind` on a free loopback port, ready for connections.
    pub fn start(&self, kind: Kind, max_clients: usize) -> Result<Server> {
        let log = self.out_dir.join(format!("{}.log", kind.id()));
        let stderr = std::fs::File::create(&log)?;
        let max_clients = max_clients.to_string();
        let mut command = match kind {
            Kind::CFork => plain(&self.c_fork, &["0"]),
            Kind::CThread => plain(&self.c_thread, &["0"]),
            Kind::ForkechoQuiet | Kind::ForkechoLogging => {
                let mut args = vec!["--bind", "127.0.0.1", "--port", "0"];
                args.extend(["--max-clients", &max_clients, "--backlog", "1024"]);
                if kind == Kind::ForkechoQuiet {
                    args.push("--quiet");
                }
                plain(&self.forkecho, &args)
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
        let mut line = String::new();
        BufReader::new(process.stdout.take().unwrap()).read_line(&mut line)?;
        let addr = line
            .trim_end()
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .with_context(|| format!("{} did not announce its port: {line:?}", kind.name()))?;
        Ok(Server { process, addr })
    }
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
        let _ = kill(self.pid(), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.process.try_wait(), Ok(None)) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}
