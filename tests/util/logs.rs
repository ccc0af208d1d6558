//! forkecho's log lines, read the way a script would: the event word and `key=value` fields.

use std::collections::HashMap;

/// The event word of a forkecho log line: `accept`, `close`, `child`, `listening`, ...
pub fn event(line: &str) -> Option<&str> {
    line.strip_prefix("forkecho: ")?.split(' ').next()
}

/// The value of `key=value` in a log line.
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split(' ')
        .find_map(|token| token.strip_prefix(key)?.strip_prefix('='))
}

/// The `key=value` fields of a log line.
pub fn fields(line: &str) -> HashMap<&str, &str> {
    line.split(' ').filter_map(|t| t.split_once('=')).collect()
}
