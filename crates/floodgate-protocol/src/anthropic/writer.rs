//! Encoding canonical stream chunks as an Anthropic SSE stream for the client.
//!
//! When client and upstream both speak Anthropic, the upstream's events are
//! replayed verbatim. Otherwise a valid Anthropic stream is synthesised from
//! the canonical events of choice 0: content blocks open and close as the kind
//! of delta changes (and thinking after a signature opens a new block), and
//! the closing `message_delta` (with the stop reason and usage) and
//! `message_stop` wait for [`StreamWriter::finish`], because OpenAI upstreams
//! send their usage after the finish reason.

use serde_json::{Map, Value};

use super::wire::{
    BlockOut, DeltaOut, ErrorBodyOut, EventOut, MessageDeltaOut, MessageOut, UsageOut,
    stop_reason_out, to_json_text,
};
use crate::canonical::*;
use crate::error::UpstreamErrorBody;
use crate::sse::write_event;

/// The kind of the content block being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlockKind {
    Text,
    Thinking,
    /// A `tool_use` block for canonical tool call `index`.
    Tool(u32),
}

#[derive(Debug, Clone, Copy)]
struct OpenBlock {
    kind: BlockKind,
    index: u32,
    /// A thinking block has its signature: thinking after it is a new block.
    signed: bool,
}

/// Encodes a stream for an Anthropic client.
#[derive(Debug)]
pub struct StreamWriter {
    /// The client's request was Anthropic: upstream Anthropic events may be
    /// replayed as they are.
    pass_through: bool,
    /// Upstream events were replayed: the upstream framed the stream itself.
    replayed: bool,
    started: bool,
    finished: bool,
    id: String,
    model: String,
    open: Option<OpenBlock>,
    next_index: u32,
    usage: Usage,
    reason: Option<FinishReason>,
}

impl StreamWriter {
    pub fn new(req: &ChatRequest) -> Self {
        StreamWriter {
            pass_through: req
                .native
                .as_ref()
                .is_some_and(|native| native.format == Format::Anthropic),
            replayed: false,
            started: false,
            finished: false,
            id: String::new(),
            model: req.model.clone(),
            open: None,
            next_index: 0,
            usage: Usage::default(),
            reason: None,
        }
    }

    pub fn write(&mut self, chunk: &StreamChunk, out: &mut Vec<u8>) {
        if self.finished {
            return;
        }
        if self.pass_through
            && let Some(native) = &chunk.native
            && native.format == Format::Anthropic
        {
            write_event(out, native.event.as_deref(), &native.data);
            self.replayed = true;
            self.started = true;
            self.finished = chunk.done || native.event.as_deref() == Some("message_stop");
            return;
        }
        if !self.started {
            // Usage that comes with the start goes into `message_start`.
            for event in &chunk.events {
                if let StreamEvent::Usage(usage) = event {
                    self.usage = *usage;
                }
            }
        }
        for event in &chunk.events {
            self.event(event, out);
        }
    }

    /// Ends the stream: closes the open block and writes `message_delta` and
    /// `message_stop` (only `message_stop` after replayed upstream events).
    /// Does nothing the second time, or after an error.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.finished {
            return;
        }
        self.finished = true;
        if self.replayed {
            // The upstream stream ended without its `message_stop`; its own
            // `message_delta` (if any) already went out, so only the end is
            // missing.
            emit(out, &EventOut::MessageStop);
            return;
        }
        self.ensure_started(out);
        self.close_block(out);
        let (stop_reason, stop_sequence) = match &self.reason {
            Some(reason) => {
                let (reason, sequence) = stop_reason_out(reason);
                (Some(reason), sequence)
            }
            None => (None, None),
        };
        let message_delta = EventOut::MessageDelta {
            delta: MessageDeltaOut { stop_reason, stop_sequence },
            usage: UsageOut::from_canonical(&self.usage),
        };
        emit(out, &message_delta);
        emit(out, &EventOut::MessageStop);
    }

    /// Writes an `error` event; the stream ends with it.
    pub fn write_error(&mut self, error: &UpstreamErrorBody, out: &mut Vec<u8>) {
        let kind = error.kind.as_deref().unwrap_or("api_error");
        let body = ErrorBodyOut::new(kind, &error.message);
        write_event(out, Some("error"), &to_json_text(&body));
        self.finished = true;
    }

    fn event(&mut self, event: &StreamEvent, out: &mut Vec<u8>) {
        match event {
            StreamEvent::Start { id, model, .. } => {
                if !self.started {
                    self.id.clone_from(id);
                    self.model.clone_from(model);
                    self.ensure_started(out);
                }
            }
            StreamEvent::Delta { choice: 0, delta } => self.delta(delta, out),
            StreamEvent::Finish { choice: 0, reason } => {
                self.close_block(out);
                self.reason = Some(reason.clone());
            }
            StreamEvent::Usage(usage) => self.usage = *usage,
            StreamEvent::Delta { .. } | StreamEvent::Finish { .. } => {}
        }
    }

    fn delta(&mut self, delta: &Delta, out: &mut Vec<u8>) {
        match delta {
            Delta::Text(text) if !text.is_empty() => {
                let index = self.open_block(BlockKind::Text, out);
                emit_delta(out, index, DeltaOut::Text { text });
            }
            Delta::Thinking(thinking) if !thinking.is_empty() => {
                // One signature signs one block, so signed thinking never
                // takes more text (a client would send it back as invalid).
                if self.open.is_some_and(|open| open.signed) {
                    self.close_block(out);
                }
                let index = self.open_block(BlockKind::Thinking, out);
                emit_delta(out, index, DeltaOut::Thinking { thinking });
            }
            Delta::ThinkingSignature(signature) if !signature.is_empty() => {
                let index = self.open_block(BlockKind::Thinking, out);
                emit_delta(out, index, DeltaOut::Signature { signature });
                if let Some(open) = &mut self.open {
                    open.signed = true;
                }
            }
            Delta::ToolCallStart { index, id, name } => {
                self.ensure_started(out);
                self.close_block(out);
                let block = BlockOut::ToolUse { id, name, input: Value::Object(Map::new()) };
                self.start_block(BlockKind::Tool(*index), block, out);
            }
            // Anthropic blocks cannot be reopened, so arguments for a call
            // other than the open one are dropped. Every upstream we read
            // sends one call's arguments contiguously, so this does not occur.
            Delta::ToolCallArguments { index, fragment } if !fragment.is_empty() => {
                if let Some(open) = self.open
                    && open.kind == BlockKind::Tool(*index)
                {
                    let partial_json = fragment.as_str();
                    emit_delta(out, open.index, DeltaOut::InputJson { partial_json });
                }
            }
            Delta::Text(_)
            | Delta::Thinking(_)
            | Delta::ThinkingSignature(_)
            | Delta::ToolCallArguments { .. } => {}
        }
    }

    /// Makes a block of `kind` the open one and returns its index.
    fn open_block(&mut self, kind: BlockKind, out: &mut Vec<u8>) -> u32 {
        self.ensure_started(out);
        if let Some(open) = self.open
            && open.kind == kind
        {
            return open.index;
        }
        self.close_block(out);
        let block = match kind {
            BlockKind::Thinking => BlockOut::Thinking { thinking: "", signature: None },
            BlockKind::Text | BlockKind::Tool(_) => BlockOut::Text { text: "" },
        };
        self.start_block(kind, block, out)
    }

    fn start_block(&mut self, kind: BlockKind, block: BlockOut<'_>, out: &mut Vec<u8>) -> u32 {
        let index = self.next_index;
        self.next_index += 1;
        let start = EventOut::ContentBlockStart { index, content_block: block };
        emit(out, &start);
        self.open = Some(OpenBlock { kind, index, signed: false });
        index
    }

    fn close_block(&mut self, out: &mut Vec<u8>) {
        if let Some(open) = self.open.take() {
            emit(out, &EventOut::ContentBlockStop { index: open.index });
        }
    }

    /// Writes `message_start` once. Its usage is what is known so far (often
    /// nothing yet); the final counts come with `message_delta`.
    fn ensure_started(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        let mut usage = UsageOut::from_canonical(&self.usage);
        usage.output_tokens = 0;
        let start = EventOut::MessageStart {
            message: MessageOut {
                id: &self.id,
                kind: "message",
                role: "assistant",
                model: &self.model,
                content: Vec::new(),
                stop_reason: None,
                stop_sequence: None,
                usage,
            },
        };
        emit(out, &start);
    }
}

fn emit(out: &mut Vec<u8>, event: &EventOut<'_>) {
    write_event(out, Some(event.name()), &to_json_text(event));
}

fn emit_delta(out: &mut Vec<u8>, index: u32, delta: DeltaOut<'_>) {
    emit(out, &EventOut::ContentBlockDelta { index, delta });
}
