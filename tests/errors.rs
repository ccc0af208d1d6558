//! Bad input: bad flags and bind failures exit non-zero with a message naming the value, and
//! never with a panic or a backtrace.

use std::net::TcpListener;
use std::process::{Command, Output};

use crate::util::run_to_completion;

fn forkecho(args: &[&str]) -> Output {
    let mut command = Command::new(crate::util::binary());
    command.args(args);
    run_to_completion(command)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A failed start: the given exit code, nothing on stdout, no panic, and `needles` on stderr.
fn assert_refused(out: &Output, code: i32, needles: &[&str]) {
    let text = stderr(out);
    assert_eq!(out.status.code(), Some(code), "stderr:\n{text}");
    assert!(out.stdout.is_empty(), "nothing on stdout: {:?}", out.stdout);
    assert!(
        !text.contains("panicked") && !text.contains("RUST_BACKTRACE"),
        "{text}"
    );
    for needle in needles {
        assert!(text.contains(needle), "stderr lacks {needle:?}:\n{text}");
    }
}

#[test]
fn an_out_of_range_port_is_refused_naming_it() {
    assert_refused(&forkecho(&["--port", "70000"]), 2, &["'70000'", "--port"]);
}

#[test]
fn a_negative_number_is_refused_naming_its_option() {
    for (args, option) in [
        (&["-p", "-1"][..], "--port <PORT>"),
        (&["--backlog", "-5"], "--backlog <N>"),
        (&["--max-clients", "-3"], "--max-clients <N>"),
        (&["--grace", "-2"], "--grace <SECS>"),
        (&["ping", "-c", "-1", "localhost:7"], "--count <COUNT>"),
    ] {
        let value = args[args.len() - if args[0] == "ping" { 2 } else { 1 }];
        let quoted = format!("invalid value '{value}' for '{option}'");
        assert_refused(&forkecho(args), 2, &[&quoted]);
    }
}

#[test]
fn a_bind_address_that_is_neither_an_ip_nor_a_name_is_refused_naming_it() {
    assert_refused(
        &forkecho(&["--bind", "not an address"]),
        2,
        &["'not an address'", "--bind"],
    );
}

#[test]
fn a_bind_address_in_a_form_that_cannot_serve_is_refused_saying_which_forms_work() {
    for (value, needle) in [
        ("fe80::1", "needs its interface, such as fe80::1%eth0"),
        ("127.1", "IPv4 address in shorthand"),
        ("0x7f000001", "IPv4 address in shorthand"),
        ("::1%lo", "only a link-local IPv6 address"),
    ] {
        let quoted = format!("'{value}'");
        assert_refused(
            &forkecho(&["--bind", value]),
            2,
            &[&quoted, "--bind", needle],
        );
    }
    assert_refused(
        &forkecho(&["--bind", "fe80::1%no-such-if9", "--port", "0"]),
        1,
        &["--bind 'fe80::1%no-such-if9': no interface 'no-such-if9'"],
    );
}

#[test]
fn a_bind_name_that_does_not_resolve_is_refused_naming_it() {
    // .invalid never resolves (RFC 6761).
    assert_refused(
        &forkecho(&["--bind", "no-such-host.invalid", "--port", "0"]),
        1,
        &["forkecho: fatal: unable to resolve --bind 'no-such-host.invalid'"],
    );
}

#[test]
fn other_bad_values_and_unknown_flags_are_refused() {
    assert_refused(&forkecho(&["--backlog", "-5"]), 2, &["'-5'"]);
    assert_refused(&forkecho(&["--buffer-size", "1G"]), 2, &["'1G'"]);
    assert_refused(&forkecho(&["--frobnicate"]), 2, &["--frobnicate"]);
}

/// forkecho on loopback port 0 with `flag value`, which must be refused naming both.
fn assert_value_refused(flag: &str, value: &str) {
    let out = forkecho(&["--bind", "127.0.0.1", "--port", "0", flag, value]);
    assert_refused(&out, 2, &[&format!("'{value}'"), flag]);
}

#[test]
fn settings_no_system_can_run_are_refused_naming_them() {
    // More processes than Linux can ever have (PID_MAX_LIMIT is 4 194 304).
    assert_value_refused("--max-clients", "4294967295");
    // Below a millisecond a socket timeout rounds to zero, which means "never".
    assert_value_refused("--idle-timeout", "0.0000009");
    assert_value_refused("--max-duration", "0.0000009");
    // Addresses no client can connect to.
    for address in ["224.0.0.1", "255.255.255.255", "ff02::1"] {
        assert_refused(
            &forkecho(&["--bind", address, "--port", "0"]),
            2,
            &[&format!("'{address}'"), "--bind"],
        );
    }
}

#[test]
fn a_port_in_use_names_the_address_and_the_reason() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = forkecho(&["--bind", "127.0.0.1", "--port", &port]);
    assert_refused(
        &out,
        1,
        &[&format!(
            "forkecho: fatal: unable to bind 127.0.0.1:{port}: Address already in use"
        )],
    );
}

#[test]
fn a_privileged_port_without_privilege_names_the_address_and_the_reason() {
    let unprivileged_start: u16 =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1024);
    if unprivileged_start <= 7 {
        eprintln!(
            "skipped: net.ipv4.ip_unprivileged_port_start={unprivileged_start} lets anyone bind \
             port 7"
        );
        return;
    }
    let args = ["--bind", "127.0.0.1", "--port", "7"];
    let out = if nix::unistd::geteuid().is_root() {
        // Root may bind it; drop to nobody for this one run.
        let mut command = Command::new("setpriv");
        command
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(crate::util::binary())
            .args(args);
        run_to_completion(command)
    } else {
        forkecho(&args)
    };
    assert_refused(&out, 1, &["unable to bind 127.0.0.1:7: Permission denied"]);
}

#[test]
fn help_and_version_succeed() {
    let help = forkecho(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in ["--port", "--bind", "--backlog", "--quiet", "--buffer-size"] {
        assert!(text.contains(flag), "--help lacks {flag}");
    }
    let version = forkecho(&["--version"]);
    assert_eq!(version.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("forkecho {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn an_option_that_shapes_faults_without_a_fault_says_so_in_words() {
    for (args, what) in [
        (
            &["--seed", "7"][..],
            "--seed seeds the faults' random choices",
        ),
        (
            &["--fault-rate", "0.5"][..],
            "--fault-rate picks the connections",
        ),
        (
            &["--fault-on", "first:2"][..],
            "--fault-on chooses the connections",
        ),
    ] {
        let out = forkecho(args);
        assert_refused(&out, 2, &[what, "add one (--delay"]);
        // One sentence, not clap's list of every fault option as "required arguments".
        assert!(
            !stderr(&out).contains("required arguments"),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn ping_with_host_and_port_apart_is_told_to_join_them() {
    assert_refused(
        &forkecho(&["ping", "localhost", "9999"]),
        2,
        &["unexpected argument '9999'", "forkecho ping localhost:9999"],
    );
}
