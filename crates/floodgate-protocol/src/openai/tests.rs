//! Tests of the OpenAI format, on payloads shaped like OpenAI's API reference.

use bytes::Bytes;
use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::canonical::*;
use crate::error::*;
use crate::sse::{SseEvent, SseParser};

fn parse(body: &Value) -> ChatRequest {
    parse_chat_request(body.to_string().as_bytes()).unwrap()
}

fn parse_err(body: &str) -> RequestError {
    parse_chat_request(body.as_bytes()).unwrap_err()
}

fn as_json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

fn object(value: &Value) -> serde_json::Map<String, Value> {
    value.as_object().unwrap().clone()
}

fn text(text: &str) -> Part {
    Part::Text { text: text.into() }
}

fn message(role: Role, content: Vec<Part>) -> Message {
    Message { role, content, name: None }
}

fn weather_tool_json() -> Value {
    json!({
        "type": "function",
        "function": {
            "name": "get_current_weather",
            "description": "Get the current weather in a given location",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}
                },
                "required": ["location"]
            }
        }
    })
}

// ---------------------------------------------------------------- requests

#[test]
fn parses_a_documented_conversation_with_tool_calls() {
    let body = json!({
        "model": "gpt-4o",
        "messages": [
            {"role": "developer", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What's the weather like in Boston today?", "name": "alice"},
            {"role": "assistant", "content": null, "tool_calls": [{
                "id": "call_abc123",
                "type": "function",
                "function": {"name": "get_current_weather", "arguments": "{\"location\":\"Boston, MA\"}"}
            }]},
            {"role": "tool", "tool_call_id": "call_abc123", "content": "{\"temperature\":22,\"unit\":\"celsius\"}"},
            {"role": "assistant", "content": "It is 22°C in Boston.", "refusal": null}
        ],
        "tools": [weather_tool_json()],
        "tool_choice": "auto",
        "parallel_tool_calls": false,
        "max_completion_tokens": 256,
        "max_tokens": 100,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": "END",
        "stream": true,
        "stream_options": {"include_usage": true},
        "user": "user-1234",
        "seed": 7,
        "n": 1
    });
    let req = parse(&body);
    let expected = ChatRequest {
        model: "gpt-4o".into(),
        messages: vec![
            Message::text(Role::System, "You are a helpful assistant."),
            Message {
                name: Some("alice".into()),
                ..Message::text(Role::User, "What's the weather like in Boston today?")
            },
            message(
                Role::Assistant,
                vec![Part::ToolCall {
                    id: "call_abc123".into(),
                    name: "get_current_weather".into(),
                    arguments: "{\"location\":\"Boston, MA\"}".into(),
                }],
            ),
            message(
                Role::Tool,
                vec![Part::ToolResult {
                    tool_call_id: "call_abc123".into(),
                    content: vec![text("{\"temperature\":22,\"unit\":\"celsius\"}")],
                    is_error: false,
                }],
            ),
            Message::text(Role::Assistant, "It is 22°C in Boston."),
        ],
        tools: vec![Tool {
            name: "get_current_weather".into(),
            description: Some("Get the current weather in a given location".into()),
            parameters: weather_tool_json()["function"]["parameters"].clone(),
            strict: None,
        }],
        tool_choice: Some(ToolChoice::Auto),
        parallel_tool_calls: Some(false),
        max_tokens: Some(256),
        temperature: Some(0.2),
        top_p: Some(0.9),
        top_k: None,
        stop: vec!["END".into()],
        stream: true,
        include_usage: true,
        response_format: None,
        user: Some("user-1234".into()),
        native: Some(NativeBody { format: Format::OpenAi, body: object(&body) }),
    };
    assert_eq!(req, expected);
}

#[test]
fn assistant_content_is_text_then_tool_calls() {
    let req = parse(&json!({
        "model": "m",
        "messages": [{"role": "assistant", "content": "Let me check.", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "a", "arguments": "{}"}},
            {"id": "call_2", "type": "function", "function": {"name": "b", "arguments": "{\"x\":1}"}},
            {"id": "call_3", "type": "custom", "custom": {"name": "grammar", "input": "x"}}
        ]}]
    }));
    assert_eq!(
        req.messages[0].content,
        vec![
            text("Let me check."),
            Part::ToolCall { id: "call_1".into(), name: "a".into(), arguments: "{}".into() },
            Part::ToolCall { id: "call_2".into(), name: "b".into(), arguments: "{\"x\":1}".into() },
        ]
    );
}

#[test]
fn multi_part_content_keeps_text_and_images_and_skips_the_rest() {
    let req = parse(&json!({
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind."}]},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in these images?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}},
                {"type": "image_url", "image_url": {"url": "https://upload.wikimedia.org/boardwalk.jpg"}},
                {"type": "image_url", "image_url": "https://example.com/legacy.png"},
                {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
                {"type": "file", "file": {"file_id": "file-abc"}},
                {"type": "text", "text": ""}
            ]}
        ]
    }));
    assert_eq!(
        req.messages,
        vec![
            message(Role::System, vec![text("Be brief."), text("Be kind.")]),
            message(
                Role::User,
                vec![
                    text("What is in these images?"),
                    Part::Image {
                        source: ImageSource::Base64 {
                            media_type: "image/png".into(),
                            data: "iVBORw0KGgo=".into()
                        }
                    },
                    Part::Image {
                        source: ImageSource::Url(
                            "https://upload.wikimedia.org/boardwalk.jpg".into()
                        )
                    },
                    Part::Image {
                        source: ImageSource::Url("https://example.com/legacy.png".into())
                    },
                ]
            ),
        ]
    );
}

#[test]
fn tool_result_parts_and_legacy_function_messages() {
    let req = parse(&json!({
        "model": "m",
        "messages": [
            {"role": "assistant", "content": null, "function_call": {"name": "lookup", "arguments": "{\"q\":\"x\"}"}},
            {"role": "function", "name": "lookup", "content": "found"},
            {"role": "tool", "tool_call_id": "call_9", "content": [{"type": "text", "text": "part one"}, {"type": "text", "text": "part two"}]}
        ]
    }));
    assert_eq!(
        req.messages,
        vec![
            message(
                Role::Assistant,
                vec![Part::ToolCall {
                    id: "lookup".into(),
                    name: "lookup".into(),
                    arguments: "{\"q\":\"x\"}".into()
                }]
            ),
            message(
                Role::Tool,
                vec![Part::ToolResult {
                    tool_call_id: "lookup".into(),
                    content: vec![text("found")],
                    is_error: false
                }]
            ),
            message(
                Role::Tool,
                vec![Part::ToolResult {
                    tool_call_id: "call_9".into(),
                    content: vec![text("part one"), text("part two")],
                    is_error: false
                }]
            ),
        ]
    );
}

#[test]
fn tool_choice_forms() {
    let cases = [
        (json!("auto"), Some(ToolChoice::Auto)),
        (json!("none"), Some(ToolChoice::None)),
        (json!("required"), Some(ToolChoice::Required)),
        (
            json!({"type": "function", "function": {"name": "get_current_weather"}}),
            Some(ToolChoice::Tool("get_current_weather".into())),
        ),
        (json!({"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": []}}), None),
    ];
    for (choice, expected) in cases {
        let req = parse(&json!({
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [weather_tool_json()],
            "tool_choice": choice,
        }));
        assert_eq!(req.tool_choice, expected, "tool_choice {choice}");
    }
}

#[test]
fn tools_default_parameters_skip_custom_tools_and_read_legacy_functions() {
    let req = parse(&json!({
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [
            {"type": "function", "function": {"name": "now", "strict": true}},
            {"type": "custom", "custom": {"name": "sql", "format": {"type": "text"}}}
        ],
        "functions": [{"name": "legacy", "description": "old style", "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}}}],
        "function_call": {"name": "legacy"}
    }));
    assert_eq!(
        req.tools,
        vec![
            Tool {
                name: "now".into(),
                description: None,
                parameters: json!({"type": "object", "properties": {}}),
                strict: Some(true),
            },
            Tool {
                name: "legacy".into(),
                description: Some("old style".into()),
                parameters: json!({"type": "object", "properties": {"a": {"type": "integer"}}}),
                strict: None,
            },
        ]
    );
    assert_eq!(req.tool_choice, Some(ToolChoice::Tool("legacy".into())));
}

#[test]
fn response_formats_and_top_k() {
    let with_format = |format: Value| {
        parse(&json!({
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "response_format": format,
            "top_k": 40,
        }))
    };
    let req = with_format(json!({
        "type": "json_schema",
        "json_schema": {
            "name": "math_reasoning",
            "schema": {"type": "object", "properties": {"final_answer": {"type": "string"}}, "required": ["final_answer"], "additionalProperties": false},
            "strict": true
        }
    }));
    assert_eq!(
        req.response_format,
        Some(ResponseFormat::JsonSchema {
            name: "math_reasoning".into(),
            schema: json!({"type": "object", "properties": {"final_answer": {"type": "string"}}, "required": ["final_answer"], "additionalProperties": false}),
            strict: Some(true),
        })
    );
    assert_eq!(req.top_k, Some(40));
    assert_eq!(
        with_format(json!({"type": "json_object"})).response_format,
        Some(ResponseFormat::JsonObject)
    );
    assert_eq!(with_format(json!({"type": "text"})).response_format, Some(ResponseFormat::Text));
}

#[test]
fn top_k_of_another_type_is_ignored_and_max_tokens_is_the_fallback() {
    let req = parse(&json!({
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "top_k": "many",
        "max_tokens": 12
    }));
    assert_eq!(req.top_k, None);
    assert_eq!(req.max_tokens, Some(12));
    assert!(!req.stream);
    assert!(!req.include_usage);
}

#[test]
fn every_bad_request_names_its_field() {
    let cases: &[(&str, Option<&str>, &str)] = &[
        (r#"[1, 2]"#, None, "the body must be a JSON object, not an array"),
        (
            r#"{"messages": [{"role": "user", "content": "hi"}]}"#,
            Some("model"),
            "model: is required: the name of the model to use",
        ),
        (
            r#"{"model": "", "messages": [{"role": "user", "content": "hi"}]}"#,
            Some("model"),
            "model: must not be empty",
        ),
        (
            r#"{"model": 3, "messages": []}"#,
            Some("model"),
            "model: invalid type: integer `3`, expected a string",
        ),
        (
            r#"{"model": "m"}"#,
            Some("messages"),
            "messages: is required: a non-empty array of messages",
        ),
        (
            r#"{"model": "m", "messages": []}"#,
            Some("messages"),
            "messages: must not be empty: send at least one message",
        ),
        (
            r#"{"model": "m", "messages": "hi"}"#,
            Some("messages"),
            "messages: invalid type: string \"hi\", expected an array of message objects",
        ),
        (
            r#"{"model": "m", "messages": ["hi"]}"#,
            Some("messages[0]"),
            "messages[0]: invalid type: string \"hi\", expected a message object with a `role`",
        ),
        (
            r#"{"model": "m", "messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": 3}]}"#,
            Some("messages[1].content"),
            "messages[1].content: invalid type: integer `3`, expected a string or an array of content parts",
        ),
        (
            r#"{"model": "m", "messages": [{"role": "robot", "content": "beep"}]}"#,
            Some("messages[0].role"),
            "messages[0].role: unknown role `robot`; valid roles are system, developer, user, assistant, tool and function",
        ),
        (
            r#"{"model": "m", "messages": [{"content": "hi"}]}"#,
            Some("messages[0].role"),
            "messages[0].role: is required; valid roles are system, developer, user, assistant, tool and function",
        ),
        (
            r#"{"model": "m", "messages": [{"role": "user"}]}"#,
            Some("messages[0].content"),
            "messages[0].content: is required: a string or an array of content parts",
        ),
        (
            r#"{"model": "m", "messages": [{"role": "tool", "content": "42"}]}"#,
            Some("messages[0].tool_call_id"),
            "messages[0].tool_call_id: is required for a tool message: the id of the tool call it answers",
        ),
        (
            r#"{"model": "m", "messages": [{"role": "user", "content": [{"type": "text"}]}]}"#,
            Some("messages[0].content[0].text"),
            "messages[0].content[0].text: is required for a text part: a string",
        ),
        (
            r#"{"model": "m", "messages": [{"role": "user", "content": [{"text": "hi"}]}]}"#,
            Some("messages[0].content[0].type"),
            "messages[0].content[0].type: is required: a content part needs a `type` such as \"text\" or \"image_url\"",
        ),
        (
            r#"{"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"detail": "low"}}]}]}"#,
            Some("messages[0].content[0].image_url.url"),
            "messages[0].content[0].image_url.url: is required for an image_url part: an http(s) or data: URL",
        ),
        (
            r#"{"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f"}}]}]}"#,
            Some("messages[0].tool_calls[0].id"),
            "messages[0].tool_calls[0].id: is required: the id the tool's result will answer",
        ),
        (
            r#"{"model": "m", "messages": [{"role": "user", "content": "hi"}], "tool_choice": "sometimes"}"#,
            Some("tool_choice"),
            "tool_choice: unknown value `sometimes`; valid values are \"auto\", \"none\", \"required\" or {\"type\": \"function\", \"function\": {\"name\": …}}",
        ),
        (
            r#"{"model": "m", "messages": [{"role": "user", "content": "hi"}], "tool_choice": 1}"#,
            Some("tool_choice"),
            "tool_choice: invalid type: integer `1`, expected \"auto\", \"none\", \"required\" or an object naming a function",
        ),
        (
            r#"{"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function", "function": {"description": "nameless"}}]}"#,
            Some("tools[0].function.name"),
            "tools[0].function.name: is required: a non-empty function name",
        ),
        (
            r#"{"model": "m", "messages": [{"role": "user", "content": "hi"}], "stop": 5}"#,
            Some("stop"),
            "stop: invalid type: integer `5`, expected a string or an array of strings",
        ),
        (
            r#"{"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": -1}"#,
            Some("max_tokens"),
            "max_tokens: invalid value: integer `-1`, expected u32",
        ),
        (
            r#"{"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": "yes"}"#,
            Some("stream"),
            "stream: invalid type: string \"yes\", expected a boolean",
        ),
        (
            r#"{"model": "m", "messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "xml"}}"#,
            Some("response_format.type"),
            "response_format.type: unknown type `xml`; valid types are text, json_object and json_schema",
        ),
        (
            r#"{"model": "m", "messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_schema", "json_schema": {"schema": {}}}}"#,
            Some("response_format.json_schema.name"),
            "response_format.json_schema.name: is required: a name for the schema",
        ),
    ];
    for (body, param, message) in cases {
        let err = parse_err(body);
        assert_eq!(err.param.as_deref(), *param, "param for {body}");
        assert_eq!(err.message, *message, "message for {body}");
    }
}

#[test]
fn invalid_json_is_reported_with_its_position() {
    let err = parse_err("{\"model\": \"gpt-4o\",\n \"messages\": [");
    assert_eq!(err.param, None);
    assert_eq!(
        err.message,
        "the body is not valid JSON: EOF while parsing a list at line 2 column 14"
    );
    let err = parse_err("");
    assert_eq!(
        err.message,
        "the body is not valid JSON: EOF while parsing a value at line 1 column 0"
    );
}

#[test]
fn native_pass_through_keeps_every_field_known_or_not() {
    let body = json!({
        "model": "chat",
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "Describe this.", "cache_control": {"type": "ephemeral"}},
                {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}
            ]},
            {"role": "assistant", "content": null, "audio": {"id": "audio_abc"}}
        ],
        "store": true,
        "metadata": {"team": "search"},
        "logit_bias": {"50256": -100},
        "modalities": ["text", "audio"],
        "x_vendor_extension": {"nested": [1, {"deep": null}]}
    });
    let req = parse(&body);
    let written =
        as_json(&write_chat_request(&req, "gpt-4o-audio-preview", Dialect::OpenAi).unwrap());
    let mut expected = body.clone();
    expected["model"] = json!("gpt-4o-audio-preview");
    expected["stream"] = json!(false);
    assert_eq!(written, expected);
}

#[test]
fn native_stream_options_are_merged_with_include_usage() {
    let mut req = parse(&json!({
        "model": "chat",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": true,
        "stream_options": {"include_obfuscation": false}
    }));
    let written = as_json(&write_chat_request(&req, "gpt-4o", Dialect::OpenAi).unwrap());
    assert_eq!(
        written,
        json!({
            "model": "gpt-4o",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": true,
            "stream_options": {"include_obfuscation": false, "include_usage": true}
        })
    );

    // The client asked no usage and did not stream, but the gateway streams.
    req = parse(&json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}]}));
    req.stream = true;
    let written = as_json(&write_chat_request(&req, "gpt-4o", Dialect::Compatible).unwrap());
    assert_eq!(written["stream"], json!(true));
    assert_eq!(written["stream_options"], json!({"include_usage": true}));

    // And the other way round: OpenAI refuses stream_options without stream.
    req = parse(&json!({
        "model": "chat",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": true,
        "stream_options": {"include_usage": true}
    }));
    req.stream = false;
    let written = as_json(&write_chat_request(&req, "gpt-4o", Dialect::OpenAi).unwrap());
    assert_eq!(
        written,
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "stream": false})
    );
}

/// A canonical request as another client format (Anthropic) would produce it.
fn translated_request() -> ChatRequest {
    ChatRequest {
        model: "chat".into(),
        messages: vec![
            Message::text(Role::System, "You are terse."),
            message(
                Role::User,
                vec![
                    text("What is in this image, and what is the weather there?"),
                    Part::Image {
                        source: ImageSource::Base64 {
                            media_type: "image/jpeg".into(),
                            data: "/9j/4AAQSkZJRg==".into(),
                        },
                    },
                ],
            ),
            message(
                Role::Assistant,
                vec![
                    Part::Thinking {
                        text: "The user wants the weather.".into(),
                        signature: Some("EqQBCgIYAhIM".into()),
                    },
                    text("A boardwalk. Checking the weather."),
                    Part::ToolCall {
                        id: "toolu_01A09q90qw90lq917835lq9".into(),
                        name: "get_current_weather".into(),
                        arguments: "{\"location\":\"San Francisco, CA\"}".into(),
                    },
                ],
            ),
            message(
                Role::Tool,
                vec![Part::ToolResult {
                    tool_call_id: "toolu_01A09q90qw90lq917835lq9".into(),
                    content: vec![text("15 degrees")],
                    is_error: false,
                }],
            ),
            message(
                Role::Tool,
                vec![Part::ToolResult {
                    tool_call_id: "toolu_02".into(),
                    content: vec![text("error: "), text("timeout")],
                    is_error: true,
                }],
            ),
        ],
        tools: vec![Tool {
            name: "get_current_weather".into(),
            description: Some("Get the current weather in a given location".into()),
            parameters: json!({"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}),
            strict: None,
        }],
        tool_choice: Some(ToolChoice::Tool("get_current_weather".into())),
        parallel_tool_calls: Some(false),
        max_tokens: Some(1024),
        temperature: Some(0.5),
        top_p: None,
        top_k: Some(5),
        stop: vec!["\n\nHuman:".into()],
        stream: true,
        include_usage: false,
        response_format: Some(ResponseFormat::JsonSchema {
            name: "answer".into(),
            schema: json!({"type": "object"}),
            strict: Some(true),
        }),
        user: Some("user-42".into()),
        native: None,
    }
}

#[test]
fn builds_a_request_from_canonical_fields() {
    let req = translated_request();
    let openai = as_json(&write_chat_request(&req, "gpt-4o", Dialect::OpenAi).unwrap());
    insta::assert_json_snapshot!("built_request_openai", openai);
    let compatible =
        as_json(&write_chat_request(&req, "llama-3.1-8b", Dialect::Compatible).unwrap());
    // The dialects differ in the token limit's name and in `top_k` only.
    let mut expected = openai.clone();
    let fields = expected.as_object_mut().unwrap();
    fields.remove("max_completion_tokens");
    fields.insert("max_tokens".into(), json!(1024));
    fields.insert("top_k".into(), json!(5));
    fields.insert("model".into(), json!("llama-3.1-8b"));
    assert_eq!(compatible, expected);
}

#[test]
fn tool_choice_and_parallel_calls_need_tools() {
    let req = ChatRequest {
        model: "m".into(),
        messages: vec![Message::text(Role::User, "hi")],
        tool_choice: Some(ToolChoice::Required),
        parallel_tool_calls: Some(true),
        ..ChatRequest::default()
    };
    let written = as_json(&write_chat_request(&req, "gpt-4o", Dialect::OpenAi).unwrap());
    assert_eq!(
        written,
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "stream": false})
    );
}

#[test]
fn what_openai_cannot_carry_is_refused() {
    let image = Part::Image { source: ImageSource::Url("https://example.com/chart.png".into()) };
    let with_messages =
        |messages| ChatRequest { model: "m".into(), messages, ..ChatRequest::default() };
    let tool_image = with_messages(vec![message(
        Role::Tool,
        vec![Part::ToolResult {
            tool_call_id: "call_1".into(),
            content: vec![text("see chart"), image.clone()],
            is_error: false,
        }],
    )]);
    assert_eq!(
        write_chat_request(&tool_image, "gpt-4o", Dialect::OpenAi).unwrap_err(),
        TranslateError::new(
            "messages[0]: the result of tool call `call_1` holds an image, which OpenAI tool \
             messages cannot carry"
        )
    );
    let assistant_image = with_messages(vec![message(Role::Assistant, vec![image])]);
    assert_eq!(
        write_chat_request(&assistant_image, "gpt-4o", Dialect::OpenAi).unwrap_err(),
        TranslateError::new("messages[0]: OpenAI assistant messages cannot hold images")
    );
    let user_call = with_messages(vec![message(
        Role::User,
        vec![Part::ToolCall { id: "c".into(), name: "f".into(), arguments: "{}".into() }],
    )]);
    assert_eq!(
        write_chat_request(&user_call, "gpt-4o", Dialect::OpenAi).unwrap_err(),
        TranslateError::new("messages[0]: only assistant messages can hold tool calls")
    );
}

#[test]
fn tool_results_inside_a_user_message_come_first_as_tool_messages() {
    let req = ChatRequest {
        model: "m".into(),
        messages: vec![message(
            Role::User,
            vec![
                text("Also, thanks."),
                Part::ToolResult {
                    tool_call_id: "call_1".into(),
                    content: vec![],
                    is_error: false,
                },
            ],
        )],
        ..ChatRequest::default()
    };
    let written = as_json(&write_chat_request(&req, "gpt-4o", Dialect::OpenAi).unwrap());
    assert_eq!(
        written["messages"],
        json!([
            {"role": "tool", "content": "", "tool_call_id": "call_1"},
            {"role": "user", "content": "Also, thanks."}
        ])
    );
}

// --------------------------------------------------------------- responses

fn read(body: &Value) -> ChatResponse {
    let req = ChatRequest { model: "chat".into(), ..ChatRequest::default() };
    read_chat_response(&req, Bytes::from(body.to_string())).unwrap()
}

#[test]
fn reads_a_documented_text_completion() {
    let body = json!({
        "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
        "object": "chat.completion",
        "created": 1741569952,
        "model": "gpt-4.1-2025-04-14",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": "Hello! How can I assist you today?", "refusal": null, "annotations": []},
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": {
            "prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
        },
        "service_tier": "default"
    });
    let resp = read(&body);
    assert_eq!(
        resp,
        ChatResponse {
            id: "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT".into(),
            model: "gpt-4.1-2025-04-14".into(),
            created: 1741569952,
            choices: vec![Choice {
                index: 0,
                message: Message::text(Role::Assistant, "Hello! How can I assist you today?"),
                finish_reason: Some(FinishReason::Stop),
            }],
            usage: Usage { input_tokens: 19, output_tokens: 10, ..Usage::default() },
            native: Some(NativeResponse {
                format: Format::OpenAi,
                body: Bytes::from(body.to_string()),
            }),
        }
    );
    // Replayed to an OpenAI client byte for byte.
    assert_eq!(write_chat_response(&resp), body.to_string().into_bytes());
}

#[test]
fn reads_tool_calls_and_cached_tokens() {
    let resp = read(&json!({
        "id": "chatcmpl-abc123",
        "object": "chat.completion",
        "created": 1699896916,
        "model": "gpt-4o-mini",
        "choices": [{
            "index": 0,
            "message": {
                "role": "assistant",
                "content": null,
                "tool_calls": [
                    {"id": "call_abc123", "type": "function", "function": {"name": "get_current_weather", "arguments": "{\n\"location\": \"Boston, MA\"\n}"}},
                    {"id": "call_def456", "type": "function", "function": {"name": "get_current_weather", "arguments": "{\"location\": \"Paris\"}"}}
                ]
            },
            "logprobs": null,
            "finish_reason": "tool_calls"
        }],
        "usage": {
            "prompt_tokens": 2006, "completion_tokens": 17, "total_tokens": 2023,
            "prompt_tokens_details": {"cached_tokens": 1920},
            "completion_tokens_details": {"reasoning_tokens": 0}
        }
    }));
    assert_eq!(
        resp.choices,
        vec![Choice {
            index: 0,
            message: message(
                Role::Assistant,
                vec![
                    Part::ToolCall {
                        id: "call_abc123".into(),
                        name: "get_current_weather".into(),
                        arguments: "{\n\"location\": \"Boston, MA\"\n}".into()
                    },
                    Part::ToolCall {
                        id: "call_def456".into(),
                        name: "get_current_weather".into(),
                        arguments: "{\"location\": \"Paris\"}".into()
                    },
                ]
            ),
            finish_reason: Some(FinishReason::ToolCalls),
        }]
    );
    assert_eq!(
        resp.usage,
        Usage {
            input_tokens: 2006,
            output_tokens: 17,
            cache_read_tokens: 1920,
            cache_creation_tokens: 0,
            reasoning_tokens: 0,
        }
    );
}

#[test]
fn reads_reasoning_content_as_thinking() {
    let resp = read(&json!({
        "id": "930c60df-bf64-41c9-a88e-3ec75f81e00e",
        "object": "chat.completion",
        "created": 1737600000,
        "model": "deepseek-reasoner",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "reasoning_content": "9.11 < 9.8 because 0.11 < 0.8.", "content": "9.8 is greater."},
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": {
            "prompt_tokens": 18, "completion_tokens": 120, "total_tokens": 138,
            "prompt_cache_hit_tokens": 0, "prompt_cache_miss_tokens": 18,
            "completion_tokens_details": {"reasoning_tokens": 100}
        }
    }));
    assert_eq!(
        resp.choices[0].message.content,
        vec![
            Part::Thinking { text: "9.11 < 9.8 because 0.11 < 0.8.".into(), signature: None },
            text("9.8 is greater."),
        ]
    );
    assert_eq!(resp.usage.reasoning_tokens, 100);
    assert_eq!(resp.usage.output_tokens, 120);
}

#[test]
fn odd_optional_fields_of_compatible_servers_do_not_fail() {
    let resp = read(&json!({
        "created": 1737600000.0,
        "choices": [{
            "message": {"role": "assistant", "content": [{"type": "text", "text": "Hi"}], "tool_calls": [
                {"function": {"name": "f", "arguments": {"a": 1}}}
            ]},
            "finish_reason": "eos"
        }],
        "usage": {"prompt_tokens": 3, "completion_tokens": null, "prompt_tokens_details": null}
    }));
    assert_eq!(
        resp,
        ChatResponse {
            id: String::new(),
            model: "chat".into(),
            created: 1737600000,
            choices: vec![Choice {
                index: 0,
                message: message(
                    Role::Assistant,
                    vec![
                        text("Hi"),
                        Part::ToolCall {
                            id: "call_0".into(),
                            name: "f".into(),
                            arguments: "{\"a\":1}".into()
                        }
                    ]
                ),
                finish_reason: Some(FinishReason::Other("eos".into())),
            }],
            usage: Usage { input_tokens: 3, ..Usage::default() },
            native: resp.native.clone(),
        }
    );
    let empty_usage = read(&json!({"choices": [], "usage": null}));
    assert_eq!(empty_usage.usage, Usage::default());
}

#[test]
fn missing_essentials_fail_decoding() {
    let req = ChatRequest::default();
    let decode = |body: &str| read_chat_response(&req, Bytes::from(body.to_owned())).unwrap_err();
    assert_eq!(
        decode(r#"{"error": {"message": "The server had an error", "type": "server_error"}}"#),
        DecodeError::new("the upstream answered with an error: The server had an error")
    );
    assert_eq!(
        decode(r#"{"id": "x"}"#),
        DecodeError::new("an OpenAI chat completion has no `choices`")
    );
    assert_eq!(
        decode(r#"{"choices": [{"index": 0, "finish_reason": "stop"}]}"#),
        DecodeError::new("choices[0] has no `message`")
    );
    assert_eq!(
        decode(r#"{"choices": [{"message": {"tool_calls": [{"id": "c", "function": {}}]}}]}"#),
        DecodeError::new("choices[0].message.tool_calls[0].function.name is missing")
    );
    assert!(decode("not json").message.starts_with("an OpenAI chat completion could not be read"));
}

#[test]
fn builds_a_completion_from_a_translated_answer() {
    let resp = ChatResponse {
        id: "msg_013Zva2CMHLNnXjNJJKqJ2EF".into(),
        model: "claude-sonnet-4-20250514".into(),
        created: 1700000000,
        choices: vec![Choice {
            index: 0,
            message: message(
                Role::Assistant,
                vec![
                    Part::Thinking {
                        text: "Need the weather.".into(),
                        signature: Some("sig".into()),
                    },
                    text("Let me check "),
                    text("the weather."),
                    Part::ToolCall {
                        id: "toolu_01".into(),
                        name: "get_current_weather".into(),
                        arguments: "{\"location\":\"Paris\"}".into(),
                    },
                ],
            ),
            finish_reason: Some(FinishReason::ToolCalls),
        }],
        usage: Usage {
            input_tokens: 2095,
            output_tokens: 503,
            cache_read_tokens: 2048,
            cache_creation_tokens: 0,
            reasoning_tokens: 0,
        },
        native: Some(NativeResponse { format: Format::Anthropic, body: Bytes::from_static(b"{}") }),
    };
    insta::assert_json_snapshot!("built_completion", as_json(&write_chat_response(&resp)));
}

#[test]
fn finish_reasons_in_openai_words() {
    let cases = [
        (FinishReason::Stop, "stop"),
        (FinishReason::StopSequence(Some("END".into())), "stop"),
        (FinishReason::Length, "length"),
        (FinishReason::ToolCalls, "tool_calls"),
        (FinishReason::ContentFilter, "content_filter"),
        (FinishReason::Other("pause_turn".into()), "stop"),
    ];
    for (reason, expected) in cases {
        let resp = ChatResponse {
            id: "id".into(),
            model: "m".into(),
            created: 0,
            choices: vec![Choice {
                index: 0,
                message: message(Role::Assistant, vec![]),
                finish_reason: Some(reason),
            }],
            usage: Usage::default(),
            native: None,
        };
        let written = as_json(&write_chat_response(&resp));
        assert_eq!(written["choices"][0]["finish_reason"], json!(expected));
        assert_eq!(written["choices"][0]["message"]["content"], Value::Null);
    }
}

// ----------------------------------------------------------------- streams

/// A documented streamed answer: a role chunk, content, a tool call whose id,
/// name and arguments arrive over several chunks, the finish, the usage chunk
/// (`stream_options.include_usage`) and `[DONE]`.
const TOOL_STREAM: &[&str] = &[
    r#"{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}"#,
    r#"{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,"delta":{"content":"Checking."},"logprobs":null,"finish_reason":null}],"usage":null}"#,
    r#"{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_DdmO9pD3xa9XTPNJ32zg2hcA","type":"function","function":{"name":"get_current_weather","arguments":""}}]},"logprobs":null,"finish_reason":null}],"usage":null}"#,
    r#"{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"lo"}}]},"logprobs":null,"finish_reason":null}],"usage":null}"#,
    r#"{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"cation\": \"Boston\"}"}}]},"logprobs":null,"finish_reason":null}],"usage":null}"#,
    r#"{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"tool_calls"}],"usage":null}"#,
    r#"{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[],"usage":{"prompt_tokens":82,"completion_tokens":18,"total_tokens":100,"prompt_tokens_details":{"cached_tokens":64,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}"#,
    "[DONE]",
];

fn sse(data: &str) -> SseEvent {
    SseEvent { event: None, data: data.into(), id: None }
}

fn read_stream(reader: &mut StreamReader, datas: &[&str]) -> Vec<StreamChunk> {
    datas.iter().map(|d| reader.read(&sse(d)).unwrap()).collect()
}

fn delta(delta: Delta) -> StreamEvent {
    StreamEvent::Delta { choice: 0, delta }
}

fn openai_client(include_usage: bool) -> ChatRequest {
    let mut req = parse(&json!({
        "model": "chat",
        "messages": [{"role": "user", "content": "Weather in Boston?"}],
        "stream": true,
        "stream_options": {"include_usage": include_usage}
    }));
    req.include_usage = include_usage;
    req
}

#[test]
fn reads_a_documented_tool_call_stream() {
    let mut reader = StreamReader::new(&openai_client(true));
    let chunks = read_stream(&mut reader, TOOL_STREAM);
    let events: Vec<Vec<StreamEvent>> = chunks.iter().map(|c| c.events.clone()).collect();
    assert_eq!(
        events,
        vec![
            vec![StreamEvent::Start {
                id: "chatcmpl-123".into(),
                model: "gpt-4o-mini".into(),
                created: 1694268190
            }],
            vec![delta(Delta::Text("Checking.".into()))],
            vec![delta(Delta::ToolCallStart {
                index: 0,
                id: "call_DdmO9pD3xa9XTPNJ32zg2hcA".into(),
                name: "get_current_weather".into()
            })],
            vec![delta(Delta::ToolCallArguments { index: 0, fragment: "{\"lo".into() })],
            vec![delta(Delta::ToolCallArguments {
                index: 0,
                fragment: "cation\": \"Boston\"}".into()
            })],
            vec![StreamEvent::Finish { choice: 0, reason: FinishReason::ToolCalls }],
            vec![StreamEvent::Usage(Usage {
                input_tokens: 82,
                output_tokens: 18,
                cache_read_tokens: 64,
                cache_creation_tokens: 0,
                reasoning_tokens: 0
            })],
            vec![],
        ]
    );
    assert!(chunks.iter().take(7).all(|c| !c.done));
    assert!(chunks[7].done);
    for (chunk, data) in chunks.iter().zip(TOOL_STREAM) {
        assert_eq!(
            chunk.native,
            Some(NativeEvent { format: Format::OpenAi, event: None, data: (*data).into() })
        );
    }
}

#[test]
fn reads_reasoning_deltas_and_servers_that_omit_tool_call_indexes() {
    let mut reader =
        StreamReader::new(&ChatRequest { model: "fallback".into(), ..ChatRequest::default() });
    let chunks = read_stream(
        &mut reader,
        &[
            // Azure's content-filter preamble: no choice, no id, no model.
            r#"{"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":[{"prompt_index":0,"content_filter_results":{}}]}"#,
            r#"{"id":"gen-1","created":5,"choices":[{"index":0,"delta":{"role":"assistant","reasoning_content":"Hmm."}}]}"#,
            r#"{"id":"gen-1","choices":[{"index":0,"delta":{"reasoning":"More."}}]}"#,
            r#"{"id":"gen-1","choices":[{"delta":{"tool_calls":[{"id":"a","function":{"name":"f","arguments":"{}"}},{"id":"b","function":{"name":"g","arguments":"{\"x\""}}]}}]}"#,
            r#"{"id":"gen-1","choices":[{"delta":{"tool_calls":[{"index":1,"id":"b","function":{"arguments":":1}"}}]}}]}"#,
            r#"{"id":"gen-1","choices":[{"delta":{"content":null},"finish_reason":"function_call"}]}"#,
        ],
    );
    let events: Vec<StreamEvent> = chunks.into_iter().flat_map(|c| c.events).collect();
    assert_eq!(
        events,
        vec![
            StreamEvent::Start { id: "gen-1".into(), model: "fallback".into(), created: 5 },
            delta(Delta::Thinking("Hmm.".into())),
            delta(Delta::Thinking("More.".into())),
            delta(Delta::ToolCallStart { index: 0, id: "a".into(), name: "f".into() }),
            delta(Delta::ToolCallArguments { index: 0, fragment: "{}".into() }),
            delta(Delta::ToolCallStart { index: 1, id: "b".into(), name: "g".into() }),
            delta(Delta::ToolCallArguments { index: 1, fragment: "{\"x\"".into() }),
            // The repeated id of call 1 does not start it again.
            delta(Delta::ToolCallArguments { index: 1, fragment: ":1}".into() }),
            StreamEvent::Finish { choice: 0, reason: FinishReason::ToolCalls },
        ]
    );
}

#[test]
fn stream_errors_and_undecodable_chunks() {
    let mut reader = StreamReader::new(&ChatRequest::default());
    let err = reader
        .read(&sse(
            r#"{"error":{"message":"The server had an error while processing your request.","type":"server_error","param":null,"code":"internal_error"}}"#,
        ))
        .unwrap_err();
    assert_eq!(
        err,
        StreamError::Upstream(UpstreamErrorBody {
            message: "The server had an error while processing your request.".into(),
            kind: Some("server_error".into()),
            code: Some("internal_error".into()),
        })
    );
    let err = reader.read(&sse("{\"choices\": [")).unwrap_err();
    assert!(
        matches!(&err, StreamError::Decode(e) if e.message.starts_with("an OpenAI stream chunk could not be read: EOF")),
        "{err:?}"
    );
    assert!(matches!(reader.read(&sse("42")), Err(StreamError::Decode(_))));
    assert_eq!(reader.read(&sse("  ")).unwrap(), StreamChunk::default());
}

/// Passes an upstream transcript through reader and writer, as the gateway does.
fn relay(req: &ChatRequest, datas: &[&str]) -> String {
    let mut reader = StreamReader::new(req);
    let mut writer = StreamWriter::new(req);
    let mut out = Vec::new();
    for chunk in read_stream(&mut reader, datas) {
        writer.write(&chunk, &mut out);
    }
    writer.finish(&mut out);
    String::from_utf8(out).unwrap()
}

fn sse_text(datas: &[&str]) -> String {
    datas.iter().map(|d| format!("data: {d}\n\n")).collect()
}

#[test]
fn pass_through_replays_upstream_events_verbatim() {
    assert_eq!(relay(&openai_client(true), TOOL_STREAM), sse_text(TOOL_STREAM));
}

#[test]
fn pass_through_drops_the_usage_chunk_the_client_did_not_ask_for() {
    let without_usage: Vec<&str> =
        TOOL_STREAM.iter().copied().filter(|d| !d.contains("\"choices\":[]")).collect();
    assert_eq!(without_usage.len(), TOOL_STREAM.len() - 1);
    assert_eq!(relay(&openai_client(false), TOOL_STREAM), sse_text(&without_usage));
}

#[test]
fn pass_through_adds_usage_the_upstream_did_not_send() {
    let req = openai_client(true);
    let upstream = [
        r#"{"id":"c1","object":"chat.completion.chunk","created":7,"model":"llama","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#,
        "[DONE]",
    ];
    // vLLM's continuous usage rides on a content chunk: that counts as sent.
    assert_eq!(relay(&req, &upstream), sse_text(&upstream));
    // Without usage at all, the writer closes with what it knows.
    let upstream = [
        r#"{"id":"c1","object":"chat.completion.chunk","created":7,"model":"llama","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":"stop"}]}"#,
        "[DONE]",
    ];
    assert_eq!(
        relay(&req, &upstream),
        sse_text(&[
            upstream[0],
            r#"{"id":"c1","object":"chat.completion.chunk","created":7,"model":"llama","choices":[],"usage":{"prompt_tokens":0,"completion_tokens":0,"total_tokens":0,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}}"#,
            "[DONE]",
        ])
    );
}

/// Canonical events as an Anthropic upstream's reader would produce them.
fn translated_events() -> Vec<StreamChunk> {
    let chunk = |events| StreamChunk {
        events,
        native: Some(NativeEvent {
            format: Format::Anthropic,
            event: Some("content_block_delta".into()),
            data: "{}".into(),
        }),
        done: false,
    };
    vec![
        chunk(vec![
            StreamEvent::Start {
                id: "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY".into(),
                model: "claude-sonnet-4-20250514".into(),
                created: 1700000000,
            },
            StreamEvent::Usage(Usage { input_tokens: 472, output_tokens: 2, ..Usage::default() }),
        ]),
        chunk(vec![delta(Delta::Thinking("Let me think.".into()))]),
        chunk(vec![delta(Delta::ThinkingSignature("EqQBCgIYAhIM".into()))]),
        chunk(vec![delta(Delta::Text("Okay, ".into()))]),
        chunk(vec![delta(Delta::Text(String::new()))]),
        chunk(vec![delta(Delta::Text("checking.".into()))]),
        chunk(vec![delta(Delta::ToolCallStart {
            index: 0,
            id: "toolu_01T1x1fJ34qAmk2tNTrN7Up6".into(),
            name: "get_weather".into(),
        })]),
        chunk(vec![delta(Delta::ToolCallArguments {
            index: 0,
            fragment: "{\"location\": \"San Fra".into(),
        })]),
        chunk(vec![delta(Delta::ToolCallArguments { index: 0, fragment: "ncisco, CA\"}".into() })]),
        chunk(vec![
            StreamEvent::Finish { choice: 0, reason: FinishReason::ToolCalls },
            StreamEvent::Usage(Usage {
                input_tokens: 472,
                output_tokens: 89,
                cache_read_tokens: 400,
                ..Usage::default()
            }),
        ]),
    ]
}

fn write_all(req: &ChatRequest, chunks: &[StreamChunk]) -> String {
    let mut writer = StreamWriter::new(req);
    let mut out = Vec::new();
    for chunk in chunks {
        writer.write(chunk, &mut out);
    }
    writer.finish(&mut out);
    String::from_utf8(out).unwrap()
}

fn anthropic_client(include_usage: bool) -> ChatRequest {
    ChatRequest {
        model: "chat".into(),
        stream: true,
        include_usage,
        native: Some(NativeBody { format: Format::Anthropic, body: serde_json::Map::new() }),
        ..ChatRequest::default()
    }
}

#[test]
fn writes_canonical_events_as_chunks() {
    let with_usage = write_all(&anthropic_client(true), &translated_events());
    insta::assert_snapshot!("written_stream_with_usage", with_usage);
    let without_usage = write_all(&anthropic_client(false), &translated_events());
    insta::assert_snapshot!("written_stream_without_usage", without_usage);
}

#[test]
fn written_chunks_read_back_to_the_same_events() {
    let text = write_all(&anthropic_client(true), &translated_events());
    let mut parser = SseParser::default();
    parser.push(text.as_bytes()).unwrap();
    let mut reader = StreamReader::new(&ChatRequest::default());
    let mut events = Vec::new();
    while let Some(event) = parser.next_event() {
        events.extend(reader.read(&event).unwrap().events);
    }
    // Usage comes once, at the end; the signature has no OpenAI form.
    let mut expected: Vec<StreamEvent> = translated_events()
        .into_iter()
        .flat_map(|c| c.events)
        .filter(|e| {
            !matches!(
                e,
                StreamEvent::Usage(_)
                    | StreamEvent::Delta {
                        delta: Delta::ThinkingSignature(_) | Delta::Text(_),
                        ..
                    }
            )
        })
        .collect();
    expected.insert(2, delta(Delta::Text("Okay, ".into())));
    expected.insert(3, delta(Delta::Text("checking.".into())));
    expected.push(StreamEvent::Usage(Usage {
        input_tokens: 472,
        output_tokens: 89,
        cache_read_tokens: 400,
        ..Usage::default()
    }));
    assert_eq!(events, expected);
}

#[test]
fn finish_is_idempotent_and_ends_the_stream() {
    let req = anthropic_client(true);
    let mut writer = StreamWriter::new(&req);
    let mut out = Vec::new();
    writer.write(&translated_events()[0], &mut out);
    writer.finish(&mut out);
    let finished = out.clone();
    assert!(String::from_utf8(finished.clone()).unwrap().ends_with("data: [DONE]\n\n"));
    writer.finish(&mut out);
    writer.write(&translated_events()[3], &mut out);
    writer.write_error(&UpstreamErrorBody::default(), &mut out);
    assert_eq!(out, finished);
}

#[test]
fn a_done_chunk_from_any_upstream_finishes_the_stream() {
    let mut writer = StreamWriter::new(&anthropic_client(false));
    let mut out = Vec::new();
    let stop = StreamChunk {
        events: vec![],
        native: Some(NativeEvent {
            format: Format::Anthropic,
            event: Some("message_stop".into()),
            data: r#"{"type":"message_stop"}"#.into(),
        }),
        done: true,
    };
    writer.write(&stop, &mut out);
    assert_eq!(String::from_utf8(out.clone()).unwrap(), "data: [DONE]\n\n");
    writer.finish(&mut out);
    assert_eq!(String::from_utf8(out).unwrap(), "data: [DONE]\n\n");
}

#[test]
fn errors_are_an_error_chunk_then_done() {
    let mut writer = StreamWriter::new(&anthropic_client(false));
    let mut out = Vec::new();
    writer.write_error(
        &UpstreamErrorBody {
            message: "Overloaded".into(),
            kind: Some("overloaded_error".into()),
            code: None,
        },
        &mut out,
    );
    assert_eq!(
        String::from_utf8(out.clone()).unwrap(),
        "data: {\"error\":{\"message\":\"Overloaded\",\"type\":\"overloaded_error\",\"code\":null,\"param\":null}}\n\ndata: [DONE]\n\n"
    );
    writer.finish(&mut out);
    assert!(String::from_utf8(out).unwrap().ends_with("}}\n\ndata: [DONE]\n\n"));
}

// -------------------------------------------------------------- embeddings

#[test]
fn parses_every_embeddings_input_form() {
    let input = |input: Value| {
        parse_embeddings_request(
            json!({"model": "text-embedding-3-small", "input": input}).to_string().as_bytes(),
        )
        .unwrap()
        .input
    };
    assert_eq!(
        input(json!("The food was delicious and the waiter...")),
        EmbeddingInput::Texts(vec!["The food was delicious and the waiter...".into()])
    );
    assert_eq!(input(json!(["a", "b"])), EmbeddingInput::Texts(vec!["a".into(), "b".into()]));
    assert_eq!(input(json!([1, 2, 3])), EmbeddingInput::Tokens(vec![vec![1, 2, 3]]));
    assert_eq!(input(json!([[1, 2], [3]])), EmbeddingInput::Tokens(vec![vec![1, 2], vec![3]]));

    let body = json!({
        "model": "text-embedding-3-small",
        "input": "hi",
        "dimensions": 256,
        "encoding_format": "base64",
        "user": "user-1"
    });
    let req = parse_embeddings_request(body.to_string().as_bytes()).unwrap();
    assert_eq!(
        req,
        EmbeddingsRequest {
            model: "text-embedding-3-small".into(),
            input: EmbeddingInput::Texts(vec!["hi".into()]),
            dimensions: Some(256),
            user: Some("user-1".into()),
            native: Some(NativeBody { format: Format::OpenAi, body: object(&body) }),
        }
    );
    assert!(wants_base64(&req));
}

#[test]
fn bad_embeddings_requests_name_their_field() {
    let cases: &[(&str, Option<&str>, &str)] = &[
        (r#"{"input": "x"}"#, Some("model"), "model: is required: the name of the model to use"),
        (
            r#"{"model": "m"}"#,
            Some("input"),
            "input: is required: a string, an array of strings or an array of token arrays",
        ),
        (r#"{"model": "m", "input": []}"#, Some("input"), "input: must not be empty"),
        (
            r#"{"model": "m", "input": ["a", 1]}"#,
            Some("input"),
            "input: mixes kinds of items; expected a string, an array of strings, an array of token integers or an array of token arrays",
        ),
        (
            r#"{"model": "m", "input": 5}"#,
            Some("input"),
            "input: invalid type: integer `5`, expected a string, an array of strings, an array of token integers or an array of token arrays",
        ),
        (
            r#"{"model": "m", "input": [-1]}"#,
            Some("input[0]"),
            "input[0]: invalid value: integer `-1`, expected a token id",
        ),
        (
            r#"{"model": "m", "input": "x", "encoding_format": "int8"}"#,
            Some("encoding_format"),
            "encoding_format: unknown format `int8`; valid formats are float and base64",
        ),
        (
            r#"{"model": "m", "input": "x", "dimensions": "big"}"#,
            Some("dimensions"),
            "dimensions: invalid type: string \"big\", expected u32",
        ),
    ];
    for (body, param, message) in cases {
        let err = parse_embeddings_request(body.as_bytes()).unwrap_err();
        assert_eq!(err.param.as_deref(), *param, "param for {body}");
        assert_eq!(err.message, *message, "message for {body}");
    }
    assert!(
        parse_embeddings_request(b"{").unwrap_err().message.starts_with(
            "the body is not valid JSON: EOF while parsing an object at line 1 column 1"
        )
    );
}

#[test]
fn writes_embeddings_requests_native_or_built() {
    let body = json!({"model": "embed", "input": ["a"], "encoding_format": "base64", "x_extra": 1});
    let req = parse_embeddings_request(body.to_string().as_bytes()).unwrap();
    let mut expected = body.clone();
    expected["model"] = json!("text-embedding-3-large");
    assert_eq!(
        as_json(&write_embeddings_request(&req, "text-embedding-3-large").unwrap()),
        expected
    );

    let built = EmbeddingsRequest {
        model: "embed".into(),
        input: EmbeddingInput::Tokens(vec![vec![1, 2]]),
        dimensions: Some(64),
        user: None,
        native: None,
    };
    assert_eq!(
        as_json(&write_embeddings_request(&built, "nomic-embed-text").unwrap()),
        json!({"model": "nomic-embed-text", "input": [[1, 2]], "dimensions": 64})
    );
}

#[test]
fn reads_float_and_base64_embeddings() {
    let body = json!({
        "object": "list",
        "data": [
            {"object": "embedding", "index": 1, "embedding": [0.5, -1.0]},
            {"object": "embedding", "index": 0, "embedding": [0.0023064255, -0.009327292, -0.0028842222]}
        ],
        "model": "text-embedding-ada-002",
        "usage": {"prompt_tokens": 8, "total_tokens": 8}
    })
    .to_string();
    let resp = read_embeddings_response(Bytes::from(body.clone())).unwrap();
    assert_eq!(
        resp,
        EmbeddingsResponse {
            model: "text-embedding-ada-002".into(),
            embeddings: vec![vec![0.0023064255, -0.009327292, -0.0028842222], vec![0.5, -1.0]],
            usage: Usage { input_tokens: 8, ..Usage::default() },
            native: Some(NativeResponse {
                format: Format::OpenAi,
                body: Bytes::from(body.clone())
            }),
        }
    );
    assert_eq!(write_embeddings_response(&resp), body.into_bytes());

    // [1.0, -2.5] as little-endian f32s.
    let base64 = r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":"AACAPwAAIMA="}],"model":"m","usage":{"prompt_tokens":2,"total_tokens":2}}"#;
    let resp = read_embeddings_response(Bytes::from_static(base64.as_bytes())).unwrap();
    assert_eq!(resp.embeddings, vec![vec![1.0, -2.5]]);

    let bad = |body: &'static str| {
        read_embeddings_response(Bytes::from_static(body.as_bytes())).unwrap_err()
    };
    assert_eq!(
        bad(r#"{"data":[{"embedding":"AACA"}]}"#),
        DecodeError::new("data[0].embedding holds 3 bytes, not a whole number of f32s")
    );
    assert_eq!(bad(r#"{"data":[{"index":0}]}"#), DecodeError::new("data[0] has no `embedding`"));
    assert_eq!(
        bad(r#"{"error":{"message":"bad input","type":"invalid_request_error"}}"#),
        DecodeError::new("the upstream answered with an error: bad input")
    );
}

#[test]
fn builds_embeddings_answers_as_floats_or_base64() {
    let resp = EmbeddingsResponse {
        model: "gemini-embedding-001".into(),
        embeddings: vec![vec![0.1, -2.5], vec![1.0, 0.0]],
        usage: Usage { input_tokens: 5, ..Usage::default() },
        native: Some(NativeResponse { format: Format::Gemini, body: Bytes::from_static(b"{}") }),
    };
    assert_eq!(
        String::from_utf8(write_embeddings_response(&resp)).unwrap(),
        r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,-2.5]},{"object":"embedding","index":1,"embedding":[1.0,0.0]}],"model":"gemini-embedding-001","usage":{"prompt_tokens":5,"total_tokens":5}}"#
    );
    let base64 = write_embeddings_response_as(&resp, true);
    let read_back = read_embeddings_response(Bytes::from(base64)).unwrap();
    assert_eq!(read_back.embeddings, resp.embeddings);
    assert_eq!(read_back.usage, resp.usage);
}

// ------------------------------------------------------------------ errors

#[test]
fn reads_every_error_shape() {
    let err = |message: &str, kind: Option<&str>, code: Option<&str>| UpstreamErrorBody {
        message: message.into(),
        kind: kind.map(Into::into),
        code: code.map(Into::into),
    };
    let cases = [
        (
            r#"{"error":{"message":"Rate limit reached for gpt-4o","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#,
            Some(err(
                "Rate limit reached for gpt-4o",
                Some("requests"),
                Some("rate_limit_exceeded"),
            )),
        ),
        (
            r#"{"error":{"message":"Not found","type":"invalid_request_error","code":404}}"#,
            Some(err("Not found", Some("invalid_request_error"), Some("404"))),
        ),
        (
            r#"{"error":{"type":"server_error","code":null}}"#,
            Some(err("server_error", Some("server_error"), None)),
        ),
        (r#"{"error":"model not loaded"}"#, Some(err("model not loaded", None, None))),
        (
            r#"{"object":"error","message":"max_tokens is too large","type":"BadRequestError","code":400}"#,
            Some(err("max_tokens is too large", Some("BadRequestError"), Some("400"))),
        ),
        (r#"{"detail":"Not Found"}"#, Some(err("Not Found", None, None))),
        (
            r#"{"detail":[{"loc":["body","model"],"msg":"field required","type":"value_error.missing"},{"loc":["body"],"msg":"bad"}]}"#,
            Some(err("field required; bad", None, None)),
        ),
        (r#"{"ok":true}"#, None),
        (r#"{"error":null}"#, None),
        ("<html>502 Bad Gateway</html>", None),
        ("[]", None),
    ];
    for (body, expected) in cases {
        assert_eq!(read_error(body.as_bytes()), expected, "{body}");
    }
}

#[test]
fn error_body_is_exactly_openais_shape() {
    assert_eq!(
        String::from_utf8(error_body(
            "Rate limit exceeded",
            "rate_limit_error",
            Some("rate_limited"),
            None
        ))
        .unwrap(),
        r#"{"error":{"message":"Rate limit exceeded","type":"rate_limit_error","code":"rate_limited","param":null}}"#
    );
    assert_eq!(
        as_json(&error_body(
            "messages[1].content: bad",
            "invalid_request_error",
            None,
            Some("messages[1].content")
        )),
        json!({"error": {"message": "messages[1].content: bad", "type": "invalid_request_error", "code": null, "param": "messages[1].content"}})
    );
}

// ----------------------------------------------------------- round trips

fn arb_text() -> impl Strategy<Value = String> {
    "\\PC{1,12}"
}

fn arb_name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_]{0,9}"
}

fn arb_image() -> impl Strategy<Value = Part> {
    prop_oneof![
        "[a-z]{1,8}".prop_map(|path| ImageSource::Url(format!("https://example.com/{path}.png"))),
        (
            prop::sample::select(vec!["image/png", "image/jpeg", "image/webp"]),
            "[A-Za-z0-9+/]{4,16}={0,2}",
        )
            .prop_map(|(media_type, data)| ImageSource::Base64 {
                media_type: media_type.into(),
                data,
            }),
    ]
    .prop_map(|source| Part::Image { source })
}

fn arb_texts(max: usize) -> impl Strategy<Value = Vec<Part>> {
    prop::collection::vec(arb_text().prop_map(|text| Part::Text { text }), 0..=max)
}

fn arb_tool_call() -> impl Strategy<Value = Part> {
    ("call_[a-zA-Z0-9]{1,8}", arb_name(), "\\PC{0,20}")
        .prop_map(|(id, name, arguments)| Part::ToolCall { id, name, arguments })
}

/// Messages in the subset OpenAI represents: no thinking, images only from
/// users, assistant text before tool calls, one result per tool message.
fn arb_message() -> impl Strategy<Value = Message> {
    let name = || proptest::option::of(arb_name());
    prop_oneof![
        (arb_texts(3), name()).prop_map(|(content, name)| Message {
            role: Role::System,
            content,
            name
        }),
        (
            prop::collection::vec(
                prop_oneof![arb_text().prop_map(|text| Part::Text { text }), arb_image()],
                0..4
            ),
            name()
        )
            .prop_map(|(content, name)| Message { role: Role::User, content, name }),
        (arb_texts(2), prop::collection::vec(arb_tool_call(), 0..3), name()).prop_map(
            |(mut content, calls, name)| {
                content.extend(calls);
                Message { role: Role::Assistant, content, name }
            }
        ),
        ("call_[a-zA-Z0-9]{1,8}", arb_texts(3)).prop_map(|(tool_call_id, content)| Message {
            role: Role::Tool,
            content: vec![Part::ToolResult { tool_call_id, content, is_error: false }],
            name: None,
        }),
    ]
}

fn arb_schema() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(arb_name(), prop::sample::select(vec!["string", "integer"]), 0..3)
        .prop_map(|props| {
            let properties: serde_json::Map<String, Value> =
                props.into_iter().map(|(k, t)| (k, json!({"type": t}))).collect();
            json!({"type": "object", "properties": properties})
        })
}

fn arb_tool() -> impl Strategy<Value = Tool> {
    (
        arb_name(),
        proptest::option::of(arb_text()),
        arb_schema(),
        proptest::option::of(any::<bool>()),
    )
        .prop_map(|(name, description, parameters, strict)| Tool {
            name,
            description,
            parameters,
            strict,
        })
}

fn arb_tool_choice() -> impl Strategy<Value = ToolChoice> {
    prop_oneof![
        Just(ToolChoice::Auto),
        Just(ToolChoice::None),
        Just(ToolChoice::Required),
        arb_name().prop_map(ToolChoice::Tool),
    ]
}

fn arb_response_format() -> impl Strategy<Value = ResponseFormat> {
    prop_oneof![
        Just(ResponseFormat::Text),
        Just(ResponseFormat::JsonObject),
        (arb_name(), arb_schema(), proptest::option::of(any::<bool>()))
            .prop_map(|(name, schema, strict)| ResponseFormat::JsonSchema { name, schema, strict }),
    ]
}

/// A float that survives JSON text exactly: hundredths, as people write them.
fn arb_unit_float() -> impl Strategy<Value = f64> {
    (0u32..=200).prop_map(|n| f64::from(n) / 100.0)
}

prop_compose! {
    fn arb_request()(
        model in arb_name(),
        messages in prop::collection::vec(arb_message(), 1..6),
        tools in prop::collection::vec(arb_tool(), 0..3),
        tool_choice in proptest::option::of(arb_tool_choice()),
        parallel_tool_calls in proptest::option::of(any::<bool>()),
        max_tokens in proptest::option::of(any::<u32>()),
        temperature in proptest::option::of(arb_unit_float()),
        top_p in proptest::option::of(arb_unit_float()),
        top_k in proptest::option::of(1u32..500),
        stop in prop::collection::vec(arb_text(), 0..3),
        stream in any::<bool>(),
        response_format in proptest::option::of(arb_response_format()),
        user in proptest::option::of(arb_name()),
    ) -> ChatRequest {
        // OpenAI only takes a tool choice along with tools.
        let has_tools = !tools.is_empty();
        ChatRequest {
            model,
            messages,
            tools,
            tool_choice: tool_choice.filter(|_| has_tools),
            parallel_tool_calls: parallel_tool_calls.filter(|_| has_tools),
            max_tokens,
            temperature,
            top_p,
            top_k,
            stop,
            stream,
            // Streaming requests always ask usage upstream.
            include_usage: stream,
            response_format,
            user,
            native: None,
        }
    }
}

proptest! {
    /// Writing a canonical request and parsing it back gives the same
    /// request, in both dialects (`top_k` is not sent to OpenAI itself).
    #[test]
    fn write_then_parse_gives_back_the_canonical_request(req in arb_request()) {
        let compatible = write_chat_request(&req, &req.model, Dialect::Compatible).unwrap();
        let mut back = parse_chat_request(&compatible).unwrap();
        back.native = None;
        prop_assert_eq!(&back, &req);

        let openai = write_chat_request(&req, &req.model, Dialect::OpenAi).unwrap();
        let mut back = parse_chat_request(&openai).unwrap();
        back.native = None;
        let expected = ChatRequest { top_k: None, ..req };
        prop_assert_eq!(back, expected);
    }
}

#[test]
fn lean_read_keeps_what_replay_and_accounting_need() {
    let body = json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1741569952, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29,
                  "prompt_tokens_details": {"cached_tokens": 4}}
    });
    let bytes = Bytes::from(body.to_string());
    let req = ChatRequest { model: "alias".into(), ..ChatRequest::default() };
    let full = read_chat_response(&req, bytes.clone()).unwrap();
    let lean = read_chat_response_lean(&req, bytes.clone()).unwrap();
    assert_eq!(lean.usage, full.usage);
    assert_eq!(
        (lean.id.as_str(), lean.model.as_str(), lean.created),
        ("chatcmpl-1", "gpt-4o-mini", 1741569952)
    );
    assert!(lean.choices.is_empty());
    assert_eq!(lean.native, Some(NativeResponse { format: Format::OpenAi, body: bytes.clone() }));
    // Replayed verbatim to an OpenAI client.
    assert_eq!(write_chat_response(&lean), bytes.to_vec());
    // A body that is not a completion fails exactly as the full reader does.
    for bad in [&b"[1]"[..], b"{\"error\": {\"message\": \"boom\"}}", b"not json"] {
        let bad = Bytes::copy_from_slice(bad);
        assert_eq!(read_chat_response_lean(&req, bad.clone()), read_chat_response(&req, bad));
    }
}
