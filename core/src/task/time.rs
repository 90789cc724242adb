//! Timestamps as the seed writes them: Python's `datetime.isoformat()` in UTC.

use std::time::{SystemTime, UNIX_EPOCH};

/// Formats a time, in microseconds since the Unix epoch, exactly as Python's
/// `datetime.now(timezone.utc).isoformat()` does.
///
/// That is `YYYY-MM-DDTHH:MM:SS.ffffff+00:00`, and, as in Python, with no
/// fraction at all when the microseconds are zero. The seed's models fill
/// `created_at` and `completed_at` this way; crewq writes the same text so a
/// reader cannot tell which side made an entry.
///
/// ```
/// use crewq_core::utc_isoformat;
/// assert_eq!(utc_isoformat(1_795_334_400_123_456), "2026-11-22T08:00:00.123456+00:00");
/// assert_eq!(utc_isoformat(1_795_334_400_000_000), "2026-11-22T08:00:00+00:00");
/// ```
pub fn utc_isoformat(micros_since_epoch: u64) -> String {
    let micros = micros_since_epoch % 1_000_000;
    let secs = micros_since_epoch / 1_000_000;
    let (days, secs_of_day) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (secs_of_day / 3600, secs_of_day / 60 % 60, secs_of_day % 60);
    // Digits written by hand: every task and result carries a timestamp,
    // and `format!` with padding costs several times more.
    let mut text = String::with_capacity(32);
    if year > 9999 {
        // Past what four digits hold (never, for a real clock): as `{:04}`.
        text.push_str(&year.to_string());
    } else {
        push_digits(&mut text, year, 4);
    }
    for (separator, value) in [
        ('-', month),
        ('-', day),
        ('T', hour),
        (':', minute),
        (':', second),
    ] {
        text.push(separator);
        push_digits(&mut text, value, 2);
    }
    if micros != 0 {
        text.push('.');
        push_digits(&mut text, micros, 6);
    }
    text.push_str("+00:00");
    text
}

/// Appends the last `width` decimal digits of `value`, zero-padded.
fn push_digits(text: &mut String, value: u64, width: u32) {
    for place in (0..width).rev() {
        let digit = (value / 10u64.pow(place)) % 10;
        text.push(char::from(b'0' + digit as u8));
    }
}

/// The wall clock now, formatted by [`utc_isoformat`].
///
/// This is what [`Task::new`](crate::Task::new) stamps `created_at` with.
/// Code that must be reproducible (the simulator) passes its own time to
/// the builder instead.
pub fn now_isoformat() -> String {
    // A clock set before 1970 reads as the epoch rather than failing.
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    utc_isoformat(micros)
}

/// Year, month and day of the `days`-th day after 1970-01-01 (proleptic
/// Gregorian), by Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shift the epoch to 0000-03-01 so leap days fall at the end of a year.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097; // day of era, 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // 0..=365
    let mp = (5 * doy + 2) / 153; // month from March, 0..=11
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_python_isoformat() {
        assert_eq!(utc_isoformat(0), "1970-01-01T00:00:00+00:00");
        assert_eq!(
            utc_isoformat(1_709_164_800_000_001),
            "2024-02-29T00:00:00.000001+00:00"
        );
        assert_eq!(
            utc_isoformat(951_782_400_500_000),
            "2000-02-29T00:00:00.500000+00:00"
        );
        assert_eq!(
            utc_isoformat(4_102_444_799_999_999),
            "2099-12-31T23:59:59.999999+00:00"
        );
        assert_eq!(utc_isoformat(1_000_010), "1970-01-01T00:00:01.000010+00:00");
    }

    #[test]
    fn agrees_with_format_over_many_times() {
        // The hand-written digits against `format!`: 100 000 times over 9 999 years.
        let mut micros: u64 = 7;
        while micros < 253_402_300_800_000_000 {
            let secs = micros / 1_000_000;
            let (year, month, day) = civil_from_days(secs / 86_400);
            let s = secs % 86_400;
            let (h, m, sec, us) = (s / 3600, s / 60 % 60, s % 60, micros % 1_000_000);
            let expected = if us == 0 {
                format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{sec:02}+00:00")
            } else {
                format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{sec:02}.{us:06}+00:00")
            };
            assert_eq!(utc_isoformat(micros), expected);
            micros += 2_534_023_987_651;
        }
    }

    #[test]
    fn now_is_a_recent_utc_timestamp() {
        let now = now_isoformat();
        assert!(now.ends_with("+00:00"), "{now}");
        assert!(now.as_str() > "2024-01-01", "{now}");
    }
}
