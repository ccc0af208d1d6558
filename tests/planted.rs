//! What another local user can leave in, or take out of, a directory forkecho writes to (/tmp, a
//! shared CI workspace): links and FIFOs planted under the names of its temporary files, a
//! directory where the port file should go, a socket file replaced under a running server.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, symlink};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;

use nix::sys::signal::{Signal, kill};
use nix::sys::stat::Mode;
use nix::unistd::{Pid, mkfifo};

use crate::util::{DEADLINE, Scratch, Server, binary, fails_to_start};

/// forkecho with `args`, started under a pid that `plant` learns first: a shell takes the pid,
/// waits for a line on stdin, and then execs forkecho in its own place. This is what an attacker
/// who guesses the next pids can do.
fn start_after_planting(args: &[&str], plant: impl FnOnce(u32)) -> Running {
    let mut child = Command::new("sh")
        .args(["-c", "read go && exec \"$0\" \"$@\"", binary()])
        .args(["--bind", "127.0.0.1", "--port", "0"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sh");
    plant(child.id());
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    Running(child)
}

/// A forkecho started here: killed if the test fails before it stops it.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The readiness line, or a failed test (forkecho killed) if none comes within the deadline.
fn ready(running: &mut Running) -> String {
    let child = &mut running.0;
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut line = String::new();
        let _ = out.read_line(&mut line);
        let _ = tx.send(line);
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(line) if line.starts_with("listening on") => line,
        other => {
            let _ = child.kill();
            panic!("no readiness line within {DEADLINE:?}: {other:?}");
        }
    }
}

/// `--port-file PORT --tls --tls-ca-out CA`.
fn port_and_ca<'a>(port: &'a Path, ca: &'a Path) -> [&'a str; 5] {
    let (port, ca) = (port.to_str().unwrap(), ca.to_str().unwrap());
    ["--port-file", port, "--tls", "--tls-ca-out", ca]
}

/// The port file holds the port the readiness line `line` names, and the CA file a certificate.
fn assert_written(line: &str, port: &Path, ca: &Path) {
    let written = std::fs::read_to_string(port).unwrap();
    assert!(
        line.contains(&format!(":{}", written.trim())),
        "{line} {written}"
    );
    let pem = std::fs::read_to_string(ca).unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE"), "{pem}");
}

fn stop(mut running: Running) {
    kill(Pid::from_raw(running.0.id() as i32), Signal::SIGTERM).unwrap();
    assert!(running.0.wait().unwrap().success());
}

#[test]
fn links_planted_under_the_temporary_names_are_never_followed() {
    let dir = Scratch::new("planted-links");
    let victim = dir.path("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    let (port, ca) = (dir.path("port"), dir.path("ca.pem"));
    // The final names are links too: a rename replaces a link, never writes through it.
    let final_victim = dir.path("final-victim");
    std::fs::write(&final_victim, "also precious\n").unwrap();
    symlink(&final_victim, &port).unwrap();
    let args = port_and_ca(&port, &ca);
    let planted = |pid: u32| [format!(".port.{pid}.tmp"), format!("ca.pem.{pid}.tmp")];
    let mut names_planted = Vec::new();
    let mut child = start_after_planting(&args, |pid| {
        // The names the temporary files had before they were made random.
        for name in planted(pid) {
            symlink(&victim, dir.path(&name)).unwrap();
            names_planted.push(name);
        }
    });
    let line = ready(&mut child);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert_eq!(
        std::fs::read_to_string(&final_victim).unwrap(),
        "also precious\n"
    );
    // The port file is a file of its own now, with the port the readiness line names.
    assert!(!port.symlink_metadata().unwrap().is_symlink());
    assert_written(&line, &port, &ca);
    stop(child);
    // Nothing of forkecho's is left but the CA file (the port file went at the clean stop); the
    // planted links are as they were.
    let mut names = dir.names();
    names.sort();
    let mut expected = names_planted;
    expected.extend(["ca.pem", "final-victim", "victim"].map(String::from));
    expected.sort();
    assert_eq!(names, expected);
}

#[test]
fn fifos_planted_under_the_temporary_names_do_not_hold_up_the_start() {
    let dir = Scratch::new("planted-fifos");
    let (port, ca) = (dir.path("port"), dir.path("ca.pem"));
    let args = port_and_ca(&port, &ca);
    let mut child = start_after_planting(&args, |pid| {
        for name in [format!(".port.{pid}.tmp"), format!("ca.pem.{pid}.tmp")] {
            mkfifo(&dir.path(&name), Mode::from_bits_truncate(0o666)).unwrap();
        }
    });
    let line = ready(&mut child);
    assert_written(&line, &port, &ca);
    stop(child);
    let fifos = std::fs::read_dir(&dir.0)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_type().unwrap().is_fifo())
        .count();
    assert_eq!(fifos, 2, "the planted FIFOs are left as they were");
}

#[test]
fn a_port_file_that_is_a_directory_is_a_startup_error_and_leaves_nothing() {
    let dir = Scratch::new("port-file-dir");
    let target = dir.path("taken");
    std::fs::create_dir(&target).unwrap();
    let stderr = fails_to_start(&["--port", "0", "--port-file", target.to_str().unwrap()]);
    assert!(
        stderr.contains(&format!("unable to write --port-file {}", target.display()))
            && stderr.contains("is a directory"),
        "{stderr}"
    );
    assert_eq!(dir.names(), ["taken"]);
    assert_eq!(std::fs::read_dir(&target).unwrap().count(), 0);
}

#[test]
fn a_clean_stop_leaves_a_socket_file_that_another_server_bound_since() {
    let dir = Scratch::new("planted-socket");
    let (sock, control) = (dir.unix("x.sock"), dir.path("ctl.sock"));
    let control_arg = control.to_str().unwrap();
    let mut a = Server::start(&["-b", &sock, "--control", control_arg]);
    // A tmp cleaner removes both files; server B binds the same paths.
    for path in [dir.path("x.sock"), control.clone()] {
        std::fs::remove_file(path).unwrap();
    }
    let b = Server::start(&["-b", &sock, "--control", control_arg]);
    let stopped = a.stop();
    assert!(
        stopped.line.contains(&format!(
            "left-in-place=\"{sock} unix:{}\"",
            control.display()
        )),
        "{stopped}"
    );
    // B's files are still there, and B still serves through them.
    let mut client = UnixStream::connect(dir.path("x.sock")).unwrap();
    client.write_all(b"still b").unwrap();
    let mut back = [0u8; 7];
    client.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"still b");
    assert!(control.exists());
    drop(b);
    // Its own files, at its own clean stop, are removed as ever.
    let mut c = Server::start(&["-b", &dir.unix("c.sock")]);
    assert!(!c.stop().line.contains("left-in-place"));
    assert!(!dir.path("c.sock").exists());
}
