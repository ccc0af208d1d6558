//! The README's promises, checked against the binary: its option reference is `forkecho -h` and
//! `forkecho ping -h` exactly, its Rust fixture is the code below (compiled and run here), and its
//! pytest example catches the naive client and passes the correct one.

use std::process::Command;

use crate::util::{binary, have_ipv6, output_within_deadline, round_trip};

const README: &str = include_str!("../README.md");

/// The body of the README's first code block that starts with `fence`.
fn block(fence: &str) -> &'static str {
    let start = README
        .find(&format!("```{fence}\n"))
        .unwrap_or_else(|| panic!("no ```{fence} block in the README"))
        + fence.len()
        + 4;
    let len = README[start..].find("```\n").expect("the block ends");
    &README[start..start + len]
}

fn help(args: &[&str]) -> String {
    let out = Command::new(binary())
        .args(args)
        .output()
        .expect("run forkecho");
    assert!(out.status.success());
    String::from_utf8(out.stdout).expect("UTF-8 help")
}

#[test]
fn the_readme_option_reference_is_the_binary_s_short_help() {
    let want = format!(
        "$ forkecho -h\n{}\n$ forkecho ping -h\n{}",
        help(&["-h"]),
        help(&["ping", "-h"])
    );
    assert_eq!(
        block("text"),
        want,
        "README.md's option block drifted from `forkecho -h`: paste the binary's output"
    );
}

// The README's fixture, word for word (the test below checks the README against these lines).
// README fixture begins
struct Forkecho(std::process::Child);

impl Forkecho {
    /// Starts forkecho on a free loopback port; returns it and the address it listens on.
    fn start(binary: &str, args: &[&str]) -> (Forkecho, std::net::SocketAddr) {
        use std::io::BufRead;
        let mut child = std::process::Command::new(binary)
            .args(["--port", "0", "--bind", "127.0.0.1"])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start forkecho");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped stdout");
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the readiness line");
        let first = line
            .trim_end()
            .strip_prefix("listening on ")
            .expect("listening on ADDR");
        let addr = first
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .expect("an address");
        (Forkecho(child), addr)
    }
}

impl Drop for Forkecho {
    /// SIGKILL: the kernel then sends every child SIGTERM, and each closes its connection.
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
// README fixture ends

#[test]
fn the_readme_rust_fixture_is_this_code_and_serves() {
    let source = include_str!("docs.rs");
    let begin = "// README fixture begins\n";
    let start = source.find(begin).expect("the marker") + begin.len();
    let end = source.find("// README fixture ends").expect("the marker");
    assert_eq!(
        block("rust"),
        &source[start..end],
        "README.md's Rust fixture drifted"
    );

    // Two listeners (the fixture's --bind and one more) still give it one address to use.
    let extra: &[&str] = if have_ipv6() { &["-b", "::1"] } else { &[] };
    let (server, addr) = Forkecho::start(binary(), &[&["--quiet"], extra].concat());
    let mut client = crate::util::connect(addr);
    assert_eq!(round_trip(&mut client, b"fixture\n"), b"fixture\n");
    drop(client);
    drop(server);
}

/// Needs python3 with pytest (Debian: python3-pytest).
#[test]
#[ignore]
fn the_readme_pytest_example_fails_the_naive_client_and_passes_the_other() {
    let dir = std::env::temp_dir().join(format!("forkecho-readme-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("test_readme.py"), block("python")).unwrap();
    // The example runs `forkecho` from PATH, as a user's test would.
    let bin_dir = std::path::Path::new(binary()).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let child = Command::new("python3")
        .args([
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "test_readme.py",
        ])
        .current_dir(&dir)
        .env("PATH", path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 -m pytest");
    let out = output_within_deadline(child, "pytest");
    let _ = std::fs::remove_dir_all(&dir);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "one test must fail:\n{text}");
    assert!(text.contains("1 failed, 1 passed"), "{text}");
    assert!(
        text.contains("FAILED test_readme.py::test_naive_client"),
        "{text}"
    );
}
