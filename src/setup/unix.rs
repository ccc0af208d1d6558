//! Unix-socket listeners (`--bind unix:/path`, `--bind unix:@name`): binding without ever
//! stealing another server's socket, the file's permissions and owner, its removal at a clean
//! stop, and who a client is (SO_PEERCRED).
//!
//! Before binding a path, what is there decides: nothing, and forkecho binds; a socket nobody
//! listens on (a server that was killed left it: connect(2) says ECONNREFUSED), and it is
//! replaced; a socket someone listens on, or anything that is not a socket, and starting fails,
//! naming the path. The file is made with the process umask, or with exactly `--unix-mode`'s
//! bits (the umask is set around bind(2), so no other mode is ever visible), and handed to
//! `--user` and `--group` before privileges go. Abstract names (`@name`) have no file: the kernel
//! frees the name with the socket, and a live name is simply EADDRINUSE.
//!
//! `setup` binds (here) before the sandbox; the parent owns the `SocketFile` with its listener
//! and removes the file when the listener is dropped at a clean stop, through the directory it
//! kept open (the sandbox lets the parent unlink in that directory alone). A child closes that
//! descriptor with the listener's and never removes anything. The parent's accept asks the kernel
//! who connected (`peer`), once per Unix connection; IP connections never pay for it.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::{Context, Result, bail};
use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::sys::socket::sockopt::PeerCredentials;
use nix::sys::stat::{Mode, SFlag, lstat};
use nix::unistd::{Gid, Pid, Uid, UnlinkatFlags};
use socket2::{Domain, SockAddr, Socket, Type};

use super::exclusive;
use crate::address::Name;
use crate::peer::Cred;

/// Who a Unix listener's file is to belong to (`--user`, `--group`), and with which permission
/// bits (`--unix-mode`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Making {
    pub mode: Option<u32>,
    pub owner: Option<(Option<Uid>, Gid)>,
}

/// A socket file this process made, to be removed when its listener goes: only if it is still
/// the one bound (the same device and inode). Someone may have removed it meanwhile (a tmp
/// cleaner, a script) and another server bound the same path: its file is left alone.
#[derive(Debug)]
pub struct SocketFile {
    /// The directory it is in, kept open: the sandbox lets the parent unlink here alone.
    dir: OwnedFd,
    name: CString,
    /// The path, as the log shows it (`unix:/path`).
    shown: Name,
    /// The device and inode bind(2) made.
    identity: (u64, u64),
    /// The process that bound it: only it removes the file.
    owner: Pid,
    /// Removed (or left) already.
    done: bool,
}

impl SocketFile {
    /// The directory's descriptor, for the sandbox and for a child to close.
    pub fn dir_fd(&self) -> RawFd {
        self.dir.as_raw_fd()
    }

    /// Removes the file if it is still the one this process bound; otherwise (or if it is gone
    /// already) leaves it and returns its name, for the `stopped` line.
    pub fn remove(&mut self) -> Option<&Name> {
        if self.done || nix::unistd::getpid() != self.owner {
            return None;
        }
        self.done = true;
        match identity(&self.dir, &self.name) {
            Ok(found) if found == self.identity => {
                let flags = UnlinkatFlags::NoRemoveDir;
                nix::unistd::unlinkat(&self.dir, self.name.as_c_str(), flags).ok()?;
                None
            }
            Ok(_) => Some(&self.shown),
            // Gone already: nothing to remove, nothing of someone else's either.
            Err(_) => None,
        }
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = self.remove();
    }
}

/// The device and inode of `name` in `dir` (the name itself, never a link's target).
fn identity(dir: &OwnedFd, name: &CString) -> nix::Result<(u64, u64)> {
    let stat = nix::sys::stat::fstatat(dir, name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW)?;
    Ok((stat.st_dev, stat.st_ino))
}

/// A listening Unix socket on `name`, and its file if it has one.
pub fn listen(name: &Name, backlog: i32, making: Making) -> Result<(Socket, Option<SocketFile>)> {
    let unable = || format!("unable to bind {name}");
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None).with_context(unable)?;
    if let Name::Path(path) = name {
        clear_stale(path, name)?;
    }
    let addr = name.sockaddr().with_context(unable)?;
    let file = match name {
        Name::Abstract(_) => {
            socket.bind(&addr).with_context(unable)?;
            None
        }
        Name::Path(path) => {
            // The directory first: if it cannot be opened, nothing is bound and nothing is left.
            let dir = exclusive::open_dir(path).with_context(unable)?;
            bind_with_mode(&socket, &addr, making.mode).with_context(unable)?;
            let file_name = CString::new(path.file_name().unwrap_or_default().as_bytes())
                .with_context(unable)?;
            let bound = identity(&dir, &file_name)
                .map_err(io::Error::from)
                .with_context(unable)?;
            let file = SocketFile {
                dir,
                name: file_name,
                shown: name.clone(),
                identity: bound,
                owner: nix::unistd::getpid(),
                done: false,
            };
            if let Some((uid, gid)) = making.owner {
                nix::unistd::fchownat(
                    &file.dir,
                    file.name.as_c_str(),
                    uid,
                    Some(gid),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(io::Error::from)
                .with_context(|| format!("unable to hand {name} to --user/--group"))?;
            }
            Some(file)
        }
    };
    socket.listen(backlog).with_context(unable)?;
    socket.set_nonblocking(true).with_context(unable)?;
    Ok((socket, file))
}

/// Makes way for binding `path`: nothing to do if nothing is there; a stale socket is removed;
/// a live one, or anything else, is an error naming it.
fn clear_stale(path: &Path, name: &Name) -> Result<()> {
    let stat = match lstat(path) {
        Err(Errno::ENOENT) => return Ok(()),
        Err(errno) => {
            return Err(io::Error::from(errno)).with_context(|| format!("unable to bind {name}"));
        }
        Ok(stat) => stat,
    };
    if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFSOCK {
        bail!("unable to bind {name}: the path exists and is not a socket; not replacing it");
    }
    let probe = Socket::new(Domain::UNIX, Type::STREAM, None)
        .with_context(|| format!("unable to check {name}"))?;
    let addr = SockAddr::unix(path).with_context(|| format!("unable to check {name}"))?;
    match probe.connect(&addr) {
        Ok(()) => bail!(
            "unable to bind {name}: another server is listening on it (stop it first, or choose \
             another path)"
        ),
        // Nobody listens: a server that died left it.
        Err(err) if err.raw_os_error() == Some(Errno::ECONNREFUSED as i32) => {
            std::fs::remove_file(path)
                .with_context(|| format!("unable to replace the stale socket {name}"))?;
            crate::log::logln!("replaced the stale socket {name}");
            Ok(())
        }
        Err(err) => Err(err).with_context(|| {
            format!("unable to bind {name}: unable to tell whether a server listens on it")
        }),
    }
}

/// Binds with the file's permission bits exactly `mode` (when given): the umask is set to its
/// complement around bind(2) and put back. Setup is single-threaded, so nothing else creates a
/// file meanwhile.
fn bind_with_mode(socket: &Socket, addr: &SockAddr, mode: Option<u32>) -> io::Result<()> {
    let Some(mode) = mode else {
        return socket.bind(addr);
    };
    let previous = nix::sys::stat::umask(Mode::from_bits_truncate(!mode & 0o777));
    let bound = socket.bind(addr);
    nix::sys::stat::umask(previous);
    bound
}

/// Who is at the other end of an accepted Unix connection.
pub fn peer(socket: &Socket) -> io::Result<Cred> {
    let cred = nix::sys::socket::getsockopt(socket, PeerCredentials)?;
    Ok(Cred {
        uid: cred.uid(),
        pid: cred.pid(),
    })
}
