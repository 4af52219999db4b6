//! The Gemini API: `POST /v1beta/models/{model}:generateContent`,
//! `:streamGenerateContent?alt=sse`, `:embedContent`, `:batchEmbedContents` and
//! `GET /v1beta/models`, in the shapes of Google's API reference.
//!
//! Gemini accepts both the camelCase and the snake_case spelling of request members (proto JSON),
//! so the mock reads both. Its SSE events end with `\r\n\r\n`, as the real API's do, and every
//! streamed chunk repeats `usageMetadata` with cumulative counts.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};

use crate::answer::{Reply, piece, prompt_tokens, str_field, text_chars, tool_to_call};
use crate::call::{Call, Fault, Incoming, Provider, error_response, json_response};
use crate::embed::embedding_vector;
use crate::state::Shared;
use crate::stream::{Ending, Frames, sse_response};

/// The end of every Gemini SSE event.
const EVENT_END: &str = "\r\n\r\n";

/// Dimensions of an embedding when the request does not ask for a number.
const DEFAULT_DIMENSIONS: usize = 16;

/// The most dimensions an embedding request may ask for.
const MAX_DIMENSIONS: u64 = 8192;

/// `POST /v1beta/models/{model}:{method}`: splits the path and picks the method.
pub(crate) async fn dispatch(
    State(shared): State<Arc<Shared>>,
    Path(rest): Path<String>,
    request: Request,
) -> Response {
    let (model, method) = rest.rsplit_once(':').unwrap_or((rest.as_str(), ""));
    match method {
        "generateContent" => generate(&shared, model, request, false).await,
        "streamGenerateContent" => generate(&shared, model, request, true).await,
        "embedContent" => embed(&shared, model, request, false).await,
        "batchEmbedContents" => embed(&shared, model, request, true).await,
        _ => {
            let message = format!("Method not found: {rest}");
            match Incoming::read(&shared, request, Provider::Gemini).await {
                Ok(_) => error_response(Provider::Gemini, Fault::NotFound, &message, None),
                Err(response) => response,
            }
        }
    }
}

/// A member by its camelCase or snake_case name.
fn member<'a>(value: &'a Value, camel: &str, snake: &str) -> Option<&'a Value> {
    value.get(camel).or_else(|| value.get(snake))
}

async fn generate(shared: &Arc<Shared>, model: &str, request: Request, stream: bool) -> Response {
    let incoming = match Call::admit(shared, request, Provider::Gemini).await {
        Ok(incoming) => incoming,
        Err(response) => return response,
    };
    if stream && incoming.query_param("alt") != Some("sse") {
        let message = "streamGenerateContent is only served as server-sent events: add ?alt=sse";
        return error_response(Provider::Gemini, Fault::BadRequest, message, None);
    }
    let call = match Call::proceed(shared, incoming, Provider::Gemini).await {
        Ok(call) => call,
        Err(response) => return response,
    };
    let Some(contents) = call.body.get("contents").and_then(Value::as_array) else {
        return call.bad_request("* GenerateContentRequest.contents: contents is not specified");
    };
    if let Some(response) = call.settle(model).await {
        return response;
    }
    let reply = choose_reply(&call.body, contents, shared.config.chunks);
    let system = member(&call.body, "systemInstruction", "system_instruction");
    let chars = system.map_or(0, text_chars) + text_chars(&call.body["contents"]);
    let prompt_tokens = prompt_tokens(chars);
    let charged = match call.charge(model, prompt_tokens + reply.completion_tokens()) {
        Ok(charged) => charged,
        Err(response) => return *response,
    };
    let answer = Answer {
        model,
        response_id: &format!("mock{:012}", shared.next_id()),
        reply: &reply,
        prompt_tokens,
    };
    let response = if stream {
        let delay = shared.config.chunk_delay;
        sse_response(shared, answer.stream_frames(Frames::new(delay)), delay, Ending::Complete)
    } else {
        answer.response(&shared.default_text, shared.config.chunks)
    };
    // Gemini sends no rate-limit headers: stamping adds nothing, but keeps every route alike.
    charged.stamp(response)
}

/// A function call when functions are declared (see [`tool_to_call`]), else text cut to
/// `generationConfig.maxOutputTokens`.
fn choose_reply(body: &Value, contents: &[Value], chunks: usize) -> Reply {
    let first = member(body, "tools", "tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|tool| member(tool, "functionDeclarations", "function_declarations"))
        .filter_map(Value::as_array)
        .flatten()
        .find_map(|declaration| str_field(declaration, "name"));
    let config = member(body, "toolConfig", "tool_config")
        .and_then(|config| member(config, "functionCallingConfig", "function_calling_config"));
    let mode = config.and_then(|config| str_field(config, "mode"));
    let forced = config
        .filter(|_| mode == Some("ANY"))
        .and_then(|config| member(config, "allowedFunctionNames", "allowed_function_names"))
        .and_then(Value::as_array)
        .and_then(|names| names.first())
        .and_then(Value::as_str);
    let last_is_user = contents.last().is_some_and(is_plain_user_turn);
    match tool_to_call(last_is_user, mode == Some("NONE"), forced, first) {
        Some(name) => Reply::Tool { name },
        None => {
            let max = member(body, "generationConfig", "generation_config")
                .and_then(|config| member(config, "maxOutputTokens", "max_output_tokens"))
                .and_then(Value::as_u64);
            Reply::text(chunks, max)
        }
    }
}

/// A user (or role-less) content with no `functionResponse` part.
fn is_plain_user_turn(content: &Value) -> bool {
    let role = str_field(content, "role").unwrap_or("user");
    let has_response = content.get("parts").and_then(Value::as_array).is_some_and(|parts| {
        parts.iter().any(|part| member(part, "functionResponse", "function_response").is_some())
    });
    role == "user" && !has_response
}

/// Everything an answer is built from.
struct Answer<'a> {
    model: &'a str,
    response_id: &'a str,
    reply: &'a Reply,
    prompt_tokens: u64,
}

impl Answer<'_> {
    fn finish_reason(&self) -> &'static str {
        match self.reply {
            Reply::Text { truncated: true, .. } => "MAX_TOKENS",
            Reply::Text { truncated: false, .. } | Reply::Tool { .. } => "STOP",
        }
    }

    /// One `GenerateContentResponse`.
    fn chunk<'b>(&'b self, part: Part<'b>, finish: bool, candidates_tokens: u64) -> Generated<'b> {
        let prompt = self.prompt_tokens;
        Generated {
            candidates: [Candidate {
                content: Content { parts: [part], role: "model" },
                finish_reason: finish.then(|| self.finish_reason()),
                index: 0,
            }],
            usage_metadata: UsageMetadata {
                prompt_token_count: prompt,
                candidates_token_count: candidates_tokens,
                total_token_count: prompt + candidates_tokens,
                prompt_tokens_details: [ModalityCount { modality: "TEXT", token_count: prompt }],
            },
            model_version: self.model,
            response_id: self.response_id,
        }
    }

    fn response(&self, default_text: &str, chunks: usize) -> Response {
        let text;
        let part = match self.reply {
            Reply::Text { words, .. } => {
                text = if *words == chunks { None } else { Some(crate::answer_text(*words)) };
                Part::text(text.as_deref().unwrap_or(default_text))
            }
            Reply::Tool { name } => Part::call(name),
        };
        let generated = self.chunk(part, true, self.reply.completion_tokens());
        json_response(StatusCode::OK, &generated)
    }

    /// One chunk per word (the last with `finishReason`), or a single function-call chunk.
    fn stream_frames(&self, mut frames: Frames) -> Vec<bytes::Bytes> {
        match self.reply {
            Reply::Text { words: 0, .. } => {
                frames.data_json(&self.chunk(Part::text(""), true, 0), EVENT_END);
            }
            Reply::Text { words, .. } => {
                for index in 0..*words {
                    frames.cut();
                    let sent = u64::try_from(index + 1).unwrap_or(u64::MAX);
                    let chunk = self.chunk(Part::text(piece(index)), index + 1 == *words, sent);
                    frames.data_json(&chunk, EVENT_END);
                }
            }
            Reply::Tool { name } => {
                let chunk = self.chunk(Part::call(name), true, self.reply.completion_tokens());
                frames.data_json(&chunk, EVENT_END);
            }
        }
        frames.finish()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Generated<'a> {
    candidates: [Candidate<'a>; 1],
    usage_metadata: UsageMetadata,
    model_version: &'a str,
    response_id: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Candidate<'a> {
    content: Content<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finish_reason: Option<&'static str>,
    index: u32,
}

#[derive(Serialize)]
struct Content<'a> {
    parts: [Part<'a>; 1],
    role: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Part<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    function_call: Option<FunctionCall<'a>>,
}

impl<'a> Part<'a> {
    fn text(text: &'a str) -> Self {
        Part { text: Some(text), function_call: None }
    }

    fn call(name: &'a str) -> Self {
        Part {
            text: None,
            function_call: Some(FunctionCall { name, args: MockArgs { mock: true } }),
        }
    }
}

#[derive(Serialize)]
struct FunctionCall<'a> {
    name: &'a str,
    args: MockArgs,
}

/// The arguments of every default call: `{"mock":true}`.
#[derive(Serialize)]
struct MockArgs {
    mock: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    prompt_token_count: u64,
    candidates_token_count: u64,
    total_token_count: u64,
    prompt_tokens_details: [ModalityCount; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ModalityCount {
    modality: &'static str,
    token_count: u64,
}

/// `:embedContent` (one `content`) and `:batchEmbedContents` (`requests`, each with a
/// `content`).
async fn embed(shared: &Arc<Shared>, model: &str, request: Request, batch: bool) -> Response {
    let call = match Call::begin(shared, request, Provider::Gemini).await {
        Ok(call) => call,
        Err(response) => return response,
    };
    let requests: Vec<&Value> = if batch {
        match call.body.get("requests").and_then(Value::as_array) {
            Some(requests) if !requests.is_empty() => requests.iter().collect(),
            _ => return call.bad_request("* BatchEmbedContentsRequest.requests: is required"),
        }
    } else {
        vec![&call.body]
    };
    let mut inputs = Vec::with_capacity(requests.len());
    for request in requests {
        match embed_input(request) {
            Ok(input) => inputs.push(input),
            Err(message) => return call.bad_request(message),
        }
    }
    if let Some(response) = call.settle(model).await {
        return response;
    }
    // Embedding answers report no usage, so they cost a request and no tokens.
    let charged = match call.charge(model, 0) {
        Ok(charged) => charged,
        Err(response) => return *response,
    };
    let mut vectors = inputs
        .iter()
        .map(|(text, dimensions)| json!({ "values": embedding_vector(text, *dimensions) }));
    let body = if batch {
        json!({ "embeddings": vectors.collect::<Vec<_>>() })
    } else {
        json!({ "embedding": vectors.next().unwrap_or(Value::Null) })
    };
    charged.stamp(json_response(StatusCode::OK, &body))
}

/// The text (all text parts joined) and dimensions of one embedding request.
fn embed_input(request: &Value) -> Result<(String, usize), &'static str> {
    let parts = request
        .get("content")
        .and_then(|content| content.get("parts"))
        .and_then(Value::as_array)
        .ok_or("* EmbedContentRequest.content: content is not specified")?;
    let text: String = parts.iter().filter_map(|part| str_field(part, "text")).collect();
    let dimensions = match member(request, "outputDimensionality", "output_dimensionality") {
        None | Some(Value::Null) => DEFAULT_DIMENSIONS,
        Some(value) => value
            .as_u64()
            .filter(|dimensions| (1..=MAX_DIMENSIONS).contains(dimensions))
            .and_then(|dimensions| usize::try_from(dimensions).ok())
            .ok_or("* EmbedContentRequest.output_dimensionality: must be from 1 to 8192")?,
    };
    Ok((text, dimensions))
}

/// `GET /v1beta/models`.
pub(crate) async fn models(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let incoming = match Incoming::read(&shared, request, Provider::Gemini).await {
        Ok(incoming) => incoming,
        Err(response) => return response,
    };
    if let Err(error) = incoming.check_key(Provider::Gemini) {
        return error.into_response();
    }
    let list = json!({
        "models": [
            {
                "name": "models/gemini-2.0-flash",
                "version": "2.0",
                "displayName": "Gemini 2.0 Flash",
                "description": "Gemini 2.0 Flash",
                "inputTokenLimit": 1_048_576,
                "outputTokenLimit": 8192,
                "supportedGenerationMethods": ["generateContent", "countTokens"]
            },
            {
                "name": "models/text-embedding-004",
                "version": "004",
                "displayName": "Text Embedding 004",
                "description": "Obtain a distributed representation of a text.",
                "inputTokenLimit": 2048,
                "outputTokenLimit": 1,
                "supportedGenerationMethods": ["embedContent"]
            }
        ]
    });
    json_response(StatusCode::OK, &list)
}
