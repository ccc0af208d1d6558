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
//! Strings are escaped as serde_json escapes them: no raw control character or newline reaches a
//! line. A line too long for the buffer ends early as a valid object with `"truncated": true`.

use std::io::{self, Write};

use forkecho_control::closing_quote;

use super::fixed::{Fixed, LINE_MAX};

/// The JSON rendering of one line, in `N` bytes: `log::emit` renders into a short buffer first
/// (a log line's stack is stack a child copies after fork), and into `LINE_MAX` only a line that
/// did not fit.
pub struct JsonLine<const N: usize = LINE_MAX> {
    buf: Fixed<N>,
    /// Set when a write found no room: the object is closed short.
    full: bool,
    /// The line was cut to fit (`"truncated": true`).
    truncated: bool,
}

/// Room kept free for the closing `,"truncated":true}` and the newline.
const CLOSING: usize = 24;

impl<const N: usize> io::Write for JsonLine<N> {
    #[unsafe(link_section = ".text.hot.child")]
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.full || self.buf.len() + data.len() > N - CLOSING {
            self.full = true;
            return Err(io::ErrorKind::WriteZero.into());
        }
        Ok(self.buf.push(data, N - CLOSING))
    }

    /// The trait's own `write_all`, here so that it lies with the child's code.
    #[unsafe(link_section = ".text.hot.child")]
    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        self.write(data).map(drop)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<const N: usize> JsonLine<N> {
    /// Renders `text` (one log line without its prefix and newline) stamped with `ts`.
    pub fn render(ts: &str, text: &str) -> JsonLine<N> {
        let mut line = JsonLine {
            buf: Fixed::new(),
            full: false,
            truncated: false,
        };
        let _ = line.fields(ts, text);
        line.finish();
        line
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.buf.as_bytes()
    }

    /// Whether the line was cut to fit.
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// Writes the object's fields; stops at the first that does not fit.
    #[unsafe(link_section = ".text.hot.child")]
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
    #[unsafe(link_section = ".text.hot.child")]
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
    /// escaped as a string of its own, then joined to the last: its opening quote and the
    /// closing quote before it give way to a space.
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

    #[unsafe(link_section = ".text.hot.child")]
    fn string(&mut self, text: &str) -> io::Result<()> {
        // Escaped as serde_json escapes a string (the tests hold the two together), here, with
        // the child's code, and with no table or constant a child would fault in a page for.
        let quote = [b'"'];
        self.write_all(&quote)?;
        let bytes = text.as_bytes();
        let mut from = 0;
        for (at, &byte) in bytes.iter().enumerate() {
            if byte >= 0x20 && byte != b'"' && byte != b'\\' {
                continue;
            }
            self.write_all(&bytes[from..at])?;
            from = at + 1;
            let short = match byte {
                b'"' | b'\\' => byte,
                0x08 => b'b',
                0x09 => b't',
                0x0a => b'n',
                0x0c => b'f',
                0x0d => b'r',
                _ => {
                    let hex = |n: u8| if n < 10 { b'0' + n } else { b'a' + n - 10 };
                    self.write_all(&[b'\\', b'u', b'0', b'0', hex(byte >> 4), hex(byte & 0xf)])?;
                    continue;
                }
            };
            self.write_all(&[b'\\', short])?;
        }
        self.write_all(&bytes[from..])?;
        self.write_all(&quote)
    }

    /// Closes the object (saying so if it was cut short) and ends the line.
    #[unsafe(link_section = ".text.hot.child")]
    fn finish(&mut self) {
        let end: &[u8] = match self.full {
            true => b",\"truncated\":true}\n",
            false => b"}\n",
        };
        self.truncated = self.full;
        self.full = false;
        // Cut back to the last complete field: a write that did not fit may have left half.
        if end.len() > 2 {
            let keep = last_field_end(self.buf.as_bytes());
            self.buf.truncate(keep);
        }
        self.buf.push(end, N);
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
    #[unsafe(link_section = ".text.hot.child")]
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
#[unsafe(link_section = ".text.hot.child")]
fn next_token(text: &str) -> (&str, &str) {
    let text = text.trim_start_matches(' ');
    let end = if text.starts_with('(') {
        text.find(')').map_or(text.len(), |close| close + 1)
    } else if let Some(quote) = key_quote(text).filter(|&q| !text[..q].contains(' ')) {
        closing_quote(&text[quote + 2..]).map_or(text.len(), |close| quote + 3 + close)
    } else {
        text.find(' ').unwrap_or(text.len())
    };
    let end = text[end..]
        .find(' ')
        .map_or(text.len(), |space| end + space);
    (&text[..end], text[end..].trim_start_matches(' '))
}

/// `text` without a trailing ` (N similar suppressed)`, and N.
#[unsafe(link_section = ".text.hot.child")]
fn suppressed(text: &str) -> (&str, Option<u64>) {
    // Most lines end otherwise: a byte compared, and no constant read.
    if !text.ends_with(')') {
        return (text, None);
    }
    // The last `(` found byte by byte rather than by `rsplit_once`: a string search is code a
    // child would fault in.
    let found = text.strip_suffix(" similar suppressed)").and_then(|rest| {
        let open = rest.bytes().rposition(|b| b == b'(')?;
        let before = rest[..open].strip_suffix(' ')?;
        Some((before, rest[open + 1..].parse().ok()?))
    });
    match found {
        Some((before, count)) => (before, Some(count)),
        None => (text, None),
    }
}

/// Where `="` first appears in `text`: byte by byte, as a string search is code a child would
/// fault in.
#[unsafe(link_section = ".text.hot.child")]
fn key_quote(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    (1..bytes.len())
        .find(|&at| bytes[at] == b'"' && bytes[at - 1] == b'=')
        .map(|at| at - 1)
}

/// Where the last complete `,"key":value` of a cut-short object ends: the object is then closed
/// right after it.
#[unsafe(link_section = ".text.hot.child")]
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
mod tests;
