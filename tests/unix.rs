//! Unix-socket listeners (`--bind unix:PATH`, `unix:@NAME`): served beside IP listeners by the
//! one loop, clients named by their credentials and counted per user, stale files replaced and
//! live ones never stolen, the file's mode and its removal at a clean stop, and the real clients
//! (nc -U, socat, Python, `forkecho ping`).

use std::io::{Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::sys::signal::Signal;

use crate::util::{
    DEADLINE, Scratch, Server, assert_same_bytes, binary, fails_to_start, pattern, round_trip,
    run_client, run_to_completion,
};

fn connect(path: &Path) -> UnixStream {
    let stream = UnixStream::connect(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream
}

/// What this process is called in forkecho's log lines.
fn me() -> String {
    format!(
        "unix:uid={},pid={}",
        nix::unistd::getuid(),
        std::process::id()
    )
}

fn echo(mut stream: UnixStream, data: &[u8]) -> Vec<u8> {
    let mut writer = stream.try_clone().unwrap();
    let sent = data.to_vec();
    let sender = std::thread::spawn(move || {
        writer.write_all(&sent).unwrap();
        writer.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut back = Vec::new();
    stream.read_to_end(&mut back).unwrap();
    sender.join().unwrap();
    back
}

#[test]
fn a_unix_socket_is_served_beside_an_ip_listener_and_names_its_client_by_credentials() {
    let dir = Scratch::new("unix-beside");
    let sock = dir.path("fe.sock");
    let server = Server::start(&["-b", "127.0.0.1", "-b", &dir.unix("fe.sock")]);
    assert_eq!(server.addresses().unix, std::slice::from_ref(&sock));
    assert!(
        std::fs::symlink_metadata(&sock)
            .unwrap()
            .file_type()
            .is_socket()
    );
    // Bulk, so the echo moves on to splice, which Unix sockets take too.
    let data = pattern(3, 3 << 20);
    assert_same_bytes(&echo(connect(&sock), &data), &data);
    let mut tcp = server.connect();
    assert_eq!(round_trip(&mut tcp, b"and over TCP"), b"and over TCP");
    let close = server
        .wait_for(|l| l.name() == "close" && l.str("peer") == Some(me().as_str()))
        .expect("the Unix close line");
    assert_eq!(close.u64("bytes"), Some(data.len() as u64), "{close}");
    assert_eq!(close.str("end"), Some("client-closed"), "{close}");
    let accept = server
        .wait_for(|l| l.name() == "accept")
        .expect("the Unix accept line");
    assert_eq!(accept.str("peer"), Some(me().as_str()), "{accept}");
}

#[test]
fn the_socket_file_is_removed_at_a_clean_stop_and_left_by_sigkill_for_the_next_start_to_replace() {
    let dir = Scratch::new("unix-stop");
    let sock = dir.path("fe.sock");
    let mut server = Server::start(&["-b", &dir.unix("fe.sock")]);
    assert!(
        server.addresses().tcp.is_empty(),
        "no IP listener: {:?}",
        server.addresses().tcp
    );
    let stopped = server.stop();
    assert!(stopped.line.contains("stopped"), "{stopped}");
    assert!(
        !sock.exists(),
        "removed at a clean stop (under the sandbox)"
    );

    let server = Server::start(&["-b", &dir.unix("fe.sock")]);
    server.signal(Signal::SIGKILL);
    crate::util::eventually("the killed server to be gone", DEADLINE, || {
        UnixStream::connect(&sock).is_err()
    });
    assert!(sock.exists(), "a killed server cannot remove its file");
    drop(server);
    // A socket nobody listens on: stale, replaced, and said so.
    let server = Server::start(&["-b", &dir.unix("fe.sock")]);
    assert_eq!(echo(connect(&sock), b"again"), b"again");
    server
        .wait_for(|l| {
            l.line.contains(&format!(
                "replaced the stale socket unix:{}",
                sock.display()
            ))
        })
        .expect("the replacement line");
}

#[test]
fn a_live_socket_is_never_stolen_and_other_files_are_never_replaced() {
    let dir = Scratch::new("unix-live");
    let sock = dir.path("taken.sock");
    let other = UnixListener::bind(&sock).unwrap();
    let stderr = fails_to_start(&["-b", &dir.unix("taken.sock")]);
    assert!(
        stderr.contains(&format!("unable to bind unix:{}", sock.display()))
            && stderr.contains("another server is listening on it"),
        "{stderr}"
    );
    // The other server still has its socket.
    let _client = UnixStream::connect(&sock).unwrap();
    assert!(other.accept().is_ok());

    let file = dir.path("notes.txt");
    std::fs::write(&file, "keep me").unwrap();
    let stderr = fails_to_start(&["-b", &dir.unix("notes.txt")]);
    assert!(stderr.contains("exists and is not a socket"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");

    let stderr = fails_to_start(&[
        "-b",
        &format!("unix:{}/no/such/dir/fe.sock", dir.0.display()),
    ]);
    assert!(stderr.contains("unable to bind unix:"), "{stderr}");
    assert!(stderr.contains("No such file or directory"), "{stderr}");
}

#[test]
fn an_ip_listener_that_fails_leaves_no_socket_file_behind() {
    let dir = Scratch::new("unix-unwind");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    // The Unix listener is bound first here only if forkecho got the order wrong; either way no
    // file may stay.
    let stderr = fails_to_start(&["-p", &port, "-b", &dir.unix("fe.sock"), "-b", "127.0.0.1"]);
    assert!(stderr.contains("Address already in use"), "{stderr}");
    assert!(!dir.path("fe.sock").exists());
    // And a failure after the Unix listener is bound (here --proxy-protocol, which Unix sockets do
    // not take) removes the file it made.
    let stderr = fails_to_start(&["-b", &dir.unix("fe.sock"), "--proxy-protocol"]);
    assert!(
        stderr.contains("--proxy-protocol is for IP listeners"),
        "{stderr}"
    );
    assert!(!dir.path("fe.sock").exists());
}

#[test]
fn the_mode_comes_from_the_umask_or_exactly_from_unix_mode() {
    let dir = Scratch::new("unix-mode");
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o7777;
    let mut command = Command::new(binary());
    command.args(["-b", &dir.unix("umask.sock")]);
    // SAFETY: umask is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            nix::libc::umask(0o027);
            Ok(())
        });
    }
    let server = Server::spawn(command);
    assert_eq!(mode(&dir.path("umask.sock")), 0o750);
    drop(server);
    let server = Server::start(&["-b", &dir.unix("exact.sock"), "--unix-mode", "0660"]);
    assert_eq!(mode(&dir.path("exact.sock")), 0o660);
    assert_eq!(echo(connect(&dir.path("exact.sock")), b"rw"), b"rw");
    drop(server);
    let mut command = Command::new(binary());
    command.args(["-b", &dir.unix("bad.sock"), "--unix-mode", "0888"]);
    let out = run_to_completion(command);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "a usage error: {stderr}");
    assert!(
        stderr.contains("'0888'") && stderr.contains("octal"),
        "{stderr}"
    );
    assert!(!dir.path("bad.sock").exists());
}

#[test]
fn an_abstract_name_is_served_and_has_no_file() {
    let name = format!("forkecho-test-{}", std::process::id());
    let server = Server::start(&["-b", &format!("unix:@{name}")]);
    assert_eq!(server.addresses().unix, [PathBuf::from(format!("@{name}"))]);
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(&name).unwrap();
    let stream = UnixStream::connect_addr(&addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    assert_eq!(echo(stream, b"abstract"), b"abstract");
    // Taken while it runs.
    let stderr = fails_to_start(&["-b", &format!("unix:@{name}")]);
    assert!(stderr.contains("Address already in use"), "{stderr}");
}

#[test]
fn max_per_ip_and_rate_per_ip_count_unix_clients_per_user() {
    let dir = Scratch::new("unix-peruser");
    let sock = dir.path("fe.sock");
    let server = Server::start(&["-b", &dir.unix("fe.sock"), "--max-per-ip", "1"]);
    let mut first = connect(&sock);
    assert_eq!(round_trip_unix(&mut first, b"one"), b"one");
    // The same user again, from another process even (this one): refused at once.
    let mut second = connect(&sock);
    let mut buf = [0u8; 8];
    let _ = second.write_all(b"two");
    assert_eq!(second.read(&mut buf).unwrap_or(0), 0, "closed unserved");
    let refused = server
        .wait_for(|l| l.name() == "refused")
        .expect("the refused line");
    let uid = nix::unistd::getuid().to_string();
    assert_eq!(
        refused.str("group"),
        Some(&*format!("uid:{uid}")),
        "{refused}"
    );
    assert_eq!(refused.str("reason"), Some("max-per-ip"), "{refused}");
    drop(server);

    let server = Server::start(&["-b", &dir.unix("rate.sock"), "--rate-per-ip", "1/60"]);
    let sock = dir.path("rate.sock");
    assert_eq!(echo(connect(&sock), b"in"), b"in");
    let mut over = connect(&sock);
    match over.read(&mut buf) {
        Ok(0) => {}
        Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("over the rate, yet served: {other:?}"),
    }
    let refused = server
        .wait_for(|l| l.name() == "refused")
        .expect("the refused line");
    assert_eq!(refused.str("reason"), Some("rate-per-ip"), "{refused}");
    assert_eq!(
        refused.str("group"),
        Some(&*format!("uid:{uid}")),
        "{refused}"
    );
}

fn round_trip_unix(stream: &mut UnixStream, data: &[u8]) -> Vec<u8> {
    stream.write_all(data).unwrap();
    let mut back = vec![0u8; data.len()];
    stream.read_exact(&mut back).unwrap();
    back
}

#[test]
fn faults_apply_to_unix_connections_and_the_idle_timeout_holds() {
    let dir = Scratch::new("unix-faults");
    let sock = dir.path("fe.sock");
    let server = Server::start(&["-b", &dir.unix("fe.sock"), "--close-after", "5"]);
    let back = echo(connect(&sock), b"0123456789");
    assert_eq!(back, b"01234", "closed after five bytes");
    let close = server
        .wait_for(|l| l.name() == "close")
        .expect("the close line");
    assert!(close.line.contains("fault=close-after"), "{close}");
    drop(server);

    // A Unix socket copies no timeout from its listener: the child sets its own.
    let server = Server::start(&["-b", &dir.unix("idle.sock"), "--idle-timeout", "0.2"]);
    let mut idle = connect(&dir.path("idle.sock"));
    let mut buf = [0u8; 4];
    assert_eq!(idle.read(&mut buf).unwrap(), 0, "closed for idling");
    let close = server
        .wait_for(|l| l.name() == "close")
        .expect("the close line");
    assert_eq!(close.str("end"), Some("idle-timeout"), "{close}");
}

#[test]
fn json_logs_name_unix_peers_as_strings() {
    let dir = Scratch::new("unix-json");
    let server = Server::start(&["-b", &dir.unix("fe.sock"), "--log-format", "json"]);
    assert_eq!(echo(connect(&dir.path("fe.sock")), b"j"), b"j");
    let line = server
        .wait_for(|l| l.line.contains("\"close\""))
        .expect("the close object");
    let object: serde_json::Value = serde_json::from_str(&line.line).expect("JSON");
    assert_eq!(object["peer"], me(), "{line}");
}

#[test]
fn ping_probes_a_unix_socket_and_fails_on_a_missing_one() {
    let dir = Scratch::new("unix-ping");
    let sock = dir.unix("fe.sock");
    let _server = Server::start(&["-b", &sock]);
    let mut command = Command::new(binary());
    command.args(["ping", "-c", "2", "-i", "0.05", &sock]);
    let out = run_to_completion(command);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains(&format!("bytes from {sock}: seq=2")),
        "{stdout}"
    );
    let mut command = Command::new(binary());
    command.args(["ping", "-c", "1", &dir.unix("none.sock")]);
    let out = run_to_completion(command);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 lost"));
}

#[test]
fn port_file_needs_an_ip_listener() {
    let dir = Scratch::new("unix-portfile");
    let port_file = dir.path("port");
    let stderr = fails_to_start(&[
        "-b",
        &dir.unix("fe.sock"),
        "--port-file",
        port_file.to_str().unwrap(),
    ]);
    assert!(
        stderr.contains("every listener is a Unix socket"),
        "{stderr}"
    );
    assert!(!dir.path("fe.sock").exists() && !port_file.exists());
}

#[test]
fn with_user_the_socket_file_belongs_to_that_user() {
    let Some(nobody) = crate::util::nobody() else {
        return;
    };
    let dir = Scratch::new("unix-user");
    // nobody must reach the file through the directory to connect, and removes nothing but
    // its own file in it.
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let sock = dir.path("fe.sock");
    let mut server = Server::start(&["-b", &dir.unix("fe.sock"), "--user", "nobody"]);
    let meta = std::fs::symlink_metadata(&sock).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        (meta.uid(), meta.gid()),
        (nobody.uid.as_raw(), nobody.gid.as_raw())
    );
    assert_eq!(echo(connect(&sock), b"as nobody"), b"as nobody");
    server.stop();
    assert!(!sock.exists(), "the dropped server removed its own file");
}

#[test]
#[ignore = "run with: cargo test -- --ignored (uses nc (netcat-openbsd) and socat)"]
fn nc_u_and_socat_unix_connect_get_their_bytes_back() {
    let dir = Scratch::new("unix-clients");
    let sock = dir.path("fe.sock");
    let _server = Server::start(&["-b", &dir.unix("fe.sock")]);
    let data = pattern(5, 200_000);
    for (program, args) in [
        ("nc", vec!["-N", "-U", sock.to_str().unwrap()]),
        (
            "socat",
            vec!["-t", "5", "-", &format!("UNIX-CONNECT:{}", sock.display())],
        ),
    ] {
        let out = run_client(program, &args, data.clone());
        assert_same_bytes(&out.stdout, &data);
    }
}

#[test]
#[ignore = "run with: cargo test -- --ignored (uses python3)"]
fn python_talks_to_the_unix_socket() {
    let dir = Scratch::new("unix-python");
    let sock = dir.path("fe.sock");
    let _server = Server::start(&["-b", &dir.unix("fe.sock")]);
    let script = "import socket, sys\n\
        s = socket.socket(socket.AF_UNIX)\n\
        s.connect(sys.argv[1])\n\
        s.sendall(b'from python')\n\
        s.shutdown(socket.SHUT_WR)\n\
        print(s.recv(100).decode(), end='')\n";
    let mut command = Command::new("python3");
    command.args(["-c", script, sock.to_str().unwrap()]);
    let out = run_to_completion(command);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from python");
}

#[test]
#[ignore = "run with: cargo test -- --ignored (uses systemd-socket-activate (package systemd))"]
fn systemd_socket_activate_passes_a_unix_socket_whose_file_forkecho_leaves_alone() {
    let dir = Scratch::new("unix-activate");
    let sock = dir.path("fe.sock");
    let mut command = Command::new("systemd-socket-activate");
    command.args(["-l", sock.to_str().unwrap(), binary()]);
    // systemd-socket-activate starts forkecho when the first client connects.
    let mut server = std::thread::scope(|scope| {
        let first = scope.spawn(|| {
            crate::util::eventually("the activation socket", DEADLINE, || sock.exists());
            echo(connect(&sock), b"activated")
        });
        let server = Server::spawn(command);
        assert_eq!(first.join().unwrap(), b"activated");
        server
    });
    assert_eq!(server.addresses().unix, std::slice::from_ref(&sock));
    let line = server
        .wait_for(|l| l.name() == "listening")
        .expect("the startup line");
    assert!(line.line.contains("from=systemd"), "{line}");
    server.stop();
    assert!(
        sock.exists(),
        "the socket file is systemd's, not forkecho's to remove"
    );
}
