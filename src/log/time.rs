//! Time stamps for log lines (`--log-format json`, `--log-time`): RFC 3339 in UTC with
//! microseconds, `2026-12-02T10:20:00.123456Z`, formatted without allocating and without
//! `core::fmt` (whose code a child's close line would fault in once more). Only a process that
//! logs with a time stamp reads the clock for it, with the system call (`crate::clock`).

/// A time stamp, formatted into a fixed buffer.
pub struct Stamp {
    buf: [u8; 32],
    len: usize,
}

impl Stamp {
    #[unsafe(link_section = ".text.hot.child")]
    pub fn now() -> Stamp {
        let since = crate::clock::realtime();
        Stamp::at(since.as_secs() as i64, since.subsec_micros())
    }

    /// `seconds` since the epoch and `micros` more (a year outside 0 to 9999 shows as its bound).
    #[unsafe(link_section = ".text.hot.child")]
    pub fn at(seconds: i64, micros: u32) -> Stamp {
        let (days, in_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
        let (year, month, day) = civil(days);
        let mut stamp = Stamp {
            buf: [0; 32],
            len: 0,
        };
        let in_day = in_day as u32;
        let parts = [
            (year.clamp(0, 9999) as u32, 4, b'-'),
            (month, 2, b'-'),
            (day, 2, b'T'),
            (in_day / 3600, 2, b':'),
            (in_day / 60 % 60, 2, b':'),
            (in_day % 60, 2, b'.'),
            (micros.min(999_999), 6, b'Z'),
        ];
        for (value, width, after) in parts {
            // Each value fits its width (clamped above), so it takes exactly `width` digits.
            let mut buf = [0; 20];
            let digits = super::digits::digits(u64::from(value), width, &mut buf);
            stamp.buf[stamp.len..stamp.len + width].copy_from_slice(digits.as_bytes());
            stamp.buf[stamp.len + width] = after;
            stamp.len += width + 1;
        }
        stamp
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

/// The proleptic Gregorian date of day `days` since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_read_as_rfc_3339_utc_with_microseconds() {
        assert_eq!(Stamp::at(0, 0).as_str(), "1970-01-01T00:00:00.000000Z");
        // 2026-12-02T10:20:03.123456Z
        assert_eq!(
            Stamp::at(1_796_206_803, 123_456).as_str(),
            "2026-12-02T10:20:03.123456Z"
        );
        // A leap day, and the last second of a year.
        assert_eq!(
            Stamp::at(951_782_400, 7).as_str(),
            "2000-02-29T00:00:00.000007Z"
        );
        assert_eq!(
            Stamp::at(1_735_689_599, 999_999).as_str(),
            "2024-12-31T23:59:59.999999Z"
        );
    }
}
