//! Reading and writing complete answers, and error bodies.

use bytes::Bytes;
use serde_json::{Value, json};

use super::*;
use crate::anthropic::{error_body, read_chat_response, read_error, write_chat_response};
use crate::error::UpstreamErrorBody;

fn read(req: &ChatRequest, body: &Value) -> ChatResponse {
    read_chat_response(req, Bytes::from(body.to_string())).unwrap()
}

/// A documented Message with extended thinking, a tool call and cache usage.
fn docs_message() -> Value {
    json!({
        "id": "msg_01Aq9w938a90dw8q",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": [
            {"type": "thinking", "thinking": "The user wants the weather in San Francisco.", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"},
            {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpP"},
            {"type": "text", "text": "I'll check the current weather in San Francisco for you."},
            {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather", "input": {"location": "San Francisco, CA", "unit": "celsius"}}
        ],
        "stop_reason": "tool_use",
        "stop_sequence": null,
        "usage": {
            "input_tokens": 472,
            "cache_creation_input_tokens": 100,
            "cache_read_input_tokens": 2048,
            "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 0},
            "output_tokens": 89,
            "service_tier": "standard"
        }
    })
}

#[test]
fn reads_a_documented_message() {
    let body = docs_message();
    let resp = read(&ChatRequest::default(), &body);
    let expected = ChatResponse {
        id: "msg_01Aq9w938a90dw8q".to_owned(),
        model: "claude-sonnet-4-5-20250929".to_owned(),
        created: 0,
        choices: vec![Choice {
            index: 0,
            message: message(
                Role::Assistant,
                vec![
                    thinking(
                        "The user wants the weather in San Francisco.",
                        Some("EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"),
                    ),
                    text("I'll check the current weather in San Francisco for you."),
                    tool_call(
                        "toolu_01A09q90qw90lq917835lq9",
                        "get_weather",
                        r#"{"location":"San Francisco, CA","unit":"celsius"}"#,
                    ),
                ],
            ),
            finish_reason: Some(FinishReason::ToolCalls),
        }],
        usage: Usage {
            input_tokens: 472 + 100 + 2048,
            output_tokens: 89,
            cache_read_tokens: 2048,
            cache_creation_tokens: 100,
            reasoning_tokens: 0,
        },
        native: Some(NativeResponse {
            format: Format::Anthropic,
            body: Bytes::from(body.to_string()),
        }),
    };
    assert_eq!(resp, expected);
}

#[test]
fn stop_reasons_are_mapped() {
    let cases = [
        ("end_turn", None, FinishReason::Stop),
        (
            "stop_sequence",
            Some("\n\nHuman:"),
            FinishReason::StopSequence(Some("\n\nHuman:".to_owned())),
        ),
        ("max_tokens", None, FinishReason::Length),
        ("tool_use", None, FinishReason::ToolCalls),
        ("refusal", None, FinishReason::ContentFilter),
        ("pause_turn", None, FinishReason::Other("pause_turn".to_owned())),
        (
            "model_context_window_exceeded",
            None,
            FinishReason::Other("model_context_window_exceeded".to_owned()),
        ),
    ];
    for (reason, sequence, expected) in cases {
        let body = json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
            "content": [{"type": "text", "text": "Hi"}],
            "stop_reason": reason, "stop_sequence": sequence,
            "usage": {"input_tokens": 1, "output_tokens": 1}
        });
        let resp = read(&ChatRequest::default(), &body);
        assert_eq!(resp.choices[0].finish_reason, Some(expected.clone()), "{reason}");
        // Written back, the same reason and sequence come out.
        let written = json_of(&write_chat_response(&ChatResponse { native: None, ..resp }));
        assert_eq!(written["stop_reason"], json!(reason));
        assert_eq!(written["stop_sequence"], json!(sequence));
    }
}

#[test]
fn the_response_format_tool_reads_as_the_text_answer() {
    let req = ChatRequest {
        response_format: Some(ResponseFormat::JsonSchema {
            name: "weather_report".to_owned(),
            schema: json!({"type": "object"}),
            strict: None,
        }),
        ..ChatRequest::default()
    };
    let body = json!({
        "id": "msg_2", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [{"type": "tool_use", "id": "toolu_9", "name": "json_response", "input": {"city": "Paris", "temperature": 18.5}}],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 30, "output_tokens": 12}
    });
    let resp = read(&req, &body);
    assert_eq!(
        resp.choices[0].message.content,
        vec![text(r#"{"city":"Paris","temperature":18.5}"#)]
    );
    assert_eq!(resp.choices[0].finish_reason, Some(FinishReason::Stop));
    // Without a response format, a tool of that name is an ordinary call.
    let plain = read(&ChatRequest::default(), &body);
    assert_eq!(plain.choices[0].finish_reason, Some(FinishReason::ToolCalls));
    assert!(matches!(plain.choices[0].message.content[0], Part::ToolCall { .. }));
}

#[test]
fn undecodable_answers_are_decode_errors() {
    let err =
        read_chat_response(&ChatRequest::default(), Bytes::from_static(b"{\"id\":1}")).unwrap_err();
    assert_eq!(
        err.message,
        "the upstream answer is not an Anthropic Message: invalid type: integer `1`, expected \
         a string at line 1 column 7"
    );
}

#[test]
fn native_answers_are_written_verbatim() {
    let body = Bytes::from_static(b"{\"id\": \"msg_1\",  \"unknown\": [1]}");
    let resp = ChatResponse {
        id: "other".to_owned(),
        model: "m".to_owned(),
        created: 0,
        choices: vec![],
        usage: Usage::default(),
        native: Some(NativeResponse { format: Format::Anthropic, body: body.clone() }),
    };
    assert_eq!(write_chat_response(&resp), body.to_vec());
}

#[test]
fn writes_a_canonical_answer() {
    let resp = ChatResponse {
        id: "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT".to_owned(),
        model: "gpt-4o-2024-08-06".to_owned(),
        created: 1_741_569_952,
        choices: vec![Choice {
            index: 0,
            message: message(
                Role::Assistant,
                vec![
                    thinking("unsigned reasoning", None),
                    thinking("signed reasoning", Some("sig")),
                    text("Checking both cities."),
                    tool_call("call_1", "get_weather", r#"{"location": "Paris"}"#),
                    tool_call("call_2", "get_weather", ""),
                    tool_call("call_3", "get_weather", r#"{"location": "Ly"#),
                ],
            ),
            finish_reason: Some(FinishReason::ToolCalls),
        }],
        usage: Usage {
            input_tokens: 1000,
            output_tokens: 50,
            cache_read_tokens: 600,
            cache_creation_tokens: 0,
            reasoning_tokens: 10,
        },
        native: None,
    };
    insta::assert_json_snapshot!(json_of(&write_chat_response(&resp)));
}

#[test]
fn an_empty_answer_has_empty_content() {
    let resp = ChatResponse {
        id: "msg_3".to_owned(),
        model: "m".to_owned(),
        created: 0,
        choices: vec![Choice {
            index: 0,
            message: message(Role::Assistant, vec![]),
            finish_reason: Some(FinishReason::Length),
        }],
        usage: Usage {
            input_tokens: 5,
            output_tokens: 0,
            cache_read_tokens: 0,
            cache_creation_tokens: 9,
            reasoning_tokens: 0,
        },
        native: None,
    };
    assert_eq!(
        json_of(&write_chat_response(&resp)),
        json!({
            "id": "msg_3", "type": "message", "role": "assistant", "model": "m",
            "content": [], "stop_reason": "max_tokens", "stop_sequence": null,
            "usage": {
                "input_tokens": 0,
                "cache_creation_input_tokens": 9,
                "cache_read_input_tokens": 0,
                "output_tokens": 0
            }
        })
    );
}

#[test]
fn reads_both_error_shapes() {
    let anthropic = br#"{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"},"request_id":"req_011CSHoEeqs5C35K2UUqR7Fy"}"#;
    assert_eq!(
        read_error(anthropic),
        Some(UpstreamErrorBody {
            message: "Number of request tokens has exceeded your per-minute rate limit".to_owned(),
            kind: Some("rate_limit_error".to_owned()),
            code: None,
        })
    );
    let openai = br#"{"error":{"message":"Incorrect API key provided: sk-abc.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#;
    assert_eq!(
        read_error(openai),
        Some(UpstreamErrorBody {
            message: "Incorrect API key provided: sk-abc.".to_owned(),
            kind: Some("invalid_request_error".to_owned()),
            code: Some("invalid_api_key".to_owned()),
        })
    );
    let numeric = br#"{"error":{"message":"Bad gateway","code":502}}"#;
    assert_eq!(
        read_error(numeric),
        Some(UpstreamErrorBody {
            message: "Bad gateway".to_owned(),
            kind: None,
            code: Some("502".to_owned()),
        })
    );
    assert_eq!(read_error(b"<html>502 Bad Gateway</html>"), None);
    assert_eq!(read_error(br#"{"type":"message"}"#), None);
}

#[test]
fn error_bodies_have_the_documented_shape() {
    assert_eq!(
        String::from_utf8(error_body("max_tokens: required", "invalid_request_error")).unwrap(),
        r#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: required"}}"#
    );
}
