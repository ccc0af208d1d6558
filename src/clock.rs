//! The clocks a child reads, with clock_gettime(2) itself. std's `Instant` and `SystemTime` read
//! them through the vDSO, whose page, and std's code for it, a child would fault in for a read or
//! two: 2 page faults, some 4 µs, against 0.1 µs a system call. Read by a child's `connection`
//! (how long a connection lasted), the dumps (when each packet crossed) and the log's time stamps
//! (`log::time`, in the parent too); nothing is kept here.

use std::time::Duration;

/// The monotonic clock.
#[unsafe(link_section = ".text.hot.child")]
pub fn monotonic() -> Duration {
    read(nix::libc::CLOCK_MONOTONIC)
}

/// The wall clock, since the epoch.
#[unsafe(link_section = ".text.hot.child")]
pub fn realtime() -> Duration {
    read(nix::libc::CLOCK_REALTIME)
}

#[unsafe(link_section = ".text.hot.child")]
fn read(clock: nix::libc::clockid_t) -> Duration {
    let mut now = nix::libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: the kernel writes one timespec into `now`, which lives on this stack.
    unsafe { nix::libc::syscall(nix::libc::SYS_clock_gettime, clock, &raw mut now) };
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}
