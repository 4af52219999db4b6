//! Reads and writes a complete (non-streamed) `chat.completion` object.
//!
//! Reading is strict on what an answer cannot do without (`choices`, each
//! choice's `message`, a tool call's function name) and lenient on the rest,
//! which compatible servers fill in their own ways.

use std::borrow::Cow;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::wire::{
    OutToolCall, OutUsage, WireUsage, arguments_text, error_from_field, finish_reason_from,
    finish_reason_str, index_or, lenient_count, lenient_text, to_json,
};
use crate::canonical::*;
use crate::error::DecodeError;

#[derive(Debug, Deserialize)]
struct WireCompletion {
    #[serde(default, deserialize_with = "lenient_text")]
    id: Option<String>,
    #[serde(default, deserialize_with = "lenient_text")]
    model: Option<String>,
    #[serde(default, deserialize_with = "lenient_count")]
    created: Option<u64>,
    choices: Option<Vec<WireChoice>>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct WireChoice {
    #[serde(default, deserialize_with = "lenient_count")]
    index: Option<u64>,
    message: Option<WireMessage>,
    #[serde(default, deserialize_with = "lenient_text")]
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct WireMessage {
    /// A string, an array of parts (some compatible servers) or null.
    #[serde(default)]
    content: Option<Value>,
    /// DeepSeek and vLLM put reasoning here…
    #[serde(default, deserialize_with = "lenient_text")]
    reasoning_content: Option<String>,
    /// …OpenRouter and Ollama here.
    #[serde(default, deserialize_with = "lenient_text")]
    reasoning: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<WireToolCall>>,
    /// The legacy form of `tool_calls`.
    #[serde(default)]
    function_call: Option<WireFunction>,
}

#[derive(Debug, Deserialize)]
struct WireToolCall {
    #[serde(default, deserialize_with = "lenient_text")]
    id: Option<String>,
    function: Option<WireFunction>,
}

#[derive(Debug, Deserialize)]
struct WireFunction {
    #[serde(default, deserialize_with = "lenient_text")]
    name: Option<String>,
    #[serde(default, deserialize_with = "arguments_text")]
    arguments: Option<String>,
}

/// Decodes an upstream `chat.completion`, keeping the body for verbatim replay.
pub fn read_chat_response(req: &ChatRequest, body: Bytes) -> Result<ChatResponse, DecodeError> {
    let de = &mut serde_json::Deserializer::from_slice(&body);
    let wire: WireCompletion = serde_path_to_error::deserialize(de).map_err(|err| {
        DecodeError::new(format!("an OpenAI chat completion could not be read: {err}"))
    })?;
    let Some(choices) = wire.choices else {
        return Err(DecodeError::new(missing_choices(wire.error.as_ref())));
    };
    let choices = choices
        .into_iter()
        .enumerate()
        .map(|(i, choice)| read_choice(i, choice))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ChatResponse {
        id: wire.id.unwrap_or_default(),
        model: wire.model.unwrap_or_else(|| req.model.clone()),
        created: wire.created.unwrap_or(0),
        choices,
        usage: wire.usage.map(|u| u.to_canonical()).unwrap_or_default(),
        native: Some(NativeResponse { format: Format::OpenAi, body }),
    })
}

/// Reads only what a verbatim replay needs: id, model, created and usage.
///
/// For an answer that goes back unchanged to a client of the same format,
/// decoding every choice would be wasted work (about 8 % of the gateway's CPU
/// per request in the benchmark). The body is still checked to be a chat
/// completion (an object with a `choices` array); `choices` is left empty and
/// [`read_chat_response`] on `native.body` decodes it in full when needed.
pub fn read_chat_response_lean(
    req: &ChatRequest,
    body: Bytes,
) -> Result<ChatResponse, DecodeError> {
    // Borrowed strings and skipped choices: no allocation but the id and
    // model. Anything unusual (a number where a string belongs) fails here
    // and goes to the lenient full reader below.
    #[derive(Deserialize)]
    struct Lean<'a> {
        #[serde(default, borrow)]
        id: Option<Cow<'a, str>>,
        #[serde(default, borrow)]
        model: Option<Cow<'a, str>>,
        #[serde(default, deserialize_with = "lenient_count")]
        created: Option<u64>,
        choices: Option<Vec<serde::de::IgnoredAny>>,
        #[serde(default)]
        usage: Option<WireUsage>,
    }
    let lean = match serde_json::from_slice::<Lean<'_>>(&body) {
        Ok(lean) if lean.choices.is_some() => lean,
        // The full reader explains what is wrong, with the path.
        Ok(_) | Err(_) => return read_chat_response(req, body),
    };
    let id = lean.id.map(Cow::into_owned).unwrap_or_default();
    let model = lean.model.map_or_else(|| req.model.clone(), Cow::into_owned);
    let usage = lean.usage.map(|u| u.to_canonical()).unwrap_or_default();
    let created = lean.created.unwrap_or(0);
    Ok(ChatResponse {
        id,
        model,
        created,
        choices: Vec::new(),
        usage,
        native: Some(NativeResponse { format: Format::OpenAi, body }),
    })
}

fn missing_choices(error: Option<&Value>) -> String {
    let reported = error.and_then(|e| error_from_field(e, &serde_json::Map::new()));
    match reported {
        Some(error) => format!("the upstream answered with an error: {}", error.message),
        None => "an OpenAI chat completion has no `choices`".to_owned(),
    }
}

fn read_choice(i: usize, choice: WireChoice) -> Result<Choice, DecodeError> {
    let Some(message) = choice.message else {
        return Err(DecodeError::new(format!("choices[{i}] has no `message`")));
    };
    Ok(Choice {
        index: index_or(choice.index, i),
        message: Message { role: Role::Assistant, content: message_parts(i, message)?, name: None },
        finish_reason: choice.finish_reason.as_deref().map(finish_reason_from),
    })
}

/// Reasoning first, then text, then tool calls: the order they were produced.
fn message_parts(i: usize, message: WireMessage) -> Result<Vec<Part>, DecodeError> {
    let mut parts = Vec::new();
    if let Some(text) = message.reasoning_content.or(message.reasoning)
        && !text.is_empty()
    {
        parts.push(Part::Thinking { text, signature: None });
    }
    push_content(message.content, &mut parts);
    for (j, call) in message.tool_calls.unwrap_or_default().into_iter().enumerate() {
        parts.push(read_tool_call(i, j, call)?);
    }
    if let Some(function) = message.function_call {
        let (name, arguments) =
            read_function(&format!("choices[{i}].message.function_call"), function)?;
        // A legacy call has no id; its name stands for one, as when parsing.
        parts.push(Part::ToolCall { id: name.clone(), name, arguments });
    }
    Ok(parts)
}

fn push_content(content: Option<Value>, parts: &mut Vec<Part>) {
    match content {
        Some(Value::String(text)) if !text.is_empty() => parts.push(Part::Text { text }),
        Some(Value::Array(items)) => {
            for item in items {
                let is_text = item.get("type").and_then(Value::as_str) == Some("text");
                if let Some(text) = item.get("text").and_then(Value::as_str).filter(|_| is_text)
                    && !text.is_empty()
                {
                    parts.push(Part::Text { text: text.to_owned() });
                }
            }
        }
        _ => {}
    }
}

fn read_tool_call(i: usize, j: usize, call: WireToolCall) -> Result<Part, DecodeError> {
    let path = format!("choices[{i}].message.tool_calls[{j}].function");
    let Some(function) = call.function else {
        return Err(DecodeError::new(format!("{path} is missing")));
    };
    let (name, arguments) = read_function(&path, function)?;
    Ok(Part::ToolCall {
        // A call the client cannot answer by id is still worth returning.
        id: call.id.unwrap_or_else(|| format!("call_{j}")),
        name,
        arguments,
    })
}

fn read_function(path: &str, function: WireFunction) -> Result<(String, String), DecodeError> {
    let Some(name) = function.name else {
        return Err(DecodeError::new(format!("{path}.name is missing")));
    };
    Ok((name, function.arguments.unwrap_or_else(|| "{}".to_owned())))
}

#[derive(Debug, Serialize)]
struct OutCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<OutChoice<'a>>,
    usage: OutUsage,
}

#[derive(Debug, Serialize)]
struct OutChoice<'a> {
    index: u32,
    message: OutMessage<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

#[derive(Debug, Serialize)]
struct OutMessage<'a> {
    role: &'static str,
    content: Option<Cow<'a, str>>,
    /// Not OpenAI's own field, but the one DeepSeek, vLLM and the clients
    /// built for them read reasoning from.
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<OutToolCall<'a>>,
    refusal: Option<()>,
}

/// Writes a `chat.completion` for an OpenAI client: the upstream's own body
/// when it spoke OpenAI, else one built from the canonical answer.
/// The answer as an OpenAI chat completion: the upstream's own bytes when
/// it spoke OpenAI (shared, not copied), else built from the canonical form.
pub fn write_chat_response(resp: &ChatResponse) -> Bytes {
    if let Some(native) = resp.native.as_ref().filter(|n| n.format == Format::OpenAi) {
        return native.body.clone();
    }
    Bytes::from(to_json(&OutCompletion {
        id: &resp.id,
        object: "chat.completion",
        created: resp.created,
        model: &resp.model,
        choices: resp.choices.iter().map(out_choice).collect(),
        usage: OutUsage::from(&resp.usage),
    }))
}

fn out_choice(choice: &Choice) -> OutChoice<'_> {
    let parts = &choice.message.content;
    let texts = parts.iter().filter_map(|part| match part {
        Part::Text { text } => Some(text.as_str()),
        _ => None,
    });
    let thoughts = parts.iter().filter_map(|part| match part {
        Part::Thinking { text, .. } => Some(text.as_str()),
        _ => None,
    });
    let tool_calls = parts
        .iter()
        .filter_map(|part| match part {
            Part::ToolCall { id, name, arguments } => Some(OutToolCall::new(id, name, arguments)),
            _ => None,
        })
        .collect();
    OutChoice {
        index: choice.index,
        message: OutMessage {
            role: "assistant",
            content: joined(texts),
            reasoning_content: joined(thoughts),
            tool_calls,
            refusal: None,
        },
        logprobs: None,
        finish_reason: choice.finish_reason.as_ref().map(finish_reason_str),
    }
}

/// The pieces joined, borrowed when there is only one; `None` when there are none.
fn joined<'a>(mut pieces: impl Iterator<Item = &'a str>) -> Option<Cow<'a, str>> {
    let first = pieces.next()?;
    match pieces.next() {
        None => Some(Cow::Borrowed(first)),
        Some(second) => {
            let mut text = format!("{first}{second}");
            pieces.for_each(|piece| text.push_str(piece));
            Some(Cow::Owned(text))
        }
    }
}
