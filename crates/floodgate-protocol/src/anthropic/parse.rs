//! Reading a client's `/v1/messages` body into a canonical [`ChatRequest`].
//!
//! The body is parsed once into a JSON map, kept as the native body for
//! same-format pass-through, and read field by field from there with
//! `serde_path_to_error`, so every error names the JSON path at fault.
//!
//! Content the canonical shape cannot carry (documents, search results, server
//! tool blocks and tools, redacted thinking, cache hints) is skipped here, not
//! refused: an Anthropic upstream receives the native body with all of it, and
//! other upstreams could not use it anyway.

use serde::Deserialize;
use serde_json::Value;

use super::wire::ContentIn;
use crate::canonical::*;
use crate::error::RequestError;

/// The top-level fields we translate; all others stay in the native body only.
#[derive(Deserialize)]
struct RequestIn {
    model: Option<String>,
    messages: Option<Vec<MessageIn>>,
    max_tokens: Option<u32>,
    system: Option<ContentIn>,
    tools: Option<Vec<Value>>,
    tool_choice: Option<ToolChoiceIn>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    top_k: Option<u32>,
    stop_sequences: Option<Vec<String>>,
    stream: Option<bool>,
    metadata: Option<MetadataIn>,
}

#[derive(Deserialize)]
#[serde(expecting = "a message object with a role and content")]
struct MessageIn {
    role: String,
    content: ContentIn,
}

#[derive(Deserialize)]
#[serde(expecting = "an object")]
struct MetadataIn {
    user_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(expecting = "a tool choice object such as {\"type\": \"auto\"}")]
struct ToolChoiceIn {
    #[serde(rename = "type")]
    kind: String,
    name: Option<String>,
    disable_parallel_tool_use: Option<bool>,
}

/// Just the `type` of a block or tool, read before the rest.
#[derive(Deserialize)]
#[serde(expecting = "an object with a \"type\"")]
struct TypeIn {
    #[serde(rename = "type")]
    kind: Option<String>,
}

#[derive(Deserialize)]
struct TextIn {
    text: String,
}

#[derive(Deserialize)]
struct ImageIn {
    source: ImageSourceIn,
}

#[derive(Deserialize)]
#[serde(
    tag = "type",
    rename_all = "snake_case",
    expecting = "an image source object with a \"type\" of \"base64\" or \"url\""
)]
enum ImageSourceIn {
    Base64 {
        media_type: String,
        data: String,
    },
    Url {
        url: String,
    },
    /// A Files API `file` source: only an Anthropic upstream can resolve it,
    /// and it gets it through the native body.
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct ToolUseIn {
    id: String,
    name: String,
    input: Value,
}

#[derive(Deserialize)]
struct ToolResultIn {
    tool_use_id: String,
    content: Option<ContentIn>,
    is_error: Option<bool>,
}

#[derive(Deserialize)]
struct ThinkingIn {
    thinking: String,
    signature: Option<String>,
}

#[derive(Deserialize)]
struct ToolIn {
    name: String,
    description: Option<String>,
    input_schema: Value,
}

pub(super) fn parse_chat_request(body: &[u8]) -> Result<ChatRequest, RequestError> {
    let value =
        Value::Object(RequestError::read_object(body, Some("an Anthropic Messages request"))?);
    let wire: RequestIn = read_at(&value, "")?;
    let mut req = translate(wire)?;
    if let Value::Object(body) = value {
        req.native = Some(NativeBody { format: Format::Anthropic, body });
    }
    Ok(req)
}

fn translate(wire: RequestIn) -> Result<ChatRequest, RequestError> {
    let model = match wire.model {
        Some(model) if !model.is_empty() => model,
        Some(_) => return Err(RequestError::at("model", "must not be empty")),
        None => {
            return Err(RequestError::at("model", "required: the model to answer with"));
        }
    };
    let Some(max_tokens) = wire.max_tokens else {
        return Err(RequestError::at(
            "max_tokens",
            "required by the Anthropic Messages API: the maximum number of tokens to generate",
        ));
    };
    let messages = read_messages(wire.system, wire.messages)?;
    let (tool_choice, parallel_tool_calls) = match wire.tool_choice {
        Some(choice) => read_tool_choice(choice)?,
        None => (None, None),
    };
    Ok(ChatRequest {
        model,
        messages,
        tools: read_tools(wire.tools.unwrap_or_default())?,
        tool_choice,
        parallel_tool_calls,
        max_tokens: Some(max_tokens),
        temperature: wire.temperature,
        top_p: wire.top_p,
        top_k: wire.top_k,
        stop: wire.stop_sequences.unwrap_or_default(),
        stream: wire.stream.unwrap_or(false),
        // Anthropic clients always receive usage.
        include_usage: true,
        response_format: None,
        user: wire.metadata.and_then(|metadata| metadata.user_id),
        native: None,
    })
}

fn read_messages(
    system: Option<ContentIn>,
    messages: Option<Vec<MessageIn>>,
) -> Result<Vec<Message>, RequestError> {
    let messages = match messages {
        Some(messages) if !messages.is_empty() => messages,
        Some(_) => {
            return Err(RequestError::at("messages", "must hold at least one message"));
        }
        None => {
            return Err(RequestError::at(
                "messages",
                "required: the conversation, as an array of user and assistant messages",
            ));
        }
    };
    let mut out = Vec::with_capacity(messages.len() + 1);
    if let Some(system) = system {
        out.extend(read_system(system)?);
    }
    for (index, message) in messages.iter().enumerate() {
        read_turn(&format!("messages[{index}]"), message, &mut out)?;
    }
    Ok(out)
}

/// The `system` field becomes one leading System message, one text part per
/// block. An empty array means no system prompt.
fn read_system(system: ContentIn) -> Result<Option<Message>, RequestError> {
    let blocks = match system {
        ContentIn::Text(text) => return Ok(Some(Message::text(Role::System, text))),
        ContentIn::Blocks(blocks) => blocks,
    };
    let mut content = Vec::with_capacity(blocks.len());
    for (index, block) in blocks.iter().enumerate() {
        let path = format!("system[{index}]");
        let kind: TypeIn = read_at(block, &path)?;
        if kind.kind.as_deref() != Some("text") {
            return Err(RequestError::at(
                format!("{path}.type"),
                "system prompt blocks must be of type \"text\"",
            ));
        }
        let block: TextIn = read_at(block, &path)?;
        content.push(Part::Text { text: block.text });
    }
    Ok((!content.is_empty()).then_some(Message { role: Role::System, content, name: None }))
}

/// Reads one Anthropic turn into canonical messages.
///
/// A user turn's `tool_result` blocks each become a Tool message (canonical
/// Tool messages hold exactly one result); the turn's other blocks become
/// User messages between them, so the relative order is kept: the turn is
/// split into runs.
fn read_turn(path: &str, message: &MessageIn, out: &mut Vec<Message>) -> Result<(), RequestError> {
    let role = match message.role.as_str() {
        "user" => Role::User,
        "assistant" => Role::Assistant,
        other => {
            return Err(RequestError::at(
                format!("{path}.role"),
                format!(
                    "invalid role \"{other}\": valid roles are \"user\" and \"assistant\" \
                     (system prompts go in the top-level `system` field)"
                ),
            ));
        }
    };
    let blocks = match &message.content {
        ContentIn::Text(text) => {
            out.push(Message::text(role, text.clone()));
            return Ok(());
        }
        ContentIn::Blocks(blocks) => blocks,
    };
    let mut runs = TurnRuns::new(role);
    for (index, block) in blocks.iter().enumerate() {
        match read_block(&format!("{path}.content[{index}]"), block, role)? {
            Some(part @ Part::ToolResult { .. }) => runs.push_tool_result(part, out),
            Some(part) => runs.push(part),
            None => {}
        }
    }
    runs.finish(out);
    Ok(())
}

/// Splits one turn's parts into consecutive canonical messages.
struct TurnRuns {
    role: Role,
    current: Vec<Part>,
    emitted: bool,
}

impl TurnRuns {
    fn new(role: Role) -> Self {
        TurnRuns { role, current: Vec::new(), emitted: false }
    }

    fn push(&mut self, part: Part) {
        self.current.push(part);
    }

    fn push_tool_result(&mut self, part: Part, out: &mut Vec<Message>) {
        self.flush(out);
        out.push(Message { role: Role::Tool, content: vec![part], name: None });
        self.emitted = true;
    }

    /// Ends the turn. A turn with nothing translatable still yields one
    /// (empty) message, so the conversation keeps its turns.
    fn finish(mut self, out: &mut Vec<Message>) {
        self.flush(out);
        if !self.emitted {
            out.push(Message { role: self.role, content: Vec::new(), name: None });
        }
    }

    fn flush(&mut self, out: &mut Vec<Message>) {
        if self.current.is_empty() {
            return;
        }
        out.push(Message {
            role: self.role,
            content: std::mem::take(&mut self.current),
            name: None,
        });
        self.emitted = true;
    }
}

/// Reads one content block of a `role` turn. `None` for blocks the canonical
/// shape does not carry.
fn read_block(path: &str, block: &Value, role: Role) -> Result<Option<Part>, RequestError> {
    let kind: TypeIn = read_at(block, path)?;
    let Some(kind) = kind.kind else {
        return Err(RequestError::at(format!("{path}.type"), "required: the content block type"));
    };
    match (kind.as_str(), role) {
        ("text", _) => read_text(block, path).map(Some),
        ("image", _) => read_image(block, path),
        ("tool_use", Role::Assistant) => read_tool_use(block, path).map(Some),
        ("tool_result", Role::User) => read_tool_result(block, path).map(Some),
        ("thinking", _) => {
            let block: ThinkingIn = read_at(block, path)?;
            Ok(Some(Part::Thinking { text: block.thinking, signature: block.signature }))
        }
        ("tool_use", _) => Err(RequestError::at(
            format!("{path}.type"),
            "tool_use blocks belong in assistant messages",
        )),
        ("tool_result", _) => Err(RequestError::at(
            format!("{path}.type"),
            "tool_result blocks belong in user messages",
        )),
        // Redacted thinking, documents, search results, server tool blocks and
        // any future type: kept only in the native body (see the module doc).
        _ => Ok(None),
    }
}

fn read_text(block: &Value, path: &str) -> Result<Part, RequestError> {
    let block: TextIn = read_at(block, path)?;
    Ok(Part::Text { text: block.text })
}

fn read_image(block: &Value, path: &str) -> Result<Option<Part>, RequestError> {
    let block: ImageIn = read_at(block, path)?;
    let source = match block.source {
        ImageSourceIn::Base64 { media_type, data } => ImageSource::Base64 { media_type, data },
        ImageSourceIn::Url { url } => ImageSource::Url(url),
        ImageSourceIn::Other => return Ok(None),
    };
    Ok(Some(Part::Image { source }))
}

fn read_tool_use(block: &Value, path: &str) -> Result<Part, RequestError> {
    let block: ToolUseIn = read_at(block, path)?;
    Ok(Part::ToolCall { id: block.id, name: block.name, arguments: block.input.to_string() })
}

fn read_tool_result(block: &Value, path: &str) -> Result<Part, RequestError> {
    let block: ToolResultIn = read_at(block, path)?;
    let content = match block.content {
        None => Vec::new(),
        Some(ContentIn::Text(text)) => vec![Part::Text { text }],
        Some(ContentIn::Blocks(blocks)) => read_result_blocks(path, &blocks)?,
    };
    Ok(Part::ToolResult {
        tool_call_id: block.tool_use_id,
        content,
        is_error: block.is_error.unwrap_or(false),
    })
}

/// A tool result's own blocks: text and images are kept; documents and
/// search results are skipped like elsewhere.
fn read_result_blocks(path: &str, blocks: &[Value]) -> Result<Vec<Part>, RequestError> {
    let mut parts = Vec::with_capacity(blocks.len());
    for (index, block) in blocks.iter().enumerate() {
        let path = format!("{path}.content[{index}]");
        let kind: TypeIn = read_at(block, &path)?;
        match kind.kind.as_deref() {
            Some("text") => parts.push(read_text(block, &path)?),
            Some("image") => parts.extend(read_image(block, &path)?),
            _ => {}
        }
    }
    Ok(parts)
}

/// Custom tools become canonical tools; server tools (`web_search_…`,
/// `bash_…`, any other `type`) run at Anthropic and are skipped.
fn read_tools(tools: Vec<Value>) -> Result<Vec<Tool>, RequestError> {
    let mut out = Vec::with_capacity(tools.len());
    for (index, tool) in tools.iter().enumerate() {
        let path = format!("tools[{index}]");
        let kind: TypeIn = read_at(tool, &path)?;
        if !matches!(kind.kind.as_deref(), None | Some("custom")) {
            continue;
        }
        let tool: ToolIn = read_at(tool, &path)?;
        out.push(Tool {
            name: tool.name,
            description: tool.description,
            parameters: tool.input_schema,
            strict: None,
        });
    }
    Ok(out)
}

fn read_tool_choice(
    choice: ToolChoiceIn,
) -> Result<(Option<ToolChoice>, Option<bool>), RequestError> {
    let tool_choice = match choice.kind.as_str() {
        "auto" => ToolChoice::Auto,
        "any" => ToolChoice::Required,
        "none" => ToolChoice::None,
        "tool" => match choice.name {
            Some(name) => ToolChoice::Tool(name),
            None => {
                return Err(RequestError::at(
                    "tool_choice.name",
                    "required when tool_choice.type is \"tool\"",
                ));
            }
        },
        other => {
            return Err(RequestError::at(
                "tool_choice.type",
                format!(
                    "invalid tool choice \"{other}\": valid types are \"auto\", \"any\", \
                     \"tool\" and \"none\""
                ),
            ));
        }
    };
    let parallel = choice.disable_parallel_tool_use.map(|disable| !disable);
    Ok((Some(tool_choice), parallel))
}

/// Reads `value` (found at `path` in the body) as `T`, naming the full path of
/// a failing field.
fn read_at<'de, T: Deserialize<'de>>(value: &'de Value, path: &str) -> Result<T, RequestError> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let inner = err.path().to_string();
        let full = join_path(path, &inner);
        let message = err.into_inner().to_string();
        if full.is_empty() {
            RequestError::new(format!("invalid request body: {message}"))
        } else {
            RequestError::at(full, message)
        }
    })
}

/// Joins a prefix path and a `serde_path_to_error` path (`.` for the root).
fn join_path(prefix: &str, inner: &str) -> String {
    match inner {
        "." | "" => prefix.to_owned(),
        _ if prefix.is_empty() => inner.to_owned(),
        _ if inner.starts_with('[') => format!("{prefix}{inner}"),
        _ => format!("{prefix}.{inner}"),
    }
}
