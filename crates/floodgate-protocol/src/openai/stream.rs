//! Streams in OpenAI's format: [`StreamReader`] decodes an upstream's
//! `chat.completion.chunk` events into canonical chunks, [`StreamWriter`]
//! writes canonical chunks as the SSE bytes an OpenAI client reads.

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::wire::{
    ErrorEnvelope, ErrorObject, OutUsage, WireUsage, arguments_text, error_from_field,
    finish_reason_from, finish_reason_str, index_or, lenient_count, lenient_text, push_data,
    push_done,
};
use crate::canonical::*;
use crate::error::{DecodeError, StreamError, UpstreamErrorBody};
use crate::sse::{SseEvent, write_event};

#[derive(Debug, Deserialize)]
struct WireChunk {
    #[serde(default, deserialize_with = "lenient_text")]
    id: Option<String>,
    #[serde(default, deserialize_with = "lenient_text")]
    model: Option<String>,
    #[serde(default, deserialize_with = "lenient_count")]
    created: Option<u64>,
    #[serde(default)]
    choices: Option<Vec<WireChunkChoice>>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct WireChunkChoice {
    #[serde(default, deserialize_with = "lenient_count")]
    index: Option<u64>,
    #[serde(default)]
    delta: Option<WireDelta>,
    #[serde(default, deserialize_with = "lenient_text")]
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct WireDelta {
    /// A string, or (Mistral) an array of typed parts.
    #[serde(default)]
    content: Option<Value>,
    #[serde(default, deserialize_with = "lenient_text")]
    reasoning_content: Option<String>,
    #[serde(default, deserialize_with = "lenient_text")]
    reasoning: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<WireToolCallDelta>>,
    /// The legacy form of `tool_calls`.
    #[serde(default)]
    function_call: Option<WireFunctionDelta>,
}

#[derive(Debug, Deserialize)]
struct WireToolCallDelta {
    /// Missing from some compatible servers: the position in the array stands in.
    #[serde(default, deserialize_with = "lenient_count")]
    index: Option<u64>,
    #[serde(default, deserialize_with = "lenient_text")]
    id: Option<String>,
    #[serde(default)]
    function: Option<WireFunctionDelta>,
}

#[derive(Debug, Default, Deserialize)]
struct WireFunctionDelta {
    #[serde(default, deserialize_with = "lenient_text")]
    name: Option<String>,
    #[serde(default, deserialize_with = "arguments_text")]
    arguments: Option<String>,
}

/// Decodes an upstream OpenAI stream.
#[derive(Debug)]
pub struct StreamReader {
    /// Named in `Start` when the upstream's chunks name no model.
    fallback_model: String,
    started: bool,
    /// The `(choice, index)` of every tool call already started, so a server
    /// that repeats the id on every delta does not start the call again.
    open_calls: Vec<(u32, u32)>,
}

impl StreamReader {
    pub fn new(req: &ChatRequest) -> Self {
        StreamReader { fallback_model: req.model.clone(), started: false, open_calls: Vec::new() }
    }

    pub fn read(&mut self, event: &SseEvent) -> Result<StreamChunk, StreamError> {
        let data = event.data.trim();
        if data.is_empty() {
            return Ok(StreamChunk::default());
        }
        let native = Some(NativeEvent {
            format: Format::OpenAi,
            event: event.event.clone(),
            data: event.data.clone(),
        });
        if data == "[DONE]" {
            return Ok(StreamChunk { events: Vec::new(), native, done: true });
        }
        let chunk: WireChunk = serde_json::from_str(data).map_err(|err| {
            DecodeError::new(format!("an OpenAI stream chunk could not be read: {err}"))
        })?;
        if let Some(error) = chunk.error.as_ref().filter(|e| !e.is_null()) {
            return Err(StreamError::Upstream(stream_error(error)));
        }
        let mut events = Vec::new();
        self.start(&chunk, &mut events);
        for (position, choice) in chunk.choices.into_iter().flatten().enumerate() {
            self.read_choice(position, choice, &mut events);
        }
        if let Some(usage) = &chunk.usage {
            events.push(StreamEvent::Usage(usage.to_canonical()));
        }
        Ok(StreamChunk { events, native, done: false })
    }

    /// `Start` comes with the first chunk that carries a choice, usage or an
    /// id. Azure opens its streams with a content-filter chunk that has none
    /// of them (and an empty id and model), which must not name the answer.
    fn start(&mut self, chunk: &WireChunk, events: &mut Vec<StreamEvent>) {
        let id = chunk.id.as_deref().unwrap_or_default();
        let has_choices = chunk.choices.as_ref().is_some_and(|c| !c.is_empty());
        if self.started || (!has_choices && chunk.usage.is_none() && id.is_empty()) {
            return;
        }
        self.started = true;
        events.push(StreamEvent::Start {
            id: id.to_owned(),
            model: chunk
                .model
                .clone()
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| self.fallback_model.clone()),
            created: chunk.created.unwrap_or(0),
        });
    }

    fn read_choice(
        &mut self,
        position: usize,
        choice: WireChunkChoice,
        events: &mut Vec<StreamEvent>,
    ) {
        let index = index_or(choice.index, position);
        if let Some(delta) = choice.delta {
            self.read_delta(index, delta, events);
        }
        if let Some(reason) = choice.finish_reason {
            events.push(StreamEvent::Finish { choice: index, reason: finish_reason_from(&reason) });
        }
    }

    fn read_delta(&mut self, choice: u32, delta: WireDelta, events: &mut Vec<StreamEvent>) {
        let mut push = |delta: Delta| events.push(StreamEvent::Delta { choice, delta });
        if let Some(text) = delta.reasoning_content.or(delta.reasoning).filter(|t| !t.is_empty()) {
            push(Delta::Thinking(text));
        }
        if let Some(text) = content_text(delta.content).filter(|t| !t.is_empty()) {
            push(Delta::Text(text));
        }
        for (position, call) in delta.tool_calls.into_iter().flatten().enumerate() {
            let index = index_or(call.index, position);
            let function = call.function.unwrap_or_default();
            self.read_tool_call(choice, index, call.id, function, events);
        }
        if let Some(function) = delta.function_call {
            // A legacy call has no id; its name stands for one, as when parsing.
            let id = function.name.clone();
            self.read_tool_call(choice, 0, id, function, events);
        }
    }

    /// A delta with an id or a name starts a call (unless that call is
    /// already open); its arguments, if any, follow in a separate event.
    fn read_tool_call(
        &mut self,
        choice: u32,
        index: u32,
        id: Option<String>,
        function: WireFunctionDelta,
        events: &mut Vec<StreamEvent>,
    ) {
        let starts = id.is_some() || function.name.is_some();
        if starts && !self.open_calls.contains(&(choice, index)) {
            self.open_calls.push((choice, index));
            events.push(StreamEvent::Delta {
                choice,
                delta: Delta::ToolCallStart {
                    index,
                    id: id.unwrap_or_else(|| format!("call_{index}")),
                    name: function.name.unwrap_or_default(),
                },
            });
        }
        if let Some(fragment) = function.arguments.filter(|a| !a.is_empty()) {
            events.push(StreamEvent::Delta {
                choice,
                delta: Delta::ToolCallArguments { index, fragment },
            });
        }
    }
}

/// Delta content is a string; Mistral sends an array of typed parts, whose
/// text parts are what an OpenAI client would have read.
fn content_text(content: Option<Value>) -> Option<String> {
    match content? {
        Value::String(text) => Some(text),
        Value::Array(items) => {
            let text: String = items
                .iter()
                .filter(|item| item.get("type").and_then(Value::as_str) == Some("text"))
                .filter_map(|item| item.get("text").and_then(Value::as_str))
                .collect();
            Some(text)
        }
        _ => None,
    }
}

fn stream_error(error: &Value) -> UpstreamErrorBody {
    error_from_field(error, &Map::new()).unwrap_or_else(|| UpstreamErrorBody {
        message: "the upstream reported an error without a message".to_owned(),
        kind: None,
        code: None,
    })
}

/// Encodes a stream for an OpenAI client.
///
/// When the client spoke OpenAI and the chunk came from an OpenAI upstream,
/// the upstream's own event is replayed verbatim; otherwise the canonical
/// events are written as `chat.completion.chunk` objects, one per event.
#[derive(Debug)]
pub struct StreamWriter {
    /// The client asked for `stream_options.include_usage`.
    include_usage: bool,
    /// The client's request was OpenAI, so OpenAI events may be replayed.
    passthrough: bool,
    id: String,
    model: String,
    created: u64,
    usage: Usage,
    /// A replayed upstream chunk already carried usage to the client.
    usage_sent: bool,
    /// Choices whose opening `{"role":"assistant"}` chunk has been written.
    opened: Vec<u32>,
    finished: bool,
}

#[derive(Debug, Serialize)]
struct OutChunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: &'a [OutChoice<'a>],
    /// Absent unless the client asked for usage; then `null` on every chunk
    /// but the last, as OpenAI does.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<OutUsage>>,
}

#[derive(Debug, Serialize)]
struct OutChoice<'a> {
    index: u32,
    delta: OutDelta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

#[derive(Debug, Default, Serialize)]
struct OutDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[OutToolCallDelta<'a>; 1]>,
}

#[derive(Debug, Serialize)]
struct OutToolCallDelta<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: OutFunctionDelta<'a>,
}

#[derive(Debug, Serialize)]
struct OutFunctionDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

/// Just enough of a chunk to tell a usage-only chunk.
#[derive(Debug, Deserialize)]
struct ChoicesOnly {
    #[serde(default)]
    choices: Option<Vec<IgnoredAny>>,
}

impl StreamWriter {
    pub fn new(req: &ChatRequest) -> Self {
        StreamWriter {
            include_usage: req.include_usage,
            passthrough: req.native.as_ref().is_some_and(|n| n.format == Format::OpenAi),
            id: String::new(),
            model: String::new(),
            created: 0,
            usage: Usage::default(),
            usage_sent: false,
            opened: Vec::new(),
            finished: false,
        }
    }

    pub fn write(&mut self, chunk: &StreamChunk, out: &mut Vec<u8>) {
        if self.finished {
            return;
        }
        self.remember(&chunk.events);
        let native =
            chunk.native.as_ref().filter(|n| self.passthrough && n.format == Format::OpenAi);
        match native {
            Some(native) if !chunk.done => self.replay(chunk, native, out),
            Some(_) => {}
            None => chunk.events.iter().for_each(|event| self.encode(event, out)),
        }
        if chunk.done {
            self.finish(out);
        }
    }

    /// Ends the stream: the usage chunk if the client asked for one and has
    /// not had it, then `[DONE]`. Does nothing the second time.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.finished {
            return;
        }
        self.finished = true;
        if self.include_usage && !self.usage_sent {
            push_data(
                out,
                &OutChunk {
                    id: &self.id,
                    object: "chat.completion.chunk",
                    created: self.created,
                    model: &self.model,
                    choices: &[],
                    usage: Some(Some(OutUsage::from(&self.usage))),
                },
            );
        }
        push_done(out);
    }

    /// Reports an error the OpenAI SDKs raise on (a chunk with `error`), then
    /// ends the stream. An error of no known type is a `server_error`, the
    /// type OpenAI gives its own failures mid-stream.
    pub fn write_error(&mut self, error: &UpstreamErrorBody, out: &mut Vec<u8>) {
        if self.finished {
            return;
        }
        self.finished = true;
        push_data(
            out,
            &ErrorEnvelope {
                error: ErrorObject {
                    message: &error.message,
                    kind: error.kind.as_deref().unwrap_or("server_error"),
                    code: error.code.as_deref(),
                    param: None,
                },
            },
        );
        push_done(out);
    }

    /// Keeps what the closing usage chunk needs, whichever way events are written.
    fn remember(&mut self, events: &[StreamEvent]) {
        for event in events {
            match event {
                StreamEvent::Start { id, model, created } => {
                    id.clone_into(&mut self.id);
                    model.clone_into(&mut self.model);
                    self.created = *created;
                }
                StreamEvent::Usage(usage) => self.usage = *usage,
                StreamEvent::Delta { .. } | StreamEvent::Finish { .. } => {}
            }
        }
    }

    /// Replays an upstream event, except a usage-only chunk the client did
    /// not ask for: usage is always requested upstream, so it is counted,
    /// but an OpenAI client that did not ask must not see the extra chunk.
    fn replay(&mut self, chunk: &StreamChunk, native: &NativeEvent, out: &mut Vec<u8>) {
        let has_usage = chunk.events.iter().any(|e| matches!(e, StreamEvent::Usage(_)));
        if has_usage {
            if !self.include_usage && is_usage_only(&native.data) {
                return;
            }
            self.usage_sent = true;
        }
        write_event(out, None, &native.data);
    }

    fn encode(&mut self, event: &StreamEvent, out: &mut Vec<u8>) {
        match event {
            StreamEvent::Start { .. } | StreamEvent::Usage(_) => {}
            StreamEvent::Delta { choice, delta } => {
                if let Some(out_delta) = out_delta(delta) {
                    self.open(*choice, out);
                    self.push_choice(out, *choice, out_delta, None);
                }
            }
            StreamEvent::Finish { choice, reason } => {
                self.open(*choice, out);
                let reason = finish_reason_str(reason);
                self.push_choice(out, *choice, OutDelta::default(), Some(reason));
            }
        }
    }

    /// OpenAI opens each choice with a chunk that names the role.
    fn open(&mut self, choice: u32, out: &mut Vec<u8>) {
        if self.opened.contains(&choice) {
            return;
        }
        self.opened.push(choice);
        let delta = OutDelta { role: Some("assistant"), content: Some(""), ..OutDelta::default() };
        self.push_choice(out, choice, delta, None);
    }

    fn push_choice(
        &self,
        out: &mut Vec<u8>,
        index: u32,
        delta: OutDelta<'_>,
        finish_reason: Option<&'static str>,
    ) {
        let choice = OutChoice { index, delta, logprobs: None, finish_reason };
        push_data(
            out,
            &OutChunk {
                id: &self.id,
                object: "chat.completion.chunk",
                created: self.created,
                model: &self.model,
                choices: std::slice::from_ref(&choice),
                usage: self.include_usage.then_some(None),
            },
        );
    }
}

/// The delta a canonical one is written as; `None` for what OpenAI clients
/// have no field for (a thinking signature) or that carries nothing.
fn out_delta(delta: &Delta) -> Option<OutDelta<'_>> {
    let tool_call = |index, id, kind, name, arguments| OutDelta {
        tool_calls: Some([OutToolCallDelta {
            index,
            id,
            kind,
            function: OutFunctionDelta { name, arguments },
        }]),
        ..OutDelta::default()
    };
    match delta {
        Delta::Text(text) if text.is_empty() => None,
        Delta::Text(text) => Some(OutDelta { content: Some(text), ..OutDelta::default() }),
        Delta::Thinking(text) if text.is_empty() => None,
        Delta::Thinking(text) => {
            Some(OutDelta { reasoning_content: Some(text), ..OutDelta::default() })
        }
        Delta::ThinkingSignature(_) => None,
        Delta::ToolCallStart { index, id, name } => {
            Some(tool_call(*index, Some(id), Some("function"), Some(name), ""))
        }
        Delta::ToolCallArguments { index, fragment } => {
            Some(tool_call(*index, None, None, None, fragment))
        }
    }
}

fn is_usage_only(data: &str) -> bool {
    serde_json::from_str::<ChoicesOnly>(data)
        .is_ok_and(|chunk| chunk.choices.is_none_or(|choices| choices.is_empty()))
}
