//! What a streamed event means to the benchmark: content (a token arrived), the stream's
//! terminal event, an error event, or anything else. Substring checks only: building a JSON tree
//! per event would cost the load generator CPU it shares with the system it measures.

use floodgate_protocol::sse::SseEvent;

use crate::config::Api;

/// The benchmark's view of one SSE event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventClass {
    /// Carries generated content: OpenAI `choices[0].delta.content` non-empty, or an Anthropic
    /// `content_block_delta`.
    Content,
    /// Ends the stream: OpenAI `[DONE]`, Anthropic `message_stop`.
    Terminal,
    /// An error event in the stream.
    Error,
    /// Anything else (role chunks, usage, `ping`, block starts and stops, ...).
    Other,
}

/// Classifies `event` as the endpoint's format defines it.
pub(crate) fn classify(api: Api, event: &SseEvent) -> EventClass {
    match api {
        Api::OpenAi => classify_openai(event),
        Api::Anthropic => classify_anthropic(event),
    }
}

fn classify_openai(event: &SseEvent) -> EventClass {
    let data = event.data.trim();
    if event.event.as_deref() == Some("error") || is_error_object(data) {
        EventClass::Error
    } else if data == "[DONE]" {
        EventClass::Terminal
    } else if has_text_content(data) {
        EventClass::Content
    } else {
        EventClass::Other
    }
}

fn classify_anthropic(event: &SseEvent) -> EventClass {
    let name = event.event.as_deref().or_else(|| string_after_key(&event.data, "type"));
    match name {
        Some("content_block_delta") => EventClass::Content,
        Some("message_stop") => EventClass::Terminal,
        Some("error") => EventClass::Error,
        _ => EventClass::Other,
    }
}

/// `{"error": ...}`: a JSON object whose first member is `error` (OpenAI's error shape).
fn is_error_object(data: &str) -> bool {
    data.strip_prefix('{').is_some_and(|rest| rest.trim_start().starts_with("\"error\""))
}

/// Whether some `"content"` member of `data` is a non-empty string. Inside JSON strings quotes
/// are escaped, so a `"content"` key cannot be matched inside text or tool arguments.
fn has_text_content(data: &str) -> bool {
    let mut rest = data;
    while let Some(at) = rest.find("\"content\"") {
        rest = &rest[at + "\"content\"".len()..];
        let Some(value) = rest.trim_start().strip_prefix(':') else { continue };
        if let Some(text) = value.trim_start().strip_prefix('"')
            && !text.starts_with('"')
        {
            return true;
        }
    }
    false
}

/// The string value of the first `"key": "value"` member in `data`, if it has no escapes.
fn string_after_key<'a>(data: &'a str, key: &str) -> Option<&'a str> {
    let quoted = format!("\"{key}\"");
    let at = data.find(&quoted)?;
    let value = data[at + quoted.len()..].trim_start().strip_prefix(':')?.trim_start();
    let value = value.strip_prefix('"')?;
    value.find('"').map(|end| &value[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(data: &str) -> SseEvent {
        SseEvent { event: None, data: data.to_string(), id: None }
    }

    fn named(name: &str, data: &str) -> SseEvent {
        SseEvent { event: Some(name.to_string()), data: data.to_string(), id: None }
    }

    #[test]
    fn openai_chunks() {
        let role = r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}]}"#;
        let token = r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}]}"#;
        let spaced = r#"{"choices": [{"index": 0, "delta": {"content": " world"}}]}"#;
        let null = r#"{"choices":[{"index":0,"delta":{"content":null,"tool_calls":[{"index":0,"function":{"arguments":"{\"content\":\"x\"}"}}]}}]}"#;
        let finish = r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}"#;
        let usage = r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":12,"total_tokens":21}}"#;
        let error = r#"{"error":{"message":"upstream failed","type":"server_error","code":null,"param":null}}"#;
        let classes: Vec<EventClass> = [role, token, spaced, null, finish, usage, "[DONE]", error]
            .iter()
            .map(|d| classify(Api::OpenAi, &data(d)))
            .collect();
        assert_eq!(
            classes,
            vec![
                EventClass::Other,
                EventClass::Content,
                EventClass::Content,
                EventClass::Other,
                EventClass::Other,
                EventClass::Other,
                EventClass::Terminal,
                EventClass::Error,
            ]
        );
    }

    #[test]
    fn openai_content_that_mentions_error_is_content() {
        let token = r#"{"choices":[{"index":0,"delta":{"content":"{\"error\": 1}"}}]}"#;
        assert_eq!(classify(Api::OpenAi, &data(token)), EventClass::Content);
    }

    #[test]
    fn anthropic_events() {
        let events = [
            named(
                "message_start",
                r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"output_tokens":1}}}"#,
            ),
            named(
                "content_block_start",
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            ),
            named("ping", r#"{"type": "ping"}"#),
            named(
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}"#,
            ),
            named(
                "content_block_delta",
                r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"a\""}}"#,
            ),
            named("content_block_stop", r#"{"type":"content_block_stop","index":0}"#),
            named(
                "message_delta",
                r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}}"#,
            ),
            named("message_stop", r#"{"type":"message_stop"}"#),
            named(
                "error",
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            ),
        ];
        let classes: Vec<EventClass> = events.iter().map(|e| classify(Api::Anthropic, e)).collect();
        assert_eq!(
            classes,
            vec![
                EventClass::Other,
                EventClass::Other,
                EventClass::Other,
                EventClass::Content,
                EventClass::Content,
                EventClass::Other,
                EventClass::Other,
                EventClass::Terminal,
                EventClass::Error,
            ]
        );
    }

    #[test]
    fn anthropic_event_without_a_name_uses_its_type() {
        let stop = data(r#"{"type": "message_stop"}"#);
        assert_eq!(classify(Api::Anthropic, &stop), EventClass::Terminal);
    }
}
