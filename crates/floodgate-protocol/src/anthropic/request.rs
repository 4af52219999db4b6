//! Writing a canonical [`ChatRequest`] as an Anthropic Messages request body.
//!
//! The turn rules mirror [`super::parse`], so canonical → write → parse is the
//! identity: Tool messages (one result each) and the consecutive Tool messages
//! after them share one user turn of `tool_result` blocks, and a User message
//! directly after them joins that turn too, its blocks after the results.

use serde::Serialize;
use serde_json::{Map, Value};

use super::wire::{BlockOut, SourceOut, ToolResultContentOut};
use super::{DEFAULT_MAX_TOKENS, RESPONSE_FORMAT_TOOL, response_schema};
use crate::canonical::*;
use crate::error::TranslateError;

#[derive(Serialize)]
struct RequestOut<'a> {
    model: &'a str,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<SystemOut<'a>>,
    messages: Vec<TurnOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<u32>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop_sequences: &'a [String],
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<MetadataOut<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<ToolOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<ToolChoiceOut<'a>>,
}

/// `system`: a string when there is one text part, else text blocks.
#[derive(Serialize)]
#[serde(untagged)]
enum SystemOut<'a> {
    Text(&'a str),
    Blocks(Vec<BlockOut<'a>>),
}

#[derive(Serialize)]
struct TurnOut<'a> {
    role: &'static str,
    content: Vec<BlockOut<'a>>,
}

#[derive(Serialize)]
struct MetadataOut<'a> {
    user_id: &'a str,
}

#[derive(Serialize)]
struct ToolOut<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    input_schema: &'a Value,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ToolChoiceOut<'a> {
    Auto {
        #[serde(skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
    },
    Any {
        #[serde(skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
    },
    Tool {
        name: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
    },
    None,
}

pub(super) fn write_chat_request(
    req: &ChatRequest,
    model: &str,
) -> Result<Vec<u8>, TranslateError> {
    if let Some(native) = &req.native
        && native.format == Format::Anthropic
    {
        return write_native(&native.body, model, req.stream);
    }
    let schema = response_schema(req.response_format.as_ref());
    let body = RequestOut {
        model,
        max_tokens: req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
        system: write_system(&req.messages)?,
        messages: write_turns(&req.messages)?,
        temperature: req.temperature,
        top_p: req.top_p,
        top_k: req.top_k,
        stop_sequences: &req.stop,
        stream: req.stream,
        metadata: req.user.as_deref().map(|user_id| MetadataOut { user_id }),
        tools: write_tools(&req.tools, schema.as_ref())?,
        tool_choice: write_tool_choice(req, schema.is_some())?,
    };
    serde_json::to_vec(&body)
        .map_err(|err| TranslateError::new(format!("cannot serialise the request: {err}")))
}

/// The client's own body with only `model` and `stream` replaced.
fn write_native(
    body: &Map<String, Value>,
    model: &str,
    stream: bool,
) -> Result<Vec<u8>, TranslateError> {
    let mut body = body.clone();
    body.insert("model".to_owned(), Value::String(model.to_owned()));
    body.insert("stream".to_owned(), Value::Bool(stream));
    serde_json::to_vec(&body)
        .map_err(|err| TranslateError::new(format!("cannot serialise the request: {err}")))
}

/// All System messages' text, in order. Anthropic has no system role inside
/// the conversation, so later system messages are hoisted into `system` too:
/// their instructions are kept, only their position is lost.
fn write_system(messages: &[Message]) -> Result<Option<SystemOut<'_>>, TranslateError> {
    let mut texts = Vec::new();
    for message in messages.iter().filter(|m| m.role == Role::System) {
        for part in &message.content {
            match part {
                Part::Text { text } => texts.push(text.as_str()),
                _ => {
                    return Err(TranslateError::new(
                        "Anthropic system prompts hold text only; a system message has another part",
                    ));
                }
            }
        }
    }
    Ok(match texts.as_slice() {
        [] => None,
        [text] => Some(SystemOut::Text(text)),
        _ => {
            Some(SystemOut::Blocks(texts.into_iter().map(|text| BlockOut::Text { text }).collect()))
        }
    })
}

/// The conversation as Anthropic turns (see the module doc for the rules).
fn write_turns(messages: &[Message]) -> Result<Vec<TurnOut<'_>>, TranslateError> {
    let mut turns: Vec<TurnOut<'_>> = Vec::with_capacity(messages.len());
    let mut after_tool = false;
    for message in messages {
        let joins_tool_turn = after_tool && matches!(message.role, Role::Tool | Role::User);
        let role = match message.role {
            Role::System => continue,
            Role::User | Role::Tool => "user",
            Role::Assistant => "assistant",
        };
        let blocks = write_blocks(&message.content)?;
        match turns.last_mut() {
            Some(turn) if joins_tool_turn => turn.content.extend(blocks),
            _ => turns.push(TurnOut { role, content: blocks }),
        }
        after_tool = message.role == Role::Tool;
    }
    Ok(turns)
}

fn write_blocks(parts: &[Part]) -> Result<Vec<BlockOut<'_>>, TranslateError> {
    let mut blocks = Vec::with_capacity(parts.len());
    for part in parts {
        blocks.extend(write_block(part)?);
    }
    Ok(blocks)
}

/// One canonical part as a block; `None` for unsigned thinking, which
/// Anthropic rejects when it is sent back (it checks the signature).
fn write_block(part: &Part) -> Result<Option<BlockOut<'_>>, TranslateError> {
    Ok(Some(match part {
        Part::Text { text } => BlockOut::Text { text },
        Part::Image { source } => BlockOut::Image { source: write_source(source) },
        Part::ToolCall { id, name, arguments } => {
            BlockOut::ToolUse { id, name, input: tool_input(id, name, arguments)? }
        }
        Part::ToolResult { tool_call_id, content, is_error } => BlockOut::ToolResult {
            tool_use_id: tool_call_id,
            content: write_result_content(tool_call_id, content)?,
            is_error: *is_error,
        },
        Part::Thinking { text, signature: Some(signature) } => {
            BlockOut::Thinking { thinking: text, signature: Some(signature) }
        }
        Part::Thinking { signature: None, .. } => return Ok(None),
    }))
}

fn write_source(source: &ImageSource) -> SourceOut<'_> {
    match source {
        ImageSource::Url(url) => SourceOut::Url { url },
        ImageSource::Base64 { media_type, data } => SourceOut::Base64 { media_type, data },
    }
}

/// A tool call's arguments text as the `input` object Anthropic wants.
fn tool_input(id: &str, name: &str, arguments: &str) -> Result<Value, TranslateError> {
    if arguments.trim().is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(input @ Value::Object(_)) => Ok(input),
        Ok(_) => Err(TranslateError::new(format!(
            "the arguments of tool call {id} ({name}) are not a JSON object, \
             which Anthropic requires as tool input"
        ))),
        Err(err) => Err(TranslateError::new(format!(
            "the arguments of tool call {id} ({name}) are not valid JSON: {err}"
        ))),
    }
}

/// A tool result's content: omitted when empty, a string for one text part,
/// else text and image blocks.
fn write_result_content<'a>(
    id: &str,
    content: &'a [Part],
) -> Result<Option<ToolResultContentOut<'a>>, TranslateError> {
    match content {
        [] => Ok(None),
        [Part::Text { text }] => Ok(Some(ToolResultContentOut::Text(text))),
        parts => {
            let mut blocks = Vec::with_capacity(parts.len());
            for part in parts {
                blocks.push(match part {
                    Part::Text { text } => BlockOut::Text { text },
                    Part::Image { source } => BlockOut::Image { source: write_source(source) },
                    _ => {
                        return Err(TranslateError::new(format!(
                            "the result of tool call {id} holds a part other than text or \
                             image, which Anthropic tool results cannot carry"
                        )));
                    }
                });
            }
            Ok(Some(ToolResultContentOut::Blocks(blocks)))
        }
    }
}

/// The client's tools, plus the synthetic response-format tool when a JSON
/// answer is wanted.
fn write_tools<'a>(
    tools: &'a [Tool],
    schema: Option<&'a Value>,
) -> Result<Vec<ToolOut<'a>>, TranslateError> {
    let mut out = Vec::with_capacity(tools.len() + 1);
    for tool in tools {
        if schema.is_some() && tool.name == RESPONSE_FORMAT_TOOL {
            return Err(TranslateError::new(format!(
                "a tool named {RESPONSE_FORMAT_TOOL} cannot be combined with a JSON \
                 response_format for Anthropic, which uses that name to carry it"
            )));
        }
        out.push(ToolOut {
            name: &tool.name,
            description: tool.description.as_deref(),
            input_schema: &tool.parameters,
        });
    }
    if let Some(schema) = schema {
        out.push(ToolOut {
            name: RESPONSE_FORMAT_TOOL,
            description: Some("Give the final answer as JSON matching this schema."),
            input_schema: schema,
        });
    }
    Ok(out)
}

/// `tool_choice`, with `disable_parallel_tool_use` from `parallel_tool_calls`.
/// A JSON response format forces the synthetic tool, which leaves no room for
/// a client that forces a tool of its own.
fn write_tool_choice(
    req: &ChatRequest,
    forced_json: bool,
) -> Result<Option<ToolChoiceOut<'_>>, TranslateError> {
    let disable = req.parallel_tool_calls.map(|parallel| !parallel);
    if forced_json {
        return match &req.tool_choice {
            Some(ToolChoice::Required) => Err(forced_conflict("any tool")),
            Some(ToolChoice::Tool(name)) if name != RESPONSE_FORMAT_TOOL => {
                Err(forced_conflict(&format!("the tool {name}")))
            }
            _ => Ok(Some(ToolChoiceOut::Tool {
                name: RESPONSE_FORMAT_TOOL,
                disable_parallel_tool_use: disable,
            })),
        };
    }
    Ok(match &req.tool_choice {
        None if disable == Some(true) => {
            Some(ToolChoiceOut::Auto { disable_parallel_tool_use: disable })
        }
        None => None,
        Some(ToolChoice::Auto) => Some(ToolChoiceOut::Auto { disable_parallel_tool_use: disable }),
        Some(ToolChoice::Required) => {
            Some(ToolChoiceOut::Any { disable_parallel_tool_use: disable })
        }
        Some(ToolChoice::Tool(name)) => {
            Some(ToolChoiceOut::Tool { name, disable_parallel_tool_use: disable })
        }
        // Anthropic's `none` choice has no parallel flag: no call is allowed.
        Some(ToolChoice::None) => Some(ToolChoiceOut::None),
    })
}

fn forced_conflict(what: &str) -> TranslateError {
    TranslateError::new(format!(
        "a JSON response_format cannot be combined with forcing {what} on Anthropic: \
         the format is itself carried by a forced tool call"
    ))
}
