//! `--log-format json`: a text log line, rendered as one JSON object.
//!
//! The text lines are the one source of every event and field; this reads one back and writes
//! it again as JSON, into a fixed buffer of its own (never allocating, never longer than one
//! atomic write):
//! - the first word is `"event"` (`accept`, `close`, `warning`, ...), after `"ts"`;
//! - `key=value` is a field: a whole number is a JSON number, a duration (`0.412s`) a number of
//!   seconds, anything else a string (`error="..."` keeps what is between its quotes, with the
//!   `\"` and `\\` that `log::Quoted` wrote read back);
//! - a key is written once: a key already written (or one of `ts`, `event`, `message`,
//!   `suppressed`, `truncated`) is no field but words of the message, and so is a token whose key
//!   is not a plain name. Every string from outside reaches the line through `log::Quoted`, so it
//!   is one value whatever it holds: no input adds or replaces a field;
//! - in a line whose words start with `on` (`listening`, `metrics`), the words after it up to
//!   the first field are `"addresses"`, a list (`udp` first is `"transport":"udp"`, a URL is
//!   `"url"` and its host:port an address);
//! - other words, and text in parentheses, make `"message"`; a trailing `(N similar
//!   suppressed)` is `"suppressed": N`;
//! - after `warning:`, `fatal:` and `panic`, the rest of the line is the message as it stands
//!   (apart from the suppressed count): it is prose, not fields.
//!
//! Strings are escaped by serde_json: no raw control character or newline reaches a line. A line
//! too long for the buffer ends early as a valid object with `"truncated": true`.

use std::io::{self, Write};

use super::fixed::{Fixed, LINE_MAX};

/// The JSON rendering of one line.
pub struct JsonLine {
    buf: Fixed,
    /// Set when a write found no room: the object is closed short.
    full: bool,
}

/// Room kept free for the closing `,"truncated":true}` and the newline.
const CLOSING: usize = 24;

impl io::Write for JsonLine {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.full || self.buf.len() + data.len() > LINE_MAX - CLOSING {
            self.full = true;
            return Err(io::ErrorKind::WriteZero.into());
        }
        Ok(self.buf.push(data, LINE_MAX - CLOSING))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl JsonLine {
    /// Renders `text` (one log line without its prefix and newline) stamped with `ts`.
    pub fn render(ts: &str, text: &str) -> JsonLine {
        let mut line = JsonLine {
            buf: Fixed::new(),
            full: false,
        };
        let _ = line.fields(ts, text);
        line.finish();
        line
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.buf.as_bytes()
    }

    /// Writes the object's fields; stops at the first that does not fit.
    fn fields(&mut self, ts: &str, text: &str) -> io::Result<()> {
        self.write_all(b"{\"ts\":")?;
        self.string(ts)?;
        let (event, rest) = text.split_once(' ').unwrap_or((text, ""));
        let event = event.trim_end_matches(':');
        self.write_all(b",\"event\":")?;
        self.string(event)?;
        let (rest, suppressed) = suppressed(rest);
        if matches!(event, "warning" | "fatal" | "panic") {
            // `panic pid=N at FILE:L:C: message`: its pid is a field, the rest prose.
            let rest = match rest.split_once(' ') {
                Some((pid, after)) if event == "panic" && pid.starts_with("pid=") => {
                    self.field(pid)?;
                    after
                }
                _ => rest,
            };
            if !rest.is_empty() {
                self.write_all(b",\"message\":")?;
                self.string(rest)?;
            }
        } else {
            let rest = match rest.strip_prefix("on ") {
                Some(named) => self.addresses(named)?,
                None => rest,
            };
            let mut keys = Keys::new();
            let mut words = false;
            let mut tokens = rest;
            while !tokens.is_empty() {
                let (token, after) = next_token(tokens);
                match keys.field(token) {
                    true => self.field(token)?,
                    false => words = true,
                }
                tokens = after;
            }
            if words {
                self.write_all(b",\"message\":")?;
                self.message(rest)?;
            }
        }
        if let Some(count) = suppressed {
            write!(self, ",\"suppressed\":{count}")?;
        }
        Ok(())
    }

    /// The words after a leading `on` (the `listening` and `metrics` lines), up to the first
    /// field, as `"addresses"`: a leading `udp` is `"transport":"udp"`, and a URL is `"url"` with
    /// its host and port among the addresses. Returns the rest of the line.
    fn addresses<'t>(&mut self, named: &'t str) -> io::Result<&'t str> {
        let mut rest = named;
        let mut first = true;
        let mut list = false;
        while !rest.is_empty() {
            let (token, after) = next_token(rest);
            if token.contains('=') || token.starts_with('(') {
                break;
            }
            if first && token == "udp" {
                self.write_all(b",\"transport\":\"udp\"")?;
            } else {
                let addr = match token.strip_prefix("http://") {
                    Some(url) => {
                        self.write_all(b",\"url\":")?;
                        self.string(token)?;
                        url.split_once('/').map_or(url, |(addr, _)| addr)
                    }
                    None => token,
                };
                self.write_all(if list { b"," } else { b",\"addresses\":[" })?;
                self.string(addr)?;
                list = true;
            }
            first = false;
            rest = after;
        }
        if list {
            self.write_all(b"]")?;
        }
        Ok(rest)
    }

    /// `key=value` as `"key":value`.
    fn field(&mut self, token: &str) -> io::Result<()> {
        let (key, value) = token.split_once('=').unwrap_or((token, ""));
        self.write_all(b",")?;
        self.string(key)?;
        self.write_all(b":")?;
        if let Some(quoted) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
            return self.unquoted(quoted);
        }
        let number = |v: &str| {
            !v.is_empty()
                && v.bytes().all(|b| b.is_ascii_digit() || b == b'.')
                && v.bytes().filter(|&b| b == b'.').count() <= 1
                && !v.starts_with('.')
                && !v.ends_with('.')
        };
        match value.strip_suffix('s') {
            _ if number(value) && !value.contains('.') => self.write_all(value.as_bytes()),
            Some(seconds) if number(seconds) => self.write_all(seconds.as_bytes()),
            _ => self.string(value),
        }
    }

    /// A quoted value's text with `Quoted`'s escapes (`\"`, `\\`) read back, as a JSON string.
    /// Any other backslash (`\x1b`, the text line's own escaping) stays as it is.
    fn unquoted(&mut self, quoted: &str) -> io::Result<()> {
        if !quoted.contains('\\') {
            return self.string(quoted);
        }
        self.write_all(b"\"")?;
        let mut rest = quoted;
        while let Some(at) = rest.find('\\') {
            let (before, escape) = rest.split_at(at);
            self.raw_string(before)?;
            rest = match escape[1..].chars().next() {
                Some(c @ ('"' | '\\')) => {
                    self.raw_string(c.encode_utf8(&mut [0; 4]))?;
                    &escape[2..]
                }
                _ => {
                    self.raw_string("\\")?;
                    &escape[1..]
                }
            };
        }
        self.raw_string(rest)?;
        self.write_all(b"\"")
    }

    /// `text` escaped as the inside of a JSON string (no quotes around it).
    fn raw_string(&mut self, text: &str) -> io::Result<()> {
        let start = self.buf.len();
        self.string(text)?;
        // Drop the closing quote, then the opening one.
        self.buf.remove(self.buf.len() - 1);
        self.buf.remove(start);
        Ok(())
    }

    /// The free words of a line (what is not written as a field), as one string. Each word is
    /// escaped by serde_json as a string of its own, then joined to the last: its opening quote
    /// and the closing quote before it give way to a space.
    fn message(&mut self, words: &str) -> io::Result<()> {
        let mut first = true;
        let mut rest = words;
        // The same decisions as `fields` made, token by token.
        let mut keys = Keys::new();
        while !rest.is_empty() {
            let (token, after) = next_token(rest);
            if !keys.field(token) {
                if !first {
                    // `..."` + `"word"` becomes `... word"`.
                    let closing = self.buf.len() - 1;
                    self.buf.remove(closing);
                    self.write_all(b" ")?;
                }
                let opening = self.buf.len();
                self.string(token)?;
                if !first {
                    self.buf.remove(opening);
                }
                first = false;
            }
            rest = after;
        }
        if first {
            self.string("")?;
        }
        Ok(())
    }

    fn string(&mut self, text: &str) -> io::Result<()> {
        serde_json::to_writer(&mut *self, text).map_err(io::Error::other)
    }

    /// Closes the object (saying so if it was cut short) and ends the line.
    fn finish(&mut self) {
        let end: &[u8] = match self.full {
            true => b",\"truncated\":true}\n",
            false => b"}\n",
        };
        self.full = false;
        // Cut back to the last complete field: a write that did not fit may have left half.
        if end.len() > 2 {
            let keep = last_field_end(self.buf.as_bytes());
            self.buf.truncate(keep);
        }
        self.buf.push(end, LINE_MAX);
    }
}

/// The keys a line's fields have used, so that none is written twice: a later token with the
/// same key is words of the message. Up to `MOST` keys; past that, every token is words.
struct Keys<'a> {
    seen: [&'a str; Keys::MOST],
    len: usize,
}

impl<'a> Keys<'a> {
    const MOST: usize = 64;
    /// The object's own keys: no field may take them.
    const RESERVED: [&'static str; 8] = [
        "ts",
        "event",
        "message",
        "suppressed",
        "truncated",
        "addresses",
        "transport",
        "url",
    ];

    fn new() -> Keys<'a> {
        Keys {
            seen: [""; Keys::MOST],
            len: 0,
        }
    }

    /// Whether `token` is a field to write (and its key, from now on, taken).
    fn field(&mut self, token: &'a str) -> bool {
        let Some((key, _)) = token.split_once('=') else {
            return false;
        };
        let plain = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.';
        let fresh = !key.is_empty()
            && key.chars().all(plain)
            && !Keys::RESERVED.contains(&key)
            && !self.seen[..self.len].contains(&key);
        if !fresh || self.len == Keys::MOST {
            return false;
        }
        self.seen[self.len] = key;
        self.len += 1;
        true
    }
}

/// The next token of `text`: a word, a `key="quoted value"` (with `\"` and `\\` inside), or a
/// parenthesised group; and what follows it (spaces skipped).
fn next_token(text: &str) -> (&str, &str) {
    let text = text.trim_start_matches(' ');
    let end = if text.starts_with('(') {
        text.find(')').map_or(text.len(), |close| close + 1)
    } else if let Some(quote) = text.find("=\"").filter(|&q| !text[..q].contains(' ')) {
        closing_quote(&text[quote + 2..]).map_or(text.len(), |close| quote + 3 + close)
    } else {
        text.find(' ').unwrap_or(text.len())
    };
    let end = text[end..]
        .find(' ')
        .map_or(text.len(), |space| end + space);
    (&text[..end], text[end..].trim_start_matches(' '))
}

/// Where the quoted value that `text` starts inside of ends: its first quote not escaped by a
/// backslash.
fn closing_quote(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'\\' => at += 2,
            b'"' => return Some(at),
            _ => at += 1,
        }
    }
    None
}

/// `text` without a trailing ` (N similar suppressed)`, and N.
fn suppressed(text: &str) -> (&str, Option<u64>) {
    let found = text
        .strip_suffix(" similar suppressed)")
        .and_then(|rest| rest.rsplit_once(" ("))
        .and_then(|(before, count)| Some((before, count.parse().ok()?)));
    match found {
        Some((before, count)) => (before, Some(count)),
        None => (text, None),
    }
}

/// Where the last complete `,"key":value` of a cut-short object ends: the object is then closed
/// right after it.
fn last_field_end(written: &[u8]) -> usize {
    // Every field starts with `,"`; the one a cut interrupted is dropped whole. The quotes inside
    // strings are escaped, so a `,"` that follows a value's end is a field's start only where an
    // even number of unescaped quotes came before; with at least "ts" and "event" written, the
    // last `,"` is enough in practice, and the result is always checked by a parser in the tests.
    written
        .windows(2)
        .rposition(|w| w == b",\"")
        .unwrap_or(written.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(text: &str) -> serde_json::Value {
        let line = JsonLine::render("2026-12-02T10:00:00.000000Z", text);
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
        let v =
            json("listening on 127.0.0.1:1 [::1]:1 pid=7 rate-per-ip=20/1s idle-timeout=300.000s");
        assert_eq!(v["event"], "listening");
        assert_eq!(v["addresses"], serde_json::json!(["127.0.0.1:1", "[::1]:1"]));
        assert!(v.get("message").is_none());
        assert_eq!(v["rate-per-ip"], "20/1s");
        assert_eq!(v["idle-timeout"], 300.0);
    }

    #[test]
    fn addresses_are_a_field_of_their_own() {
        let v = json("listening on udp 127.0.0.1:9 [::1]:9");
        assert_eq!(v["transport"], "udp");
        assert_eq!(v["addresses"], serde_json::json!(["127.0.0.1:9", "[::1]:9"]));
        assert!(v.get("message").is_none());
        let v = json("listening on 127.0.0.1:9 unix:/run/fe.sock from=systemd pid=1");
        assert_eq!(
            v["addresses"],
            serde_json::json!(["127.0.0.1:9", "unix:/run/fe.sock"])
        );
        assert_eq!((v["from"].clone(), v["pid"].clone()), ("systemd".into(), 1.into()));
        assert!(v.get("transport").is_none());
        let v = json("metrics on http://127.0.0.1:40973/metrics");
        assert_eq!(v["url"], "http://127.0.0.1:40973/metrics");
        assert_eq!(v["addresses"], serde_json::json!(["127.0.0.1:40973"]));
        assert!(v.get("message").is_none());
        // A field cannot pose as one of them; `on` elsewhere in a line is a word.
        let v = json("close url=x addresses=y reason=on");
        assert_eq!(v["message"], "url=x addresses=y");
        assert!(v.get("addresses").is_none());
        assert_eq!(json("limit reached on purpose")["message"], "reached on purpose");
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
        let line = JsonLine::render("2026-12-02T10:00:00.000000Z", text);
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
}
