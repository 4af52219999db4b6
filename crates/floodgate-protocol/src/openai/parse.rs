//! Reads a client's `/v1/chat/completions` body into the canonical request.
//!
//! The body is parsed once into a JSON object, which is kept whole as the
//! request's native body for pass-through, and the typed fields are then read
//! from that object through `serde_path_to_error`, so a field of the wrong type
//! is reported with its JSON path (`messages[1].content`) and what would be
//! valid. Every field is optional to serde; presence is checked by hand so a
//! missing field also gets a message that says what to send.
//!
//! What the canonical shape cannot represent is skipped, not rejected: content
//! parts other than `text` and `image_url` (`input_audio`, `file`, `refusal`…),
//! tools and tool calls other than functions, `n`, `logprobs`, `seed` and every
//! unknown field. Rejecting them would break pass-through to an OpenAI
//! upstream, which receives the native body and so loses nothing. Nothing
//! records the skip: a request translated to another format is written from
//! the canonical form alone, so such parts are simply not sent there.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::canonical::*;
use crate::error::RequestError;

/// Reads a client's `/v1/chat/completions` body.
pub fn parse_chat_request(body: &[u8]) -> Result<ChatRequest, RequestError> {
    let body = read_body(body)?;
    let wire: WireRequest = read_fields(&body)?;
    let mut req = wire.into_canonical()?;
    req.native = Some(NativeBody { format: Format::OpenAi, body });
    Ok(req)
}

/// Parses a body that must be one JSON object.
pub(super) fn read_body(body: &[u8]) -> Result<Map<String, Value>, RequestError> {
    RequestError::read_object(body, None)
}

/// Reads typed fields from a parsed body, naming the failing path on error.
pub(super) fn read_fields<'de, T: Deserialize<'de>>(
    body: &'de Map<String, Value>,
) -> Result<T, RequestError> {
    serde_path_to_error::deserialize(body).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if path == "." {
            RequestError::new(format!("invalid request body: {inner}"))
        } else {
            RequestError::at(path, inner.to_string())
        }
    })
}

/// Checks the `model` field every OpenAI request needs.
pub(super) fn required_model(model: Option<String>) -> Result<String, RequestError> {
    match model {
        None => Err(RequestError::at("model", "is required: the name of the model to use")),
        Some(model) if model.is_empty() => Err(RequestError::at("model", "must not be empty")),
        Some(model) => Ok(model),
    }
}

/// Names the items of a JSON array, for type errors on the array itself.
pub(super) trait Described {
    /// E.g. "an array of message objects".
    const ARRAY: &'static str;
}

/// A JSON array whose type error says what its items are, where serde's
/// `Vec` would only say "a sequence".
#[derive(Debug)]
pub(super) struct ListOf<T>(pub(super) Vec<T>);

impl<'de, T: Deserialize<'de> + Described> Deserialize<'de> for ListOf<T> {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct ListVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de> + Described> Visitor<'de> for ListVisitor<T> {
            type Value = ListOf<T>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(T::ARRAY)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                collect_seq(seq).map(ListOf)
            }
        }

        de.deserialize_seq(ListVisitor(PhantomData))
    }
}

pub(super) fn collect_seq<'de, A: SeqAccess<'de>, T: Deserialize<'de>>(
    mut seq: A,
) -> Result<Vec<T>, A::Error> {
    // The hint comes from the client: cap it so it cannot reserve a huge buffer.
    let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(256));
    while let Some(item) = seq.next_element()? {
        items.push(item);
    }
    Ok(items)
}

#[derive(Debug, Deserialize)]
struct WireRequest {
    model: Option<String>,
    messages: Option<ListOf<WireMessage>>,
    tools: Option<ListOf<WireTool>>,
    /// The legacy form of `tools`.
    functions: Option<ListOf<WireFunction>>,
    tool_choice: Option<WireToolChoice>,
    /// The legacy form of `tool_choice`.
    function_call: Option<WireToolChoice>,
    parallel_tool_calls: Option<bool>,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    /// Not OpenAI, but accepted by vLLM, Ollama and others; read only when it
    /// is a usable number, since OpenAI itself gives it no meaning.
    top_k: Option<Value>,
    stop: Option<WireStop>,
    stream: Option<bool>,
    stream_options: Option<WireStreamOptions>,
    response_format: Option<WireResponseFormat>,
    user: Option<String>,
}

impl WireRequest {
    fn into_canonical(self) -> Result<ChatRequest, RequestError> {
        let model = required_model(self.model)?;
        let messages = read_messages(self.messages)?;
        let tools = read_tools(self.tools, self.functions)?;
        let tool_choice = match (self.tool_choice, self.function_call) {
            (Some(choice), _) => read_tool_choice(choice)?,
            (None, Some(legacy)) => read_function_call_choice(legacy)?,
            (None, None) => None,
        };
        let response_format = self.response_format.map(read_response_format).transpose()?;
        Ok(ChatRequest {
            model,
            messages,
            tools,
            tool_choice,
            parallel_tool_calls: self.parallel_tool_calls,
            max_tokens: self.max_completion_tokens.or(self.max_tokens),
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k.as_ref().and_then(Value::as_u64).and_then(|k| u32::try_from(k).ok()),
            stop: self.stop.map(|s| s.0).unwrap_or_default(),
            stream: self.stream.unwrap_or(false),
            include_usage: self.stream_options.and_then(|o| o.include_usage).unwrap_or(false),
            response_format,
            user: self.user,
            native: None,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(expecting = "an object such as {\"include_usage\": true}")]
struct WireStreamOptions {
    include_usage: Option<bool>,
}

const VALID_ROLES: &str = "valid roles are system, developer, user, assistant, tool and function";

#[derive(Debug, Deserialize)]
#[serde(expecting = "a message object with a `role`")]
struct WireMessage {
    role: Option<String>,
    content: Option<WireContent>,
    name: Option<String>,
    tool_calls: Option<ListOf<WireToolCall>>,
    tool_call_id: Option<String>,
    /// The legacy form of `tool_calls`.
    function_call: Option<WireFunctionCall>,
}

impl Described for WireMessage {
    const ARRAY: &'static str = "an array of message objects";
}

fn read_messages(messages: Option<ListOf<WireMessage>>) -> Result<Vec<Message>, RequestError> {
    let Some(ListOf(messages)) = messages else {
        return Err(RequestError::at("messages", "is required: a non-empty array of messages"));
    };
    if messages.is_empty() {
        return Err(RequestError::at("messages", "must not be empty: send at least one message"));
    }
    messages.into_iter().enumerate().map(|(i, m)| read_message(i, m)).collect()
}

fn read_message(i: usize, mut m: WireMessage) -> Result<Message, RequestError> {
    let role_path = || format!("messages[{i}].role");
    let Some(role) = m.role.take() else {
        return Err(RequestError::at(role_path(), format!("is required; {VALID_ROLES}")));
    };
    match role.as_str() {
        "system" | "developer" => instructions_or_user(i, Role::System, m),
        "user" => instructions_or_user(i, Role::User, m),
        "assistant" => assistant_message(i, m),
        "tool" => tool_message(i, m),
        "function" => function_message(i, m),
        other => {
            Err(RequestError::at(role_path(), format!("unknown role `{other}`; {VALID_ROLES}")))
        }
    }
}

/// A system, developer or user message: content is required.
fn instructions_or_user(i: usize, role: Role, m: WireMessage) -> Result<Message, RequestError> {
    let Some(content) = m.content else {
        return Err(RequestError::at(
            format!("messages[{i}].content"),
            "is required: a string or an array of content parts",
        ));
    };
    Ok(Message { role, content: content_parts(i, content)?, name: m.name })
}

/// Canonical assistant content is its text (and any image) parts first, then
/// its tool calls, the order OpenAI's separate fields imply.
fn assistant_message(i: usize, m: WireMessage) -> Result<Message, RequestError> {
    let mut content = match m.content {
        Some(content) => content_parts(i, content)?,
        None => Vec::new(),
    };
    for (j, call) in m.tool_calls.map(|c| c.0).unwrap_or_default().into_iter().enumerate() {
        content.extend(read_tool_call(i, j, call)?);
    }
    if let Some(call) = m.function_call {
        content.push(read_legacy_function_call(i, call)?);
    }
    Ok(Message { role: Role::Assistant, content, name: m.name })
}

fn tool_message(i: usize, m: WireMessage) -> Result<Message, RequestError> {
    let Some(tool_call_id) = m.tool_call_id else {
        return Err(RequestError::at(
            format!("messages[{i}].tool_call_id"),
            "is required for a tool message: the id of the tool call it answers",
        ));
    };
    tool_result(i, tool_call_id, m.content)
}

/// The legacy `function` role answers a legacy `function_call`, which has no
/// id: the function's name stands for it on both sides.
fn function_message(i: usize, m: WireMessage) -> Result<Message, RequestError> {
    let Some(name) = m.name else {
        return Err(RequestError::at(
            format!("messages[{i}].name"),
            "is required for a function message: the name of the function that ran",
        ));
    };
    tool_result(i, name, m.content)
}

fn tool_result(
    i: usize,
    tool_call_id: String,
    content: Option<WireContent>,
) -> Result<Message, RequestError> {
    let content = match content {
        Some(content) => content_parts(i, content)?,
        None => Vec::new(),
    };
    Ok(Message {
        role: Role::Tool,
        content: vec![Part::ToolResult { tool_call_id, content, is_error: false }],
        name: None,
    })
}

/// `content`: a string or an array of typed parts.
#[derive(Debug)]
enum WireContent {
    Text(String),
    Parts(Vec<WirePart>),
}

impl<'de> Deserialize<'de> for WireContent {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct ContentVisitor;

        impl<'de> Visitor<'de> for ContentVisitor {
            type Value = WireContent;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or an array of content parts")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(WireContent::Text(v.to_owned()))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(WireContent::Text(v))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                collect_seq(seq).map(WireContent::Parts)
            }
        }

        de.deserialize_any(ContentVisitor)
    }
}

#[derive(Debug, Deserialize)]
#[serde(expecting = "a content part object with a `type`")]
struct WirePart {
    #[serde(rename = "type")]
    kind: Option<String>,
    text: Option<String>,
    image_url: Option<WireImageUrl>,
}

/// Empty text carries nothing and some formats refuse empty text blocks, so
/// it is not kept.
fn content_parts(i: usize, content: WireContent) -> Result<Vec<Part>, RequestError> {
    match content {
        WireContent::Text(text) if text.is_empty() => Ok(Vec::new()),
        WireContent::Text(text) => Ok(vec![Part::Text { text }]),
        WireContent::Parts(parts) => {
            let mut out = Vec::with_capacity(parts.len());
            for (j, part) in parts.into_iter().enumerate() {
                out.extend(read_part(i, j, part)?);
            }
            Ok(out)
        }
    }
}

fn read_part(i: usize, j: usize, part: WirePart) -> Result<Option<Part>, RequestError> {
    let path = |field: &str| format!("messages[{i}].content[{j}].{field}");
    match part.kind.as_deref() {
        None => Err(RequestError::at(
            path("type"),
            "is required: a content part needs a `type` such as \"text\" or \"image_url\"",
        )),
        Some("text") => {
            let Some(text) = part.text else {
                return Err(RequestError::at(
                    path("text"),
                    "is required for a text part: a string",
                ));
            };
            Ok((!text.is_empty()).then_some(Part::Text { text }))
        }
        Some("image_url") => {
            let url = part.image_url.and_then(|image| image.url).ok_or_else(|| {
                RequestError::at(
                    path("image_url.url"),
                    "is required for an image_url part: an http(s) or data: URL",
                )
            })?;
            Ok(Some(Part::Image { source: image_source(url) }))
        }
        // See the module documentation: other parts are the native body's business.
        Some(_) => Ok(None),
    }
}

/// `image_url`: `{"url", "detail"}`, or (from older clients) the URL string itself.
#[derive(Debug)]
struct WireImageUrl {
    url: Option<String>,
}

#[derive(Debug, Deserialize)]
struct WireImageUrlObject {
    url: Option<String>,
}

impl<'de> Deserialize<'de> for WireImageUrl {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct ImageUrlVisitor;

        impl<'de> Visitor<'de> for ImageUrlVisitor {
            type Value = WireImageUrl;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object with a `url` string")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(WireImageUrl { url: Some(v.to_owned()) })
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                let object = WireImageUrlObject::deserialize(MapAccessDeserializer::new(map))?;
                Ok(WireImageUrl { url: object.url })
            }
        }

        de.deserialize_any(ImageUrlVisitor)
    }
}

/// A `data:<mime>;base64,<data>` URL is inline data; anything else is a URL
/// for the upstream to fetch (non-base64 data URLs included, kept as they are).
pub(super) fn image_source(url: String) -> ImageSource {
    if let Some((meta, data)) = url.strip_prefix("data:").and_then(|rest| rest.split_once(','))
        && let Some(media) = meta.strip_suffix(";base64")
    {
        let media_type = media.split(';').next().unwrap_or_default();
        return ImageSource::Base64 { media_type: media_type.to_owned(), data: data.to_owned() };
    }
    ImageSource::Url(url)
}

#[derive(Debug, Deserialize)]
#[serde(expecting = "a tool call object with `id`, `type` and `function`")]
struct WireToolCall {
    id: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    function: Option<WireFunctionCall>,
}

impl Described for WireToolCall {
    const ARRAY: &'static str = "an array of tool call objects";
}

#[derive(Debug, Deserialize)]
#[serde(expecting = "an object with `name` and `arguments`")]
struct WireFunctionCall {
    name: Option<String>,
    arguments: Option<String>,
}

/// Calls of tools other than functions (custom tools) are skipped; see the
/// module documentation.
fn read_tool_call(i: usize, j: usize, call: WireToolCall) -> Result<Option<Part>, RequestError> {
    if call.kind.as_deref().is_some_and(|kind| kind != "function") {
        return Ok(None);
    }
    let path = |field: &str| format!("messages[{i}].tool_calls[{j}].{field}");
    let Some(id) = call.id else {
        return Err(RequestError::at(
            path("id"),
            "is required: the id the tool's result will answer",
        ));
    };
    let Some(function) = call.function else {
        return Err(RequestError::at(
            path("function"),
            "is required: an object with `name` and `arguments`",
        ));
    };
    let Some(name) = function.name else {
        return Err(RequestError::at(
            path("function.name"),
            "is required: the name of the function to call",
        ));
    };
    Ok(Some(Part::ToolCall {
        id,
        name,
        arguments: function.arguments.unwrap_or_else(|| "{}".to_owned()),
    }))
}

fn read_legacy_function_call(i: usize, call: WireFunctionCall) -> Result<Part, RequestError> {
    let Some(name) = call.name else {
        return Err(RequestError::at(
            format!("messages[{i}].function_call.name"),
            "is required: the name of the function to call",
        ));
    };
    Ok(Part::ToolCall {
        id: name.clone(),
        name,
        arguments: call.arguments.unwrap_or_else(|| "{}".to_owned()),
    })
}

#[derive(Debug, Deserialize)]
#[serde(expecting = "a tool object such as {\"type\": \"function\", \"function\": {…}}")]
struct WireTool {
    #[serde(rename = "type")]
    kind: Option<String>,
    function: Option<WireFunction>,
}

impl Described for WireTool {
    const ARRAY: &'static str = "an array of tool objects";
}

#[derive(Debug, Deserialize)]
#[serde(expecting = "a function object with a `name`")]
struct WireFunction {
    name: Option<String>,
    description: Option<String>,
    parameters: Option<Value>,
    strict: Option<bool>,
}

impl Described for WireFunction {
    const ARRAY: &'static str = "an array of function objects";
}

/// Tools other than functions (custom tools, hosted tools) are skipped; see
/// the module documentation.
fn read_tools(
    tools: Option<ListOf<WireTool>>,
    functions: Option<ListOf<WireFunction>>,
) -> Result<Vec<Tool>, RequestError> {
    let mut out = Vec::new();
    for (j, tool) in tools.map(|t| t.0).unwrap_or_default().into_iter().enumerate() {
        if tool.kind.as_deref().is_some_and(|kind| kind != "function") {
            continue;
        }
        let Some(function) = tool.function else {
            return Err(RequestError::at(
                format!("tools[{j}].function"),
                "is required for a function tool: an object with a `name`",
            ));
        };
        out.push(read_function(&format!("tools[{j}].function"), function)?);
    }
    for (j, function) in functions.map(|f| f.0).unwrap_or_default().into_iter().enumerate() {
        out.push(read_function(&format!("functions[{j}]"), function)?);
    }
    Ok(out)
}

/// A function without `parameters` takes no arguments; OpenAI says so with
/// an empty object schema, which is what the other formats need spelled out.
fn read_function(path: &str, function: WireFunction) -> Result<Tool, RequestError> {
    let name = match function.name {
        Some(name) if !name.is_empty() => name,
        _ => {
            return Err(RequestError::at(
                format!("{path}.name"),
                "is required: a non-empty function name",
            ));
        }
    };
    Ok(Tool {
        name,
        description: function.description,
        parameters: function
            .parameters
            .unwrap_or_else(|| serde_json::json!({"type": "object", "properties": {}})),
        strict: function.strict,
    })
}

/// `tool_choice` (and the legacy `function_call`): a mode string or an object.
#[derive(Debug)]
enum WireToolChoice {
    Mode(String),
    Named(WireNamedChoice),
}

#[derive(Debug, Deserialize)]
struct WireNamedChoice {
    #[serde(rename = "type")]
    kind: Option<String>,
    function: Option<WireFunctionName>,
    /// The legacy `function_call` names the function at the top level.
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(expecting = "an object with a `name`")]
struct WireFunctionName {
    name: Option<String>,
}

impl<'de> Deserialize<'de> for WireToolChoice {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct ChoiceVisitor;

        impl<'de> Visitor<'de> for ChoiceVisitor {
            type Value = WireToolChoice;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"auto\", \"none\", \"required\" or an object naming a function")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(WireToolChoice::Mode(v.to_owned()))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                WireNamedChoice::deserialize(MapAccessDeserializer::new(map))
                    .map(WireToolChoice::Named)
            }
        }

        de.deserialize_any(ChoiceVisitor)
    }
}

fn choice_mode(param: &str, mode: &str) -> Result<ToolChoice, RequestError> {
    match mode {
        "auto" => Ok(ToolChoice::Auto),
        "none" => Ok(ToolChoice::None),
        "required" => Ok(ToolChoice::Required),
        other => Err(RequestError::at(
            param,
            format!(
                "unknown value `{other}`; valid values are \"auto\", \"none\", \"required\" \
                 or {{\"type\": \"function\", \"function\": {{\"name\": …}}}}"
            ),
        )),
    }
}

/// Object choices of other types (`allowed_tools`, custom tools) are skipped
/// like the tools they refer to.
fn read_tool_choice(choice: WireToolChoice) -> Result<Option<ToolChoice>, RequestError> {
    let named = match choice {
        WireToolChoice::Mode(mode) => return choice_mode("tool_choice", &mode).map(Some),
        WireToolChoice::Named(named) => named,
    };
    if named.kind.as_deref().is_some_and(|kind| kind != "function") {
        return Ok(None);
    }
    match named.function.and_then(|f| f.name) {
        Some(name) => Ok(Some(ToolChoice::Tool(name))),
        None => Err(RequestError::at(
            "tool_choice.function.name",
            "is required: the name of the function the model must call",
        )),
    }
}

fn read_function_call_choice(choice: WireToolChoice) -> Result<Option<ToolChoice>, RequestError> {
    match choice {
        WireToolChoice::Mode(mode) => choice_mode("function_call", &mode).map(Some),
        WireToolChoice::Named(WireNamedChoice { name: Some(name), .. }) => {
            Ok(Some(ToolChoice::Tool(name)))
        }
        WireToolChoice::Named(_) => Err(RequestError::at(
            "function_call.name",
            "is required: the name of the function the model must call",
        )),
    }
}

/// `stop`: one string or an array of them.
#[derive(Debug)]
struct WireStop(Vec<String>);

impl<'de> Deserialize<'de> for WireStop {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct StopVisitor;

        impl<'de> Visitor<'de> for StopVisitor {
            type Value = WireStop;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or an array of strings")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(WireStop(vec![v.to_owned()]))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                collect_seq(seq).map(WireStop)
            }
        }

        de.deserialize_any(StopVisitor)
    }
}

#[derive(Debug, Deserialize)]
#[serde(expecting = "an object such as {\"type\": \"json_object\"}")]
struct WireResponseFormat {
    #[serde(rename = "type")]
    kind: Option<String>,
    json_schema: Option<WireJsonSchema>,
}

#[derive(Debug, Deserialize)]
#[serde(expecting = "an object with `name` and `schema`")]
struct WireJsonSchema {
    name: Option<String>,
    schema: Option<Value>,
    strict: Option<bool>,
}

const VALID_FORMATS: &str = "valid types are text, json_object and json_schema";

fn read_response_format(format: WireResponseFormat) -> Result<ResponseFormat, RequestError> {
    match format.kind.as_deref() {
        Some("text") => Ok(ResponseFormat::Text),
        Some("json_object") => Ok(ResponseFormat::JsonObject),
        Some("json_schema") => {
            let Some(spec) = format.json_schema else {
                return Err(RequestError::at(
                    "response_format.json_schema",
                    "is required for the json_schema type: an object with `name` and `schema`",
                ));
            };
            let Some(name) = spec.name else {
                return Err(RequestError::at(
                    "response_format.json_schema.name",
                    "is required: a name for the schema",
                ));
            };
            Ok(ResponseFormat::JsonSchema {
                name,
                schema: spec.schema.unwrap_or_else(|| Value::Object(Map::new())),
                strict: spec.strict,
            })
        }
        Some(other) => Err(RequestError::at(
            "response_format.type",
            format!("unknown type `{other}`; {VALID_FORMATS}"),
        )),
        None => {
            Err(RequestError::at("response_format.type", format!("is required; {VALID_FORMATS}")))
        }
    }
}
