//! Converting between a complete answer and the canonical stream events of
//! the same answer, for the response cache.
//!
//! [`StreamCollector`] assembles the events a stream decoder produced (from
//! any upstream format) back into a [`ChatResponse`], so a streamed answer
//! can be stored. [`replay_chunks`] goes the other way: a stored answer
//! becomes the events a provider would have streamed, which the client
//! format's `StreamWriter` then writes as an ordinary stream.
//!
//! The two are exact inverses for answers in the shape streams produce: no
//! two text parts in a row, and no thinking part without a signature right
//! before another thinking part (a stream cannot tell such parts apart, so
//! they come back as one).

use std::collections::BTreeMap;

use crate::canonical::*;

/// The canonical stream of a complete answer: `Start`; for each choice in
/// index order its parts as deltas (one per part; thinking also gets its
/// signature, a tool call its start and its arguments) and its `Finish`;
/// then `Usage`, and a last, empty chunk marked `done`.
///
/// Every chunk holds one event and no native event, so the client's writer
/// synthesises its own stream from them. Parts an answer does not carry
/// (images, tool results) have no delta and are left out. A choice without a
/// finish reason finishes with [`FinishReason::Stop`].
pub fn replay_chunks(resp: &ChatResponse) -> Vec<StreamChunk> {
    let mut events = vec![StreamEvent::Start {
        id: resp.id.clone(),
        model: resp.model.clone(),
        created: resp.created,
    }];
    let mut choices: Vec<&Choice> = resp.choices.iter().collect();
    choices.sort_by_key(|choice| choice.index);
    for choice in choices {
        choice_events(choice, &mut events);
    }
    events.push(StreamEvent::Usage(resp.usage));
    let mut chunks: Vec<StreamChunk> = events
        .into_iter()
        .map(|event| StreamChunk { events: vec![event], native: None, done: false })
        .collect();
    // The usage also rides with the start, as Anthropic's `message_start`
    // carries the input tokens (its writer reads a chunk's usage first).
    chunks[0].events.push(StreamEvent::Usage(resp.usage));
    chunks.push(StreamChunk { events: Vec::new(), native: None, done: true });
    chunks
}

fn choice_events(choice: &Choice, events: &mut Vec<StreamEvent>) {
    let mut push = |delta: Delta| events.push(StreamEvent::Delta { choice: choice.index, delta });
    let mut calls = 0;
    for part in &choice.message.content {
        match part {
            Part::Text { text } => push(Delta::Text(text.clone())),
            Part::Thinking { text, signature } => {
                push(Delta::Thinking(text.clone()));
                if let Some(signature) = signature {
                    push(Delta::ThinkingSignature(signature.clone()));
                }
            }
            Part::ToolCall { id, name, arguments } => {
                let index = calls;
                calls += 1;
                push(Delta::ToolCallStart { index, id: id.clone(), name: name.clone() });
                // The start alone gives the call empty arguments.
                if !arguments.is_empty() {
                    push(Delta::ToolCallArguments { index, fragment: arguments.clone() });
                }
            }
            Part::Image { .. } | Part::ToolResult { .. } => {}
        }
    }
    let reason = choice.finish_reason.clone().unwrap_or(FinishReason::Stop);
    events.push(StreamEvent::Finish { choice: choice.index, reason });
}

/// Assembles a stream's canonical events into the complete answer.
///
/// Deltas become parts in order of arrival: consecutive text deltas make
/// one text part, thinking deltas and the signature after them one thinking
/// part, and tool calls are kept by index with their argument fragments
/// joined. The last usage snapshot is the answer's.
///
/// [`StreamCollector::finish`] gives an answer only when the stream was a
/// whole one, because a cached answer is replayed as if it were complete.
#[derive(Debug, Default)]
pub struct StreamCollector {
    start: Option<Header>,
    /// By choice index, so the answer lists them in order.
    choices: BTreeMap<u32, ChoiceDraft>,
    usage: Usage,
    /// Arguments came for a tool call that never started: the answer
    /// cannot say which call they belong to.
    broken: bool,
}

#[derive(Debug)]
struct Header {
    id: String,
    model: String,
    created: u64,
}

#[derive(Debug, Default)]
struct ChoiceDraft {
    parts: Vec<Part>,
    /// Tool call index to position in `parts`.
    calls: BTreeMap<u32, usize>,
    finish_reason: Option<FinishReason>,
}

impl StreamCollector {
    pub fn push(&mut self, chunk: &StreamChunk) {
        for event in &chunk.events {
            self.event(event);
        }
    }

    /// The answer, or `None` when the stream was not a complete one: it
    /// never started, it has no choice, a choice never finished, or a tool
    /// call's arguments came without its start.
    pub fn finish(self) -> Option<ChatResponse> {
        let header = self.start?;
        if self.broken
            || self.choices.is_empty()
            || self.choices.values().any(|draft| draft.finish_reason.is_none())
        {
            return None;
        }
        let choices = self
            .choices
            .into_iter()
            .map(|(index, draft)| Choice {
                index,
                message: Message { role: Role::Assistant, content: draft.parts, name: None },
                finish_reason: draft.finish_reason,
            })
            .collect();
        Some(ChatResponse {
            id: header.id,
            model: header.model,
            created: header.created,
            choices,
            usage: self.usage,
            native: None,
        })
    }

    fn event(&mut self, event: &StreamEvent) {
        match event {
            // Only the first start names the answer, as for the writers.
            StreamEvent::Start { id, model, created } => {
                if self.start.is_none() {
                    self.start =
                        Some(Header { id: id.clone(), model: model.clone(), created: *created });
                }
            }
            StreamEvent::Delta { choice, delta } => {
                if !self.choices.entry(*choice).or_default().delta(delta) {
                    self.broken = true;
                }
            }
            StreamEvent::Finish { choice, reason } => {
                self.choices.entry(*choice).or_default().finish_reason = Some(reason.clone());
            }
            StreamEvent::Usage(usage) => self.usage = *usage,
        }
    }
}

impl ChoiceDraft {
    /// Adds a delta; `false` when it belongs to no part the answer can hold.
    fn delta(&mut self, delta: &Delta) -> bool {
        match delta {
            Delta::Text(text) => match self.parts.last_mut() {
                Some(Part::Text { text: last }) => last.push_str(text),
                _ => self.parts.push(Part::Text { text: text.clone() }),
            },
            // A signature closes its thinking block: thinking after it is a new block.
            Delta::Thinking(text) => match self.parts.last_mut() {
                Some(Part::Thinking { text: last, signature: None }) => last.push_str(text),
                _ => self.parts.push(Part::Thinking { text: text.clone(), signature: None }),
            },
            Delta::ThinkingSignature(fragment) => match self.parts.last_mut() {
                Some(Part::Thinking { signature: Some(signature), .. }) => {
                    signature.push_str(fragment);
                }
                Some(Part::Thinking { signature, .. }) => *signature = Some(fragment.clone()),
                _ => self.parts.push(Part::Thinking {
                    text: String::new(),
                    signature: Some(fragment.clone()),
                }),
            },
            // The decoders start each call once; a repeated start adds nothing.
            Delta::ToolCallStart { index, id, name } => {
                if !self.calls.contains_key(index) {
                    self.calls.insert(*index, self.parts.len());
                    self.parts.push(Part::ToolCall {
                        id: id.clone(),
                        name: name.clone(),
                        arguments: String::new(),
                    });
                }
            }
            Delta::ToolCallArguments { index, fragment } => {
                let call = self.calls.get(index).and_then(|&at| self.parts.get_mut(at));
                match call {
                    Some(Part::ToolCall { arguments, .. }) => arguments.push_str(fragment),
                    _ => return false,
                }
            }
        }
        true
    }
}

#[cfg(test)]
mod tests;
