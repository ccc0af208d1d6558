//! Opening what `--dump` and `--tls-keylog` name, at startup, where a mistake is a startup error
//! naming the path: DIR is opened (a directory, searchable), its counts mapped into memory the
//! children share with the parent, and, once the privileges are gone, DIR checked writable by
//! the user that will write there (`check`); the key log file is opened for appending (mode 0600,
//! never through a link). The children write to both (`child::dump`, `tls::KeyLog`).

use std::os::fd::{IntoRawFd, RawFd};
use std::path::Path;

use anyhow::{Context, Result};
use nix::fcntl::{OFlag, open};
use nix::sys::mman::MapFlags;
use nix::sys::stat::Mode;
use nix::unistd::{AccessFlags, faccessat};

use crate::child::dump::settings::{Dump, DumpCounts};

/// Opens DIR for the children's dumps, each at most `limit` bytes.
pub fn prepare(dir: &Path, limit: u64) -> Result<&'static Dump> {
    let fd = open(
        dir,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| {
        format!(
            "--dump {}: not a directory that can be opened",
            dir.display()
        )
    })?;
    let page = crate::memory::map(4096, MapFlags::MAP_SHARED)
        .context("unable to map shared memory for the dumps' counts")?;
    const { assert!(size_of::<DumpCounts>() <= 4096) };
    let counts = page.cast::<DumpCounts>();
    // The mapping is never unmapped, and is shared with the children through fork. DumpCounts
    // is atomics only, for which all zeroes is a valid value.
    // SAFETY: a fresh, zeroed, page-aligned page, large enough for DumpCounts (asserted above).
    let counts: &'static DumpCounts = unsafe {
        counts.write(DumpCounts::default());
        counts.as_ref()
    };
    Ok(Box::leak(Box::new(Dump {
        dir: fd.into_raw_fd(),
        limit,
        counts,
    })))
}

/// Checks that the user forkecho now runs as can make files in DIR (after `--user`).
pub fn check(dump: &Dump, dir: &Path) -> Result<()> {
    // SAFETY: the descriptor stays open for the process's life (`prepare` leaked it).
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(dump.dir) };
    faccessat(
        fd,
        ".",
        AccessFlags::W_OK | AccessFlags::X_OK,
        nix::fcntl::AtFlags::AT_EACCESS,
    )
    .with_context(|| format!("--dump {}: unable to make files there", dir.display()))
}

/// Opens `--tls-keylog FILE` for appending (made with mode 0600 if it does not exist).
pub fn open_keylog(path: &Path) -> Result<RawFd> {
    let flags = OFlag::O_WRONLY
        | OFlag::O_APPEND
        | OFlag::O_CREAT
        | OFlag::O_NOFOLLOW
        | OFlag::O_NONBLOCK
        | OFlag::O_CLOEXEC;
    let fd = open(path, flags, Mode::from_bits_truncate(0o600))
        .with_context(|| format!("--tls-keylog {}: unable to open it", path.display()))?;
    Ok(fd.into_raw_fd())
}
