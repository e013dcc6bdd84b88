//! Time as every role counts it: milliseconds since the epoch, an injectable clock, and the
//! Vietnam calendar (UTC+7, no daylight saving) that quotas, active days and birthdays follow.

use std::sync::Arc;

pub const HOUR_MS: i64 = 3600 * 1000;
pub const DAY_MS: i64 = 24 * HOUR_MS;
/// Vietnam's offset from UTC. [2nd: "assume Vietnam time"; tags as in docs/zalo-api.md]
pub const VN_OFFSET_MS: i64 = 7 * HOUR_MS;

/// Milliseconds since the epoch, by the wall clock (0 before 1970).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A source of "now" in epoch milliseconds; injectable so tests can stand at 23:00 in Vietnam.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The wall clock.
pub fn system_clock() -> Clock {
    Arc::new(now_ms)
}

/// The day number (days since 1970-01-01) of `t` in Vietnam time.
pub fn vn_day(t: i64) -> i64 {
    (t + VN_OFFSET_MS).div_euclid(DAY_MS)
}

/// The (year, month) of `t` in Vietnam time: what monthly quotas count by.
pub fn vn_month(t: i64) -> (i64, u32) {
    // Civil-from-days (Howard Hinnant), on the Vietnam-time day.
    let z = vn_day(t) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-23T23:00:00+07:00.
    const ELEVEN_PM: i64 = 1_795_449_600_000;

    #[test]
    fn days_and_months_turn_at_midnight_in_vietnam() {
        // 23:00 and 00:30 the next day are one day apart in Vietnam, the same day in UTC.
        assert_eq!(vn_day(ELEVEN_PM + 90 * 60_000), vn_day(ELEVEN_PM) + 1);
        assert_eq!((ELEVEN_PM + 90 * 60_000).div_euclid(DAY_MS), ELEVEN_PM.div_euclid(DAY_MS));
        assert_eq!(vn_month(ELEVEN_PM), (2026, 11));
        // 2026-11-30T23:00+07:00 is still November in Vietnam (16:00 UTC); one hour later December.
        let nov30 = ELEVEN_PM + 7 * DAY_MS;
        assert_eq!(vn_month(nov30), (2026, 11));
        assert_eq!(vn_month(nov30 + HOUR_MS), (2026, 12));
        // 29 February of a leap year, and the first of March after it.
        let feb29 = chrono::NaiveDate::from_ymd_opt(2028, 2, 29).unwrap().and_hms_opt(12, 0, 0).unwrap().and_utc().timestamp_millis();
        assert_eq!(vn_month(feb29), (2028, 2));
        assert_eq!(vn_month(feb29 + DAY_MS), (2028, 3));
    }

    #[test]
    fn the_system_clock_reads_now() {
        let (a, b) = (now_ms(), system_clock()());
        assert!((b - a).abs() < 60_000 && a > 1_764_547_200_000, "{a} {b}: both after 2025-12-01 and together");
    }
}
