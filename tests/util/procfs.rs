//! /proc/PID/stat, parsed in one place for the tests and the benchmark (which includes this
//! file by path).

#![allow(dead_code)] // the tests and the benchmark use different parts of this module

use std::time::Duration;

/// The fields of /proc/PID/stat that the tests and the benchmark read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// R, S, D, Z, T, ...
    pub state: char,
    pub ppid: i32,
    /// CPU time of the process itself and of its reaped children, in clock ticks.
    pub utime: u64,
    pub stime: u64,
    pub cutime: u64,
    pub cstime: u64,
    /// When the process started (clock ticks since boot): with the pid, it names one process
    /// even across pid reuse.
    pub starttime: u64,
}

impl Stat {
    /// The process's own CPU time (user + system).
    pub fn cpu(&self) -> Duration {
        ticks(self.utime + self.stime)
    }

    /// CPU time of the children it has reaped (user + system).
    pub fn children_cpu(&self) -> Duration {
        ticks(self.cutime + self.cstime)
    }
}

/// Process `pid`'s stat, or None when there is no such process (any more).
pub fn stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid ...": comm may hold spaces and parentheses; split after the last ')'.
    let rest: Vec<&str> = text.rsplit_once(") ")?.1.split(' ').collect();
    // Field n of stat(5) is rest[n - 3].
    let number = |n: usize| -> Option<u64> { rest.get(n - 3)?.parse().ok() };
    Some(Stat {
        state: rest.first()?.chars().next()?,
        ppid: rest.get(1)?.parse().ok()?,
        utime: number(14)?,
        stime: number(15)?,
        cutime: number(16)?,
        cstime: number(17)?,
        starttime: number(22)?,
    })
}

/// Child processes of `parent` as (pid, state).
pub fn children_of(parent: i32) -> Vec<(i32, char)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        // Processes can vanish between listing and reading: stat says None and they are skipped.
        .filter_map(|pid| stat(pid).map(|stat| (pid, stat)))
        .filter(|(_, stat)| stat.ppid == parent)
        .map(|(pid, stat)| (pid, stat.state))
        .collect()
}

fn ticks(count: u64) -> Duration {
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_nanos(count * 1_000_000_000 / per_second)
}

/// Child processes of `parent` as (pid, state), from /proc/*/stat.
pub fn children_of_pid(parent: nix::unistd::Pid) -> Vec<(i32, char)> {
    children_of(parent.as_raw())
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

/// A field of /proc/PID/status given in kB (`VmRSS`, `VmSize`, ...), in KiB.
pub fn status_kib(pid: i32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches(" kB").trim().parse().ok())
}
