//! `--dump DIR` and `--tls-keylog FILE`: each connection's traffic in a pcapng file, read back
//! here as a capture tool reads it (pcap-file's reader, and a parser of the IP and TCP headers
//! of our own), and with tshark (ignored: CI installs it); TLS plaintext, WebSocket frames, UDP
//! datagrams; a limit, a full disk and an unusable directory; the key log against Python's own.

use std::fs;
use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use pcap_file::pcapng::{Block, PcapNgReader};

use crate::util::{
    DEADLINE, Event, Scratch, Server, assert_same_bytes, binary, echo_through, fails_to_start,
    pattern, round_trip, run_client, run_to_completion,
};
use forkecho_fixture::tls::echo as echo_tls;

/// One packet of a dump, its headers read.
#[derive(Debug, Clone)]
struct Packet {
    /// Nanoseconds since the epoch.
    at: u128,
    from: SocketAddr,
    to: SocketAddr,
    /// TCP: sequence number, acknowledgement, flags; UDP: zeros.
    seq: u32,
    ack: u32,
    flags: u8,
    udp: bool,
    payload: Vec<u8>,
}

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

/// Every packet of the pcapng file at `path`: one interface, raw IP, nanosecond stamps.
fn packets(path: &Path) -> Vec<Packet> {
    let file = fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut reader = PcapNgReader::new(file).expect("a pcapng section header");
    let mut out = Vec::new();
    let mut interfaces = 0;
    while let Some(block) = reader.next_block() {
        match block.expect("a well-formed block") {
            Block::InterfaceDescription(idb) => {
                assert_eq!(u32::from(idb.linktype), 101, "raw IP");
                interfaces += 1;
            }
            Block::EnhancedPacket(epb) => {
                assert_eq!(epb.original_len as usize, epb.data.len(), "never truncated");
                out.push(parse(epb.timestamp.as_nanos(), &epb.data));
            }
            other => panic!("unexpected block {other:?}"),
        }
    }
    assert_eq!(interfaces, 1);
    out
}

/// An IPv4 or IPv6 packet carrying TCP or UDP.
fn parse(at: u128, data: &[u8]) -> Packet {
    let (from, to, proto, rest): (IpAddr, IpAddr, u8, &[u8]) = match data[0] >> 4 {
        4 => {
            let len = u16::from_be_bytes([data[2], data[3]]) as usize;
            assert_eq!(len, data.len(), "IPv4 total length");
            let ip = |at: usize| IpAddr::from(<[u8; 4]>::try_from(&data[at..at + 4]).unwrap());
            (ip(12), ip(16), data[9], &data[20..])
        }
        6 => {
            let len = u16::from_be_bytes([data[4], data[5]]) as usize;
            assert_eq!(len + 40, data.len(), "IPv6 payload length");
            let ip = |at: usize| IpAddr::from(<[u8; 16]>::try_from(&data[at..at + 16]).unwrap());
            (ip(8), ip(24), data[6], &data[40..])
        }
        v => panic!("IP version {v}"),
    };
    let port = |at: usize| u16::from_be_bytes([rest[at], rest[at + 1]]);
    let word = |at: usize| u32::from_be_bytes(rest[at..at + 4].try_into().unwrap());
    let (from, to) = (SocketAddr::new(from, port(0)), SocketAddr::new(to, port(2)));
    match proto {
        6 => Packet {
            at,
            from,
            to,
            seq: word(4),
            ack: word(8),
            flags: rest[13],
            udp: false,
            payload: rest[usize::from(rest[12] >> 4) * 4..].to_vec(),
        },
        17 => Packet {
            at,
            from,
            to,
            seq: 0,
            ack: 0,
            flags: 0,
            udp: true,
            payload: rest[8..].to_vec(),
        },
        p => panic!("protocol {p}"),
    }
}

/// The bytes `from` sent, in sequence order (each segment exactly where its number puts it).
fn stream_from(packets: &[Packet], from: SocketAddr) -> Vec<u8> {
    let mine: Vec<&Packet> = packets.iter().filter(|p| p.from == from).collect();
    let start = mine.first().expect("a SYN").seq.wrapping_add(1);
    let mut out = Vec::new();
    for p in mine.iter().filter(|p| !p.payload.is_empty()) {
        assert_eq!(
            p.seq.wrapping_sub(start) as usize,
            out.len(),
            "no gap, no overlap"
        );
        out.extend_from_slice(&p.payload);
    }
    out
}

/// A server dumping into a scratch directory of its own.
fn dumping(what: &str, args: &[&str]) -> (Server, Scratch) {
    let dir = Scratch::new(what);
    let mut all = vec!["--dump", dir.0.to_str().unwrap()];
    all.extend_from_slice(args);
    (Server::start(&all), dir)
}

/// A client of `server`, and its own address (what the close line and the dump name it by).
fn client_of(server: &Server) -> (TcpStream, SocketAddr) {
    let client = server.connect();
    let local = client.local_addr().unwrap();
    (client, local)
}

/// The dump the close line `close` names, in `dir`.
fn dump_of(dir: &Scratch, close: &Event) -> PathBuf {
    let name = close
        .str("dump")
        .unwrap_or_else(|| panic!("no dump= field: {close}"));
    dir.path(name)
}

#[test]
fn a_connection_is_dumped_as_the_tcp_conversation_it_was() {
    let (server, dir) = dumping("dump-tcp", &[]);
    let (mut client, local) = client_of(&server);
    // Round trips: each read of the child's gets exactly one of these.
    assert_eq!(round_trip(&mut client, b"one"), b"one");
    assert_eq!(round_trip(&mut client, b"two!"), b"two!");
    let bulk = pattern(81, 300_000);
    let back = echo_through(client, &bulk);
    assert_same_bytes(&back, &bulk);
    let close = server.closed(local).unwrap();
    let path = dump_of(&dir, &close);
    let name = path.file_name().unwrap().to_str().unwrap().to_string();
    assert!(
        name.starts_with(&format!("conn-1_127.0.0.1-{}_", local.port())),
        "{name}"
    );
    assert!(name.ends_with("Z.pcapng"), "{name}");
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let all = packets(&path);
    let served = server.addr;
    // The handshake, with the real ends.
    let flags: Vec<u8> = all.iter().take(3).map(|p| p.flags).collect();
    assert_eq!(flags, [SYN, SYN | ACK, ACK]);
    assert_eq!((all[0].from, all[0].to), (local, served));
    assert_eq!((all[1].from, all[1].to), (served, local));
    // Segment boundaries as the reads and writes saw them.
    let data: Vec<&Packet> = all.iter().filter(|p| !p.payload.is_empty()).collect();
    assert_eq!(data[0].payload, b"one");
    assert_eq!((data[0].from, data[1].from), (local, served));
    assert_eq!(data[1].payload, b"one");
    assert_eq!(data[2].payload, b"two!");
    // Every byte, both ways, where its sequence number puts it.
    let mut sent = b"onetwo!".to_vec();
    sent.extend_from_slice(&bulk);
    assert_same_bytes(&stream_from(&all, local), &sent);
    assert_same_bytes(&stream_from(&all, served), &sent);
    // Each acknowledges what the other sent before it.
    let last = all.last().unwrap();
    assert_eq!(last.flags, ACK);
    assert_eq!(last.ack, all[1].seq.wrapping_add(1 + sent.len() as u32 + 1));
    // The client's FIN, then the server's, in the order they happened.
    let fins: Vec<SocketAddr> = (all.iter().filter(|p| p.flags & FIN != 0))
        .map(|p| p.from)
        .collect();
    assert_eq!(fins, [local, served]);
    assert!(
        all.windows(2).all(|w| w[0].at <= w[1].at),
        "time stamps in order"
    );
    let mut server = server;
    let stopped = server.stop();
    assert_eq!(stopped.u64("dump-files"), Some(1), "{stopped}");
    assert_eq!(stopped.u64("dump-failed"), Some(0), "{stopped}");
}

#[test]
fn the_startup_line_says_when_dumping_is_on_and_nothing_is_written_without_it() {
    let (server, dir) = dumping("dump-said", &["--dump-limit", "1M"]);
    let said = server
        .wait_for(|l| l.line.contains(" dump dir="))
        .expect("the dump line");
    assert_eq!(said.u64("limit"), Some(1048576), "{said}");
    drop(server);
    let quiet = Server::start(&[]);
    let mut client = quiet.connect();
    let local = client.local_addr().unwrap();
    assert_eq!(round_trip(&mut client, b"private"), b"private");
    drop(client);
    let close = quiet.closed(local).unwrap();
    assert_eq!(close.get("dump"), None, "{close}");
    assert!(!quiet.log().contains("dump"), "{}", quiet.log());
    assert!(dir.names().is_empty(), "{:?}", dir.names());
}

#[test]
fn a_dump_at_its_limit_is_cut_and_the_echo_stays_whole() {
    let dir = Scratch::new("dump-cut");
    let args = ["--dump-limit", "8K", "--dump", dir.0.to_str().unwrap()];
    let (server, metrics) = crate::metrics::with_metrics(&args);
    let (client, local) = client_of(&server);
    let data = pattern(82, 256 * 1024);
    assert_same_bytes(&echo_through(client, &data), &data);
    let close = server.closed(local).unwrap();
    assert_eq!(close.str("dump-end"), Some("cut"), "{close}");
    assert_eq!(close.u64("bytes"), Some(262144), "{close}");
    let path = dump_of(&dir, &close);
    assert!(fs::metadata(&path).unwrap().len() <= 8192);
    // What was written is whole, and begins at the beginning.
    let kept = packets(&path);
    assert_eq!(kept[0].flags, SYN);
    assert!(server.log().contains("cut at --dump-limit 8192 bytes"));
    let samples = crate::metrics::scrape(metrics);
    assert_eq!(samples["forkecho_dump_files_total"], 1.0, "{samples:?}");
    assert_eq!(
        samples["forkecho_dumps_incomplete_total{reason=\"cut\"}"],
        1.0
    );
    assert_eq!(
        samples["forkecho_dumps_incomplete_total{reason=\"failed\"}"],
        0.0
    );
}

#[test]
fn an_unusable_dump_directory_is_a_startup_error_naming_it() {
    let dir = Scratch::new("dump-bad");
    let missing = dir.path("missing");
    let stderr = fails_to_start(&["--port", "0", "--dump", missing.to_str().unwrap()]);
    assert!(
        stderr.contains(&format!("--dump {}", missing.display())),
        "{stderr}"
    );
    let file = dir.path("file");
    fs::write(&file, "not a directory").unwrap();
    let stderr = fails_to_start(&["--port", "0", "--dump", file.to_str().unwrap()]);
    assert!(
        stderr.contains(&format!("--dump {}", file.display())),
        "{stderr}"
    );
    let mut command = Command::new(binary());
    command.args(["--port", "0", "--dump-limit", "1K", "--dump", "/tmp"]);
    let out = run_to_completion(command);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "a bad value, as clap says it");
    assert!(
        stderr.contains("'1K' for '--dump-limit <BYTES>': must be at least 4K"),
        "{stderr}"
    );
    if crate::util::nobody().is_some() {
        // root's, and closed to others: nobody cannot make files there.
        let closed = dir.path("closed");
        fs::create_dir(&closed).unwrap();
        fs::set_permissions(&closed, fs::Permissions::from_mode(0o755)).unwrap();
        let args = [
            "--port",
            "0",
            "--user",
            "nobody",
            "--dump",
            closed.to_str().unwrap(),
        ];
        let stderr = fails_to_start(&args);
        assert!(stderr.contains("unable to make files there"), "{stderr}");
    }
}

#[test]
fn a_full_disk_costs_the_dump_never_the_echo() {
    let root = nix::unistd::geteuid().is_root();
    if !root || Command::new("unshare").arg("--version").output().is_err() {
        eprintln!("skipped: a tmpfs of our own needs root and unshare");
        return;
    }
    let dir = Scratch::new("dump-full");
    // A mount namespace of forkecho's own, with a 256 KiB tmpfs on the dump directory.
    let mut command = Command::new("unshare");
    command.args(["--mount", "--propagation", "private", "sh", "-c"]);
    command.arg("mount -t tmpfs -o size=256k tmpfs \"$1\" && shift && exec \"$@\"");
    command.args(["sh", dir.0.to_str().unwrap(), binary()]);
    command.args(["--bind", "127.0.0.1", "--port", "0", "--log-format", "text"]);
    command.args(["--dump", dir.0.to_str().unwrap()]);
    let mut server = Server::spawn(command);
    let data = pattern(83, 1 << 20);
    for _ in 0..2 {
        let (client, local) = client_of(&server);
        assert_same_bytes(&echo_through(client, &data), &data);
        let close = server.closed(local).unwrap();
        assert_eq!(close.str("end"), Some("client-closed"), "{close}");
        assert_eq!(close.str("dump-end"), Some("failed"), "{close}");
    }
    let lost = server
        .wait_for_events(2, DEADLINE, |l| l.line.contains("lost, the echo goes on"))
        .unwrap();
    assert!(lost[0].line.contains("No space left on device"), "{lost:?}");
    let stopped = server.stop();
    assert_eq!(stopped.u64("dump-failed"), Some(2), "{stopped}");
    assert_eq!(stopped.u64("bytes"), Some(2097152), "{stopped}");
}

#[test]
fn tls_is_dumped_as_its_plaintext_and_websocket_as_its_frames() {
    let (server, dir) = dumping("dump-tls", &["--tls"]);
    let tls = server.connect_tls().unwrap();
    let local = tls.sock.local_addr().unwrap();
    let data = pattern(84, 100_000);
    assert_same_bytes(&echo_tls(tls, &data).unwrap(), &data);
    let all = packets(&dump_of(&dir, &server.closed(local).unwrap()));
    assert_same_bytes(&stream_from(&all, local), &data);
    assert_same_bytes(&stream_from(&all, server.addr), &data);

    let (server, dir) = dumping("dump-ws", &["--websocket"]);
    let mut client = crate::websocket::upgraded(&server);
    let local = client.local_addr().unwrap();
    // A masked text frame, "hi"; then a close.
    client
        .write_all(&[0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2])
        .unwrap();
    let echoed = crate::websocket::read_frame(&mut client);
    assert_eq!(echoed, (true, 1, b"hi".to_vec()));
    client
        .write_all(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8])
        .unwrap();
    let _ = crate::websocket::read_frame(&mut client);
    let all = packets(&dump_of(&dir, &server.closed(local).unwrap()));
    let from_client = stream_from(&all, local);
    assert!(from_client.starts_with(b"GET /any/path HTTP/1.1\r\n"));
    let from_server = stream_from(&all, server.addr);
    assert!(from_server.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
    // The frames after the upgrade, unmasked as the server sent them: text "hi", then close.
    let head = from_server
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap()
        + 4;
    assert_eq!(&from_server[head..head + 4], [0x81, 0x02, b'h', b'i']);
    assert_eq!(&from_server[head + 4..head + 6], [0x88, 0x02]);
}

#[test]
fn the_udp_worker_dumps_every_datagram_and_answer() {
    let (mut server, dir) = dumping("dump-udp", &["--udp"]);
    let to = server.udp_addr().unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let local = client.local_addr().unwrap();
    let mut buf = [0u8; 64];
    for word in [&b"first"[..], b"second", b"third"] {
        client.send_to(word, to).unwrap();
        let (n, _) = client.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], word);
    }
    // The worker writes its file out when it stops.
    server.stop();
    let names = dir.names();
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(
        names[0].starts_with("udp-") && names[0].ends_with(".pcapng"),
        "{names:?}"
    );
    let all = packets(&dir.path(&names[0]));
    assert!(all.iter().all(|p| p.udp));
    let seen: Vec<(SocketAddr, SocketAddr, &[u8])> =
        all.iter().map(|p| (p.from, p.to, &p.payload[..])).collect();
    let mut want = Vec::new();
    for word in [&b"first"[..], b"second", b"third"] {
        want.push((local, to, word));
        want.push((to, local, word));
    }
    assert_eq!(seen, want);
}

/// Python's ssl (OpenSSL's), a client users have, against `server` trusting `ca`: one message,
/// its echo, close_notify, close; its own key log in `keylog` if given. Returns once the server
/// has logged the connection's close.
fn python_tls_echo(server: &Server, ca: &Path, keylog: Option<&Path>, message: &str) {
    let keylog = keylog.map_or(String::new(), |path| {
        format!("c.keylog_filename = '{}'\n", path.display())
    });
    let script = format!(
        concat!(
            "import socket, ssl\n",
            "c = ssl.create_default_context(cafile='{ca}')\n",
            "{keylog}",
            "s = c.wrap_socket(socket.create_connection(('127.0.0.1', {port})),",
            " server_hostname='localhost')\n",
            "s.sendall(b'{message}'); assert s.recv(64) == b'{message}'\n",
            "s.unwrap(); s.close()\n"
        ),
        ca = ca.display(),
        keylog = keylog,
        port = server.addr.port(),
        message = message,
    );
    let out = run_client("python3", &["-c", &script], Vec::new());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    server.wait_for(|l| l.name() == "close").expect("the close");
}

/// The `--tls-keylog` lines for the one TLS 1.3 session a Python client makes, and the client's
/// own (Python's `keylog_filename`, OpenSSL's): the same secrets, label by label.
#[test]
#[ignore = "needs python3"]
fn the_key_log_holds_the_secrets_pythons_client_logs() {
    let dir = Scratch::new("dump-keylog");
    let ca = dir.path("ca.pem");
    let ours = dir.path("server.keys");
    let args = ["--tls", "--tls-ca-out", ca.to_str().unwrap()];
    let server = Server::start(&[&args[..], &["--tls-keylog", ours.to_str().unwrap()]].concat());
    let theirs = dir.path("client.keys");
    python_tls_echo(&server, &ca, Some(&theirs), "secret");
    let lines = |path: &Path| -> Vec<String> {
        let mut lines: Vec<String> = fs::read_to_string(path)
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(str::to_string)
            .collect();
        lines.sort();
        lines
    };
    let (ours_lines, theirs_lines) = (lines(&ours), lines(&theirs));
    let labels: Vec<&str> = ours_lines
        .iter()
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    for label in [
        "CLIENT_HANDSHAKE_TRAFFIC_SECRET",
        "SERVER_HANDSHAKE_TRAFFIC_SECRET",
        "CLIENT_TRAFFIC_SECRET_0",
        "SERVER_TRAFFIC_SECRET_0",
    ] {
        assert!(labels.contains(&label), "{ours_lines:?}");
        let mine = ours_lines
            .iter()
            .find(|l| l.starts_with(&format!("{label} ")));
        let client = theirs_lines
            .iter()
            .find(|l| l.starts_with(&format!("{label} ")));
        assert_eq!(mine, client, "{label}");
    }
    assert_eq!(
        fs::metadata(&ours).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

/// `tshark -r` on a dump: the conversation it shows, `Follow TCP Stream`'s bytes, and no
/// warning from its analysis.
fn tshark(path: &Path, args: &[&str]) -> String {
    let mut all = vec!["-r", path.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = run_client("tshark", &all, Vec::new());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
#[ignore = "needs tshark"]
fn tshark_reads_a_dump_as_the_conversation_and_follows_its_stream() {
    let (server, dir) = dumping("dump-tshark", &[]);
    let (client, local) = client_of(&server);
    let data = pattern(85, 200_000);
    assert_same_bytes(&echo_through(client, &data), &data);
    let path = dump_of(&dir, &server.closed(local).unwrap());
    let fields = [
        "-T",
        "fields",
        "-e",
        "ip.src",
        "-e",
        "tcp.srcport",
        "-e",
        "tcp.dstport",
    ];
    let first = tshark(&path, &[&fields[..], &["-c", "1"]].concat());
    let want = format!("127.0.0.1\t{}\t{}\n", local.port(), server.addr.port());
    assert_eq!(first, want);
    // Follow TCP Stream, raw: each direction's bytes in hex, in order.
    let follow = tshark(&path, &["-q", "-z", "follow,tcp,raw,0"]);
    let (mut from_client, mut from_server) = (Vec::new(), Vec::new());
    for line in follow.lines() {
        let (to, hex) = match line.strip_prefix('\t') {
            Some(hex) => (&mut from_server, hex),
            None => (&mut from_client, line),
        };
        if hex.len() % 2 == 0 && !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let bytes = (0..hex.len()).step_by(2);
            to.extend(bytes.map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()));
        }
    }
    assert_same_bytes(&from_client, &data);
    assert_same_bytes(&from_server, &data);
    // Wireshark's TCP analysis finds nothing wrong: no lost segment, no bad checksum.
    let expert = tshark(&path, &["-q", "-z", "expert,warn"]);
    assert!(
        !expert.contains("Warns") && !expert.contains("Errors"),
        "{expert}"
    );
    let checksums = [
        "-o",
        "tcp.check_checksum:TRUE",
        "-o",
        "ip.check_checksum:TRUE",
    ];
    let bad = tshark(
        &path,
        &[&checksums[..], &["-Y", "tcp.checksum.status == 0"]].concat(),
    );
    assert!(bad.is_empty(), "{bad}");
}

#[test]
#[ignore = "needs tshark"]
fn tshark_decodes_websocket_messages_and_udp_datagrams_in_dumps() {
    let (server, dir) = dumping("dump-tshark-ws", &["--websocket", "--udp"]);
    let mut client = crate::websocket::upgraded(&server);
    let local = client.local_addr().unwrap();
    client.write_all(&[0x81, 0x85, 0, 0, 0, 0]).unwrap();
    client.write_all(b"hello").unwrap();
    assert_eq!(crate::websocket::read_frame(&mut client).2, b"hello");
    drop::<TcpStream>(client);
    let path = dump_of(&dir, &server.closed(local).unwrap());
    let port = format!("tcp.port=={},http", server.addr.port());
    let texts = ["-T", "fields", "-e", "websocket.payload.text"];
    let shown = tshark(
        &path,
        &[&["-d", &port, "-Y", "websocket"][..], &texts].concat(),
    );
    let shown: Vec<&str> = shown.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(shown, ["hello", "hello"], "the message, and its echo");

    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let to = server.udp_addr().unwrap();
    udp.send_to(b"datagram", to).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(udp.recv(&mut buf).unwrap(), 8);
    let mut server = server;
    server.stop();
    let name = dir
        .names()
        .into_iter()
        .find(|n| n.starts_with("udp-"))
        .unwrap();
    let fields = [
        "-T",
        "fields",
        "-e",
        "udp.srcport",
        "-e",
        "udp.dstport",
        "-e",
        "data.data",
    ];
    let shown = tshark(&dir.path(&name), &fields);
    let (a, b) = (udp.local_addr().unwrap().port(), to.port());
    assert_eq!(
        shown,
        format!("{a}\t{b}\t646174616772616d\n{b}\t{a}\t646174616772616d\n")
    );
}

#[test]
fn a_reset_client_ends_its_dump_with_its_reset() {
    let (server, dir) = dumping("dump-reset", &[]);
    let (mut client, local) = client_of(&server);
    assert_eq!(round_trip(&mut client, b"bye"), b"bye");
    socket2::SockRef::from(&client)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(client);
    let close = server.closed(local).unwrap();
    let all = packets(&dump_of(&dir, &close));
    let resets: Vec<&Packet> = all.iter().filter(|p| p.flags & RST != 0).collect();
    assert_eq!(resets.len(), 1, "{all:?}");
    assert_eq!(resets[0].from, local);
}

/// What the man page promises of `--tls-keylog`: a raw capture of the TLS traffic (tshark's, on
/// loopback) decrypted by Wireshark with the key log, and nothing readable without it.
#[test]
#[ignore = "needs tshark, python3 and the right to capture on lo"]
fn wireshark_decrypts_a_raw_capture_with_the_key_log() {
    use std::io::{BufRead, BufReader};
    let dir = Scratch::new("dump-decrypt");
    let (ca, keys, capture) = (dir.path("ca.pem"), dir.path("keys"), dir.path("raw.pcapng"));
    let args = [
        "--tls",
        "--tls-ca-out",
        ca.to_str().unwrap(),
        "--tls-keylog",
    ];
    let server = Server::start(&[&args[..], &[keys.to_str().unwrap()]].concat());
    let port = server.addr.port().to_string();
    // A datagram socket of our own: what it sends itself is the capture's probe.
    let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
    let probe_at = probe.local_addr().unwrap();
    let filter = format!("tcp port {port} or udp port {}", probe_at.port());
    let capturing = Command::new("tshark")
        .args(["-i", "lo", "-l", "-P", "-f", &filter, "-w"])
        .arg(&capture)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .expect("run tshark");
    // Stopped whatever happens, with the dumpcap it runs (its process group): a capture left
    // running would hold the test's output open.
    struct Capture(std::process::Child);
    impl Drop for Capture {
        fn drop(&mut self) {
            let group = nix::unistd::Pid::from_raw(-(self.0.id() as i32));
            let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
            let _ = self.0.wait();
        }
    }
    let mut capturing = Capture(capturing);
    // tshark says "Capturing on" before its filter sees anything: the client begins once a
    // probe has been seen (tshark prints each packet it captures).
    let (seen_tx, seen) = std::sync::mpsc::channel();
    let stdout = capturing.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = seen_tx.send(line);
        }
    });
    let deadline = std::time::Instant::now() + crate::util::DEADLINE;
    loop {
        probe.send_to(b"probe", probe_at).unwrap();
        if seen.recv_timeout(Duration::from_millis(50)).is_ok() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "tshark never captured a probe"
        );
    }
    python_tls_echo(&server, &ca, None, "for your eyes only");
    // Everything is captured once tshark has printed both FINs; then it may stop.
    let mut fins = 0;
    while fins < 2 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = seen.recv_timeout(left).expect("both FINs captured");
        fins += usize::from(line.contains("[FIN"));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(capturing.0.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    assert!(capturing.0.wait().unwrap().success());
    let follow = ["-q", "-z", "follow,tls,ascii,0"];
    let keylog = format!("tls.keylog_file:{}", keys.display());
    let decrypted = tshark(&capture, &[&["-o", &keylog][..], &follow].concat());
    assert_eq!(
        decrypted.matches("for your eyes only").count(),
        2,
        "{decrypted}"
    );
    let without = tshark(&capture, &follow);
    assert!(!without.contains("for your eyes only"), "{without}");
}
