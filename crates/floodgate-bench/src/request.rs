//! The requests the benchmark sends: bodies in the endpoint's wire format (built once per kind
//! of request, then shared) and the headers that go with them.

use bytes::Bytes;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};

use crate::config::Api;

/// Anthropic requires `max_tokens`; this is sent when `--max-tokens` is not given.
pub(crate) const ANTHROPIC_DEFAULT_MAX_TOKENS: u32 = 256;

/// The `anthropic-version` every Anthropic request carries.
pub(crate) const ANTHROPIC_VERSION: &str = "2023-06-01";

/// Words the prompt is made of; repeated until it has about four characters per token.
const PROMPT_WORDS: [&str; 12] = [
    "Please",
    "summarise",
    "the",
    "following",
    "notes",
    "about",
    "a",
    "load",
    "test",
    "in",
    "one",
    "sentence.",
];

/// A user prompt of about `tokens` tokens (four characters a token, as estimators count).
pub(crate) fn prompt(tokens: u32) -> String {
    let target = tokens as usize * 4;
    let mut text = String::with_capacity(target + 16);
    for word in PROMPT_WORDS.iter().cycle() {
        if text.len() >= target {
            break;
        }
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(word);
    }
    text
}

/// The JSON body of one request.
pub(crate) fn body(
    api: Api,
    model: &str,
    stream: bool,
    prompt_tokens: u32,
    max_tokens: Option<u32>,
) -> Bytes {
    let messages = json!([{"role": "user", "content": prompt(prompt_tokens)}]);
    let mut body = json!({"model": model, "messages": messages});
    let fields = body.as_object_mut();
    if let Some(fields) = fields {
        match api {
            Api::OpenAi => {
                if let Some(max) = max_tokens {
                    fields.insert("max_tokens".into(), max.into());
                }
                if stream {
                    fields.insert("stream".into(), true.into());
                    fields.insert("stream_options".into(), json!({"include_usage": true}));
                }
            }
            Api::Anthropic => {
                let max = max_tokens.unwrap_or(ANTHROPIC_DEFAULT_MAX_TOKENS);
                fields.insert("max_tokens".into(), max.into());
                if stream {
                    fields.insert("stream".into(), true.into());
                }
            }
        }
    }
    Bytes::from(Value::to_string(&body))
}

/// The headers of every request: JSON content and the key in the format's header.
pub(crate) fn headers(api: Api, key: Option<&str>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    match api {
        Api::OpenAi => {
            if let Some(value) = key.and_then(|k| HeaderValue::try_from(format!("Bearer {k}")).ok())
            {
                headers.insert(AUTHORIZATION, value);
            }
        }
        Api::Anthropic => {
            headers.insert(
                HeaderName::from_static("anthropic-version"),
                HeaderValue::from_static(ANTHROPIC_VERSION),
            );
            if let Some(value) = key.and_then(|k| HeaderValue::try_from(k).ok()) {
                headers.insert(HeaderName::from_static("x-api-key"), value);
            }
        }
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_has_about_four_characters_a_token() {
        assert_eq!(prompt(1), "Please");
        let text = prompt(20);
        assert!(text.len() >= 80 && text.len() < 95, "{} chars: {text}", text.len());
        assert!(text.starts_with("Please summarise the following notes"));
    }

    #[test]
    fn openai_stream_body_asks_for_usage() {
        let body: Value =
            serde_json::from_slice(&body(Api::OpenAi, "m", true, 1, Some(7))).unwrap();
        assert_eq!(
            body,
            json!({
                "model": "m",
                "messages": [{"role": "user", "content": "Please"}],
                "max_tokens": 7,
                "stream": true,
                "stream_options": {"include_usage": true}
            })
        );
    }

    #[test]
    fn openai_plain_body_has_no_stream_fields() {
        let body: Value = serde_json::from_slice(&body(Api::OpenAi, "m", false, 1, None)).unwrap();
        assert_eq!(
            body,
            json!({"model": "m", "messages": [{"role": "user", "content": "Please"}]})
        );
    }

    #[test]
    fn anthropic_body_always_has_max_tokens() {
        let body: Value =
            serde_json::from_slice(&body(Api::Anthropic, "c", true, 1, None)).unwrap();
        assert_eq!(
            body,
            json!({
                "model": "c",
                "messages": [{"role": "user", "content": "Please"}],
                "max_tokens": 256,
                "stream": true
            })
        );
    }

    #[test]
    fn keys_go_in_each_format_header() {
        let openai = headers(Api::OpenAi, Some("k1"));
        assert_eq!(openai["authorization"], "Bearer k1");
        assert!(openai.get("x-api-key").is_none());
        let anthropic = headers(Api::Anthropic, Some("k2"));
        assert_eq!(anthropic["x-api-key"], "k2");
        assert_eq!(anthropic["anthropic-version"], "2023-06-01");
        assert!(anthropic.get("authorization").is_none());
        assert_eq!(headers(Api::OpenAi, None).len(), 1);
    }
}
