//! Clients: connecting with timeouts, round trips, whole echoes, free ports, and real client
//! programs fed on stdin.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output};
use std::thread;

use super::{DEADLINE, eventually};

/// A loopback port that was free a moment ago, for programs that cannot bind port 0 and say
/// which port they got.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind a loopback port")
        .port()
}

/// Connects to `addr`, retrying while the program that will listen there is starting.
pub fn connect_when_up(addr: SocketAddr) -> TcpStream {
    let mut stream = None;
    eventually(&format!("{addr} accepting"), DEADLINE, || {
        stream = TcpStream::connect(addr).ok();
        stream.is_some()
    });
    let stream = stream.unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.set_write_timeout(Some(DEADLINE)).unwrap();
    stream
}

/// Connects with timeouts, so a broken server fails the test instead of hanging it.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, DEADLINE)
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.set_write_timeout(Some(DEADLINE)).unwrap();
    stream
}

/// Sends `data`, half-closes, and returns everything read until the server closes. Writing
/// runs on its own thread so a large payload cannot deadlock against the echo.
pub fn echo_through(stream: TcpStream, data: &[u8]) -> Vec<u8> {
    let mut writer = stream.try_clone().unwrap();
    thread::scope(|scope| {
        scope.spawn(|| {
            writer.write_all(data).expect("send");
            writer.shutdown(Shutdown::Write).expect("half-close");
        });
        let mut received = Vec::with_capacity(data.len());
        (&stream).read_to_end(&mut received).expect("read the echo");
        received
    })
}

/// Writes `data` and reads back exactly as many bytes.
pub fn round_trip(stream: &mut TcpStream, data: &[u8]) -> Vec<u8> {
    stream.write_all(data).expect("send");
    let mut back = vec![0u8; data.len()];
    stream.read_exact(&mut back).expect("read the echo");
    back
}

/// One exchange as a client that retries would make it: connect, send `data`, half-close, read to
/// the end. A reset anywhere along the way is the error (a server that resets at once may do so
/// before connect(2) has even returned).
pub fn exchange(addr: SocketAddr, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect_timeout(&addr, DEADLINE)?;
    stream.set_read_timeout(Some(DEADLINE))?;
    stream.write_all(data)?;
    // After a reset this fails too (ENOTCONN); the read below says what happened.
    let _ = stream.shutdown(Shutdown::Write);
    let mut back = Vec::new();
    stream.read_to_end(&mut back)?;
    Ok(back)
}

/// Whether this host can use IPv6 on loopback.
pub fn have_ipv6() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

/// Runs the client `program args`, feeding it `input` (`run_with_input`).
pub fn run_client(program: &str, args: &[&str], input: Vec<u8>) -> Output {
    let mut command = Command::new(program);
    command.args(args);
    super::run_with_input(command, input)
}
