//! Tests of the Gemini translation, on payloads shaped like Google's
//! generateContent, streamGenerateContent and batchEmbedContents documentation.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::sse::SseParser;

// ---------------------------------------------------------------------------
// Builders
// ---------------------------------------------------------------------------

fn text(text: &str) -> Part {
    Part::Text { text: text.into() }
}

fn msg(role: Role, content: Vec<Part>) -> Message {
    Message { role, content, name: None }
}

fn call(id: &str, name: &str, arguments: &str) -> Part {
    Part::ToolCall { id: id.into(), name: name.into(), arguments: arguments.into() }
}

fn result(id: &str, content: Vec<Part>, is_error: bool) -> Message {
    msg(Role::Tool, vec![Part::ToolResult { tool_call_id: id.into(), content, is_error }])
}

fn weather_tool() -> Tool {
    Tool {
        name: "get_weather".into(),
        description: Some("Get the current weather in a given location".into()),
        parameters: json!({
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}
            },
            "required": ["location"],
            "additionalProperties": false
        }),
        strict: Some(true),
    }
}

fn time_tool() -> Tool {
    Tool {
        name: "get_time".into(),
        description: None,
        parameters: json!({
            "type": "object",
            "properties": {"timezone": {"type": "string"}},
            "required": ["timezone"]
        }),
        strict: None,
    }
}

fn written(req: &ChatRequest) -> Value {
    let body = write_chat_request(req).unwrap();
    serde_json::from_slice(&body).unwrap()
}

fn request(messages: Vec<Message>) -> ChatRequest {
    ChatRequest { model: "gemini-2.5-flash".into(), messages, ..ChatRequest::default() }
}

/// A thought signature as Gemini sends it: standard base64 with `+`, `/`
/// and padding, so the id conversion is exercised.
const SIGNATURE: &str = "CiQB0e2Kb+7q/Xz9w0Q=";
/// The same signature as carried in a canonical tool call id.
const SIGNATURE_IN_ID: &str = "CiQB0e2Kb-7q_Xz9w0Q";

// ---------------------------------------------------------------------------
// write_chat_request
// ---------------------------------------------------------------------------

#[test]
fn writes_multi_turn_conversation_with_system_and_images() {
    let mut req = request(vec![
        Message::text(Role::System, "You are a cat. Your name is Neko."),
        Message::text(Role::User, "Hello there"),
        msg(
            Role::Assistant,
            vec![
                Part::Thinking {
                    text: "The user greets me.".into(),
                    signature: Some("sig".into()),
                },
                text("Meow. What do you want?"),
            ],
        ),
        Message::text(Role::System, "Answer in French."),
        msg(
            Role::User,
            vec![
                text("What is in these pictures?"),
                Part::Image {
                    source: ImageSource::Base64 {
                        media_type: "image/png".into(),
                        data: "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk".into(),
                    },
                },
                Part::Image {
                    source: ImageSource::Url("data:image/jpeg;base64,/9j/4AAQSkZJRgABAQ==".into()),
                },
                Part::Image {
                    source: ImageSource::Url(
                        "gs://cloud-samples-data/generative-ai/image/scones.webp".into(),
                    ),
                },
                Part::Image {
                    source: ImageSource::Url(
                        "https://generativelanguage.googleapis.com/v1beta/files/abc-123".into(),
                    ),
                },
            ],
        ),
    ]);
    req.temperature = Some(0.7);
    req.top_p = Some(0.95);
    req.top_k = Some(40);
    req.max_tokens = Some(1024);
    req.stop = vec!["\n\nUser:".into()];
    req.user = Some("user-1234".into());
    req.stream = true;
    req.include_usage = true;
    insta::assert_json_snapshot!(written(&req));
}

#[test]
fn writes_function_call_round_with_signature_and_results() {
    let signed_id = format!("call_r1_0{SIG_SEP}{SIGNATURE_IN_ID}");
    let mut req = request(vec![
        Message::text(Role::User, "What's the weather in Boston, and the time in Tokyo?"),
        msg(
            Role::Assistant,
            vec![
                text("Let me look both up."),
                call(&signed_id, "get_weather", r#"{"location":"Boston, MA","unit":"celsius"}"#),
                call("call_r1_1", "get_time", r#"{"timezone":"Asia/Tokyo"}"#),
            ],
        ),
        result(&signed_id, vec![text(r#"{"temperature": 22, "unit": "celsius"}"#)], false),
        result("call_r1_1", vec![text("time service unavailable")], true),
        Message::text(Role::User, "Thanks! What about Paris?"),
        msg(Role::Assistant, vec![call("toolu_01", "get_weather", "")]),
        result("toolu_01", vec![text("18 degrees and cloudy")], false),
    ]);
    req.tools = vec![weather_tool(), time_tool()];
    req.tool_choice = Some(ToolChoice::Auto);
    req.parallel_tool_calls = Some(false);
    insta::assert_json_snapshot!(written(&req));
}

#[test]
fn function_responses_come_first_and_tool_images_follow_them() {
    let req = request(vec![
        Message::text(Role::User, "Take two screenshots."),
        msg(Role::Assistant, vec![call("c1", "screenshot", "{}"), call("c2", "screenshot", "{}")]),
        result(
            "c1",
            vec![
                text("first"),
                Part::Image {
                    source: ImageSource::Base64 {
                        media_type: "image/png".into(),
                        data: "AAAA".into(),
                    },
                },
            ],
            false,
        ),
        result("c2", vec![text("second"), text("part")], false),
        Message::text(Role::User, "Compare them."),
    ]);
    let body = written(&req);
    assert_eq!(
        body["contents"][2],
        json!({
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "screenshot", "response": {"result": "first"}}},
                {"functionResponse": {"name": "screenshot", "response": {"result": "second\npart"}}},
                {"inlineData": {"mimeType": "image/png", "data": "AAAA"}},
                {"text": "Compare them."}
            ]
        })
    );
    assert_eq!(body["contents"].as_array().unwrap().len(), 3);
}

#[test]
fn consecutive_same_role_messages_merge_and_empty_turns_vanish() {
    let req = request(vec![
        Message::text(Role::User, "one"),
        Message::text(Role::System, "be brief"),
        Message::text(Role::User, "two"),
        msg(Role::Assistant, vec![Part::Thinking { text: "hmm".into(), signature: None }]),
        Message::text(Role::User, ""),
        Message::text(Role::User, "three"),
    ]);
    assert_eq!(
        written(&req),
        json!({
            "systemInstruction": {"parts": [{"text": "be brief"}]},
            "contents": [
                {"role": "user", "parts": [{"text": "one"}, {"text": "two"}, {"text": "three"}]}
            ]
        })
    );
}

#[test]
fn tool_choice_variants() {
    let cases = [
        (ToolChoice::Auto, json!({"functionCallingConfig": {"mode": "AUTO"}})),
        (ToolChoice::None, json!({"functionCallingConfig": {"mode": "NONE"}})),
        (ToolChoice::Required, json!({"functionCallingConfig": {"mode": "ANY"}})),
        (
            ToolChoice::Tool("get_time".into()),
            json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_time"]}}),
        ),
    ];
    for (choice, expected) in cases {
        let mut req = request(vec![Message::text(Role::User, "hi")]);
        req.tools = vec![weather_tool(), time_tool()];
        req.tool_choice = Some(choice);
        let body = written(&req);
        assert_eq!(body["toolConfig"], expected);
        assert_eq!(
            body["tools"],
            json!([{"functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "Get the current weather in a given location",
                    "parametersJsonSchema": weather_tool().parameters
                },
                {"name": "get_time", "parametersJsonSchema": time_tool().parameters}
            ]}])
        );
    }
}

#[test]
fn no_tools_means_no_tool_config() {
    let mut req = request(vec![Message::text(Role::User, "hi")]);
    req.tool_choice = Some(ToolChoice::Required);
    assert_eq!(written(&req), json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}));
}

#[test]
fn writes_json_schema_response_format() {
    let mut req = request(vec![Message::text(Role::User, "List a few popular cookie recipes.")]);
    req.response_format = Some(ResponseFormat::JsonSchema {
        name: "recipes".into(),
        schema: json!({
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "recipeName": {"type": "string"},
                    "ingredients": {"type": "array", "items": {"type": "string"}}
                },
                "required": ["recipeName", "ingredients"]
            }
        }),
        strict: Some(true),
    });
    insta::assert_json_snapshot!(written(&req));
}

#[test]
fn writes_json_object_and_text_response_formats() {
    let mut req = request(vec![Message::text(Role::User, "Reply in JSON.")]);
    req.response_format = Some(ResponseFormat::JsonObject);
    assert_eq!(written(&req)["generationConfig"], json!({"responseMimeType": "application/json"}));
    req.response_format = Some(ResponseFormat::Text);
    assert!(written(&req).get("generationConfig").is_none());
}

#[test]
fn refuses_what_gemini_cannot_take() {
    let http_image = request(vec![msg(
        Role::User,
        vec![Part::Image {
            source: ImageSource::Url("https://example.com/cat.png?sig=secret".into()),
        }],
    )]);
    assert_eq!(
        write_chat_request(&http_image).unwrap_err().message,
        "messages[0].content[0]: Gemini cannot fetch images from URLs like \
         `https://example.com`; send the image inline as base64 (a data: URL) instead"
    );

    let unknown_id = request(vec![
        Message::text(Role::User, "hi"),
        result("call_missing", vec![text("42")], false),
    ]);
    assert_eq!(
        write_chat_request(&unknown_id).unwrap_err().message,
        "messages[1].content[0]: the tool result answers tool call id `call_missing`, which no \
         earlier assistant message made; Gemini needs the name of the function it answers"
    );

    let bad_args = request(vec![msg(Role::Assistant, vec![call("c", "f", "{\"a\":")])]);
    let message = write_chat_request(&bad_args).unwrap_err().message;
    assert!(
        message.starts_with("messages[0].content[0]: the tool call arguments are not valid JSON"),
        "{message}"
    );

    let array_args = request(vec![msg(Role::Assistant, vec![call("c", "f", "[1]")])]);
    assert_eq!(
        write_chat_request(&array_args).unwrap_err().message,
        "messages[0].content[0]: the tool call arguments must be a JSON object for Gemini"
    );

    let system_image = request(vec![msg(
        Role::System,
        vec![Part::Image {
            source: ImageSource::Base64 { media_type: "image/png".into(), data: "AAAA".into() },
        }],
    )]);
    assert_eq!(
        write_chat_request(&system_image).unwrap_err().message,
        "messages[0].content[0]: Gemini system instructions can only hold text"
    );

    let bad_data_url = request(vec![msg(
        Role::User,
        vec![Part::Image { source: ImageSource::Url("data:image/png,rawbytes".into()) }],
    )]);
    assert!(write_chat_request(&bad_data_url).is_err());
}

#[test]
fn tool_result_objects_pass_as_they_are_and_errors_are_wrapped() {
    assert_eq!(Value::Object(tool_result_object(r#"{"a": [1]}"#.into(), false)), json!({"a": [1]}));
    assert_eq!(Value::Object(tool_result_object("[1]".into(), false)), json!({"result": "[1]"}));
    assert_eq!(
        Value::Object(tool_result_object(r#"{"a": 1}"#.into(), true)),
        json!({"error": "{\"a\": 1}"})
    );
}

// ---------------------------------------------------------------------------
// read_chat_response
// ---------------------------------------------------------------------------

fn response_body() -> Bytes {
    Bytes::from(
        json!({
            "candidates": [{
                "content": {
                    "parts": [
                        {"text": "I should look up the weather first.", "thought": true},
                        {"text": "Let me check the weather in Boston."},
                        {
                            "functionCall": {
                                "name": "get_weather",
                                "args": {"location": "Boston, MA", "unit": "celsius"}
                            },
                            "thoughtSignature": SIGNATURE
                        },
                        {"functionCall": {"id": "fc-7", "name": "get_time", "args": {"timezone": "America/New_York"}}}
                    ],
                    "role": "model"
                },
                "finishReason": "STOP",
                "index": 0,
                "safetyRatings": [
                    {"category": "HARM_CATEGORY_HATE_SPEECH", "probability": "NEGLIGIBLE"}
                ]
            }],
            "usageMetadata": {
                "promptTokenCount": 120,
                "candidatesTokenCount": 25,
                "totalTokenCount": 245,
                "cachedContentTokenCount": 64,
                "thoughtsTokenCount": 100,
                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 120}],
                "cacheTokensDetails": [{"modality": "TEXT", "tokenCount": 64}]
            },
            "modelVersion": "gemini-2.5-flash-preview-05-20",
            "responseId": "mJ3SaPLhC4GfqtsPs7Cf2Ag"
        })
        .to_string(),
    )
}

#[test]
fn reads_text_thoughts_function_calls_and_usage() {
    let body = response_body();
    let req = request(Vec::new());
    let resp = read_chat_response(&req, "gemini-2.5-flash", body.clone()).unwrap();
    assert_eq!(
        resp,
        ChatResponse {
            id: "mJ3SaPLhC4GfqtsPs7Cf2Ag".into(),
            model: "gemini-2.5-flash-preview-05-20".into(),
            created: 0,
            choices: vec![Choice {
                index: 0,
                message: msg(
                    Role::Assistant,
                    vec![
                        Part::Thinking {
                            text: "I should look up the weather first.".into(),
                            signature: None
                        },
                        text("Let me check the weather in Boston."),
                        call(
                            &format!("call_mJ3SaPLhC4GfqtsPs7Cf2Ag_0{SIG_SEP}{SIGNATURE_IN_ID}"),
                            "get_weather",
                            r#"{"location":"Boston, MA","unit":"celsius"}"#
                        ),
                        call("fc-7", "get_time", r#"{"timezone":"America/New_York"}"#),
                    ]
                ),
                finish_reason: Some(FinishReason::ToolCalls),
            }],
            usage: Usage {
                input_tokens: 120,
                output_tokens: 125,
                cache_read_tokens: 64,
                cache_creation_tokens: 0,
                reasoning_tokens: 100,
            },
            native: Some(NativeResponse { format: Format::Gemini, body }),
        }
    );
}

/// A call read from Gemini and echoed back by a client carries its
/// signature back to the same part.
#[test]
fn thought_signature_survives_the_round_trip() {
    let req = request(Vec::new());
    let resp = read_chat_response(&req, "gemini-2.5-flash", response_body()).unwrap();
    let calls: Vec<Part> = resp.choices[0]
        .message
        .content
        .iter()
        .filter(|p| matches!(p, Part::ToolCall { .. }))
        .cloned()
        .collect();
    let ids: Vec<String> = calls
        .iter()
        .map(|p| match p {
            Part::ToolCall { id, .. } => id.clone(),
            _ => unreachable!(),
        })
        .collect();
    let next = request(vec![
        Message::text(Role::User, "Weather in Boston?"),
        msg(Role::Assistant, calls),
        result(&ids[0], vec![text(r#"{"temp": 22}"#)], false),
        result(&ids[1], vec![text("09:30")], false),
    ]);
    let body = written(&next);
    assert_eq!(
        body["contents"][1],
        json!({
            "role": "model",
            "parts": [
                {
                    "functionCall": {"name": "get_weather", "args": {"location": "Boston, MA", "unit": "celsius"}},
                    "thoughtSignature": SIGNATURE
                },
                {"functionCall": {"name": "get_time", "args": {"timezone": "America/New_York"}}}
            ]
        })
    );
    assert_eq!(
        body["contents"][2]["parts"],
        json!([
            {"functionResponse": {"name": "get_weather", "response": {"temp": 22}}},
            {"functionResponse": {"name": "get_time", "response": {"result": "09:30"}}}
        ])
    );
}

#[test]
fn blocked_prompt_reads_as_one_filtered_choice() {
    let body = Bytes::from(
        json!({
            "promptFeedback": {
                "blockReason": "SAFETY",
                "safetyRatings": [
                    {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": true}
                ]
            },
            "usageMetadata": {"promptTokenCount": 8, "totalTokenCount": 8},
            "modelVersion": "gemini-2.0-flash"
        })
        .to_string(),
    );
    let resp = read_chat_response(&request(Vec::new()), "gemini-2.0-flash", body).unwrap();
    assert_eq!(
        resp.choices,
        vec![Choice {
            index: 0,
            message: msg(Role::Assistant, Vec::new()),
            finish_reason: Some(FinishReason::ContentFilter),
        }]
    );
    assert_eq!(resp.usage, Usage { input_tokens: 8, ..Usage::default() });
    assert!(resp.id.starts_with("gemini-"), "{}", resp.id);
}

#[test]
fn finish_reasons_map() {
    let body = Bytes::from(
        json!({
            "candidates": [
                {"finishReason": "SAFETY", "index": 0, "safetyRatings": [
                    {"category": "HARM_CATEGORY_HARASSMENT", "probability": "HIGH", "blocked": true}
                ]},
                {"content": {"parts": [{"text": "Once upon a"}], "role": "model"}, "finishReason": "MAX_TOKENS", "index": 1},
                {"content": {"parts": [{"text": "Hi"}], "role": "model"}, "finishReason": "STOP", "index": 2},
                {"content": {"parts": [{"text": "x"}], "role": "model"}, "finishReason": "MALFORMED_FUNCTION_CALL", "index": 3},
                {"content": {"parts": [{"text": "y"}], "role": "model"}, "index": 4}
            ]
        })
        .to_string(),
    );
    let resp = read_chat_response(&request(Vec::new()), "gemini-2.0-flash", body).unwrap();
    let reasons: Vec<_> = resp.choices.iter().map(|c| (c.index, c.finish_reason.clone())).collect();
    assert_eq!(
        reasons,
        vec![
            (0, Some(FinishReason::ContentFilter)),
            (1, Some(FinishReason::Length)),
            (2, Some(FinishReason::Stop)),
            (3, Some(FinishReason::Other("MALFORMED_FUNCTION_CALL".into()))),
            (4, None),
        ]
    );
    assert_eq!(resp.model, "gemini-2.0-flash");
    for reason in ["RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"] {
        assert_eq!(read_finish_reason(reason, false), FinishReason::ContentFilter);
    }
}

#[test]
fn function_call_arguments_keep_the_text_gemini_sent() {
    let body = Bytes::from_static(
        br#"{"candidates": [{"content": {"role": "model", "parts": [
            {"functionCall": {"name": "f", "args": {"zeta": 1, "alpha": [true, null]}}},
            {"functionCall": {"name": "g"}}
        ]}, "finishReason": "STOP"}], "responseId": "r"}"#,
    );
    let resp = read_chat_response(&request(Vec::new()), "m", body).unwrap();
    assert_eq!(
        resp.choices[0].message.content,
        vec![
            call("call_r_0", "f", r#"{"zeta": 1, "alpha": [true, null]}"#),
            call("call_r_1", "g", "{}"),
        ]
    );
}

#[test]
fn undecodable_response_names_the_field() {
    let err = read_chat_response(
        &request(Vec::new()),
        "m",
        Bytes::from_static(br#"{"candidates": [{"index": "zero"}]}"#),
    )
    .unwrap_err();
    assert!(err.message.contains("candidates[0].index"), "{}", err.message);
    assert!(read_chat_response(&request(Vec::new()), "m", Bytes::from_static(b"{} x")).is_err());
}

// ---------------------------------------------------------------------------
// StreamReader
// ---------------------------------------------------------------------------

fn read_stream(bytes: &str) -> Vec<Result<StreamChunk, StreamError>> {
    let mut parser = SseParser::default();
    parser.push(bytes.as_bytes()).unwrap();
    parser.finish();
    let mut reader = StreamReader::new(&request(Vec::new()), "gemini-2.5-flash");
    let mut out = Vec::new();
    while let Some(event) = parser.next_event() {
        out.push(reader.read(&event));
    }
    out
}

fn sse(chunks: &[Value]) -> String {
    chunks.iter().map(|c| format!("data: {c}\r\n\r\n")).collect()
}

#[test]
fn reads_a_streamed_answer_with_text_a_function_call_and_usage() {
    let chunks = [
        json!({
            "candidates": [{"content": {"parts": [{"text": "**Planning** the lookup", "thought": true}], "role": "model"}, "index": 0}],
            "usageMetadata": {"promptTokenCount": 31, "totalTokenCount": 31},
            "modelVersion": "gemini-2.5-flash",
            "responseId": "6xDTaNPGE5fZnsEP2bbN0Q4"
        }),
        json!({
            "candidates": [{"content": {"parts": [{"text": "Checking the"}], "role": "model"}}],
            "usageMetadata": {"promptTokenCount": 31, "candidatesTokenCount": 3, "totalTokenCount": 84, "thoughtsTokenCount": 50},
            "modelVersion": "gemini-2.5-flash",
            "responseId": "6xDTaNPGE5fZnsEP2bbN0Q4"
        }),
        json!({
            "candidates": [{"content": {"parts": [{"text": " weather now."}], "role": "model"}}],
            "usageMetadata": {"promptTokenCount": 31, "candidatesTokenCount": 6, "totalTokenCount": 87, "thoughtsTokenCount": 50},
            "modelVersion": "gemini-2.5-flash",
            "responseId": "6xDTaNPGE5fZnsEP2bbN0Q4"
        }),
        json!({
            "candidates": [{
                "content": {"parts": [
                    {"functionCall": {"name": "get_weather", "args": {"location": "Paris"}}, "thoughtSignature": SIGNATURE},
                    {"functionCall": {"name": "get_time", "args": {}}}
                ], "role": "model"},
                "finishReason": "STOP"
            }],
            "usageMetadata": {"promptTokenCount": 31, "candidatesTokenCount": 20, "totalTokenCount": 101, "thoughtsTokenCount": 50, "cachedContentTokenCount": 16},
            "modelVersion": "gemini-2.5-flash",
            "responseId": "6xDTaNPGE5fZnsEP2bbN0Q4"
        }),
    ];
    let text = sse(&chunks);
    let results = read_stream(&text);
    assert_eq!(results.len(), 4);
    let chunks: Vec<StreamChunk> = results.into_iter().map(Result::unwrap).collect();
    for chunk in &chunks {
        assert!(!chunk.done);
        let native = chunk.native.as_ref().unwrap();
        assert_eq!(native.format, Format::Gemini);
        assert_eq!(native.event, None);
        assert!(serde_json::from_str::<Value>(&native.data).is_ok());
    }
    let events: Vec<Vec<StreamEvent>> = chunks.into_iter().map(|c| c.events).collect();
    let usage = |output_tokens, cache_read_tokens, reasoning_tokens| {
        StreamEvent::Usage(Usage {
            input_tokens: 31,
            output_tokens,
            cache_read_tokens,
            cache_creation_tokens: 0,
            reasoning_tokens,
        })
    };
    let delta = |delta| StreamEvent::Delta { choice: 0, delta };
    assert_eq!(
        events,
        vec![
            vec![
                StreamEvent::Start {
                    id: "6xDTaNPGE5fZnsEP2bbN0Q4".into(),
                    model: "gemini-2.5-flash".into(),
                    created: 0
                },
                delta(Delta::Thinking("**Planning** the lookup".into())),
                usage(0, 0, 0),
            ],
            vec![delta(Delta::Text("Checking the".into())), usage(53, 0, 50)],
            vec![delta(Delta::Text(" weather now.".into())), usage(56, 0, 50)],
            vec![
                delta(Delta::ToolCallStart {
                    index: 0,
                    id: format!("call_6xDTaNPGE5fZnsEP2bbN0Q4_0{SIG_SEP}{SIGNATURE_IN_ID}"),
                    name: "get_weather".into()
                }),
                delta(Delta::ToolCallArguments {
                    index: 0,
                    fragment: r#"{"location":"Paris"}"#.into()
                }),
                delta(Delta::ToolCallStart {
                    index: 1,
                    id: "call_6xDTaNPGE5fZnsEP2bbN0Q4_1".into(),
                    name: "get_time".into()
                }),
                delta(Delta::ToolCallArguments { index: 1, fragment: "{}".into() }),
                StreamEvent::Finish { choice: 0, reason: FinishReason::ToolCalls },
                usage(70, 16, 50),
            ],
        ]
    );
}

#[test]
fn stream_text_answer_finishes_with_stop_and_ignores_signature_only_parts() {
    let chunks = [
        json!({
            "candidates": [{"content": {"parts": [{"text": "Hello"}], "role": "model"}, "index": 0}],
            "modelVersion": "gemini-2.0-flash"
        }),
        json!({
            "candidates": [{"content": {"parts": [{"text": "", "thoughtSignature": SIGNATURE}], "role": "model"}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 1, "totalTokenCount": 5},
            "modelVersion": "gemini-2.0-flash"
        }),
    ];
    let events: Vec<StreamEvent> =
        read_stream(&sse(&chunks)).into_iter().flat_map(|c| c.unwrap().events).collect();
    let StreamEvent::Start { id, model, created } = &events[0] else {
        panic!("{events:?}");
    };
    assert!(id.starts_with("gemini-"), "{id}");
    assert_eq!((model.as_str(), *created), ("gemini-2.0-flash", 0));
    assert_eq!(
        events[1..],
        [
            StreamEvent::Delta { choice: 0, delta: Delta::Text("Hello".into()) },
            StreamEvent::Finish { choice: 0, reason: FinishReason::Stop },
            StreamEvent::Usage(Usage { input_tokens: 4, output_tokens: 1, ..Usage::default() }),
        ]
    );
}

#[test]
fn stream_blocked_prompt_finishes_with_content_filter() {
    let chunks = [json!({
        "promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
        "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9},
        "modelVersion": "gemini-2.5-pro",
        "responseId": "r-1"
    })];
    let events = read_stream(&sse(&chunks)).remove(0).unwrap().events;
    assert_eq!(
        events,
        vec![
            StreamEvent::Start { id: "r-1".into(), model: "gemini-2.5-pro".into(), created: 0 },
            StreamEvent::Finish { choice: 0, reason: FinishReason::ContentFilter },
            StreamEvent::Usage(Usage { input_tokens: 9, ..Usage::default() }),
        ]
    );
}

#[test]
fn stream_error_chunk_is_an_upstream_error() {
    let text = sse(&[
        json!({
            "candidates": [{"content": {"parts": [{"text": "Hel"}], "role": "model"}, "index": 0}],
            "modelVersion": "gemini-2.5-flash",
            "responseId": "r-2"
        }),
        json!({"error": {"code": 503, "message": "The model is overloaded. Please try again later.", "status": "UNAVAILABLE"}}),
    ]);
    let mut results = read_stream(&text);
    assert_eq!(
        results.pop().unwrap(),
        Err(StreamError::Upstream(UpstreamErrorBody {
            message: "The model is overloaded. Please try again later.".into(),
            kind: Some("UNAVAILABLE".into()),
            code: Some("503".into()),
        }))
    );
    assert!(results.pop().unwrap().is_ok());
}

#[test]
fn stream_garbage_is_a_decode_error() {
    let mut reader = StreamReader::new(&request(Vec::new()), "m");
    let event = SseEvent { event: None, data: "not json".into(), id: None };
    assert!(matches!(reader.read(&event), Err(StreamError::Decode(_))));
}

// ---------------------------------------------------------------------------
// Embeddings
// ---------------------------------------------------------------------------

#[test]
fn writes_batch_embed_contents() {
    let req = EmbeddingsRequest {
        model: "embed".into(),
        input: EmbeddingInput::Texts(vec![
            "What is the meaning of life?".into(),
            "How does the brain work?".into(),
        ]),
        dimensions: Some(768),
        user: Some("user-1".into()),
        native: None,
    };
    let body: Value =
        serde_json::from_slice(&write_embeddings_request(&req, "gemini-embedding-001").unwrap())
            .unwrap();
    insta::assert_json_snapshot!(body);

    let prefixed: Value = serde_json::from_slice(
        &write_embeddings_request(&req, "models/text-embedding-004").unwrap(),
    )
    .unwrap();
    assert_eq!(prefixed["requests"][1]["model"], "models/text-embedding-004");
}

#[test]
fn embeddings_refuse_token_input() {
    let req = EmbeddingsRequest {
        input: EmbeddingInput::Tokens(vec![vec![1, 2, 3]]),
        ..EmbeddingsRequest::default()
    };
    assert_eq!(
        write_embeddings_request(&req, "gemini-embedding-001").unwrap_err().message,
        "input: Gemini embeds text only; send the input as strings, not token arrays"
    );
}

#[test]
fn reads_batch_embed_contents() {
    let body = Bytes::from_static(
        br#"{
  "embeddings": [
    {"values": [0.013168523, -0.008711934, -0.046782676]},
    {"values": [-0.0010469664, 0.022357102, 0.005243031]}
  ]
}"#,
    );
    let resp = read_embeddings_response("gemini-embedding-001", body.clone()).unwrap();
    assert_eq!(
        resp,
        EmbeddingsResponse {
            model: "gemini-embedding-001".into(),
            embeddings: vec![
                vec![0.013168523, -0.008711934, -0.046782676],
                vec![-0.0010469664, 0.022357102, 0.005243031],
            ],
            usage: Usage::default(),
            native: Some(NativeResponse { format: Format::Gemini, body }),
        }
    );
    assert!(read_embeddings_response("m", Bytes::from_static(b"{\"embedding\": {}}")).is_err());
}

// ---------------------------------------------------------------------------
// read_error
// ---------------------------------------------------------------------------

fn quota_error() -> Value {
    json!({
        "error": {
            "code": 429,
            "message": "You exceeded your current quota, please check your plan and billing details.",
            "status": "RESOURCE_EXHAUSTED",
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [{
                        "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                        "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"
                    }]
                },
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "34s"}
            ]
        }
    })
}

#[test]
fn reads_error_bodies() {
    let expected = UpstreamErrorBody {
        message: "You exceeded your current quota, please check your plan and billing details."
            .into(),
        kind: Some("RESOURCE_EXHAUSTED".into()),
        code: Some("429".into()),
    };
    assert_eq!(read_error(quota_error().to_string().as_bytes()), Some(expected.clone()));
    let wrapped = json!([quota_error()]).to_string();
    assert_eq!(read_error(wrapped.as_bytes()), Some(expected));

    let invalid = json!({"error": {
        "code": 400,
        "message": "API key not valid. Please pass a valid API key.",
        "status": "INVALID_ARGUMENT",
        "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]
    }});
    assert_eq!(
        read_error(invalid.to_string().as_bytes()),
        Some(UpstreamErrorBody {
            message: "API key not valid. Please pass a valid API key.".into(),
            kind: Some("INVALID_ARGUMENT".into()),
            code: Some("400".into()),
        })
    );

    assert_eq!(read_error(b"<html>Bad Gateway</html>"), None);
    assert_eq!(read_error(b"{\"message\": \"no envelope\"}"), None);
    assert_eq!(read_error(b"[]"), None);
}

// ---------------------------------------------------------------------------
// Thought signatures in ids
// ---------------------------------------------------------------------------

#[test]
fn ids_without_signature_are_left_alone() {
    assert_eq!(split_signature("call_abc"), ("call_abc", None));
    assert_eq!(
        split_signature(&format!("call_abc{SIG_SEP}")),
        (&*format!("call_abc{SIG_SEP}"), None)
    );
    assert_eq!(id_with_signature("c".into(), None), "c");
    assert_eq!(id_with_signature("c".into(), Some("")), "c");
}

proptest! {
    /// Any signature Gemini sends comes back as the same standard base64,
    /// and the id carrying it stays within Anthropic's id alphabet.
    #[test]
    fn signature_round_trips_through_ids(
        bytes in proptest::collection::vec(any::<u8>(), 1..200),
        call_id in "[A-Za-z0-9_-]{1,24}",
    ) {
        let signature = STANDARD.encode(&bytes);
        let id = id_with_signature(call_id.clone(), Some(&signature));
        prop_assert!(id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'));
        let (own, carried) = split_signature(&id);
        prop_assert_eq!(own, call_id.as_str());
        prop_assert_eq!(signature_from_id(carried.unwrap()), signature);
    }
}

// ---------------------------------------------------------------------------
// Property: written conversations keep Gemini's rules
// ---------------------------------------------------------------------------

const TOOL_NAMES: [&str; 3] = ["get_weather", "get_time", "search_docs"];

/// One exchange: the user speaks, the assistant may call tools (whose
/// results follow in order) and may answer.
#[derive(Debug, Clone)]
struct Round {
    system: Option<String>,
    user: Vec<String>,
    assistant_text: Option<String>,
    calls: Vec<(usize, i64, Option<Vec<u8>>, bool)>,
    answer: Option<String>,
}

fn arb_round() -> impl Strategy<Value = Round> {
    let words = "[a-z ]{0,10}";
    (
        proptest::option::of(words),
        proptest::collection::vec(words, 1..3),
        proptest::option::of(words),
        proptest::collection::vec(
            (
                0..TOOL_NAMES.len(),
                any::<i64>(),
                proptest::option::of(proptest::collection::vec(any::<u8>(), 1..40)),
                any::<bool>(),
            ),
            0..3,
        ),
        proptest::option::of(words),
    )
        .prop_map(|(system, user, assistant_text, calls, answer)| Round {
            system,
            user,
            assistant_text,
            calls,
            answer,
        })
}

/// What the written body must contain, collected while building the request.
#[derive(Debug, Default)]
struct Expected {
    system: Vec<String>,
    texts: Vec<String>,
    /// Per call, in order: name, arguments and signature.
    calls: Vec<(String, Value, Option<String>)>,
}

/// Records a text the body must contain: empty texts are not written.
fn keep(texts: &mut Vec<String>, t: &str) {
    if !t.is_empty() {
        texts.push(t.to_owned());
    }
}

fn build_conversation(rounds: &[Round]) -> (ChatRequest, Expected) {
    let mut messages = Vec::new();
    let mut expected = Expected::default();
    for (r, round) in rounds.iter().enumerate() {
        if let Some(system) = &round.system {
            keep(&mut expected.system, system);
            messages.push(Message::text(Role::System, system.clone()));
        }
        for t in &round.user {
            keep(&mut expected.texts, t);
        }
        messages.push(msg(Role::User, round.user.iter().map(|t| text(t)).collect()));
        let mut parts = Vec::new();
        if let Some(t) = &round.assistant_text {
            keep(&mut expected.texts, t);
            parts.push(text(t));
        }
        let mut results = Vec::new();
        for (k, (tool, n, signature, is_error)) in round.calls.iter().enumerate() {
            let name = TOOL_NAMES[*tool];
            let args = json!({"n": n, "round": r});
            let signature = signature.as_ref().map(|b| STANDARD.encode(b));
            let id = id_with_signature(format!("call_{r}_{k}"), signature.as_deref());
            parts.push(call(&id, name, &args.to_string()));
            expected.calls.push((name.to_owned(), args, signature));
            results.push(result(&id, vec![text(&format!("result {n}"))], *is_error));
        }
        messages.push(msg(Role::Assistant, parts));
        messages.extend(results);
        if let Some(answer) = &round.answer {
            keep(&mut expected.texts, answer);
            messages.push(Message::text(Role::Assistant, answer.clone()));
        }
    }
    let mut req = request(messages);
    req.tools = TOOL_NAMES
        .iter()
        .map(|name| Tool {
            name: (*name).into(),
            description: None,
            parameters: json!({"type": "object"}),
            strict: None,
        })
        .collect();
    req.tool_choice = Some(ToolChoice::Auto);
    (req, expected)
}

fn part_names<'v>(turn: &'v Value, key: &str) -> Vec<&'v str> {
    turn["parts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p.get(key)?.get("name")?.as_str())
        .collect()
}

proptest! {
    #[test]
    fn written_conversations_follow_gemini_rules(
        rounds in proptest::collection::vec(arb_round(), 1..6),
    ) {
        let (req, expected) = build_conversation(&rounds);
        let body = written(&req);
        let contents = body["contents"].as_array().unwrap();

        // Roles are user and model, alternate, and no turn is empty.
        for (i, turn) in contents.iter().enumerate() {
            let role = turn["role"].as_str().unwrap();
            prop_assert!(role == "user" || role == "model");
            prop_assert!(!turn["parts"].as_array().unwrap().is_empty());
            for part in turn["parts"].as_array().unwrap() {
                prop_assert_eq!(part.as_object().unwrap().len() - usize::from(part.get("thoughtSignature").is_some()), 1);
            }
            if i > 0 {
                prop_assert_ne!(contents[i - 1]["role"].as_str(), Some(role));
            }
        }

        // Every user turn with function responses answers, name by name,
        // the calls of the model turn just before it, responses first.
        for (i, turn) in contents.iter().enumerate() {
            let responses = part_names(turn, "functionResponse");
            if responses.is_empty() {
                continue;
            }
            prop_assert!(i > 0);
            prop_assert_eq!(turn["role"].as_str(), Some("user"));
            prop_assert_eq!(part_names(&contents[i - 1], "functionCall"), responses.clone());
            let parts = turn["parts"].as_array().unwrap();
            prop_assert!(parts[..responses.len()].iter().all(|p| p.get("functionResponse").is_some()));
        }

        // No text is lost or reordered.
        let texts: Vec<String> = contents
            .iter()
            .flat_map(|t| t["parts"].as_array().unwrap().iter())
            .filter_map(|p| Some(p.get("text")?.as_str()?.to_owned()))
            .collect();
        prop_assert_eq!(texts, expected.texts);
        let system: Vec<String> = body
            .get("systemInstruction")
            .map(|s| {
                s["parts"].as_array().unwrap().iter().map(|p| p["text"].as_str().unwrap().to_owned()).collect()
            })
            .unwrap_or_default();
        prop_assert_eq!(system, expected.system);

        // Every call is written with its arguments and its own signature.
        let calls: Vec<(String, Value, Option<String>)> = contents
            .iter()
            .flat_map(|t| t["parts"].as_array().unwrap().iter())
            .filter_map(|p| {
                let call = p.get("functionCall")?;
                Some((
                    call["name"].as_str()?.to_owned(),
                    call["args"].clone(),
                    p.get("thoughtSignature").and_then(|s| s.as_str()).map(str::to_owned),
                ))
            })
            .collect();
        prop_assert_eq!(calls, expected.calls);

        let declared = body["tools"][0]["functionDeclarations"].as_array().unwrap().len();
        prop_assert_eq!(declared, TOOL_NAMES.len());
    }
}
