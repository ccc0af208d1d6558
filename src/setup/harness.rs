//! What a harness (a test suite, a script, a service manager) is told, and what ties forkecho to
//! it: `--port-file`, `--ready-fd`, sd_notify (`NOTIFY_SOCKET`), `--exit-with-parent`,
//! `--stdin-lifeline` and `--log-file`.
//!
//! Everything that needs opening is opened here, by `setup`, before privileges are dropped and
//! the sandbox goes on: the port file's directory, the ready fd's check, the notify socket, a
//! private copy of stdin for the lifeline, the log file (put on fd 2). The parent then owns the
//! `Harness`: it stages the port file before the sandbox (`stage`), announces through it at the
//! moment of the stdout line (`announce`: the port file renamed into place, the ready fd written
//! and closed, READY=1), polls the lifeline, says STOPPING=1 when a stop begins and removes the
//! port file at a clean stop. A child closes every descriptor here (`fds`) and uses none.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use nix::fcntl::{AtFlags, FcntlArg, OFlag, fcntl};
use nix::sys::stat::Mode;
use nix::unistd::{Pid, UnlinkatFlags, getppid, unlinkat};

use super::exclusive;
use crate::log::logln;
use crate::nowait;

/// The harness options, from `crate::settings`.
#[derive(Debug, Clone, Default)]
pub struct Ties {
    pub port_file: Option<PathBuf>,
    pub ready_fd: Option<RawFd>,
    pub exit_with_parent: bool,
    pub stdin_lifeline: bool,
    pub log_file: Option<PathBuf>,
}

/// The port file: its directory (kept open: the sandbox lets the parent rename and unlink in
/// this directory alone), its name, and the random temporary name it was written under
/// (`exclusive`), once `stage` wrote it.
struct PortFile {
    dir: OwnedFd,
    name: CString,
    temporary: Option<CString>,
    shown: PathBuf,
    /// Whether the file is in place (renamed), to be removed at a clean stop.
    placed: bool,
}

pub struct Harness {
    port_file: Option<PortFile>,
    /// `--ready-fd`, and how to write to it without waiting (opened before the sandbox, which
    /// allows no open).
    ready: Option<nowait::Target>,
    notify: Option<UnixDatagram>,
    lifeline: Option<Lifeline>,
    /// With `--exit-with-parent`: the process that started forkecho.
    parent: Option<Pid>,
}

impl Harness {
    /// Opens and checks what the options ask for. Call before fds 0-2 are pointed elsewhere
    /// (the lifeline is a copy of stdin) and before `log::init` (the log file goes on fd 2).
    pub fn prepare(settings: &Ties) -> Result<Harness> {
        if let Some(path) = &settings.log_file {
            log_to(path)?;
        }
        let port_file = settings
            .port_file
            .as_deref()
            .map(PortFile::open)
            .transpose()?;
        let ready = match settings.ready_fd {
            Some(fd) => {
                // SAFETY: only borrowed for F_GETFD, which reports EBADF for a closed fd.
                fcntl(unsafe { BorrowedFd::borrow_raw(fd) }, FcntlArg::F_GETFD)
                    .with_context(|| format!("--ready-fd {fd}: fd {fd} is not open"))?;
                let (target, warning) = nowait::Target::open(fd, "the ready fd");
                if let Some(why) = warning {
                    logln!("warning: the listening line may wait for whoever reads it: {why}");
                }
                Some(target)
            }
            None => None,
        };
        let lifeline = match settings.stdin_lifeline {
            true => Some(Lifeline::open()?),
            false => None,
        };
        let parent = match settings.exit_with_parent {
            true => Some(parent_to_follow()?),
            false => None,
        };
        Ok(Harness {
            port_file,
            ready,
            notify: notify_socket(),
            lifeline,
            parent,
        })
    }

    /// `--exit-with-parent`: SIGTERM when the parent dies. Call after privileges are dropped (a
    /// change of credentials clears the setting). A parent already gone is a stop at once.
    pub fn follow_parent(&self) -> Result<()> {
        let Some(parent) = self.parent else {
            return Ok(());
        };
        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
            .context("--exit-with-parent: unable to set the parent-death signal")?;
        if getppid() != parent {
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGTERM);
        }
        Ok(())
    }

    /// Writes the port file under its temporary name: before the sandbox, which allows no
    /// open. An error names the file.
    pub fn stage(&mut self, port: Option<u16>) -> Result<()> {
        let Some(file) = &mut self.port_file else {
            return Ok(());
        };
        let Some(port) = port else {
            bail!(
                "--port-file {} names a TCP port, and every listener is a Unix socket",
                file.shown.display()
            );
        };
        let name = std::ffi::OsStr::from_bytes(file.name.as_bytes());
        let temporary =
            exclusive::create(&file.dir, name, format!("{port}\n").as_bytes(), 0o644)
                .with_context(|| format!("unable to write --port-file {}", file.shown.display()))?;
        file.temporary = Some(temporary);
        Ok(())
    }

    /// A start that failed after `stage`, or a port file that could not be put in place: the
    /// temporary file goes.
    pub fn unstage(&mut self) {
        if let Some(file) = &mut self.port_file
            && let Some(temporary) = file.temporary.take()
        {
            exclusive::discard(&file.dir, &temporary);
        }
    }

    /// The moment of the readiness line (`line`, with its newline): the port file is renamed
    /// into place, the ready fd gets the line and is closed, and the service manager READY=1.
    /// Nothing here fails the start: what cannot be done is a warning.
    pub fn announce(&mut self, line: &str) {
        if let Some(file) = &mut self.port_file
            && let Some(temporary) = &file.temporary
        {
            match exclusive::place(&file.dir, temporary, &file.name) {
                Ok(()) => {
                    file.placed = true;
                    file.temporary = None;
                }
                Err(err) => {
                    logln!(
                        "warning: unable to put --port-file {} in place: {err}",
                        file.shown.display()
                    );
                    self.unstage();
                }
            }
        }
        if let Some(target) = self.ready.take() {
            let fd = target.given;
            if !target.write(line.as_bytes()) {
                logln!("warning: unable to write the listening line to --ready-fd {fd}");
            }
            target.close();
            // SAFETY: the fd the harness handed us for this one line; nothing else uses it.
            unsafe { nix::libc::close(fd) };
        }
        // One line for STATUS: every line of the message must be VAR=VALUE (with --udp the
        // readiness text has two lines).
        let status = line.trim_end().replace('\n', "; ");
        self.notify(&format!(
            "READY=1\nMAINPID={}\nSTATUS={status}",
            std::process::id()
        ));
    }

    /// A stop begins: STOPPING=1 for the service manager.
    pub fn stopping(&self) {
        self.notify("STOPPING=1");
    }

    /// A clean stop: the port file goes (and a temporary one never placed).
    pub fn stopped(&mut self) {
        if let Some(file) = &self.port_file
            && file.placed
        {
            let _ = unlinkat(&file.dir, file.name.as_c_str(), UnlinkatFlags::NoRemoveDir);
        }
        self.unstage();
    }

    /// The lifeline's descriptor, for the parent's poll.
    pub fn lifeline(&self) -> Option<RawFd> {
        self.lifeline
            .as_ref()
            .map(|lifeline| lifeline.fd.as_raw_fd())
    }

    /// After poll found the lifeline readable: reads what stdin has and drops it; true once
    /// stdin has reached its end (or failed).
    pub fn lifeline_ended(&self) -> bool {
        self.lifeline.as_ref().is_some_and(Lifeline::ended)
    }

    /// The port file's directory: the one place the sandbox lets the parent rename and unlink.
    pub fn directory(&self) -> Option<RawFd> {
        self.port_file.as_ref().map(|file| file.dir.as_raw_fd())
    }

    /// Every descriptor here, for a child to close.
    pub fn fds(&self) -> [RawFd; 3] {
        let fd = |fd: Option<RawFd>| fd.unwrap_or(-1);
        [
            fd(self.directory()),
            fd(self.notify.as_ref().map(AsRawFd::as_raw_fd)),
            fd(self.lifeline()),
        ]
    }

    fn notify(&self, message: &str) {
        if let Some(socket) = &self.notify {
            // Non-blocking: a service manager that does not read costs the message, not serving.
            let _ = socket.send(message.as_bytes());
        }
    }
}

/// `--stdin-lifeline`: stdin, read without ever waiting, and without touching how anyone else
/// reads it. O_NONBLOCK belongs to the open file description, which the harness's side may share:
/// a pipe or terminal is opened anew through /proc/self/fd/0 (a description of our own, made
/// non-blocking); a socket is read with MSG_DONTWAIT; anything else, once per readiness poll
/// reports.
struct Lifeline {
    fd: OwnedFd,
    how: Reading,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// A private non-blocking description: read until EAGAIN.
    Private,
    /// recv(2) with MSG_DONTWAIT.
    Socket,
    /// The shared description: one read per readiness (which poll reported, so it does not
    /// wait unless another reader took the bytes first).
    Once,
}

impl Lifeline {
    fn open() -> Result<Lifeline> {
        // SAFETY: only borrowed for fstat; a closed fd gives EBADF.
        let stat = nix::sys::stat::fstat(unsafe { BorrowedFd::borrow_raw(0) })
            .context("--stdin-lifeline: stdin is not open")?;
        let kind =
            nix::sys::stat::SFlag::from_bits_truncate(stat.st_mode) & nix::sys::stat::SFlag::S_IFMT;
        let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC | OFlag::O_NOCTTY;
        if kind != nix::sys::stat::SFlag::S_IFSOCK
            && let Ok(fd) = nix::fcntl::open("/proc/self/fd/0", flags, Mode::empty())
        {
            return Ok(Lifeline {
                fd,
                how: Reading::Private,
            });
        }
        // SAFETY: only borrowed to duplicate it; fd 0 stays open as it was.
        let stdin = unsafe { BorrowedFd::borrow_raw(0) };
        let dup = fcntl(stdin, FcntlArg::F_DUPFD_CLOEXEC(3))
            .context("--stdin-lifeline: unable to keep stdin")?;
        Ok(Lifeline {
            // SAFETY: a new fd this process owns from here on.
            fd: unsafe { OwnedFd::from_raw_fd(dup) },
            how: match kind == nix::sys::stat::SFlag::S_IFSOCK {
                true => Reading::Socket,
                false => Reading::Once,
            },
        })
    }

    fn ended(&self) -> bool {
        let mut dropped = [0u8; 512];
        loop {
            let read = match self.how {
                Reading::Socket => nix::sys::socket::recv(
                    self.fd.as_raw_fd(),
                    &mut dropped,
                    nix::sys::socket::MsgFlags::MSG_DONTWAIT,
                ),
                Reading::Private | Reading::Once => nix::unistd::read(&self.fd, &mut dropped),
            };
            match read {
                Ok(0) => return true,
                Ok(_) if self.how == Reading::Once => return false,
                Ok(_) => {}
                Err(nix::errno::Errno::EAGAIN) => return false,
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return true,
            }
        }
    }
}

impl PortFile {
    fn open(path: &Path) -> Result<PortFile> {
        let unable = || format!("unable to write --port-file {}", path.display());
        let name = path
            .file_name()
            .with_context(|| format!("{}: not a file name", unable()))?;
        let dir = exclusive::open_dir(path).with_context(unable)?;
        // The directory must take a new file, and the name must be one a file can be renamed
        // to: checked now, not at the moment of readiness.
        nix::unistd::faccessat(&dir, ".", nix::unistd::AccessFlags::W_OK, AtFlags::empty())
            .map_err(io::Error::from)
            .with_context(unable)?;
        exclusive::check_target(&dir, name).with_context(unable)?;
        Ok(PortFile {
            dir,
            name: CString::new(name.as_bytes()).with_context(unable)?,
            temporary: None,
            shown: path.to_path_buf(),
            placed: false,
        })
    }
}

/// `--log-file`: the file is opened once, appending, and put on fd 2, where the log writes (plain
/// writes: a file never waits for a reader). Serving and `--inetd` alike.
pub fn log_to(path: &Path) -> Result<()> {
    let flags = OFlag::O_WRONLY | OFlag::O_APPEND | OFlag::O_CREAT | OFlag::O_CLOEXEC;
    let file = nix::fcntl::open(path, flags, Mode::from_bits_truncate(0o644))
        .map_err(io::Error::from)
        .with_context(|| format!("unable to open --log-file {}", path.display()))?;
    // SAFETY: dup2 onto fd 2 replaces it atomically; nothing holds fd 2 as an object.
    let done = unsafe { nix::libc::dup2(file.as_raw_fd(), 2) };
    if done < 0 {
        bail!(
            "unable to log to {}: {}",
            path.display(),
            io::Error::last_os_error()
        );
    }
    Ok(())
}

/// `--exit-with-parent`'s parent: the process forkecho has as its parent when it starts. A
/// launcher that exits before forkecho starts (`( sleep 1; exec forkecho ... ) & exit`) has
/// handed it to init already, and init never dies: a parent that is pid 1 (or none at all, for
/// forkecho as pid 1 of a namespace) is a startup error, not a lifeline that never fires. (A
/// subreaper that adopted forkecho cannot be told from the launcher: it is followed.) A parent
/// that dies after this, before the prctl, is caught by `follow_parent`.
fn parent_to_follow() -> Result<Pid> {
    let parent = getppid();
    match parent.as_raw() {
        0 => bail!("--exit-with-parent: forkecho has no parent in its pid namespace to follow"),
        1 if nix::unistd::getpid().as_raw() != 1 => bail!(
            "--exit-with-parent: forkecho's parent is init (pid 1): the process that started it \
             had exited already, or init started it, and init never exits"
        ),
        _ => Ok(parent),
    }
}

/// The service manager's notification socket (`NOTIFY_SOCKET`: a path, or `@name` in the
/// abstract namespace), connected now, before the sandbox forbids making sockets, and taken out
/// of the environment. None without it; a socket that cannot be reached is a warning.
fn notify_socket() -> Option<UnixDatagram> {
    let target = std::env::var_os("NOTIFY_SOCKET")?;
    // SAFETY: single-threaded at startup; nothing reads the environment concurrently.
    unsafe { std::env::remove_var("NOTIFY_SOCKET") };
    let connected = UnixDatagram::unbound().and_then(|socket| {
        match target.as_bytes().strip_prefix(b"@") {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                socket.connect_addr(&addr)?;
            }
            None => socket.connect(&target)?,
        }
        socket.set_nonblocking(true)?;
        Ok(socket)
    });
    match connected {
        Ok(socket) => Some(socket),
        Err(err) => {
            logln!(
                "warning: unable to reach NOTIFY_SOCKET {}: {err}",
                target.to_string_lossy()
            );
            None
        }
    }
}
