//! Log lines on stderr: one `write(2)` per line, and never a wait for a reader.
//!
//! The parent and hundreds of children share one stderr. Rust's stderr printing macros issue
//! several writes per line, so lines from different processes would interleave. Here a line is
//! formatted into a stack buffer of at most `PIPE_BUF` bytes and handed to the kernel in a single
//! write, which a pipe guarantees to keep whole. Formatting never allocates, so logging costs the
//! accept loop no heap traffic. `sink` writes it without waiting: a line stderr cannot take at
//! once is dropped and counted, and the next line that gets through is followed by
//! `log-dropped lines=N`. This module also holds the small display helpers the log lines share
//! and a rate limiter for warnings that could otherwise flood the log.
//!
//! The text line is the one source of every event and field: with `--log-format json` it is
//! rendered again as one JSON object (`json`), and with `--log-time` it starts with a time stamp
//! (`time`). Either way a control character a client could slip into a line (a PROXY header, a
//! name) is escaped, never written raw. The format is fixed at startup, before the first fork.

mod digits;
mod fixed;
mod json;
mod sink;
pub mod time;

use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

pub use digits::{Dec, Secs, ipv4};
pub use sink::{Drops, share as share_drops};

use fixed::LINE_MAX;
const PREFIX: &str = match std::str::from_utf8(&PREFIX_BYTES) {
    Ok(prefix) => prefix,
    Err(_) => panic!("the prefix is ASCII"),
};

/// The prefix of every text line, in `.data`, where `child/hot.order` puts it on the page of
/// `.data` every child writes anyway: a string constant lies wherever the linker merges it, on a
/// page the child's close line would fault in for these ten bytes alone.
#[unsafe(export_name = "forkecho_log_prefix")]
#[unsafe(link_section = ".data.forkecho_log_prefix")]
static PREFIX_BYTES: [u8; 10] = *b"forkecho: ";

/// The descriptor log lines go to (2, or a private description of it): a sandboxed child must
/// keep it.
pub fn fd() -> std::os::fd::RawFd {
    sink::fd()
}

/// Formats one log line (`forkecho: ` + message + newline) and writes it to stderr in one write.
/// Used as `crate::log::logln!`.
macro_rules! logln {
    ($($arg:tt)*) => {
        $crate::log::emit(format_args!($($arg)*))
    };
}
pub(crate) use logln;

/// Chooses how lines are written, from what stderr is. Call at startup, before anything is
/// logged, and again whenever fd 2 is replaced.
pub fn init() {
    if let Some(why) = sink::init() {
        logln!("warning: log lines may wait for whoever reads stderr: {why}");
    }
}

/// How lines read: `TEXT` (`forkecho: event key=value ...`), `TIMED` (the same after a time
/// stamp) or `JSON`. Set once, at startup; read by every process.
static FORMAT: AtomicU8 = AtomicU8::new(TEXT);
const TEXT: u8 = 0;
const TIMED: u8 = 1;
const JSON: u8 = 2;

/// `--log-format json`, or `--log-time`: call at startup, before anything is logged.
pub fn configure(json: bool, time: bool) {
    let format = match (json, time) {
        (true, _) => JSON,
        (false, true) => TIMED,
        (false, false) => TEXT,
    };
    FORMAT.store(format, Ordering::Relaxed);
}

/// Writes one formatted line to stderr, or counts it as dropped. A lost log line must never
/// stop or slow the server. Never inlined, and formatted first into `SHORT` bytes: the buffer
/// must live in this frame alone, not in the frame of every function that might log (the
/// parent's loop, say), and be small: each stack page a line's frame reaches is a page the parent
/// (and a child, for its close line) copies after a fork. A longer line is formatted again
/// (`emit_long`).
#[inline(never)]
#[unsafe(link_section = ".text.hot.child")]
pub fn emit(args: fmt::Arguments<'_>) {
    let format = FORMAT.load(Ordering::Relaxed);
    let line = Line::<SHORT>::format(args, format == TIMED);
    match line.truncated {
        true => emit_long(args, format),
        false => finish(line.as_bytes(), format),
    }
}

/// The room of a line's first formatting: every line a connection logs fits (an accept or close
/// line takes about 100 bytes, with faults and TLS fields 300).
const SHORT: usize = 512;

/// `emit` for a line longer than `SHORT`: formatted again into `LINE_MAX`, in a frame of its own.
#[cold]
#[inline(never)]
fn emit_long(args: fmt::Arguments<'_>, format: u8) {
    let line = Line::<LINE_MAX>::format(args, format == TIMED);
    finish(line.as_bytes(), format);
}

/// Writes a formatted line, then the count of lines lost before it, if any.
#[unsafe(link_section = ".text.hot.child")]
fn finish(line: &[u8], format: u8) {
    if !write(line, format) {
        sink::dropped();
        return;
    }
    let lost = sink::take_unreported();
    if lost > 0 {
        report_dropped(lost);
    }
}

/// Writes a formatted line as `format` says: as it is, or rendered as JSON. Whether it went out.
#[unsafe(link_section = ".text.hot.child")]
fn write(line: &[u8], format: u8) -> bool {
    match format {
        JSON => write_json(line),
        _ => sink::write(line),
    }
}

/// Writes `line` rendered as JSON: a frame of its own, so that the text path (every child's
/// close line) reserves no stack for a second buffer; rendered into `SHORT` bytes first, like
/// the text (`emit`), and again into `LINE_MAX` (`write_json_long`) if it did not fit.
#[inline(never)]
#[unsafe(link_section = ".text.hot.child")]
fn write_json(line: &[u8]) -> bool {
    let text = std::str::from_utf8(line).unwrap_or("");
    let text = text.trim_end_matches('\n');
    let text = text.strip_prefix(PREFIX).unwrap_or(text);
    let stamp = time::Stamp::now();
    let json = json::JsonLine::<SHORT>::render(stamp.as_str(), text);
    match json.truncated() {
        true => write_json_long(stamp.as_str(), text),
        false => sink::write(json.as_bytes()),
    }
}

/// `write_json` for a line longer than `SHORT` as JSON, in a frame of its own.
#[cold]
#[inline(never)]
fn write_json_long(stamp: &str, text: &str) -> bool {
    let json = json::JsonLine::<LINE_MAX>::render(stamp, text);
    sink::write(json.as_bytes())
}

/// The line after a stall: how many lines were lost. A frame of its own, so that `emit` (which
/// every child runs) does not reserve stack for a second line.
#[cold]
#[inline(never)]
fn report_dropped(lost: u64) {
    let format = FORMAT.load(Ordering::Relaxed);
    let notice = Line::<LINE_MAX>::format(
        format_args!(
            "log-dropped lines={lost} (stderr was taking no lines; stats and stopped lines count \
             them all in log-dropped=)"
        ),
        format == TIMED,
    );
    if !write(notice.as_bytes(), format) {
        sink::unreport(lost);
    }
}

/// Logs a panic as one line like any other, naming the process (in a child, the parent then logs
/// its exit too): `panic pid=N at src/file.rs:L:C: message`. The default hook writes several
/// pieces, which lines from other processes could split.
///
/// It also turns off the backtraces std would print on its own: a child's allocation failure
/// prints `memory allocation of N bytes failed` and aborts, and with `RUST_BACKTRACE` set (as
/// test runners often leave it) std would first resolve a backtrace, calling getcwd and open,
/// which the sandbox kills (SIGSYS): the child's end would read as a sandbox violation instead
/// of the SIGABRT it is. Call while single-threaded.
pub fn install_panic_hook() {
    for name in ["RUST_BACKTRACE", "RUST_LIB_BACKTRACE"] {
        // SAFETY: called at startup, single-threaded: nothing reads the environment meanwhile.
        unsafe { std::env::remove_var(name) };
    }
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        let place = info
            .location()
            .map(|l| format!(" at {}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_default();
        logln!("panic pid={}{place}: {message}", std::process::id());
    }));
}

/// A log line under construction: a fixed buffer of `N` bytes that truncates rather than grows.
pub struct Line<const N: usize = LINE_MAX> {
    buf: fixed::Fixed<N>,
    truncated: bool,
}

impl<const N: usize> Line<N> {
    /// Text room: one byte stays free for the newline.
    const TEXT_MAX: usize = N - 1;

    /// Formats `PREFIX` (after a time stamp, with `stamped`), the message and a newline; a
    /// message too long for one atomic write is cut at a character boundary and marked with
    /// `...`. Control characters in the message are written escaped (`\x1b`).
    #[unsafe(link_section = ".text.hot.child")]
    pub fn format(args: fmt::Arguments<'_>, stamped: bool) -> Line<N> {
        let mut line = Line {
            buf: fixed::Fixed::new(),
            truncated: false,
        };
        // Writing into a Line never fails: it truncates instead.
        if stamped {
            let _ = line.write_str(time::Stamp::now().as_str());
            let _ = line.write_str(" ");
        }
        let _ = line.write_str(PREFIX);
        let _ = line.write_fmt(args);
        if line.truncated {
            let written = line.buf.as_bytes();
            let mut cut = written.len().min(Self::TEXT_MAX - 3);
            // Step back to the start of a UTF-8 sequence so the line stays valid text.
            while cut > 0 && written[cut] & 0b1100_0000 == 0b1000_0000 {
                cut -= 1;
            }
            line.buf.truncate(cut);
            line.buf.push(b"...", N);
        }
        line.buf.push(b"\n", N);
        line
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.buf.as_bytes()
    }
}

impl<const N: usize> fmt::Write for Line<N> {
    #[unsafe(link_section = ".text.hot.child")]
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if s.bytes().any(|b| b < 0x20 || b == 0x7f) {
            self.write_escaped(s);
        } else {
            self.write_plain(s);
        }
        Ok(())
    }

    /// The padding of `{:03}`: the trait's own would be code outside `.text.hot.child`.
    #[unsafe(link_section = ".text.hot.child")]
    fn write_char(&mut self, c: char) -> fmt::Result {
        self.write_str(c.encode_utf8(&mut [0; 4]))
    }
}

impl<const N: usize> Line<N> {
    /// Copies `s` in, as much as fits (cut at a character boundary).
    fn write_plain(&mut self, s: &str) {
        let mut n = s.len().min(Self::TEXT_MAX - self.buf.len());
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        self.buf.push(&s.as_bytes()[..n], Self::TEXT_MAX);
        self.truncated |= n < s.len();
    }

    /// `s` with its control characters as `\xNN`: a line stays one line, and a terminal shows
    /// what was sent instead of obeying it.
    #[cold]
    fn write_escaped(&mut self, s: &str) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut rest = s;
        while let Some(at) = rest.bytes().position(|b| b < 0x20 || b == 0x7f) {
            self.write_plain(&rest[..at]);
            let b = rest.as_bytes()[at];
            let escape = [
                b'\\',
                b'x',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 15)],
            ];
            self.write_plain(std::str::from_utf8(&escape).expect("ASCII"));
            rest = &rest[at + 1..];
        }
        self.write_plain(rest);
    }
}

/// A string from outside (a control command, an error that quotes one, a path) as one quoted
/// field value: `"..."` with `"` and `\` escaped as `\"` and `\\`. Whatever it holds, it
/// stays one value: no space, `=` or quote in it can start another field, in the text line or in
/// its JSON rendering (`json` reads the escapes back).
pub struct Quoted<T>(pub T);

impl<T: fmt::Display> fmt::Display for Quoted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        /// Escapes what passes through it on the way to `f`.
        struct Escaping<'a, 'b>(&'a mut fmt::Formatter<'b>);
        impl fmt::Write for Escaping<'_, '_> {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                let mut rest = s;
                while let Some(at) = rest.find(['"', '\\']) {
                    self.0.write_str(&rest[..at])?;
                    self.0.write_str(if &rest[at..=at] == "\"" {
                        "\\\""
                    } else {
                        "\\\\"
                    })?;
                    rest = &rest[at + 1..];
                }
                self.0.write_str(rest)
            }
        }
        f.write_str("\"")?;
        write!(Escaping(f), "{}", self.0)?;
        f.write_str("\"")
    }
}

/// A word from outside (a control command's name) as a field value: as it is when it is a plain
/// word (letters, digits, `-_.:/@+`), else `Quoted`.
pub struct Word<'a>(pub &'a str);

impl fmt::Display for Word<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plain = |c: char| c.is_ascii_alphanumeric() || "-_.:/@+".contains(c);
        match !self.0.is_empty() && self.0.chars().all(plain) {
            true => f.write_str(self.0),
            false => Quoted(self.0).fmt(f),
        }
    }
}

/// Lets a repeated warning through at most once per interval and counts what it held back, so a
/// fault that repeats thousands of times a second (EMFILE, EAGAIN from fork) costs a line a second.
pub struct RateLimit {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimit {
    pub const fn new(interval: Duration) -> RateLimit {
        RateLimit {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(n)` when a line may be logged now, `n` being how many were held back since the last
    /// one; `None` when this occurrence should only be counted.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.interval => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// ` (N similar suppressed)` after a rate-limited warning, or nothing when none were.
pub struct Suppressed(pub u64);

impl fmt::Display for Suppressed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => Ok(()),
            n => write!(f, " ({n} similar suppressed)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_has_prefix_and_one_trailing_newline() {
        let line = Line::<SHORT>::format(
            format_args!("accept peer={} live={}", "1.2.3.4:5", 3),
            false,
        );
        assert_eq!(line.as_bytes(), b"forkecho: accept peer=1.2.3.4:5 live=3\n");
    }

    #[test]
    fn control_characters_are_escaped_and_a_stamp_comes_first() {
        let line = Line::<SHORT>::format(
            format_args!("proxy-error error=\"{}\"", "a\nb\x1b[31m"),
            false,
        );
        assert_eq!(
            line.as_bytes(),
            b"forkecho: proxy-error error=\"a\\x0ab\\x1b[31m\"\n"
        );
        let line = Line::<SHORT>::format(format_args!("stats live=0"), true);
        let text = std::str::from_utf8(line.as_bytes()).unwrap();
        let (stamp, rest) = text.split_once(' ').unwrap();
        assert_eq!(rest, "forkecho: stats live=0\n");
        assert!(stamp.len() == 27 && stamp.ends_with('Z'), "{stamp}");
    }

    #[test]
    fn overlong_line_is_cut_to_one_atomic_write_and_marked() {
        let long = "x".repeat(10_000);
        let line = Line::<LINE_MAX>::format(format_args!("{long}"), false);
        let bytes = line.as_bytes();
        assert_eq!(bytes.len(), LINE_MAX);
        assert!(bytes.ends_with(b"...\n"));
        assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), 1);
    }

    #[test]
    fn a_line_too_long_for_the_first_try_says_so_and_fits_the_second() {
        let message = "y".repeat(SHORT);
        let short = Line::<SHORT>::format(format_args!("{message}"), false);
        assert!(short.truncated, "emit formats it again");
        let long = Line::<LINE_MAX>::format(format_args!("{message}"), false);
        assert!(!long.truncated);
        assert_eq!(long.as_bytes().len(), PREFIX.len() + SHORT + 1);
        let fits = "y".repeat(SHORT - PREFIX.len() - 1);
        assert!(!Line::<SHORT>::format(format_args!("{fits}"), false).truncated);
    }

    #[test]
    fn overlong_line_is_cut_on_a_char_boundary() {
        let long = "é".repeat(5_000);
        let line = Line::<LINE_MAX>::format(format_args!("{long}"), false);
        let text = std::str::from_utf8(line.as_bytes()).expect("still UTF-8 after the cut");
        assert!(text.ends_with("...\n"));
        assert!(line.as_bytes().len() <= LINE_MAX);
    }

    #[test]
    fn quoted_values_escape_quotes_and_backslashes() {
        let text = Quoted(r#"x" from=uid:1 \ y"#).to_string();
        assert_eq!(text, r#""x\" from=uid:1 \\ y""#);
        assert_eq!(Quoted("plain").to_string(), "\"plain\"");
        assert_eq!(Word("faults").to_string(), "faults");
        assert_eq!(Word("x event=close").to_string(), "\"x event=close\"");
        assert_eq!(Word("").to_string(), "\"\"");
    }

    #[test]
    fn rate_limit_allows_one_per_interval_and_counts_the_rest() {
        let t0 = Instant::now();
        let mut limit = RateLimit::new(Duration::from_secs(1));
        assert_eq!(limit.allow(t0), Some(0));
        assert_eq!(limit.allow(t0 + Duration::from_millis(10)), None);
        assert_eq!(limit.allow(t0 + Duration::from_millis(999)), None);
        assert_eq!(limit.allow(t0 + Duration::from_secs(1)), Some(2));
        assert_eq!(limit.allow(t0 + Duration::from_millis(1500)), None);
    }

    #[test]
    fn suppressed_count_is_silent_when_zero() {
        assert_eq!(Suppressed(0).to_string(), "");
        assert_eq!(Suppressed(7).to_string(), " (7 similar suppressed)");
    }
}
