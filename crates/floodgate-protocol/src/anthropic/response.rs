//! Complete (non-streamed) answers: reading an upstream Message into a
//! canonical [`ChatResponse`] and writing one as a Message for the client.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::wire::{
    BlockIn, BlockOut, MessageOut, UsageIn, UsageOut, UsageTally, input_arguments, stop_reason_in,
    stop_reason_out, to_json,
};
use super::{RESPONSE_FORMAT_TOOL, response_schema};
use crate::canonical::*;
use crate::error::DecodeError;

#[derive(Deserialize)]
struct ResponseIn {
    id: String,
    model: String,
    content: Vec<BlockIn>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    stop_sequence: Option<String>,
    #[serde(default)]
    usage: UsageIn,
}

pub(super) fn read_chat_response(
    req: &ChatRequest,
    body: Bytes,
) -> Result<ChatResponse, DecodeError> {
    let wire: ResponseIn = serde_json::from_slice(&body).map_err(|err| {
        DecodeError::new(format!("the upstream answer is not an Anthropic Message: {err}"))
    })?;
    let json_mode = response_schema(req.response_format.as_ref()).is_some();
    let mut answered_json = false;
    let mut content = Vec::with_capacity(wire.content.len());
    for block in wire.content {
        match block {
            BlockIn::Text { text } => content.push(Part::Text { text }),
            // The synthetic response-format tool carries the JSON answer.
            BlockIn::ToolUse { name, input, .. } if json_mode && name == RESPONSE_FORMAT_TOOL => {
                answered_json = true;
                content.push(Part::Text { text: input_arguments(&input) });
            }
            BlockIn::ToolUse { id, name, input } => {
                content.push(Part::ToolCall { id, name, arguments: input_arguments(&input) })
            }
            BlockIn::Thinking { thinking, signature } => {
                content.push(Part::Thinking { text: thinking, signature })
            }
            BlockIn::Other => {}
        }
    }
    let calls_tools = content.iter().any(|p| matches!(p, Part::ToolCall { .. }));
    let finish_reason =
        wire.stop_reason.map(|reason| match stop_reason_in(&reason, wire.stop_sequence) {
            FinishReason::ToolCalls if answered_json && !calls_tools => FinishReason::Stop,
            other => other,
        });
    let mut usage = UsageTally::default();
    usage.merge(&wire.usage);
    Ok(ChatResponse {
        id: wire.id,
        model: wire.model,
        // Anthropic gives no timestamp; the gateway sets it.
        created: 0,
        choices: vec![Choice {
            index: 0,
            message: Message { role: Role::Assistant, content, name: None },
            finish_reason,
        }],
        usage: usage.canonical(),
        native: Some(NativeResponse { format: Format::Anthropic, body }),
    })
}

pub(super) fn write_chat_response(resp: &ChatResponse) -> Bytes {
    if let Some(native) = &resp.native
        && native.format == Format::Anthropic
    {
        return native.body.clone();
    }
    let choice = resp.choices.iter().find(|c| c.index == 0);
    let (stop_reason, stop_sequence) = match choice.and_then(|c| c.finish_reason.as_ref()) {
        Some(reason) => {
            let (reason, sequence) = stop_reason_out(reason);
            (Some(reason), sequence)
        }
        None => (None, None),
    };
    let content = choice
        .map(|c| c.message.content.iter().filter_map(answer_block).collect())
        .unwrap_or_default();
    Bytes::from(to_json(&MessageOut {
        id: &resp.id,
        kind: "message",
        role: "assistant",
        model: &resp.model,
        content,
        stop_reason,
        stop_sequence,
        usage: UsageOut::from_canonical(&resp.usage),
    }))
}

/// One answer part as a block. Unsigned thinking is omitted (a client could
/// not send it back), and parts an assistant cannot produce are skipped.
fn answer_block(part: &Part) -> Option<BlockOut<'_>> {
    match part {
        Part::Text { text } => Some(BlockOut::Text { text }),
        Part::ToolCall { id, name, arguments } => {
            Some(BlockOut::ToolUse { id, name, input: answer_input(arguments) })
        }
        Part::Thinking { text, signature: Some(signature) } => {
            Some(BlockOut::Thinking { thinking: text, signature: Some(signature) })
        }
        Part::Thinking { .. } | Part::Image { .. } | Part::ToolResult { .. } => None,
    }
}

/// A tool call's arguments as the `input` object of a `tool_use` block.
///
/// Anthropic clients expect an object. Empty arguments become `{}`; arguments
/// that are not a JSON object (typically JSON cut off by `max_tokens`) are
/// wrapped as `{"_raw": text}` rather than dropped, so the client still sees
/// what the model produced and can tell it is malformed.
fn answer_input(arguments: &str) -> Value {
    if arguments.trim().is_empty() {
        return Value::Object(Map::new());
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(input @ Value::Object(_)) => input,
        _ => {
            let mut raw = Map::new();
            raw.insert("_raw".to_owned(), Value::String(arguments.to_owned()));
            Value::Object(raw)
        }
    }
}
