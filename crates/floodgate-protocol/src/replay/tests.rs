//! Tests of replaying and collecting streams: the two are inverses, a replayed
//! answer reaches OpenAI and Anthropic clients as a stream their SDKs read,
//! and a stream that did not complete is never collected.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::sse::{SseEvent, SseParser};
use crate::{anthropic, openai};

fn text(text: &str) -> Part {
    Part::Text { text: text.to_owned() }
}

fn thinking(text: &str, signature: Option<&str>) -> Part {
    Part::Thinking { text: text.to_owned(), signature: signature.map(str::to_owned) }
}

fn tool_call(id: &str, name: &str, arguments: &str) -> Part {
    Part::ToolCall { id: id.to_owned(), name: name.to_owned(), arguments: arguments.to_owned() }
}

fn choice(index: u32, content: Vec<Part>, finish_reason: FinishReason) -> Choice {
    Choice {
        index,
        message: Message { role: Role::Assistant, content, name: None },
        finish_reason: Some(finish_reason),
    }
}

fn usage(input: u32, output: u32) -> Usage {
    Usage { input_tokens: input, output_tokens: output, ..Usage::default() }
}

fn answer(choices: Vec<Choice>, usage: Usage) -> ChatResponse {
    ChatResponse {
        id: "resp_1".to_owned(),
        model: "gpt-4o-mini-2024-07-18".to_owned(),
        created: 1_700_000_000,
        choices,
        usage,
        native: None,
    }
}

fn collect(chunks: &[StreamChunk]) -> Option<ChatResponse> {
    let mut collector = StreamCollector::default();
    for chunk in chunks {
        collector.push(chunk);
    }
    collector.finish()
}

fn sse_events(bytes: &[u8]) -> Vec<SseEvent> {
    let mut parser = SseParser::default();
    parser.push(bytes).unwrap();
    parser.finish();
    std::iter::from_fn(|| parser.next_event()).collect()
}

fn json_of(data: &str) -> Value {
    serde_json::from_str(data).unwrap()
}

fn openai_client() -> ChatRequest {
    let body = json!({
        "model": "chat",
        "messages": [{"role": "user", "content": "Weather in Boston?"}],
        "stream": true,
        "stream_options": {"include_usage": true}
    });
    openai::parse_chat_request(body.to_string().as_bytes()).unwrap()
}

fn anthropic_client() -> ChatRequest {
    let body = json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "Weather in Boston?"}],
        "stream": true
    });
    anthropic::parse_chat_request(body.to_string().as_bytes()).unwrap()
}

/// What an OpenAI client receives for a replayed answer.
fn written_for_openai(resp: &ChatResponse) -> Vec<u8> {
    let mut writer = openai::StreamWriter::new(&openai_client());
    let mut out = Vec::new();
    for chunk in replay_chunks(resp) {
        writer.write(&chunk, &mut out);
    }
    writer.finish(&mut out);
    out
}

/// What an Anthropic client receives for a replayed answer.
fn written_for_anthropic(resp: &ChatResponse) -> Vec<u8> {
    let mut writer = anthropic::StreamWriter::new(&anthropic_client());
    let mut out = Vec::new();
    for chunk in replay_chunks(resp) {
        writer.write(&chunk, &mut out);
    }
    writer.finish(&mut out);
    out
}

/// The answer an OpenAI stream reads back as.
fn read_openai(bytes: &[u8]) -> Option<ChatResponse> {
    let mut reader = openai::StreamReader::new(&openai_client());
    let chunks: Vec<StreamChunk> =
        sse_events(bytes).iter().map(|event| reader.read(event).unwrap()).collect();
    collect(&chunks)
}

/// The answer an Anthropic stream reads back as.
fn read_anthropic(bytes: &[u8]) -> Option<ChatResponse> {
    let mut reader = anthropic::StreamReader::new(&anthropic_client());
    let chunks: Vec<StreamChunk> =
        sse_events(bytes).iter().map(|event| reader.read(event).unwrap()).collect();
    collect(&chunks)
}

// ------------------------------------------------------------ round trips

fn assert_round_trip(resp: &ChatResponse) {
    assert_eq!(collect(&replay_chunks(resp)).as_ref(), Some(resp));
}

#[test]
fn plain_text_round_trips() {
    assert_round_trip(&answer(
        vec![choice(0, vec![text("Hello! How can I help?")], FinishReason::Stop)],
        usage(12, 7),
    ));
}

#[test]
fn text_and_two_tool_calls_round_trip() {
    assert_round_trip(&answer(
        vec![choice(
            0,
            vec![
                text("Checking both cities."),
                tool_call("call_1", "get_weather", r#"{"city":"Boston"}"#),
                tool_call("call_2", "get_weather", r#"{"city":"Paris"}"#),
            ],
            FinishReason::ToolCalls,
        )],
        usage(82, 18),
    ));
}

#[test]
fn signed_thinking_then_text_round_trips() {
    assert_round_trip(&answer(
        vec![choice(
            0,
            vec![thinking("The user wants a greeting.", Some("EqQBCgIYAhIM")), text("Hi!")],
            FinishReason::Stop,
        )],
        usage(30, 40),
    ));
}

#[test]
fn two_choices_round_trip_in_index_order() {
    let resp = answer(
        vec![
            choice(0, vec![text("First answer.")], FinishReason::Stop),
            choice(1, vec![text("Second answer.")], FinishReason::Length),
        ],
        usage(10, 20),
    );
    assert_round_trip(&resp);
    let mut shuffled = resp.clone();
    shuffled.choices.reverse();
    assert_eq!(collect(&replay_chunks(&shuffled)), Some(resp));
}

#[test]
fn every_finish_reason_round_trips() {
    for reason in [
        FinishReason::Stop,
        FinishReason::Length,
        FinishReason::ToolCalls,
        FinishReason::StopSequence(Some("###".to_owned())),
        FinishReason::StopSequence(None),
        FinishReason::ContentFilter,
        FinishReason::Other("pause_turn".to_owned()),
    ] {
        assert_round_trip(&answer(vec![choice(0, vec![text("Done")], reason)], usage(1, 1)));
    }
}

#[test]
fn usage_with_cached_and_reasoning_tokens_round_trips() {
    let usage = Usage {
        input_tokens: 2_100,
        output_tokens: 300,
        cache_read_tokens: 2_000,
        cache_creation_tokens: 50,
        reasoning_tokens: 120,
    };
    assert_round_trip(&answer(vec![choice(0, vec![text("Cached.")], FinishReason::Stop)], usage));
}

#[test]
fn empty_parts_and_an_empty_choice_round_trip() {
    assert_round_trip(&answer(
        vec![
            choice(
                0,
                vec![text(""), tool_call("call_1", "ping", ""), thinking("", Some("sig"))],
                FinishReason::ToolCalls,
            ),
            choice(1, Vec::new(), FinishReason::ContentFilter),
        ],
        Usage::default(),
    ));
}

#[test]
fn the_replayed_stream_is_one_event_per_chunk_ending_done_with_usage_also_at_the_start() {
    let resp = answer(
        vec![choice(
            0,
            vec![thinking("Hm.", Some("sig")), text("Hi"), tool_call("call_1", "f", "{}")],
            FinishReason::ToolCalls,
        )],
        usage(3, 4),
    );
    let chunks = replay_chunks(&resp);
    let d = |delta| vec![StreamEvent::Delta { choice: 0, delta }];
    let events: Vec<Vec<StreamEvent>> = chunks.iter().map(|c| c.events.clone()).collect();
    assert_eq!(
        events,
        vec![
            vec![
                StreamEvent::Start {
                    id: "resp_1".to_owned(),
                    model: "gpt-4o-mini-2024-07-18".to_owned(),
                    created: 1_700_000_000,
                },
                StreamEvent::Usage(usage(3, 4))
            ],
            d(Delta::Thinking("Hm.".to_owned())),
            d(Delta::ThinkingSignature("sig".to_owned())),
            d(Delta::Text("Hi".to_owned())),
            d(Delta::ToolCallStart { index: 0, id: "call_1".to_owned(), name: "f".to_owned() }),
            d(Delta::ToolCallArguments { index: 0, fragment: "{}".to_owned() }),
            vec![StreamEvent::Finish { choice: 0, reason: FinishReason::ToolCalls }],
            vec![StreamEvent::Usage(usage(3, 4))],
            Vec::new(),
        ]
    );
    assert!(chunks.iter().all(|c| c.native.is_none()));
    let done: Vec<bool> = chunks.iter().map(|c| c.done).collect();
    assert_eq!(done.iter().filter(|d| **d).count(), 1);
    assert_eq!(done.last(), Some(&true));
}

#[test]
fn a_missing_finish_reason_replays_as_stop() {
    let mut resp = answer(vec![choice(0, vec![text("Hi")], FinishReason::Stop)], usage(1, 1));
    resp.choices[0].finish_reason = None;
    let collected = collect(&replay_chunks(&resp)).unwrap();
    assert_eq!(collected.choices[0].finish_reason, Some(FinishReason::Stop));
}

#[test]
fn the_native_body_is_not_kept() {
    let mut resp = answer(vec![choice(0, vec![text("Hi")], FinishReason::Stop)], usage(1, 1));
    resp.native = Some(NativeResponse { format: Format::OpenAi, body: "{}".into() });
    let collected = collect(&replay_chunks(&resp)).unwrap();
    assert_eq!(collected, ChatResponse { native: None, ..resp });
}

// --------------------------------------------------- collecting upstreams

#[test]
fn collects_an_openai_stream_with_interleaved_parallel_calls() {
    let chunk = |delta: Value, finish: Value| {
        json!({
            "id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1_694_268_190,
            "model": "gpt-4o", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]
        })
        .to_string()
    };
    let call = |index: u32, id: Option<&str>, arguments: &str| {
        let mut call = json!({"index": index, "function": {"arguments": arguments}});
        if let Some(id) = id {
            call["id"] = json!(id);
            call["type"] = json!("function");
            call["function"]["name"] = json!("get_weather");
        }
        json!({"tool_calls": [call]})
    };
    let datas = [
        chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        chunk(json!({"content": "Let me "}), Value::Null),
        chunk(json!({"content": "check."}), Value::Null),
        chunk(call(0, Some("call_a"), ""), Value::Null),
        chunk(call(1, Some("call_b"), "{\"city\":"), Value::Null),
        chunk(call(0, None, "{\"city\":\"Boston\"}"), Value::Null),
        chunk(call(1, None, "\"Paris\"}"), Value::Null),
        chunk(json!({}), json!("tool_calls")),
        json!({
            "id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1_694_268_190,
            "model": "gpt-4o", "choices": [],
            "usage": {"prompt_tokens": 82, "completion_tokens": 18, "total_tokens": 100,
                      "prompt_tokens_details": {"cached_tokens": 64}}
        })
        .to_string(),
        "[DONE]".to_owned(),
    ];
    let mut bytes = Vec::new();
    for data in &datas {
        crate::sse::write_event(&mut bytes, None, data);
    }
    let collected = read_openai(&bytes).unwrap();
    assert_eq!(
        collected,
        ChatResponse {
            id: "chatcmpl-9".to_owned(),
            model: "gpt-4o".to_owned(),
            created: 1_694_268_190,
            choices: vec![choice(
                0,
                vec![
                    text("Let me check."),
                    tool_call("call_a", "get_weather", r#"{"city":"Boston"}"#),
                    tool_call("call_b", "get_weather", r#"{"city":"Paris"}"#),
                ],
                FinishReason::ToolCalls,
            )],
            usage: Usage { cache_read_tokens: 64, ..usage(82, 18) },
            native: None,
        }
    );
}

/// Thinking, text and a tool call, as Anthropic streams them (a `ping`
/// included), with cache usage in `message_start`.
const ANTHROPIC_STREAM: &str = r#"event: message_start
data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-5","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"cache_read_input_tokens":100,"output_tokens":1}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}

event: ping
data: {"type":"ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Need the "}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"weather."}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQBCg"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Checking"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"."}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: content_block_start
data: {"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\"city\": "}}

event: content_block_delta
data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"\"Boston\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":2}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}

event: message_stop
data: {"type":"message_stop"}

"#;

#[test]
fn collects_an_anthropic_stream_with_thinking_and_a_tool_call() {
    let collected = read_anthropic(ANTHROPIC_STREAM.as_bytes()).unwrap();
    assert_eq!(
        collected,
        ChatResponse {
            id: "msg_1".to_owned(),
            model: "claude-sonnet-4-5".to_owned(),
            created: 0,
            choices: vec![choice(
                0,
                vec![
                    thinking("Need the weather.", Some("EqQBCg")),
                    text("Checking."),
                    tool_call("toolu_1", "get_weather", r#"{"city": "Boston"}"#),
                ],
                FinishReason::ToolCalls,
            )],
            usage: Usage { cache_read_tokens: 100, ..usage(125, 89) },
            native: None,
        }
    );
}

// ------------------------------------------------------- incomplete streams

fn tool_answer() -> ChatResponse {
    answer(
        vec![choice(
            0,
            vec![text("Checking."), tool_call("call_1", "get_weather", r#"{"city":"Boston"}"#)],
            FinishReason::ToolCalls,
        )],
        usage(82, 18),
    )
}

#[test]
fn a_stream_cut_before_its_finish_is_not_collected() {
    let chunks = replay_chunks(&tool_answer());
    let finish = chunks
        .iter()
        .position(|c| c.events.iter().any(|e| matches!(e, StreamEvent::Finish { .. })))
        .unwrap();
    for end in 0..=finish {
        assert_eq!(collect(&chunks[..end]), None, "cut after {end} chunks");
    }
}

#[test]
fn a_stream_without_start_is_not_collected() {
    let chunks = replay_chunks(&tool_answer());
    assert_eq!(collect(&chunks[1..]), None);
}

#[test]
fn a_stream_without_a_choice_is_not_collected() {
    let resp = answer(Vec::new(), usage(5, 0));
    assert_eq!(collect(&replay_chunks(&resp)), None);
}

#[test]
fn one_unfinished_choice_of_two_spoils_the_answer() {
    let resp = answer(
        vec![
            choice(0, vec![text("One.")], FinishReason::Stop),
            choice(1, vec![text("Two.")], FinishReason::Stop),
        ],
        usage(4, 4),
    );
    let chunks: Vec<StreamChunk> = replay_chunks(&resp)
        .into_iter()
        .filter(|c| !c.events.iter().any(|e| matches!(e, StreamEvent::Finish { choice: 1, .. })))
        .collect();
    assert_eq!(collect(&chunks), None);
}

#[test]
fn arguments_of_a_call_that_never_started_spoil_the_answer() {
    let mut chunks = replay_chunks(&tool_answer());
    chunks.retain(|c| {
        !c.events
            .iter()
            .any(|e| matches!(e, StreamEvent::Delta { delta: Delta::ToolCallStart { .. }, .. }))
    });
    assert_eq!(collect(&chunks), None);
}

#[test]
fn a_stream_cut_in_the_middle_of_the_bytes_is_not_collected() {
    let resp = tool_answer();
    let openai = written_for_openai(&resp);
    assert_eq!(read_openai(&openai[..event_end_before(&openai, openai.len() / 2)]), None);
    let anthropic = written_for_anthropic(&resp);
    let cut = event_end_before(&anthropic, anthropic.len() / 2);
    assert_eq!(read_anthropic(&anthropic[..cut]), None);
}

/// Where the last whole SSE event before `at` ends, so the readers see only
/// whole events, as after a dropped connection.
fn event_end_before(bytes: &[u8], at: usize) -> usize {
    bytes[..at].windows(2).rposition(|pair| pair == b"\n\n").map_or(0, |i| i + 2)
}

// ----------------------------------------------------- written for clients

/// Text, two tool calls, cached tokens: what both formats carry.
fn shared_answer() -> ChatResponse {
    answer(
        vec![choice(
            0,
            vec![
                text("Checking both cities."),
                tool_call("call_1", "get_weather", r#"{"city":"Boston"}"#),
                tool_call("call_2", "get_weather", r#"{"city":"Paris"}"#),
            ],
            FinishReason::ToolCalls,
        )],
        Usage { cache_read_tokens: 64, ..usage(82, 18) },
    )
}

#[test]
fn an_openai_client_reads_the_replayed_answer() {
    let resp = shared_answer();
    let bytes = written_for_openai(&resp);
    assert_eq!(read_openai(&bytes).as_ref(), Some(&resp));

    let events = sse_events(&bytes);
    let (last, chunks) = events.split_last().unwrap();
    assert_eq!(last.data, "[DONE]");
    assert!(events.iter().all(|e| e.event.is_none()));
    let chunks: Vec<Value> = chunks.iter().map(|e| json_of(&e.data)).collect();
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["id"], "resp_1");
        assert_eq!(chunk["model"], "gpt-4o-mini-2024-07-18");
        assert_eq!(chunk["created"], 1_700_000_000);
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let with_usage: Vec<&Value> = chunks.iter().filter(|c| !c["usage"].is_null()).collect();
    assert_eq!(with_usage.len(), 1);
    assert_eq!(with_usage[0]["choices"], json!([]));
    assert_eq!(with_usage[0]["usage"]["prompt_tokens"], 82);
    assert_eq!(with_usage[0]["usage"]["prompt_tokens_details"]["cached_tokens"], 64);
    let reasons: Vec<&Value> = chunks
        .iter()
        .flat_map(|c| c["choices"].as_array().into_iter().flatten())
        .map(|c| &c["finish_reason"])
        .filter(|r| !r.is_null())
        .collect();
    assert_eq!(reasons, vec!["tool_calls"]);
}

#[test]
fn an_openai_client_reads_both_choices_and_unsigned_thinking() {
    let resp = answer(
        vec![
            choice(0, vec![thinking("Short.", None), text("Hi.")], FinishReason::Stop),
            choice(1, vec![text("Hello.")], FinishReason::Length),
        ],
        Usage { reasoning_tokens: 5, ..usage(9, 12) },
    );
    assert_eq!(read_openai(&written_for_openai(&resp)), Some(resp));
}

#[test]
fn an_anthropic_client_reads_the_replayed_answer() {
    let resp = shared_answer();
    let bytes = written_for_anthropic(&resp);
    // Anthropic streams carry no timestamp.
    let expected = ChatResponse { created: 0, ..resp.clone() };
    assert_eq!(read_anthropic(&bytes), Some(expected));

    let events = sse_events(&bytes);
    let data: Vec<Value> = events.iter().map(|e| json_of(&e.data)).collect();
    for (event, data) in events.iter().zip(&data) {
        assert_eq!(event.event.as_deref(), data["type"].as_str());
    }
    let names: Vec<&str> = events.iter().filter_map(|e| e.event.as_deref()).collect();
    let block = ["content_block_start", "content_block_delta", "content_block_stop"];
    let expected_names: Vec<&str> = std::iter::once("message_start")
        .chain(block.iter().copied().cycle().take(9))
        .chain(["message_delta", "message_stop"])
        .collect();
    assert_eq!(names, expected_names);
    assert_eq!(data[0]["message"]["id"], "resp_1");
    assert_eq!(data[0]["message"]["model"], "gpt-4o-mini-2024-07-18");
    // The input tokens are in `message_start` too, as Anthropic sends them.
    assert_eq!(data[0]["message"]["usage"]["input_tokens"], 18, "{}", data[0]);
    assert_eq!(data[0]["message"]["usage"]["output_tokens"], 0);
    assert_eq!(data[1]["content_block"]["type"], "text");
    assert_eq!(
        data[4]["content_block"],
        json!({"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {}})
    );
    assert_eq!(
        data[5]["delta"],
        json!({"type": "input_json_delta", "partial_json": r#"{"city":"Boston"}"#})
    );
    let indices: Vec<u64> = data.iter().filter_map(|d| d["index"].as_u64()).collect();
    assert_eq!(indices, vec![0, 0, 0, 1, 1, 1, 2, 2, 2]);
    let message_delta = &data[data.len() - 2];
    assert_eq!(message_delta["delta"]["stop_reason"], "tool_use");
    assert_eq!(
        message_delta["usage"],
        json!({
            "input_tokens": 18,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 64,
            "output_tokens": 18
        })
    );
}

#[test]
fn an_anthropic_client_reads_signed_thinking_and_the_stop_sequence() {
    let resp = answer(
        vec![choice(
            0,
            vec![thinking("Count to three.", Some("EqQBCg")), text("1, 2, 3")],
            FinishReason::StopSequence(Some("###".to_owned())),
        )],
        Usage { cache_creation_tokens: 1_000, ..usage(1_200, 30) },
    );
    let bytes = written_for_anthropic(&resp);
    assert_eq!(read_anthropic(&bytes), Some(ChatResponse { created: 0, ..resp }));
    let events = sse_events(&bytes);
    let message_delta = json_of(&events[events.len() - 2].data);
    assert_eq!(
        message_delta["delta"],
        json!({"stop_reason": "stop_sequence", "stop_sequence": "###"})
    );
}

#[test]
fn consecutive_signed_thinking_parts_are_separate_anthropic_blocks() {
    let resp = answer(
        vec![choice(
            0,
            vec![thinking("First.", Some("sig_1")), thinking("Second.", Some("sig_2"))],
            FinishReason::Stop,
        )],
        usage(1, 1),
    );
    let bytes = written_for_anthropic(&resp);
    assert_eq!(read_anthropic(&bytes), Some(ChatResponse { created: 0, ..resp }));
    let starts: Vec<Value> = sse_events(&bytes)
        .iter()
        .map(|e| json_of(&e.data))
        .filter(|d| d["type"] == "content_block_start")
        .collect();
    assert_eq!(starts.len(), 2);
    assert!(starts.iter().all(|s| s["content_block"]["type"] == "thinking"));
}

// ------------------------------------------------------------- properties

fn short_text() -> impl Strategy<Value = String> {
    // Any characters, escapes and non-ASCII included.
    ".{0,12}"
}

fn some_text() -> impl Strategy<Value = String> {
    ".{1,12}"
}

fn arguments() -> impl Strategy<Value = String> {
    prop::collection::btree_map("[a-z]{1,6}", some_text(), 0..3)
        .prop_map(|map| json!(map).to_string())
}

fn tool_call_part() -> impl Strategy<Value = Part> {
    ("(call_|toolu_)[A-Za-z0-9]{1,10}", "[a-z][a-z0-9_]{0,7}", arguments())
        .prop_map(|(id, name, arguments)| tool_call(&id, &name, &arguments))
}

/// Parts in the shape a stream produces, so collecting gives them back.
fn stream_shaped(parts: &[Part]) -> bool {
    parts.windows(2).all(|pair| {
        !matches!(
            pair,
            [Part::Text { .. }, Part::Text { .. }]
                | [Part::Thinking { signature: None, .. }, Part::Thinking { .. }]
        )
    })
}

fn finish_reason() -> impl Strategy<Value = FinishReason> {
    prop_oneof![
        Just(FinishReason::Stop),
        Just(FinishReason::Length),
        Just(FinishReason::ToolCalls),
        Just(FinishReason::ContentFilter),
        proptest::option::of(some_text()).prop_map(FinishReason::StopSequence),
        "[a-z_]{1,10}".prop_map(FinishReason::Other),
    ]
}

fn any_usage() -> impl Strategy<Value = Usage> {
    (any::<u32>(), any::<u32>(), any::<u32>(), any::<u32>(), any::<u32>()).prop_map(
        |(input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens, reasoning)| {
            Usage {
                input_tokens,
                output_tokens,
                cache_read_tokens,
                cache_creation_tokens,
                reasoning_tokens: reasoning,
            }
        },
    )
}

fn contents(part: BoxedStrategy<Part>) -> impl Strategy<Value = Vec<Part>> {
    prop::collection::vec(part, 0..5).prop_filter("stream-shaped", |parts| stream_shaped(parts))
}

fn any_answer() -> impl Strategy<Value = ChatResponse> {
    let part = prop_oneof![
        3 => short_text().prop_map(|t| text(&t)),
        2 => tool_call_part(),
        1 => (short_text(), proptest::option::of(short_text()))
            .prop_map(|(t, s)| thinking(&t, s.as_deref())),
    ]
    .boxed();
    let choices = prop::collection::vec((contents(part), finish_reason()), 1..4).prop_map(|c| {
        c.into_iter()
            .zip(0..)
            .map(|((content, reason), index)| choice(index, content, reason))
            .collect()
    });
    (".{0,12}", ".{0,12}", any::<u64>(), choices, any_usage()).prop_map(
        |(id, model, created, choices, usage)| ChatResponse {
            id,
            model,
            created,
            choices,
            usage,
            native: None,
        },
    )
}

/// One choice of non-empty parts (writers skip empty deltas), ending as
/// both formats can say.
fn written_answer(thinking_part: BoxedStrategy<Part>) -> impl Strategy<Value = ChatResponse> {
    let part = prop_oneof![
        3 => some_text().prop_map(|t| text(&t)),
        2 => tool_call_part(),
        1 => thinking_part,
    ]
    .boxed();
    let reason = prop_oneof![
        Just(FinishReason::Stop),
        Just(FinishReason::Length),
        Just(FinishReason::ToolCalls),
        Just(FinishReason::ContentFilter),
    ];
    (contents(part), reason, 0..10_000u32, 0..10_000u32, 0..10_000u32).prop_map(
        |(content, reason, uncached, cached, output)| {
            let usage = Usage {
                input_tokens: uncached + cached,
                cache_read_tokens: cached,
                ..usage(0, output)
            };
            answer(vec![choice(0, content, reason)], usage)
        },
    )
}

proptest! {
    #[test]
    fn collecting_a_replay_gives_the_answer_back(resp in any_answer()) {
        prop_assert_eq!(collect(&replay_chunks(&resp)), Some(resp));
    }

    /// OpenAI carries reasoning text but not its signature.
    #[test]
    fn openai_clients_read_a_replay_as_the_answer(
        resp in written_answer(some_text().prop_map(|t| thinking(&t, None)).boxed()),
    ) {
        prop_assert_eq!(read_openai(&written_for_openai(&resp)), Some(resp));
    }

    /// Anthropic carries signed thinking but no timestamp.
    #[test]
    fn anthropic_clients_read_a_replay_as_the_answer(
        resp in written_answer(
            (some_text(), "[A-Za-z0-9+/]{1,12}").prop_map(|(t, s)| thinking(&t, Some(&s))).boxed(),
        ),
    ) {
        let expected = ChatResponse { created: 0, ..resp.clone() };
        prop_assert_eq!(read_anthropic(&written_for_anthropic(&resp)), Some(expected));
    }
}
