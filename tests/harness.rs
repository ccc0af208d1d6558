//! What a harness is told and what ties forkecho to it, each consumed the way its real user
//! consumes it: the port file by a shell `until [ -s FILE ]` loop, the ready fd as a pipe,
//! sd_notify by a datagram socket bound as `NOTIFY_SOCKET` (a path and an abstract name), the
//! lifelines by killing the harness, and the log file by reading it.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::util::{
    DEADLINE, Scratch, Server, binary, eventually, output_within_deadline, round_trip,
};

fn forkecho(args: &[&str]) -> Command {
    let mut command = Command::new(binary());
    command
        .args(["--bind", "127.0.0.1", "--port", "0"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

fn loopback(port: &str) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port.trim().parse::<u16>().expect("a port")))
}

fn gone(pid: Pid) -> bool {
    crate::util::process_state(pid.as_raw()).is_none_or(|state| state == 'Z')
}

#[test]
fn the_port_file_is_whole_when_a_shell_loop_sees_it_and_goes_at_a_clean_stop() {
    let dir = Scratch::new("port-file");
    let file = dir.path("port");
    let mut server = forkecho(&["--port-file", file.to_str().unwrap()])
        .spawn()
        .unwrap();
    // The harness's side: a shell waits for a non-empty file and reads it whole.
    let waited = Command::new("sh")
        .args([
            "-c",
            "until [ -s \"$1\" ]; do sleep 0.01; done; cat \"$1\"",
            "sh",
        ])
        .arg(&file)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = output_within_deadline(waited, "the shell loop");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.ends_with('\n') && text.lines().count() == 1,
        "{text:?}"
    );
    let mut client = crate::util::connect(loopback(&text));
    assert_eq!(round_trip(&mut client, b"port file"), b"port file");
    drop(client);
    // Nothing but the file: its temporary name is gone.
    assert_eq!(dir.names(), ["port"]);
    kill(Pid::from_raw(server.id() as i32), Signal::SIGTERM).unwrap();
    assert!(server.wait().unwrap().success());
    assert!(dir.names().is_empty(), "{:?}", dir.names());
}

#[test]
fn unusable_paths_and_fds_are_startup_errors_naming_them() {
    let dir = Scratch::new("unusable");
    let missing = dir.path("no-such-dir/port");
    for (args, needle) in [
        (
            vec!["--port-file".to_string(), missing.display().to_string()],
            format!("unable to write --port-file {}", missing.display()),
        ),
        (
            vec!["--log-file".to_string(), missing.display().to_string()],
            format!("unable to open --log-file {}", missing.display()),
        ),
        (
            vec!["--ready-fd".to_string(), "77".to_string()],
            "--ready-fd 77: fd 77 is not open".to_string(),
        ),
    ] {
        let out = output_within_deadline(forkecho(&[]).args(&args).spawn().unwrap(), "forkecho");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(&needle), "{args:?}: {stderr}");
    }
}

#[test]
fn the_ready_fd_gets_the_listening_line_and_is_closed() {
    let (reader, writer) = std::io::pipe().unwrap();
    let writer = OwnedFd::from(writer);
    let raw = writer.as_raw_fd();
    let mut command = forkecho(&["--ready-fd", "5"]);
    // SAFETY: dup2 is async-signal-safe, as code between fork and exec must be.
    unsafe {
        command.pre_exec(move || {
            // dup2 onto itself would leave close-on-exec set: clear it instead.
            let done = match raw {
                5 => nix::libc::fcntl(5, nix::libc::F_SETFD, 0),
                _ => nix::libc::dup2(raw, 5),
            };
            match done {
                -1 => Err(std::io::Error::last_os_error()),
                _ => Ok(()),
            }
        });
    }
    let mut server = command.spawn().unwrap();
    drop(writer);
    // The pipe's end comes once forkecho closed it: the harness reads it to its end.
    let mut text = String::new();
    BufReader::new(reader).read_to_string(&mut text).unwrap();
    let Some(addr) = text.strip_prefix("listening on ") else {
        let out = output_within_deadline(server, "forkecho");
        panic!("{text:?}; stderr: {}", String::from_utf8_lossy(&out.stderr));
    };
    let addr = addr.trim_end();
    assert_eq!(text.lines().count(), 1, "{text:?}");
    let mut client = crate::util::connect(addr.parse().unwrap());
    assert_eq!(round_trip(&mut client, b"ready"), b"ready");
    kill(Pid::from_raw(server.id() as i32), Signal::SIGTERM).unwrap();
    assert!(server.wait().unwrap().success());
}

/// READY=1 (with MAINPID and STATUS) once the port accepts, STOPPING=1 at SIGTERM, on a
/// notification socket at `address` (a path, or `@name`) that `socket` is bound to.
fn notified(socket: UnixDatagram, address: &str) {
    socket.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut server = forkecho(&[]).env("NOTIFY_SOCKET", address).spawn().unwrap();
    let mut message = [0u8; 512];
    let n = socket.recv(&mut message).expect("READY=1");
    let ready = String::from_utf8_lossy(&message[..n]).into_owned();
    let fields: Vec<&str> = ready.lines().collect();
    assert_eq!(fields[0], "READY=1", "{ready}");
    assert_eq!(fields[1], format!("MAINPID={}", server.id()), "{ready}");
    let addr = fields[2]
        .strip_prefix("STATUS=listening on ")
        .expect(&ready);
    // Ready means serving: the port accepts and echoes the moment READY=1 is out.
    let mut client = crate::util::connect(addr.parse().unwrap());
    assert_eq!(round_trip(&mut client, b"notified"), b"notified");
    drop(client);
    kill(Pid::from_raw(server.id() as i32), Signal::SIGTERM).unwrap();
    let n = socket.recv(&mut message).expect("STOPPING=1");
    assert_eq!(&message[..n], b"STOPPING=1");
    assert!(server.wait().unwrap().success());
}

#[test]
fn sd_notify_says_ready_once_serving_and_stopping_at_a_stop() {
    let dir = Scratch::new("notify");
    let path = dir.path("notify.sock");
    notified(UnixDatagram::bind(&path).unwrap(), path.to_str().unwrap());
}

#[test]
fn sd_notify_with_udp_sends_only_assignments() {
    let dir = Scratch::new("notify-udp");
    let path = dir.path("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut server = forkecho(&["--udp"])
        .env("NOTIFY_SOCKET", &path)
        .spawn()
        .unwrap();
    let mut message = [0u8; 512];
    let n = socket.recv(&mut message).expect("READY=1");
    let ready = String::from_utf8_lossy(&message[..n]).into_owned();
    // sd_notify(3): newline-separated VAR=VALUE assignments, nothing else.
    for line in ready.lines() {
        let (var, _) = line.split_once('=').expect(&ready);
        assert!(
            var.chars().all(|c| c.is_ascii_uppercase() || c == '_'),
            "{ready:?}"
        );
    }
    let status = ready
        .lines()
        .find(|l| l.starts_with("STATUS="))
        .expect(&ready);
    assert!(status.contains("; listening on udp "), "{status}");
    kill(Pid::from_raw(server.id() as i32), Signal::SIGTERM).unwrap();
    assert!(server.wait().unwrap().success());
}

#[test]
fn sd_notify_reaches_an_abstract_socket() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("forkecho-test-notify-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    notified(UnixDatagram::bind_addr(&addr).unwrap(), &format!("@{name}"));
}

/// forkecho with `args`, started by a shell that prints its pid and then waits, so the shell is
/// its parent and passes it what the test gives as stdin. Returns once forkecho is listening:
/// the shell's process, and forkecho's pid.
///
/// A shell without job control gives a command it starts with `&` /dev/null as stdin, before
/// any redirection of the command's own (POSIX, "Asynchronous Lists"); so the stdin is passed on
/// through fd 3, explicitly.
fn under_a_shell(args: &[&str], stdin: Stdio) -> (Child, Pid) {
    let mut shell = Command::new("sh")
        .args(["-c", "exec 3<&0; \"$0\" \"$@\" <&3 3<&- & echo $!; wait"])
        .arg(binary())
        .args(["--bind", "127.0.0.1", "--port", "0", "-q"])
        .args(args)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Two lines on the shell's stdout, in either order: forkecho's pid and its readiness line.
    let mut stdout = BufReader::new(shell.stdout.take().unwrap());
    let (mut pid, mut listening) = (None, false);
    while pid.is_none() || !listening {
        let mut line = String::new();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "the shell's output ended"
        );
        match line.trim().parse::<i32>() {
            Ok(number) => pid = Some(Pid::from_raw(number)),
            Err(_) => listening |= line.starts_with("listening on "),
        }
    }
    (shell, pid.unwrap())
}

#[test]
fn with_exit_with_parent_a_fixture_stops_when_its_harness_is_killed() {
    let dir = Scratch::new("exit-with-parent");
    let file = dir.path("port");
    let args = ["--exit-with-parent", "--port-file", file.to_str().unwrap()];
    let (mut shell, server) = under_a_shell(&args, Stdio::null());
    assert!(file.exists());
    shell.kill().unwrap();
    shell.wait().unwrap();
    eventually("forkecho to stop after its harness", DEADLINE, || {
        gone(server)
    });
    // A clean stop: the port file went with it.
    assert!(!file.exists());
}

#[test]
fn with_stdin_lifeline_closing_stdin_stops_the_server_cleanly() {
    let mut server = forkecho(&["--stdin-lifeline"]);
    server.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut process = server.spawn().unwrap();
    let mut stdout = BufReader::new(process.stdout.take().unwrap());
    let addr = crate::util::fixture::read_readiness(&mut stdout).unwrap();
    let mut client = crate::util::connect(addr);
    // What the harness writes on the lifeline is read and dropped, never echoed anywhere.
    std::io::Write::write_all(process.stdin.as_mut().unwrap(), b"noise\n").unwrap();
    assert_eq!(round_trip(&mut client, b"alive"), b"alive");
    drop(process.stdin.take());
    let out = output_within_deadline(process, "forkecho");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("stopping lifeline=stdin live=1"),
        "{stderr}"
    );
    let mut rest = Vec::new();
    let _ = client.read_to_end(&mut rest);
    assert!(rest.is_empty());
}

#[test]
fn with_stdin_lifeline_a_fixture_stops_when_the_process_holding_its_stdin_is_killed() {
    // The harness's side of the pipe is held by a process that is then killed, as a crashed
    // harness would be: its end closes, and forkecho's stdin reaches its end.
    let mut holder = Killed(
        Command::new("sleep")
            .arg("1000")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdin = Stdio::from(holder.0.stdout.take().unwrap());
    let pipe = std::fs::read_link(format!("/proc/{}/fd/1", holder.0.id())).unwrap();
    let (mut shell, server) = under_a_shell(&["--stdin-lifeline"], stdin);
    // forkecho holds the holder's pipe (on an fd of its own: it gives its stdin a private open
    // file description); with /dev/null as its stdin it would stop of itself.
    let fds = std::fs::read_dir(format!("/proc/{server}/fd")).unwrap();
    let links = fds.map(|fd| std::fs::read_link(fd.unwrap().path()).unwrap());
    assert!(links.into_iter().any(|link| link == pipe), "{pipe:?}");
    assert!(!gone(server));
    holder.0.kill().unwrap();
    holder.0.wait().unwrap();
    eventually("forkecho to stop at its lifeline's end", DEADLINE, || {
        gone(server)
    });
    assert!(shell.wait().unwrap().success());
}

/// A helper process killed and waited for however the test ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_log_file_gets_every_line_and_stderr_none() {
    let dir = Scratch::new("log-file");
    let log = dir.path("forkecho.log");
    std::fs::write(&log, "an earlier line\n").unwrap();
    let mut server = Server::spawn(forkecho(&["--log-file", log.to_str().unwrap()]));
    let mut client = server.connect();
    assert_eq!(round_trip(&mut client, b"logged"), b"logged");
    drop(client);
    server.signal(Signal::SIGTERM);
    assert!(server.wait_exit(DEADLINE).success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.starts_with("an earlier line\nforkecho: listening on "),
        "{text}"
    );
    assert!(text.contains("forkecho: accept peer="), "{text}");
    assert!(text.contains("forkecho: stopped "), "{text}");
    assert!(server.log().is_empty(), "stderr: {}", server.log());
}

#[test]
fn the_lifeline_leaves_the_harness_s_stdin_as_it_was() {
    // The read end forkecho gets as stdin, and a copy the harness keeps of the same open file
    // description: O_NONBLOCK there would change it for everyone who shares it.
    let (reader, writer) = std::io::pipe().unwrap();
    let kept = OwnedFd::from(reader.try_clone().unwrap());
    let mut command = forkecho(&["--stdin-lifeline"]);
    command
        .stdin(Stdio::from(OwnedFd::from(reader)))
        .stdout(Stdio::piped());
    let mut process = command.spawn().unwrap();
    let mut stdout = BufReader::new(process.stdout.take().unwrap());
    crate::util::fixture::read_readiness(&mut stdout).unwrap();
    let flags = nix::fcntl::fcntl(&kept, nix::fcntl::FcntlArg::F_GETFL).unwrap();
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags);
    assert!(!flags.contains(nix::fcntl::OFlag::O_NONBLOCK), "{flags:?}");
    drop(writer);
    let out = output_within_deadline(process, "forkecho");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn with_exit_with_parent_a_launcher_gone_before_the_start_is_a_startup_error() {
    // The launcher backgrounds forkecho's start and exits at once; forkecho starts only after
    // that (when fd 3, the test's pipe, gives it a line), reparented to init.
    let mut launcher = Command::new("sh")
        .args([
            "-c",
            concat!(
                "exec 3<&0; ( read go <&3; ",
                "exec sh -c 'echo pid=$$; exec \"$0\" \"$@\"' \"$0\" \"$@\" ) & exit 0"
            ),
            binary(),
            "--bind",
            "127.0.0.1",
            "--port",
            "0",
            "--exit-with-parent",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut go = launcher.stdin.take().unwrap();
    assert!(launcher.wait().unwrap().success(), "the launcher is gone");
    std::io::Write::write_all(&mut go, b"go\n").unwrap();
    let mut stdout = BufReader::new(launcher.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let pid = Pid::from_raw(line.trim().strip_prefix("pid=").unwrap().parse().unwrap());
    // Killed at the end whatever happened: a forkecho that serves on would outlive the test.
    struct Kill(Pid);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = kill(self.0, Signal::SIGKILL);
        }
    }
    let _kill = Kill(pid);
    let mut rest = String::new();
    let mut stderr = launcher.stderr.take().unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        let mut err = String::new();
        let _ = stderr.read_to_string(&mut err);
        let _ = done_tx.send((text, err));
    });
    let (out, err) = done_rx
        .recv_timeout(DEADLINE)
        .unwrap_or_else(|_| panic!("forkecho (pid {pid}) is still running"));
    rest.push_str(&out);
    assert!(!rest.contains("listening on"), "it served: {rest}");
    assert!(
        err.contains("fatal: --exit-with-parent: forkecho's parent is init (pid 1)"),
        "{err}"
    );
}
