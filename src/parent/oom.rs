//! Children first for the OOM killer.
//!
//! Short of memory, the kernel's OOM killer picks the process with the highest badness, which grows
//! with size: the parent, whose death ends the whole service. A child may raise its own
//! `oom_score_adj` without privilege, but opening /proc/self/oom_score_adj in every child cost
//! 35–60 µs of CPU per connection (server CPU per connection 330 → 370 µs, in round 1's
//! benchmark, dynamically linked build). Instead the parent, through a file it opened once,
//! raises its own score to the maximum just before each fork, so the child is born with it, and
//! puts its own back right after. Lowering it again needs no privilege as long as the value is
//! not below `oom_score_adj_min` (which only a privileged writer sets), so `open` checks the
//! round trip once and leaves the feature off if it fails.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};

/// What children get: the kernel's maximum.
const CHILD_SCORE: &[u8] = b"1000";

pub struct OomScore {
    file: File,
    /// The parent's own score, as the kernel printed it.
    own: Vec<u8>,
}

impl OomScore {
    /// None where there is nothing to do (the parent is at the maximum already); an error saying
    /// why where it cannot be done (no /proc, or the parent's score could not be restored).
    /// Opened before privileges are dropped: the file is the process's own only while it can
    /// still open its /proc entries.
    pub fn open() -> Result<Option<OomScore>, String> {
        let path = "/proc/self/oom_score_adj";
        let unable = |err: std::io::Error| format!("unable to open {path}: {err}");
        let mut own = Vec::new();
        File::open(path)
            .and_then(|mut file| file.read_to_end(&mut own))
            .map_err(unable)?;
        let own = own.trim_ascii().to_vec();
        if own == CHILD_SCORE {
            return Ok(None);
        }
        let score = OomScore {
            file: OpenOptions::new().write(true).open(path).map_err(unable)?,
            own,
        };
        match score.raise() && score.restore() {
            true => Ok(Some(score)),
            false => Err(format!("unable to write {path} and put it back")),
        }
    }

    /// The parent's score becomes what the next child should be born with.
    pub fn raise(&self) -> bool {
        (&self.file).write(CHILD_SCORE).is_ok()
    }

    /// The parent's own score again.
    pub fn restore(&self) -> bool {
        (&self.file).write(&self.own).is_ok()
    }

    /// The file, for a child to close.
    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}
