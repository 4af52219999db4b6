//! Helpers shared by the integration tests: starting a mock, an HTTP client, and a small SSE
//! parser written here (independently of the mock) to read streamed answers.

#![expect(clippy::unwrap_used, reason = "test helpers fail the test on unexpected input")]

use std::time::{Duration, Instant};

use floodgate_mock_upstream::{MockConfig, MockServer, Stats};
use serde_json::Value;

/// A recording mock with the given number of chunks.
pub async fn start(chunks: usize) -> MockServer {
    start_with(MockConfig { chunks, record: true, ..MockConfig::default() }).await
}

pub async fn start_with(config: MockConfig) -> MockServer {
    MockServer::start(config).await.unwrap()
}

/// A client builder; installs rustls' ring provider first, which reqwest (built with
/// `rustls-no-provider`) needs even for plain `http://`.
pub fn builder() -> reqwest::ClientBuilder {
    static PROVIDER: std::sync::Once = std::sync::Once::new();
    PROVIDER.call_once(|| {
        // Another test binary's helper may have installed it already; either way one is set.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder()
}

pub fn client() -> reqwest::Client {
    builder().build().unwrap()
}

/// A POST with OpenAI auth.
pub fn openai(
    server: &MockServer,
    client: &reqwest::Client,
    path: &str,
) -> reqwest::RequestBuilder {
    client
        .post(format!("{}{path}", server.openai_base_url()))
        .header("authorization", "Bearer sk-test-key")
}

/// A POST with Anthropic auth and version.
pub fn anthropic(server: &MockServer, client: &reqwest::Client) -> reqwest::RequestBuilder {
    client
        .post(format!("{}/v1/messages", server.base_url()))
        .header("x-api-key", "sk-ant-test")
        .header("anthropic-version", "2023-06-01")
}

/// A POST to a Gemini model method (`"gemini-2.0-flash:generateContent"`) with header auth.
pub fn gemini(
    server: &MockServer,
    client: &reqwest::Client,
    target: &str,
) -> reqwest::RequestBuilder {
    client
        .post(format!("{}/v1beta/models/{target}", server.base_url()))
        .header("x-goog-api-key", "AIza-test")
}

/// Sends and returns status, content-type and body text.
pub async fn send(request: reqwest::RequestBuilder) -> (u16, String, String) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, content_type, response.text().await.unwrap())
}

/// Sends and parses the body as JSON.
pub async fn send_json(request: reqwest::RequestBuilder) -> (u16, Value) {
    let (status, _, body) = send(request).await;
    (status, serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body}")))
}

/// Parses a complete SSE body into `(event, data)` pairs. Lines may end with `\n` or `\r\n`;
/// several `data:` lines are joined with `\n`.
pub fn sse_events(body: &str) -> Vec<(Option<String>, String)> {
    let mut events = Vec::new();
    let mut event = None;
    let mut data: Option<String> = None;
    for line in body.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            if let Some(data) = data.take() {
                events.push((event.take(), data));
            }
            event = None;
        } else if let Some(value) = line.strip_prefix("event: ") {
            event = Some(value.to_owned());
        } else if let Some(value) = line.strip_prefix("data: ") {
            match &mut data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => data = Some(value.to_owned()),
            }
        } else {
            panic!("unexpected SSE line {line:?}");
        }
    }
    assert!(data.is_none(), "the stream ended inside an event: {body:?}");
    events
}

/// The `data` of each event parsed as JSON (a `[DONE]` becomes the string "[DONE]").
pub fn sse_json(body: &str) -> Vec<Value> {
    sse_events(body)
        .into_iter()
        .map(|(_, data)| {
            if data == "[DONE]" {
                Value::String(data)
            } else {
                serde_json::from_str(&data).unwrap()
            }
        })
        .collect()
}

/// The `data` of each event parsed as JSON, checking that every event is named after its
/// data's `type`, as Anthropic's are.
pub fn named_events(body: &str) -> Vec<Value> {
    sse_events(body)
        .into_iter()
        .map(|(name, data)| {
            let data: Value = serde_json::from_str(&data).unwrap();
            assert_eq!(name.as_deref(), data["type"].as_str(), "{data}");
            data
        })
        .collect()
}

/// Sets every `created` member to 0, wherever it is.
pub fn zero_created(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                if key == "created" && value.is_u64() {
                    *value = Value::from(0);
                } else {
                    zero_created(value);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(zero_created),
        _ => {}
    }
}

/// Replaces the digits after every `"created":` in a raw body with 0.
pub fn zero_created_raw(body: &str) -> String {
    let mut out = String::with_capacity(body.len());
    let mut rest = body;
    while let Some(at) = rest.find("\"created\":") {
        let (head, tail) = rest.split_at(at + "\"created\":".len());
        out.push_str(head);
        out.push('0');
        rest = tail.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    out.push_str(rest);
    out
}

/// Waits (up to 5 s) until the stats satisfy `check`, then returns them.
pub async fn wait_for_stats(server: &MockServer, check: impl Fn(&Stats) -> bool) -> Stats {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stats = server.stats();
        if check(&stats) || Instant::now() > deadline {
            return stats;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The f32 values of a JSON array of numbers.
pub fn floats(value: &Value) -> Vec<f32> {
    value.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect()
}
