//! Processes as /proc shows them, read with the `procfs` crate, for the tests and the benchmark
//! (which includes this file by path): CPU times, children, states, memory.

#![allow(dead_code)] // the tests and the benchmark use different parts of this module

use std::time::Duration;

use ::procfs::process::{Process, Stat, Status, all_processes};

/// Process `pid`'s /proc/PID/stat, or None when there is no such process (any more).
pub fn stat(pid: i32) -> Option<Stat> {
    Process::new(pid).ok()?.stat().ok()
}

/// Process `pid`'s /proc/PID/status (`vmrss`, `vmsize`, ... in KiB).
pub fn status(pid: i32) -> Option<Status> {
    Process::new(pid).ok()?.status().ok()
}

/// The CPU time (user + system) of process `pid` itself, and of the children it has reaped.
pub fn cpu(pid: i32) -> Option<(Duration, Duration)> {
    let stat = stat(pid)?;
    let ticks = |count: u64| count * 1_000_000_000 / ::procfs::ticks_per_second();
    let children = (stat.cutime + stat.cstime).max(0) as u64;
    let own = Duration::from_nanos(ticks(stat.utime + stat.stime));
    Some((own, Duration::from_nanos(ticks(children))))
}

/// Child processes of `parent` as (pid, state).
pub fn children_of(parent: i32) -> Vec<(i32, char)> {
    let Ok(all) = all_processes() else {
        return Vec::new();
    };
    // Processes can vanish between listing and reading: they are skipped.
    let stats = all.flatten().filter_map(|process| process.stat().ok());
    let children = stats.filter(|stat| stat.ppid == parent);
    children.map(|stat| (stat.pid, stat.state)).collect()
}

/// When process `pid` started (clock ticks since boot): with the pid, it names one process even
/// across pid reuse. None when no such process exists.
pub fn start_time(pid: i32) -> Option<u64> {
    stat(pid).map(|stat| stat.starttime)
}

/// Process `pid`'s state letter (R, S, Z, ...), or None when there is no such process.
pub fn process_state(pid: i32) -> Option<char> {
    stat(pid).map(|stat| stat.state)
}
