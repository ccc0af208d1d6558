//! The values' parsers: what each accepts and how it refuses the rest.

use super::*;

#[test]
fn unix_binds_are_paths_or_abstract_names_that_fit_sun_path() {
    assert_eq!(
        parse_bind("unix:/tmp/fe.sock"),
        Ok(Bind::Unix("/tmp/fe.sock".into()))
    );
    assert_eq!(
        parse_bind("unix:rel.sock"),
        Ok(Bind::Unix("rel.sock".into()))
    );
    assert_eq!(parse_bind("unix:@fe"), Ok(Bind::Abstract("fe".into())));
    assert_eq!(parse_bind("unix:@fe").unwrap().to_string(), "unix:@fe");
    assert!(
        parse_bind("unix:")
            .unwrap_err()
            .contains("socket path is missing")
    );
    assert!(
        parse_bind("unix:@")
            .unwrap_err()
            .contains("abstract name is missing")
    );
    let long = format!("unix:/{}", "a".repeat(UNIX_PATH_MAX));
    assert!(parse_bind(&long).unwrap_err().contains("at most 107"));
    let fits = format!("unix:/{}", "a".repeat(UNIX_PATH_MAX - 1));
    assert!(parse_bind(&fits).is_ok());
}

#[test]
fn unix_modes_are_octal_permission_bits() {
    assert_eq!(parse_mode("0660"), Ok(0o660));
    assert_eq!(parse_mode("600"), Ok(0o600));
    assert_eq!(parse_mode("0o777"), Ok(0o777));
    for bad in ["", "0o", "888", "1777", "rw-rw----", "-1"] {
        assert!(parse_mode(bad).is_err(), "{bad}");
    }
}

#[test]
fn seconds_take_decimals_and_zero() {
    assert_eq!(parse_seconds("0"), Ok(Duration::ZERO));
    assert_eq!(parse_seconds("0.25"), Ok(Duration::from_millis(250)));
    assert_eq!(parse_seconds("300"), Ok(Duration::from_secs(300)));
    assert!(parse_seconds("86401").is_err());
    assert!(parse_seconds("inf").is_err());
}

#[test]
fn timeouts_below_a_millisecond_are_refused_but_zero_is_never() {
    assert_eq!(parse_timeout("0"), Ok(Duration::ZERO));
    assert_eq!(parse_timeout("0.001"), Ok(Duration::from_millis(1)));
    assert!(parse_timeout("0.0009").is_err());
    assert!(parse_timeout("-1").is_err());
}

#[test]
fn only_addresses_a_client_can_reach_are_bound() {
    assert!(parse_bind("127.0.0.1").is_ok());
    assert!(parse_bind("::").is_ok());
    assert!(parse_bind("0.0.0.0").is_ok());
    assert_eq!(
        parse_bind("fe80::1%lo"),
        Ok(Bind::Scoped("fe80::1".parse().unwrap(), "lo".into()))
    );
    assert_eq!(
        parse_bind("fe80::1%2"),
        Ok(Bind::Scoped("fe80::1".parse().unwrap(), "2".into()))
    );
    let needs_interface = parse_bind("fe80::1").unwrap_err();
    assert!(
        needs_interface.contains("fe80::1%eth0"),
        "{needs_interface}"
    );
    for shorthand in [
        "127.1",
        "0x7f000001",
        "10.0x1",
        "1.2.3.4.5",
        "0177.0.0.1",
        "2130706433",
    ] {
        let err = parse_bind(shorthand).unwrap_err();
        assert!(err.contains("shorthand"), "{shorthand}: {err}");
    }
    for refused in [
        "::1%lo",
        "fe80::1%",
        "fe80::1%a/b",
        "224.0.0.1",
        "239.1.2.3",
        "255.255.255.255",
        "ff02::1",
        "not a name",
        "-x",
        "host..example",
        "",
    ] {
        assert!(parse_bind(refused).is_err(), "{refused:?}");
    }
    for name in [
        "localhost",
        "db-1.example.org",
        "example.org.",
        "ip6-localhost",
    ] {
        assert_eq!(parse_bind(name), Ok(Bind::Name(name.to_string())));
    }
}

#[test]
fn sizes_take_binary_suffixes_and_limits() {
    assert_eq!(parse_size("65536"), Ok(65536));
    assert_eq!(parse_size("64K"), Ok(65536));
    assert_eq!(parse_size("1m"), Ok(1 << 20));
    assert_eq!(parse_size("64M"), Ok(MAX_BUFFER));
    assert!(parse_size("65M").is_err());
    assert!(parse_size("0").is_err());
    assert!(parse_size("K").is_err());
    assert!(parse_size("-1").is_err());
    assert!(parse_size("99999999999999999999K").is_err());
}
