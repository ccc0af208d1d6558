//! The README's promises, checked against the binary: the options it names exist, its Rust
//! example passes in a fresh project, and its pytest example catches the naive client and passes
//! the correct one.

use std::process::Command;

use crate::util::{binary, output_within_deadline};

const README: &str = include_str!("../README.md");

/// The body of the README's first code block that starts with `fence` and contains `needle`.
fn block(fence: &str, needle: &str) -> &'static str {
    let opening = format!("```{fence}\n");
    let mut rest = README;
    while let Some(at) = rest.find(&opening) {
        let body = &rest[at + opening.len()..];
        let len = body.find("```\n").expect("the block ends");
        if body[..len].contains(needle) {
            return &body[..len];
        }
        rest = &body[len..];
    }
    panic!("no ```{fence} block with {needle:?} in the README")
}

fn help(args: &[&str]) -> String {
    let out = Command::new(binary())
        .args(args)
        .output()
        .expect("run forkecho");
    assert!(out.status.success());
    String::from_utf8(out.stdout).expect("UTF-8 help")
}

/// Every option `text` names (`--word`) that is not one of `others` nor one forkecho, `ping`
/// or `ctl` has, spelled as the binary spells it; and how many it names.
fn unknown_options(text: &str, others: &[&str]) -> (Vec<String>, usize) {
    let known = format!(
        "{}{}{}",
        help(&["--help"]),
        help(&["ping", "--help"]),
        help(&["ctl", "--help"])
    );
    let mut named: Vec<&str> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|word| word.starts_with("--") && word.len() > 2 && !word.ends_with('-'))
        .collect();
    named.sort_unstable();
    named.dedup();
    let unknown = named
        .iter()
        .filter(|flag| !others.contains(flag))
        .filter(|flag| {
            [" ", "\n", "=", ","]
                .iter()
                .all(|after| !known.contains(&format!("{flag}{after}")))
        })
        .map(ToString::to_string)
        .collect();
    (unknown, named.len())
}

/// The man page as plain text: roff's fonts and escapes undone.
fn man_text() -> String {
    let roff = help(&["--man"]);
    ["\\fB", "\\fI", "\\fR", "\\fP", "\\&"]
        .iter()
        .fold(roff, |text, font| text.replace(font, ""))
        .replace("\\-", "-")
        .replace("\\(aq", "'")
}

#[test]
fn every_option_the_readme_names_is_one_the_binary_has() {
    // The reference is the binary's own (`-h`, `--help`, the man page); the README only names
    // options, and each must be one of those, spelled as the binary spells it.
    // What the README's examples pass to other programs (cargo, nc, podman, ...), not forkecho.
    let others = [
        "--release", // cargo
        "--path",
        "--ignored", // cargo test -- --ignored
        "--format",  // podman build
        "--ignorefile",
        "--rm",
        "--now", // systemctl
    ];
    let (unknown, named) = unknown_options(README, &others);
    assert!(
        unknown.is_empty(),
        "README.md names options forkecho does not have: {unknown:?}"
    );
    assert!(named > 30, "{named}");
}

#[test]
fn every_option_the_man_page_names_is_one_the_binary_has() {
    // The options sections are clap's own; the reference sections (LOGS, CONTROL, TLS, ...) are
    // prose that names options, and drift there is what this catches.
    let others = ["--now"]; // systemctl enable --now
    let (unknown, named) = unknown_options(&man_text(), &others);
    assert!(
        unknown.is_empty(),
        "the man page names options forkecho does not have: {unknown:?}"
    );
    assert!(named > 60, "{named}");
}

#[test]
fn the_stdout_lines_are_the_ones_help_man_and_readme_describe() {
    // Every line forkecho can write to stdout, with every listener kind that adds one.
    let server = crate::util::Server::start(&["--udp", "--metrics", "127.0.0.1:0"]);
    let lines: Vec<String> = (server.readiness_lines().lines())
        .map(ToString::to_string)
        .collect();
    let shapes: Vec<String> = lines
        .iter()
        .map(|line| {
            let mut words: Vec<&str> = line.split(' ').collect();
            let last = words.pop().unwrap();
            let shape = match last.strip_prefix("http://") {
                Some(url) => format!("http://ADDR/{}", url.split_once('/').unwrap().1),
                None => "ADDR".to_string(),
            };
            format!("{} {shape}", words.join(" "))
        })
        .collect();
    assert_eq!(
        shapes,
        [
            "listening on ADDR",
            "listening on udp ADDR",
            "metrics on http://ADDR/metrics"
        ],
        "stdout: {lines:?}"
    );
    let (long_help, man) = (help(&["--help"]).replace('\n', " "), man_text());
    let man = man.replace('\n', " ");
    let readme = README.replace('\n', " ");
    for shape in &shapes {
        let quoted = format!("`{shape}`");
        assert!(
            long_help.contains(&quoted),
            "--help does not describe {quoted}"
        );
        assert!(
            man.contains(shape.as_str()),
            "the man page does not describe {shape}"
        );
        assert!(
            readme.contains(&quoted),
            "README.md does not describe {quoted}"
        );
    }
    // --help says how many lines there are and that nothing else is written.
    assert!(long_help.contains("and nothing else"), "{long_help}");
}

/// The client the README's Rust example calls: reads until the whole reply is in.
const MY_CLIENT: &str = "mod my_client {
    use std::io::{Read, Write};
    pub fn echo(addr: std::net::SocketAddr, message: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut stream = std::net::TcpStream::connect(addr)?;
        stream.write_all(message)?;
        let mut reply = vec![0; message.len()];
        stream.read_exact(&mut reply)?;
        Ok(reply)
    }
}
";

#[test]
#[ignore = "run with: cargo test -- --ignored (uses cargo, offline)"]
fn the_readme_rust_example_is_three_lines_of_glue_and_passes_in_a_fresh_project() {
    let example = block("rust", "forkecho_fixture");
    // The glue: the lines that name the fixture or the server it started.
    let glue: Vec<&str> = (example.lines())
        .filter(|l| l.contains("orkecho") || l.contains("server."))
        .collect();
    assert_eq!(glue.len(), 3, "{glue:#?}");
    let project = crate::util::Scratch::new("readme-rust");
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/forkecho-fixture");
    let manifest = format!(
        "[package]\nname = \"readme-example\"\nversion = \"0.0.0\"\nedition = \"2024\"\n\n\
         [dev-dependencies]\nforkecho-fixture = {{ path = \"{fixture}\" }}\n\n[workspace]\n"
    );
    std::fs::write(project.path("Cargo.toml"), manifest).unwrap();
    std::fs::create_dir_all(project.path("src")).unwrap();
    std::fs::create_dir_all(project.path("tests")).unwrap();
    std::fs::write(project.path("src/lib.rs"), "").unwrap();
    std::fs::write(
        project.path("tests/readme.rs"),
        format!("{MY_CLIENT}\n{example}"),
    )
    .unwrap();
    let target = concat!(env!("CARGO_MANIFEST_DIR"), "/target/readme-example");
    // Compiling the fixture and its dependencies takes longer than any test's deadline.
    let out = Command::new(env!("CARGO"))
        .args(["test", "--offline", "-q"])
        .current_dir(&project.0)
        .env("CARGO_TARGET_DIR", target)
        .env("FORKECHO_BIN", binary())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 passed"), "{text}");
}

/// Needs python3 with pytest (Debian: python3-pytest).
#[test]
#[ignore = "run with: cargo test -- --ignored (uses python3 with pytest)"]
fn the_readme_pytest_example_fails_the_naive_client_and_passes_the_other() {
    let dir = std::env::temp_dir().join(format!("forkecho-readme-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("test_readme.py"), block("python", "def ask_naive")).unwrap();
    // The example runs `forkecho` from PATH, as a user's test would.
    let path = path_with_binary();
    let (status, text) = pytest(&dir, &["test_readme.py"], &[("PATH", &path)]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(status, Some(1), "one test must fail:\n{text}");
    assert!(text.contains("1 failed, 1 passed"), "{text}");
    assert!(
        text.contains("FAILED test_readme.py::test_naive_client"),
        "{text}"
    );
}

/// Needs python3 with pytest.
#[test]
#[ignore = "run with: cargo test -- --ignored (uses python3 with pytest)"]
fn the_readme_tls_recipe_sees_the_expired_certificate_refused() {
    let dir = std::env::temp_dir().join(format!("forkecho-readme-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let recipe = block("python", "def test_rejects_an_expired_certificate");
    std::fs::write(dir.join("test_tls.py"), recipe).unwrap();
    let path = path_with_binary();
    let (status, text) = pytest(&dir, &["test_tls.py"], &[("PATH", &path)]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(status, Some(0), "{text}");
    assert!(text.contains("1 passed"), "{text}");
}

/// Needs python3 with pytest and pytest-xdist. The plugin is loaded from its source folder with
/// autoloading off, so that an installed copy (CI installs it with pip) is not loaded twice.
#[test]
#[ignore = "run with: cargo test -- --ignored (uses python3 with pytest and pytest-xdist)"]
fn the_pytest_plugin_passes_its_tests_four_at_a_time() {
    let plugin = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/pytest-forkecho");
    let args = [
        "-p",
        "xdist.plugin",
        "-p",
        "pytest_forkecho",
        "-n",
        "4",
        "tests",
    ];
    let env = [
        ("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1"),
        ("PYTHONPATH", plugin),
        ("FORKECHO_BIN", binary()),
    ];
    let (status, text) = pytest(std::path::Path::new(plugin), &args, &env);
    assert_eq!(status, Some(0), "{text}");
    assert!(text.contains("11 passed"), "{text}");
}

/// PATH with the built forkecho's folder first: the README's examples run `forkecho`.
fn path_with_binary() -> String {
    let bin_dir = std::path::Path::new(binary()).parent().unwrap();
    let path = std::env::var("PATH").unwrap_or_default();
    format!("{}:{path}", bin_dir.display())
}

/// `python3 -m pytest -q -p no:cacheprovider ARGS` in `dir` with `env` added: its exit status,
/// and everything it printed.
fn pytest(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let child = Command::new("python3")
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .args(args)
        .current_dir(dir)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 -m pytest");
    let out = output_within_deadline(child, "pytest");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text)
}
