//! Reading upstream streams and writing client streams.

use serde_json::json;

use super::*;
use crate::anthropic::{StreamReader, StreamWriter, parse_chat_request};
use crate::error::{StreamError, UpstreamErrorBody};
use crate::sse::{SseEvent, SseParser};

fn sse_events(transcript: &str) -> Vec<SseEvent> {
    let mut parser = SseParser::default();
    parser.push(transcript.as_bytes()).unwrap();
    parser.finish();
    let mut events = Vec::new();
    while let Some(event) = parser.next_event() {
        events.push(event);
    }
    events
}

fn read_all(req: &ChatRequest, transcript: &str) -> Vec<StreamChunk> {
    let mut reader = StreamReader::new(req);
    sse_events(transcript).iter().map(|event| reader.read(event).unwrap()).collect()
}

fn events_of(chunks: &[StreamChunk]) -> Vec<StreamEvent> {
    chunks.iter().flat_map(|c| c.events.clone()).collect()
}

fn delta(delta: Delta) -> StreamEvent {
    StreamEvent::Delta { choice: 0, delta }
}

fn text_delta(text: &str) -> StreamEvent {
    delta(Delta::Text(text.to_owned()))
}

fn args(index: u32, fragment: &str) -> StreamEvent {
    delta(Delta::ToolCallArguments { index, fragment: fragment.to_owned() })
}

fn usage(input: u32, output: u32, cache_read: u32, cache_creation: u32) -> StreamEvent {
    StreamEvent::Usage(Usage {
        input_tokens: input,
        output_tokens: output,
        cache_read_tokens: cache_read,
        cache_creation_tokens: cache_creation,
        reasoning_tokens: 0,
    })
}

/// The basic streaming example of Anthropic's documentation.
const TEXT_STREAM: &str = r#"event: message_start
data: {"type": "message_start", "message": {"id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY", "type": "message", "role": "assistant", "content": [], "model": "claude-sonnet-4-5-20250929", "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 25, "output_tokens": 1}}}

event: content_block_start
data: {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "!"}}

event: content_block_stop
data: {"type": "content_block_stop", "index": 0}

event: message_delta
data: {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence":null}, "usage": {"output_tokens": 15}}

event: message_stop
data: {"type": "message_stop"}

"#;

#[test]
fn reads_the_documented_text_stream() {
    let chunks = read_all(&ChatRequest::default(), TEXT_STREAM);
    let per_event: Vec<Vec<StreamEvent>> = chunks.iter().map(|c| c.events.clone()).collect();
    assert_eq!(
        per_event,
        vec![
            vec![
                StreamEvent::Start {
                    id: "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY".to_owned(),
                    model: "claude-sonnet-4-5-20250929".to_owned(),
                    created: 0,
                },
                usage(25, 1, 0, 0),
            ],
            vec![],
            vec![],
            vec![text_delta("Hello")],
            vec![text_delta("!")],
            vec![],
            vec![
                StreamEvent::Finish { choice: 0, reason: FinishReason::Stop },
                usage(25, 15, 0, 0),
            ],
            vec![],
        ]
    );
    let done: Vec<bool> = chunks.iter().map(|c| c.done).collect();
    assert_eq!(done, [false, false, false, false, false, false, false, true]);
    // Every event is kept for verbatim replay, with its name and data.
    for (chunk, event) in chunks.iter().zip(sse_events(TEXT_STREAM)) {
        assert_eq!(
            chunk.native,
            Some(NativeEvent {
                format: Format::Anthropic,
                event: event.event.clone(),
                data: event.data.clone(),
            })
        );
    }
}

/// The documented tool-use stream, plus a second call that gets no input.
const TOOL_STREAM: &str = r#"event: message_start
data: {"type":"message_start","message":{"id":"msg_014p7gG3wDgGV9EUtLvnow3U","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","stop_sequence":null,"usage":{"input_tokens":472,"output_tokens":2},"content":[],"stop_reason":null}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Okay, let's check the weather"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":"get_weather","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"location\":"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":" \"San Fra"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"ncisco, CA\", \"unit\": \"fah"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"renheit\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: content_block_start
data: {"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_02","name":"get_time","input":{}}}

event: content_block_stop
data: {"type":"content_block_stop","index":2}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}

event: message_stop
data: {"type":"message_stop"}

"#;

#[test]
fn reads_the_documented_tool_use_stream() {
    let chunks = read_all(&ChatRequest::default(), TOOL_STREAM);
    assert_eq!(
        events_of(&chunks),
        vec![
            StreamEvent::Start {
                id: "msg_014p7gG3wDgGV9EUtLvnow3U".to_owned(),
                model: "claude-sonnet-4-5-20250929".to_owned(),
                created: 0,
            },
            usage(472, 2, 0, 0),
            text_delta("Okay, let's check the weather"),
            delta(Delta::ToolCallStart {
                index: 0,
                id: "toolu_01T1x1fJ34qAmk2tNTrN7Up6".to_owned(),
                name: "get_weather".to_owned(),
            }),
            args(0, "{\"location\":"),
            args(0, " \"San Fra"),
            args(0, "ncisco, CA\", \"unit\": \"fah"),
            args(0, "renheit\"}"),
            delta(Delta::ToolCallStart {
                index: 1,
                id: "toolu_02".to_owned(),
                name: "get_time".to_owned(),
            }),
            args(1, "{}"),
            StreamEvent::Finish { choice: 0, reason: FinishReason::ToolCalls },
            usage(472, 89, 0, 0),
        ]
    );
}

/// The documented extended-thinking stream, with cache usage in
/// `message_start` and the fuller `message_delta` usage of newer versions.
const THINKING_STREAM: &str = r#"event: message_start
data: {"type": "message_start", "message": {"id": "msg_01...", "type": "message", "role": "assistant", "content": [], "model": "claude-sonnet-4-5-20250929", "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 10, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 2000, "output_tokens": 1}}}

event: content_block_start
data: {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "I need to find the GCD of 1071 and 462 using the Euclidean algorithm.\n\n1071 = 2 × 462 + 147"}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "\n462 = 3 × 147 + 21"}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds..."}}

event: content_block_stop
data: {"type": "content_block_stop", "index": 0}

event: content_block_start
data: {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "The greatest common divisor of 1071 and 462 is **21**."}}

event: content_block_stop
data: {"type": "content_block_stop", "index": 1}

event: message_delta
data: {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"input_tokens": 10, "cache_creation_input_tokens": 50, "cache_read_input_tokens": 2000, "output_tokens": 503}}

event: message_stop
data: {"type": "message_stop"}

"#;

#[test]
fn reads_the_documented_thinking_stream() {
    let chunks = read_all(&ChatRequest::default(), THINKING_STREAM);
    assert_eq!(
        events_of(&chunks),
        vec![
            StreamEvent::Start {
                id: "msg_01...".to_owned(),
                model: "claude-sonnet-4-5-20250929".to_owned(),
                created: 0,
            },
            usage(2010, 1, 2000, 0),
            delta(Delta::Thinking(
                "I need to find the GCD of 1071 and 462 using the Euclidean algorithm.\n\n\
                 1071 = 2 × 462 + 147"
                    .to_owned()
            )),
            delta(Delta::Thinking("\n462 = 3 × 147 + 21".to_owned())),
            delta(Delta::ThinkingSignature(
                "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds...".to_owned()
            )),
            text_delta("The greatest common divisor of 1071 and 462 is **21**."),
            StreamEvent::Finish { choice: 0, reason: FinishReason::Stop },
            usage(2060, 503, 2000, 50),
        ]
    );
}

#[test]
fn an_error_event_is_an_upstream_error() {
    let mut reader = StreamReader::new(&ChatRequest::default());
    let event = SseEvent {
        event: Some("error".to_owned()),
        data:
            r#"{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}"#
                .to_owned(),
        id: None,
    };
    assert_eq!(
        reader.read(&event),
        Err(StreamError::Upstream(UpstreamErrorBody {
            message: "Overloaded".to_owned(),
            kind: Some("overloaded_error".to_owned()),
            code: None,
        }))
    );
}

#[test]
fn an_error_event_of_another_shape_is_still_an_upstream_error() {
    let mut reader = StreamReader::new(&ChatRequest::default());
    let event = SseEvent {
        event: Some("error".to_owned()),
        data: r#"{"type": "error", "error": {"code": 529}}"#.to_owned(),
        id: None,
    };
    assert_eq!(
        reader.read(&event),
        Err(StreamError::Upstream(UpstreamErrorBody {
            message: r#"the upstream stream failed: {"type": "error", "error": {"code": 529}}"#
                .to_owned(),
            kind: None,
            code: None,
        }))
    );
}

#[test]
fn unknown_events_and_blocks_yield_nothing_but_are_kept() {
    let transcript = r#"event: future_event
data: {"type": "future_event", "detail": 1}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"server_tool_use","id":"srvtoolu_014hJH82Qum7Td6UV8gDXThB","name":"web_search","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\"query\": \"weather NYC today\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"citations_delta","citation":{"type":"char_location","cited_text":"x"}}}

"#;
    let chunks = read_all(&ChatRequest::default(), transcript);
    assert_eq!(chunks.len(), 5);
    for chunk in &chunks {
        assert_eq!(chunk.events, vec![]);
        assert!(chunk.native.is_some());
        assert!(!chunk.done);
    }
    assert_eq!(chunks[0].native.as_ref().unwrap().event.as_deref(), Some("future_event"));
}

#[test]
fn events_without_a_name_are_named_by_their_type() {
    let mut reader = StreamReader::new(&ChatRequest::default());
    let chunk = reader
        .read(&SseEvent { event: None, data: r#"{"type":"message_stop"}"#.to_owned(), id: None })
        .unwrap();
    assert!(chunk.done);
    assert_eq!(chunk.native.unwrap().event.as_deref(), Some("message_stop"));
}

#[test]
fn malformed_events_are_decode_errors() {
    let mut reader = StreamReader::new(&ChatRequest::default());
    let not_json = SseEvent {
        event: Some("content_block_delta".to_owned()),
        data: "{oops".to_owned(),
        id: None,
    };
    assert!(matches!(reader.read(&not_json), Err(StreamError::Decode(_))));
    let missing_index = SseEvent {
        event: Some("content_block_delta".to_owned()),
        data: r#"{"type":"content_block_delta","delta":{"type":"text_delta","text":"a"}}"#
            .to_owned(),
        id: None,
    };
    assert_eq!(
        reader.read(&missing_index).unwrap_err().to_string(),
        "undecodable upstream stream event: undecodable Anthropic content_block_delta event: \
         missing field `index`"
    );
}

fn json_mode_request() -> ChatRequest {
    ChatRequest { response_format: Some(ResponseFormat::JsonObject), ..ChatRequest::default() }
}

const JSON_TOOL_STREAM: &str = r#"event: message_start
data: {"type":"message_start","message":{"id":"msg_01J","type":"message","role":"assistant","model":"claude-sonnet-4-5","stop_sequence":null,"usage":{"input_tokens":40,"output_tokens":1},"content":[],"stop_reason":null}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_J","name":"json_response","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\"city\": \"Pa"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"ris\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":12}}

event: message_stop
data: {"type":"message_stop"}

"#;

#[test]
fn the_response_format_tool_streams_as_text() {
    let chunks = read_all(&json_mode_request(), JSON_TOOL_STREAM);
    assert_eq!(
        events_of(&chunks),
        vec![
            StreamEvent::Start {
                id: "msg_01J".to_owned(),
                model: "claude-sonnet-4-5".to_owned(),
                created: 0,
            },
            usage(40, 1, 0, 0),
            text_delta("{\"city\": \"Pa"),
            text_delta("ris\"}"),
            StreamEvent::Finish { choice: 0, reason: FinishReason::Stop },
            usage(40, 12, 0, 0),
        ]
    );
    // Without a response format the same stream is an ordinary tool call.
    let plain = events_of(&read_all(&ChatRequest::default(), JSON_TOOL_STREAM));
    assert!(plain.contains(&delta(Delta::ToolCallStart {
        index: 0,
        id: "toolu_J".to_owned(),
        name: "json_response".to_owned(),
    })));
    assert!(plain.contains(&StreamEvent::Finish { choice: 0, reason: FinishReason::ToolCalls }));
}

// ----------------------------------------------------------------- writer

fn anthropic_client() -> ChatRequest {
    parse_chat_request(
        json!({
            "model": "claude-sonnet-4-5", "max_tokens": 1024, "stream": true,
            "messages": [{"role": "user", "content": "Hello"}]
        })
        .to_string()
        .as_bytes(),
    )
    .unwrap()
}

#[test]
fn anthropic_streams_pass_through_verbatim() {
    for transcript in [TEXT_STREAM, TOOL_STREAM, THINKING_STREAM] {
        let req = anthropic_client();
        let mut writer = StreamWriter::new(&req);
        let mut out = Vec::new();
        for chunk in read_all(&req, transcript) {
            writer.write(&chunk, &mut out);
        }
        writer.finish(&mut out);
        writer.finish(&mut out);
        assert_eq!(String::from_utf8(out).unwrap(), transcript);
    }
}

#[test]
fn a_replayed_stream_cut_before_message_stop_is_closed() {
    let req = anthropic_client();
    let mut writer = StreamWriter::new(&req);
    let mut out = Vec::new();
    let chunks = read_all(&req, TEXT_STREAM);
    for chunk in &chunks[..7] {
        writer.write(chunk, &mut out);
    }
    writer.finish(&mut out);
    let expected_end = "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
    let out = String::from_utf8(out).unwrap();
    assert!(out.ends_with(expected_end), "{out}");
    assert_eq!(out.matches("message_stop").count(), 2);
}

fn chunk(events: Vec<StreamEvent>) -> StreamChunk {
    StreamChunk { events, native: None, done: false }
}

/// Canonical events as an OpenAI upstream yields them: text, then a tool
/// call, the finish reason, and usage only after it.
fn openai_like_chunks() -> Vec<StreamChunk> {
    vec![
        chunk(vec![StreamEvent::Start {
            id: "chatcmpl-123".to_owned(),
            model: "gpt-4o-mini".to_owned(),
            created: 1_694_268_190,
        }]),
        chunk(vec![text_delta("")]),
        chunk(vec![text_delta("Let me check")]),
        chunk(vec![text_delta(" the weather.")]),
        chunk(vec![delta(Delta::ToolCallStart {
            index: 0,
            id: "call_abc".to_owned(),
            name: "get_weather".to_owned(),
        })]),
        chunk(vec![args(0, "")]),
        chunk(vec![args(0, "{\"location\":")]),
        chunk(vec![args(0, "\"Paris\"}")]),
        chunk(vec![StreamEvent::Finish { choice: 0, reason: FinishReason::ToolCalls }]),
        chunk(vec![usage(120, 30, 100, 0)]),
        StreamChunk {
            events: vec![],
            native: Some(NativeEvent {
                format: Format::OpenAi,
                event: None,
                data: "[DONE]".to_owned(),
            }),
            done: true,
        },
    ]
}

#[test]
fn synthesises_an_anthropic_stream_from_canonical_events() {
    // The client is Anthropic but the upstream is not: its OpenAI-native
    // events must not be replayed.
    let req = anthropic_client();
    let mut writer = StreamWriter::new(&req);
    let mut out = Vec::new();
    for chunk in openai_like_chunks() {
        writer.write(&chunk, &mut out);
    }
    writer.finish(&mut out);
    let len = out.len();
    writer.finish(&mut out);
    assert_eq!(out.len(), len, "finish is idempotent");
    let text = String::from_utf8(out).unwrap();
    insta::assert_snapshot!(text);

    // Read back as an upstream stream, it says the same thing.
    let reread = events_of(&read_all(&ChatRequest::default(), &text));
    assert_eq!(
        reread,
        vec![
            StreamEvent::Start {
                id: "chatcmpl-123".to_owned(),
                model: "gpt-4o-mini".to_owned(),
                created: 0,
            },
            usage(0, 0, 0, 0),
            text_delta("Let me check"),
            text_delta(" the weather."),
            delta(Delta::ToolCallStart {
                index: 0,
                id: "call_abc".to_owned(),
                name: "get_weather".to_owned(),
            }),
            args(0, "{\"location\":"),
            args(0, "\"Paris\"}"),
            StreamEvent::Finish { choice: 0, reason: FinishReason::ToolCalls },
            usage(120, 30, 100, 0),
        ]
    );
}

#[test]
fn synthesises_thinking_and_stop_sequences() {
    let mut writer = StreamWriter::new(&ChatRequest::default());
    let mut out = Vec::new();
    let events = vec![
        StreamEvent::Start { id: "msg_x".to_owned(), model: "m".to_owned(), created: 0 },
        delta(Delta::Thinking("hmm".to_owned())),
        delta(Delta::ThinkingSignature("sig".to_owned())),
        text_delta("Done"),
        // Another choice is not written: Anthropic has one.
        StreamEvent::Delta { choice: 1, delta: Delta::Text("ignored".to_owned()) },
        StreamEvent::Finish {
            choice: 0,
            reason: FinishReason::StopSequence(Some("###".to_owned())),
        },
    ];
    writer.write(&chunk(events.clone()), &mut out);
    writer.finish(&mut out);
    let text = String::from_utf8(out).unwrap();
    let reread = events_of(&read_all(&ChatRequest::default(), &text));
    assert_eq!(
        reread,
        vec![
            StreamEvent::Start { id: "msg_x".to_owned(), model: "m".to_owned(), created: 0 },
            usage(0, 0, 0, 0),
            events[1].clone(),
            events[2].clone(),
            events[3].clone(),
            events[5].clone(),
            usage(0, 0, 0, 0),
        ]
    );
}

#[test]
fn a_stream_without_start_is_still_valid() {
    let req = ChatRequest { model: "alias".to_owned(), ..ChatRequest::default() };
    let mut writer = StreamWriter::new(&req);
    let mut out = Vec::new();
    writer.write(&chunk(vec![text_delta("hi")]), &mut out);
    writer.finish(&mut out);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        concat!(
            "event: message_start\n",
            r#"data: {"type":"message_start","message":{"id":"","type":"message","role":"assistant","model":"alias","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":0,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":0}}}"#,
            "\n\n",
            "event: content_block_start\n",
            r#"data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            "\n\n",
            "event: content_block_delta\n",
            r#"data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hi"}}"#,
            "\n\n",
            "event: content_block_stop\n",
            r#"data: {"type":"content_block_stop","index":0}"#,
            "\n\n",
            "event: message_delta\n",
            r#"data: {"type":"message_delta","delta":{"stop_reason":null,"stop_sequence":null},"usage":{"input_tokens":0,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":0}}"#,
            "\n\n",
            "event: message_stop\n",
            r#"data: {"type":"message_stop"}"#,
            "\n\n",
        )
    );
}

#[test]
fn errors_are_written_as_error_events_and_end_the_stream() {
    let mut writer = StreamWriter::new(&ChatRequest::default());
    let mut out = Vec::new();
    writer.write_error(
        &UpstreamErrorBody {
            message: "Overloaded".to_owned(),
            kind: Some("overloaded_error".to_owned()),
            code: None,
        },
        &mut out,
    );
    writer.write_error(
        &UpstreamErrorBody {
            message: "upstream connection reset".to_owned(),
            kind: None,
            code: None,
        },
        &mut out,
    );
    writer.finish(&mut out);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        concat!(
            "event: error\n",
            r#"data: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            "\n\n",
            "event: error\n",
            r#"data: {"type":"error","error":{"type":"api_error","message":"upstream connection reset"}}"#,
            "\n\n",
        )
    );
}
