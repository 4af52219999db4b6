//! The providers' rate-limit headers, read into [`Observed`] so a key's
//! windows can be corrected from what the provider itself counts.
//!
//! - OpenAI (and most OpenAI-compatible servers): `x-ratelimit-limit-requests`,
//!   `x-ratelimit-remaining-requests`, `x-ratelimit-reset-requests` and the
//!   same three for `-tokens`; resets are Go-style durations (`1s`, `6m0s`,
//!   `59.5s`, `17ms`).
//! - Anthropic: `anthropic-ratelimit-requests-limit`, `-remaining`, `-reset`
//!   and the same for `tokens` (the most restrictive of its token limits),
//!   falling back to `input-tokens`; resets are RFC 3339 times.
//! - Gemini sends none; its 429s carry `retry-after` (read elsewhere).

use std::time::{Duration, SystemTime};

use floodgate_protocol::Format;
use http::HeaderMap;

use super::limits::{Observed, Reading};

pub fn read(format: Format, headers: &HeaderMap) -> Observed {
    match format {
        Format::OpenAi => {
            Observed { requests: openai(headers, "requests"), tokens: openai(headers, "tokens") }
        }
        Format::Anthropic => {
            let tokens = anthropic(headers, "tokens");
            let tokens = if tokens == Reading::default() {
                anthropic(headers, "input-tokens")
            } else {
                tokens
            };
            Observed { requests: anthropic(headers, "requests"), tokens }
        }
        Format::Gemini => Observed::default(),
    }
}

fn text<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

fn number(headers: &HeaderMap, name: &str) -> Option<u64> {
    text(headers, name)?.parse().ok()
}

fn openai(headers: &HeaderMap, what: &str) -> Reading {
    Reading {
        limit: number(headers, &format!("x-ratelimit-limit-{what}")),
        remaining: number(headers, &format!("x-ratelimit-remaining-{what}")),
        reset: text(headers, &format!("x-ratelimit-reset-{what}")).and_then(go_duration),
    }
}

fn anthropic(headers: &HeaderMap, what: &str) -> Reading {
    let reset = text(headers, &format!("anthropic-ratelimit-{what}-reset"))
        .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
        .map(|at| at.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO));
    Reading {
        limit: number(headers, &format!("anthropic-ratelimit-{what}-limit")),
        remaining: number(headers, &format!("anthropic-ratelimit-{what}-remaining")),
        reset,
    }
}

/// A Go `time.Duration` string: `1h2m3.5s`, `6m0s`, `17ms`, `250us`.
pub fn go_duration(text: &str) -> Option<Duration> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = 0.0f64;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let value: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += value * scale;
    }
    (total.is_finite() && total >= 0.0).then(|| Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (http::HeaderName::from_static(k), HeaderValue::from_str(v).unwrap()))
            .collect()
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration("1s"), Some(Duration::from_secs(1)));
        assert_eq!(go_duration("6m0s"), Some(Duration::from_secs(360)));
        assert_eq!(go_duration("59.5s"), Some(Duration::from_millis(59_500)));
        assert_eq!(go_duration("17ms"), Some(Duration::from_millis(17)));
        assert_eq!(go_duration("1h2m3s"), Some(Duration::from_secs(3723)));
        assert_eq!(go_duration("soon"), None);
        assert_eq!(go_duration("5x"), None);
        assert_eq!(go_duration(""), None);
    }

    #[test]
    fn openai_headers_as_documented() {
        let h = headers(&[
            ("x-ratelimit-limit-requests", "60"),
            ("x-ratelimit-limit-tokens", "150000"),
            ("x-ratelimit-remaining-requests", "59"),
            ("x-ratelimit-remaining-tokens", "149984"),
            ("x-ratelimit-reset-requests", "1s"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ]);
        let o = read(Format::OpenAi, &h);
        assert_eq!(
            o.requests,
            Reading { limit: Some(60), remaining: Some(59), reset: Some(Duration::from_secs(1)) }
        );
        assert_eq!(o.tokens.remaining, Some(149_984));
        assert_eq!(o.tokens.reset, Some(Duration::from_secs(360)));
        assert!(read(Format::Gemini, &h).is_empty());
    }

    #[test]
    fn anthropic_headers_as_documented() {
        let at = humantime::format_rfc3339_seconds(SystemTime::now() + Duration::from_secs(30));
        let h = headers(&[
            ("anthropic-ratelimit-requests-limit", "50"),
            ("anthropic-ratelimit-requests-remaining", "49"),
            ("anthropic-ratelimit-requests-reset", &at.to_string()),
            ("anthropic-ratelimit-input-tokens-limit", "40000"),
            ("anthropic-ratelimit-input-tokens-remaining", "39000"),
        ]);
        let o = read(Format::Anthropic, &h);
        assert_eq!((o.requests.limit, o.requests.remaining), (Some(50), Some(49)));
        let reset = o.requests.reset.unwrap();
        assert!(reset > Duration::from_secs(28) && reset <= Duration::from_secs(30), "{reset:?}");
        // No combined token headers: the input-token ones stand in.
        assert_eq!((o.tokens.limit, o.tokens.remaining), (Some(40_000), Some(39_000)));
        assert!(read(Format::Anthropic, &HeaderMap::new()).is_empty());
    }
}
