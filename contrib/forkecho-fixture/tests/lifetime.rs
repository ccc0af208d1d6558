//! The fixture's promises about forkecho's life: it serves when `start` returns, `stop` and
//! `Drop` end it, it never outlives the test process (SIGKILL included, started from a thread
//! that has ended), it leaves no files behind, and a binary it cannot find or a forkecho that
//! cannot start is an error that says why. Run with FORKECHO_BIN set (CI sets it).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use forkecho_fixture::Forkecho;

/// Whether process `pid` has ended (gone, or a zombie nobody has reaped yet).
fn ended(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
        Err(_) => true,
    }
}

#[test]
fn stop_returns_the_stopped_lines_counts_and_drop_ends_it_too() {
    let started = Instant::now();
    let fe = Forkecho::start().unwrap();
    let mut client = TcpStream::connect(fe.addr()).unwrap();
    client.write_all(b"counted").unwrap();
    let mut echoed = [0; 7];
    client.read_exact(&mut echoed).unwrap();
    eprintln!(
        "from start() to a served connection: {:?}",
        started.elapsed()
    );
    let local = client.local_addr().unwrap();
    drop(client);
    let close = fe.closed(local).unwrap();
    assert_eq!(
        (close.str("end"), close.u64("bytes")),
        (Some("client-closed"), Some(7))
    );
    let accept = fe.accepted(local).unwrap();
    assert!(accept.u64("pid").is_some(), "{}", accept.line);
    let stopped = fe.stop().unwrap();
    assert!(stopped.status.success());
    assert_eq!(stopped.event.u64("accepted"), Some(1));
    assert_eq!(stopped.event.u64("bytes"), Some(7));

    let fe = Forkecho::start().unwrap();
    let pid = fe.pid();
    drop(fe);
    assert!(ended(pid), "forkecho {pid} outlived its fixture");
}

/// Not a test of its own: the process a test below starts and kills. It starts a fixture from a
/// thread that then ends, says where, and waits to be killed.
#[test]
fn helper_holds_a_fixture_until_killed() {
    if std::env::var_os("FORKECHO_FIXTURE_HELPER").is_none() {
        return;
    }
    let fe = std::thread::spawn(|| Forkecho::start().unwrap())
        .join()
        .unwrap();
    let control = fe.status().map(|_| ()).is_ok();
    println!(
        "pid={} control={control} dir={}",
        fe.pid(),
        fe.directory().display()
    );
    std::io::stdout().flush().unwrap();
    loop {
        std::thread::park();
    }
}

#[test]
fn a_killed_test_process_leaves_no_forkecho_and_no_files() {
    let mut helper = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_holds_a_fixture_until_killed",
            "--nocapture",
        ])
        .env("FORKECHO_FIXTURE_HELPER", "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut said = String::new();
    let mut stdout = BufReader::new(helper.stdout.take().unwrap());
    while !said.starts_with("pid=") {
        said.clear();
        assert!(
            stdout.read_line(&mut said).unwrap() > 0,
            "the helper said nothing"
        );
    }
    let pid: u32 = said[4..].split(' ').next().unwrap().parse().unwrap();
    assert!(said.contains("control=true"), "{said}");
    let dirs = |pid: u32| -> Vec<String> {
        let prefix = format!("forkecho-fixture.{pid}.");
        std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with(&prefix))
            .collect()
    };
    let helper_pid = helper.id();
    assert_eq!(
        dirs(helper_pid).len(),
        1,
        "the helper's fixture has its directory"
    );
    assert!(!ended(pid));
    helper.kill().unwrap();
    helper.wait().unwrap();
    let killed = Instant::now();
    while !ended(pid) {
        assert!(
            killed.elapsed() < Duration::from_secs(1),
            "forkecho {pid} outlived the test"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    eprintln!(
        "forkecho ended {:?} after its test process was killed",
        killed.elapsed()
    );
    // The next fixture to start removes what the killed one left.
    let fe = Forkecho::start().unwrap();
    assert_eq!(dirs(helper_pid), Vec::<String>::new());
    let dir = fe.directory().to_path_buf();
    assert!(dir.exists());
    drop(fe);
    assert!(
        !dir.exists(),
        "a dropped fixture's directory is left: {}",
        dir.display()
    );
}

#[test]
fn a_forkecho_that_cannot_start_is_an_error_quoting_it() {
    let err = Forkecho::with_args(["--port", "99999"]).err().unwrap();
    let text = err.to_string();
    assert!(text.contains("99999"), "{text}");
    assert!(text.contains("did not start"), "{text}");
}

/// Not a test of its own: run by the test below with the environment it sets.
#[test]
fn helper_looks_for_the_binary() {
    if std::env::var_os("FORKECHO_FIXTURE_HELPER").is_none() {
        return;
    }
    match Forkecho::start() {
        Ok(_) => println!("started"),
        Err(err) => println!("error: {err}"),
    }
}

#[test]
fn a_binary_nowhere_to_be_found_is_an_error_that_says_where_it_looked() {
    let look = |env: &[(&str, &str)]| {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .args(["--exact", "helper_looks_for_the_binary", "--nocapture"])
            .env("FORKECHO_FIXTURE_HELPER", "1")
            .env_remove("FORKECHO_BIN")
            .envs(env.iter().copied());
        let out = command.output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = look(&[("PATH", "/nonexistent")]);
    assert!(
        text.contains("error: forkecho not found: FORKECHO_BIN is not set and PATH"),
        "{text}"
    );
    assert!(text.contains("cargo install forkecho"), "{text}");
    let text = look(&[("FORKECHO_BIN", "/nonexistent/forkecho")]);
    assert!(
        text.contains("FORKECHO_BIN=/nonexistent/forkecho: no such file"),
        "{text}"
    );
}
