//! Per-key rate limiting ([`RateLimit`]): a sliding 60-second window of the answers each API key
//! was given, the decision to answer or refuse, and the rate-limit headers OpenAI and Anthropic
//! send with every answer.
//!
//! The window is exact rather than a bucket: it keeps the time of every answer and the tokens it
//! was charged, so that a test can predict every number the mock reports. Refused requests are
//! not charged, so the window holds exactly the answers the mock gave. Time is passed in, so the
//! arithmetic is tested here without waiting for a window to pass.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderName, HeaderValue};

use crate::RateLimit;
use crate::call::Provider;
use crate::state::lock;

/// The length of the sliding window both limits are counted over.
pub(crate) const WINDOW: Duration = Duration::from_secs(60);

/// The windows of every key seen, behind one lock: checking and charging a key is one step, so
/// concurrent requests can never overshoot a limit.
pub(crate) struct Limiter {
    limit: RateLimit,
    windows: Mutex<HashMap<String, Window>>,
}

impl Limiter {
    pub(crate) fn new(limit: RateLimit) -> Self {
        Self { limit, windows: Mutex::new(HashMap::new()) }
    }

    /// Charges one request and `tokens` to `key` now if both fit in its window, and reports the
    /// window either way.
    pub(crate) fn charge(&self, key: &str, tokens: u64) -> Verdict {
        let now = Instant::now();
        let wall = SystemTime::now();
        let mut windows = lock(&self.windows);
        let window = windows.entry(key.to_owned()).or_default();
        window.charge(self.limit, tokens, now, wall)
    }
}

/// The answers of one key in the last [`WINDOW`], oldest first.
#[derive(Debug, Default)]
struct Window {
    /// When each answer was given.
    requests: VecDeque<Instant>,
    /// When each answer that cost tokens was given, and how many it cost.
    tokens: VecDeque<(Instant, u64)>,
}

impl Window {
    fn charge(&mut self, limit: RateLimit, tokens: u64, now: Instant, wall: SystemTime) -> Verdict {
        self.expire(now);
        let request_wait = limit.requests_per_minute.and_then(|rpm| self.request_wait(rpm, now));
        let token_wait = limit.tokens_per_minute.and_then(|tpm| self.token_wait(tpm, tokens, now));
        // The limit with the longer wait is the one that binds; requests win a tie.
        let refused = match (request_wait, token_wait) {
            (None, None) => None,
            (Some(wait), None) => Some(Refusal::new(Quota::Requests, 1, wait)),
            (Some(wait), Some(token)) if wait >= token => {
                Some(Refusal::new(Quota::Requests, 1, wait))
            }
            (_, Some(wait)) => Some(Refusal::new(Quota::Tokens, tokens, wait)),
        };
        if refused.is_none() {
            self.requests.push_back(now);
            if tokens > 0 {
                self.tokens.push_back((now, tokens));
            }
        }
        let requests = limit.requests_per_minute.map(|limit| Meter {
            limit,
            used: u64::try_from(self.requests.len()).unwrap_or(u64::MAX),
            reset: self.requests.back().map_or(Duration::ZERO, |at| until_expiry(*at, now)),
        });
        let tokens = limit.tokens_per_minute.map(|limit| Meter {
            limit,
            used: self.used_tokens(),
            reset: self.tokens.back().map_or(Duration::ZERO, |(at, _)| until_expiry(*at, now)),
        });
        Verdict { refused, requests, tokens, wall }
    }

    /// Forgets the answers that have left the window.
    fn expire(&mut self, now: Instant) {
        while self.requests.front().is_some_and(|at| expired(*at, now)) {
            self.requests.pop_front();
        }
        while self.tokens.front().is_some_and(|(at, _)| expired(*at, now)) {
            self.tokens.pop_front();
        }
    }

    fn used_tokens(&self) -> u64 {
        self.tokens.iter().fold(0, |sum, (_, tokens)| sum.saturating_add(*tokens))
    }

    /// How long until one more request fits under `rpm`, if it does not fit now.
    fn request_wait(&self, rpm: u32, now: Instant) -> Option<Duration> {
        let count = self.requests.len();
        let limit = usize::try_from(rpm).unwrap_or(usize::MAX);
        if count < limit {
            return None;
        }
        // The oldest `count - limit + 1` answers must leave first; with a limit of 0 nothing
        // ever fits, and the wait is until the window is empty.
        let blocking = self.requests.get(count - limit).or(self.requests.back());
        Some(blocking.map_or(Duration::ZERO, |at| until_expiry(*at, now)))
    }

    /// How long until `tokens` more fit under `tpm`, if they do not fit now.
    fn token_wait(&self, tpm: u32, tokens: u64, now: Instant) -> Option<Duration> {
        let limit = u64::from(tpm);
        let mut rest = self.used_tokens();
        if rest.saturating_add(tokens) <= limit {
            return None;
        }
        for (at, charged) in &self.tokens {
            rest -= charged;
            if rest.saturating_add(tokens) <= limit {
                return Some(until_expiry(*at, now));
            }
        }
        // More than the whole limit: it never fits, and the wait is until the window is empty.
        Some(self.tokens.back().map_or(Duration::ZERO, |(at, _)| until_expiry(*at, now)))
    }
}

fn expired(at: Instant, now: Instant) -> bool {
    now.saturating_duration_since(at) >= WINDOW
}

/// How long until an answer given `at` leaves the window.
fn until_expiry(at: Instant, now: Instant) -> Duration {
    (at + WINDOW).saturating_duration_since(now)
}

/// Which limit a number is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Quota {
    Requests,
    Tokens,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// The limit it would have exceeded.
    pub(crate) quota: Quota,
    /// What it asked for of that limit: 1 request, or its tokens.
    pub(crate) requested: u64,
    /// How long until it would fit.
    pub(crate) wait: Duration,
}

impl Refusal {
    fn new(quota: Quota, requested: u64, wait: Duration) -> Self {
        Self { quota, requested, wait }
    }

    /// `retry-after`: the wait in whole seconds, rounded up, at least 1.
    pub(crate) fn retry_after(&self) -> u64 {
        u64::try_from(self.wait.as_nanos().div_ceil(1_000_000_000)).unwrap_or(u64::MAX).max(1)
    }
}

/// One limit of a key's window, after the request was charged (or refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Meter {
    pub(crate) limit: u32,
    pub(crate) used: u64,
    /// How long until the window is fully replenished (its newest answer leaves it).
    pub(crate) reset: Duration,
}

impl Meter {
    pub(crate) fn remaining(&self) -> u64 {
        u64::from(self.limit).saturating_sub(self.used)
    }
}

/// The outcome of [`Limiter::charge`]: refused or not, and the state of each limit that is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub(crate) refused: Option<Refusal>,
    pub(crate) requests: Option<Meter>,
    pub(crate) tokens: Option<Meter>,
    /// The wall-clock time of the decision, which Anthropic's reset timestamps count from.
    wall: SystemTime,
}

impl Verdict {
    /// The meter of `quota` (set, since a refusal only comes from a limit that is set).
    pub(crate) fn meter(&self, quota: Quota) -> Option<Meter> {
        match quota {
            Quota::Requests => self.requests,
            Quota::Tokens => self.tokens,
        }
    }

    /// Adds the provider's rate-limit headers for each limit that is set. Gemini has none.
    pub(crate) fn write_headers(&self, provider: Provider, headers: &mut HeaderMap) {
        for (quota, meter) in [(Quota::Requests, self.requests), (Quota::Tokens, self.tokens)] {
            let Some(meter) = meter else { continue };
            let Some([limit, remaining, reset]) = header_names(provider, quota) else { return };
            let reset_value = match provider {
                Provider::Anthropic => rfc3339_ceil(self.wall + meter.reset),
                Provider::OpenAi | Provider::Gemini => go_duration(meter.reset),
            };
            headers.insert(HeaderName::from_static(limit), HeaderValue::from(meter.limit));
            headers
                .insert(HeaderName::from_static(remaining), HeaderValue::from(meter.remaining()));
            match HeaderValue::try_from(reset_value) {
                Ok(value) => {
                    headers.insert(HeaderName::from_static(reset), value);
                }
                Err(error) => {
                    tracing::error!(%error, "mock upstream wrote an invalid reset header")
                }
            }
        }
    }
}

/// The limit, remaining and reset header names of `quota`, as each provider documents them.
fn header_names(provider: Provider, quota: Quota) -> Option<[&'static str; 3]> {
    match (provider, quota) {
        (Provider::OpenAi, Quota::Requests) => Some([
            "x-ratelimit-limit-requests",
            "x-ratelimit-remaining-requests",
            "x-ratelimit-reset-requests",
        ]),
        (Provider::OpenAi, Quota::Tokens) => Some([
            "x-ratelimit-limit-tokens",
            "x-ratelimit-remaining-tokens",
            "x-ratelimit-reset-tokens",
        ]),
        (Provider::Anthropic, Quota::Requests) => Some([
            "anthropic-ratelimit-requests-limit",
            "anthropic-ratelimit-requests-remaining",
            "anthropic-ratelimit-requests-reset",
        ]),
        (Provider::Anthropic, Quota::Tokens) => Some([
            "anthropic-ratelimit-tokens-limit",
            "anthropic-ratelimit-tokens-remaining",
            "anthropic-ratelimit-tokens-reset",
        ]),
        (Provider::Gemini, _) => None,
    }
}

/// A duration the way OpenAI writes it (Go's `time.Duration` format) at millisecond precision,
/// rounded up so that a reset is never reported early: `17ms`, `1s`, `59.5s`, `6m0s`, `1h0m0s`.
pub(crate) fn go_duration(duration: Duration) -> String {
    let millis = duration.as_nanos().div_ceil(1_000_000);
    if millis == 0 {
        return "0s".to_owned();
    }
    if millis < 1000 {
        return format!("{millis}ms");
    }
    let (secs, fraction) = (millis / 1000, millis % 1000);
    let (hours, minutes, seconds) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::with_capacity(12);
    if hours > 0 {
        let _ = write!(out, "{hours}h");
    }
    if hours > 0 || minutes > 0 {
        let _ = write!(out, "{minutes}m");
    }
    let _ = write!(out, "{seconds}");
    if fraction > 0 {
        let digits = format!("{fraction:03}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
    out.push('s');
    out
}

/// `time` as an RFC 3339 UTC timestamp in whole seconds (`2025-01-15T14:24:00Z`, as Anthropic
/// writes them), rounded up so that a reset is never reported early.
pub(crate) fn rfc3339_ceil(time: SystemTime) -> String {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = since_epoch.as_secs() + u64::from(since_epoch.subsec_nanos() > 0);
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX);
    let of_day = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    )
}

/// The Gregorian date of a day counted from 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn limit(rpm: Option<u32>, tpm: Option<u32>) -> RateLimit {
        RateLimit { requests_per_minute: rpm, tokens_per_minute: tpm }
    }

    fn charge(window: &mut Window, limit: RateLimit, tokens: u64, now: Instant) -> Verdict {
        window.charge(limit, tokens, now, UNIX_EPOCH)
    }

    #[test]
    fn requests_fill_the_window_and_leave_it_sixty_seconds_later() {
        let limit = limit(Some(2), None);
        let mut window = Window::default();
        let t0 = Instant::now();
        let first = charge(&mut window, limit, 10, t0);
        assert_eq!(first.refused, None);
        assert_eq!(first.requests, Some(Meter { limit: 2, used: 1, reset: WINDOW }));
        assert_eq!(first.tokens, None);
        let second = charge(&mut window, limit, 10, t0 + 10 * SECOND);
        assert_eq!(second.requests, Some(Meter { limit: 2, used: 2, reset: WINDOW }));

        let refused = charge(&mut window, limit, 10, t0 + 20 * SECOND);
        let refusal = refused.refused.unwrap();
        assert_eq!(refusal, Refusal::new(Quota::Requests, 1, 40 * SECOND));
        assert_eq!(refusal.retry_after(), 40);
        // A refusal is not charged: the meters still show the two answers.
        assert_eq!(refused.requests, Some(Meter { limit: 2, used: 2, reset: 50 * SECOND }));

        // At exactly 60 s the first answer has left the window.
        let later = charge(&mut window, limit, 10, t0 + WINDOW);
        assert_eq!(later.refused, None);
        assert_eq!(later.requests, Some(Meter { limit: 2, used: 2, reset: WINDOW }));
    }

    #[test]
    fn tokens_wait_for_enough_old_answers_to_leave() {
        let limit = limit(None, Some(100));
        let mut window = Window::default();
        let t0 = Instant::now();
        charge(&mut window, limit, 30, t0);
        charge(&mut window, limit, 30, t0 + SECOND);
        let third = charge(&mut window, limit, 40, t0 + 2 * SECOND);
        assert_eq!(third.refused, None);
        assert_eq!(third.tokens, Some(Meter { limit: 100, used: 100, reset: WINDOW }));
        assert_eq!(third.requests, None);

        // 50 tokens need the first two answers (60 tokens) gone: the second leaves at 61 s.
        let refused = charge(&mut window, limit, 50, t0 + 3 * SECOND + SECOND / 2);
        let refusal = refused.refused.unwrap();
        assert_eq!(refusal.quota, Quota::Tokens);
        assert_eq!(refusal.requested, 50);
        assert_eq!(refusal.wait, 57 * SECOND + SECOND / 2);
        assert_eq!(refusal.retry_after(), 58);
        assert_eq!(refused.tokens.unwrap().remaining(), 0);

        let fits = charge(&mut window, limit, 50, t0 + 61 * SECOND);
        assert_eq!(fits.refused, None);
        assert_eq!(fits.tokens.unwrap().used, 90);
    }

    #[test]
    fn a_request_larger_than_the_limit_never_fits() {
        let limit = limit(None, Some(10));
        let mut window = Window::default();
        let t0 = Instant::now();
        let empty = charge(&mut window, limit, 11, t0);
        assert_eq!(empty.refused.unwrap().retry_after(), 1);
        charge(&mut window, limit, 4, t0);
        let busy = charge(&mut window, limit, 11, t0 + 5 * SECOND);
        assert_eq!(busy.refused.unwrap().wait, 55 * SECOND);
    }

    #[test]
    fn the_longer_wait_names_the_limit_and_zero_answers_cost_no_tokens() {
        let limit = limit(Some(3), Some(20));
        let mut window = Window::default();
        let t0 = Instant::now();
        charge(&mut window, limit, 0, t0);
        charge(&mut window, limit, 20, t0 + SECOND);
        charge(&mut window, limit, 0, t0 + 2 * SECOND);
        assert_eq!(window.tokens.len(), 1);
        // Requests free up at 60 s, tokens at 61 s: tokens bind.
        let refusal = charge(&mut window, limit, 5, t0 + 3 * SECOND).refused.unwrap();
        assert_eq!(refusal, Refusal::new(Quota::Tokens, 5, 58 * SECOND));
        // Without tokens, only the request limit refuses.
        let refusal = charge(&mut window, limit, 0, t0 + 3 * SECOND).refused.unwrap();
        assert_eq!(refusal, Refusal::new(Quota::Requests, 1, 57 * SECOND));
    }

    #[test]
    fn a_zero_limit_refuses_everything() {
        let mut window = Window::default();
        let verdict = charge(&mut window, limit(Some(0), None), 1, Instant::now());
        assert_eq!(verdict.refused.unwrap().retry_after(), 1);
        assert_eq!(verdict.requests.unwrap().remaining(), 0);
    }

    #[test]
    fn keys_have_their_own_windows() {
        let limiter = Limiter::new(limit(Some(1), None));
        assert_eq!(limiter.charge("a", 1).refused, None);
        assert!(limiter.charge("a", 1).refused.is_some());
        assert_eq!(limiter.charge("b", 1).refused, None);
    }

    #[test]
    fn durations_are_written_the_way_go_writes_them() {
        assert_eq!(go_duration(Duration::ZERO), "0s");
        assert_eq!(go_duration(Duration::from_millis(17)), "17ms");
        assert_eq!(go_duration(Duration::from_micros(16_200)), "17ms");
        assert_eq!(go_duration(Duration::from_nanos(1)), "1ms");
        assert_eq!(go_duration(SECOND), "1s");
        assert_eq!(go_duration(Duration::from_millis(59_500)), "59.5s");
        assert_eq!(go_duration(Duration::from_millis(1_234)), "1.234s");
        assert_eq!(go_duration(Duration::from_millis(1_230)), "1.23s");
        assert_eq!(go_duration(6 * WINDOW), "6m0s");
        assert_eq!(go_duration(WINDOW + SECOND / 2), "1m0.5s");
        assert_eq!(go_duration(60 * WINDOW), "1h0m0s");
        assert_eq!(go_duration(Duration::from_secs(3_723)), "1h2m3s");
    }

    #[test]
    fn timestamps_are_rfc3339_utc_rounded_up() {
        let at = |secs: u64, nanos: u32| UNIX_EPOCH + Duration::new(secs, nanos);
        assert_eq!(rfc3339_ceil(at(0, 0)), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_ceil(at(951_782_400, 0)), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_ceil(at(1_700_000_000, 0)), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339_ceil(at(1_700_000_000, 1)), "2023-11-14T22:13:21Z");
        assert_eq!(rfc3339_ceil(at(4_107_542_399, 0)), "2100-02-28T23:59:59Z");
    }

    #[test]
    fn headers_per_provider() {
        let verdict = Verdict {
            refused: None,
            requests: Some(Meter { limit: 10, used: 3, reset: Duration::from_millis(59_500) }),
            tokens: Some(Meter { limit: 1000, used: 1200, reset: Duration::from_millis(17) }),
            wall: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        };
        let mut headers = HeaderMap::new();
        verdict.write_headers(Provider::OpenAi, &mut headers);
        assert_eq!(headers.len(), 6);
        assert_eq!(headers["x-ratelimit-limit-requests"], "10");
        assert_eq!(headers["x-ratelimit-remaining-requests"], "7");
        assert_eq!(headers["x-ratelimit-reset-requests"], "59.5s");
        assert_eq!(headers["x-ratelimit-limit-tokens"], "1000");
        assert_eq!(headers["x-ratelimit-remaining-tokens"], "0");
        assert_eq!(headers["x-ratelimit-reset-tokens"], "17ms");

        let mut headers = HeaderMap::new();
        verdict.write_headers(Provider::Anthropic, &mut headers);
        assert_eq!(headers.len(), 6);
        assert_eq!(headers["anthropic-ratelimit-requests-limit"], "10");
        assert_eq!(headers["anthropic-ratelimit-requests-remaining"], "7");
        assert_eq!(headers["anthropic-ratelimit-requests-reset"], "2023-11-14T22:14:20Z");
        assert_eq!(headers["anthropic-ratelimit-tokens-limit"], "1000");
        assert_eq!(headers["anthropic-ratelimit-tokens-remaining"], "0");
        assert_eq!(headers["anthropic-ratelimit-tokens-reset"], "2023-11-14T22:13:21Z");

        let mut headers = HeaderMap::new();
        verdict.write_headers(Provider::Gemini, &mut headers);
        assert!(headers.is_empty());

        let requests_only = Verdict { tokens: None, ..verdict };
        let mut headers = HeaderMap::new();
        requests_only.write_headers(Provider::OpenAi, &mut headers);
        assert_eq!(headers.len(), 3);
        assert!(!headers.contains_key("x-ratelimit-limit-tokens"));
    }
}
