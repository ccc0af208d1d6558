//! Starting forkecho: which binary (`FORKECHO_BIN`, else `forkecho` on PATH, else an error that
//! says how to install one), the command line (the test's arguments, and around them port 0 on
//! loopback, the stdin lifeline, a control socket, the TLS CA's file), and readiness: the
//! readiness lines on stdout, whose end says forkecho serves. Written by `Builder`, read once by
//! `Forkecho`, which owns what `start` returns.

use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;
use std::{env, fs, thread};

use crate::Forkecho;
use crate::addresses::Addresses;
use crate::log::Log;

/// How long a start or a stop may take before the fixture gives up on it.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A forkecho to start: its arguments and how to run it. `Forkecho::start` and
/// `Forkecho::with_args` are the short ways.
#[derive(Debug, Clone, Default)]
pub struct Builder {
    binary: Option<PathBuf>,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    no_control: bool,
}

impl Builder {
    pub fn new() -> Builder {
        Builder::default()
    }

    /// One argument for forkecho, passed as it is (`--delay`, `100`, `--tls`, `--udp`, ...).
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Builder {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Arguments for forkecho, passed as they are.
    pub fn args<I, S>(mut self, args: I) -> Builder
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// The forkecho binary to run, instead of `FORKECHO_BIN` or PATH's (a repository's own
    /// tests pass `env!("CARGO_BIN_EXE_forkecho")`).
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Builder {
        self.binary = Some(path.into());
        self
    }

    /// An environment variable for forkecho.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Builder {
        let pair = (key.as_ref().to_owned(), value.as_ref().to_owned());
        self.envs.push(pair);
        self
    }

    /// No control socket: the server runs exactly as its arguments say (the control methods
    /// then fail).
    pub fn without_control(mut self) -> Builder {
        self.no_control = true;
        self
    }

    /// Starts forkecho and returns once it serves: every listener bound, the CA written, the
    /// readiness lines out. A forkecho that cannot start is an error quoting what it said.
    pub fn start(self) -> io::Result<Forkecho> {
        let binary = match &self.binary {
            Some(binary) => binary.clone(),
            None => find_binary()?,
        };
        let given = |names: &[&str]| {
            self.args.iter().any(|arg| {
                let arg = arg.to_string_lossy();
                names.iter().any(|name| {
                    arg == *name
                        || arg.starts_with(&format!("{name}="))
                        || (name.len() == 2 && arg.len() > 2 && arg.starts_with(name))
                })
            })
        };
        let dir = Dir::new();
        let mut command = Command::new(&binary);
        if !given(&["-b", "--bind"]) {
            command.args(["--bind", "127.0.0.1"]);
        }
        if !given(&["-p", "--port"]) {
            command.args(["--port", "0"]);
        }
        if !given(&["--log-format"]) {
            command.args(["--log-format", "json"]);
        }
        command.arg("--stdin-lifeline");
        // A control socket and a CA file the test names are the ones the fixture uses.
        let control = match self.value_of("--control") {
            Some(path) => Some(path),
            None if self.no_control => None,
            None => {
                let path = dir.file("control.sock");
                command.arg("--control").arg(&path);
                Some(path)
            }
        };
        let ca = match self.value_of("--tls-ca-out") {
            Some(path) => Some(path),
            None if given(&["--tls"]) && !given(&["--tls-cert"]) => {
                let path = dir.file("ca.pem");
                command.arg("--tls-ca-out").arg(&path);
                Some(path)
            }
            None => None,
        };
        command
            .args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)));
        launch(command, dir, control, ca, true)
    }
}

impl Builder {
    /// The value the test's arguments give option `name` (`--name VALUE` or `--name=VALUE`).
    fn value_of(&self, name: &str) -> Option<PathBuf> {
        let prefix = format!("{name}=");
        let mut args = self.args.iter();
        while let Some(arg) = args.next() {
            if arg == name {
                return args.next().map(PathBuf::from);
            }
            if let Some(value) = arg.to_str().and_then(|arg| arg.strip_prefix(&prefix)) {
                return Some(PathBuf::from(value));
            }
        }
        None
    }
}

/// Spawns `command` with its stdin, stdout and stderr piped to the fixture, and waits for its
/// readiness. `lifeline`: whether it runs with `--stdin-lifeline` (else a stop is SIGTERM).
pub(crate) fn launch(
    mut command: Command,
    dir: Dir,
    control: Option<PathBuf>,
    ca: Option<PathBuf>,
    lifeline: bool,
) -> io::Result<Forkecho> {
    let program = command.get_program().to_owned();
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| io::Error::new(err.kind(), format!("{}: {err}", program.display())))?;
    let stdin = child.stdin.take();
    let log = Log::collect(child.stderr.take().expect("piped"));
    let ready = readiness(&mut child);
    let started = Started {
        child,
        stdin,
        lifeline,
        log,
        dir,
        control,
        ca,
    };
    match ready {
        Ok((addresses, text)) => Ok(Forkecho::new(started, addresses, text)),
        Err(why) => Err(started.failed(&why)),
    }
}

/// What `start` hands `Forkecho`.
pub(crate) struct Started {
    pub child: Child,
    /// forkecho's stdin: while the fixture holds it open, forkecho serves (`--stdin-lifeline`).
    /// The kernel closes it when the test process ends, however it ends.
    pub stdin: Option<ChildStdin>,
    /// Whether forkecho runs with `--stdin-lifeline` (`Forkecho::spawn`'s may not).
    pub lifeline: bool,
    pub log: Arc<Log>,
    pub dir: Dir,
    pub control: Option<PathBuf>,
    pub ca: Option<PathBuf>,
}

impl Started {
    /// A start that failed: forkecho is stopped and the error says what it printed.
    fn failed(mut self, why: &str) -> io::Error {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let status = self.child.wait();
        self.log.wait_for_end(DEADLINE);
        let said = self.log.lines().join("\n");
        io::Error::other(format!(
            "forkecho did not start ({why}); it exited with {status:?} and said:\n{said}"
        ))
    }
}

/// Reads the readiness lines. forkecho writes them in one write(2) at the moment it serves (a
/// pipe delivers a write that small whole), then points its stdout at /dev/null; a forkecho that
/// fails to start writes nothing and exits. So the first read that ends a line has them all,
/// and an end with nothing read is a failed start. Whatever a wrapper (`unshare`, `ip netns
/// exec`) writes to the same pipe later is read and dropped.
fn readiness(child: &mut Child) -> Result<(Addresses, String), String> {
    let mut stdout = child.stdout.take().expect("piped");
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        let mut text = Vec::new();
        let mut chunk = [0; 4096];
        let read = loop {
            match stdout.read(&mut chunk) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    text.extend_from_slice(&chunk[..n]);
                    if text.ends_with(b"\n") {
                        break Ok(());
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => break Err(err),
            }
        };
        let _ = sender.send(read.map(|()| String::from_utf8_lossy(&text).into_owned()));
        let _ = io::copy(&mut stdout, &mut io::sink());
    });
    match receiver.recv_timeout(DEADLINE) {
        Ok(Ok(text)) => Addresses::parse(&text).map(|found| (found, text)),
        Ok(Err(err)) => Err(format!("its stdout: {err}")),
        Err(_) => Err(format!("not serving after {DEADLINE:?}")),
    }
}

/// `FORKECHO_BIN`, else `forkecho` on PATH.
fn find_binary() -> io::Result<PathBuf> {
    let install = "install it with `cargo install forkecho` (or the Debian package), \
                   or set FORKECHO_BIN to its path";
    if let Some(path) = env::var_os("FORKECHO_BIN") {
        let path = PathBuf::from(path);
        return match path.is_file() {
            true => Ok(path),
            false => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("FORKECHO_BIN={}: no such file; {install}", path.display()),
            )),
        };
    }
    let on_path = env::var_os("PATH")
        .map(|path| env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join("forkecho"))
        .find(|candidate| candidate.is_file());
    on_path.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("forkecho not found: FORKECHO_BIN is not set and PATH has none; {install}"),
        )
    })
}

/// The fixture's own directory (the control socket, the CA), made when first needed and removed
/// with the fixture. One a test process left behind (killed before it could remove it) is
/// removed by the next fixture that starts.
#[derive(Debug)]
pub(crate) struct Dir {
    path: PathBuf,
}

/// Names the directories of one process apart.
static NEXT: AtomicU64 = AtomicU64::new(0);

/// The directories' names: `forkecho-fixture.PID.N`.
const PREFIX: &str = "forkecho-fixture.";

impl Dir {
    pub(crate) fn new() -> Dir {
        sweep(&env::temp_dir());
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("{PREFIX}{}.{n}", std::process::id());
        Dir {
            path: env::temp_dir().join(name),
        }
    }

    /// `name` in the directory, which is made (mode 0700) if it is not yet.
    fn file(&self, name: &str) -> PathBuf {
        use std::os::unix::fs::DirBuilderExt;
        let _ = fs::DirBuilder::new().mode(0o700).create(&self.path);
        self.path.join(name)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn remove(&self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Removes the fixture directories in `tmp` whose process is gone.
fn sweep(tmp: &Path) {
    let Ok(entries) = fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = (name.to_str())
            .and_then(|name| name.strip_prefix(PREFIX))
            .and_then(|rest| rest.split('.').next())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}
