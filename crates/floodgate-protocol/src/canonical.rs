//! The canonical chat shape every client format is read into and every
//! provider format is written from.
//!
//! It is deliberately the intersection that translates losslessly between
//! OpenAI Chat Completions, Anthropic Messages and Gemini generateContent:
//! content is a list of typed parts (Anthropic's block model, which OpenAI's
//! string-or-parts content and Gemini's parts both map into), tool calls and
//! tool results are parts, and system prompts stay in the message list so
//! their position is not lost.
//!
//! What does not translate is not modelled here. Instead a request read from a
//! client keeps its original JSON body in [`ChatRequest::native`]; an adapter
//! of the same format sends that body (with only the model replaced), so an
//! OpenAI client talking to an OpenAI upstream loses no field, known or not.
//! Responses and stream chunks carry the upstream's own JSON the same way.

use bytes::Bytes;
use serde_json::{Map, Value};

/// A wire format that a client can speak to us or an upstream can speak to us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// OpenAI Chat Completions (also every "OpenAI-compatible" server).
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
    /// Google Gemini generateContent (upstream only: no client route speaks it).
    Gemini,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::OpenAi => "openai",
            Format::Anthropic => "anthropic",
            Format::Gemini => "gemini",
        }
    }
}

/// A chat request, independent of the format it arrived in.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChatRequest {
    /// What the client sent as `model`: an alias or `provider/model`.
    pub model: String,
    /// The conversation, system prompts included, in order.
    pub messages: Vec<Message>,
    pub tools: Vec<Tool>,
    pub tool_choice: Option<ToolChoice>,
    /// `false` forbids more than one tool call per turn (OpenAI
    /// `parallel_tool_calls`, Anthropic `disable_parallel_tool_use`).
    pub parallel_tool_calls: Option<bool>,
    /// Upper bound on generated tokens. `None` when the client gave none
    /// (Anthropic targets then need a default, chosen by the adapter).
    pub max_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<u32>,
    pub stop: Vec<String>,
    pub stream: bool,
    /// OpenAI `stream_options.include_usage`: the client wants a final usage
    /// chunk. Anthropic clients always receive usage.
    pub include_usage: bool,
    pub response_format: Option<ResponseFormat>,
    /// The end user on whose behalf the request is made (OpenAI `user`,
    /// Anthropic `metadata.user_id`).
    pub user: Option<String>,
    /// The client's original body, for exact pass-through to an upstream of
    /// the same format. `None` when the request was built in code.
    pub native: Option<NativeBody>,
}

/// A client body kept verbatim for same-format pass-through.
#[derive(Debug, Clone, PartialEq)]
pub struct NativeBody {
    pub format: Format,
    pub body: Map<String, Value>,
}

/// The role of a message's author.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// System or developer instructions.
    System,
    User,
    Assistant,
    /// The result of a tool call, sent back by the client. Such a message
    /// holds exactly one [`Part::ToolResult`] (an Anthropic user turn with
    /// three `tool_result` blocks reads as three `Tool` messages), so every
    /// format reads to the same canonical form.
    Tool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: Role,
    pub content: Vec<Part>,
    /// OpenAI's optional participant name.
    pub name: Option<String>,
}

impl Message {
    pub fn text(role: Role, text: impl Into<String>) -> Self {
        Message { role, content: vec![Part::Text { text: text.into() }], name: None }
    }

    /// All text parts joined, for token estimates and logs of shape (never of content).
    pub fn joined_text(&self) -> String {
        let mut out = String::new();
        for part in &self.content {
            if let Part::Text { text } = part {
                out.push_str(text);
            }
        }
        out
    }
}

/// One piece of a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Text {
        text: String,
    },
    Image {
        source: ImageSource,
    },
    /// An assistant's request to call a tool.
    ToolCall {
        id: String,
        name: String,
        /// The arguments as a JSON text, exactly as OpenAI carries them.
        /// Anthropic's and Gemini's argument objects are serialised into it.
        arguments: String,
    },
    /// A client's answer to a tool call.
    ToolResult {
        tool_call_id: String,
        /// Text and image parts only.
        content: Vec<Part>,
        is_error: bool,
    },
    /// Model reasoning (Anthropic extended thinking). Dropped when written to
    /// a format that cannot carry it back.
    Thinking {
        text: String,
        /// Anthropic's signature, needed to send the block back.
        signature: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum ImageSource {
    /// An `http(s)://` URL.
    Url(String),
    /// Inline data, base64 encoded.
    Base64 { media_type: String, data: String },
}

/// A function the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    /// JSON Schema of the arguments object.
    pub parameters: Value,
    /// OpenAI structured-outputs `strict` flag.
    pub strict: Option<bool>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ToolChoice {
    /// The model decides (OpenAI `auto`, Anthropic `auto`, Gemini `AUTO`).
    Auto,
    /// No tool may be called.
    None,
    /// Some tool must be called (OpenAI `required`, Anthropic `any`, Gemini `ANY`).
    Required,
    /// This tool must be called.
    Tool(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema { name: String, schema: Value, strict: Option<bool> },
}

/// Token counts of one request.
///
/// `input_tokens` counts every prompt token, cached ones included (OpenAI's
/// convention); `cache_read_tokens` and `cache_creation_tokens` are the parts
/// of it that were read from or written to a prompt cache. Anthropic reports
/// the three separately; its adapter adds them up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub input_tokens: u32,
    pub output_tokens: u32,
    pub cache_read_tokens: u32,
    pub cache_creation_tokens: u32,
    /// Part of `output_tokens` spent on reasoning, when the upstream says.
    pub reasoning_tokens: u32,
}

impl Usage {
    pub fn total(&self) -> u32 {
        self.input_tokens.saturating_add(self.output_tokens)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinishReason {
    /// Natural end of the turn (OpenAI `stop`, Anthropic `end_turn`, Gemini `STOP`).
    Stop,
    /// A stop sequence matched; Anthropic says which.
    StopSequence(Option<String>),
    /// `max_tokens` reached.
    Length,
    /// The turn ends with tool calls for the client to run.
    ToolCalls,
    /// Refused or filtered (OpenAI `content_filter`, Anthropic `refusal`, Gemini `SAFETY`…).
    ContentFilter,
    /// Anything else, kept verbatim (e.g. Anthropic `pause_turn`).
    Other(String),
}

/// A complete (non-streamed) answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatResponse {
    pub id: String,
    /// The model that answered, as the upstream named it.
    pub model: String,
    /// Unix seconds.
    pub created: u64,
    /// Empty when the answer was read only for verbatim replay to a client
    /// of the upstream's format (`openai::read_chat_response_lean`): then
    /// `native` holds it, and the format's `read_chat_response` on
    /// `native.body` decodes it in full.
    pub choices: Vec<Choice>,
    pub usage: Usage,
    /// The upstream's own body, replayed verbatim to a client of the same format.
    pub native: Option<NativeResponse>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NativeResponse {
    pub format: Format,
    pub body: Bytes,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    pub index: u32,
    /// Always role [`Role::Assistant`]: text, thinking and tool-call parts.
    pub message: Message,
    pub finish_reason: Option<FinishReason>,
}

/// One step of a streamed answer.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// The answer begins. Always the first event of a stream.
    Start { id: String, model: String, created: u64 },
    /// A piece of content for choice `choice`.
    Delta { choice: u32, delta: Delta },
    /// Choice `choice` is complete.
    Finish { choice: u32, reason: FinishReason },
    /// Token counts so far: a full snapshot that replaces the previous one.
    Usage(Usage),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Delta {
    Text(String),
    Thinking(String),
    ThinkingSignature(String),
    /// A tool call begins; `index` numbers the calls of the choice from 0.
    ToolCallStart {
        index: u32,
        id: String,
        name: String,
    },
    /// More of the arguments JSON text of tool call `index`.
    ToolCallArguments {
        index: u32,
        fragment: String,
    },
}

/// What a stream decoder produced from one upstream SSE event.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StreamChunk {
    pub events: Vec<StreamEvent>,
    /// The upstream event itself, for verbatim replay to a client of the same
    /// format. `None` for events that must not reach the client as they are.
    pub native: Option<NativeEvent>,
    /// The upstream said the stream is complete (OpenAI `[DONE]`, Anthropic
    /// `message_stop`). Gemini streams complete when the body ends.
    pub done: bool,
}

/// An SSE event as the upstream sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct NativeEvent {
    pub format: Format,
    /// The SSE `event:` field, when there was one.
    pub event: Option<String>,
    /// The SSE `data:` field.
    pub data: String,
}

/// A non-streamed embeddings request.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EmbeddingsRequest {
    pub model: String,
    pub input: EmbeddingInput,
    pub dimensions: Option<u32>,
    pub user: Option<String>,
    /// The client's original body (always OpenAI format), for pass-through.
    pub native: Option<NativeBody>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EmbeddingInput {
    Texts(Vec<String>),
    /// Pre-tokenised input (OpenAI only).
    Tokens(Vec<Vec<u32>>),
}

impl Default for EmbeddingInput {
    fn default() -> Self {
        EmbeddingInput::Texts(Vec::new())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingsResponse {
    pub model: String,
    pub embeddings: Vec<Vec<f32>>,
    pub usage: Usage,
    /// The upstream's own body, replayed verbatim to the (OpenAI) client.
    pub native: Option<NativeResponse>,
}
