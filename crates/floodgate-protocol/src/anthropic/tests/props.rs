//! Property tests: canonical requests survive a trip through the Anthropic
//! format.

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::*;
use crate::anthropic::{parse_chat_request, write_chat_request};

fn short_text() -> impl Strategy<Value = String> {
    // Any characters, escapes and non-ASCII included.
    ".{0,12}"
}

fn name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9]{0,7}"
}

fn id() -> impl Strategy<Value = String> {
    "(toolu_|call_)[A-Za-z0-9]{1,10}"
}

fn image() -> impl Strategy<Value = Part> {
    prop_oneof![
        "https://example\\.com/[a-z]{1,8}\\.png".prop_map(|url| image_url(&url)),
        (
            prop::sample::select(vec!["image/jpeg", "image/png", "image/gif", "image/webp"]),
            "[A-Za-z0-9+/]{0,16}={0,2}",
        )
            .prop_map(|(media_type, data)| image_base64(media_type, &data)),
    ]
}

fn text_part() -> impl Strategy<Value = Part> {
    short_text().prop_map(|t| text(&t))
}

/// JSON values without floats: `serde_json` only round-trips floats exactly
/// with its `float_roundtrip` feature, which is not what is under test here.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        short_text().prop_map(Value::String),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map(name(), inner, 0..3)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

fn json_object() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map(name(), json_value(), 0..3).prop_map(|m| m.into_iter().collect())
}

fn tool_call_part() -> impl Strategy<Value = Part> {
    (id(), name(), json_object())
        .prop_map(|(id, name, input)| tool_call(&id, &name, &Value::Object(input).to_string()))
}

fn signed_thinking() -> impl Strategy<Value = Part> {
    (short_text(), "[A-Za-z0-9+/]{1,12}").prop_map(|(t, s)| thinking(&t, Some(&s)))
}

fn user_message(min_parts: usize) -> impl Strategy<Value = Message> {
    prop::collection::vec(prop_oneof![3 => text_part(), 1 => image()], min_parts..4)
        .prop_map(|content| message(Role::User, content))
}

fn assistant_message() -> impl Strategy<Value = Message> {
    prop::collection::vec(
        prop_oneof![3 => text_part(), 2 => tool_call_part(), 1 => signed_thinking()],
        0..4,
    )
    .prop_map(|content| message(Role::Assistant, content))
}

fn tool_message() -> impl Strategy<Value = Message> {
    (id(), prop::collection::vec(prop_oneof![3 => text_part(), 1 => image()], 0..3), any::<bool>())
        .prop_map(|(id, content, is_error)| tool_result(&id, content, is_error))
}

/// The kinds of conversation messages, drawn before their contents so the
/// one ordering rule can be applied.
#[derive(Debug, Clone, Copy)]
enum Kind {
    User,
    Assistant,
    Tool,
}

fn conversation() -> impl Strategy<Value = Vec<Message>> {
    let kinds = prop::collection::vec(
        prop::sample::select(vec![Kind::User, Kind::Assistant, Kind::Tool]),
        1..7,
    );
    kinds.prop_flat_map(|kinds| {
        let mut after_tool = false;
        let mut strategies: Vec<BoxedStrategy<Message>> = Vec::with_capacity(kinds.len());
        for kind in kinds {
            strategies.push(match kind {
                // A User message right after a Tool message shares its turn,
                // so it needs a part to be told apart from nothing.
                Kind::User => user_message(usize::from(after_tool)).boxed(),
                Kind::Assistant => assistant_message().boxed(),
                Kind::Tool => tool_message().boxed(),
            });
            after_tool = matches!(kind, Kind::Tool);
        }
        strategies
    })
}

fn system_message() -> impl Strategy<Value = Option<Message>> {
    prop::option::of(
        prop::collection::vec(text_part(), 1..3).prop_map(|c| message(Role::System, c)),
    )
}

fn tools() -> impl Strategy<Value = Vec<Tool>> {
    let tool = (name(), prop::option::of(short_text()), json_object()).prop_map(
        |(name, description, properties)| Tool {
            name,
            description,
            parameters: json!({"type": "object", "properties": properties}),
            strict: None,
        },
    );
    prop::collection::vec(tool, 0..3)
}

fn tool_choice() -> impl Strategy<Value = (Option<ToolChoice>, Option<bool>)> {
    let forcing = prop_oneof![
        Just(ToolChoice::Auto),
        Just(ToolChoice::Required),
        name().prop_map(ToolChoice::Tool),
    ];
    prop_oneof![
        Just((None, None)),
        Just((Some(ToolChoice::None), None)),
        (forcing, prop::option::of(any::<bool>())).prop_map(|(c, p)| (Some(c), p)),
    ]
}

/// Exactly representable decimals, like the ones clients send.
fn unit_float() -> impl Strategy<Value = Option<f64>> {
    prop::option::of((0u32..=100).prop_map(|n| f64::from(n) / 100.0))
}

prop_compose! {
    /// A canonical request in the Anthropic-representable normal form:
    ///
    /// - at most one System message, first, with one or more text parts;
    /// - then User, Assistant and Tool messages in any order, where User
    ///   messages hold text and image parts, Assistant messages hold text,
    ///   tool-call and signed thinking parts, and each Tool message holds
    ///   exactly one tool result of text and image parts;
    /// - a User message directly after a Tool message is not empty (it joins
    ///   the tool results' turn, where an empty one would vanish);
    /// - tool-call arguments are compact JSON objects (as `serde_json` writes
    ///   them); no message has a name;
    /// - tools have an object schema and no `strict`; `parallel_tool_calls`
    ///   is set only with an auto, any or named tool choice;
    /// - `max_tokens` is set, there is no response format, and
    ///   `include_usage` is true (Anthropic clients always get usage).
    fn normal_form_request()(
        model in "[a-z0-9.-]{1,16}",
        system in system_message(),
        conversation in conversation(),
        tools in tools(),
        (tool_choice, parallel_tool_calls) in tool_choice(),
        max_tokens in 1u32..200_000,
        temperature in unit_float(),
        top_p in unit_float(),
        top_k in prop::option::of(0u32..500),
        stop in prop::collection::vec(short_text(), 0..3),
        stream in any::<bool>(),
        user in prop::option::of(short_text()),
    ) -> ChatRequest {
        ChatRequest {
            model,
            messages: system.into_iter().chain(conversation).collect(),
            tools,
            tool_choice,
            parallel_tool_calls,
            max_tokens: Some(max_tokens),
            temperature,
            top_p,
            top_k,
            stop,
            stream,
            include_usage: true,
            response_format: None,
            user,
            native: None,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// canonical → write → parse is the identity on the normal form
    /// (`native` aside, which parse fills in).
    #[test]
    fn canonical_requests_survive_write_then_parse(req in normal_form_request()) {
        let body = write_chat_request(&req, &req.model).unwrap();
        let mut parsed = parse_chat_request(&body).unwrap();
        prop_assert!(parsed.native.is_some());
        parsed.native = None;
        prop_assert_eq!(parsed, req);
    }

    /// Parsing a written request and writing it again (now from the native
    /// body) gives the same bytes' meaning back.
    #[test]
    fn parsed_requests_write_back_the_same_body(req in normal_form_request()) {
        let body = write_chat_request(&req, &req.model).unwrap();
        let parsed = parse_chat_request(&body).unwrap();
        let again = write_chat_request(&parsed, &req.model).unwrap();
        prop_assert_eq!(json_of(&again), json_of(&body));
    }
}
