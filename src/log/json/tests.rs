//! The JSON renderer's tests: every rule of `super`'s docs, on lines like the log's own.

use super::*;

fn json(text: &str) -> serde_json::Value {
    let line = <JsonLine>::render("2026-12-02T10:00:00.000000Z", text);
    let bytes = line.as_bytes();
    assert_eq!(bytes.last(), Some(&b'\n'));
    assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), 1);
    serde_json::from_slice(bytes)
        .unwrap_or_else(|err| panic!("{err}: {}", String::from_utf8_lossy(bytes)))
}

#[test]
fn fields_are_typed_and_free_words_make_the_message() {
    let v = json(concat!(
        "close peer=127.0.0.1:5 pid=42 bytes=13 duration=2.412s end=error ",
        "error=\"Broken pipe (os error 32)\" fault=none",
    ));
    assert_eq!(v["event"], "close");
    assert_eq!(v["ts"], "2026-12-02T10:00:00.000000Z");
    assert_eq!(v["peer"], "127.0.0.1:5");
    assert_eq!(v["pid"], 42);
    assert_eq!(v["bytes"], 13);
    assert_eq!(v["duration"], 2.412);
    assert_eq!(v["end"], "error");
    assert_eq!(v["error"], "Broken pipe (os error 32)");
    assert_eq!(v["fault"], "none");
    assert!(v.get("message").is_none());
    let v = json("limit max-clients=4096 reached: new connections wait in the backlog");
    assert_eq!(v["max-clients"], 4096);
    assert_eq!(v["message"], "reached: new connections wait in the backlog");
    let v = json("listening on 127.0.0.1:1 [::1]:1 pid=7 rate-per-ip=20/1s idle-timeout=300.000s");
    assert_eq!(v["event"], "listening");
    assert_eq!(
        v["addresses"],
        serde_json::json!(["127.0.0.1:1", "[::1]:1"])
    );
    assert!(v.get("message").is_none());
    assert_eq!(v["rate-per-ip"], "20/1s");
    assert_eq!(v["idle-timeout"], 300.0);
}

#[test]
fn addresses_are_a_field_of_their_own() {
    let v = json("listening on udp 127.0.0.1:9 [::1]:9");
    assert_eq!(v["transport"], "udp");
    assert_eq!(
        v["addresses"],
        serde_json::json!(["127.0.0.1:9", "[::1]:9"])
    );
    assert!(v.get("message").is_none());
    let v = json("listening on 127.0.0.1:9 unix:/run/fe.sock from=systemd pid=1");
    assert_eq!(
        v["addresses"],
        serde_json::json!(["127.0.0.1:9", "unix:/run/fe.sock"])
    );
    assert_eq!(
        (v["from"].clone(), v["pid"].clone()),
        ("systemd".into(), 1.into())
    );
    assert!(v.get("transport").is_none());
    let v = json("metrics on http://127.0.0.1:40973/metrics");
    assert_eq!(v["url"], "http://127.0.0.1:40973/metrics");
    assert_eq!(v["addresses"], serde_json::json!(["127.0.0.1:40973"]));
    assert!(v.get("message").is_none());
    // A field cannot pose as one of them; `on` elsewhere in a line is a word.
    let v = json("close url=x addresses=y reason=on");
    assert_eq!(v["message"], "url=x addresses=y");
    assert!(v.get("addresses").is_none());
    assert_eq!(
        json("limit reached on purpose")["message"],
        "reached on purpose"
    );
}

#[test]
fn warnings_keep_their_prose_and_counts_come_apart() {
    let v = json(concat!(
        "warning: accept failed (accepts paused 100ms): ",
        "Too many open files (os error 24) (41 similar suppressed)",
    ));
    assert_eq!(v["event"], "warning");
    assert_eq!(
        v["message"],
        "accept failed (accepts paused 100ms): Too many open files (os error 24)"
    );
    assert_eq!(v["suppressed"], 41);
    let v = json(concat!(
        "refused peer=192.0.2.1:5 reason=max-per-ip limit=8 group=192.0.2.1 ",
        "(3 similar suppressed)",
    ));
    assert_eq!(
        (v["limit"].clone(), v["suppressed"].clone()),
        (8.into(), 3.into())
    );
    let v = json("panic pid=9 at src/x.rs:1:2: boom");
    assert_eq!(
        (v["pid"].clone(), v["message"].clone()),
        (9.into(), "at src/x.rs:1:2: boom".into())
    );
    let v = json(concat!(
        "log-dropped lines=212 (stderr was taking no lines; ",
        "stats and stopped lines count them all in log-dropped=)",
    ));
    assert_eq!(v["lines"], 212);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .starts_with("(stderr was taking")
    );
}

/// Every key of the line's object, in order (a reader keeps the last of a repeated one).
fn keys(text: &str) -> Vec<String> {
    let line = <JsonLine>::render("2026-12-02T10:00:00.000000Z", text);
    let text = std::str::from_utf8(line.as_bytes()).unwrap();
    let value: serde_json::Value = serde_json::from_str(text).unwrap();
    let keys: Vec<String> = value.as_object().unwrap().keys().cloned().collect();
    // serde_json's map keeps one of each: count the raw `"key":` occurrences instead.
    for key in &keys {
        let written = text.matches(&format!("\"{key}\":")).count();
        assert_eq!(written, 1, "{key} written {written} times: {text}");
    }
    keys
}

#[test]
fn no_outside_string_adds_or_replaces_a_field() {
    // A control command named to forge fields, quoted as the parent quotes it.
    let cmd = crate::log::Quoted("x from=uid:4242 event=close").to_string();
    let error = crate::log::Quoted(format!("unknown cmd \"{}\"", "x\" seed=1")).to_string();
    let text = format!("control cmd={cmd} from=uid:0 refused error={error}");
    let v = json(&text);
    assert_eq!(v["event"], "control");
    assert_eq!(v["cmd"], "x from=uid:4242 event=close");
    assert_eq!(v["from"], "uid:0");
    assert_eq!(v["error"], "unknown cmd \"x\" seed=1\"");
    assert!(v.get("seed").is_none());
    keys(&text);
    // A close-on pattern with quotes and backslashes, as the fault set shows it.
    let text = r#"faults close-on="a\" from=evil seed=9 \\" seed=1"#;
    let v = json(text);
    assert_eq!(v["close-on"], r#"a" from=evil seed=9 \"#);
    assert_eq!(v["seed"], 1);
    assert!(v.get("from").is_none());
    keys(text);
    // A key twice, or one of the object's own: written once, the rest is message.
    let text = "accept peer=1.2.3.4:5 peer=6.6.6.6:6 event=close ts=0 message=x";
    let v = json(text);
    assert_eq!(v["peer"], "1.2.3.4:5");
    assert_eq!(v["event"], "accept");
    assert_eq!(v["ts"], "2026-12-02T10:00:00.000000Z");
    assert_eq!(v["message"], "peer=6.6.6.6:6 event=close ts=0 message=x");
    keys(text);
}

#[test]
fn control_characters_are_escaped_and_long_lines_stay_objects() {
    let v = json("proxy-error peer=1.2.3.4:5 error=\"bad \u{1b}[31m\nheader\"");
    assert_eq!(v["error"], "bad \u{1b}[31m\nheader");
    let long = format!("warning: {}", "é".repeat(3000));
    let v = json(&long);
    assert_eq!(v["truncated"], true);
    assert_eq!(v["event"], "warning");
}

#[test]
fn a_line_too_long_for_a_short_buffer_says_so_and_fits_a_whole_one() {
    let text = format!(
        "close peer=127.0.0.1:5 reason=\"{}\" end=error",
        "x".repeat(600)
    );
    let short = JsonLine::<512>::render("2026-12-02T10:00:00.000000Z", &text);
    assert!(short.truncated());
    assert!(short.as_bytes().len() <= 512);
    let whole = <JsonLine>::render("2026-12-02T10:00:00.000000Z", &text);
    assert!(!whole.truncated());
    let v: serde_json::Value = serde_json::from_slice(whole.as_bytes()).unwrap();
    assert_eq!(v["reason"].as_str().unwrap().len(), 600);
    assert_eq!(v["end"], "error");
}

#[test]
fn strings_are_escaped_as_serde_json_escapes_them() {
    let mut text: String = (0u8..0x80).map(char::from).collect();
    text.push_str("é, ∑, 😀, \u{7f}\u{80}\u{2028}");
    for sample in [text.as_str(), "", "plain", "\"", "\\", "a\"b\\c\nd"] {
        let mut line = <JsonLine>::render("", "");
        line.buf.truncate(0);
        line.string(sample).unwrap();
        let ours = String::from_utf8(line.as_bytes().to_vec()).unwrap();
        assert_eq!(ours, serde_json::to_string(sample).unwrap());
    }
}

#[test]
fn a_suppressed_count_is_read_only_at_the_end() {
    assert_eq!(suppressed("x (3 similar suppressed)"), ("x", Some(3)));
    assert_eq!(suppressed("x (a (3 similar suppressed)"), ("x (a", Some(3)));
    assert_eq!(
        suppressed("x(3 similar suppressed)"),
        ("x(3 similar suppressed)", None)
    );
    assert_eq!(
        suppressed("x (y similar suppressed)"),
        ("x (y similar suppressed)", None)
    );
    assert_eq!(
        suppressed("(3 similar suppressed)"),
        ("(3 similar suppressed)", None)
    );
    assert_eq!(
        suppressed("x (3 similar suppressed) y"),
        ("x (3 similar suppressed) y", None)
    );
}

#[test]
fn key_quote_finds_the_first_equals_quote() {
    assert_eq!(key_quote("error=\"x\" b=\"y\""), Some(5));
    assert_eq!(key_quote("a = \"x\""), None);
    assert_eq!(key_quote("=\""), Some(0));
    assert_eq!(key_quote(""), None);
}
