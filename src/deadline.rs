//! poll(2) with a deadline, in `Duration`s: the one way forkecho waits on a descriptor.
//!
//! The parent's loop, the echo (a client with no room for its echo, a splice session waiting
//! for input) and the log (finishing a line a terminal took only in part) all wait this way.
//! (Waiting for a child is waitpid(2), in `parent/reaper.rs`; nothing here.) A timeout is rounded
//! up to whole milliseconds, never down to zero, which would spin.

use std::io;
use std::os::fd::AsFd;
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

/// A poll timeout for `left` (None: no limit), rounded up to whole milliseconds.
pub fn poll_timeout(left: Option<Duration>) -> PollTimeout {
    match left {
        None => PollTimeout::NONE,
        Some(left) => {
            let millis = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
            PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX)
        }
    }
}

/// Waits up to `left` (None: no limit) for `events` on `fd`: false if the time ran out, true if
/// they came or a signal ended the wait (the caller looks again).
pub fn poll_one(fd: &impl AsFd, events: PollFlags, left: Option<Duration>) -> io::Result<bool> {
    let mut fds = [PollFd::new(fd.as_fd(), events)];
    match poll(&mut fds, poll_timeout(left)) {
        Ok(0) => Ok(false),
        Ok(_) | Err(Errno::EINTR) => Ok(true),
        Err(errno) => Err(errno.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_round_up_to_whole_milliseconds() {
        let of = |d: Duration| i32::from(poll_timeout(Some(d)));
        assert_eq!(of(Duration::from_micros(1)), 1);
        assert_eq!(of(Duration::from_millis(100)), 100);
        assert_eq!(of(Duration::from_micros(100_001)), 101);
        assert_eq!(of(Duration::from_secs(u64::MAX)), i32::MAX);
        assert_eq!(poll_timeout(None), PollTimeout::NONE);
    }
}
