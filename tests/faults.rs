//! The faults (`--delay`, `--rate`, `--chunk`, `--close-after`, `--reset-after`, `--stall-after`,
//! `--slow-close`, `--fault-rate`, `--seed`), each measured from a real client. Byte counts are
//! exact; times are asserted as lower bounds (a faulty server cannot be faster than its fault,
//! and a busy machine only makes things later), with upper bounds several times the fault.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::util::{DEADLINE, Server, echo_through, pattern, round_trip};

/// Reads until EOF or an error; returns the bytes and the error kind (None for EOF).
fn read_until_end(stream: &mut TcpStream) -> (Vec<u8>, Option<ErrorKind>) {
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (got, None),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(err) => return (got, Some(err.kind())),
        }
    }
}

/// Sends `data` on a thread of its own (the server may stop reading, so a large send may never
/// finish) and reads what comes back until EOF or an error.
fn send_and_read(stream: &mut TcpStream, data: &[u8]) -> (Vec<u8>, Option<ErrorKind>) {
    let mut writer = stream.try_clone().unwrap();
    let data = data.to_vec();
    thread::spawn(move || {
        let _ = writer.write_all(&data);
    });
    read_until_end(stream)
}

#[test]
fn close_after_delivers_exactly_the_limit_then_a_clean_close_on_every_echo_path() {
    for extra in [&[][..], &["--no-splice"], &["--chunk", "300:0"]] {
        let mut args = vec!["--close-after", "1000"];
        args.extend_from_slice(extra);
        let server = Server::start(&args);
        let mut client = server.connect();
        let data = pattern(1, 100_000);
        let (got, error) = send_and_read(&mut client, &data);
        assert_eq!(error, None, "{extra:?}: a FIN, not a reset");
        crate::util::assert_same_bytes(&got, &data[..1000]);
        let line = server.closed(client.local_addr().unwrap()).unwrap();
        assert_eq!(line.u64("bytes"), Some(1000), "{line}");
        assert_eq!(line.str("end"), Some("close-after"), "{line}");
        assert!(line.str("fault").unwrap().contains("close-after"), "{line}");
    }
}

#[test]
fn reset_after_delivers_exactly_the_limit_then_econnreset() {
    let server = Server::start(&["--reset-after", "1000"]);
    let mut client = server.connect();
    let data = pattern(2, 50_000);
    let (got, error) = send_and_read(&mut client, &data);
    assert_eq!(error, Some(ErrorKind::ConnectionReset));
    crate::util::assert_same_bytes(&got, &data[..1000]);
    let line = server.closed(client.local_addr().unwrap()).unwrap();
    assert_eq!(line.u64("bytes"), Some(1000), "{line}");
    assert_eq!(line.str("end"), Some("reset-after"), "{line}");
    assert_eq!(line.str("fault"), Some("reset-after"), "{line}");
}

#[test]
fn zero_limits_act_before_the_first_byte() {
    // The reset may come before the client's connect(2) has returned: `exchange` counts that
    // as the reset it is.
    let server = Server::start(&["--reset-after", "0"]);
    let error = crate::util::exchange(server.addr, b"hello").map_err(|err| err.kind());
    assert_eq!(error, Err(ErrorKind::ConnectionReset));

    let server = Server::start(&["--close-after", "0"]);
    let mut client = server.connect();
    let (got, error) = send_and_read(&mut client, b"hello");
    assert_eq!((got.len(), error), (0, None));
}

#[test]
fn stall_after_echoes_the_limit_then_nothing_until_the_idle_timeout() {
    let server = Server::start(&["--stall-after", "4", "--idle-timeout", "1"]);
    let mut client = server.connect();
    client.write_all(b"abcdefgh").unwrap();
    let mut got = [0u8; 4];
    client.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"abcd");
    // The rest never comes: the client's own read timeout is what ends its wait.
    client
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let err = client
        .read(&mut [0u8; 16])
        .expect_err("nothing more is echoed");
    assert_eq!(err.kind(), ErrorKind::WouldBlock);
    // The client says it is done (FIN): a hung server does not notice; the connection stays
    // until the idle timeout, with neither a close nor a reset before it.
    let stalled = std::time::Instant::now();
    client.shutdown(Shutdown::Write).unwrap();
    client.set_read_timeout(Some(DEADLINE)).unwrap();
    let ended = client.read(&mut [0u8; 16]);
    let after = stalled.elapsed();
    assert!(
        !matches!(ended, Ok(n) if n > 0),
        "nothing echoed: {ended:?}"
    );
    assert!(
        after >= Duration::from_millis(600),
        "ended {after:?} after the FIN"
    );
    let line = server.closed(client.local_addr().unwrap()).unwrap();
    assert_eq!(line.u64("bytes"), Some(4), "{line}");
    assert_eq!(line.str("end"), Some("idle-timeout"), "{line}");
    assert_eq!(line.str("fault"), Some("stall-after"), "{line}");
}

#[test]
fn a_stall_ends_at_the_idle_timeout_or_the_max_duration() {
    for (limit, end) in [
        ("--idle-timeout", "idle-timeout"),
        ("--max-duration", "max-duration"),
    ] {
        let server = Server::start(&["--stall-after", "0", limit, "0.3"]);
        let mut client = server.connect();
        let started = Instant::now();
        client.write_all(b"anyone there?").unwrap();
        let (got, _) = read_until_end(&mut client);
        assert!(got.is_empty());
        assert!(started.elapsed() >= Duration::from_millis(290), "{limit}");
        let line = server.closed(client.local_addr().unwrap()).unwrap();
        assert_eq!(line.str("end"), Some(end), "{line}");
        assert_eq!(line.str("fault"), Some("stall-after"), "{line}");
    }
}

#[test]
fn delay_holds_every_echo_back_within_its_jitter() {
    let server = Server::start(&["--delay", "100:20"]);
    let mut client = server.connect();
    let started = Instant::now();
    for n in 0..5u8 {
        let sent = Instant::now();
        assert_eq!(round_trip(&mut client, &[n; 10]), [n; 10]);
        let rtt = sent.elapsed();
        assert!(rtt >= Duration::from_millis(79), "round trip {n}: {rtt:?}");
    }
    // Five round trips of at most 120 ms each; a generous margin for a busy machine.
    assert!(started.elapsed() < Duration::from_secs(5));
    client.shutdown(Shutdown::Write).unwrap();
    let line = server.closed(client.local_addr().unwrap()).unwrap();
    assert_eq!(line.str("fault"), Some("delay"), "{line}");
}

#[test]
fn a_delay_delays_a_bulk_echo_once_not_once_per_chunk() {
    // The buffer holds the whole MiB: the delay line is as long as the transfer.
    let server = Server::start(&["--delay", "200", "--buffer-size", "2M"]);
    let data = pattern(3, 1 << 20);
    let started = Instant::now();
    let got = echo_through(server.connect(), &data);
    let took = started.elapsed();
    crate::util::assert_same_bytes(&got, &data);
    // A MiB is read in dozens of chunks: held back one after the other it would take seconds.
    assert!(took >= Duration::from_millis(200), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
}

#[test]
fn rate_throttles_the_echo_to_its_bytes_per_second() {
    let server = Server::start(&["--rate", "256K"]);
    let data = pattern(4, 256 * 1024);
    let started = Instant::now();
    let got = echo_through(server.connect(), &data);
    let took = started.elapsed();
    crate::util::assert_same_bytes(&got, &data);
    // One second's worth, less the first burst (a twentieth of a second's).
    assert!(took >= Duration::from_millis(940), "{took:?}");
    assert!(took < Duration::from_secs(4), "{took:?}");
}

#[test]
fn chunk_splits_each_message_into_pieces_apart_in_time() {
    let server = Server::start(&["--chunk", "4:100"]);
    let mut client = server.connect();
    let started = Instant::now();
    client.write_all(b"hello, world").unwrap();
    let mut reads = Vec::new();
    while reads.iter().map(Vec::len).sum::<usize>() < 12 {
        let mut buf = [0u8; 64];
        let n = client.read(&mut buf).unwrap();
        assert!(n > 0, "EOF in the middle of the echo");
        reads.push(buf[..n].to_vec());
    }
    assert_eq!(reads.concat(), b"hello, world");
    assert!(reads.iter().all(|r| r.len() <= 4), "{reads:?}");
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[test]
fn slow_close_answers_the_clients_fin_late_after_the_whole_echo() {
    let server = Server::start(&["--slow-close", "300"]);
    let mut client = server.connect();
    client.write_all(b"bye").unwrap();
    let closed = Instant::now();
    client.shutdown(Shutdown::Write).unwrap();
    let (got, error) = read_until_end(&mut client);
    assert_eq!((got.as_slice(), error), (&b"bye"[..], None));
    assert!(closed.elapsed() >= Duration::from_millis(300));
    let line = server.closed(client.local_addr().unwrap()).unwrap();
    assert_eq!(line.str("fault"), Some("slow-close"), "{line}");
    assert_eq!(line.str("end"), Some("client-closed"), "{line}");
}

/// Which of 24 sequential connections `--fault-rate 0.5 --close-after 0 --seed SEED` closes at
/// once (seen by the client), checked against the close lines.
fn picked_connections(seed: &str) -> Vec<bool> {
    let server = Server::start(&["--fault-rate", "0.5", "--close-after", "0", "--seed", seed]);
    let picked: Vec<bool> = (0..24)
        .map(|_| {
            let client = server.connect();
            let local = client.local_addr().unwrap();
            let got = echo_through(client, b"x");
            let line = server.closed(local).unwrap();
            let faulted = line.str("fault") == Some("close-after");
            assert!(faulted || line.str("fault") == Some("none"), "{line}");
            assert_eq!(got.is_empty(), faulted, "{line}");
            faulted
        })
        .collect();
    assert!(
        server.log().contains(&format!("seed={seed}")),
        "the startup line names the seed"
    );
    picked
}

#[test]
fn fault_rate_with_a_seed_picks_the_same_connections_every_run() {
    let first = picked_connections("42");
    assert_eq!(picked_connections("42"), first);
    let count = first.iter().filter(|&&p| p).count();
    assert!((4..=20).contains(&count), "{count} of 24 picked: {first:?}");
    assert_ne!(
        picked_connections("43"),
        first,
        "another seed, other choices"
    );
}

#[test]
fn without_faults_the_close_line_has_no_fault_field() {
    let server = Server::start(&[]);
    let client = server.connect();
    let local = client.local_addr().unwrap();
    assert_eq!(echo_through(client, b"plain"), b"plain");
    let line = server.closed(local).unwrap();
    assert_eq!(line.get("fault"), None, "{line}");
    assert!(!server.log().contains("faults"));
}

#[test]
fn contradictory_or_meaningless_faults_are_refused_by_name() {
    for (args, needle) in [
        (
            &["--close-after", "1", "--reset-after", "2"][..],
            "--reset-after",
        ),
        (
            &["--stall-after", "1", "--close-after", "2"][..],
            "--close-after",
        ),
        (&["--fault-rate", "0.5"][..], "--fault-rate"),
        (&["--seed", "1"][..], "--seed"),
        (&["--delay", "1", "--fault-rate", "0"][..], "'0'"),
        (&["--delay", "soon"][..], "'soon'"),
        (&["--chunk", "0"][..], "'0'"),
        (&["--rate", "0"][..], "'0'"),
        (&["--fault-on", "first:2"][..], "--fault-on"),
        (
            &["--reset-after", "0", "--fault-on", "second:2"][..],
            "'second:2'",
        ),
        (
            &["--reset-after", "0", "--fault-on", "conn:5-2"][..],
            "conn:5-2",
        ),
        (
            &["--reset-after", "0", "--fault-on", "from:10.0.0.0/33"][..],
            "10.0.0.0/33",
        ),
        (&["--close-after", "2h"][..], "'2h'"),
        (&["--close-on", "x", "--reset-on", "y"][..], "--reset-on"),
        (&["--close-on", "\\q"][..], "unknown escape"),
    ] {
        let out = crate::util::run_to_completion({
            let mut command = Command::new(crate::util::binary());
            command.args(args);
            command
        });
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[test]
fn faulty_connections_stop_with_the_server() {
    let mut server = Server::start(&["--delay", "60000"]);
    let mut client = server.connect();
    client.write_all(b"held back a minute").unwrap();
    server.signal(nix::sys::signal::Signal::SIGTERM);
    let status = server.wait_exit(DEADLINE);
    assert!(status.success());
    let (got, _) = read_until_end(&mut client);
    assert!(got.is_empty());
}

#[test]
fn a_stop_after_a_fault_ended_the_echo_leaves_the_close_line_naming_the_fault() {
    let mut server = Server::start(&["--close-after", "5"]);
    let mut client = server.connect();
    client.write_all(b"hello, world").unwrap();
    let mut got = Vec::new();
    // The echo and the FIN; the client keeps its side open, so the server lingers.
    client.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"hello");
    server.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(server.wait_exit(DEADLINE).success());
    let line = server.closed(client.local_addr().unwrap()).unwrap();
    assert_eq!(line.str("end"), Some("close-after"), "{line}");
}

#[test]
fn fault_on_picks_connections_by_number() {
    let server = Server::start(&["--fault-on", "first:2,conn:5", "--reset-after", "0"]);
    let mut reset = Vec::new();
    for _ in 1..=6 {
        match crate::util::exchange(server.addr, b"ping") {
            Ok(back) => {
                assert_eq!(back, b"ping");
                reset.push(false);
            }
            Err(err) => reset.push(err.kind() == ErrorKind::ConnectionReset),
        }
    }
    assert_eq!(reset, [true, true, false, false, true, false]);
    // Each close line says which connection number it was, faulted or not.
    let lines = server
        .wait_for_events(6, DEADLINE, |l| l.name() == "close")
        .unwrap();
    let numbered: Vec<_> = lines.iter().map(|l| l.u64("conn").unwrap()).collect();
    assert_eq!(numbered.len(), 6, "{lines:?}");
    let faulted: Vec<_> = lines
        .iter()
        .filter(|l| l.str("fault") == Some("reset-after"))
        .map(|l| l.u64("conn").unwrap().to_string())
        .collect();
    let mut faulted = faulted;
    faulted.sort();
    assert_eq!(faulted, ["1", "2", "5"]);
}

#[test]
fn fault_on_from_picks_connections_by_source() {
    let on = Server::start(&["--fault-on", "from:127.0.0.0/8", "--reset-after", "0"]);
    // The reset may come before connect(2) has returned: `exchange` counts that too.
    let err = crate::util::exchange(on.addr, b"x").map_err(|err| err.kind());
    assert_eq!(err, Err(ErrorKind::ConnectionReset));
    let off = Server::start(&["--fault-on", "from:10.0.0.0/8", "--reset-after", "0"]);
    assert_eq!(round_trip(&mut off.connect(), b"spared"), b"spared");
}

#[test]
fn limits_in_time_end_the_echo_that_long_after_the_accept() {
    let server = Server::start(&["--close-after", "300ms"]);
    let mut client = server.connect();
    let started = Instant::now();
    assert_eq!(round_trip(&mut client, b"early"), b"early");
    // Nothing else sent: the close comes at the time, not after any byte count.
    let (rest, err) = read_until_end(&mut client);
    assert!(rest.is_empty() && err.is_none(), "{rest:?} {err:?}");
    let lasted = started.elapsed();
    assert!(lasted >= Duration::from_millis(280), "{lasted:?}");
    assert!(lasted < Duration::from_secs(3), "{lasted:?}");
    let server = Server::start(&["--reset-after", "200ms", "--delay", "1000"]);
    let mut client = server.connect();
    // Held back by the delay past the deadline: never echoed, and the reset says so.
    let (back, err) = send_and_read(&mut client, b"too late");
    assert!(back.is_empty(), "{back:?}");
    assert_eq!(err, Some(ErrorKind::ConnectionReset));
    let close = server.wait_for(|l| l.name() == "close").expect("close");
    assert_eq!(close.u64("bytes"), Some(0), "{close}");
}

#[test]
fn a_pattern_split_across_writes_ends_the_echo_just_before_it() {
    let server = Server::start(&["--close-on", "QUIT\\r\\n"]);
    let mut client = server.connect();
    client.write_all(b"hello QU").unwrap();
    // "QU" may begin the pattern: only "hello " comes back until the next write decides.
    let mut first = [0u8; 6];
    client.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"hello ");
    client.write_all(b"IT\r\nnever echoed").unwrap();
    let (rest, err) = read_until_end(&mut client);
    assert!(rest.is_empty() && err.is_none(), "{rest:?} {err:?}");
    drop(client);
    let close = server.wait_for(|l| l.name() == "close").expect("close");
    assert_eq!(close.u64("bytes"), Some(6), "{close}");
    // A prefix that turns out not to be the pattern is echoed whole once that is known.
    let mut client = server.connect();
    client.write_all(b"QUI").unwrap();
    client.write_all(b"CK").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let (back, err) = read_until_end(&mut client);
    assert_eq!((back.as_slice(), err), (&b"QUICK"[..], None));
    let server = Server::start(&["--reset-on", "\\x00"]);
    let (back, err) = send_and_read(&mut server.connect(), b"abc\0def");
    assert_eq!(back, b"abc");
    assert_eq!(err, Some(ErrorKind::ConnectionReset));
}

#[test]
fn inband_lines_give_one_connection_its_own_faults() {
    let server = Server::start(&["--inband"]);
    // Asked for: a delay, for this connection alone; the line itself is never echoed.
    let mut slow = server.connect();
    let started = Instant::now();
    slow.write_all(b"FORKECHO --delay 200 --chunk=1:0\r\nhello")
        .unwrap();
    let mut back = [0u8; 5];
    slow.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"hello");
    assert!(started.elapsed() >= Duration::from_millis(190));
    // Alongside it, a connection without the line is served as configured, at once.
    let started = Instant::now();
    assert_eq!(round_trip(&mut server.connect(), b"FORKLIFT"), b"FORKLIFT");
    assert!(started.elapsed() < Duration::from_millis(190));
    // A prefix that turns out to be something else is echoed whole.
    let mut near = server.connect();
    near.write_all(b"FORK").unwrap();
    near.write_all(b"ECHOES\n").unwrap();
    let mut back = [0u8; 11];
    near.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"FORKECHOES\n");
    drop(slow);
    let close = server
        .wait_for(|l| l.line.contains("fault=delay,chunk"))
        .expect("the delayed close");
    assert_eq!(close.u64("bytes"), Some(5), "{close}");
}

#[test]
fn a_malformed_inband_line_is_answered_and_closed_never_echoed() {
    let server = Server::start(&["--inband"]);
    let mut client = server.connect();
    client
        .write_all(b"FORKECHO --delay soon\r\nsecret")
        .unwrap();
    let (back, err) = read_until_end(&mut client);
    let text = String::from_utf8_lossy(&back);
    assert!(
        text.starts_with("FORKECHO error: invalid value 'soon'"),
        "{text}"
    );
    assert!(text.ends_with("\r\n") && !text.contains("secret"), "{text}");
    assert_eq!(err, None, "a clean close");
    // Gone, so the server's lingering close ends at once, and with it the close line.
    drop(client);
    let close = server.wait_for(|l| l.name() == "close").expect("close");
    assert_eq!(close.str("end"), Some("inband-error"), "{close}");
}

#[test]
fn inband_lines_come_after_a_proxy_header() {
    let server = Server::start(&["--inband", "--proxy-protocol"]);
    let mut client = server.connect();
    let header = b"PROXY TCP4 192.0.2.9 127.0.0.1 4000 7\r\n";
    client.write_all(header).unwrap();
    client
        .write_all(b"FORKECHO --reset-after 2 --fault-on from:192.0.2.0/24\r\nhello")
        .unwrap();
    let (back, err) = read_until_end(&mut client);
    assert_eq!(back, b"he");
    assert_eq!(err, Some(ErrorKind::ConnectionReset));
    let close = server.wait_for(|l| l.name() == "close").expect("close");
    assert_eq!(close.str("peer"), Some("192.0.2.9:4000"), "{close}");
    assert_eq!(close.str("end"), Some("reset-after"), "{close}");
}
