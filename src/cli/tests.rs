//! Parsing the command line: defaults, short and long flags, modes, and the values refused.

use std::time::Duration;

use super::*;
use clap::{CommandFactory, Parser};
use clap_complete::Shell;

fn parse(args: &[&str]) -> Result<Options, clap::Error> {
    Options::try_parse_from(std::iter::once("forkecho").chain(args.iter().copied()))
}

#[test]
fn definition_is_consistent() {
    Options::command().debug_assert();
}

#[test]
fn defaults_match_the_documentation() {
    let opts = parse(&[]).unwrap();
    assert_eq!(opts.port, 9999);
    assert_eq!(opts.bind, vec![]);
    assert!(!opts.reuse_port);
    assert_eq!(opts.backlog, None);
    assert!(!opts.quiet);
    assert_eq!(opts.buffer_size, 64 * 1024);
    assert_eq!(opts.max_clients, 4096);
    assert_eq!(opts.max_per_ip, 0);
    assert_eq!(opts.idle_timeout, Duration::from_secs(300));
    assert_eq!(opts.grace, Duration::from_secs(5));
    assert_eq!(opts.max_duration, Duration::ZERO);
    assert_eq!((opts.user, opts.group), (None, None));
    assert!(!opts.no_splice);
}

#[test]
fn short_and_long_flags_parse() {
    let opts = parse(&["-p", "0", "-b", "::1", "--backlog", "5", "-q"]).unwrap();
    assert_eq!(opts.port, 0);
    assert_eq!(opts.bind, vec![Bind::Ip("::1".parse().unwrap())]);
    assert_eq!(opts.backlog, Some(5));
    assert!(opts.quiet);
    let opts = parse(&["-b", "127.0.0.1", "--bind", "localhost", "--reuse-port"]).unwrap();
    assert_eq!(
        opts.bind,
        vec![
            Bind::Ip([127, 0, 0, 1].into()),
            Bind::Name("localhost".into())
        ]
    );
    assert!(opts.reuse_port);
}

#[test]
fn bad_values_are_rejected_naming_the_value() {
    for (args, value) in [
        (&["--port", "70000"][..], "70000"),
        (&["--bind", "no such host"][..], "no such host"),
        (&["--backlog", "0"][..], "0"),
        (&["--buffer-size", "0"][..], "0"),
        (&["--buffer-size", "lots"][..], "lots"),
        (&["--max-clients", "0"][..], "0"),
        (&["--max-per-ip", "-1"][..], "-1"),
        (&["--idle-timeout", "soon"][..], "soon"),
        (&["--grace", "-2"][..], "-2"),
        (&["--grace", "NaN"][..], "NaN"),
    ] {
        let err = parse(args).expect_err("must be rejected").to_string();
        assert!(err.contains(&format!("'{value}'")), "{args:?}: {err}");
    }
}

#[test]
fn each_mode_has_its_flag() {
    assert_eq!(parse(&[]).unwrap().mode(), Mode::Serve);
    assert_eq!(parse(&["--inetd"]).unwrap().mode(), Mode::Inetd);
    assert_eq!(parse(&["--man"]).unwrap().mode(), Mode::Man);
    assert_eq!(
        parse(&["--completions", "bash"]).unwrap().mode(),
        Mode::Completions(Shell::Bash)
    );
}

#[test]
fn rates_and_prefixes_parse() {
    let opts = parse(&[
        "--rate-per-ip",
        "20",
        "--ipv6-prefix",
        "56",
        "--ipv4-prefix",
        "24",
    ])
    .unwrap();
    let second = Duration::from_secs(1);
    assert_eq!(
        opts.rate_per_ip,
        Some(Rate {
            count: 20,
            per: second
        })
    );
    assert_eq!((opts.ipv6_prefix, opts.ipv4_prefix), (56, 24));
    let opts = parse(&["--rate-per-ip", "5/0.5"]).unwrap();
    let half = Duration::from_millis(500);
    assert_eq!(
        opts.rate_per_ip,
        Some(Rate {
            count: 5,
            per: half
        })
    );
    let defaults = parse(&[]).unwrap();
    assert_eq!(
        (
            defaults.rate_per_ip,
            defaults.ipv6_prefix,
            defaults.ipv4_prefix
        ),
        (None, 64, 32)
    );
    for bad in [
        &["--rate-per-ip", "0"][..],
        &["--rate-per-ip", "5/0"],
        &["--rate-per-ip", "x/1"],
        &["--rate-per-ip", "5/-1"],
        &["--ipv6-prefix", "129"],
        &["--ipv4-prefix", "33"],
    ] {
        assert!(parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn fault_values_out_of_range_are_refused() {
    for args in [
        &["--delay", "-1"][..],
        &["--delay", "1:x"],
        &["--delay", "3600001"],
        &["--chunk", "1:"],
        &["--chunk", "65M"],
        &["--rate", "0"],
        &["--close-after", "-5"],
        &["--delay", "1", "--fault-rate", "1.5"],
        &["--delay", "1", "--fault-rate", "NaN"],
        &["--reset-after", "1", "--stall-after", "1"],
    ] {
        assert!(parse(args).is_err(), "{args:?}");
    }
}
