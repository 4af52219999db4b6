//! Reading client requests and writing upstream requests.

use serde_json::{Value, json};

use super::*;
use crate::anthropic::{
    DEFAULT_MAX_TOKENS, RESPONSE_FORMAT_TOOL, parse_chat_request, write_chat_request,
};
use crate::error::RequestError;

fn parse(body: &Value) -> ChatRequest {
    parse_chat_request(body.to_string().as_bytes()).unwrap()
}

fn parse_err(body: &str) -> RequestError {
    parse_chat_request(body.as_bytes()).unwrap_err()
}

fn weather_tool_json() -> Value {
    json!({
        "name": "get_weather",
        "description": "Get the current weather in a given location",
        "input_schema": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}
            },
            "required": ["location"]
        }
    })
}

fn weather_tool() -> Tool {
    let schema = weather_tool_json();
    Tool {
        name: "get_weather".to_owned(),
        description: Some("Get the current weather in a given location".to_owned()),
        parameters: schema["input_schema"].clone(),
        strict: None,
    }
}

/// A documented multi-turn tool conversation with every translated feature.
fn docs_conversation() -> Value {
    json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "system": [
            {"type": "text", "text": "You are a weather assistant."},
            {"type": "text", "text": "Answer briefly.", "cache_control": {"type": "ephemeral"}}
        ],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "What is the weather where these photos were taken?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQSkZJRg=="}},
                {"type": "image", "source": {"type": "url", "url": "https://upload.wikimedia.org/wikipedia/commons/a/a7/Camponotus_flavomarginatus_ant.jpg"}}
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "The photos show San Francisco.", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"},
                {"type": "text", "text": "I'll check the weather in San Francisco."},
                {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather", "input": {"location": "San Francisco, CA", "unit": "celsius"}},
                {"type": "tool_use", "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_time", "input": {}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01A09q90qw90lq917835lq9", "content": "15 degrees"},
                {"type": "tool_result", "tool_use_id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "content": [{"type": "text", "text": "clock unavailable"}], "is_error": true},
                {"type": "text", "text": "Should I take an umbrella?"}
            ]}
        ],
        "tools": [
            weather_tool_json(),
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 5}
        ],
        "tool_choice": {"type": "auto", "disable_parallel_tool_use": true},
        "temperature": 0.5,
        "top_p": 0.9,
        "top_k": 40,
        "stop_sequences": ["\n\nHuman:"],
        "stream": true,
        "metadata": {"user_id": "13803d75-b4b5-4c3e-b2a2-6f21399b021b"}
    })
}

#[test]
fn parses_a_documented_tool_conversation() {
    let body = docs_conversation();
    let req = parse(&body);
    let expected = ChatRequest {
        model: "claude-sonnet-4-5".to_owned(),
        messages: vec![
            message(
                Role::System,
                vec![text("You are a weather assistant."), text("Answer briefly.")],
            ),
            message(
                Role::User,
                vec![
                    text("What is the weather where these photos were taken?"),
                    image_base64("image/jpeg", "/9j/4AAQSkZJRg=="),
                    image_url(
                        "https://upload.wikimedia.org/wikipedia/commons/a/a7/Camponotus_flavomarginatus_ant.jpg",
                    ),
                ],
            ),
            message(
                Role::Assistant,
                vec![
                    thinking(
                        "The photos show San Francisco.",
                        Some("EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"),
                    ),
                    text("I'll check the weather in San Francisco."),
                    tool_call(
                        "toolu_01A09q90qw90lq917835lq9",
                        "get_weather",
                        r#"{"location":"San Francisco, CA","unit":"celsius"}"#,
                    ),
                    tool_call("toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_time", "{}"),
                ],
            ),
            tool_result("toolu_01A09q90qw90lq917835lq9", vec![text("15 degrees")], false),
            tool_result("toolu_01T1x1fJ34qAmk2tNTrN7Up6", vec![text("clock unavailable")], true),
            message(Role::User, vec![text("Should I take an umbrella?")]),
        ],
        tools: vec![weather_tool()],
        tool_choice: Some(ToolChoice::Auto),
        parallel_tool_calls: Some(false),
        max_tokens: Some(1024),
        temperature: Some(0.5),
        top_p: Some(0.9),
        top_k: Some(40),
        stop: vec!["\n\nHuman:".to_owned()],
        stream: true,
        include_usage: true,
        response_format: None,
        user: Some("13803d75-b4b5-4c3e-b2a2-6f21399b021b".to_owned()),
        native: Some(NativeBody {
            format: Format::Anthropic,
            body: body.as_object().unwrap().clone(),
        }),
    };
    assert_eq!(req, expected);
}

#[test]
fn parses_string_system_and_string_content() {
    let req = parse(&json!({
        "model": "claude-opus-4-1",
        "max_tokens": 256,
        "system": "You are a pirate.",
        "messages": [
            {"role": "user", "content": "Hello, Claude"},
            {"role": "assistant", "content": "Ahoy!"},
            {"role": "user", "content": "Where is the treasure?"}
        ]
    }));
    assert_eq!(
        req.messages,
        vec![
            Message::text(Role::System, "You are a pirate."),
            Message::text(Role::User, "Hello, Claude"),
            Message::text(Role::Assistant, "Ahoy!"),
            Message::text(Role::User, "Where is the treasure?"),
        ]
    );
    assert_eq!(req.max_tokens, Some(256));
    assert!(!req.stream);
    assert!(req.include_usage);
    assert_eq!(req.tools, vec![]);
    assert_eq!(req.tool_choice, None);
    assert_eq!(req.parallel_tool_calls, None);
    assert_eq!(req.user, None);
}

#[test]
fn a_user_turn_is_split_into_runs_around_its_tool_results() {
    let req = parse(&json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "before"},
            {"type": "tool_result", "tool_use_id": "toolu_a", "content": [
                {"type": "text", "text": "chart:"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
            ]},
            {"type": "tool_result", "tool_use_id": "toolu_b"},
            {"type": "text", "text": "after"},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}
        ]}]
    }));
    assert_eq!(
        req.messages,
        vec![
            message(Role::User, vec![text("before")]),
            tool_result(
                "toolu_a",
                vec![text("chart:"), image_base64("image/png", "iVBORw0KGgo=")],
                false,
            ),
            tool_result("toolu_b", vec![], false),
            message(Role::User, vec![text("after"), image_url("https://example.com/a.png")]),
        ]
    );
}

#[test]
fn untranslatable_blocks_are_skipped_but_kept_natively() {
    let body = json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 100,
        "messages": [
            {"role": "user", "content": [
                {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "The grass is green."}, "title": "My Document"},
                {"type": "search_result", "source": "https://example.com", "title": "Example", "content": [{"type": "text", "text": "x"}]}
            ]},
            {"role": "assistant", "content": [
                {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpP"},
                {"type": "server_tool_use", "id": "srvtoolu_01", "name": "web_search", "input": {"query": "weather"}},
                {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_01", "content": []},
                {"type": "text", "text": "It is sunny."}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_c", "content": [
                    {"type": "search_result", "source": "https://example.com", "title": "t", "content": []},
                    {"type": "text", "text": "kept"}
                ]},
                {"type": "image", "source": {"type": "file", "file_id": "file_011CNha8iCJcU1wXNR6q4V8w"}}
            ]}
        ]
    });
    let req = parse(&body);
    assert_eq!(
        req.messages,
        vec![
            message(Role::User, vec![]),
            message(Role::Assistant, vec![text("It is sunny.")]),
            tool_result("toolu_c", vec![text("kept")], false),
        ]
    );
    assert_eq!(req.native.unwrap().body, *body.as_object().unwrap());
}

#[test]
fn tool_choice_variants() {
    let cases = [
        (json!({"type": "auto"}), Some(ToolChoice::Auto), None),
        (
            json!({"type": "auto", "disable_parallel_tool_use": false}),
            Some(ToolChoice::Auto),
            Some(true),
        ),
        (
            json!({"type": "any", "disable_parallel_tool_use": true}),
            Some(ToolChoice::Required),
            Some(false),
        ),
        (
            json!({"type": "tool", "name": "get_weather"}),
            Some(ToolChoice::Tool("get_weather".to_owned())),
            None,
        ),
        (json!({"type": "none"}), Some(ToolChoice::None), None),
    ];
    for (choice, tool_choice, parallel) in cases {
        let req = parse(&json!({
            "model": "m", "max_tokens": 1,
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [weather_tool_json()],
            "tool_choice": choice
        }));
        assert_eq!(req.tool_choice, tool_choice, "{choice}");
        assert_eq!(req.parallel_tool_calls, parallel, "{choice}");
    }
}

#[test]
fn custom_typed_tools_are_kept_and_server_tools_skipped() {
    let mut custom = weather_tool_json();
    custom["type"] = json!("custom");
    let req = parse(&json!({
        "model": "m", "max_tokens": 1,
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [
            {"type": "bash_20250124", "name": "bash"},
            custom,
            {"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"}
        ]
    }));
    assert_eq!(req.tools, vec![weather_tool()]);
}

#[test]
fn bad_requests_are_refused_with_their_path() {
    let valid_messages = r#"[{"role":"user","content":"hi"}]"#;
    let cases: Vec<(String, Option<&str>, &str)> = vec![
        (
            "{\"model\": ".to_owned(),
            None,
            "the body is not valid JSON: EOF while parsing a value at line 1 column 10",
        ),
        (
            "[1, 2]".to_owned(),
            None,
            "the body must be a JSON object (an Anthropic Messages request), not an array",
        ),
        (
            format!(r#"{{"model":"m","messages":{valid_messages}}}"#),
            Some("max_tokens"),
            "max_tokens: required by the Anthropic Messages API: the maximum number of tokens \
             to generate",
        ),
        (
            format!(r#"{{"max_tokens":1,"messages":{valid_messages}}}"#),
            Some("model"),
            "model: required: the model to answer with",
        ),
        (
            format!(r#"{{"model":"","max_tokens":1,"messages":{valid_messages}}}"#),
            Some("model"),
            "model: must not be empty",
        ),
        (
            r#"{"model":"m","max_tokens":1}"#.to_owned(),
            Some("messages"),
            "messages: required: the conversation, as an array of user and assistant messages",
        ),
        (
            r#"{"model":"m","max_tokens":1,"messages":[]}"#.to_owned(),
            Some("messages"),
            "messages: must hold at least one message",
        ),
        (
            r#"{"model":"m","max_tokens":1,"messages":[{"role":"system","content":"x"}]}"#
                .to_owned(),
            Some("messages[0].role"),
            "messages[0].role: invalid role \"system\": valid roles are \"user\" and \
             \"assistant\" (system prompts go in the top-level `system` field)",
        ),
        (
            format!(r#"{{"model":"m","max_tokens":"many","messages":{valid_messages}}}"#),
            Some("max_tokens"),
            "max_tokens: invalid type: string \"many\", expected u32",
        ),
        (
            format!(r#"{{"model":"m","max_tokens":1,"temperature":"hot","messages":{valid_messages}}}"#),
            Some("temperature"),
            "temperature: invalid type: string \"hot\", expected f64",
        ),
        (
            r#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":3}]}"#.to_owned(),
            Some("messages[0].content"),
            "messages[0].content: invalid type: integer `3`, expected a string or an array of \
             content blocks",
        ),
        (
            r#"{"model":"m","max_tokens":1,"messages":[{"role":"user"}]}"#.to_owned(),
            Some("messages[0]"),
            "messages[0]: missing field `content`",
        ),
        (
            r#"{"model":"m","max_tokens":1,"messages":["hi"]}"#.to_owned(),
            Some("messages[0]"),
            "messages[0]: invalid type: string \"hi\", expected a message object with a role \
             and content",
        ),
        (
            r#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":7}]}]}"#.to_owned(),
            Some("messages[0].content[1].text"),
            "messages[0].content[1].text: invalid type: integer `7`, expected a string",
        ),
        (
            r#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[{"text":"a"}]}]}"#.to_owned(),
            Some("messages[0].content[0].type"),
            "messages[0].content[0].type: required: the content block type",
        ),
        (
            r#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[{"type":"image","source":{"type":"base64","media_type":"image/png"}}]}]}"#.to_owned(),
            Some("messages[0].content[0].source"),
            "messages[0].content[0].source: missing field `data`",
        ),
        (
            r#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","is_error":"yes"}]}]}"#.to_owned(),
            Some("messages[0].content[0].is_error"),
            "messages[0].content[0].is_error: invalid type: string \"yes\", expected a boolean",
        ),
        (
            r#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[{"type":"tool_use","id":"t","name":"n","input":{}}]}]}"#.to_owned(),
            Some("messages[0].content[0].type"),
            "messages[0].content[0].type: tool_use blocks belong in assistant messages",
        ),
        (
            r#"{"model":"m","max_tokens":1,"messages":[{"role":"assistant","content":[{"type":"tool_result","tool_use_id":"t"}]}]}"#.to_owned(),
            Some("messages[0].content[0].type"),
            "messages[0].content[0].type: tool_result blocks belong in user messages",
        ),
        (
            format!(r#"{{"model":"m","max_tokens":1,"system":[{{"type":"image"}}],"messages":{valid_messages}}}"#),
            Some("system[0].type"),
            "system[0].type: system prompt blocks must be of type \"text\"",
        ),
        (
            format!(r#"{{"model":"m","max_tokens":1,"tools":[{{"name":"f"}}],"messages":{valid_messages}}}"#),
            Some("tools[0]"),
            "tools[0]: missing field `input_schema`",
        ),
        (
            format!(r#"{{"model":"m","max_tokens":1,"tool_choice":{{"type":"required"}},"messages":{valid_messages}}}"#),
            Some("tool_choice.type"),
            "tool_choice.type: invalid tool choice \"required\": valid types are \"auto\", \
             \"any\", \"tool\" and \"none\"",
        ),
        (
            format!(r#"{{"model":"m","max_tokens":1,"tool_choice":{{"type":"tool"}},"messages":{valid_messages}}}"#),
            Some("tool_choice.name"),
            "tool_choice.name: required when tool_choice.type is \"tool\"",
        ),
        (
            format!(r#"{{"model":"m","max_tokens":1,"metadata":{{"user_id":5}},"messages":{valid_messages}}}"#),
            Some("metadata.user_id"),
            "metadata.user_id: invalid type: integer `5`, expected a string",
        ),
    ];
    for (body, param, message) in cases {
        let err = parse_err(&body);
        assert_eq!(err.message, message, "{body}");
        assert_eq!(err.param.as_deref(), param, "{body}");
    }
}

// ------------------------------------------------------------------ write

fn write(req: &ChatRequest) -> Value {
    json_of(&write_chat_request(req, "claude-sonnet-4-5-20250929").unwrap())
}

fn write_err(req: &ChatRequest) -> String {
    write_chat_request(req, "claude-sonnet-4-5-20250929").unwrap_err().message
}

#[test]
fn native_bodies_pass_through_with_model_and_stream_replaced() {
    let body = docs_conversation();
    let mut req = parse(&body);
    req.stream = false;
    let written = write(&req);
    let mut expected = body.clone();
    expected["model"] = json!("claude-sonnet-4-5-20250929");
    expected["stream"] = json!(false);
    assert_eq!(written, expected);
}

/// A request as an OpenAI client would have sent it, read into canonical form.
fn canonical_conversation() -> ChatRequest {
    ChatRequest {
        messages: vec![
            Message::text(Role::System, "You are a weather assistant."),
            message(
                Role::User,
                vec![
                    text("What is the weather here?"),
                    image_base64("image/jpeg", "/9j/4AAQSkZJRg=="),
                    image_url("https://example.com/sky.jpg"),
                ],
            ),
            message(
                Role::Assistant,
                vec![
                    thinking("unsigned reasoning from another provider", None),
                    thinking("signed reasoning", Some("EqQBCgIYAhIM")),
                    text("Let me check."),
                    tool_call(
                        "call_1",
                        "get_weather",
                        r#"{"location": "Paris", "unit": "celsius"}"#,
                    ),
                    tool_call("call_2", "get_time", ""),
                ],
            ),
            tool_result("call_1", vec![text("18 degrees")], false),
            Message::text(Role::System, "Always answer in French."),
            tool_result(
                "call_2",
                vec![text("clock:"), image_url("https://example.com/clock.png")],
                true,
            ),
            Message::text(Role::User, "Thanks. And tomorrow?"),
            Message::text(Role::User, "In Lyon, too."),
        ],
        tools: vec![weather_tool()],
        tool_choice: Some(ToolChoice::Required),
        parallel_tool_calls: Some(false),
        temperature: Some(0.2),
        top_p: Some(0.95),
        stop: vec!["END".to_owned()],
        stream: true,
        include_usage: true,
        user: Some("user-42".to_owned()),
        ..built_request(vec![])
    }
}

#[test]
fn writes_a_canonical_conversation() {
    let written = write(&canonical_conversation());
    assert_eq!(written["max_tokens"], json!(DEFAULT_MAX_TOKENS));
    insta::assert_json_snapshot!(written);
}

#[test]
fn tool_choice_and_parallel_flag_are_written() {
    let cases = [
        (None, None, None),
        (None, Some(true), None),
        (None, Some(false), Some(json!({"type": "auto", "disable_parallel_tool_use": true}))),
        (Some(ToolChoice::Auto), None, Some(json!({"type": "auto"}))),
        (
            Some(ToolChoice::Auto),
            Some(true),
            Some(json!({"type": "auto", "disable_parallel_tool_use": false})),
        ),
        (
            Some(ToolChoice::Required),
            Some(false),
            Some(json!({"type": "any", "disable_parallel_tool_use": true})),
        ),
        (
            Some(ToolChoice::Tool("get_weather".to_owned())),
            Some(false),
            Some(json!({"type": "tool", "name": "get_weather", "disable_parallel_tool_use": true})),
        ),
        (Some(ToolChoice::None), Some(false), Some(json!({"type": "none"}))),
    ];
    for (tool_choice, parallel, expected) in cases {
        let req = ChatRequest {
            tools: vec![weather_tool()],
            tool_choice: tool_choice.clone(),
            parallel_tool_calls: parallel,
            ..built_request(vec![Message::text(Role::User, "hi")])
        };
        let written = write(&req);
        assert_eq!(written.get("tool_choice").cloned(), expected, "{tool_choice:?} {parallel:?}");
    }
}

#[test]
fn a_minimal_request_has_only_the_required_fields() {
    let req = ChatRequest {
        max_tokens: Some(64),
        ..built_request(vec![Message::text(Role::User, "Hello")])
    };
    assert_eq!(
        write(&req),
        json!({
            "model": "claude-sonnet-4-5-20250929",
            "max_tokens": 64,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}],
            "stream": false
        })
    );
}

#[test]
fn multiple_system_parts_become_text_blocks() {
    let req = built_request(vec![
        message(Role::System, vec![text("one"), text("two")]),
        Message::text(Role::User, "hi"),
    ]);
    assert_eq!(
        write(&req)["system"],
        json!([{"type": "text", "text": "one"}, {"type": "text", "text": "two"}])
    );
}

#[test]
fn untranslatable_requests_are_refused() {
    let with_args = |arguments: &str| {
        built_request(vec![
            Message::text(Role::User, "hi"),
            message(Role::Assistant, vec![tool_call("call_9", "get_weather", arguments)]),
        ])
    };
    assert_eq!(
        write_err(&with_args(r#"{"location": "Par"#)),
        "the arguments of tool call call_9 (get_weather) are not valid JSON: EOF while \
         parsing a string at line 1 column 17"
    );
    assert_eq!(
        write_err(&with_args("[1, 2]")),
        "the arguments of tool call call_9 (get_weather) are not a JSON object, which \
         Anthropic requires as tool input"
    );
    let system_image = built_request(vec![
        message(Role::System, vec![image_url("https://example.com/a.png")]),
        Message::text(Role::User, "hi"),
    ]);
    assert_eq!(
        write_err(&system_image),
        "Anthropic system prompts hold text only; a system message has another part"
    );
    let nested = built_request(vec![tool_result(
        "call_1",
        vec![text("a"), tool_call("x", "y", "{}")],
        false,
    )]);
    assert_eq!(
        write_err(&nested),
        "the result of tool call call_1 holds a part other than text or image, which \
         Anthropic tool results cannot carry"
    );
}

fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {"city": {"type": "string"}, "temperature": {"type": "number"}},
        "required": ["city", "temperature"],
        "additionalProperties": false
    })
}

#[test]
fn a_json_schema_response_format_becomes_a_forced_tool() {
    let req = ChatRequest {
        tools: vec![weather_tool()],
        tool_choice: Some(ToolChoice::Auto),
        parallel_tool_calls: Some(false),
        response_format: Some(ResponseFormat::JsonSchema {
            name: "weather_report".to_owned(),
            schema: schema(),
            strict: Some(true),
        }),
        ..built_request(vec![Message::text(Role::User, "Weather in Paris as JSON")])
    };
    let written = write(&req);
    assert_eq!(
        written["tools"],
        json!([
            weather_tool_json(),
            {
                "name": RESPONSE_FORMAT_TOOL,
                "description": "Give the final answer as JSON matching this schema.",
                "input_schema": schema()
            }
        ])
    );
    assert_eq!(
        written["tool_choice"],
        json!({"type": "tool", "name": "json_response", "disable_parallel_tool_use": true})
    );
}

#[test]
fn a_json_object_response_format_forces_an_object_tool() {
    let req = ChatRequest {
        response_format: Some(ResponseFormat::JsonObject),
        ..built_request(vec![Message::text(Role::User, "JSON please")])
    };
    let written = write(&req);
    assert_eq!(
        written["tools"],
        json!([{
            "name": "json_response",
            "description": "Give the final answer as JSON matching this schema.",
            "input_schema": {"type": "object"}
        }])
    );
    assert_eq!(written["tool_choice"], json!({"type": "tool", "name": "json_response"}));
    let text_format = ChatRequest { response_format: Some(ResponseFormat::Text), ..req };
    let written = write(&text_format);
    assert_eq!(written.get("tools"), None);
    assert_eq!(written.get("tool_choice"), None);
}

#[test]
fn a_json_response_format_cannot_be_combined_with_a_forced_tool() {
    for choice in [ToolChoice::Required, ToolChoice::Tool("get_weather".to_owned())] {
        let req = ChatRequest {
            tools: vec![weather_tool()],
            tool_choice: Some(choice.clone()),
            response_format: Some(ResponseFormat::JsonObject),
            ..built_request(vec![Message::text(Role::User, "hi")])
        };
        let what = match choice {
            ToolChoice::Required => "any tool".to_owned(),
            _ => "the tool get_weather".to_owned(),
        };
        assert_eq!(
            write_err(&req),
            format!(
                "a JSON response_format cannot be combined with forcing {what} on Anthropic: \
                 the format is itself carried by a forced tool call"
            )
        );
    }
    let clash = ChatRequest {
        tools: vec![Tool { name: RESPONSE_FORMAT_TOOL.to_owned(), ..weather_tool() }],
        response_format: Some(ResponseFormat::JsonObject),
        ..built_request(vec![Message::text(Role::User, "hi")])
    };
    assert_eq!(
        write_err(&clash),
        "a tool named json_response cannot be combined with a JSON response_format for \
         Anthropic, which uses that name to carry it"
    );
}
