//! The values options take, and their parsers: seconds, byte counts, rates, addresses, the
//! faults' milliseconds. Each parser's error says what was expected; clap adds the value and the
//! option it was given to.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Duration;

use crate::faults::{CHUNK_GAP, Chunk, Delay, Selector, Selectors, Trigger};

/// The largest `--buffer-size` (and `ping --size`, `--chunk` size).
pub const MAX_BUFFER: usize = 64 * 1024 * 1024;

/// Parses a non-negative number of seconds, decimals allowed (`0.5`), up to a day.
pub fn parse_seconds(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .parse()
        .map_err(|_| "expected a number of seconds such as 30 or 0.5".to_string())?;
    if !(0.0..=86_400.0).contains(&secs) {
        return Err("must be between 0 and 86400 seconds".to_string());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `N[/S]`: N connections per S seconds (S defaults to 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}s", self.count, self.per.as_secs_f64())
    }
}

/// Parses `--rate-per-ip`: `N` or `N/S`, N at least 1, S seconds (decimals allowed) above zero.
pub fn parse_rate_per_ip(text: &str) -> Result<Rate, String> {
    let (count, per) = text.split_once('/').unwrap_or((text, "1"));
    let count = match count.parse::<u32>() {
        Ok(count @ 1..) => count,
        _ => return Err("expected N or N/S: N connections (at least 1) per S seconds".to_string()),
    };
    match parse_seconds(per)? {
        per if per >= Duration::from_millis(1) => Ok(Rate { count, per }),
        _ => Err("the interval must be at least 0.001 seconds".to_string()),
    }
}

/// Parses a wait that must end: seconds as `parse_seconds`, at least a millisecond.
pub fn parse_positive(text: &str) -> Result<Duration, String> {
    match parse_seconds(text)? {
        wait if wait >= Duration::from_millis(1) => Ok(wait),
        _ => Err("must be at least 0.001 seconds".to_string()),
    }
}

/// Parses a timeout: seconds as `parse_seconds`, but never below a millisecond, which a socket
/// timeout would round down to zero, and zero means "never".
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    let timeout = parse_seconds(text)?;
    if !timeout.is_zero() && timeout < Duration::from_millis(1) {
        return Err("must be 0 (never) or at least 0.001 seconds".to_string());
    }
    Ok(timeout)
}

/// Where to listen, as `--bind` gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bind {
    Ip(IpAddr),
    /// A link-local IPv6 address and its interface (`fe80::1%eth0`), a name or an index: looked
    /// up when forkecho binds.
    Scoped(Ipv6Addr, String),
    Name(String),
    /// A Unix socket file (`unix:/run/forkecho.sock`).
    Unix(PathBuf),
    /// A Unix socket in the abstract namespace (`unix:@name`): no file, gone with the socket.
    Abstract(String),
}

impl Bind {
    /// Whether it names a Unix socket (a path or an abstract name).
    pub fn is_unix(&self) -> bool {
        matches!(self, Bind::Unix(_) | Bind::Abstract(_))
    }
}

impl fmt::Display for Bind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bind::Ip(ip) => write!(f, "{ip}"),
            Bind::Scoped(ip, scope) => write!(f, "{ip}%{scope}"),
            Bind::Name(name) => f.write_str(name),
            Bind::Unix(path) => write!(f, "unix:{}", path.display()),
            Bind::Abstract(name) => write!(f, "unix:@{name}"),
        }
    }
}

/// What `--bind` accepts, for its error messages.
const BIND_FORMS: &str = "expected an IP address such as 127.0.0.1 or ::1, a link-local one \
    with its interface such as fe80::1%eth0, a host name such as localhost, or a Unix socket \
    such as unix:/run/forkecho.sock or unix:@name";

/// The longest Unix socket path or abstract name: sun_path's 108 bytes, less the path's
/// terminating NUL (or the abstract name's leading one).
pub const UNIX_PATH_MAX: usize = 107;

/// Whether `ip` is an IPv6 link-local address (fe80::/10), which names no host without its
/// interface.
fn link_local(ip: Ipv6Addr) -> bool {
    ip.segments()[0] & 0xffc0 == 0xfe80
}

/// Whether a client can reach a TCP listener on `ip`: not a multicast or broadcast address.
pub fn reachable(ip: IpAddr) -> Result<(), String> {
    let broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    if ip.is_multicast() || broadcast {
        return Err("a multicast or broadcast address cannot accept TCP connections".to_string());
    }
    Ok(())
}

/// Parses where to listen: an IP address of this host (not a multicast or broadcast one, which
/// TCP can bind and no client can ever reach; a link-local IPv6 one with `%` and its interface),
/// or a host name, resolved when forkecho starts. IPv4 addresses are read in their usual form
/// only: the shorthands inet_aton(3) also reads (127.1, 0x7f000001) are refused, as numbers
/// and not as names, whichever way they are written.
pub fn parse_bind(text: &str) -> Result<Bind, String> {
    if let Some(path) = text.strip_prefix("unix:") {
        return parse_unix(path);
    }
    if let Some((ip, scope)) = text.split_once('%') {
        let ip: Ipv6Addr = ip.parse().map_err(|_| BIND_FORMS.to_string())?;
        if !link_local(ip) {
            return Err("only a link-local IPv6 address (fe80::/10) takes a %interface".into());
        }
        let interface = |c: char| c.is_ascii_alphanumeric() || "-_.@:".contains(c);
        if scope.is_empty() || scope.len() > 15 || !scope.chars().all(interface) {
            return Err(format!("'{scope}' is not an interface name or index"));
        }
        return Ok(Bind::Scoped(ip, scope.to_string()));
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        reachable(ip)?;
        if let IpAddr::V6(v6) = ip
            && link_local(v6)
        {
            return Err(format!(
                "a link-local address needs its interface, such as {ip}%eth0 or {ip}%lo"
            ));
        }
        return Ok(Bind::Ip(ip));
    }
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    // A name's last label is never a number (RFC 1123, 2.1): one that is, in decimal or hex,
    // is an IPv4 shorthand that the resolver would read as an address.
    let numeric = |l: &str| {
        let hex = l.strip_prefix("0x").or_else(|| l.strip_prefix("0X"));
        match hex {
            Some(digits) => digits.bytes().all(|b| b.is_ascii_hexdigit()),
            None => l.bytes().all(|b| b.is_ascii_digit()),
        }
    };
    let name = text.strip_suffix('.').unwrap_or(text);
    if name.split('.').next_back().is_some_and(numeric) && name.split('.').all(|l| !l.is_empty()) {
        return Err(format!(
            "'{text}' is an IPv4 address in shorthand: write all four parts in decimal, such as \
             127.0.0.1"
        ));
    }
    if name.len() <= 253 && name.split('.').all(label) {
        return Ok(Bind::Name(text.to_string()));
    }
    Err(BIND_FORMS.to_string())
}

/// Parses the part of `--bind unix:…` after `unix:`: a path, or `@` and an abstract name.
pub fn parse_unix(path: &str) -> Result<Bind, String> {
    let (what, name) = match path.strip_prefix('@') {
        Some(name) => ("an abstract name", name),
        None => ("a socket path", path),
    };
    if name.is_empty() {
        return Err(format!(
            "{what} is missing after 'unix:' (unix:/run/forkecho.sock, unix:@name)"
        ));
    }
    if name.len() > UNIX_PATH_MAX {
        return Err(format!(
            "{what} is {} bytes long: Unix sockets take at most {UNIX_PATH_MAX}",
            name.len()
        ));
    }
    Ok(match path.strip_prefix('@') {
        Some(name) => Bind::Abstract(name.to_string()),
        None => Bind::Unix(PathBuf::from(path)),
    })
}

/// Parses `--metrics`: an IP address and a port (`127.0.0.1:9100`, `[::1]:0`), reachable by a
/// scraper.
pub fn parse_metrics(text: &str) -> Result<std::net::SocketAddr, String> {
    let addr: std::net::SocketAddr = text.parse().map_err(|_| {
        "expected an IP address and a port, such as 127.0.0.1:9100 or [::1]:9100".to_string()
    })?;
    reachable(addr.ip())?;
    Ok(addr)
}

/// Parses `--unix-mode`: octal permission bits, 0 to 0777 (`0660`, `660`, `0o660`).
pub fn parse_mode(text: &str) -> Result<u32, String> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o777 && !digits.is_empty() => Ok(mode),
        _ => Err("expected octal permission bits from 0 to 0777, such as 0660".to_string()),
    }
}

/// Parses a byte count with an optional K, M or G (binary) suffix; zero allowed (the limits:
/// `--reset-after 0` resets at once).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let (digits, unit) = match text.as_bytes().last() {
        Some(b'k' | b'K') => (&text[..text.len() - 1], 1 << 10),
        Some(b'm' | b'M') => (&text[..text.len() - 1], 1 << 20),
        Some(b'g' | b'G') => (&text[..text.len() - 1], 1 << 30),
        _ => (text, 1),
    };
    let count: u64 = digits
        .parse()
        .map_err(|_| "expected a byte count such as 65536, 64K or 1M".to_string())?;
    count
        .checked_mul(unit)
        .ok_or_else(|| "too large a byte count".to_string())
}

/// Parses a buffer size: a byte count within 1 .. 64 MiB.
pub fn parse_size(text: &str) -> Result<usize, String> {
    match parse_bytes(text)? {
        bytes @ 1.. if bytes <= MAX_BUFFER as u64 => Ok(bytes as usize),
        _ => Err(format!("must be between 1 byte and {}M", MAX_BUFFER >> 20)),
    }
}

/// Parses `--rate`: at least a byte a second.
pub fn parse_rate(text: &str) -> Result<u64, String> {
    match parse_bytes(text)? {
        0 => Err("must be at least 1 byte a second".to_string()),
        rate => Ok(rate),
    }
}

/// The longest delay a fault takes: an hour.
const MAX_FAULT_MS: u64 = 3_600_000;

/// Parses a network: `ADDR` or `ADDR/LEN` (10.0.0.0/8, ::1/128).
pub fn parse_network(text: &str) -> Result<(IpAddr, u8), String> {
    let bad = || format!("'{text}' is not an address or ADDR/LEN (10.0.0.0/8, ::1/128)");
    let (ip, len) = match text.split_once('/') {
        Some((ip, len)) => (ip, Some(len.parse::<u8>().map_err(|_| bad())?)),
        None => (text, None),
    };
    let ip: IpAddr = ip.parse().map_err(|_| bad())?;
    let most = if ip.is_ipv4() { 32 } else { 128 };
    match len.unwrap_or(most) {
        len if len <= most => Ok((ip, len)),
        _ => Err(bad()),
    }
}

/// Parses `--fault-on`: `first:N`, `after:N`, `every:K`, `conn:A-B` (or `conn:A`) and
/// `from:ADDR[/LEN]`, separated by commas.
pub fn parse_fault_on(text: &str) -> Result<Selectors, String> {
    let forms = "first:N, after:N, every:K, conn:A-B or from:ADDR[/LEN]";
    let number = |value: &str, least: u32| -> Result<u32, String> {
        match value.parse::<u32>() {
            Ok(n) if n >= least => Ok(n),
            _ => Err(format!(
                "'{value}' is not a connection number of at least {least}"
            )),
        }
    };
    let mut list = Vec::new();
    for item in text.split(',') {
        let (kind, value) = item
            .split_once(':')
            .ok_or_else(|| format!("'{item}': expected {forms}"))?;
        list.push(match kind {
            "first" => Selector::First(number(value, 1)?),
            "after" => Selector::After(number(value, 0)?),
            "every" => Selector::Every(number(value, 1)?),
            "conn" => {
                let (a, b) = value.split_once('-').unwrap_or((value, value));
                let (a, b) = (number(a, 1)?, number(b, 1)?);
                if a > b {
                    return Err(format!("'{item}': the range ends before it begins"));
                }
                Selector::Range(a, b)
            }
            "from" => {
                let (ip, len) = parse_network(value)?;
                Selector::From(ip, len)
            }
            _ => return Err(format!("'{item}': expected {forms}")),
        });
    }
    Selectors::new(&list)
}

/// Parses a limit's trigger: a byte count (`1K`), or a time from the accept (`500ms`, `2s`).
pub fn parse_trigger(text: &str) -> Result<Trigger, String> {
    let time = |digits: &str, unit: u64| -> Result<Trigger, String> {
        let n = digits
            .parse::<u64>()
            .map_err(|_| "expected a byte count (1K) or a time (500ms, 2s)".to_string())?;
        fault_millis(n.saturating_mul(unit)).map(Trigger::After)
    };
    if let Some(ms) = text.strip_suffix("ms") {
        return time(ms, 1);
    }
    if let Some(secs) = text.strip_suffix('s') {
        return time(secs, 1000);
    }
    parse_bytes(text).map(Trigger::Bytes).map_err(|_| {
        "expected a byte count such as 65536 or 1K, or a time such as 500ms or 2s".to_string()
    })
}

/// A byte pattern (`--close-on`, `--reset-on`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(pub Vec<u8>);

/// Parses a byte pattern: text with `\n`, `\r`, `\t`, `\\` and `\xNN` escapes; 1 to 256 bytes.
pub fn parse_pattern(text: &str) -> Result<Pattern, String> {
    let mut bytes = Vec::new();
    let mut rest = text.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        rest = tail;
        if b != b'\\' {
            bytes.push(b);
            continue;
        }
        let (&e, tail) = rest
            .split_first()
            .ok_or("a pattern cannot end with a lone backslash")?;
        rest = tail;
        bytes.push(match e {
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'0' => 0,
            b'\\' => b'\\',
            b'x' => {
                let hex = rest.get(..2).and_then(|h| std::str::from_utf8(h).ok());
                let value = hex.and_then(|h| u8::from_str_radix(h, 16).ok());
                rest = rest.get(2..).unwrap_or_default();
                value.ok_or("\\x takes two hex digits, such as \\x00")?
            }
            other => return Err(format!("unknown escape \\{}", other as char)),
        });
    }
    match bytes.len() {
        1..=256 => Ok(Pattern(bytes)),
        _ => Err("a pattern is 1 to 256 bytes".to_string()),
    }
}

/// Parses whole milliseconds, up to an hour.
pub fn parse_millis(text: &str) -> Result<Duration, String> {
    let ms = text
        .parse::<u64>()
        .map_err(|_| "expected whole milliseconds such as 100".to_string())?;
    fault_millis(ms)
}

/// `ms` milliseconds, if a fault may take that long: up to an hour.
fn fault_millis(ms: u64) -> Result<Duration, String> {
    match ms {
        0..=MAX_FAULT_MS => Ok(Duration::from_millis(ms)),
        _ => Err(format!("must be at most {MAX_FAULT_MS} ms (an hour)")),
    }
}

/// Parses `MS[:JITTER]`.
pub fn parse_delay(text: &str) -> Result<Delay, String> {
    let (base, jitter) = text.split_once(':').unwrap_or((text, "0"));
    Ok(Delay {
        base: parse_millis(base)?,
        jitter: parse_millis(jitter)?,
    })
}

/// Parses `SIZE[:DELAY_MS]`.
pub fn parse_chunk(text: &str) -> Result<Chunk, String> {
    let (size, gap) = match text.split_once(':') {
        Some((size, gap)) => (size, parse_millis(gap)?),
        None => (text, CHUNK_GAP),
    };
    Ok(Chunk {
        size: parse_size(size)?,
        gap,
    })
}

/// Parses `--fault-rate` and the datagram faults' probabilities: a fraction in (0, 1].
pub fn parse_fraction(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(p) if p > 0.0 && p <= 1.0 => Ok(p),
        _ => Err("expected a fraction, more than 0 and at most 1, such as 0.25".to_string()),
    }
}

#[cfg(test)]
mod tests;
