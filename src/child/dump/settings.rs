//! What `--dump` fixed at startup, the same for every child: DIR (open), the limit of a file,
//! the counts every child adds to (in memory shared with the parent, mapped by `setup::dump`),
//! and the flags a file is made with (which the sandbox allows, and no others). Written once at
//! startup; read by `recorder`, the sandbox, and the parent's `stats` line and metrics.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};

/// What `--dump` fixed at startup, shared by every child.
#[derive(Debug)]
pub struct Dump {
    /// DIR, open (O_PATH): files are made relative to it.
    pub dir: RawFd,
    /// `--dump-limit`: the most bytes one file holds.
    pub limit: u64,
    /// Counted by every child, in memory shared with the parent.
    pub counts: &'static DumpCounts,
}

/// The dumps' counts, in a shared mapping of their own (`setup::dump`).
#[derive(Debug, Default)]
pub struct DumpCounts {
    /// Files made.
    pub files: AtomicU64,
    /// Files cut at `--dump-limit`.
    pub cut: AtomicU64,
    /// Dumps lost: the file could not be made, or a write to it failed.
    pub failed: AtomicU64,
}

impl DumpCounts {
    /// The counts, as the `stats` line and the metrics name them.
    pub fn named(&self) -> [(&'static str, u64); 3] {
        let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
        [
            ("files", load(&self.files)),
            ("cut", load(&self.cut)),
            ("failed", load(&self.failed)),
        ]
    }
}

/// The flags a dump file is created with; the sandbox allows exactly these (`sandbox`).
pub const CREATE: nix::fcntl::OFlag = nix::fcntl::OFlag::O_WRONLY
    .union(nix::fcntl::OFlag::O_CREAT)
    .union(nix::fcntl::OFlag::O_EXCL)
    .union(nix::fcntl::OFlag::O_NOFOLLOW)
    .union(nix::fcntl::OFlag::O_CLOEXEC);
