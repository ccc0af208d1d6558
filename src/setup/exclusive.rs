//! Files forkecho writes into directories other users may share (/tmp, a CI workspace): the port
//! file (`--port-file`, through `harness`) and the CA certificate (`--tls-ca-out`, through
//! `certificates`), and the directory a file goes in (`open_dir`, also for a Unix socket's file).
//! Written by `setup` alone, before the sandbox; read by whoever waits for the file.
//!
//! A predictable temporary name is a trap there: a local user plants a symlink under it and
//! `open(O_CREAT|O_TRUNC)` overwrites the link's target, as root if forkecho runs as root, or
//! plants a FIFO and the open never returns. So every temporary file is created with
//! `O_CREAT|O_EXCL|O_NOFOLLOW` under a random name (`.NAME.RANDOM.tmp`), retried on a clash:
//! O_EXCL fails on anything already there, links and FIFOs included, and never opens it. The
//! finished file is renamed into place, which replaces whatever has the final name (a planted
//! link included) without following it, atomically: a reader sees the whole file or none.

use std::ffi::{CString, OsStr};
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat, renameat};
use nix::sys::stat::{Mode, SFlag, fstatat};
use nix::unistd::{UnlinkatFlags, unlinkat};

/// Names tried before giving up: with 64 random bits a clash is someone guessing on purpose.
const TRIES: usize = 16;

/// The directory `path` is in (`.` for a bare name), opened to create, rename and remove in:
/// by descriptor, so the sandbox can allow those calls there alone.
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    Ok(nix::fcntl::open(dir, flags, Mode::empty())?)
}

/// Writes `data` to `path` at once with permissions `mode`: a temporary file made exclusively
/// beside it, then renamed into place, so a reader sees the whole file or none (`--tls-ca-out`,
/// `--tls-client-cert-out`).
pub fn write(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other("not a file name"))?;
    let dir = open_dir(path)?;
    check_target(&dir, name)?;
    let temporary = create(&dir, name, data, mode)?;
    let final_name =
        CString::new(name.as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let placed = place(&dir, &temporary, &final_name);
    if placed.is_err() {
        discard(&dir, &temporary);
    }
    placed
}

/// Creates a new file in `dir` under a random temporary name for `name`, writes `data` to it,
/// and returns the temporary name (for `place` or `discard`). Nothing already in `dir` is
/// opened, followed or truncated. A failed write leaves nothing behind.
pub fn create(dir: &impl AsFd, name: &OsStr, data: &[u8], mode: u32) -> io::Result<CString> {
    let flags = OFlag::O_WRONLY
        | OFlag::O_CREAT
        | OFlag::O_EXCL
        | OFlag::O_NOFOLLOW
        | OFlag::O_NONBLOCK
        | OFlag::O_CLOEXEC;
    for _ in 0..TRIES {
        let temporary = temporary_name(name, random()?)?;
        let fd = match openat(
            dir,
            temporary.as_c_str(),
            flags,
            Mode::from_bits_truncate(mode),
        ) {
            Ok(fd) => fd,
            Err(Errno::EEXIST) => continue,
            Err(errno) => return Err(errno.into()),
        };
        let written = std::fs::File::from(fd).write_all(data);
        if let Err(err) = written {
            discard(dir, &temporary);
            return Err(err);
        }
        return Ok(temporary);
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("{TRIES} random temporary names were all taken"),
    ))
}

/// Renames the temporary file into place as `name`: atomic, and a link already named `name` is
/// replaced, not followed.
pub fn place(dir: &impl AsFd, temporary: &CString, name: &CString) -> io::Result<()> {
    Ok(renameat(dir, temporary.as_c_str(), dir, name.as_c_str())?)
}

/// Removes a temporary file that will not be placed.
pub fn discard(dir: &impl AsFd, temporary: &CString) {
    let _ = unlinkat(dir, temporary.as_c_str(), UnlinkatFlags::NoRemoveDir);
}

/// Checks that a file can later be renamed to `name` in `dir`: nothing is there, or something
/// that is not a directory (a rename cannot replace a directory with a file).
pub fn check_target(dir: &impl AsFd, name: &OsStr) -> io::Result<()> {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(stat) if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR => {
            Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                "it is a directory; name a file in it",
            ))
        }
        Ok(_) | Err(Errno::ENOENT) => Ok(()),
        Err(errno) => Err(errno.into()),
    }
}

/// `.NAME.RANDOM.tmp`: hidden, and named after the file it becomes, so a person who finds one
/// left by a killed forkecho knows what it was.
fn temporary_name(name: &OsStr, random: u64) -> io::Result<CString> {
    let mut temporary = b".".to_vec();
    temporary.extend_from_slice(name.as_bytes());
    temporary.extend_from_slice(format!(".{random:016x}.tmp").as_bytes());
    CString::new(temporary).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// 64 random bits from getrandom(2).
fn random() -> io::Result<u64> {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into the buffer, which outlives it.
    let got = unsafe { nix::libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    match got {
        8 => Ok(u64::from_ne_bytes(bytes)),
        _ => Err(io::Error::last_os_error()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_are_hidden_random_and_name_the_file() {
        let name = temporary_name(OsStr::new("port"), 0xab).unwrap();
        assert_eq!(name.to_bytes(), b".port.00000000000000ab.tmp");
        assert_ne!(random().unwrap(), random().unwrap());
    }
}
