//! The OpenAI API: `POST /v1/chat/completions` (streamed and not), `POST /v1/embeddings` and
//! `GET /v1/models`, in the shapes of OpenAI's API reference.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};

use crate::answer::{
    Reply, TOOL_ARGUMENT_PARTS, TOOL_ARGUMENTS, piece, prompt_tokens, str_field, text_chars,
    tool_to_call, unix_now,
};
use crate::call::{ApiError, Call, Incoming, Provider, json_response};
use crate::embed::{embedding_vector, to_base64};
use crate::state::Shared;
use crate::stream::{Ending, Frames, sse_response};

/// The `system_fingerprint` of every answer.
const FINGERPRINT: &str = "fp_mock";

/// Dimensions of an embedding when the request does not ask for a number.
const DEFAULT_DIMENSIONS: u64 = 16;

/// The most dimensions an embedding request may ask for.
const MAX_DIMENSIONS: u64 = 8192;

/// `POST /v1/chat/completions`.
pub(crate) async fn chat(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let call = match Call::begin(&shared, request, Provider::OpenAi).await {
        Ok(call) => call,
        Err(response) => return response,
    };
    let Some(model) = str_field(&call.body, "model") else {
        return call.bad_request("you must provide a model parameter");
    };
    let Some(messages) = call.body.get("messages").and_then(Value::as_array) else {
        return call.bad_request("Missing required parameter: 'messages'.");
    };
    if let Some(response) = call.settle(model).await {
        return response;
    }
    let reply = choose_reply(&call.body, messages, shared.config.chunks);
    let completion_tokens = reply.completion_tokens();
    let usage = Usage::new(prompt_tokens(text_chars(&call.body["messages"])), completion_tokens);
    let charged = match call.charge(model, usage.total_tokens) {
        Ok(charged) => charged,
        Err(response) => return *response,
    };
    let serial = shared.next_id();
    let answer = Answer {
        id: &format!("chatcmpl-mock{serial:012}"),
        call_id: &format!("call_mock{serial:012}"),
        created: unix_now(),
        model,
        reply: &reply,
        usage,
    };
    let response = if call.body.get("stream").and_then(Value::as_bool) == Some(true) {
        let include_usage =
            call.body.pointer("/stream_options/include_usage") == Some(&Value::Bool(true));
        let delay = shared.config.chunk_delay;
        let frames = answer.stream_frames(include_usage, Frames::new(delay));
        sse_response(&shared, frames, delay, Ending::Complete)
    } else {
        answer.completion(&shared.default_text, shared.config.chunks)
    };
    charged.stamp(response)
}

/// A tool call when tools are offered (see [`tool_to_call`]), else text.
fn choose_reply(body: &Value, messages: &[Value], chunks: usize) -> Reply {
    let first = body
        .get("tools")
        .and_then(Value::as_array)
        .and_then(|tools| tools.first())
        .and_then(|tool| tool.get("function"))
        .and_then(|function| str_field(function, "name"));
    let choice = body.get("tool_choice");
    let disabled = choice.and_then(Value::as_str) == Some("none");
    let forced =
        choice.and_then(|choice| choice.get("function")).and_then(|f| str_field(f, "name"));
    let last_is_user =
        messages.last().and_then(|message| str_field(message, "role")) == Some("user");
    match tool_to_call(last_is_user, disabled, forced, first) {
        Some(name) => Reply::Tool { name },
        None => {
            let max = body
                .get("max_completion_tokens")
                .or_else(|| body.get("max_tokens"))
                .and_then(Value::as_u64);
            Reply::text(chunks, max)
        }
    }
}

/// Everything an answer is built from.
struct Answer<'a> {
    id: &'a str,
    call_id: &'a str,
    created: u64,
    model: &'a str,
    reply: &'a Reply,
    usage: Usage,
}

impl Answer<'_> {
    /// The non-streamed `chat.completion` object.
    fn completion(&self, default_text: &str, chunks: usize) -> Response {
        let text;
        let tool_call;
        let (message, finish_reason) = match self.reply {
            Reply::Text { words, truncated } => {
                text = if *words == chunks { None } else { Some(crate::answer_text(*words)) };
                let content = text.as_deref().unwrap_or(default_text);
                let message = Message { content: Some(content), ..Message::EMPTY };
                (message, if *truncated { "length" } else { "stop" })
            }
            Reply::Tool { name } => {
                tool_call = [ToolCall {
                    id: self.call_id,
                    kind: "function",
                    function: Function { name, arguments: TOOL_ARGUMENTS },
                }];
                (Message { tool_calls: Some(&tool_call), ..Message::EMPTY }, "tool_calls")
            }
        };
        let completion = Completion {
            id: self.id,
            object: "chat.completion",
            created: self.created,
            model: self.model,
            choices: [Choice { index: 0, message, logprobs: None, finish_reason }],
            usage: self.usage,
            service_tier: "default",
            system_fingerprint: FINGERPRINT,
        };
        json_response(StatusCode::OK, &completion)
    }

    /// The `chat.completion.chunk` events, one content piece per frame, then `[DONE]`.
    fn stream_frames(&self, include_usage: bool, frames: Frames) -> Vec<bytes::Bytes> {
        let mut out = ChunkWriter { answer: self, include_usage, frames };
        let finish_reason = match self.reply {
            Reply::Text { words, truncated } => {
                out.choice(Delta { content: Some(Some("")), ..Delta::FIRST }, None);
                for index in 0..*words {
                    if index > 0 {
                        out.frames.cut();
                    }
                    out.choice(Delta { content: Some(Some(piece(index))), ..Delta::EMPTY }, None);
                }
                if *truncated { "length" } else { "stop" }
            }
            Reply::Tool { name } => {
                let head = DeltaToolCall {
                    index: 0,
                    id: Some(self.call_id),
                    kind: Some("function"),
                    function: DeltaFunction { name: Some(name), arguments: "" },
                };
                let delta = Delta { content: Some(None), tool_calls: Some([head]), ..Delta::FIRST };
                out.choice(delta, None);
                for part in TOOL_ARGUMENT_PARTS {
                    out.frames.cut();
                    let call = DeltaToolCall {
                        index: 0,
                        id: None,
                        kind: None,
                        function: DeltaFunction { name: None, arguments: part },
                    };
                    out.choice(Delta { tool_calls: Some([call]), ..Delta::EMPTY }, None);
                }
                "tool_calls"
            }
        };
        out.choice(Delta::EMPTY, Some(finish_reason));
        if include_usage {
            out.usage();
        }
        out.frames.raw(b"data: [DONE]\n\n");
        out.frames.finish()
    }
}

/// Writes the chunks of one streamed answer.
struct ChunkWriter<'a> {
    answer: &'a Answer<'a>,
    include_usage: bool,
    frames: Frames,
}

impl ChunkWriter<'_> {
    fn choice(&mut self, delta: Delta<'_>, finish_reason: Option<&'static str>) {
        let choice = ChunkChoice { index: 0, delta, logprobs: None, finish_reason };
        // With include_usage every chunk carries `"usage": null` except the last one.
        let usage = self.include_usage.then_some(None);
        self.write(std::slice::from_ref(&choice), usage);
    }

    fn usage(&mut self) {
        self.write(&[], Some(Some(self.answer.usage)));
    }

    fn write(&mut self, choices: &[ChunkChoice<'_>], usage: Option<Option<Usage>>) {
        let chunk = Chunk {
            id: self.answer.id,
            object: "chat.completion.chunk",
            created: self.answer.created,
            model: self.answer.model,
            service_tier: "default",
            system_fingerprint: FINGERPRINT,
            choices,
            usage,
        };
        self.frames.data_json(&chunk, "\n\n");
    }
}

#[derive(Serialize)]
struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [Choice<'a>; 1],
    usage: Usage,
    service_tier: &'static str,
    system_fingerprint: &'static str,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u32,
    message: Message<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: Option<&'a str>,
    refusal: Option<()>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<&'a [ToolCall<'a>]>,
    annotations: [(); 0],
}

impl Message<'_> {
    const EMPTY: Self = Message {
        role: "assistant",
        content: None,
        refusal: None,
        tool_calls: None,
        annotations: [],
    };
}

#[derive(Serialize)]
struct ToolCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: Function<'a>,
}

#[derive(Serialize)]
struct Function<'a> {
    name: &'a str,
    arguments: &'static str,
}

#[derive(Serialize, Clone, Copy)]
struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    prompt_tokens_details: PromptTokensDetails,
    completion_tokens_details: CompletionTokensDetails,
}

impl Usage {
    fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            prompt_tokens_details: PromptTokensDetails::default(),
            completion_tokens_details: CompletionTokensDetails::default(),
        }
    }
}

#[derive(Serialize, Clone, Copy, Default)]
struct PromptTokensDetails {
    cached_tokens: u64,
    audio_tokens: u64,
}

#[derive(Serialize, Clone, Copy, Default)]
struct CompletionTokensDetails {
    reasoning_tokens: u64,
    audio_tokens: u64,
    accepted_prediction_tokens: u64,
    rejected_prediction_tokens: u64,
}

#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    service_tier: &'static str,
    system_fingerprint: &'static str,
    choices: &'a [ChunkChoice<'a>],
    /// Absent without `include_usage`; `null` on every chunk but the usage one with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<Usage>>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

/// A streamed delta; absent members are left out, `Some(None)` members are `null`.
#[derive(Serialize)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<Option<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[DeltaToolCall<'a>; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refusal: Option<Option<()>>,
}

impl Delta<'_> {
    const EMPTY: Self = Delta { role: None, content: None, tool_calls: None, refusal: None };
    /// The first delta of an answer announces the role and a null refusal.
    const FIRST: Self =
        Delta { role: Some("assistant"), content: None, tool_calls: None, refusal: Some(None) };
}

#[derive(Serialize)]
struct DeltaToolCall<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: DeltaFunction<'a>,
}

#[derive(Serialize)]
struct DeltaFunction<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'static str,
}

/// `POST /v1/embeddings`.
pub(crate) async fn embeddings(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let call = match Call::begin(&shared, request, Provider::OpenAi).await {
        Ok(call) => call,
        Err(response) => return response,
    };
    let request = match EmbeddingRequest::parse(&call.body) {
        Ok(request) => request,
        Err(error) => return error.into_response(),
    };
    if let Some(response) = call.settle(request.model).await {
        return response;
    }
    let prompt_tokens = request.prompt_tokens();
    let charged = match call.charge(request.model, prompt_tokens) {
        Ok(charged) => charged,
        Err(response) => return *response,
    };
    let data: Vec<EmbeddingItem> = request
        .inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            let vector = embedding_vector(&input.key(), request.dimensions);
            let embedding = if request.base64 {
                Embedding::Base64(to_base64(&vector))
            } else {
                Embedding::Float(vector)
            };
            EmbeddingItem { object: "embedding", index, embedding }
        })
        .collect();
    let list = EmbeddingList {
        object: "list",
        data,
        model: request.model,
        usage: EmbeddingUsage { prompt_tokens, total_tokens: prompt_tokens },
    };
    charged.stamp(json_response(StatusCode::OK, &list))
}

/// A validated embeddings request.
struct EmbeddingRequest<'a> {
    model: &'a str,
    inputs: Vec<EmbedInput<'a>>,
    dimensions: usize,
    base64: bool,
}

impl<'a> EmbeddingRequest<'a> {
    fn parse(body: &'a Value) -> Result<Self, ApiError> {
        let invalid = |message: &'static str| ApiError::bad_request(Provider::OpenAi, message);
        let model = str_field(body, "model")
            .ok_or_else(|| invalid("you must provide a model parameter"))?;
        let input =
            body.get("input").ok_or_else(|| invalid("Missing required parameter: 'input'."))?;
        let inputs = embedding_inputs(input).ok_or_else(|| {
            invalid(
                "'input' : input must be a string, an array of strings, an array of integers or \
                 an array of integer arrays, and must not be empty",
            )
        })?;
        let dimensions = match body.get("dimensions") {
            None | Some(Value::Null) => DEFAULT_DIMENSIONS,
            Some(value) => value
                .as_u64()
                .filter(|dimensions| (1..=MAX_DIMENSIONS).contains(dimensions))
                .ok_or_else(|| invalid("'dimensions' must be an integer from 1 to 8192"))?,
        };
        let base64 = match str_field(body, "encoding_format") {
            None | Some("float") => false,
            Some("base64") => true,
            Some(_) => {
                return Err(invalid("'encoding_format' must be 'float' or 'base64'"));
            }
        };
        let dimensions = usize::try_from(dimensions).unwrap_or(usize::MAX);
        Ok(Self { model, inputs, dimensions, base64 })
    }

    /// `ceil(chars / 4)` of the texts plus one per token id, at least 1.
    fn prompt_tokens(&self) -> u64 {
        let chars: usize = self.inputs.iter().map(EmbedInput::chars).sum();
        let ids: usize = self.inputs.iter().map(EmbedInput::tokens).sum();
        let text_tokens = if chars == 0 { 0 } else { prompt_tokens(chars) };
        (text_tokens + u64::try_from(ids).unwrap_or(u64::MAX)).max(1)
    }
}

/// One embedding input: a text, or an array of token ids.
enum EmbedInput<'a> {
    Text(&'a str),
    Tokens(&'a [Value]),
}

impl EmbedInput<'_> {
    /// What the vector is derived from: the text, or the token ids joined with commas.
    fn key(&self) -> std::borrow::Cow<'_, str> {
        match self {
            EmbedInput::Text(text) => std::borrow::Cow::Borrowed(text),
            EmbedInput::Tokens(tokens) => {
                let ids: Vec<String> = tokens.iter().map(Value::to_string).collect();
                std::borrow::Cow::Owned(ids.join(","))
            }
        }
    }

    fn chars(&self) -> usize {
        match self {
            EmbedInput::Text(text) => text.chars().count(),
            EmbedInput::Tokens(_) => 0,
        }
    }

    fn tokens(&self) -> usize {
        match self {
            EmbedInput::Text(_) => 0,
            EmbedInput::Tokens(tokens) => tokens.len(),
        }
    }
}

/// The inputs of `input`: a string, strings, token ids, or arrays of token ids. `None` when it
/// is none of these or empty.
fn embedding_inputs(input: &Value) -> Option<Vec<EmbedInput<'_>>> {
    match input {
        Value::String(text) => Some(vec![EmbedInput::Text(text)]),
        Value::Array(items) if items.is_empty() => None,
        Value::Array(items) if items.iter().all(Value::is_string) => {
            Some(items.iter().filter_map(Value::as_str).map(EmbedInput::Text).collect())
        }
        Value::Array(items) if items.iter().all(Value::is_u64) => {
            Some(vec![EmbedInput::Tokens(items)])
        }
        Value::Array(items) => items
            .iter()
            .map(|item| match item.as_array() {
                Some(ids) if !ids.is_empty() && ids.iter().all(Value::is_u64) => {
                    Some(EmbedInput::Tokens(ids))
                }
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

#[derive(Serialize)]
struct EmbeddingList<'a> {
    object: &'static str,
    data: Vec<EmbeddingItem>,
    model: &'a str,
    usage: EmbeddingUsage,
}

#[derive(Serialize)]
struct EmbeddingItem {
    object: &'static str,
    index: usize,
    embedding: Embedding,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Embedding {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Serialize)]
struct EmbeddingUsage {
    prompt_tokens: u64,
    total_tokens: u64,
}

/// `GET /v1/models` without `anthropic-version`.
pub(crate) async fn models(shared: &Arc<Shared>, request: Request) -> Response {
    let incoming = match Incoming::read(shared, request, Provider::OpenAi).await {
        Ok(incoming) => incoming,
        Err(response) => return response,
    };
    if let Err(error) = incoming.check_key(Provider::OpenAi) {
        return error.into_response();
    }
    let list = json!({
        "object": "list",
        "data": [
            {"id": "gpt-4o", "object": "model", "created": 1_715_367_049, "owned_by": "system"},
            {"id": "gpt-4o-mini", "object": "model", "created": 1_721_172_741, "owned_by": "system"},
            {"id": "text-embedding-3-small", "object": "model", "created": 1_705_948_997, "owned_by": "system"}
        ]
    });
    json_response(StatusCode::OK, &list)
}
