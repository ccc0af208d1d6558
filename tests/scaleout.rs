//! The scale-out recipe: contrib/haproxy.cfg in front of two forkecho instances on loopback,
//! speaking the PROXY protocol to them (send-proxy-v2, forkecho --proxy-protocol).
//!
//! `#[ignore]`d because it needs HAProxy (Debian package haproxy); `.ci/run` installs it and
//! runs this with `cargo test -- --ignored`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::util::{
    DEADLINE, Server, assert_same_bytes, connect_when_up, echo_through, eventually, free_port,
    pattern,
};
use nix::sys::signal::Signal;

/// HAProxy in the foreground, killed when dropped; its stderr (alerts and warnings) collected.
struct Haproxy {
    process: Child,
    stderr: Arc<Mutex<String>>,
}

impl Haproxy {
    fn start(config: &std::path::Path) -> Haproxy {
        // Debian puts it in /usr/sbin, which a normal user's PATH may lack.
        let program = ["/usr/sbin/haproxy", "haproxy"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap_or("haproxy");
        let mut process = Command::new(program)
            .arg("-db")
            .arg("-f")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run haproxy (is it installed?)");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        let mut pipe = process.stderr.take().unwrap();
        thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        });
        Haproxy { process, stderr }
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// Close lines in `server`'s log for connections that echoed exactly `bytes` bytes.
fn served(server: &Server, bytes: usize) -> usize {
    server
        .events()
        .iter()
        .filter(|line| line.name() == "close" && line.u64("bytes") == Some(bytes as u64))
        .count()
}

/// contrib/haproxy.cfg, with its example addresses replaced by `front` and the two backends',
/// written to a file of its own.
fn shipped_config(front: SocketAddr, backends: [SocketAddr; 2], name: &str) -> std::path::PathBuf {
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/haproxy.cfg"))
            .unwrap();
    for example in [
        "bind 127.0.0.1:9999",
        "127.0.0.1:10001 check",
        "127.0.0.1:10002 check",
        "send-proxy-v2 check-send-proxy",
    ] {
        assert_eq!(
            shipped.matches(example).count(),
            1,
            "{example} in haproxy.cfg"
        );
    }
    let config = shipped
        .replace("bind 127.0.0.1:9999", &format!("bind {front}"))
        .replace("127.0.0.1:10001 check", &format!("{} check", backends[0]))
        .replace("127.0.0.1:10002 check", &format!("{} check", backends[1]));
    let path = std::env::temp_dir().join(format!("forkecho-{name}-{}.cfg", std::process::id()));
    std::fs::write(&path, config).unwrap();
    path
}

#[test]
#[ignore = "run with: cargo test -- --ignored (uses haproxy (package haproxy))"]
fn haproxy_spreads_clients_and_survives_a_killed_backend() {
    let echo1 = Server::start(&["--proxy-protocol"]);
    let mut echo2_holder = Some(Server::start(&["--proxy-protocol"]));
    let echo2 = echo2_holder.as_ref().unwrap();
    let front = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let path = shipped_config(front, [echo1.addr, echo2.addr], "haproxy");
    let haproxy = Haproxy::start(&path);

    // Four clients at once: leastconn puts two on each backend. Each is echoed byte for byte.
    let size = 300_001;
    let clients: Vec<TcpStream> = (0..4).map(|_| connect_when_up(front)).collect();
    thread::scope(|scope| {
        for (seed, client) in clients.into_iter().enumerate() {
            scope.spawn(move || {
                let data = pattern(seed as u64, size);
                assert_same_bytes(&echo_through(client, &data), &data);
            });
        }
    });
    eventually("both backends logging their clients", DEADLINE, || {
        served(&echo1, size) + served(echo2, size) == 4
    });
    assert!(
        served(&echo1, size) >= 1 && served(echo2, size) >= 1,
        "one backend took every client:\n{}\n{}",
        echo1.log(),
        echo2.log()
    );
    // The health check is a real echo: HAProxy's line came back from forkecho, under a PROXY
    // header saying LOCAL.
    assert!(
        served(&echo1, "haproxy-check\n".len()) >= 1,
        "no health check reached echo1:\n{}",
        echo1.log()
    );
    assert!(echo1.log().contains(" proxy=local "), "{}", echo1.log());
    // The clients are logged as themselves, HAProxy as the way they came.
    let client_lines = echo1
        .events()
        .iter()
        .filter(|l| l.name() == "close" && l.u64("bytes") == Some(size as u64))
        .cloned()
        .collect::<Vec<_>>();
    for line in &client_lines {
        let peer: SocketAddr = line.str("peer").unwrap().parse().unwrap();
        let via: SocketAddr = line.str("via").unwrap().parse().unwrap();
        assert_ne!(peer.port(), via.port(), "{line}");
    }
    assert!(!echo1.log().contains("proxy-error"), "{}", echo1.log());

    // Kill one backend outright; every client is still echoed, by the other one.
    let echo2 = echo2_holder.take().unwrap();
    echo2.signal(Signal::SIGKILL);
    drop(echo2);
    let before = served(&echo1, size);
    for seed in 10..16 {
        let data = pattern(seed, size);
        assert_same_bytes(&echo_through(connect_when_up(front), &data), &data);
    }
    eventually("echo1 logging the six clients", DEADLINE, || {
        served(&echo1, size) == before + 6
    });
    // And HAProxy's health checks notice (inter 2s, fall 2).
    eventually(
        "HAProxy marking echo2 down",
        Duration::from_secs(30),
        || haproxy.log().contains("echo2 is DOWN"),
    );
    let _ = std::fs::remove_file(&path);
}

/// A connection to `to` from address `from` (any port), with the test's timeouts.
fn try_connect_from(from: [u8; 4], to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::from((from, 0)).into())?;
    socket.connect_timeout(&to.into(), DEADLINE)?;
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(DEADLINE))?;
    Ok(stream)
}

fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    try_connect_from(from, to).unwrap_or_else(|e| panic!("connect to {to}: {e}"))
}

#[test]
#[ignore = "run with: cargo test -- --ignored (uses haproxy (package haproxy))"]
fn through_haproxy_max_per_ip_counts_each_client_not_the_balancer() {
    // Both of the shipped backends point at one forkecho, so every connection meets its limit.
    let echo = Server::start(&["--proxy-protocol", "--max-per-ip", "1"]);
    let front = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let path = shipped_config(front, [echo.addr, echo.addr], "haproxy-per-ip");
    let _haproxy = Haproxy::start(&path);
    // Up yet? (From an address of its own: HAProxy's health checks count under 127.0.0.1.)
    eventually("HAProxy accepting", DEADLINE, || {
        try_connect_from([127, 0, 0, 9], front).is_ok()
    });

    // Client A (127.0.0.2) holds a connection.
    let mut a1 = connect_from([127, 0, 0, 2], front);
    a1.write_all(b"first from A").unwrap();
    let mut back = [0u8; 12];
    a1.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"first from A");
    let accepted = echo
        .wait_for(|l| l.line.contains("accept peer=127.0.0.2:"))
        .expect("A's accept line");
    assert!(accepted.line.contains(" via=127.0.0.1:"), "{accepted}");
    // A second connection from A: refused by forkecho (no child, nothing echoed), so HAProxy
    // closes it.
    let mut a2 = connect_from([127, 0, 0, 2], front);
    let _ = a2.write_all(b"second from A");
    let mut rest = Vec::new();
    let _ = a2.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{rest:?}");
    // Client B (127.0.0.3), through the same HAProxy: served.
    let data = pattern(3, 10_000);
    assert_same_bytes(
        &echo_through(connect_from([127, 0, 0, 3], front), &data),
        &data,
    );
    echo.wait_for(|l| l.line.contains("accept peer=127.0.0.3:"))
        .expect("B's accept line");
    // One child for A, whatever the (rate-limited) refusal lines say.
    let from_a = echo.log().matches("accept peer=127.0.0.2:").count();
    assert_eq!(from_a, 1, "{}", echo.log());
    drop(a1);
    let _ = std::fs::remove_file(&path);
}
