//! Wall-clock helpers in Unix milliseconds, UTC, for keys, budgets and the
//! ledger (RFC 3339 text by `humantime`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

const DAY_MS: i64 = 86_400_000;

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
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

/// The UTC day of `ms`, `2026-12-01`.
pub fn day(ms: i64) -> String {
    rfc3339(ms)[..10].to_string()
}

/// The UTC month of `ms`, `2026-12`.
pub fn month(ms: i64) -> String {
    rfc3339(ms)[..7].to_string()
}

pub fn day_start(ms: i64) -> i64 {
    ms - ms.rem_euclid(DAY_MS)
}

/// Midnight UTC on the first of `ms`'s month.
pub fn month_start(ms: i64) -> i64 {
    parse(&format!("{}-01", month(ms))).unwrap_or_else(|| day_start(ms))
}

/// Midnight UTC on the first of the month after `ms`'s.
pub fn next_month_start(ms: i64) -> i64 {
    // 32 days after the 1st is always in the next month.
    month_start(month_start(ms) + 32 * DAY_MS)
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
        assert_eq!(parse("soon"), None);
    }
}
