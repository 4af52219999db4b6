//! Cross-format property: any valid OpenAI chat request, sent to an Anthropic
//! upstream and read back as an Anthropic client's request, then sent to an
//! OpenAI upstream, keeps every message, part, tool and parameter the two
//! formats share.
//!
//! The generator builds well-formed conversations the way clients do: an
//! optional system prompt, then user turns, assistant turns with text and/or
//! tool calls, and one tool message answering each call.

use floodgate_protocol::openai::Dialect;
use floodgate_protocol::{ChatRequest, Message, Part, Role, anthropic, openai};
use proptest::prelude::*;
use serde_json::{Value, json};

fn text() -> impl Strategy<Value = String> {
    "[A-Za-z0-9 ,.!?'\"\\\\é中]{1,24}".prop_filter("not blank", |s| !s.trim().is_empty())
}

fn image() -> impl Strategy<Value = Value> {
    prop_oneof![
        ("(png|jpeg|gif|webp)", "[A-Za-z0-9+/]{4,16}").prop_map(|(kind, data)| {
            json!({"type": "image_url", "image_url": {"url": format!("data:image/{kind};base64,{data}=")}})
        }),
        "[a-z]{3,10}".prop_map(|name| json!({"type": "image_url", "image_url": {"url": format!("https://example.com/{name}.png")}})),
    ]
}

fn user_message() -> impl Strategy<Value = Value> {
    prop_oneof![
        text().prop_map(|t| json!({"role": "user", "content": t})),
        (text(), proptest::collection::vec(image(), 0..3), proptest::option::of(text())).prop_map(
            |(t, images, tail)| {
                let mut parts = vec![json!({"type": "text", "text": t})];
                parts.extend(images);
                if let Some(tail) = tail {
                    parts.push(json!({"type": "text", "text": tail}));
                }
                json!({"role": "user", "content": parts})
            }
        ),
    ]
}

fn arguments() -> impl Strategy<Value = String> {
    proptest::collection::btree_map(
        "[a-z]{1,6}",
        prop_oneof![
            any::<i32>().prop_map(Value::from),
            text().prop_map(Value::from),
            any::<bool>().prop_map(Value::from),
        ],
        0..4,
    )
    .prop_map(|m| Value::Object(m.into_iter().collect()).to_string())
}

/// An assistant turn, and the tool messages answering its calls.
fn assistant_turn(tools: usize) -> impl Strategy<Value = Vec<Value>> {
    (
        proptest::option::of(text()),
        proptest::collection::vec((0..tools.max(1), arguments(), text()), if tools == 0 { 0..1 } else { 0..3 }),
        "[a-z0-9]{6}",
    )
        .prop_filter("an assistant turn says something", |(t, calls, _)| t.is_some() || !calls.is_empty())
        .prop_map(|(text, calls, salt)| {
            let mut assistant = json!({"role": "assistant", "content": text});
            let mut out = Vec::new();
            if !calls.is_empty() {
                let tool_calls: Vec<Value> = calls
                    .iter()
                    .enumerate()
                    .map(|(i, (tool, args, _))| {
                        json!({"id": format!("call_{salt}_{i}"), "type": "function",
                               "function": {"name": format!("tool_{tool}"), "arguments": args}})
                    })
                    .collect();
                assistant["tool_calls"] = Value::Array(tool_calls);
            }
            out.push(assistant);
            for (i, (_, _, result)) in calls.iter().enumerate() {
                out.push(json!({"role": "tool", "tool_call_id": format!("call_{salt}_{i}"), "content": result}));
            }
            out
        })
}

fn request() -> impl Strategy<Value = Value> {
    (0usize..4).prop_flat_map(|tools| {
        (
            proptest::option::of(text()),
            proptest::collection::vec((user_message(), proptest::option::of(assistant_turn(tools))), 1..4),
            Just(tools),
            prop_oneof![Just(None), Just(Some(json!("auto"))), Just(Some(json!("none"))), Just(Some(json!("required")))],
            proptest::option::of(prop_oneof![Just(false), Just(true)]),
            (0u32..2000, proptest::option::of(0.0f64..1.0), proptest::option::of(0.0f64..1.0)),
            proptest::collection::vec("[a-z#]{1,5}", 0..3),
            any::<bool>(),
        )
    })
    .prop_map(|(system, turns, tools, choice, parallel, (max_tokens, temperature, top_p), stop, stream)| {
        let mut messages = Vec::new();
        if let Some(system) = system {
            messages.push(json!({"role": "system", "content": system}));
        }
        for (user, assistant) in turns {
            messages.push(user);
            messages.extend(assistant.unwrap_or_default());
        }
        let mut body = json!({"model": "chat", "messages": messages, "max_tokens": max_tokens + 1, "stream": stream});
        if tools > 0 {
            let tools: Vec<Value> = (0..tools)
                .map(|i| json!({"type": "function", "function": {
                    "name": format!("tool_{i}"),
                    "description": format!("tool number {i}"),
                    "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}
                }}))
                .collect();
            body["tools"] = Value::Array(tools);
            if let Some(choice) = choice {
                body["tool_choice"] = choice;
            }
            if let Some(parallel) = parallel {
                body["parallel_tool_calls"] = Value::Bool(parallel);
            }
        }
        if let Some(t) = temperature {
            body["temperature"] = json!(t);
        }
        if let Some(p) = top_p {
            body["top_p"] = json!(p);
        }
        if !stop.is_empty() {
            body["stop"] = json!(stop);
        }
        body
    })
}

/// What the two formats share, in one normal form: system text joined (Anthropic
/// keeps one system prompt), names dropped (Anthropic has none), usage always
/// included.
fn normal(req: &ChatRequest) -> ChatRequest {
    let mut out = req.clone();
    out.native = None;
    out.model = "m".to_string();
    out.include_usage = true;
    // "Parallel calls allowed" is the default, and with tool_choice none no
    // call can happen at all (Anthropic's `{"type":"none"}` has no field for it).
    if out.parallel_tool_calls == Some(true)
        || out.tool_choice == Some(floodgate_protocol::ToolChoice::None)
    {
        out.parallel_tool_calls = None;
    }
    // With tools and no choice, both formats mean "auto".
    if out.tool_choice.is_none() && !out.tools.is_empty() {
        out.tool_choice = Some(floodgate_protocol::ToolChoice::Auto);
    }
    let mut messages: Vec<Message> = Vec::new();
    for message in &req.messages {
        let mut message = message.clone();
        message.name = None;
        match messages.last_mut() {
            Some(last) if last.role == Role::System && message.role == Role::System => {
                last.content.extend(message.content);
            }
            _ => messages.push(message),
        }
    }
    for message in &mut messages {
        if message.role == Role::System {
            let joined: String =
                message
                    .content
                    .iter()
                    .filter_map(|p| {
                        if let Part::Text { text } = p { Some(text.as_str()) } else { None }
                    })
                    .collect::<Vec<_>>()
                    .join("\n");
            message.content = vec![Part::Text { text: joined }];
        }
    }
    out.messages = messages;
    out
}

fn without_native(req: &ChatRequest) -> ChatRequest {
    ChatRequest { native: None, ..req.clone() }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn openai_to_anthropic_to_openai_keeps_the_conversation(body in request()) {
        let bytes = serde_json::to_vec(&body).unwrap();
        let original = openai::parse_chat_request(&bytes).unwrap();

        let to_anthropic = anthropic::write_chat_request(&without_native(&original), "claude").unwrap();
        let via_anthropic = anthropic::parse_chat_request(&to_anthropic).unwrap();

        let to_openai = openai::write_chat_request(&without_native(&via_anthropic), "gpt", Dialect::OpenAi).unwrap();
        let back = openai::parse_chat_request(&to_openai).unwrap();

        prop_assert_eq!(normal(&back), normal(&original));
        // And the messages an Anthropic upstream saw are the same conversation.
        prop_assert_eq!(normal(&via_anthropic), normal(&original));
    }
}
