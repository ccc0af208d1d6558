//! For tests and the benchmark (which includes this file by path) that spawn forkecho raw, with
//! stdio or descriptors of their own: its readiness line read as `forkecho-fixture` reads it, and
//! a stop as a service manager makes one.

#![allow(dead_code)] // the tests and the benchmark use different parts of this module

use std::io::BufRead;
use std::net::SocketAddr;
use std::process::Child;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Reads forkecho's readiness line, `listening on ADDR[ ADDR...]`, from its stdout and returns
/// the first address, or the line (perhaps empty) that came instead.
pub fn read_readiness(stdout: &mut impl BufRead) -> Result<SocketAddr, String> {
    let mut line = String::new();
    let _ = stdout.read_line(&mut line);
    let found = forkecho_fixture::Addresses::parse(&line)?;
    found.tcp.first().or(found.udp.first()).copied().ok_or(line)
}

/// Stops `process` the way a service manager would: SIGTERM, up to `within` to exit, then
/// SIGKILL. It is reaped either way.
pub fn stop(process: &mut Child, within: Duration) {
    if let Ok(None) = process.try_wait() {
        let _ = kill(Pid::from_raw(process.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + within;
        while matches!(process.try_wait(), Ok(None)) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
    }
    let _ = process.kill();
    let _ = process.wait();
}
