//! Per-key rate limits: counting per key, the 429 of each provider with its `retry-after`, the
//! rate-limit headers (names, and values parsed back), and tokens charged from reported usage.
//!
//! A 60-second window cannot pass in a test; the window's expiry is tested beside the code
//! (`limit.rs`) with explicit instants. Here every number a response carries is checked against
//! what the requests before it must have left.

#![expect(clippy::unwrap_used, reason = "test helpers fail the test on unexpected input")]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use floodgate_mock_upstream::{MockConfig, MockServer, RateLimit};
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use crate::common::{anthropic, client, gemini, named_events, openai, sse_json, start_with};

/// Words per answer: each default text answer costs 3 completion tokens.
const CHUNKS: usize = 3;

/// A chat request whose prompt is `hi` (1 token): with [`CHUNKS`] words it costs 4 tokens.
fn chat() -> Value {
    json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
}

fn messages() -> Value {
    json!({"model": "claude", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]})
}

fn contents() -> Value {
    json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
}

async fn limited(rpm: Option<u32>, tpm: Option<u32>) -> MockServer {
    start_with(MockConfig {
        chunks: CHUNKS,
        rate_limit: Some(RateLimit { requests_per_minute: rpm, tokens_per_minute: tpm }),
        ..MockConfig::default()
    })
    .await
}

/// Sends and returns status, headers and the body as JSON.
async fn exchange(request: reqwest::RequestBuilder) -> (u16, HeaderMap, Value) {
    let (status, headers, body) = exchange_text(request).await;
    (status, headers, serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body}")))
}

async fn exchange_text(request: reqwest::RequestBuilder) -> (u16, HeaderMap, String) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers.get(name).unwrap_or_else(|| panic!("no {name} in {headers:?}")).to_str().unwrap()
}

fn number(headers: &HeaderMap, name: &str) -> u64 {
    header(headers, name).parse().unwrap_or_else(|_| panic!("{name} is not a number"))
}

/// The names of the rate-limit headers present, sorted.
fn rate_limit_names(headers: &HeaderMap) -> Vec<String> {
    let mut names: Vec<String> = headers
        .keys()
        .map(|name| name.as_str().to_owned())
        .filter(|name| name.contains("ratelimit"))
        .collect();
    names.sort();
    names
}

/// Parses a duration as Go (and so OpenAI) writes it: `1h2m3.5s`, `17ms`, `0s`, `1.5µs`.
fn go_duration(text: &str) -> Duration {
    assert!(!text.is_empty(), "empty duration");
    let mut total = 0.0_f64;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(rest.len());
        let value: f64 = rest[..digits].parse().unwrap_or_else(|_| panic!("bad duration {text}"));
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            unit => panic!("unit {unit:?} in duration {text}"),
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    Duration::from_secs_f64(total)
}

/// Parses an RFC 3339 UTC timestamp in whole seconds (`2025-01-15T14:24:00Z`), the form
/// Anthropic sends, into a `SystemTime`, counting days year by year and month by month.
fn rfc3339(text: &str) -> SystemTime {
    let bytes = text.as_bytes();
    assert_eq!(text.len(), 20, "{text}");
    assert_eq!(
        (bytes[4], bytes[7], bytes[10], bytes[13], bytes[16], bytes[19]),
        (b'-', b'-', b'T', b':', b':', b'Z')
    );
    let field = |range: std::ops::Range<usize>| -> u64 { text[range].parse().unwrap() };
    let (year, month, day) = (field(0..4), field(5..7), field(8..10));
    let (hour, minute, second) = (field(11..13), field(14..16), field(17..19));
    assert!((1..=12).contains(&month) && (1..=31).contains(&day), "{text}");
    assert!(hour < 24 && minute < 60 && second < 60, "{text}");
    let leap = |year: u64| {
        (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400)
    };
    let mut days: u64 = (1970..year).map(|y| if leap(y) { 366 } else { 365 }).sum();
    let lengths = [31, if leap(year) { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    days += lengths[..usize::try_from(month - 1).unwrap()].iter().sum::<u64>() + day - 1;
    UNIX_EPOCH + Duration::from_secs(days * 86_400 + hour * 3600 + minute * 60 + second)
}

/// How much `remaining` fell to the value of header `name`; updates `remaining`.
fn spent(remaining: &mut u64, headers: &HeaderMap, name: &str) -> u64 {
    let now = number(headers, name);
    let spent = *remaining - now;
    *remaining = now;
    spent
}

/// Asserts that a reset (a duration) is a full window from now, give or take the test's time.
fn assert_full_window(reset: Duration) {
    assert!(
        reset > Duration::from_secs(55) && reset <= Duration::from_secs(60),
        "reset {reset:?} is not about a full window"
    );
}

/// Asserts that a timestamp is about a full window from now (whole seconds, rounded up).
fn assert_a_window_from_now(at: SystemTime) {
    let now = SystemTime::now();
    let ahead = at.duration_since(now).unwrap_or_default();
    assert!(
        ahead > Duration::from_secs(55) && ahead <= Duration::from_secs(61),
        "reset {ahead:?} from now is not about a full window"
    );
}

#[tokio::test]
async fn requests_are_counted_per_key() {
    let server = limited(Some(2), None).await;
    let client = client();
    let url = format!("{}/chat/completions", server.openai_base_url());
    let with_key = |key: &str| client.post(&url).bearer_auth(key).json(&chat());

    let (status, headers, _) = exchange(with_key("sk-a")).await;
    assert_eq!(status, 200);
    assert_eq!(number(&headers, "x-ratelimit-remaining-requests"), 1);
    let (status, headers, _) = exchange(with_key("sk-a")).await;
    assert_eq!(status, 200);
    assert_eq!(number(&headers, "x-ratelimit-remaining-requests"), 0);
    let (status, _, _) = exchange(with_key("sk-a")).await;
    assert_eq!(status, 429);

    // Another key has its own window, whatever the first one did.
    let (status, headers, _) = exchange(with_key("sk-b")).await;
    assert_eq!(status, 200);
    assert_eq!(number(&headers, "x-ratelimit-remaining-requests"), 1);

    // A key's window spans routes: embeddings count against the same requests.
    let embed = json!({"model": "text-embedding-3-small", "input": "x"});
    let (status, _, _) = exchange(
        client
            .post(format!("{}/embeddings", server.openai_base_url()))
            .bearer_auth("sk-b")
            .json(&embed),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _, _) = exchange(with_key("sk-b")).await;
    assert_eq!(status, 429);

    // Refusals are counted apart and charge nothing.
    assert_eq!(server.stats().rate_limited, 2);
    let (status, headers, _) = exchange(with_key("sk-c")).await;
    assert_eq!((status, number(&headers, "x-ratelimit-remaining-requests")), (200, 1));
}

#[tokio::test]
async fn keys_are_counted_apart_on_anthropic_and_gemini_too() {
    let server = limited(Some(1), None).await;
    let client = client();
    let url = format!("{}/v1/messages", server.base_url());
    let with_key = |key: &str| {
        client
            .post(&url)
            .header("x-api-key", key)
            .header("anthropic-version", "2023-06-01")
            .json(&messages())
    };
    assert_eq!(exchange(with_key("sk-ant-a")).await.0, 200);
    assert_eq!(exchange(with_key("sk-ant-a")).await.0, 429);
    assert_eq!(exchange(with_key("sk-ant-b")).await.0, 200);

    // Gemini: the header key and the `?key=` key are the same key when their values are.
    let target = format!("{}/v1beta/models/gemini-2.0-flash:generateContent", server.base_url());
    let by_header = client.post(&target).header("x-goog-api-key", "AIza-a").json(&contents());
    assert_eq!(exchange(by_header).await.0, 200);
    let by_query = client.post(format!("{target}?key=AIza-a")).json(&contents());
    assert_eq!(exchange(by_query).await.0, 429);
    let other = client.post(format!("{target}?key=AIza-b")).json(&contents());
    assert_eq!(exchange(other).await.0, 200);
}

#[tokio::test]
async fn openai_429s_name_the_limit_and_say_when_to_retry() {
    let server = limited(Some(1), None).await;
    let client = client();
    assert_eq!(exchange(openai(&server, &client, "/chat/completions").json(&chat())).await.0, 200);
    let (status, headers, body) =
        exchange(openai(&server, &client, "/chat/completions").json(&chat())).await;
    assert_eq!(status, 429);
    let retry_after = number(&headers, "retry-after");
    assert!((59..=60).contains(&retry_after), "retry-after {retry_after}");
    assert_eq!(body["error"]["type"], "requests");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(body["error"]["param"], Value::Null);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "Rate limit reached for gpt-4o on requests per min (RPM): Limit 1, Used 1, \
             Requested 1. Please try again in "
        ),
        "{message}"
    );
    // The 429 carries the headers too, showing the window it was refused by.
    assert_eq!(number(&headers, "x-ratelimit-remaining-requests"), 0);
    assert_full_window(go_duration(header(&headers, "x-ratelimit-reset-requests")));

    // A token limit: each answer costs 4 tokens, so the third does not fit in 10.
    let server = limited(None, Some(10)).await;
    for remaining in [6, 2] {
        let (status, headers, _) =
            exchange(openai(&server, &client, "/chat/completions").json(&chat())).await;
        assert_eq!((status, number(&headers, "x-ratelimit-remaining-tokens")), (200, remaining));
    }
    let (status, headers, body) =
        exchange(openai(&server, &client, "/chat/completions").json(&chat())).await;
    assert_eq!(status, 429);
    assert!((59..=60).contains(&number(&headers, "retry-after")));
    assert_eq!(body["error"]["type"], "tokens");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("on tokens per min (TPM): Limit 10, Used 8, Requested 4."),
        "{message}"
    );
    assert_eq!(number(&headers, "x-ratelimit-remaining-tokens"), 2);
}

#[tokio::test]
async fn anthropic_429s_have_the_anthropic_shape() {
    let server = limited(None, Some(4)).await;
    let client = client();
    assert_eq!(exchange(anthropic(&server, &client).json(&messages())).await.0, 200);
    let (status, headers, body) = exchange(anthropic(&server, &client).json(&messages())).await;
    assert_eq!(status, 429);
    assert!((59..=60).contains(&number(&headers, "retry-after")));
    assert_eq!(
        body,
        json!({"type": "error", "error": {
            "type": "rate_limit_error",
            "message": "This request would exceed your rate limit of 4 tokens per minute. You \
                        can see the response headers for current usage. Please try again later."
        }})
    );
    assert_eq!(number(&headers, "anthropic-ratelimit-tokens-remaining"), 0);
    assert_a_window_from_now(rfc3339(header(&headers, "anthropic-ratelimit-tokens-reset")));
}

#[tokio::test]
async fn gemini_429s_are_resource_exhausted_with_retry_info_and_no_headers() {
    let server = limited(Some(1), Some(1000)).await;
    let client = client();
    let target = "gemini-2.0-flash:generateContent";
    let (status, headers, _) = exchange(gemini(&server, &client, target).json(&contents())).await;
    assert_eq!(status, 200);
    assert!(rate_limit_names(&headers).is_empty(), "{headers:?}");
    let (status, headers, body) =
        exchange(gemini(&server, &client, target).json(&contents())).await;
    assert_eq!(status, 429);
    assert!(rate_limit_names(&headers).is_empty(), "{headers:?}");
    let retry_after = number(&headers, "retry-after");
    assert!((59..=60).contains(&retry_after), "retry-after {retry_after}");
    assert_eq!(
        body,
        json!({"error": {
            "code": 429,
            "message": "Resource has been exhausted (e.g. check quota).",
            "status": "RESOURCE_EXHAUSTED",
            "details": [{
                "@type": "type.googleapis.com/google.rpc.RetryInfo",
                "retryDelay": format!("{retry_after}s")
            }]
        }})
    );
}

#[tokio::test]
async fn openai_headers_are_the_documented_six_in_openai_formats() {
    let server = limited(Some(5), Some(1000)).await;
    let client = client();
    let (status, headers, _) =
        exchange(openai(&server, &client, "/chat/completions").json(&chat())).await;
    assert_eq!(status, 200);
    assert_eq!(
        rate_limit_names(&headers),
        [
            "x-ratelimit-limit-requests",
            "x-ratelimit-limit-tokens",
            "x-ratelimit-remaining-requests",
            "x-ratelimit-remaining-tokens",
            "x-ratelimit-reset-requests",
            "x-ratelimit-reset-tokens",
        ]
    );
    assert_eq!(number(&headers, "x-ratelimit-limit-requests"), 5);
    assert_eq!(number(&headers, "x-ratelimit-remaining-requests"), 4);
    assert_eq!(number(&headers, "x-ratelimit-limit-tokens"), 1000);
    assert_eq!(number(&headers, "x-ratelimit-remaining-tokens"), 996);
    // Just charged: the window is fully replenished a whole window from now.
    for name in ["x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"] {
        let value = header(&headers, name);
        assert!(value.ends_with('s') && !value.contains(' '), "{name}: {value}");
        assert_full_window(go_duration(value));
    }

    // Streams carry them on the response head.
    let mut request = chat();
    request["stream"] = json!(true);
    let (status, headers, body) =
        exchange_text(openai(&server, &client, "/chat/completions").json(&request)).await;
    assert_eq!(status, 200);
    assert!(body.ends_with("data: [DONE]\n\n"));
    assert_eq!(number(&headers, "x-ratelimit-remaining-requests"), 3);
    assert_eq!(number(&headers, "x-ratelimit-remaining-tokens"), 992);

    // Embeddings too.
    let embed = json!({"model": "text-embedding-3-small", "input": "abcdefgh"});
    let (status, headers, _) = exchange(openai(&server, &client, "/embeddings").json(&embed)).await;
    assert_eq!(status, 200);
    assert_eq!(number(&headers, "x-ratelimit-remaining-requests"), 2);
    assert_eq!(number(&headers, "x-ratelimit-remaining-tokens"), 990);

    // Only the limits that are set have headers.
    let requests_only = limited(Some(5), None).await;
    let (_, headers, _) =
        exchange(openai(&requests_only, &client, "/chat/completions").json(&chat())).await;
    assert_eq!(
        rate_limit_names(&headers),
        [
            "x-ratelimit-limit-requests",
            "x-ratelimit-remaining-requests",
            "x-ratelimit-reset-requests",
        ]
    );
    // And none without rate limiting.
    let unlimited = start_with(MockConfig::default()).await;
    let (_, headers, _) =
        exchange(openai(&unlimited, &client, "/chat/completions").json(&chat())).await;
    assert!(rate_limit_names(&headers).is_empty(), "{headers:?}");
}

#[tokio::test]
async fn anthropic_headers_are_the_documented_six_with_rfc3339_resets() {
    let server = limited(Some(5), Some(1000)).await;
    let client = client();
    let (status, headers, _) = exchange(anthropic(&server, &client).json(&messages())).await;
    assert_eq!(status, 200);
    assert_eq!(
        rate_limit_names(&headers),
        [
            "anthropic-ratelimit-requests-limit",
            "anthropic-ratelimit-requests-remaining",
            "anthropic-ratelimit-requests-reset",
            "anthropic-ratelimit-tokens-limit",
            "anthropic-ratelimit-tokens-remaining",
            "anthropic-ratelimit-tokens-reset",
        ]
    );
    assert_eq!(number(&headers, "anthropic-ratelimit-requests-limit"), 5);
    assert_eq!(number(&headers, "anthropic-ratelimit-requests-remaining"), 4);
    assert_eq!(number(&headers, "anthropic-ratelimit-tokens-limit"), 1000);
    assert_eq!(number(&headers, "anthropic-ratelimit-tokens-remaining"), 996);
    for name in ["anthropic-ratelimit-requests-reset", "anthropic-ratelimit-tokens-reset"] {
        assert_a_window_from_now(rfc3339(header(&headers, name)));
    }

    let mut request = messages();
    request["stream"] = json!(true);
    let (status, headers, _) = exchange_text(anthropic(&server, &client).json(&request)).await;
    assert_eq!(status, 200);
    assert_eq!(number(&headers, "anthropic-ratelimit-requests-remaining"), 3);
    assert_eq!(number(&headers, "anthropic-ratelimit-tokens-remaining"), 992);
    assert_a_window_from_now(rfc3339(header(&headers, "anthropic-ratelimit-tokens-reset")));
}

#[tokio::test]
async fn tokens_are_charged_as_the_answer_reports_them() {
    let server = limited(None, Some(10_000)).await;
    let client = client();
    let mut remaining = 10_000;

    // OpenAI: a long prompt, a short answer, a tool call, a stream with usage, one without.
    let long = json!({
        "model": "gpt-4o",
        "max_tokens": 2,
        "messages": [{"role": "user", "content": "x".repeat(40)}]
    });
    let tools = json!({
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "weather?"}],
        "tools": [{"type": "function", "function": {"name": "weather", "parameters": {}}}]
    });
    for request in [chat(), long.clone(), tools] {
        let (_, headers, body) =
            exchange(openai(&server, &client, "/chat/completions").json(&request)).await;
        let reported = body["usage"]["total_tokens"].as_u64().unwrap();
        assert_eq!(
            spent(&mut remaining, &headers, "x-ratelimit-remaining-tokens"),
            reported,
            "{body}"
        );
    }
    let mut stream = long.clone();
    stream["stream"] = json!(true);
    stream["stream_options"] = json!({"include_usage": true});
    let (_, headers, body) =
        exchange_text(openai(&server, &client, "/chat/completions").json(&stream)).await;
    let events = sse_json(&body);
    let usage = &events[events.len() - 2]["usage"];
    assert_eq!(usage["total_tokens"], 12, "{body}");
    assert_eq!(spent(&mut remaining, &headers, "x-ratelimit-remaining-tokens"), 12);
    // Without include_usage the stream reports nothing but costs the same.
    stream["stream_options"] = json!({"include_usage": false});
    let (_, headers, _) =
        exchange_text(openai(&server, &client, "/chat/completions").json(&stream)).await;
    assert_eq!(spent(&mut remaining, &headers, "x-ratelimit-remaining-tokens"), 12);
    let embed = json!({"model": "text-embedding-3-small", "input": ["abcdefgh", "ijkl"]});
    let (_, headers, body) = exchange(openai(&server, &client, "/embeddings").json(&embed)).await;
    assert_eq!(body["usage"]["total_tokens"], 3);
    assert_eq!(spent(&mut remaining, &headers, "x-ratelimit-remaining-tokens"), 3);

    // Anthropic, on a key of its own: input plus output tokens, from the message or the stream.
    remaining = 10_000;
    let mut long = json!({
        "model": "claude",
        "max_tokens": 2,
        "system": "y".repeat(20),
        "messages": [{"role": "user", "content": "x".repeat(40)}]
    });
    let (_, headers, body) = exchange(anthropic(&server, &client).json(&long)).await;
    let reported = body["usage"]["input_tokens"].as_u64().unwrap()
        + body["usage"]["output_tokens"].as_u64().unwrap();
    assert_eq!(reported, 15 + 2);
    assert_eq!(spent(&mut remaining, &headers, "anthropic-ratelimit-tokens-remaining"), reported);
    long["stream"] = json!(true);
    let (_, headers, body) = exchange_text(anthropic(&server, &client).json(&long)).await;
    let events = named_events(&body);
    let input = events[0]["message"]["usage"]["input_tokens"].as_u64().unwrap();
    let delta = events.iter().find(|event| event["type"] == "message_delta").unwrap();
    let output = delta["usage"]["output_tokens"].as_u64().unwrap();
    assert_eq!(
        spent(&mut remaining, &headers, "anthropic-ratelimit-tokens-remaining"),
        input + output
    );
}

#[tokio::test]
async fn gemini_tokens_are_charged_from_usage_metadata() {
    // Gemini sends no headers, so the charge shows in which request is refused: each answer
    // reports 1 + 3 tokens, two fit in 9 and the third does not.
    let server = limited(None, Some(9)).await;
    let client = client();
    let target = "gemini-2.0-flash:generateContent";
    for _ in 0..2 {
        let (status, _, body) = exchange(gemini(&server, &client, target).json(&contents())).await;
        assert_eq!((status, &body["usageMetadata"]["totalTokenCount"]), (200, &json!(4)));
    }
    let (status, _, _) = exchange(gemini(&server, &client, target).json(&contents())).await;
    assert_eq!(status, 429);
    // Embeddings report no usage and cost no tokens, so they still fit.
    let embed = json!({"content": {"parts": [{"text": "hello"}]}});
    let target = "text-embedding-004:embedContent";
    assert_eq!(exchange(gemini(&server, &client, target).json(&embed)).await.0, 200);
}
