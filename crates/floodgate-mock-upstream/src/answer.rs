//! The deterministic content of default answers: the word list, token counting, and the choice
//! between a text answer and a tool call.
//!
//! Everything here is provider-neutral; each provider module reads its own request fields and
//! asks these functions what to answer.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// The words of default answers, used in order and cyclically.
pub const WORDS: [&str; 16] = [
    "mock",
    "reply",
    "from",
    "the",
    "floodgate",
    "upstream",
    "with",
    "steady",
    "words",
    "for",
    "tests",
    "and",
    "benchmarks",
    "of",
    "every",
    "gateway",
];

/// [`WORDS`] with the leading space every piece after the first carries.
const SPACED: [&str; 16] = [
    " mock",
    " reply",
    " from",
    " the",
    " floodgate",
    " upstream",
    " with",
    " steady",
    " words",
    " for",
    " tests",
    " and",
    " benchmarks",
    " of",
    " every",
    " gateway",
];

/// The arguments of every default tool call.
pub const TOOL_ARGUMENTS: &str = r#"{"mock":true}"#;

/// The two pieces [`TOOL_ARGUMENTS`] is streamed in.
pub(crate) const TOOL_ARGUMENT_PARTS: [&str; 2] = [r#"{"mock":"#, "true}"];

/// Completion tokens reported for a tool call: `ceil(len(TOOL_ARGUMENTS) / 4)`.
pub const TOOL_CALL_COMPLETION_TOKENS: u64 = 4;

/// The `index`-th streamed piece of a default answer: the first word bare, later ones with a
/// leading space.
pub(crate) fn piece(index: usize) -> &'static str {
    if index == 0 { WORDS[0] } else { SPACED[index % SPACED.len()] }
}

/// The whole default answer of `words` words, i.e. the streamed pieces joined.
pub fn answer_text(words: usize) -> String {
    let mut text = String::with_capacity(words * 8);
    for index in 0..words {
        text.push_str(piece(index));
    }
    text
}

/// Prompt tokens for a request whose text has `chars` characters: `ceil(chars / 4)`, at least 1.
pub fn prompt_tokens(chars: usize) -> u64 {
    u64::try_from(chars.div_ceil(4)).unwrap_or(u64::MAX).max(1)
}

/// Characters of the text in a request fragment.
///
/// Strings count; arrays are summed; in objects only the `text`, `content` and `parts` members
/// count. This covers OpenAI messages (string or text-part content, tool results), Anthropic
/// `system` and messages (text blocks, tool results) and Gemini contents (text parts), and skips
/// roles, ids, images and tool arguments.
pub(crate) fn text_chars(value: &Value) -> usize {
    match value {
        Value::String(text) => text.chars().count(),
        Value::Array(items) => items.iter().map(text_chars).sum(),
        Value::Object(map) => ["text", "content", "parts"]
            .iter()
            .filter_map(|key| map.get(*key))
            .map(text_chars)
            .sum(),
        _ => 0,
    }
}

/// What a default answer is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    /// `words` words of [`WORDS`]; `truncated` when a max-tokens limit cut them short.
    Text { words: usize, truncated: bool },
    /// A call of this tool with [`TOOL_ARGUMENTS`].
    Tool { name: String },
}

impl Reply {
    /// A text answer of the configured length, cut to `max_tokens` words if that is smaller.
    pub(crate) fn text(chunks: usize, max_tokens: Option<u64>) -> Reply {
        let limit = max_tokens.map_or(usize::MAX, |max| usize::try_from(max).unwrap_or(usize::MAX));
        Reply::Text { words: chunks.min(limit), truncated: limit < chunks }
    }

    /// Completion tokens this answer reports.
    pub(crate) fn completion_tokens(&self) -> u64 {
        match self {
            Reply::Text { words, .. } => u64::try_from(*words).unwrap_or(u64::MAX),
            Reply::Tool { .. } => TOOL_CALL_COMPLETION_TOKENS,
        }
    }
}

/// The tool a default answer calls: none when tools are absent, disabled, or the last turn is
/// not a plain user turn; else the forced tool, else the first one offered.
pub(crate) fn tool_to_call(
    last_turn_is_user: bool,
    disabled: bool,
    forced: Option<&str>,
    first: Option<&str>,
) -> Option<String> {
    if !last_turn_is_user || disabled {
        return None;
    }
    forced.or(first).map(str::to_owned)
}

/// Seconds since the Unix epoch, for `created` fields.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs())
}

/// A member as a string, if it is one.
pub(crate) fn str_field<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn spaced_words_match_words() {
        for (word, spaced) in WORDS.iter().zip(SPACED) {
            assert_eq!(format!(" {word}"), spaced);
        }
    }

    #[test]
    fn answer_text_cycles_words() {
        assert_eq!(answer_text(0), "");
        assert_eq!(answer_text(3), "mock reply from");
        let long = answer_text(18);
        assert!(long.ends_with(" gateway mock reply"), "{long}");
    }

    #[test]
    fn prompt_tokens_rounds_up_with_a_floor_of_one() {
        assert_eq!(prompt_tokens(0), 1);
        assert_eq!(prompt_tokens(4), 1);
        assert_eq!(prompt_tokens(5), 2);
        assert_eq!(prompt_tokens(400), 100);
    }

    #[test]
    fn text_chars_counts_only_text() {
        let messages = json!([
            {"role": "system", "content": "abcd"},
            {"role": "user", "content": [{"type": "text", "text": "ef"}, {"type": "image_url", "image_url": {"url": "http://x"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": "ghi"}]}]},
            {"role": "user", "parts": [{"text": "é"}, {"functionResponse": {"name": "f", "response": {"content": "zz"}}}]}
        ]);
        assert_eq!(text_chars(&messages), 4 + 2 + 3 + 1);
    }

    #[test]
    fn reply_text_truncates_to_max_tokens() {
        assert_eq!(Reply::text(20, None), Reply::Text { words: 20, truncated: false });
        assert_eq!(Reply::text(20, Some(20)), Reply::Text { words: 20, truncated: false });
        assert_eq!(Reply::text(20, Some(5)), Reply::Text { words: 5, truncated: true });
    }

    #[test]
    fn tool_choice_rules() {
        assert_eq!(tool_to_call(true, false, None, Some("a")), Some("a".to_owned()));
        assert_eq!(tool_to_call(true, false, Some("b"), Some("a")), Some("b".to_owned()));
        assert_eq!(tool_to_call(false, false, None, Some("a")), None);
        assert_eq!(tool_to_call(true, true, None, Some("a")), None);
        assert_eq!(tool_to_call(true, false, None, None), None);
    }
}
