//! Closing ranges of descriptors at startup: what a launcher left open (`setup::clean`) and
//! systemd's sockets that are not ours to serve (`activation`). Used before the first fork only.

/// Closes fds `first` to `last`. One close_range(2) call, however wide the range; where the
/// kernel lacks it (before Linux 5.9), a close(2) for each up to the descriptor limit, which no
/// fd can exceed.
pub fn close_range(first: u32, last: u32) {
    if first > last {
        return;
    }
    // SAFETY: callers own every fd in the range: nothing in this process refers to them.
    if unsafe { nix::libc::close_range(first, last, 0) } == 0 {
        return;
    }
    // SAFETY: sysconf has no preconditions.
    let limit = unsafe { nix::libc::sysconf(nix::libc::_SC_OPEN_MAX) }.clamp(0, i32::MAX as i64);
    for fd in first..=last.min(limit as u32) {
        // SAFETY: as above.
        unsafe { nix::libc::close(fd as i32) };
    }
}
