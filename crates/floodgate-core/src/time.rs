//! Wall-clock helpers in Unix milliseconds, UTC, for keys, budgets and the
//! ledger (RFC 3339 text by `humantime`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

const DAY_MS: i64 = 86_400_000;

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Unix microseconds, for latencies measured across nodes.
pub fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// `2026-12-01T10:00:00.000Z`.
pub fn rfc3339(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// Accepts `2026-12-01T10:00:00Z` (fractions and offsets `Z` only) or a
/// date `2026-12-01` (its midnight UTC).
pub fn parse(text: &str) -> Option<i64> {
    let text = text.trim();
    let full = if text.len() == 10 { format!("{text}T00:00:00Z") } else { text.to_string() };
    let t = humantime::parse_rfc3339_weak(&full).ok()?;
    let ms = t.duration_since(UNIX_EPOCH).ok()?.as_millis();
    i64::try_from(ms).ok()
}

/// `(year, month 1-12, day 1-31)` of a count of days since 1970-01-01, in
/// the proleptic Gregorian calendar (H. Hinnant's `civil_from_days`): the
/// budget path asks for the month on every request, and this is arithmetic
/// where formatting a timestamp and reading it back is not.
fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Days since 1970-01-01 of a date (the inverse of [`civil`]).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The UTC day of `ms`, `2026-12-01`.
pub fn day(ms: i64) -> String {
    let (y, m, d) = civil(ms.div_euclid(DAY_MS));
    format!("{y:04}-{m:02}-{d:02}")
}

/// The UTC month of `ms`, `2026-12`.
pub fn month(ms: i64) -> String {
    let (y, m, _) = civil(ms.div_euclid(DAY_MS));
    format!("{y:04}-{m:02}")
}

pub fn day_start(ms: i64) -> i64 {
    ms - ms.rem_euclid(DAY_MS)
}

/// Midnight UTC on the first of `ms`'s month.
pub fn month_start(ms: i64) -> i64 {
    let (y, m, _) = civil(ms.div_euclid(DAY_MS));
    days_from_civil(y, m, 1) * DAY_MS
}

/// Midnight UTC on the first of the month after `ms`'s.
pub fn next_month_start(ms: i64) -> i64 {
    let (y, m, _) = civil(ms.div_euclid(DAY_MS));
    let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    days_from_civil(y, m, 1) * DAY_MS
}

pub fn next_day_start(ms: i64) -> i64 {
    day_start(ms) + DAY_MS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_months_in_utc() {
        let t = parse("2026-12-31T23:59:59.999Z").unwrap();
        assert_eq!(day(t), "2026-12-31");
        assert_eq!(month(t), "2026-12");
        assert_eq!(rfc3339(next_day_start(t)), "2027-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(next_month_start(t)), "2027-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(month_start(t)), "2026-12-01T00:00:00.000Z");
        let feb = parse("2028-02-29").unwrap();
        assert_eq!(rfc3339(next_month_start(feb)), "2028-03-01T00:00:00.000Z");
        assert_eq!(parse("2026-13-01"), None);
        // The arithmetic agrees with humantime's calendar for every day of 1970-2199.
        for days in 0..84_000 {
            let ms = days * DAY_MS + 12 * 3_600_000;
            assert_eq!(day(ms), rfc3339(ms)[..10], "day {days}");
            assert_eq!(rfc3339(month_start(ms))[..10], format!("{}-01", &rfc3339(ms)[..7]));
        }
        assert_eq!(parse("soon"), None);
    }
}
