//! `--websocket`: the upgrade, messages echoed as messages of their type whatever their
//! fragments, ping and close answered, and the RFC's close codes for a broken protocol (1002,
//! 1007, 1009). Frames are written byte by byte here, so a test can break the protocol on
//! purpose; tungstenite's client (over TLS too), Python's websockets and node's ws are the
//! clients users have.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::{DEADLINE, Scratch, Server, binary, connect, run_client, run_to_completion};

/// A client's frame: FIN, `opcode`, `payload`, masked unless `unmasked`.
fn frame(fin: bool, opcode: u8, payload: &[u8], unmasked: bool) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | opcode];
    let mask_bit = if unmasked { 0 } else { 0x80 };
    match payload.len() {
        len @ 0..=125 => out.push(mask_bit | len as u8),
        len @ 126..=0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    if unmasked {
        out.extend_from_slice(payload);
    } else {
        let key = [0x12, 0x34, 0x56, 0x78];
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    }
    out
}

/// A server frame: (FIN, opcode, payload).
pub(crate) fn read_frame(stream: &mut impl Read) -> (bool, u8, Vec<u8>) {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head).expect("a frame");
    assert_eq!(head[1] & 0x80, 0, "a server frame is never masked");
    let len = match head[1] & 0x7f {
        126 => {
            let mut len = [0u8; 2];
            stream.read_exact(&mut len).unwrap();
            u16::from_be_bytes(len) as usize
        }
        127 => {
            let mut len = [0u8; 8];
            stream.read_exact(&mut len).unwrap();
            u64::from_be_bytes(len) as usize
        }
        len => len as usize,
    };
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).unwrap();
    (head[0] & 0x80 != 0, head[0] & 0x0f, payload)
}

/// Upgrades a fresh connection to `server` by hand; returns it once the 101 is read.
pub(crate) fn upgraded(server: &Server) -> TcpStream {
    let mut stream = connect(server.addr);
    stream
        .write_all(
            b"GET /any/path HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
              Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
              Sec-WebSocket-Version: 13\r\n\r\n",
        )
        .unwrap();
    // Byte by byte, so nothing after the head is taken from the stream (a frame may follow it
    // at once).
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8];
        stream.read_exact(&mut byte).expect("the upgrade's answer");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // RFC 6455's own example key and answer.
    let accept = head.to_ascii_lowercase();
    assert!(
        accept.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    stream
}

/// The close frame's code and reason.
fn close_code(payload: &[u8]) -> (u16, String) {
    let code = u16::from_be_bytes([payload[0], payload[1]]);
    (code, String::from_utf8_lossy(&payload[2..]).into_owned())
}

#[test]
fn messages_come_back_whole_and_of_their_type_whatever_their_fragments() {
    let server = Server::start(&["--websocket"]);
    let mut ws = upgraded(&server);
    ws.write_all(&frame(true, 1, "héllo".as_bytes(), false))
        .unwrap();
    assert_eq!(read_frame(&mut ws), (true, 1, "héllo".as_bytes().to_vec()));
    ws.write_all(&frame(true, 2, &[0, 1, 2, 255], false))
        .unwrap();
    assert_eq!(read_frame(&mut ws), (true, 2, vec![0, 1, 2, 255]));
    // Three fragments, a ping between them: the pong first, then one text message.
    let mut bytes = frame(false, 1, b"frag", false);
    bytes.extend(frame(true, 9, b"are you there", false));
    bytes.extend(frame(false, 0, b"men", false));
    bytes.extend(frame(true, 0, b"ts", false));
    ws.write_all(&bytes).unwrap();
    assert_eq!(read_frame(&mut ws), (true, 10, b"are you there".to_vec()));
    assert_eq!(read_frame(&mut ws), (true, 1, b"fragments".to_vec()));
    let large = vec![7u8; 200_000];
    ws.write_all(&frame(true, 2, &large, false)).unwrap();
    assert_eq!(read_frame(&mut ws), (true, 2, large));
    // A close of the client's own code is answered with the same code.
    let mut close = 4000u16.to_be_bytes().to_vec();
    close.extend_from_slice(b"done");
    ws.write_all(&frame(true, 8, &close, false)).unwrap();
    let (fin, opcode, payload) = read_frame(&mut ws);
    assert_eq!((fin, opcode, close_code(&payload).0), (true, 8, 4000));
    drop(ws);
    let line = server.wait_for(|l| l.name() == "close").expect("the close");
    assert_eq!(line.str("end"), Some("client-closed"), "{line}");
    assert_eq!(line.u64("ws-messages"), Some(4), "{line}");
    assert_eq!(line.u64("ws-close"), Some(4000), "{line}");
    assert_eq!(line.u64("bytes"), Some(200019), "{line}");
}

#[test]
fn a_broken_protocol_gets_the_rfcs_close_code() {
    let server = Server::start(&["--websocket", "--websocket-max-message", "1K"]);
    let too_long_control = frame(true, 9, &[0; 126], false);
    let cases: [(&str, Vec<u8>, u16); 6] = [
        ("unmasked", frame(true, 1, b"bare", true), 1002),
        (
            "reserved bits",
            [&[0xc1u8][..], &frame(true, 1, b"x", false)[1..]].concat(),
            1002,
        ),
        ("reserved opcode", frame(true, 3, b"x", false), 1002),
        ("control over 125 bytes", too_long_control, 1002),
        (
            "invalid UTF-8",
            frame(true, 1, &[0x66, 0xff, 0x6f], false),
            1007,
        ),
        ("over the limit", frame(true, 2, &[0; 1025], false), 1009),
    ];
    for (what, bytes, code) in cases {
        let mut ws = upgraded(&server);
        let client = ws.local_addr().unwrap();
        ws.write_all(&bytes).unwrap();
        let (_, opcode, payload) = read_frame(&mut ws);
        assert_eq!(
            (opcode, close_code(&payload).0),
            (8, code),
            "{what}: {payload:?}"
        );
        // Then the server closes: a FIN, never a reset. (The client's own FIN ends the server's
        // wait for it at once.)
        ws.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        ws.read_to_end(&mut rest)
            .unwrap_or_else(|err| panic!("{what}: {err}"));
        let line = server.closed(client).unwrap();
        assert_eq!(line.str("end"), Some("websocket-error"), "{what}: {line}");
        assert_eq!(line.u64("ws-close"), Some(code as u64), "{line}");
    }
}

#[test]
fn a_request_that_is_not_an_upgrade_gets_an_http_error() {
    let server = Server::start(&["--websocket"]);
    for (request, status) in [
        (
            &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            "HTTP/1.1 426 Upgrade Required",
        ),
        (&b"hello, echo\r\n\r\n"[..], "HTTP/1.1 400 Bad Request"),
    ] {
        let mut stream = connect(server.addr);
        stream.write_all(request).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with(status), "{answer}");
        if status.contains("426") {
            assert!(answer.contains("Sec-WebSocket-Version: 13\r\n"), "{answer}");
        }
    }
    let lines = server
        .wait_for_events(2, DEADLINE, |l| l.str("end") == Some("websocket-error"))
        .unwrap();
    assert!(
        lines.iter().all(|l| l.line.contains("not an upgrade")),
        "{lines:?}"
    );
}

#[test]
fn wss_echoes_over_tls_with_the_runs_ca() {
    let server = Server::start(&["--websocket", "--tls"]);
    let tls = server.connect_tls().unwrap();
    let url = format!("wss://localhost:{}/echo", server.addr.port());
    let (mut ws, response) = tungstenite::client(url.as_str(), tls).unwrap();
    assert_eq!(response.status(), 101);
    ws.send(tungstenite::Message::text("over TLS")).unwrap();
    assert_eq!(ws.read().unwrap(), tungstenite::Message::text("over TLS"));
    ws.close(None).unwrap();
    while ws.read().is_ok() {}
    let line = server.wait_for(|l| l.name() == "close").expect("the close");
    assert!(line.line.contains(" tls=1.3 "), "{line}");
    assert_eq!(line.u64("ws-close"), Some(1005), "{line}");
}

/// The frames of one message the server sends back: (opcode of the first, payload sizes).
fn message_frames(ws: &mut TcpStream) -> (u8, Vec<usize>, Vec<u8>) {
    let (mut fin, opcode, mut payload) = read_frame(ws);
    let mut sizes = vec![payload.len()];
    while !fin {
        let (more_fin, continuation, more) = read_frame(ws);
        assert_eq!(continuation, 0, "a continuation frame");
        sizes.push(more.len());
        payload.extend(more);
        fin = more_fin;
    }
    (opcode, sizes, payload)
}

#[test]
fn chunk_and_delay_shape_each_message() {
    let server = Server::start(&["--websocket", "--chunk", "3", "--delay", "150"]);
    let mut ws = upgraded(&server);
    let started = Instant::now();
    ws.write_all(&frame(true, 1, b"ten bytes!", false)).unwrap();
    let (opcode, sizes, payload) = message_frames(&mut ws);
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        (opcode, sizes, payload),
        (1, vec![3, 3, 3, 1], b"ten bytes!".to_vec())
    );
    drop(ws);
    let line = server.wait_for(|l| l.name() == "close").expect("the close");
    assert_eq!(line.str("fault"), Some("delay,chunk"), "{line}");
}

#[test]
fn limits_act_at_message_boundaries() {
    // --close-after 10: the message that reaches 10 bytes is echoed whole, then a close 1000.
    let server = Server::start(&["--websocket", "--close-after", "10"]);
    let mut ws = upgraded(&server);
    for (i, message) in [&b"sixsix"[..], b"sevenseven"].iter().enumerate() {
        ws.write_all(&frame(true, 2, message, false)).unwrap();
        assert_eq!(
            read_frame(&mut ws),
            (true, 2, message.to_vec()),
            "message {i}"
        );
    }
    let (_, opcode, payload) = read_frame(&mut ws);
    assert_eq!(
        (opcode, close_code(&payload)),
        (8, (1000, "close-after".into()))
    );
    let line = server.wait_for(|l| l.name() == "close").expect("the close");
    assert_eq!(line.str("end"), Some("close-after"), "{line}");
    assert_eq!(line.u64("ws-messages"), Some(2), "{line}");

    // --reset-after: the echo, then a reset.
    let server = Server::start(&["--websocket", "--reset-after", "1"]);
    let mut ws = upgraded(&server);
    ws.write_all(&frame(true, 1, b"last words", false)).unwrap();
    assert_eq!(read_frame(&mut ws), (true, 1, b"last words".to_vec()));
    let mut rest = Vec::new();
    let err = ws.read_to_end(&mut rest).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{rest:?}");

    // --close-on: the message holding the pattern is not echoed.
    let server = Server::start(&["--websocket", "--close-on", "STOP"]);
    let mut ws = upgraded(&server);
    ws.write_all(&frame(true, 1, b"fine", false)).unwrap();
    assert_eq!(read_frame(&mut ws), (true, 1, b"fine".to_vec()));
    ws.write_all(&frame(true, 1, b"now STOP", false)).unwrap();
    let (_, opcode, _) = read_frame(&mut ws);
    assert_eq!(opcode, 8);
}

#[test]
fn stall_after_holds_the_session_until_the_idle_timeout() {
    let server = Server::start(&["--websocket", "--stall-after", "0", "--idle-timeout", "1"]);
    let mut ws = upgraded(&server);
    let started = Instant::now();
    ws.write_all(&frame(true, 1, b"anyone?", false)).unwrap();
    // Nothing comes back; at the timeout the connection closes (with a reset: the message was
    // never read).
    let mut rest = Vec::new();
    if let Err(err) = ws.read_to_end(&mut rest) {
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    }
    assert!(rest.is_empty(), "{rest:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    let line = server.wait_for(|l| l.name() == "close").expect("the close");
    assert_eq!(line.str("end"), Some("idle-timeout"), "{line}");
    assert_eq!(line.str("fault"), Some("stall-after"), "{line}");
}

#[test]
fn faults_set_on_the_control_socket_reach_the_next_session() {
    let dir = Scratch::new("websocket-control");
    let control = dir.path("control.sock");
    let server = Server::start(&["--websocket", "--control", control.to_str().unwrap()]);
    let reply = server.set_faults([("chunk", "2")]).unwrap();
    assert_eq!(reply["from_connection"], 1);
    let mut ws = upgraded(&server);
    ws.write_all(&frame(true, 2, b"abcde", false)).unwrap();
    assert_eq!(
        message_frames(&mut ws),
        (2, vec![2, 2, 1], b"abcde".to_vec())
    );
    server.clear_faults().unwrap();
    let mut ws = upgraded(&server);
    ws.write_all(&frame(true, 2, b"abcde", false)).unwrap();
    assert_eq!(message_frames(&mut ws), (2, vec![5], b"abcde".to_vec()));
}

#[test]
fn a_client_that_reads_nothing_ends_as_a_write_timeout() {
    let server = Server::start(&["--websocket", "--idle-timeout", "1"]);
    let ws = upgraded(&server);
    let client = ws.local_addr().unwrap();
    // Megabyte messages, never read: the echo fills the client's window, then waits.
    let mut writer = ws.try_clone().unwrap();
    let sending = std::thread::spawn(move || {
        let message = frame(true, 2, &vec![0u8; 1 << 20], false);
        for _ in 0..64 {
            if writer.write_all(&message).is_err() {
                break;
            }
        }
    });
    let line = server.closed(client).unwrap();
    assert_eq!(line.str("end"), Some("write-timeout"), "{line}");
    drop(ws);
    sending.join().unwrap();
}

#[test]
fn the_server_pings_on_its_interval_and_counts_the_pongs() {
    let server = Server::start(&["--websocket", "--websocket-ping", "50"]);
    let mut ws = upgraded(&server);
    for n in 1..=2 {
        let (fin, opcode, payload) = read_frame(&mut ws);
        assert_eq!((fin, opcode), (true, 9));
        assert_eq!(payload, format!("forkecho ping {n}").into_bytes());
        ws.write_all(&frame(true, 10, &payload, false)).unwrap();
    }
    ws.write_all(&frame(true, 8, &1000u16.to_be_bytes(), false))
        .unwrap();
    drop(ws);
    let line = server.wait_for(|l| l.name() == "close").expect("the close");
    assert_eq!(line.str("fault"), Some("websocket-ping"), "{line}");
    let pongs: u64 = line.u64("ws-pongs").unwrap();
    assert_eq!(pongs, 2, "{line}");
}

#[test]
fn pings_past_the_first_n_go_unanswered() {
    let server = Server::start(&["--websocket", "--websocket-no-pong", "1"]);
    let mut ws = upgraded(&server);
    ws.write_all(&frame(true, 9, b"first", false)).unwrap();
    assert_eq!(read_frame(&mut ws), (true, 10, b"first".to_vec()));
    // The second ping gets no pong: the message after it is the next frame back.
    ws.write_all(&frame(true, 9, b"second", false)).unwrap();
    ws.write_all(&frame(true, 1, b"still here", false)).unwrap();
    assert_eq!(read_frame(&mut ws), (true, 1, b"still here".to_vec()));
    drop(ws);
    let line = server.wait_for(|l| l.name() == "close").expect("the close");
    assert_eq!(line.u64("ws-unanswered"), Some(1), "{line}");
    assert_eq!(line.str("fault"), Some("websocket-no-pong"), "{line}");
}

#[test]
fn a_close_limit_sends_the_chosen_code_and_reason() {
    let server = Server::start(&[
        "--websocket",
        "--close-after",
        "0",
        "--websocket-close",
        "1011:restarting",
    ]);
    let mut ws = upgraded(&server);
    let (_, opcode, payload) = read_frame(&mut ws);
    assert_eq!(
        (opcode, close_code(&payload)),
        (8, (1011, "restarting".into()))
    );
    let line = server.wait_for(|l| l.name() == "close").expect("the close");
    assert_eq!(
        line.str("fault"),
        Some("close-after,websocket-close"),
        "{line}"
    );
    assert_eq!(line.u64("ws-close"), Some(1011), "{line}");
}

#[test]
fn a_close_code_without_a_close_or_out_of_range_is_refused_in_words() {
    for (args, wanted) in [
        (
            &["--websocket-close", "1011"][..],
            "--websocket-close sets the code of the close",
        ),
        (
            &["--websocket-close", "1005", "--close-after", "1"][..],
            "1005 is no close code",
        ),
    ] {
        let mut command = Command::new(binary());
        command.arg("--websocket").args(args);
        let out = run_to_completion(command);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(wanted), "{stderr}");
    }
}

#[test]
fn metrics_count_messages_and_close_codes() {
    let (server, metrics) = crate::metrics::with_metrics(&["--websocket"]);
    let mut ws = upgraded(&server);
    for message in [&b"one"[..], b"two"] {
        ws.write_all(&frame(true, 2, message, false)).unwrap();
        read_frame(&mut ws);
    }
    ws.write_all(&frame(true, 8, &1000u16.to_be_bytes(), false))
        .unwrap();
    read_frame(&mut ws);
    drop(ws);
    let mut ws = upgraded(&server);
    ws.write_all(&frame(true, 1, b"bare", true)).unwrap();
    read_frame(&mut ws);
    drop(ws);
    server
        .wait_for_events(2, DEADLINE, |l| l.name() == "close")
        .unwrap();
    server.wait_for_no_children();
    let samples = crate::metrics::scrape(metrics);
    assert_eq!(samples["forkecho_websocket_messages_total"], 2.0);
    assert_eq!(
        samples["forkecho_websocket_closes_total{code=\"1000\"}"],
        1.0
    );
    assert_eq!(
        samples["forkecho_websocket_closes_total{code=\"1002\"}"],
        1.0
    );
    assert_eq!(
        samples["forkecho_connections_closed_total{end=\"websocket-error\"}"],
        1.0
    );
}

/// `forkecho ping` with `args` against `target`: its exit status and everything it printed.
fn ping(args: &[&str], target: &str) -> (Option<i32>, String) {
    let mut command = Command::new(binary());
    command.arg("ping").args(args).arg(target);
    let out = run_to_completion(command);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text)
}

#[test]
fn ping_checks_a_websocket_server_message_by_message() {
    // Fragments on the way back make no difference: a message is a message.
    let server = Server::start(&["--websocket", "--chunk", "7"]);
    let target = format!("ws://127.0.0.1:{}/probe", server.addr.port());
    let (code, text) = ping(&["-c", "3", "-i", "0", "-s", "100"], &target);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("3 sent, 3 echoed, 0 corrupt, 0 lost"),
        "{text}"
    );
    assert!(text.contains("seq=1 handshake="), "{text}");
    let (code, text) = ping(&["-c", "2", "-i", "0", "--json", "--connect"], &target);
    assert_eq!(code, Some(0), "{text}");
    let report: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(
        (report["echoed"].as_u64(), report["sent"].as_u64()),
        (Some(2), Some(2))
    );
    assert!(report["handshake_ms"]["min"].as_f64().is_some(), "{report}");
    // The server's own close ends the run's session: the probe fails, saying why.
    let closing = Server::start(&["--websocket", "--close-after", "0"]);
    let target = format!("ws://127.0.0.1:{}/", closing.addr.port());
    let (code, text) = ping(&["-c", "1"], &target);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("the server closed (1000 close-after)"),
        "{text}"
    );
}

#[test]
fn ping_over_wss_trusts_the_runs_ca_and_fails_a_plain_echo_server_in_words() {
    let dir = Scratch::new("websocket-ping-tls");
    let ca = dir.path("ca.pem");
    let ca = ca.to_str().unwrap();
    let server = Server::start(&["--websocket", "--tls", "--tls-ca-out", ca]);
    let target = format!("wss://localhost:{}/", server.addr.port());
    let (code, text) = ping(&["-c", "2", "-i", "0", "--tls-ca", ca], &target);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("2 echoed"), "{text}");
    let plain = Server::start(&[]);
    let target = format!("ws://127.0.0.1:{}/", plain.addr.port());
    let (code, text) = ping(&["-c", "1"], &target);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("not a WebSocket server"), "{text}");
    assert!(
        text.contains("a plain TCP echo server sends the request back"),
        "{text}"
    );
    let (code, text) = ping(&["-c", "1", "--tls-ca", ca], "localhost:1");
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("--tls-ca needs --tls (or a wss:// target)"),
        "{text}"
    );
}

/// A client in Python's websockets (the sync client): text, binary, a fragmented message, ping,
/// an oversized message refused with 1009, and a normal close.
const PYTHON_CLIENT: &str = r#"
import sys
from websockets.sync.client import connect
from websockets.exceptions import ConnectionClosed
url = sys.argv[1]
with connect(url) as ws:
    ws.send("héllo"); assert ws.recv() == "héllo"
    ws.send(b"\x00\xff"); assert ws.recv() == b"\x00\xff"
    ws.send(["frag", "ments"]); assert ws.recv() == "fragments"
    assert ws.ping(b"pp").wait(10)
with connect(url, max_size=None) as ws:
    try:
        ws.send(b"y" * 2048)
        ws.recv()
        raise SystemExit("no close for an oversized message")
    except ConnectionClosed as closed:
        assert closed.rcvd.code == 1009, closed
print("ok")
"#;

#[test]
#[ignore = "run with: cargo test -- --ignored (uses python3 with websockets)"]
fn pythons_websockets_client_is_echoed() {
    let server = Server::start(&["--websocket", "--websocket-max-message", "1K"]);
    let url = format!("ws://127.0.0.1:{}/", server.addr.port());
    let out = run_client("python3", &["-c", PYTHON_CLIENT, &url], Vec::new());
    assert_eq!(
        out.stdout,
        b"ok\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A client in node's ws: a text and a binary message, then a close with code 4001.
const NODE_CLIENT: &str = r#"
const WebSocket = require('ws');
const ws = new WebSocket(process.argv[2]);
const got = [];
ws.on('open', () => { ws.send('hello node'); ws.send(Buffer.from([1, 2, 3])); });
ws.on('message', (data, isBinary) => {
  got.push(isBinary ? 'bin:' + [...data].join(',') : 'text:' + data.toString());
  if (got.length === 2) ws.close(4001, 'bye');
});
ws.on('close', (code) => { console.log(got.join(' ') + ' close:' + code); });
ws.on('error', (err) => { console.error(err.message); process.exit(1); });
"#;

#[test]
#[ignore = "run with: cargo test -- --ignored (uses node, ws in target/node: npm i --prefix)"]
fn nodes_ws_client_is_echoed() {
    let server = Server::start(&["--websocket"]);
    let url = format!("ws://127.0.0.1:{}/", server.addr.port());
    let script = Scratch::new("websocket-node");
    std::fs::write(script.path("client.js"), NODE_CLIENT).unwrap();
    let mut command = Command::new("node");
    command.arg(script.path("client.js")).arg(&url);
    // Where `npm install --prefix target/node ws` puts it (CI does), else node's own search.
    command.env(
        "NODE_PATH",
        concat!(env!("CARGO_MANIFEST_DIR"), "/target/node/node_modules"),
    );
    let out = crate::util::output_within_deadline(
        command
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run node"),
        "node",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.trim(),
        "text:hello node bin:1,2,3 close:4001",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
