//! Serde shapes of Anthropic Messages JSON, shared by the request, response and
//! stream translations.
//!
//! Output shapes are structs rather than `serde_json::Value`s so fields come
//! out in the order Anthropic documents them (`"type"` first), whatever the
//! `serde_json` map features. Input shapes ignore unknown fields, so newer API
//! versions keep decoding.

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::canonical::{FinishReason, Usage};

/// Serialises an output shape.
///
/// Serialising these shapes cannot fail (every map key is a string and no
/// `Serialize` impl reports errors), so the empty fallback is never used; it
/// only spares the callers an error type they could not act on.
pub(super) fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// [`to_json`] as text, for SSE `data:` fields.
pub(super) fn to_json_text<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

// ---------------------------------------------------------------- outputs

/// A content block as we write it in requests, responses and stream starts.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum BlockOut<'a> {
    Text {
        text: &'a str,
    },
    Image {
        source: SourceOut<'a>,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: Value,
    },
    ToolResult {
        tool_use_id: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        content: Option<ToolResultContentOut<'a>>,
        #[serde(skip_serializing_if = "is_false")]
        is_error: bool,
    },
    Thinking {
        thinking: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        signature: Option<&'a str>,
    },
}

fn is_false(value: &bool) -> bool {
    !*value
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum SourceOut<'a> {
    Base64 { media_type: &'a str, data: &'a str },
    Url { url: &'a str },
}

/// A `tool_result`'s content: a plain string when it is one text part, as
/// Anthropic's own examples write it, else blocks.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(super) enum ToolResultContentOut<'a> {
    Text(&'a str),
    Blocks(Vec<BlockOut<'a>>),
}

/// `usage` of a Message, a `message_start` or a `message_delta`.
///
/// `input_tokens` here excludes the cached tokens (Anthropic's convention),
/// unlike canonical [`Usage`].
#[derive(Debug, Serialize)]
pub(super) struct UsageOut {
    pub input_tokens: u32,
    pub cache_creation_input_tokens: u32,
    pub cache_read_input_tokens: u32,
    pub output_tokens: u32,
}

impl UsageOut {
    pub fn from_canonical(usage: &Usage) -> Self {
        let cached = usage.cache_read_tokens.saturating_add(usage.cache_creation_tokens);
        UsageOut {
            input_tokens: usage.input_tokens.saturating_sub(cached),
            cache_creation_input_tokens: usage.cache_creation_tokens,
            cache_read_input_tokens: usage.cache_read_tokens,
            output_tokens: usage.output_tokens,
        }
    }
}

/// A Message: a complete answer, or the skeleton in `message_start`.
#[derive(Debug, Serialize)]
pub(super) struct MessageOut<'a> {
    pub id: &'a str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub role: &'static str,
    pub model: &'a str,
    pub content: Vec<BlockOut<'a>>,
    pub stop_reason: Option<&'a str>,
    pub stop_sequence: Option<&'a str>,
    pub usage: UsageOut,
}

/// Anthropic's `stop_reason` and `stop_sequence` for a canonical reason.
pub(super) fn stop_reason_out(reason: &FinishReason) -> (&str, Option<&str>) {
    match reason {
        FinishReason::Stop => ("end_turn", None),
        FinishReason::StopSequence(sequence) => ("stop_sequence", sequence.as_deref()),
        FinishReason::Length => ("max_tokens", None),
        FinishReason::ToolCalls => ("tool_use", None),
        FinishReason::ContentFilter => ("refusal", None),
        FinishReason::Other(other) => (other.as_str(), None),
    }
}

/// One streamed event; the SSE event name is its `type`.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum EventOut<'a> {
    MessageStart { message: MessageOut<'a> },
    ContentBlockStart { index: u32, content_block: BlockOut<'a> },
    ContentBlockDelta { index: u32, delta: DeltaOut<'a> },
    ContentBlockStop { index: u32 },
    MessageDelta { delta: MessageDeltaOut<'a>, usage: UsageOut },
    MessageStop,
}

impl EventOut<'_> {
    pub fn name(&self) -> &'static str {
        match self {
            EventOut::MessageStart { .. } => "message_start",
            EventOut::ContentBlockStart { .. } => "content_block_start",
            EventOut::ContentBlockDelta { .. } => "content_block_delta",
            EventOut::ContentBlockStop { .. } => "content_block_stop",
            EventOut::MessageDelta { .. } => "message_delta",
            EventOut::MessageStop => "message_stop",
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(tag = "type")]
pub(super) enum DeltaOut<'a> {
    #[serde(rename = "text_delta")]
    Text { text: &'a str },
    #[serde(rename = "input_json_delta")]
    InputJson { partial_json: &'a str },
    #[serde(rename = "thinking_delta")]
    Thinking { thinking: &'a str },
    #[serde(rename = "signature_delta")]
    Signature { signature: &'a str },
}

#[derive(Debug, Serialize)]
pub(super) struct MessageDeltaOut<'a> {
    pub stop_reason: Option<&'a str>,
    pub stop_sequence: Option<&'a str>,
}

/// `{"type":"error","error":{"type","message"}}`, as a body and as the data
/// of an `error` stream event.
#[derive(Debug, Serialize)]
pub(super) struct ErrorBodyOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error: ErrorOut<'a>,
}

#[derive(Debug, Serialize)]
struct ErrorOut<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    message: &'a str,
}

impl<'a> ErrorBodyOut<'a> {
    pub fn new(kind: &'a str, message: &'a str) -> Self {
        ErrorBodyOut { kind: "error", error: ErrorOut { kind, message } }
    }
}

// ----------------------------------------------------------------- inputs

/// A `content` (or `system`) field: a plain string or an array of blocks.
///
/// The blocks stay JSON values so each one is read with its own path, which
/// gives precise error locations.
#[derive(Debug)]
pub(super) enum ContentIn {
    Text(String),
    Blocks(Vec<Value>),
}

impl<'de> Deserialize<'de> for ContentIn {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ContentVisitor)
    }
}

struct ContentVisitor;

impl<'de> Visitor<'de> for ContentVisitor {
    type Value = ContentIn;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a string or an array of content blocks")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<ContentIn, E> {
        Ok(ContentIn::Text(text.to_owned()))
    }

    fn visit_string<E: de::Error>(self, text: String) -> Result<ContentIn, E> {
        Ok(ContentIn::Text(text))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ContentIn, A::Error> {
        let mut blocks = Vec::new();
        while let Some(block) = seq.next_element()? {
            blocks.push(block);
        }
        Ok(ContentIn::Blocks(blocks))
    }
}

/// A content block of an upstream answer (a Message or a
/// `content_block_start`). Block types we do not translate (server tool
/// blocks, redacted thinking…) read as `Other`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum BlockIn {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    Thinking {
        thinking: String,
        #[serde(default)]
        signature: Option<String>,
    },
    #[serde(other)]
    Other,
}

/// A tool call's `input` object as canonical arguments text (compact JSON).
/// A missing input reads as `{}`, the empty arguments object.
pub(super) fn input_arguments(input: &Value) -> String {
    match input {
        Value::Null => "{}".to_owned(),
        input => input.to_string(),
    }
}

/// Usage as Anthropic reports it: `input_tokens` excludes cached tokens.
/// Every field is optional because `message_delta` usage carries only some.
#[derive(Debug, Default, Deserialize)]
pub(super) struct UsageIn {
    #[serde(default)]
    pub input_tokens: Option<u32>,
    #[serde(default)]
    pub output_tokens: Option<u32>,
    #[serde(default)]
    pub cache_creation_input_tokens: Option<u32>,
    #[serde(default)]
    pub cache_read_input_tokens: Option<u32>,
}

/// Anthropic's usage counters, kept apart so partial updates can merge.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct UsageTally {
    input: u32,
    output: u32,
    cache_read: u32,
    cache_creation: u32,
}

impl UsageTally {
    /// Replaces each counter `usage` reports and keeps the others.
    pub fn merge(&mut self, usage: &UsageIn) {
        if let Some(tokens) = usage.input_tokens {
            self.input = tokens;
        }
        if let Some(tokens) = usage.output_tokens {
            self.output = tokens;
        }
        if let Some(tokens) = usage.cache_read_input_tokens {
            self.cache_read = tokens;
        }
        if let Some(tokens) = usage.cache_creation_input_tokens {
            self.cache_creation = tokens;
        }
    }

    /// The canonical snapshot: input counts the cached tokens too.
    pub fn canonical(&self) -> Usage {
        Usage {
            input_tokens: self
                .input
                .saturating_add(self.cache_read)
                .saturating_add(self.cache_creation),
            output_tokens: self.output,
            cache_read_tokens: self.cache_read,
            cache_creation_tokens: self.cache_creation,
            reasoning_tokens: 0,
        }
    }
}

/// The canonical reason for Anthropic's `stop_reason` (and `stop_sequence`).
pub(super) fn stop_reason_in(reason: &str, sequence: Option<String>) -> FinishReason {
    match reason {
        "end_turn" => FinishReason::Stop,
        "stop_sequence" => FinishReason::StopSequence(sequence),
        "max_tokens" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_owned()),
    }
}
