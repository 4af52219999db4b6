//! The Anthropic Messages API: `POST /v1/messages` (streamed and not) and `GET /v1/models`, in
//! the shapes of Anthropic's API reference.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};

use crate::answer::{
    Reply, TOOL_ARGUMENT_PARTS, piece, prompt_tokens, str_field, text_chars, tool_to_call,
};
use crate::call::{Call, Incoming, Provider, json_response};
use crate::state::Shared;
use crate::stream::{Ending, Frames, sse_response};

/// `POST /v1/messages`.
pub(crate) async fn messages(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let call = match Call::begin(&shared, request, Provider::Anthropic).await {
        Ok(call) => call,
        Err(response) => return response,
    };
    let Some(model) = str_field(&call.body, "model") else {
        return call.bad_request("model: Field required");
    };
    let Some(messages) = call.body.get("messages").and_then(Value::as_array) else {
        return call.bad_request("messages: Field required");
    };
    let Some(max_tokens) = call.body.get("max_tokens").and_then(Value::as_u64) else {
        return call.bad_request("max_tokens: Field required");
    };
    if let Some(response) = call.settle(model).await {
        return response;
    }
    let reply = choose_reply(&call.body, messages, shared.config.chunks, max_tokens);
    let chars = text_chars(call.body.get("system").unwrap_or(&Value::Null))
        + text_chars(&call.body["messages"]);
    let input_tokens = prompt_tokens(chars);
    let charged = match call.charge(model, input_tokens + reply.completion_tokens()) {
        Ok(charged) => charged,
        Err(response) => return *response,
    };
    let serial = shared.next_id();
    let answer = Answer {
        id: &format!("msg_mock{serial:012}"),
        tool_id: &format!("toolu_mock{serial:012}"),
        model,
        reply: &reply,
        input_tokens,
    };
    let response = if call.body.get("stream").and_then(Value::as_bool) == Some(true) {
        let delay = shared.config.chunk_delay;
        let frames = answer.stream_frames(Frames::new(delay));
        sse_response(&shared, frames, delay, Ending::Complete)
    } else {
        answer.message(&shared.default_text, shared.config.chunks)
    };
    charged.stamp(response)
}

/// A tool call when tools are offered (see [`tool_to_call`]), else text cut to `max_tokens`.
fn choose_reply(body: &Value, messages: &[Value], chunks: usize, max_tokens: u64) -> Reply {
    let first = body
        .get("tools")
        .and_then(Value::as_array)
        .and_then(|tools| tools.first())
        .and_then(|tool| str_field(tool, "name"));
    let choice = body.get("tool_choice");
    let choice_type = choice.and_then(|choice| str_field(choice, "type"));
    let forced = choice.filter(|_| choice_type == Some("tool")).and_then(|c| str_field(c, "name"));
    let last_is_user = messages.last().is_some_and(is_plain_user_turn);
    match tool_to_call(last_is_user, choice_type == Some("none"), forced, first) {
        Some(name) => Reply::Tool { name },
        None => Reply::text(chunks, Some(max_tokens)),
    }
}

/// A user message that carries no `tool_result` block.
fn is_plain_user_turn(message: &Value) -> bool {
    let has_tool_result = message.get("content").and_then(Value::as_array).is_some_and(|blocks| {
        blocks.iter().any(|block| str_field(block, "type") == Some("tool_result"))
    });
    str_field(message, "role") == Some("user") && !has_tool_result
}

/// Everything an answer is built from.
struct Answer<'a> {
    id: &'a str,
    tool_id: &'a str,
    model: &'a str,
    reply: &'a Reply,
    input_tokens: u64,
}

impl Answer<'_> {
    fn stop_reason(&self) -> &'static str {
        match self.reply {
            Reply::Text { truncated: true, .. } => "max_tokens",
            Reply::Text { truncated: false, .. } => "end_turn",
            Reply::Tool { .. } => "tool_use",
        }
    }

    /// The non-streamed `message` object.
    fn message(&self, default_text: &str, chunks: usize) -> Response {
        let text;
        let block = match self.reply {
            Reply::Text { words, .. } => {
                text = if *words == chunks { None } else { Some(crate::answer_text(*words)) };
                Block::Text { text: text.as_deref().unwrap_or(default_text) }
            }
            Reply::Tool { name } => {
                Block::ToolUse { id: self.tool_id, name, input: Input::Mock { mock: true } }
            }
        };
        let usage = Usage::new(self.input_tokens, self.reply.completion_tokens());
        let content = [block];
        let message = self.message_object(&content, Some(self.stop_reason()), usage);
        json_response(StatusCode::OK, &message)
    }

    fn message_object<'b>(
        &'b self,
        content: &'b [Block<'b>],
        stop_reason: Option<&'static str>,
        usage: Usage,
    ) -> Message<'b> {
        Message {
            id: self.id,
            kind: "message",
            role: "assistant",
            model: self.model,
            content,
            stop_reason,
            stop_sequence: None,
            usage,
        }
    }

    /// The stream events: `message_start`, `content_block_start`, `ping`, one delta per frame,
    /// `content_block_stop`, `message_delta`, `message_stop`.
    fn stream_frames(&self, mut frames: Frames) -> Vec<bytes::Bytes> {
        // As the real API does, message_start reports one output token so far.
        let start = self.message_object(&[], None, Usage::new(self.input_tokens, 1));
        write(&mut frames, &Event::MessageStart { message: start });
        match self.reply {
            Reply::Text { words, .. } => {
                let block = Block::Text { text: "" };
                write(&mut frames, &Event::ContentBlockStart { index: 0, content_block: block });
                write(&mut frames, &Event::Ping);
                for index in 0..*words {
                    if index > 0 {
                        frames.cut();
                    }
                    let delta = Delta::TextDelta { text: piece(index) };
                    write(&mut frames, &Event::ContentBlockDelta { index: 0, delta });
                }
            }
            Reply::Tool { name } => {
                let block = Block::ToolUse { id: self.tool_id, name, input: Input::Empty {} };
                write(&mut frames, &Event::ContentBlockStart { index: 0, content_block: block });
                write(&mut frames, &Event::Ping);
                for part in TOOL_ARGUMENT_PARTS {
                    frames.cut();
                    let delta = Delta::InputJsonDelta { partial_json: part };
                    write(&mut frames, &Event::ContentBlockDelta { index: 0, delta });
                }
            }
        }
        write(&mut frames, &Event::ContentBlockStop { index: 0 });
        let delta = StopDelta { stop_reason: self.stop_reason(), stop_sequence: None };
        let usage = OutputUsage { output_tokens: self.reply.completion_tokens() };
        write(&mut frames, &Event::MessageDelta { delta, usage });
        write(&mut frames, &Event::MessageStop);
        frames.finish()
    }
}

/// Writes `event: <type>` and `data: <json>`.
fn write(frames: &mut Frames, event: &Event<'_>) {
    frames.event_json(event.name(), event);
}

#[derive(Serialize)]
struct Message<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: &'a [Block<'a>],
    stop_reason: Option<&'static str>,
    stop_sequence: Option<()>,
    usage: Usage,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block<'a> {
    Text { text: &'a str },
    ToolUse { id: &'a str, name: &'a str, input: Input },
}

/// The input of a tool_use block: `{"mock":true}` when complete, `{}` at a stream's start.
#[derive(Serialize)]
#[serde(untagged)]
enum Input {
    Mock { mock: bool },
    Empty {},
}

#[derive(Serialize, Clone, Copy)]
struct Usage {
    input_tokens: u64,
    cache_creation_input_tokens: u64,
    cache_read_input_tokens: u64,
    output_tokens: u64,
}

impl Usage {
    fn new(input_tokens: u64, output_tokens: u64) -> Self {
        Self {
            input_tokens,
            cache_creation_input_tokens: 0,
            cache_read_input_tokens: 0,
            output_tokens,
        }
    }
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Event<'a> {
    MessageStart { message: Message<'a> },
    ContentBlockStart { index: u32, content_block: Block<'a> },
    Ping,
    ContentBlockDelta { index: u32, delta: Delta<'a> },
    ContentBlockStop { index: u32 },
    MessageDelta { delta: StopDelta, usage: OutputUsage },
    MessageStop,
}

impl Event<'_> {
    /// The SSE event name, which is the `type` member.
    fn name(&self) -> &'static str {
        match self {
            Event::MessageStart { .. } => "message_start",
            Event::ContentBlockStart { .. } => "content_block_start",
            Event::Ping => "ping",
            Event::ContentBlockDelta { .. } => "content_block_delta",
            Event::ContentBlockStop { .. } => "content_block_stop",
            Event::MessageDelta { .. } => "message_delta",
            Event::MessageStop => "message_stop",
        }
    }
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Delta<'a> {
    TextDelta { text: &'a str },
    InputJsonDelta { partial_json: &'a str },
}

#[derive(Serialize)]
struct StopDelta {
    stop_reason: &'static str,
    stop_sequence: Option<()>,
}

#[derive(Serialize)]
struct OutputUsage {
    output_tokens: u64,
}

/// `GET /v1/models` with `anthropic-version`: Anthropic's paginated list shape.
pub(crate) async fn models(shared: &Arc<Shared>, request: Request) -> Response {
    let incoming = match Incoming::read(shared, request, Provider::Anthropic).await {
        Ok(incoming) => incoming,
        Err(response) => return response,
    };
    if let Err(error) = incoming.check_key(Provider::Anthropic) {
        return error.into_response();
    }
    let list = json!({
        "data": [
            {
                "type": "model",
                "id": "claude-sonnet-4-20250514",
                "display_name": "Claude Sonnet 4",
                "created_at": "2025-05-22T00:00:00Z"
            },
            {
                "type": "model",
                "id": "claude-3-5-haiku-20241022",
                "display_name": "Claude Haiku 3.5",
                "created_at": "2024-10-22T00:00:00Z"
            }
        ],
        "has_more": false,
        "first_id": "claude-sonnet-4-20250514",
        "last_id": "claude-3-5-haiku-20241022"
    });
    json_response(StatusCode::OK, &list)
}
