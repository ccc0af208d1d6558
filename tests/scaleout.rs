//! The scale-out recipe: contrib/haproxy.cfg in front of two forkecho instances on loopback.
//!
//! `#[ignore]`d because it needs HAProxy (Debian package haproxy); `.ci/run` installs it and
//! runs this with `cargo test -- --ignored`.

mod common;

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::{
    DEADLINE, Server, assert_same_bytes, connect_when_up, echo_through, eventually, field,
    free_port, pattern,
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
    let bytes = bytes.to_string();
    server
        .log()
        .lines()
        .filter(|line| line.contains(" close ") && field(line, "bytes") == Some(&bytes))
        .count()
}

#[test]
#[ignore = "needs haproxy (package haproxy)"]
fn haproxy_spreads_clients_and_survives_a_killed_backend() {
    let echo1 = Server::start(&[]);
    let mut echo2_holder = Some(Server::start(&[]));
    let echo2 = echo2_holder.as_ref().unwrap();
    let front = SocketAddr::from(([127, 0, 0, 1], free_port()));

    // The shipped file, with its example addresses replaced by this test's.
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/haproxy.cfg"))
            .unwrap();
    for example in [
        "bind 127.0.0.1:9999",
        "127.0.0.1:10001 check",
        "127.0.0.1:10002 check",
    ] {
        assert_eq!(
            shipped.matches(example).count(),
            1,
            "{example} in haproxy.cfg"
        );
    }
    let config = shipped
        .replace("bind 127.0.0.1:9999", &format!("bind {front}"))
        .replace("127.0.0.1:10001 check", &format!("{} check", echo1.addr))
        .replace("127.0.0.1:10002 check", &format!("{} check", echo2.addr));
    let path = std::env::temp_dir().join(format!("forkecho-haproxy-{}.cfg", std::process::id()));
    std::fs::write(&path, config).unwrap();
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
    // The health check is a real echo: HAProxy's line came back from forkecho.
    assert!(
        served(&echo1, "haproxy-check\n".len()) >= 1,
        "no health check reached echo1:\n{}",
        echo1.log()
    );

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
