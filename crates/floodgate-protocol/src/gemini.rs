//! Google Gemini generateContent / streamGenerateContent (SSE) and
//! batchEmbedContents: the upstream format of the `gemini` provider. No
//! client route speaks it; the model goes in the URL, not the body.
//!
//! This module owns the translation between the canonical shape and
//! Gemini's wire JSON in both directions: request bodies written from a
//! [`ChatRequest`] or [`EmbeddingsRequest`], complete and streamed answers
//! read into canonical responses and stream events, and Gemini's error body.
//! Requests are always translated (no client sends Gemini's format, so there
//! is nothing to pass through); answers keep Gemini's own bytes as `native`.
//!
//! # Conversation mapping
//!
//! System messages, wherever they stand, become `systemInstruction` parts in
//! order. User messages are `user` turns, assistant messages `model` turns and
//! tool results `functionResponse` parts of a `user` turn. Consecutive
//! messages that land in the same role are merged into one turn, so turns
//! always alternate, and within a `user` turn the `functionResponse` parts come
//! first, answering the preceding `model` turn's calls in order. Gemini matches
//! responses to calls by name and position; it has no use for our tool call
//! ids, so none are sent.
//!
//! # Thought signatures
//!
//! Gemini 2.5 and 3 return an opaque `thoughtSignature` next to the
//! `functionCall` parts they emit, and Gemini 3 refuses the next turn unless
//! it comes back on the same part. The canonical shape has no field for it,
//! so it rides in the tool call id, which every client echoes verbatim:
//! reading a call produces the id `"{call id}{SIG_SEP}{signature}"`, and
//! writing a call with such an id splits the signature off again and puts it
//! back as the part's `thoughtSignature`. The signature is carried in the
//! URL-safe base64 alphabet without padding, so ids stay within
//! `[A-Za-z0-9_-]` (the character set Anthropic requires of tool ids) and are
//! turned back into standard base64 when written; both decode to the same
//! bytes.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::canonical::*;
use crate::error::*;
use crate::sse::SseEvent;

#[cfg(test)]
mod tests;

/// Separates a tool call's own id from the Gemini thought signature carried
/// in the canonical tool call id (see the module documentation).
pub const SIG_SEP: &str = "__thought__";

/// The URL prefix of files uploaded through the Gemini Files API, the only
/// `https` URLs Gemini reads itself.
const FILES_API_PREFIX: &str = "https://generativelanguage.googleapis.com/";

// ---------------------------------------------------------------------------
// Chat requests
// ---------------------------------------------------------------------------

/// Body of `POST /v1beta/models/{model}:generateContent` (and of
/// `:streamGenerateContent?alt=sse` when `req.stream`).
///
/// `user` is not sent (Gemini has no such field) and neither is
/// `parallel_tool_calls` (Gemini offers no control over it).
pub fn write_chat_request(req: &ChatRequest) -> Result<Vec<u8>, TranslateError> {
    let (system, contents) = write_conversation(&req.messages)?;
    let tools = write_tools(&req.tools);
    // A toolConfig without declarations is refused by Gemini and means
    // nothing anyway.
    let tool_config =
        if req.tools.is_empty() { None } else { req.tool_choice.as_ref().map(write_tool_config) };
    let body = WireRequest {
        system_instruction: system,
        contents,
        tools,
        tool_config,
        generation_config: write_generation_config(req),
    };
    serde_json::to_vec(&body)
        .map_err(|err| TranslateError::new(format!("cannot serialise the Gemini request: {err}")))
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct WireRequest<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    system_instruction: Option<SystemInstruction<'a>>,
    contents: Vec<Turn<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_config: Option<ToolConfig<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    generation_config: Option<GenerationConfig<'a>>,
}

#[derive(Debug, Serialize)]
struct SystemInstruction<'a> {
    parts: Vec<TextPart<'a>>,
}

#[derive(Debug, Serialize)]
struct TextPart<'a> {
    text: &'a str,
}

/// One `contents` entry.
#[derive(Debug, Serialize)]
struct Turn<'a> {
    role: &'static str,
    parts: Vec<OutPart<'a>>,
}

/// A Gemini `Part`: exactly one of the data fields is set, plus the thought
/// signature on function calls that had one.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct OutPart<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    inline_data: Option<InlineData<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    file_data: Option<FileData<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    function_call: Option<OutFunctionCall<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    function_response: Option<OutFunctionResponse<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thought_signature: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct InlineData<'a> {
    mime_type: &'a str,
    data: &'a str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct FileData<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    mime_type: Option<&'static str>,
    file_uri: &'a str,
}

#[derive(Debug, Serialize)]
struct OutFunctionCall<'a> {
    name: &'a str,
    args: Map<String, Value>,
}

#[derive(Debug, Serialize)]
struct OutFunctionResponse<'a> {
    name: &'a str,
    response: Map<String, Value>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct WireTool<'a> {
    function_declarations: Vec<FunctionDeclaration<'a>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct FunctionDeclaration<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    /// `parametersJsonSchema` takes full JSON Schema, unlike `parameters`,
    /// which takes only Gemini's OpenAPI subset.
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters_json_schema: Option<&'a Value>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolConfig<'a> {
    function_calling_config: FunctionCallingConfig<'a>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct FunctionCallingConfig<'a> {
    mode: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    allowed_function_names: Vec<&'a str>,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct GenerationConfig<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_output_tokens: Option<u32>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop_sequences: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    response_mime_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_json_schema: Option<&'a Value>,
}

/// Splits the messages into the system instruction and the turns.
fn write_conversation(
    messages: &[Message],
) -> Result<(Option<SystemInstruction<'_>>, Vec<Turn<'_>>), TranslateError> {
    let mut system = Vec::new();
    let mut turns: Vec<Turn<'_>> = Vec::new();
    // Tool call id -> function name, from the assistant turns seen so far:
    // a functionResponse must name the function it answers.
    let mut call_names: HashMap<&str, &str> = HashMap::new();
    for (i, message) in messages.iter().enumerate() {
        let path = format!("messages[{i}]");
        let role = match message.role {
            Role::System => {
                write_system(message, &path, &mut system)?;
                continue;
            }
            Role::Assistant => "model",
            Role::User | Role::Tool => "user",
        };
        let mut parts = Vec::new();
        for (j, part) in message.content.iter().enumerate() {
            let path = format!("{path}.content[{j}]");
            write_part(part, &path, &mut call_names, &mut parts)?;
        }
        push_turn(&mut turns, role, parts);
    }
    for turn in &mut turns {
        if turn.role == "user" {
            // A stable sort: the responses keep the order of the calls they
            // answer, and everything else keeps its order after them.
            turn.parts.sort_by_key(|part| part.function_response.is_none());
        }
    }
    let system = (!system.is_empty()).then_some(SystemInstruction { parts: system });
    Ok((system, turns))
}

/// Appends `parts` to the last turn when it has the same role, so that roles
/// alternate. Gemini refuses turns without parts, so empty ones are dropped.
fn push_turn<'a>(turns: &mut Vec<Turn<'a>>, role: &'static str, parts: Vec<OutPart<'a>>) {
    if parts.is_empty() {
        return;
    }
    match turns.last_mut() {
        Some(last) if last.role == role => last.parts.extend(parts),
        _ => turns.push(Turn { role, parts }),
    }
}

fn write_system<'a>(
    message: &'a Message,
    path: &str,
    out: &mut Vec<TextPart<'a>>,
) -> Result<(), TranslateError> {
    for (j, part) in message.content.iter().enumerate() {
        match part {
            Part::Text { text } if text.is_empty() => {}
            Part::Text { text } => out.push(TextPart { text }),
            _ => {
                return Err(TranslateError::new(format!(
                    "{path}.content[{j}]: Gemini system instructions can only hold text"
                )));
            }
        }
    }
    Ok(())
}

/// Writes one canonical part as zero or more Gemini parts.
fn write_part<'a>(
    part: &'a Part,
    path: &str,
    call_names: &mut HashMap<&'a str, &'a str>,
    out: &mut Vec<OutPart<'a>>,
) -> Result<(), TranslateError> {
    match part {
        // Gemini refuses empty text parts, and they carry nothing.
        Part::Text { text } if text.is_empty() => {}
        Part::Text { text } => {
            out.push(OutPart { text: Some(text.as_str()), ..OutPart::default() })
        }
        Part::Image { source } => out.push(write_image(source, path)?),
        Part::ToolCall { id, name, arguments } => {
            call_names.insert(id, name);
            out.push(write_tool_call(id, name, arguments, path)?);
        }
        Part::ToolResult { tool_call_id, content, is_error } => {
            let Some(name) = call_names.get(tool_call_id.as_str()).copied() else {
                return Err(TranslateError::new(format!(
                    "{path}: the tool result answers tool call id `{tool_call_id}`, which no \
                     earlier assistant message made; Gemini needs the name of the function \
                     it answers"
                )));
            };
            write_tool_result(name, content, *is_error, path, out)?;
        }
        // Gemini's thoughts cannot be sent back, and other providers'
        // reasoning means nothing to it.
        Part::Thinking { .. } => {}
    }
    Ok(())
}

fn write_tool_call<'a>(
    id: &str,
    name: &'a str,
    arguments: &str,
    path: &str,
) -> Result<OutPart<'a>, TranslateError> {
    let args = parse_arguments(arguments, path)?;
    let thought_signature = split_signature(id).1.map(signature_from_id);
    Ok(OutPart {
        function_call: Some(OutFunctionCall { name, args }),
        thought_signature,
        ..OutPart::default()
    })
}

/// Gemini takes the arguments as an object. An empty text is read as no
/// arguments, which some clients send for functions without parameters.
fn parse_arguments(arguments: &str, path: &str) -> Result<Map<String, Value>, TranslateError> {
    if arguments.trim().is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(Value::Object(args)) => Ok(args),
        Ok(_) => Err(TranslateError::new(format!(
            "{path}: the tool call arguments must be a JSON object for Gemini"
        ))),
        Err(err) => Err(TranslateError::new(format!(
            "{path}: the tool call arguments are not valid JSON ({err}); Gemini needs an object"
        ))),
    }
}

/// A `functionResponse` part, then any images of the result as parts of
/// their own (a `functionResponse` holds JSON only on most models).
fn write_tool_result<'a>(
    name: &'a str,
    content: &'a [Part],
    is_error: bool,
    path: &str,
    out: &mut Vec<OutPart<'a>>,
) -> Result<(), TranslateError> {
    let mut texts = Vec::new();
    let mut images = Vec::new();
    for (k, part) in content.iter().enumerate() {
        match part {
            Part::Text { text } => texts.push(text.as_str()),
            Part::Image { source } => {
                images.push(write_image(source, &format!("{path}.content[{k}]"))?)
            }
            _ => {
                return Err(TranslateError::new(format!(
                    "{path}.content[{k}]: a tool result can only hold text and images"
                )));
            }
        }
    }
    let text = texts.join("\n");
    let response = tool_result_object(text, is_error);
    out.push(OutPart {
        function_response: Some(OutFunctionResponse { name, response }),
        ..OutPart::default()
    });
    out.extend(images);
    Ok(())
}

/// Gemini's `response` is an object: a result that is one goes as it is,
/// anything else is wrapped under `result` (or `error` for a failed call).
fn tool_result_object(text: String, is_error: bool) -> Map<String, Value> {
    if !is_error && let Ok(Value::Object(object)) = serde_json::from_str::<Value>(&text) {
        return object;
    }
    let key = if is_error { "error" } else { "result" };
    let mut object = Map::new();
    object.insert(key.to_owned(), Value::String(text));
    object
}

fn write_image<'a>(source: &'a ImageSource, path: &str) -> Result<OutPart<'a>, TranslateError> {
    match source {
        ImageSource::Base64 { media_type, data } => Ok(inline_part(media_type, data)),
        ImageSource::Url(url) => {
            if let Some(rest) = url.strip_prefix("data:") {
                let (mime_type, data) = parse_data_url(rest, path)?;
                Ok(inline_part(mime_type, data))
            } else if url.starts_with("gs://") {
                // Cloud Storage objects need a MIME type; images default to JPEG.
                let mime_type = guess_image_mime(url).unwrap_or("image/jpeg");
                Ok(file_part(Some(mime_type), url))
            } else if url.starts_with(FILES_API_PREFIX) {
                // A Files API upload already knows its MIME type.
                Ok(file_part(guess_image_mime(url), url))
            } else {
                Err(TranslateError::new(format!(
                    "{path}: Gemini cannot fetch images from URLs like `{}`; send the image \
                     inline as base64 (a data: URL) instead",
                    url_for_message(url)
                )))
            }
        }
    }
}

fn inline_part<'a>(mime_type: &'a str, data: &'a str) -> OutPart<'a> {
    OutPart { inline_data: Some(InlineData { mime_type, data }), ..OutPart::default() }
}

fn file_part<'a>(mime_type: Option<&'static str>, file_uri: &'a str) -> OutPart<'a> {
    OutPart { file_data: Some(FileData { mime_type, file_uri }), ..OutPart::default() }
}

/// Reads `image/png;base64,AAAA` (a data URL without its `data:` prefix).
fn parse_data_url<'a>(rest: &'a str, path: &str) -> Result<(&'a str, &'a str), TranslateError> {
    rest.split_once(',')
        .and_then(|(meta, data)| Some((meta.strip_suffix(";base64")?, data)))
        .filter(|(mime_type, _)| !mime_type.is_empty())
        .ok_or_else(|| {
            TranslateError::new(format!(
                "{path}: only base64 data URLs with a media type (data:image/png;base64,...) \
                 can be sent to Gemini"
            ))
        })
}

/// The scheme and host of a URL, so an error does not echo a signed query.
fn url_for_message(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find(['/', '?', '#']) {
        Some(end) => &url[..after_scheme + end],
        None => url,
    }
}

fn guess_image_mime(url: &str) -> Option<&'static str> {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let extension = path.rsplit_once('.')?.1.to_ascii_lowercase();
    match extension.as_str() {
        "png" => Some("image/png"),
        "jpg" | "jpeg" => Some("image/jpeg"),
        "webp" => Some("image/webp"),
        "gif" => Some("image/gif"),
        "heic" => Some("image/heic"),
        "heif" => Some("image/heif"),
        _ => None,
    }
}

fn write_tools(tools: &[Tool]) -> Vec<WireTool<'_>> {
    if tools.is_empty() {
        return Vec::new();
    }
    let function_declarations = tools
        .iter()
        .map(|tool| FunctionDeclaration {
            name: &tool.name,
            description: tool.description.as_deref(),
            parameters_json_schema: (!tool.parameters.is_null()).then_some(&tool.parameters),
        })
        .collect();
    vec![WireTool { function_declarations }]
}

fn write_tool_config(choice: &ToolChoice) -> ToolConfig<'_> {
    let (mode, allowed_function_names) = match choice {
        ToolChoice::Auto => ("AUTO", Vec::new()),
        ToolChoice::None => ("NONE", Vec::new()),
        ToolChoice::Required => ("ANY", Vec::new()),
        ToolChoice::Tool(name) => ("ANY", vec![name.as_str()]),
    };
    ToolConfig { function_calling_config: FunctionCallingConfig { mode, allowed_function_names } }
}

fn write_generation_config(req: &ChatRequest) -> Option<GenerationConfig<'_>> {
    let (response_mime_type, response_json_schema) = match &req.response_format {
        None | Some(ResponseFormat::Text) => (None, None),
        Some(ResponseFormat::JsonObject) => (Some("application/json"), None),
        Some(ResponseFormat::JsonSchema { schema, .. }) => (Some("application/json"), Some(schema)),
    };
    let config = GenerationConfig {
        temperature: req.temperature,
        top_p: req.top_p,
        top_k: req.top_k,
        max_output_tokens: req.max_tokens,
        stop_sequences: &req.stop,
        response_mime_type,
        response_json_schema,
    };
    let empty = config.temperature.is_none()
        && config.top_p.is_none()
        && config.top_k.is_none()
        && config.max_output_tokens.is_none()
        && config.stop_sequences.is_empty()
        && config.response_mime_type.is_none();
    (!empty).then_some(config)
}

// ---------------------------------------------------------------------------
// Thought signatures in tool call ids
// ---------------------------------------------------------------------------

/// Splits a canonical tool call id into the call's own id and the thought
/// signature it carries, if any (still in the id's URL-safe alphabet).
fn split_signature(id: &str) -> (&str, Option<&str>) {
    match id.split_once(SIG_SEP) {
        Some((call_id, signature)) if !signature.is_empty() => (call_id, Some(signature)),
        _ => (id, None),
    }
}

/// The canonical id of a call that Gemini gave `signature` (standard base64).
fn id_with_signature(call_id: String, signature: Option<&str>) -> String {
    match signature {
        Some(signature) if !signature.is_empty() => {
            let mut id = call_id;
            id.push_str(SIG_SEP);
            id.extend(signature.trim_end_matches('=').chars().map(|c| match c {
                '+' => '-',
                '/' => '_',
                c => c,
            }));
            id
        }
        _ => call_id,
    }
}

/// Turns a signature carried in an id back into padded standard base64.
fn signature_from_id(signature: &str) -> String {
    let mut out: String = signature
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    while !out.len().is_multiple_of(4) {
        out.push('=');
    }
    out
}

// ---------------------------------------------------------------------------
// Chat responses
// ---------------------------------------------------------------------------

/// `model` is the upstream model the request was sent to (Gemini answers
/// with `modelVersion`, used when present).
pub fn read_chat_response(
    req: &ChatRequest,
    model: &str,
    body: Bytes,
) -> Result<ChatResponse, DecodeError> {
    let _ = req;
    let wire: WireResponse = decode(&body, "generateContent response")?;
    let id = wire.response_id.clone().unwrap_or_else(|| generated_id(&body));
    let mut calls = CallIds::new(&id);
    let mut choices = Vec::with_capacity(wire.candidates.len().max(1));
    for (position, candidate) in wire.candidates.into_iter().enumerate() {
        choices.push(read_candidate(candidate, position, &mut calls));
    }
    if choices.is_empty() && wire.prompt_feedback.is_some_and(|f| f.block_reason.is_some()) {
        // The prompt itself was blocked: Gemini answers with no candidate.
        choices.push(Choice {
            index: 0,
            message: assistant(Vec::new()),
            finish_reason: Some(FinishReason::ContentFilter),
        });
    }
    Ok(ChatResponse {
        id,
        model: wire.model_version.unwrap_or_else(|| model.to_owned()),
        created: 0,
        choices,
        usage: wire.usage_metadata.map(read_usage).unwrap_or_default(),
        native: Some(NativeResponse { format: Format::Gemini, body }),
    })
}

/// A `GenerateContentResponse` (also each chunk of a stream), or an error.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct WireResponse {
    candidates: Vec<WireCandidate>,
    prompt_feedback: Option<PromptFeedback>,
    usage_metadata: Option<UsageMetadata>,
    model_version: Option<String>,
    response_id: Option<String>,
    error: Option<WireError>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct WireCandidate {
    content: Option<WireContent>,
    finish_reason: Option<String>,
    index: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WireContent {
    parts: Vec<WirePart>,
}

/// The fields of a `Part` that translate. Others (generated images,
/// executable code, code results) have no canonical counterpart and are
/// left to the native body.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct WirePart {
    text: Option<String>,
    thought: bool,
    thought_signature: Option<String>,
    function_call: Option<WireFunctionCall>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WireFunctionCall {
    id: Option<String>,
    name: String,
    /// Kept as sent, so clients receive the model's arguments text exactly.
    args: Option<Box<RawValue>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct PromptFeedback {
    block_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct UsageMetadata {
    prompt_token_count: u32,
    cached_content_token_count: u32,
    candidates_token_count: u32,
    tool_use_prompt_token_count: u32,
    thoughts_token_count: u32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WireError {
    code: Option<Value>,
    message: Option<String>,
    status: Option<String>,
}

/// A part of an answer, before it becomes a message part or a stream delta.
enum ReadPart {
    Text(String),
    Thinking(String),
    ToolCall { id: String, name: String, arguments: String },
}

/// Numbers the tool calls of one answer, for those Gemini gives no id.
#[derive(Debug)]
struct CallIds {
    response_id: String,
    next: u32,
}

impl CallIds {
    fn new(response_id: &str) -> Self {
        CallIds { response_id: response_id.to_owned(), next: 0 }
    }

    /// Gemini's own id when it sent one, else `call_{response id}_{n}`, which
    /// stays unique across the turns of a conversation.
    fn id_for(&mut self, given: Option<String>, signature: Option<&str>) -> String {
        let call_id = given
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| format!("call_{}_{}", self.response_id, self.next));
        self.next += 1;
        id_with_signature(call_id, signature)
    }
}

fn read_part(part: WirePart, calls: &mut CallIds) -> Option<ReadPart> {
    if let Some(call) = part.function_call {
        let id = calls.id_for(call.id, part.thought_signature.as_deref());
        let arguments = call.args.map_or_else(|| "{}".to_owned(), |args| args.get().to_owned());
        return Some(ReadPart::ToolCall { id, name: call.name, arguments });
    }
    // Empty text parts arrive carrying only a signature; they hold no content.
    let text = part.text.filter(|text| !text.is_empty())?;
    Some(if part.thought { ReadPart::Thinking(text) } else { ReadPart::Text(text) })
}

fn read_candidate(candidate: WireCandidate, position: usize, calls: &mut CallIds) -> Choice {
    let index = candidate.index.unwrap_or(u32::try_from(position).unwrap_or(u32::MAX));
    let mut content = Vec::new();
    let mut has_calls = false;
    for part in candidate.content.map(|c| c.parts).unwrap_or_default() {
        let Some(part) = read_part(part, calls) else {
            continue;
        };
        content.push(match part {
            ReadPart::Text(text) => Part::Text { text },
            ReadPart::Thinking(text) => Part::Thinking { text, signature: None },
            ReadPart::ToolCall { id, name, arguments } => {
                has_calls = true;
                Part::ToolCall { id, name, arguments }
            }
        });
    }
    Choice {
        index,
        message: assistant(content),
        finish_reason: candidate.finish_reason.map(|reason| read_finish_reason(&reason, has_calls)),
    }
}

fn assistant(content: Vec<Part>) -> Message {
    Message { role: Role::Assistant, content, name: None }
}

/// Gemini ends a turn with function calls by `STOP`, like any other.
fn read_finish_reason(reason: &str, has_calls: bool) -> FinishReason {
    match reason {
        "STOP" if has_calls => FinishReason::ToolCalls,
        "STOP" => FinishReason::Stop,
        "MAX_TOKENS" => FinishReason::Length,
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            FinishReason::ContentFilter
        }
        other => FinishReason::Other(other.to_owned()),
    }
}

/// Gemini's `promptTokenCount` already includes the cached tokens, as the
/// canonical `input_tokens` does. Prompt tokens spent on tool use (search or
/// code results fed back to the model) are billed as input too.
fn read_usage(usage: UsageMetadata) -> Usage {
    Usage {
        input_tokens: usage.prompt_token_count.saturating_add(usage.tool_use_prompt_token_count),
        output_tokens: usage.candidates_token_count.saturating_add(usage.thoughts_token_count),
        cache_read_tokens: usage.cached_content_token_count,
        cache_creation_tokens: 0,
        reasoning_tokens: usage.thoughts_token_count,
    }
}

/// An id for an answer Gemini gave none: a hash of its bytes, so the same
/// answer always gets the same id.
fn generated_id(body: &[u8]) -> String {
    let mut hasher = DefaultHasher::new();
    body.hash(&mut hasher);
    format!("gemini-{:016x}", hasher.finish())
}

fn decode<T: DeserializeOwned>(body: &[u8], what: &str) -> Result<T, DecodeError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize::<_, T>(&mut de).map_err(|err| {
        let path = err.path().to_string();
        DecodeError::new(format!("invalid Gemini {what} at {path}: {}", err.into_inner()))
    })?;
    de.end().map_err(|err| DecodeError::new(format!("invalid Gemini {what}: {err}")))?;
    Ok(value)
}

// ---------------------------------------------------------------------------
// Streams
// ---------------------------------------------------------------------------

/// Decodes a `:streamGenerateContent?alt=sse` stream, whose every `data:` is
/// a complete `GenerateContentResponse` holding the next piece of the answer.
///
/// Gemini sends no terminal event: the stream is complete when the body
/// ends, so chunks never have `done` set.
#[derive(Debug)]
pub struct StreamReader {
    model: String,
    /// Set by the first chunk, which starts the answer.
    started: bool,
    /// Names the answer's tool calls; its response id is the first chunk's.
    calls: CallIds,
    choices: HashMap<u32, ChoiceState>,
}

#[derive(Debug, Default)]
struct ChoiceState {
    tool_calls: u32,
    finished: bool,
}

impl StreamReader {
    pub fn new(req: &ChatRequest, model: &str) -> Self {
        let _ = req;
        StreamReader {
            model: model.to_owned(),
            started: false,
            calls: CallIds::new(""),
            choices: HashMap::new(),
        }
    }

    pub fn read(&mut self, event: &SseEvent) -> Result<StreamChunk, StreamError> {
        let data = event.data.trim();
        if data.is_empty() {
            return Ok(StreamChunk::default());
        }
        let wire: WireResponse = decode(data.as_bytes(), "stream chunk")?;
        if let Some(error) = wire.error {
            return Err(StreamError::Upstream(read_wire_error(error)));
        }
        let mut events = Vec::new();
        if !self.started {
            self.started = true;
            let id = wire.response_id.clone().unwrap_or_else(|| generated_id(data.as_bytes()));
            self.calls = CallIds::new(&id);
            events.push(StreamEvent::Start {
                id,
                model: wire.model_version.clone().unwrap_or_else(|| self.model.clone()),
                created: 0,
            });
        }
        let blocked = wire.candidates.is_empty()
            && wire.prompt_feedback.is_some_and(|f| f.block_reason.is_some());
        for (position, candidate) in wire.candidates.into_iter().enumerate() {
            let choice = candidate.index.unwrap_or(u32::try_from(position).unwrap_or(u32::MAX));
            let state = self.choices.entry(choice).or_default();
            read_stream_candidate(candidate, choice, state, &mut self.calls, &mut events);
        }
        if blocked {
            let state = self.choices.entry(0).or_default();
            finish(state, 0, FinishReason::ContentFilter, &mut events);
        }
        if let Some(usage) = wire.usage_metadata {
            events.push(StreamEvent::Usage(read_usage(usage)));
        }
        Ok(StreamChunk {
            events,
            native: Some(NativeEvent {
                format: Format::Gemini,
                event: event.event.clone(),
                data: event.data.clone(),
            }),
            done: false,
        })
    }
}

fn read_stream_candidate(
    candidate: WireCandidate,
    choice: u32,
    state: &mut ChoiceState,
    calls: &mut CallIds,
    events: &mut Vec<StreamEvent>,
) {
    for part in candidate.content.map(|c| c.parts).unwrap_or_default() {
        let Some(part) = read_part(part, calls) else {
            continue;
        };
        match part {
            ReadPart::Text(text) => push_delta(events, choice, Delta::Text(text)),
            ReadPart::Thinking(text) => push_delta(events, choice, Delta::Thinking(text)),
            ReadPart::ToolCall { id, name, arguments } => {
                // Gemini sends each call whole, so one start and one
                // arguments fragment describe it.
                let index = state.tool_calls;
                state.tool_calls += 1;
                push_delta(events, choice, Delta::ToolCallStart { index, id, name });
                let fragment = arguments;
                push_delta(events, choice, Delta::ToolCallArguments { index, fragment });
            }
        }
    }
    if let Some(reason) = candidate.finish_reason {
        let reason = read_finish_reason(&reason, state.tool_calls > 0);
        finish(state, choice, reason, events);
    }
}

fn push_delta(events: &mut Vec<StreamEvent>, choice: u32, delta: Delta) {
    events.push(StreamEvent::Delta { choice, delta });
}

/// Ends a choice once: a repeated finish reason adds nothing.
fn finish(
    state: &mut ChoiceState,
    choice: u32,
    reason: FinishReason,
    events: &mut Vec<StreamEvent>,
) {
    if !state.finished {
        state.finished = true;
        events.push(StreamEvent::Finish { choice, reason });
    }
}

// ---------------------------------------------------------------------------
// Embeddings
// ---------------------------------------------------------------------------

/// Body of `POST /v1beta/models/{model}:batchEmbedContents`: one request per
/// input text, each naming the model again as Gemini requires.
pub fn write_embeddings_request(
    req: &EmbeddingsRequest,
    model: &str,
) -> Result<Vec<u8>, TranslateError> {
    let EmbeddingInput::Texts(texts) = &req.input else {
        return Err(TranslateError::new(
            "input: Gemini embeds text only; send the input as strings, not token arrays",
        ));
    };
    let model =
        if model.starts_with("models/") { model.to_owned() } else { format!("models/{model}") };
    let requests = texts
        .iter()
        .map(|text| EmbedContentRequest {
            model: &model,
            content: EmbedContent { parts: [TextPart { text }] },
            output_dimensionality: req.dimensions,
        })
        .collect();
    serde_json::to_vec(&BatchEmbedRequest { requests }).map_err(|err| {
        TranslateError::new(format!("cannot serialise the Gemini embeddings request: {err}"))
    })
}

#[derive(Debug, Serialize)]
struct BatchEmbedRequest<'a> {
    requests: Vec<EmbedContentRequest<'a>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct EmbedContentRequest<'a> {
    model: &'a str,
    content: EmbedContent<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_dimensionality: Option<u32>,
}

#[derive(Debug, Serialize)]
struct EmbedContent<'a> {
    parts: [TextPart<'a>; 1],
}

/// Reads a `batchEmbedContents` answer. Gemini reports no token counts for
/// embeddings, so the usage is zero.
pub fn read_embeddings_response(
    model: &str,
    body: Bytes,
) -> Result<EmbeddingsResponse, DecodeError> {
    let wire: BatchEmbedResponse = decode(&body, "batchEmbedContents response")?;
    Ok(EmbeddingsResponse {
        model: model.to_owned(),
        embeddings: wire.embeddings.into_iter().map(|e| e.values).collect(),
        usage: Usage::default(),
        native: Some(NativeResponse { format: Format::Gemini, body }),
    })
}

#[derive(Debug, Deserialize)]
struct BatchEmbedResponse {
    embeddings: Vec<WireEmbedding>,
}

#[derive(Debug, Deserialize)]
struct WireEmbedding {
    values: Vec<f32>,
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// Reads Gemini's `{"error": {"code", "message", "status"}}`, also when it
/// comes wrapped in an array, as some Google front ends send it.
pub fn read_error(body: &[u8]) -> Option<UpstreamErrorBody> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Envelope {
        One { error: WireError },
        Many(Vec<Envelope>),
    }
    let mut envelope = serde_json::from_slice::<Envelope>(body).ok()?;
    loop {
        envelope = match envelope {
            Envelope::One { error } => return Some(read_wire_error(error)),
            Envelope::Many(list) => list.into_iter().next()?,
        };
    }
}

fn read_wire_error(error: WireError) -> UpstreamErrorBody {
    let code = match error.code {
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(Value::String(s)) => Some(s),
        _ => None,
    };
    let message = error
        .message
        .or_else(|| error.status.clone())
        .unwrap_or_else(|| "Gemini reported an error without a message".to_owned());
    UpstreamErrorBody { message, kind: error.status, code }
}
