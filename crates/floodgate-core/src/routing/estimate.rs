//! Token estimates for reserving rpm/tpm capacity before a call.
//!
//! The estimate only has to be close: the reservation is settled with the
//! upstream's own count when the call ends. Text is counted as one token per
//! four characters (the usual rule of thumb for English with BPE tokenizers;
//! a real tokenizer comes with per-model key pools), plus a small overhead per
//! message, plus the output the call may produce: `max_tokens`, or
//! [`DEFAULT_OUTPUT_TOKENS`] when the client set none.

use floodgate_protocol::{ChatRequest, EmbeddingInput, EmbeddingsRequest, Part};

/// Output reserved for a call without `max_tokens`.
pub const DEFAULT_OUTPUT_TOKENS: u32 = 256;
/// Role and framing tokens per message, as OpenAI's chat format spends them.
const PER_MESSAGE: u32 = 4;

fn text_tokens(chars: usize) -> u32 {
    u32::try_from(chars.div_ceil(4)).unwrap_or(u32::MAX)
}

pub fn chat(req: &ChatRequest) -> u32 {
    let mut chars = 0usize;
    for message in &req.messages {
        for part in &message.content {
            chars += part_chars(part);
        }
    }
    for tool in &req.tools {
        chars += tool.name.len()
            + tool.description.as_ref().map_or(0, String::len)
            + tool.parameters.to_string().len();
    }
    let messages = u32::try_from(req.messages.len()).unwrap_or(u32::MAX);
    text_tokens(chars)
        .saturating_add(messages.saturating_mul(PER_MESSAGE))
        .saturating_add(req.max_tokens.unwrap_or(DEFAULT_OUTPUT_TOKENS))
}

fn part_chars(part: &Part) -> usize {
    match part {
        Part::Text { text } | Part::Thinking { text, .. } => text.len(),
        // Providers bill images by size; a flat charge keeps the estimate honest enough.
        Part::Image { .. } => 4 * 765,
        Part::ToolCall { name, arguments, .. } => name.len() + arguments.len(),
        Part::ToolResult { content, .. } => content.iter().map(part_chars).sum(),
    }
}

pub fn embeddings(req: &EmbeddingsRequest) -> u32 {
    match &req.input {
        EmbeddingInput::Texts(texts) => text_tokens(texts.iter().map(String::len).sum()),
        EmbeddingInput::Tokens(tokens) => {
            u32::try_from(tokens.iter().map(Vec::len).sum::<usize>()).unwrap_or(u32::MAX)
        }
    }
}

#[cfg(test)]
mod tests {
    use floodgate_protocol::{Message, Role};

    use super::*;

    #[test]
    fn chat_estimate_counts_text_messages_and_output() {
        let req = ChatRequest {
            messages: vec![
                Message::text(Role::System, "abcd"),
                Message::text(Role::User, "abcdefgh"),
            ],
            max_tokens: Some(100),
            ..ChatRequest::default()
        };
        assert_eq!(chat(&req), 3 + 2 * 4 + 100);
        let req = ChatRequest { max_tokens: None, ..req };
        assert_eq!(chat(&req), 3 + 8 + DEFAULT_OUTPUT_TOKENS);
    }

    #[test]
    fn embeddings_estimate() {
        let req = EmbeddingsRequest {
            input: EmbeddingInput::Texts(vec!["abcde".into(), "abc".into()]),
            ..Default::default()
        };
        assert_eq!(embeddings(&req), 2);
        let req = EmbeddingsRequest {
            input: EmbeddingInput::Tokens(vec![vec![1, 2, 3]]),
            ..Default::default()
        };
        assert_eq!(embeddings(&req), 3);
    }
}
