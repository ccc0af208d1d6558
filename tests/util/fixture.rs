//! Starting forkecho as a fixture and stopping it, for the tests (`Server`) and the benchmark
//! (which includes this file by path): the two halves every harness of forkecho needs.

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
    read_readiness_all(stdout).map(|addrs| addrs[0])
}

/// Reads the readiness line and returns every IP address on it.
pub fn read_readiness_all(stdout: &mut impl BufRead) -> Result<Vec<SocketAddr>, String> {
    let (ip, _) = read_readiness_split(stdout)?;
    match ip.is_empty() {
        true => Err("no IP address on the listening line".to_string()),
        false => Ok(ip),
    }
}

/// Reads the readiness line and returns its IP addresses and its Unix sockets (`unix:/path`,
/// `unix:@name`), in the order the line lists them; with `--udp-only`, the UDP addresses of the
/// line `listening on udp ADDR...` as the IP ones.
pub fn read_readiness_split(
    stdout: &mut impl BufRead,
) -> Result<(Vec<SocketAddr>, Vec<String>), String> {
    let mut line = String::new();
    let _ = stdout.read_line(&mut line);
    let Some(rest) = line
        .strip_prefix("listening on ")
        .and_then(|rest| rest.strip_suffix('\n'))
    else {
        return Err(line);
    };
    let rest = rest.strip_prefix("udp ").unwrap_or(rest);
    let (mut ip, mut unix) = (Vec::new(), Vec::new());
    for addr in rest.split(' ') {
        match (addr.starts_with("unix:"), addr.parse()) {
            (true, _) => unix.push(addr.to_string()),
            (false, Ok(addr)) => ip.push(addr),
            (false, Err(_)) => return Err(line),
        }
    }
    Ok((ip, unix))
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
