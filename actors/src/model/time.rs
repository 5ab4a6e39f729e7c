//! RFC 3339 UTC timestamps without a calendar dependency.

use std::time::{SystemTime, UNIX_EPOCH};

/// Formats `t` as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Whether `s` is an RFC 3339 `date-time` (`2026-11-28T12:00:00.000Z`,
/// `2026-11-28t13:00:00+01:00`): what JSON Schema's `date-time` format
/// accepts, with a real calendar date and seconds up to 59 (no leap second:
/// no clock the runner reads has one). A control plane refuses report times
/// that are not, so every time it gives back out is one too.
pub fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = b.get(range)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        part.iter()
            .try_fold(0u32, |n, d| Some(n * 10 + u32::from(d - b'0')))
    };
    let at = |i: usize, c: u8| b.get(i).is_some_and(|x| x.eq_ignore_ascii_case(&c));
    let (Some(year), Some(month), Some(day)) = (digits(0..4), digits(5..7), digits(8..10)) else {
        return false;
    };
    if !(at(4, b'-') && at(7, b'-') && at(10, b'T') && at(13, b':') && at(16, b':')) {
        return false;
    }
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    let (Some(hour), Some(minute), Some(second)) = (digits(11..13), digits(14..16), digits(17..19))
    else {
        return false;
    };
    if day == 0 || day > month_days || hour > 23 || minute > 59 || second > 59 {
        return false;
    }
    let mut i = 19;
    if at(i, b'.') {
        let start = i + 1;
        i = start;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    match b.get(i) {
        Some(b'Z' | b'z') => i + 1 == b.len(),
        Some(b'+' | b'-') => {
            let (Some(oh), Some(om)) = (digits(i + 1..i + 3), digits(i + 4..i + 6)) else {
                return false;
            };
            at(i + 3, b':') && oh <= 23 && om <= 59 && i + 6 == b.len()
        }
        _ => false,
    }
}

/// The instant an RFC 3339 time stands for (see [`is_rfc3339`]); `None`
/// when `s` is not one, or is before 1970. Fractions past the nanosecond
/// are cut.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    if !is_rfc3339(s) {
        return None;
    }
    let b = s.as_bytes();
    // Every position below was checked by `is_rfc3339`.
    let num = |range: std::ops::Range<usize>| -> i64 {
        b[range]
            .iter()
            .fold(0i64, |n, d| n * 10 + i64::from(d - b'0'))
    };
    let days = days_from_civil(num(0..4), num(5..7) as u32, num(8..10) as u32);
    let mut secs = days * 86_400 + num(11..13) * 3600 + num(14..16) * 60 + num(17..19);
    let mut nanos = 0u32;
    let mut i = 19;
    if b[i] == b'.' {
        i += 1;
        let mut scale = 100_000_000u32;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            nanos += u32::from(b[i] - b'0') * scale;
            scale /= 10;
            i += 1;
        }
    }
    if matches!(b[i], b'+' | b'-') {
        let offset = num(i + 1..i + 3) * 3600 + num(i + 4..i + 6) * 60;
        secs -= if b[i] == b'+' { offset } else { -offset };
    }
    let secs = u64::try_from(secs).ok()?;
    Some(UNIX_EPOCH + std::time::Duration::new(secs, nanos))
}

/// (year, month, day) to days since 1970-01-01; Howard Hinnant's algorithm.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from(if m > 2 { m - 3 } else { m + 9 });
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days since 1970-01-01 to (year, month, day); Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(951_782_400_123); // leap day
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00.123Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_795_873_599);
        assert_eq!(rfc3339(t), "2026-11-28T13:46:39.000Z");
    }

    #[test]
    fn parses_what_it_formats_and_honours_offsets() {
        let t = UNIX_EPOCH + Duration::from_millis(951_782_400_123);
        assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t));
        let now = SystemTime::now();
        let back = parse_rfc3339(&rfc3339(now)).unwrap();
        assert!(now.duration_since(back).unwrap() < Duration::from_millis(1));
        assert_eq!(
            parse_rfc3339("2026-11-28T13:46:39+01:00"),
            Some(UNIX_EPOCH + Duration::from_secs(1_795_873_599 - 3600))
        );
        assert_eq!(
            parse_rfc3339("2026-11-28t13:46:39.5-00:30"),
            Some(UNIX_EPOCH + Duration::from_millis(1_795_873_599_500 + 1_800_000))
        );
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59Z"), None);
        assert_eq!(parse_rfc3339("2026-11-31T12:00:00Z"), None);
        assert_eq!(parse_rfc3339("now"), None);
    }

    #[test]
    fn recognises_rfc3339_times() {
        let now = rfc3339(SystemTime::now());
        for good in [
            "2026-11-28T12:00:00.000Z",
            "2026-11-28T12:00:00Z",
            "2026-11-28t12:00:00z",
            "2000-02-29T23:59:59.123456789+01:00",
            "1999-12-31T00:00:00-12:30",
            now.as_str(),
        ] {
            assert!(is_rfc3339(good), "{good}");
        }
        for bad in [
            "",
            "now",
            "2026-11-28",
            "2026-11-28 12:00:00Z",
            "2026-11-28T12:00:00",
            "2026-11-28T12:00:00.Z",
            "2026-11-28T24:00:00Z",
            "2026-11-28T12:60:00Z",
            "2026-11-28T12:00:60Z",
            "2026-13-01T12:00:00Z",
            "2026-00-01T12:00:00Z",
            "2026-11-00T12:00:00Z",
            "2026-11-31T12:00:00Z",
            "2100-02-29T12:00:00Z",
            "2026-11-28T12:00:00+0100",
            "2026-11-28T12:00:00+01:00x",
            "2026-11-28T12:00:00Zx",
            "+026-11-28T12:00:00Z",
            "2026-11-28T12:00:00.000\u{e9}",
        ] {
            assert!(!is_rfc3339(bad), "{bad}");
        }
    }
}
