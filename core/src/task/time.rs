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
    if micros == 0 {
        format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}+00:00")
    } else {
        format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{micros:06}+00:00")
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
    }

    #[test]
    fn now_is_a_recent_utc_timestamp() {
        let now = now_isoformat();
        assert!(now.ends_with("+00:00"), "{now}");
        assert!(now.as_str() > "2024-01-01", "{now}");
    }
}
