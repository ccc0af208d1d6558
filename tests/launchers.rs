//! forkecho started by other programs: systemd socket activation (`Accept=no`), inetd-style
//! launchers (`--inetd`), and the generated man page and completions.
//!
//! The protocol cases run without third-party programs: the test itself plays the launcher,
//! passing a socket as fd 3 (with LISTEN_PID/LISTEN_FDS, through `sh -c 'exec …'` so the pid is
//! known) or as stdin/stdout. The real launchers (systemd-socket-activate, tcpserver) and
//! `systemd-analyze verify` of the shipped units are `#[ignore]`d: `.ci/run` installs them and
//! runs these with `cargo test -- --ignored`.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::util::{
    Event, Server, assert_same_bytes, binary, connect, connect_when_up, echo_through, free_port,
    output_within_deadline, pattern, run_to_completion,
};

/// `forkecho args` run the way a service manager runs it: `passed` becomes fd 3, and
/// LISTEN_PID/LISTEN_FDS name the process (a shell that execs forkecho keeps its pid).
/// LISTEN_FDS is 1 unless the command's environment sets FORKECHO_TEST_LISTEN_FDS.
fn activated(passed: RawFd, args: &[&str]) -> Command {
    let mut command = Command::new("sh");
    command
        .args([
            "-c",
            "LISTEN_PID=$$ LISTEN_FDS=${FORKECHO_TEST_LISTEN_FDS:-1} exec \"$0\" \"$@\"",
            binary(),
        ])
        .args(args);
    // SAFETY: only dup2, which is async-signal-safe, between fork and exec.
    unsafe {
        command.pre_exec(move || {
            // dup2 onto 3 clears close-on-exec; if it is fd 3 already, clear it by hand.
            let done = match passed {
                3 => nix::libc::fcntl(3, nix::libc::F_SETFD, 0),
                _ => nix::libc::dup2(passed, 3),
            };
            if done < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
}

/// A connected pair on loopback: (the client's end, the server's end).
fn connection() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = connect(listener.local_addr().unwrap());
    let (server, _) = listener.accept().unwrap();
    (client, server)
}

/// Waits for a forkecho started by a test to exit.
fn finish(child: Child) -> Output {
    output_within_deadline(child, "forkecho")
}

/// The close line in a finished forkecho's stderr `err`.
fn close_in(err: &str) -> Event {
    let close = err.lines().map(Event::parse).find(|l| l.name() == "close");
    close.unwrap_or_else(|| panic!("no close line in:\n{err}"))
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs `command`, which must exit with `code` and say every one of `wanted` on stderr.
fn assert_fails(command: Command, code: i32, wanted: &[&str]) {
    let output = run_to_completion(command);
    let err = stderr_of(&output);
    assert_eq!(output.status.code(), Some(code), "{err}");
    for text in wanted {
        assert!(err.contains(text), "{text:?} not in: {err}");
    }
}

#[test]
fn a_passed_listening_socket_is_served_instead_of_binding() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // --port 1 would fail to bind as a normal user and is not used: the passed socket is.
    let server = Server::spawn(activated(listener.as_raw_fd(), &["--port", "1"]));
    drop(listener);
    assert_eq!(server.addr, addr, "announces the passed socket's address");
    let line = server
        .wait_for(|l| l.name() == "listening")
        .expect("the startup line");
    assert!(
        line.line
            .contains(&format!("listening on {addr} from=systemd ")),
        "{line}"
    );
    let data = pattern(3, 200_000);
    let client = server.connect();
    let client_addr = client.local_addr().unwrap();
    assert_same_bytes(&echo_through(client, &data), &data);
    let close = server.closed(client_addr).unwrap();
    assert_eq!(close.u64("bytes"), Some(200000), "{close}");
}

#[test]
fn the_control_socket_refuses_down_for_a_passed_socket_but_blackholes_it() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = crate::util::Scratch::new("activated-control");
    let control = dir.path("control.sock");
    let control = control.to_str().unwrap();
    let server = Server::spawn(activated(listener.as_raw_fd(), &["--control", control]));
    drop(listener);
    let ctl = |what: &str| {
        let mut command = Command::new(binary());
        command.args(["ctl", control, what]);
        crate::util::run_to_completion(command)
    };
    let out = ctl("down");
    assert_eq!(out.status.code(), Some(1));
    let reply = String::from_utf8_lossy(&out.stdout);
    assert!(reply.contains("came from systemd"), "{reply}");
    // Still served: nothing was shut.
    assert_eq!(crate::util::round_trip(&mut server.connect(), b"up"), b"up");
    assert_eq!(ctl("blackhole").status.code(), Some(0));
    assert_eq!(ctl("up").status.code(), Some(0));
}

#[test]
fn a_passed_datagram_socket_is_served_with_udp_and_refused_without() {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    assert_fails(
        activated(socket.as_raw_fd(), &[]),
        1,
        &[&format!(
            "systemd passed a datagram socket ({addr}, ListenDatagram=): serve it with --udp"
        )],
    );
    let server = Server::spawn(activated(socket.as_raw_fd(), &["--udp-only"]));
    drop(socket);
    assert_eq!(server.addr, addr, "announces the passed socket's address");
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(crate::util::DEADLINE))
        .unwrap();
    client.send_to(b"activated", addr).unwrap();
    let mut buf = [0u8; 32];
    let (n, from) = client.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&b"activated"[..], addr));
}

#[test]
fn a_passed_fd_that_is_not_a_socket_is_refused_by_name() {
    let file = std::fs::File::open("/proc/self/stat").unwrap();
    let wanted = ["fatal: fd 3 (from LISTEN_FDS) is not a socket"];
    assert_fails(activated(file.as_raw_fd(), &[]), 1, &wanted);
}

#[test]
fn a_passed_connection_is_refused_without_inetd() {
    let (_client, server_end) = connection();
    let wanted = ["fd 3 (from LISTEN_FDS) is not listening", "--inetd"];
    assert_fails(activated(server_end.as_raw_fd(), &[]), 1, &wanted);
}

#[test]
fn listen_fds_without_fd_3_is_refused() {
    let mut command = Command::new("sh");
    command.args([
        "-c",
        "exec 3>&-; LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\"",
        binary(),
    ]);
    assert_fails(command, 1, &["LISTEN_FDS=1 but fd 3 is not open"]);
}

#[test]
fn listen_variables_for_another_process_are_ignored() {
    let mut command = Command::new(binary());
    command
        .args(["--bind", "127.0.0.1", "--port", "0"])
        .env("LISTEN_PID", "1")
        .env("LISTEN_FDS", "1");
    let server = Server::spawn(command);
    let line = server
        .wait_for(|l| l.name() == "listening")
        .expect("the startup line");
    assert!(!line.line.contains("from=systemd"), "{line}");
    let data = pattern(4, 1000);
    assert_same_bytes(&echo_through(server.connect(), &data), &data);
}

#[test]
fn a_huge_listen_fds_count_starts_at_once() {
    // Up to 4 294 967 294 further fds to close: one close_range(2), not a loop of close(2).
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut command = activated(listener.as_raw_fd(), &[]);
    command.env("FORKECHO_TEST_LISTEN_FDS", "4294967295");
    let server = Server::spawn(command);
    drop(listener);
    let data = pattern(8, 1000);
    assert_same_bytes(&echo_through(server.connect(), &data), &data);
}

#[test]
fn inetd_mode_echoes_stdin_to_stdout_through_pipes() {
    let data: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    let mut child = Command::new(binary())
        .arg("--inetd")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let output = std::thread::scope(|scope| {
        scope.spawn(|| {
            stdin.write_all(&data).unwrap();
            drop(stdin);
        });
        finish(child)
    });
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    assert_same_bytes(&output.stdout, &data);
    let err = stderr_of(&output);
    let close = close_in(&err);
    assert_eq!(close.str("peer"), Some("stdin"), "{close}");
    assert_eq!(close.u64("bytes"), Some(300000), "{close}");
    assert_eq!(close.str("end"), Some("client-closed"), "{close}");
}

/// Runs `forkecho --inetd` on the server end of a fresh connection, as inetd would (stdin and
/// stdout, and stderr too when `stderr_too`), echoes `data` through the client end, and returns
/// what came back and forkecho's output.
fn inetd_on_stdio(data: &[u8], stderr_too: bool) -> (Vec<u8>, Output) {
    let (client, server_end) = connection();
    let client_addr = client.local_addr().unwrap();
    let fd = OwnedFd::from(server_end);
    let mut command = Command::new(binary());
    command
        .arg("--inetd")
        .stdin(fd.try_clone().unwrap())
        .stdout(fd.try_clone().unwrap());
    if stderr_too {
        command.stderr(fd);
    } else {
        drop(fd);
        command.stderr(Stdio::piped());
    }
    let child = command.spawn().unwrap();
    drop(command);
    let back = echo_through(client, data);
    let output = finish(child);
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    if !stderr_too {
        let err = stderr_of(&output);
        let close = close_in(&err);
        assert_eq!(close.str("peer"), Some(&*client_addr.to_string()));
        assert_eq!(close.u64("bytes"), Some(data.len() as u64));
    }
    (back, output)
}

#[test]
fn inetd_mode_echoes_a_unix_stream_socket_too() {
    // A launcher that is not TCP (a Unix socket server, say): no TCP options, the same echo, and
    // the client named by its credentials.
    let (client, server_end) = std::os::unix::net::UnixStream::pair().unwrap();
    let fd = OwnedFd::from(server_end);
    let mut command = Command::new(binary());
    command
        .arg("--inetd")
        .stdin(fd.try_clone().unwrap())
        .stdout(fd)
        .stderr(Stdio::piped());
    let forkecho = command.spawn().unwrap();
    drop(command);
    let data = pattern(9, 300_000);
    let mut writer = client.try_clone().unwrap();
    let sent = data.clone();
    let sender = std::thread::spawn(move || {
        writer.write_all(&sent).unwrap();
        writer.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut back = Vec::new();
    std::io::Read::read_to_end(&mut &client, &mut back).unwrap();
    sender.join().unwrap();
    assert_same_bytes(&back, &data);
    let output = finish(forkecho);
    let err = stderr_of(&output);
    assert_eq!(output.status.code(), Some(0), "{err}");
    let close = close_in(&err);
    // Named by the credentials of whoever made the pair: this test.
    let me = format!(
        "unix:uid={},pid={}",
        nix::unistd::getuid(),
        std::process::id()
    );
    assert_eq!(close.str("peer"), Some(me.as_str()), "{close}");
}

#[test]
fn inetd_mode_serves_a_socket_on_stdin_and_stdout_with_half_close() {
    let data = pattern(5, 4 << 20);
    let (back, _) = inetd_on_stdio(&data, false);
    assert_same_bytes(&back, &data);
}

#[test]
fn inetd_mode_logs_nothing_into_a_connection_that_is_also_stderr() {
    let data = pattern(6, 10_000);
    let (back, _) = inetd_on_stdio(&data, true);
    // Exactly the echo: a close line written to stderr would have reached the client.
    assert_same_bytes(&back, &data);
}

/// `forkecho --inetd` started on `server_end` as fd 3, the way systemd's `Accept=yes` does;
/// the test's copies of the connection's server end are closed once it runs.
fn inetd_on_fd_3(server_end: TcpStream) -> Child {
    let mut command = activated(server_end.as_raw_fd(), &["--inetd"]);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn inetd_mode_applies_the_faults_too() {
    let (client, server_end) = connection();
    let mut command = activated(server_end.as_raw_fd(), &["--inetd", "--close-after", "10"]);
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(command);
    drop(server_end);
    let data = pattern(8, 10_000);
    assert_same_bytes(&echo_through(client, &data), &data[..10]);
    let output = finish(child);
    let err = stderr_of(&output);
    assert_eq!(output.status.code(), Some(0), "{err}");
    let close = close_in(&err);
    assert_eq!(close.str("end"), Some("close-after"), "{close}");
}

#[test]
fn inetd_mode_serves_a_connection_passed_as_fd_3() {
    let (client, server_end) = connection();
    let child = inetd_on_fd_3(server_end);
    let data = pattern(7, 100_000);
    assert_same_bytes(&echo_through(client, &data), &data);
    let output = finish(child);
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
}

#[test]
fn inetd_mode_blocks_on_a_socket_the_launcher_left_non_blocking() {
    let (mut client, server_end) = connection();
    server_end.set_nonblocking(true).unwrap();
    let forkecho = inetd_on_fd_3(server_end);
    let pid = forkecho.id() as i32;
    assert_eq!(crate::util::round_trip(&mut client, b"one"), b"one");
    // Wait until forkecho sleeps in its next read (or has given up, which fails below): a
    // non-blocking read would have failed at once, taken for an idle timeout.
    crate::util::eventually("forkecho to wait for more", crate::util::DEADLINE, || {
        crate::util::process_state(pid).is_none_or(|state| state == 'S' || state == 'Z')
    });
    assert_eq!(crate::util::round_trip(&mut client, b"two"), b"two");
    client.shutdown(std::net::Shutdown::Write).unwrap();
    let output = finish(forkecho);
    let err = stderr_of(&output);
    assert_eq!(output.status.code(), Some(0), "{err}");
    assert!(err.contains("end=client-closed"), "{err}");
}

#[test]
fn inetd_mode_refuses_server_options() {
    let mut command = Command::new(binary());
    command.args(["--inetd", "--port", "7"]);
    assert_fails(
        command,
        2,
        &["'--inetd' cannot be used with '--port <PORT>'"],
    );
}

#[test]
fn the_man_page_is_roff_and_documents_every_option() {
    let output = run_to_completion({
        let mut command = Command::new(binary());
        command.arg("--man");
        command
    });
    assert_eq!(output.status.code(), Some(0));
    let page = String::from_utf8(output.stdout).unwrap();
    assert!(page.contains(".TH forkecho 1"), "{page}");
    assert!(page.contains(".SH NAME") && page.contains(".SH OPTIONS"));
    assert!(page.contains(".SH \"FORKECHO PING\""), "{page}");
    // Every flag of the server's --help and of `forkecho ping --help`.
    let help = |args: &[&str]| {
        let help = Command::new(binary()).args(args).output().unwrap();
        String::from_utf8(help.stdout).unwrap()
    };
    let help = help(&["--help"]) + &help(&["ping", "--help"]);
    let flags: Vec<&str> = help
        .split_whitespace()
        .filter_map(|word| word.strip_prefix("--"))
        .map(|flag| flag.trim_end_matches(|c: char| !c.is_ascii_alphanumeric()))
        .filter(|flag| !flag.is_empty())
        .collect();
    assert!(flags.len() >= 30, "{flags:?}");
    for flag in ["delay", "fault-rate", "seed", "count", "connect", "json"] {
        assert!(flags.contains(&flag), "--{flag} missing from --help");
    }
    for flag in flags {
        // roff escapes the dashes: \-\-port
        let escaped = format!("\\-\\-{}", flag.replace('-', "\\-"));
        assert!(
            page.contains(&escaped),
            "--{flag} missing from the man page"
        );
    }
}

#[test]
fn completions_are_generated_for_bash_zsh_and_fish() {
    let script = |shell: &str| {
        let output = Command::new(binary())
            .args(["--completions", shell])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(0), "{shell}");
        String::from_utf8(output.stdout).unwrap()
    };
    let bash = script("bash");
    assert!(bash.contains("complete -F _forkecho"), "{bash}");
    assert!(bash.contains("--max-per-ip"));
    assert!(
        bash.contains("forkecho__subcmd__ping") && bash.contains("--connect"),
        "{bash}"
    );
    let check = Command::new("bash")
        .arg("-n")
        .stdin(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child.stdin.take().unwrap().write_all(bash.as_bytes())?;
            child.wait()
        })
        .unwrap();
    assert!(check.success(), "bash -n rejects the bash completions");
    assert!(script("zsh").starts_with("#compdef forkecho"));
    let fish = script("fish");
    assert!(fish.contains("-s p -l port"), "{fish}");
    assert!(fish.contains("__fish_forkecho_using_subcommand ping\" -s c -l count"));
    assert!(script("zsh").contains("(ping)"));

    let bad = Command::new(binary())
        .args(["--completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid value 'tcsh'"));
}

/// build.rs writes what the Debian package installs beside the binary; it must be exactly what
/// the binary prints, or the package's man page and completions would drift from its options.
#[test]
fn the_build_writes_the_man_page_and_completions_the_binary_prints() {
    let assets = std::path::Path::new(binary())
        .parent()
        .unwrap()
        .join("forkecho-assets");
    let printed = |args: &[&str]| {
        let output = Command::new(binary()).args(args).output().unwrap();
        assert_eq!(output.status.code(), Some(0), "{args:?}");
        output.stdout
    };
    let file =
        |name: &str| std::fs::read(assets.join(name)).unwrap_or_else(|err| panic!("{name}: {err}"));
    let page = printed(&["--man"]);
    assert!(file("forkecho.1") == page, "forkecho.1 differs from --man");
    let mut unzipped = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(&file("forkecho.1.gz")[..]),
        &mut unzipped,
    )
    .unwrap();
    assert!(unzipped == page, "forkecho.1.gz differs from --man");
    for (name, shell) in [
        ("forkecho.bash", "bash"),
        ("_forkecho", "zsh"),
        ("forkecho.fish", "fish"),
    ] {
        let script = printed(&["--completions", shell]);
        assert!(
            file(name) == script,
            "{name} differs from --completions {shell}"
        );
    }
}

/// A launcher process, killed when dropped.
struct Launcher(Child);

impl Drop for Launcher {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn launch(program: &str, args: &[&str]) -> Launcher {
    Launcher(
        Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("run {program} (is it installed?): {e}")),
    )
}

/// Three clients in turn through a launcher that runs forkecho per connection.
fn three_clients_through(addr: SocketAddr) {
    for seed in 0..3 {
        let data = pattern(seed, 50_000 * (seed as usize + 1));
        assert_same_bytes(&echo_through(connect_when_up(addr), &data), &data);
    }
}

#[test]
#[ignore = "run with: cargo test -- --ignored (uses systemd-socket-activate (package systemd))"]
fn systemd_socket_activate_starts_the_server_on_its_socket() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut command = Command::new("systemd-socket-activate");
    command.args(["-l", &listen, binary(), "--quiet"]);
    // systemd-socket-activate starts forkecho when the first client connects.
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let data = pattern(8, 1 << 20);
    let server = std::thread::scope(|scope| {
        let first = scope.spawn(|| echo_through(connect_when_up(addr), &data));
        let server = Server::spawn(command);
        assert_same_bytes(&first.join().unwrap(), &data);
        server
    });
    assert_eq!(server.addr, addr);
    let line = server
        .wait_for(|l| l.name() == "listening")
        .expect("the startup line");
    assert!(line.line.contains("from=systemd"), "{line}");
    assert_same_bytes(&echo_through(server.connect(), &data), &data);
}

#[test]
#[ignore = "run with: cargo test -- --ignored (uses systemd-socket-activate (package systemd))"]
fn systemd_socket_activate_passes_a_datagram_socket_to_udp_only() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut command = Command::new("systemd-socket-activate");
    command.args(["--datagram", "-l", &listen, binary(), "--udp-only"]);
    // It starts forkecho on the first datagram to reach its socket, which then waits there for
    // the worker: send until one is answered (a datagram sent before the socket exists is lost).
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let server = std::thread::scope(|scope| {
        let asking = scope.spawn(|| {
            let mut buf = [0u8; 32];
            for _ in 0..400 {
                let _ = client.send_to(b"first", addr);
                if let Ok((n, from)) = client.recv_from(&mut buf) {
                    return Some((buf[..n].to_vec(), from));
                }
            }
            None
        });
        let server = Server::spawn(command);
        let answer = asking.join().unwrap().expect("an answer within 20 s");
        assert_eq!(answer, (b"first".to_vec(), addr));
        server
    });
    assert_eq!(server.addr, addr);
    let line = server
        .wait_for(|l| l.name() == "listening")
        .expect("the startup line");
    assert!(line.line.contains("from=systemd"), "{line}");
}

#[test]
#[ignore = "run with: cargo test -- --ignored (uses systemd-socket-activate (package systemd))"]
fn systemd_socket_activate_accept_runs_inetd_mode_per_connection() {
    // --accept passes each connection as fd 3 (LISTEN_FDS); with --inetd also, on stdin/stdout.
    for inetd_style in [false, true] {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut args = vec!["--accept", "-l", &listen];
        if inetd_style {
            args.push("--inetd");
        }
        args.extend([binary(), "--inetd"]);
        let _launcher = launch("systemd-socket-activate", &args);
        three_clients_through(SocketAddr::from(([127, 0, 0, 1], port)));
    }
}

#[test]
#[ignore = "run with: cargo test -- --ignored (uses tcpserver (package ucspi-tcp))"]
fn tcpserver_runs_inetd_mode_per_connection() {
    let port = free_port().to_string();
    let _launcher = launch("tcpserver", &["127.0.0.1", &port, binary(), "--inetd"]);
    three_clients_through(SocketAddr::from(([127, 0, 0, 1], port.parse().unwrap())));
}

#[test]
#[ignore = "run with: cargo test -- --ignored (uses systemd-analyze and man)"]
fn the_shipped_systemd_units_verify() {
    let dir = std::env::temp_dir().join(format!("forkecho-units-{}", std::process::id()));
    let man1 = dir.join("man/man1");
    std::fs::create_dir_all(&man1).unwrap();
    // The man page installed where `Documentation=man:forkecho(1)` can find it.
    let page = Command::new(binary()).arg("--man").output().unwrap().stdout;
    std::fs::write(man1.join("forkecho.1"), page).unwrap();
    let units = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/systemd");
    let socket = std::fs::read_to_string(format!("{units}/forkecho.socket")).unwrap();
    let service = std::fs::read_to_string(format!("{units}/forkecho.service")).unwrap();
    // A bare name: systemd looks in /usr/local/bin, then /usr/bin (the Debian package's). Here
    // it is the binary under test.
    let this_binary = |unit: &str| {
        unit.replace(
            "\nExecStart=forkecho ",
            &format!("\nExecStart={} ", binary()),
        )
    };
    assert!(service.contains("\nExecStart=forkecho "));
    std::fs::write(dir.join("forkecho.socket"), socket).unwrap();
    let service = this_binary(&service);
    std::fs::write(dir.join("forkecho.service"), service).unwrap();
    // The SO_REUSEPORT template, verified as instance 1.
    let template = std::fs::read_to_string(format!("{units}/forkecho@.service")).unwrap();
    for unit in [
        &template,
        &std::fs::read_to_string(format!("{units}/forkecho.service")).unwrap(),
    ] {
        // forkecho's own sandbox needs seccomp(2), which @system-service leaves out.
        assert!(unit.contains("\nSystemCallFilter=seccomp\n"), "{unit}");
    }
    assert!(template.contains(" --reuse-port "));
    let template = this_binary(&template);
    std::fs::write(dir.join("forkecho@.service"), template).unwrap();
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.join("forkecho.socket"))
        .arg(dir.join("forkecho.service"))
        .arg(dir.join("forkecho@1.service"))
        .env("MANPATH", dir.join("man"))
        .output()
        .expect("run systemd-analyze");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        output.status.success() && output.stderr.is_empty(),
        "systemd-analyze verify: {}",
        stderr_of(&output)
    );
}
