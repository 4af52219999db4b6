//! Writes the chat body sent to an OpenAI or OpenAI-compatible upstream.
//!
//! A client that spoke OpenAI gets its own body forwarded with only `model`,
//! `stream` and `stream_options` changed, serialised straight from the kept
//! object without copying it. Any other request is written from its
//! canonical fields through borrowed output types.

use std::borrow::Cow;

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use serde_json::{Map, Value};

use super::Dialect;
use super::wire::OutToolCall;
use crate::canonical::*;
use crate::error::TranslateError;

/// Writes the body to send upstream for `model`. Streaming requests always ask
/// for `stream_options.include_usage` so usage can be counted.
pub fn write_chat_request(
    req: &ChatRequest,
    model: &str,
    dialect: Dialect,
) -> Result<Vec<u8>, TranslateError> {
    if let Some(native) = req.native.as_ref().filter(|n| n.format == Format::OpenAi) {
        return write_native(&native.body, model, req.stream);
    }
    let body = build_request(req, model, dialect)?;
    serde_json::to_vec(&body)
        .map_err(|err| TranslateError::new(format!("cannot serialise the request: {err}")))
}

fn write_native(
    body: &Map<String, Value>,
    model: &str,
    stream: bool,
) -> Result<Vec<u8>, TranslateError> {
    let mut set = vec![("model", Value::String(model.to_owned())), ("stream", Value::Bool(stream))];
    let mut remove = Vec::new();
    if stream {
        set.push(("stream_options", stream_options_with_usage(body.get("stream_options"))));
    } else {
        // OpenAI refuses `stream_options` on a request that does not stream;
        // the gateway may have turned streaming off, so it goes too.
        remove.push("stream_options");
    }
    let patched = PatchedBody { body, set: &set, remove: &remove };
    serde_json::to_vec(&patched)
        .map_err(|err| TranslateError::new(format!("cannot serialise the request: {err}")))
}

/// The client's `stream_options` with `include_usage` forced on; its other
/// options are kept.
fn stream_options_with_usage(current: Option<&Value>) -> Value {
    let mut options = match current {
        Some(Value::Object(options)) => options.clone(),
        _ => Map::new(),
    };
    options.insert("include_usage".to_owned(), Value::Bool(true));
    Value::Object(options)
}

/// A JSON object serialised with some keys replaced, added or removed, so a
/// large body is forwarded without being cloned. Replaced keys keep their
/// place; added keys come last.
pub(super) struct PatchedBody<'a> {
    pub(super) body: &'a Map<String, Value>,
    pub(super) set: &'a [(&'static str, Value)],
    pub(super) remove: &'a [&'static str],
}

impl Serialize for PatchedBody<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let replacement = |key: &str| self.set.iter().find(|(k, _)| *k == key).map(|(_, v)| v);
        let mut map = serializer.serialize_map(None)?;
        for (key, value) in self.body {
            if self.remove.contains(&key.as_str()) {
                continue;
            }
            map.serialize_entry(key, replacement(key).unwrap_or(value))?;
        }
        for (key, value) in self.set {
            if !self.body.contains_key(*key) {
                map.serialize_entry(key, value)?;
            }
        }
        map.end()
    }
}

#[derive(Debug, Serialize)]
struct OutRequest<'a> {
    model: &'a str,
    messages: Vec<OutMessage<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<OutTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<OutToolChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<u32>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop: &'a [String],
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<OutStreamOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<OutResponseFormat<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
}

#[derive(Debug, Serialize)]
struct OutStreamOptions {
    include_usage: bool,
}

fn build_request<'a>(
    req: &'a ChatRequest,
    model: &'a str,
    dialect: Dialect,
) -> Result<OutRequest<'a>, TranslateError> {
    let mut messages = Vec::with_capacity(req.messages.len());
    for (i, message) in req.messages.iter().enumerate() {
        push_message(i, message, &mut messages)?;
    }
    // OpenAI refuses `tool_choice` and `parallel_tool_calls` without `tools`.
    let has_tools = !req.tools.is_empty();
    let (max_completion_tokens, max_tokens) = match dialect {
        Dialect::OpenAi => (req.max_tokens, None),
        Dialect::Compatible => (None, req.max_tokens),
    };
    Ok(OutRequest {
        model,
        messages,
        tools: req.tools.iter().map(OutTool::from).collect(),
        tool_choice: req.tool_choice.as_ref().filter(|_| has_tools).map(OutToolChoice::from),
        parallel_tool_calls: req.parallel_tool_calls.filter(|_| has_tools),
        max_completion_tokens,
        max_tokens,
        temperature: req.temperature,
        top_p: req.top_p,
        // api.openai.com rejects `top_k` as an unknown parameter.
        top_k: req.top_k.filter(|_| dialect == Dialect::Compatible),
        stop: &req.stop,
        stream: req.stream,
        stream_options: req.stream.then_some(OutStreamOptions { include_usage: true }),
        response_format: req.response_format.as_ref().map(OutResponseFormat::from),
        user: req.user.as_deref(),
    })
}

#[derive(Debug, Serialize)]
struct OutMessage<'a> {
    role: &'static str,
    /// `null` only for an assistant message that carries tool calls.
    content: Option<OutContent<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<OutToolCall<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<&'a str>,
}

/// A lone text part is written as a plain string, the form every compatible
/// server accepts; anything else as an array of parts.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum OutContent<'a> {
    Text(&'a str),
    Parts(Vec<OutPart<'a>>),
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutPart<'a> {
    Text { text: &'a str },
    ImageUrl { image_url: OutImageUrl<'a> },
}

#[derive(Debug, Serialize)]
struct OutImageUrl<'a> {
    url: Cow<'a, str>,
}

impl<'a> OutContent<'a> {
    fn from_parts(parts: Vec<OutPart<'a>>) -> Self {
        match parts.as_slice() {
            [] => OutContent::Text(""),
            [OutPart::Text { text }] => OutContent::Text(text),
            _ => OutContent::Parts(parts),
        }
    }
}

fn image_part(source: &ImageSource) -> OutPart<'_> {
    let url = match source {
        ImageSource::Url(url) => Cow::Borrowed(url.as_str()),
        ImageSource::Base64 { media_type, data } => {
            Cow::Owned(format!("data:{media_type};base64,{data}"))
        }
    };
    OutPart::ImageUrl { image_url: OutImageUrl { url } }
}

/// Appends the OpenAI messages for canonical message `i`.
///
/// Tool results become one `tool` message each, whatever message holds them,
/// and come first: OpenAI wants them right after the assistant's tool calls.
/// Thinking is dropped, since OpenAI cannot take reasoning back.
fn push_message<'a>(
    i: usize,
    message: &'a Message,
    out: &mut Vec<OutMessage<'a>>,
) -> Result<(), TranslateError> {
    let mut parts = Vec::new();
    let mut tool_calls = Vec::new();
    for part in &message.content {
        match part {
            Part::Text { text } => parts.push(OutPart::Text { text }),
            Part::Image { source } => parts.push(image_part(source)),
            Part::ToolCall { id, name, arguments } => {
                tool_calls.push(OutToolCall::new(id, name, arguments))
            }
            Part::ToolResult { tool_call_id, content, .. } => {
                out.push(tool_message(i, tool_call_id, content)?)
            }
            Part::Thinking { .. } => {}
        }
    }
    let role = match message.role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => return assistant_message(i, message, parts, tool_calls, out),
        Role::Tool if parts.is_empty() && tool_calls.is_empty() => return Ok(()),
        Role::Tool => {
            return Err(TranslateError::new(format!(
                "messages[{i}]: an OpenAI tool message can only hold tool results"
            )));
        }
    };
    if !tool_calls.is_empty() {
        return Err(TranslateError::new(format!(
            "messages[{i}]: only assistant messages can hold tool calls"
        )));
    }
    // A message that held only tool results has been written in full; an
    // empty one is still a turn and is kept.
    if parts.is_empty() && has_tool_result(message) {
        return Ok(());
    }
    out.push(OutMessage {
        role,
        content: Some(OutContent::from_parts(parts)),
        name: message.name.as_deref(),
        tool_calls: Vec::new(),
        tool_call_id: None,
    });
    Ok(())
}

fn has_tool_result(message: &Message) -> bool {
    message.content.iter().any(|part| matches!(part, Part::ToolResult { .. }))
}

/// OpenAI assistant content is text only. With tool calls and no text the
/// content is `null`; with neither it is `""`, since OpenAI refuses an
/// assistant message that has neither content nor tool calls.
fn assistant_message<'a>(
    i: usize,
    message: &'a Message,
    parts: Vec<OutPart<'a>>,
    tool_calls: Vec<OutToolCall<'a>>,
    out: &mut Vec<OutMessage<'a>>,
) -> Result<(), TranslateError> {
    if parts.iter().any(|p| matches!(p, OutPart::ImageUrl { .. })) {
        return Err(TranslateError::new(format!(
            "messages[{i}]: OpenAI assistant messages cannot hold images"
        )));
    }
    let content = if parts.is_empty() && !tool_calls.is_empty() {
        None
    } else {
        Some(OutContent::from_parts(parts))
    };
    out.push(OutMessage {
        role: "assistant",
        content,
        name: message.name.as_deref(),
        tool_calls,
        tool_call_id: None,
    });
    Ok(())
}

/// OpenAI tool messages take text only, and have no error flag: an error
/// result is sent as its text, which is how OpenAI clients report errors too.
fn tool_message<'a>(
    i: usize,
    tool_call_id: &'a str,
    content: &'a [Part],
) -> Result<OutMessage<'a>, TranslateError> {
    let mut parts = Vec::with_capacity(content.len());
    for part in content {
        match part {
            Part::Text { text } => parts.push(OutPart::Text { text }),
            Part::Image { .. } => {
                return Err(TranslateError::new(format!(
                    "messages[{i}]: the result of tool call `{tool_call_id}` holds an image, \
                     which OpenAI tool messages cannot carry"
                )));
            }
            // Canonical tool results hold text and images only; nothing else
            // has an OpenAI form inside a tool message.
            _ => {
                return Err(TranslateError::new(format!(
                    "messages[{i}]: the result of tool call `{tool_call_id}` holds a part \
                     that is neither text nor an image"
                )));
            }
        }
    }
    Ok(OutMessage {
        role: "tool",
        content: Some(OutContent::from_parts(parts)),
        name: None,
        tool_calls: Vec::new(),
        tool_call_id: Some(tool_call_id),
    })
}

#[derive(Debug, Serialize)]
struct OutTool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: OutFunction<'a>,
}

#[derive(Debug, Serialize)]
struct OutFunction<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    parameters: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    strict: Option<bool>,
}

impl<'a> From<&'a Tool> for OutTool<'a> {
    fn from(tool: &'a Tool) -> Self {
        OutTool {
            kind: "function",
            function: OutFunction {
                name: &tool.name,
                description: tool.description.as_deref(),
                parameters: &tool.parameters,
                strict: tool.strict,
            },
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
enum OutToolChoice<'a> {
    Mode(&'static str),
    Named {
        #[serde(rename = "type")]
        kind: &'static str,
        function: OutName<'a>,
    },
}

#[derive(Debug, Serialize)]
struct OutName<'a> {
    name: &'a str,
}

impl<'a> From<&'a ToolChoice> for OutToolChoice<'a> {
    fn from(choice: &'a ToolChoice) -> Self {
        match choice {
            ToolChoice::Auto => OutToolChoice::Mode("auto"),
            ToolChoice::None => OutToolChoice::Mode("none"),
            ToolChoice::Required => OutToolChoice::Mode("required"),
            ToolChoice::Tool(name) => {
                OutToolChoice::Named { kind: "function", function: OutName { name } }
            }
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutResponseFormat<'a> {
    Text,
    JsonObject,
    JsonSchema { json_schema: OutJsonSchema<'a> },
}

#[derive(Debug, Serialize)]
struct OutJsonSchema<'a> {
    name: &'a str,
    schema: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    strict: Option<bool>,
}

impl<'a> From<&'a ResponseFormat> for OutResponseFormat<'a> {
    fn from(format: &'a ResponseFormat) -> Self {
        match format {
            ResponseFormat::Text => OutResponseFormat::Text,
            ResponseFormat::JsonObject => OutResponseFormat::JsonObject,
            ResponseFormat::JsonSchema { name, schema, strict } => OutResponseFormat::JsonSchema {
                json_schema: OutJsonSchema { name, schema, strict: *strict },
            },
        }
    }
}
