//! Decoding an upstream Anthropic SSE stream into canonical stream chunks.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::Value;

use super::wire::{BlockIn, UsageIn, UsageTally, input_arguments, stop_reason_in};
use super::{RESPONSE_FORMAT_TOOL, response_schema};
use crate::canonical::*;
use crate::error::{DecodeError, StreamError, UpstreamErrorBody};
use crate::sse::SseEvent;

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum EventIn {
    MessageStart {
        message: MessageStartIn,
    },
    ContentBlockStart {
        index: u32,
        content_block: BlockIn,
    },
    ContentBlockDelta {
        index: u32,
        delta: DeltaIn,
    },
    ContentBlockStop {
        index: u32,
    },
    MessageDelta {
        delta: MessageDeltaIn,
        #[serde(default)]
        usage: Option<UsageIn>,
    },
    MessageStop,
    Ping,
    Error {
        error: ErrorIn,
    },
    /// Event types added after this was written carry nothing we translate.
    #[serde(other)]
    Unknown,
}

#[derive(Deserialize)]
struct MessageStartIn {
    id: String,
    model: String,
    #[serde(default)]
    usage: UsageIn,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum DeltaIn {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    ThinkingDelta {
        thinking: String,
    },
    SignatureDelta {
        signature: String,
    },
    /// `citations_delta` and future kinds.
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct MessageDeltaIn {
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    stop_sequence: Option<String>,
}

/// The `error` of an error event. Both fields are optional so that an error
/// of an unexpected shape still ends the stream as an upstream error.
#[derive(Deserialize)]
struct ErrorIn {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// What an open content block is, for the deltas and the stop that follow.
#[derive(Debug, Clone, Copy)]
enum BlockState {
    /// A `tool_use` block: canonical tool call `call` of the answer.
    Tool { call: u32, has_arguments: bool },
    /// A call of the response-format tool: its input is the text answer.
    Json { has_text: bool },
}

/// Decodes an upstream Anthropic stream.
#[derive(Debug)]
pub struct StreamReader {
    /// The request asked for JSON, carried by the response-format tool.
    json_mode: bool,
    /// Tool-like blocks by Anthropic block index; text and thinking blocks
    /// need no state.
    blocks: HashMap<u32, BlockState>,
    tool_calls: u32,
    answered_json: bool,
    usage: UsageTally,
}

impl StreamReader {
    pub fn new(req: &ChatRequest) -> Self {
        StreamReader {
            json_mode: response_schema(req.response_format.as_ref()).is_some(),
            blocks: HashMap::new(),
            tool_calls: 0,
            answered_json: false,
            usage: UsageTally::default(),
        }
    }

    pub fn read(&mut self, event: &SseEvent) -> Result<StreamChunk, StreamError> {
        let value: Value = serde_json::from_str(&event.data).map_err(|err| {
            DecodeError::new(format!("an Anthropic stream event is not JSON: {err}"))
        })?;
        let name = match &event.event {
            Some(name) => name.clone(),
            None => value.get("type").and_then(Value::as_str).unwrap_or_default().to_owned(),
        };
        let decoded = EventIn::deserialize(&value).map_err(|err| {
            DecodeError::new(format!("undecodable Anthropic {name} event: {err}"))
        })?;
        let mut chunk = StreamChunk { events: Vec::new(), native: None, done: false };
        match decoded {
            EventIn::Error { error } => {
                return Err(StreamError::Upstream(UpstreamErrorBody {
                    message: error
                        .message
                        .unwrap_or_else(|| format!("the upstream stream failed: {}", event.data)),
                    kind: error.kind,
                    code: None,
                }));
            }
            EventIn::MessageStop => chunk.done = true,
            decoded => self.translate(decoded, &mut chunk.events),
        }
        chunk.native = Some(NativeEvent {
            format: Format::Anthropic,
            event: Some(name),
            data: event.data.clone(),
        });
        Ok(chunk)
    }

    fn translate(&mut self, event: EventIn, out: &mut Vec<StreamEvent>) {
        match event {
            EventIn::MessageStart { message } => {
                self.usage.merge(&message.usage);
                out.push(StreamEvent::Start {
                    id: message.id,
                    model: message.model,
                    // Anthropic gives no timestamp; the gateway sets it.
                    created: 0,
                });
                out.push(StreamEvent::Usage(self.usage.canonical()));
            }
            EventIn::ContentBlockStart { index, content_block } => {
                self.block_start(index, content_block, out)
            }
            EventIn::ContentBlockDelta { index, delta } => self.block_delta(index, delta, out),
            EventIn::ContentBlockStop { index } => self.block_stop(index, out),
            EventIn::MessageDelta { delta, usage } => {
                if let Some(reason) = delta.stop_reason {
                    out.push(StreamEvent::Finish {
                        choice: 0,
                        reason: self.finish_reason(&reason, delta.stop_sequence),
                    });
                }
                if let Some(usage) = usage {
                    self.usage.merge(&usage);
                    out.push(StreamEvent::Usage(self.usage.canonical()));
                }
            }
            EventIn::MessageStop | EventIn::Ping | EventIn::Error { .. } | EventIn::Unknown => {}
        }
    }

    fn block_start(&mut self, index: u32, block: BlockIn, out: &mut Vec<StreamEvent>) {
        match block {
            BlockIn::Text { text } => push_delta(out, Delta::Text(text)),
            BlockIn::Thinking { thinking, .. } => push_delta(out, Delta::Thinking(thinking)),
            BlockIn::ToolUse { name, input, .. }
                if self.json_mode && name == RESPONSE_FORMAT_TOOL =>
            {
                self.answered_json = true;
                let has_text = has_input(&input);
                if has_text {
                    push_delta(out, Delta::Text(input_arguments(&input)));
                }
                self.blocks.insert(index, BlockState::Json { has_text });
            }
            BlockIn::ToolUse { id, name, input } => {
                let call = self.tool_calls;
                self.tool_calls += 1;
                out.push(delta(Delta::ToolCallStart { index: call, id, name }));
                // Tool inputs stream as deltas and start as `{}`; an input
                // given up front is already the whole of it.
                let has_arguments = has_input(&input);
                if has_arguments {
                    out.push(delta(Delta::ToolCallArguments {
                        index: call,
                        fragment: input_arguments(&input),
                    }));
                }
                self.blocks.insert(index, BlockState::Tool { call, has_arguments });
            }
            BlockIn::Other => {}
        }
    }

    fn block_delta(&mut self, index: u32, delta_in: DeltaIn, out: &mut Vec<StreamEvent>) {
        match delta_in {
            DeltaIn::TextDelta { text } => push_delta(out, Delta::Text(text)),
            DeltaIn::ThinkingDelta { thinking } => push_delta(out, Delta::Thinking(thinking)),
            DeltaIn::SignatureDelta { signature } => {
                push_delta(out, Delta::ThinkingSignature(signature));
            }
            DeltaIn::InputJsonDelta { partial_json } if !partial_json.is_empty() => {
                match self.blocks.get_mut(&index) {
                    Some(BlockState::Tool { call, has_arguments }) => {
                        *has_arguments = true;
                        out.push(delta(Delta::ToolCallArguments {
                            index: *call,
                            fragment: partial_json,
                        }));
                    }
                    Some(BlockState::Json { has_text }) => {
                        *has_text = true;
                        out.push(delta(Delta::Text(partial_json)));
                    }
                    // Input of a server tool block: not a client tool call.
                    None => {}
                }
            }
            DeltaIn::InputJsonDelta { .. } | DeltaIn::Other => {}
        }
    }

    /// Closes a block. A tool call that got no arguments gets `{}`: clients
    /// of the OpenAI format parse the arguments, and `""` is not JSON.
    fn block_stop(&mut self, index: u32, out: &mut Vec<StreamEvent>) {
        match self.blocks.remove(&index) {
            Some(BlockState::Tool { call, has_arguments: false }) => {
                out.push(delta(Delta::ToolCallArguments { index: call, fragment: "{}".to_owned() }))
            }
            Some(BlockState::Json { has_text: false }) => {
                out.push(delta(Delta::Text("{}".to_owned())));
            }
            _ => {}
        }
    }

    fn finish_reason(&self, reason: &str, sequence: Option<String>) -> FinishReason {
        match stop_reason_in(reason, sequence) {
            // The forced response-format call is the answer, not a tool call.
            FinishReason::ToolCalls if self.answered_json && self.tool_calls == 0 => {
                FinishReason::Stop
            }
            other => other,
        }
    }
}

fn delta(delta: Delta) -> StreamEvent {
    StreamEvent::Delta { choice: 0, delta }
}

/// Pushes a text-like delta unless it is empty (block starts carry `""`).
fn push_delta(out: &mut Vec<StreamEvent>, content: Delta) {
    let empty = match &content {
        Delta::Text(text) | Delta::Thinking(text) | Delta::ThinkingSignature(text) => {
            text.is_empty()
        }
        Delta::ToolCallStart { .. } | Delta::ToolCallArguments { .. } => false,
    };
    if !empty {
        out.push(delta(content));
    }
}

/// A `tool_use` start that already holds input (normally it is `{}`).
fn has_input(input: &Value) -> bool {
    match input {
        Value::Null => false,
        Value::Object(map) => !map.is_empty(),
        _ => true,
    }
}
