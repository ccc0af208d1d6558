//! forkecho's log, as a test reads it: every line it wrote to stderr, collected by a thread of
//! the fixture's own as it comes (so forkecho never waits on a full pipe), and each line read as
//! an `Event`: the event's name and its fields. JSON lines (`--log-format json`, the fixture's
//! default) and text lines (`forkecho: close peer=... end=reset`) read the same. Written by the
//! collecting thread; read by `Forkecho::events`, `wait_for` and `stop`.

use std::io::{BufRead, BufReader, Read};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use forkecho_control::closing_quote;
use serde_json::{Map, Value};

/// One log line: its event (`accept`, `close`, `stopped`, ...) and fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The line as forkecho wrote it, without its newline.
    pub line: String,
    fields: Map<String, Value>,
}

impl Event {
    /// Reads one line: a JSON object, or a text line (`forkecho: EVENT key=value ...`, where a
    /// whole number is a number and `key="..."` a string).
    pub fn parse(line: &str) -> Event {
        let fields = match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(fields)) => fields,
            _ => text_fields(line),
        };
        Event {
            line: line.to_string(),
            fields,
        }
    }

    /// The event's name: `listening`, `accept`, `close`, `stopping`, `stopped`, `warning`, ...
    pub fn name(&self) -> &str {
        self.fields
            .get("event")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// A field's value.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.fields.get(key)
    }

    /// A field as a string (`end`, `peer`, `reason`, ...).
    pub fn str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }

    /// A field as a whole number (`bytes`, `accepted`, `pid`, ...).
    pub fn u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(Value::as_u64)
    }

    /// Every field, `event` among them.
    pub fn fields(&self) -> &Map<String, Value> {
        &self.fields
    }
}

/// The line as forkecho wrote it, for a failing assertion's message.
impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.line)
    }
}

/// A text line's event and fields: the first word, then every `key=value` token.
fn text_fields(line: &str) -> Map<String, Value> {
    let mut fields = Map::new();
    let text = line.strip_prefix("forkecho: ").unwrap_or(line);
    let (event, mut rest) = text.split_once(' ').unwrap_or((text, ""));
    fields.insert("event".into(), event.trim_end_matches(':').into());
    while !rest.is_empty() {
        let after = match rest.split_once('=') {
            // `key="..."`: the value runs to the first unescaped quote, spaces and all.
            Some((key, value)) if !key.contains(' ') && value.starts_with('"') => {
                let inner = &value[1..];
                let close = closing_quote(inner).unwrap_or(inner.len());
                let unescaped = inner[..close].replace("\\\"", "\"").replace("\\\\", "\\");
                fields.entry(key.to_string()).or_insert(unescaped.into());
                inner.get(close + 1..).unwrap_or("")
            }
            _ => {
                let (token, after) = rest.split_once(' ').unwrap_or((rest, ""));
                if let Some((key, value)) = token.split_once('=') {
                    let value = match value.parse::<u64>() {
                        Ok(number) => Value::from(number),
                        Err(_) => Value::from(value),
                    };
                    fields.entry(key.to_string()).or_insert(value);
                }
                after
            }
        };
        rest = after.trim_start_matches(' ');
    }
    fields
}

/// The lines collected so far, and a condvar to wait for more.
#[derive(Default)]
pub(crate) struct Log {
    lines: Mutex<(Vec<String>, bool)>,
    grew: Condvar,
}

impl Log {
    /// Collects `stderr` line by line on a thread of its own until it ends.
    pub(crate) fn collect(stderr: impl Read + Send + 'static) -> Arc<Log> {
        let log = Arc::new(Log::default());
        let sink = Arc::clone(&log);
        thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut line = Vec::new();
            loop {
                line.clear();
                let done = !matches!(reader.read_until(b'\n', &mut line), Ok(1..));
                let mut lines = sink.lines.lock().unwrap_or_else(|p| p.into_inner());
                if !line.is_empty() {
                    let text = String::from_utf8_lossy(&line);
                    lines.0.push(text.trim_end_matches('\n').to_string());
                }
                lines.1 |= done;
                sink.grew.notify_all();
                if done {
                    return;
                }
            }
        });
        log
    }

    pub(crate) fn lines(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }

    /// Waits until `count` lines match, for up to `within`; returns them, or every line so far
    /// as the error.
    pub(crate) fn wait_for(
        &self,
        count: usize,
        within: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> Result<Vec<String>, Vec<String>> {
        let deadline = Instant::now() + within;
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let found: Vec<String> = lines.0.iter().filter(|l| matches(l)).cloned().collect();
            if found.len() >= count {
                return Ok(found);
            }
            let now = Instant::now();
            if now >= deadline || lines.1 {
                return Err(lines.0.clone());
            }
            lines = (self.grew.wait_timeout(lines, deadline - now))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Waits, up to `within`, for stderr to reach its end (forkecho has exited).
    pub(crate) fn wait_for_end(&self, within: Duration) {
        let _ = self.wait_for(usize::MAX, within, |_| false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_text_lines_read_alike() {
        let json = Event::parse(r#"{"ts":"x","event":"close","bytes":12,"end":"reset"}"#);
        let text = Event::parse(r#"forkecho: close peer=127.0.0.1:5 bytes=12 end=reset"#);
        for event in [&json, &text] {
            assert_eq!(event.name(), "close");
            assert_eq!(event.u64("bytes"), Some(12));
            assert_eq!(event.str("end"), Some("reset"));
        }
        let quoted = Event::parse(r#"forkecho: close end=error error="a \"b\" c" bytes=3"#);
        assert_eq!(quoted.str("error"), Some(r#"a "b" c"#));
        assert_eq!(quoted.u64("bytes"), Some(3));
        assert_eq!(
            Event::parse("forkecho: warning: it failed").name(),
            "warning"
        );
    }

    #[test]
    fn an_event_displays_as_the_line_forkecho_wrote() {
        let line = r#"forkecho: close peer=127.0.0.1:5 bytes=12 end=reset"#;
        assert_eq!(Event::parse(line).to_string(), line);
        let json = r#"{"event":"close","bytes":12}"#;
        assert_eq!(format!("{}", Event::parse(json)), json);
    }
}
