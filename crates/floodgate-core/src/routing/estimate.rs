//! Token estimates for reserving tpm capacity before a call.
//!
//! A call reserves its prompt plus the output it may produce (`max_tokens`,
//! or [`DEFAULT_OUTPUT_TOKENS`] when the client set none) against its key's
//! tokens-per-minute bucket, and the reservation is settled with the
//! upstream's own count when the call ends. The estimate therefore only has
//! to be close; but the closer it is, the less capacity sits reserved and
//! unused, and the fewer calls an upstream refuses because we let through
//! more than its bucket holds.
//!
//! How the prompt is counted depends on the target ([`Tokenizer::for_target`]):
//!
//! - **OpenAI models** (`openai` and `openai-compatible` providers serving a
//!   model tiktoken knows) are counted with the model's own BPE encoding,
//!   `o200k_base` or `cl100k_base` (tiktoken-rs), in the chat framing OpenAI
//!   documents in its cookbook ("How to count tokens with tiktoken"): 3
//!   tokens per message, its role, 1 more for a `name`, 3 to prime the
//!   reply, tools by the cookbook's function formula, 765 per image.
//! - **Everything else** — Anthropic, Gemini, the mock, unknown models behind
//!   an OpenAI-compatible server — gets [`Tokenizer::Approx`], the rule this
//!   module has always used: one token per four bytes of text (tool
//!   definitions as their JSON), 4 per message, 765 per image. Claude's and
//!   Gemini's tokenizers are not published for offline use — their
//!   providers count only through an API call, a round trip we will not add
//!   to every request — and four bytes a token is the usual rule of thumb for
//!   English (OpenAI's and Google's documentation both give it).
//!
//! Tokenizing is the dearest step on the request path: tiktoken reads 25–45
//! MB/s, so 4 KB of prompt costs more CPU than the rest of the request
//! (figures in `counter.rs`). Three things keep it in bounds:
//! [`ChatEstimate`] runs each tokenizer at most once per request, however
//! many targets it is tried on; counts of texts are cached per thread
//! (`cache.rs`), since system prompts and conversation history come back
//! turn after turn; and a request runs at most about 8 KiB of uncached text
//! through the tokenizer, texts over 4 KiB being counted on samples and text
//! past the budget at the ratio the request's own counted text showed
//! (`counter.rs`). The BPE tables load on first use (0.05–0.15 s and
//! 25–50 MB each); [`warm`] loads them at startup instead.

mod cache;
mod counter;
#[cfg(test)]
mod tests;

use std::sync::OnceLock;

use floodgate_protocol::{ChatRequest, EmbeddingInput, EmbeddingsRequest, Message, Part, Tool};
use serde_json::Value;
use tiktoken_rs::CoreBPE;
use tiktoken_rs::tokenizer::{Tokenizer as Encoding, get_tokenizer};

use self::counter::Counter;
use crate::config::ProviderKind;

/// Output reserved for a call without `max_tokens`.
pub const DEFAULT_OUTPUT_TOKENS: u32 = 256;

/// Which tokenizer counts a target's prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tokenizer {
    /// `o200k_base`: GPT-4o, GPT-4.1, GPT-5, the o-series.
    O200k,
    /// `cl100k_base`: GPT-4, GPT-3.5 Turbo, the text-embedding models.
    Cl100k,
    /// Four bytes per token: models whose tokenizer we do not have.
    Approx,
}

impl Tokenizer {
    const ALL: [Tokenizer; 3] = [Tokenizer::O200k, Tokenizer::Cl100k, Tokenizer::Approx];

    /// The tokenizer for `model` served by a provider of `kind`.
    ///
    /// OpenAI model names go through tiktoken-rs's own model table (exact
    /// names, dated snapshots by prefix, `ft:` fine-tunes by their base);
    /// names it does not list but whose family is known (`o4`, `o4-pro`,
    /// `gpt-4.5`, further `text-embedding-3-*`) are matched by prefix here. Anything else, and every provider kind other than
    /// `openai` and `openai-compatible`, is [`Tokenizer::Approx`].
    pub fn for_target(kind: ProviderKind, model: &str) -> Tokenizer {
        match kind {
            ProviderKind::Openai | ProviderKind::OpenaiCompatible => Tokenizer::for_openai(model),
            ProviderKind::Anthropic | ProviderKind::Gemini | ProviderKind::Mock => {
                Tokenizer::Approx
            }
        }
    }

    fn for_openai(model: &str) -> Tokenizer {
        match get_tokenizer(model) {
            Some(Encoding::O200kBase | Encoding::O200kHarmony) => Tokenizer::O200k,
            Some(Encoding::Cl100kBase) => Tokenizer::Cl100k,
            // Completions-era encodings: no chat endpoint serves those models.
            Some(Encoding::P50kBase | Encoding::P50kEdit | Encoding::R50kBase | Encoding::Gpt2) => {
                Tokenizer::Approx
            }
            None => {
                let o_series = ["o1", "o3", "o4"].iter().any(|family| {
                    model
                        .strip_prefix(family)
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with('-'))
                });
                if o_series || model.starts_with("gpt-4.5") {
                    Tokenizer::O200k
                } else if model.starts_with("text-embedding-3-") {
                    Tokenizer::Cl100k
                } else {
                    Tokenizer::Approx
                }
            }
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Tokenizer::O200k => "o200k_base",
            Tokenizer::Cl100k => "cl100k_base",
            Tokenizer::Approx => "approx",
        }
    }

    fn index(self) -> usize {
        match self {
            Tokenizer::O200k => 0,
            Tokenizer::Cl100k => 1,
            Tokenizer::Approx => 2,
        }
    }

    /// The process-wide BPE tables (tiktoken-rs's singletons, loaded on first use).
    fn bpe(self) -> Option<&'static CoreBPE> {
        match self {
            Tokenizer::O200k => Some(tiktoken_rs::o200k_base_singleton()),
            Tokenizer::Cl100k => Some(tiktoken_rs::cl100k_base_singleton()),
            Tokenizer::Approx => None,
        }
    }
}

/// Loads the BPE tables in the background so the first request does not pay
/// for it (call from startup; harmless if called twice: the tables load once
/// per process, and a second call only waits for the first).
pub fn warm(tokenizers: impl IntoIterator<Item = Tokenizer>) {
    let mut wanted = [false; Tokenizer::ALL.len()];
    for tokenizer in tokenizers {
        wanted[tokenizer.index()] = true;
    }
    let load: Vec<Tokenizer> = Tokenizer::ALL
        .into_iter()
        .filter(|t| wanted[t.index()] && *t != Tokenizer::Approx)
        .collect();
    if load.is_empty() {
        return;
    }
    let spawned = std::thread::Builder::new().name("tokenizer-warm".into()).spawn(move || {
        for tokenizer in load {
            tokenizer.bpe();
        }
    });
    if let Err(e) = spawned {
        // Not fatal: the first request that needs a table loads it.
        tracing::warn!(error = %e, "could not start loading the tokenizer tables");
    }
}

/// Estimates for one request, each tokenizer run at most once (lazily, cached
/// in the struct), because a request may be tried on targets with different
/// tokenizers.
pub struct ChatEstimate<'r> {
    req: &'r ChatRequest,
    /// Prompt tokens by [`Tokenizer::index`]. `OnceLock` rather than `Cell`
    /// keeps the estimate `Sync`, as the router's attempts must be.
    prompt: [OnceLock<u32>; Tokenizer::ALL.len()],
}

impl<'r> ChatEstimate<'r> {
    pub fn new(req: &'r ChatRequest) -> Self {
        ChatEstimate { req, prompt: Default::default() }
    }

    /// Prompt tokens as the upstream will count them (OpenAI's documented
    /// chat accounting: per-message overhead, role, name, content; tools;
    /// reply priming), for this tokenizer.
    pub fn prompt_tokens(&self, tokenizer: Tokenizer) -> u32 {
        *self.prompt[tokenizer.index()].get_or_init(|| prompt_tokens(self.req, tokenizer))
    }

    /// What to reserve against a tokens-per-minute bucket: prompt +
    /// `max_tokens` (or [`DEFAULT_OUTPUT_TOKENS`] when unset).
    pub fn reservation(&self, tokenizer: Tokenizer) -> u32 {
        self.prompt_tokens(tokenizer)
            .saturating_add(self.req.max_tokens.unwrap_or(DEFAULT_OUTPUT_TOKENS))
    }
}

impl std::fmt::Debug for ChatEstimate<'_> {
    // Counts only: the request's text must never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatEstimate")
            .field("messages", &self.req.messages.len())
            .field("prompt", &self.prompt)
            .finish()
    }
}

/// The reservation for `req` counted with [`Tokenizer::Approx`], for callers
/// that do not know the target yet (the router, until it asks per target).
pub fn chat(req: &ChatRequest) -> u32 {
    ChatEstimate::new(req).reservation(Tokenizer::Approx)
}

/// Tokens of an embeddings request's input; token-id inputs count exactly.
/// Embeddings have no framing and no output.
pub fn embeddings(req: &EmbeddingsRequest, tokenizer: Tokenizer) -> u32 {
    match &req.input {
        EmbeddingInput::Tokens(tokens) => saturate(tokens.iter().map(Vec::len).sum::<usize>()),
        EmbeddingInput::Texts(texts) => match tokenizer.bpe() {
            // Documents are rarely embedded twice: counted past the cache, so
            // that a large batch does not evict the chat prompts from it.
            Some(bpe) => {
                let counter = Counter::new(tokenizer, bpe, false);
                saturate(texts.iter().map(|text| counter.count(text)).sum::<u64>())
            }
            None => approx::text(texts.iter().map(String::len).sum()),
        },
    }
}

fn prompt_tokens(req: &ChatRequest, tokenizer: Tokenizer) -> u32 {
    #[cfg(test)]
    tests::probe::prompt_counted();
    match tokenizer.bpe() {
        Some(bpe) => Framing { counter: Counter::new(tokenizer, bpe, true), tokenizer }.prompt(req),
        None => approx::prompt(req),
    }
}

fn saturate<N: TryInto<u32>>(n: N) -> u32 {
    n.try_into().unwrap_or(u32::MAX)
}

/// The rule for models without a tokenizer, unchanged from before tokenizers
/// came: bytes of text over four, 4 tokens per message.
mod approx {
    use floodgate_protocol::{ChatRequest, Part};

    use super::{IMAGE_TOKENS, saturate};

    const PER_MESSAGE: u32 = 4;

    pub(super) fn text(bytes: usize) -> u32 {
        saturate(bytes.div_ceil(4))
    }

    pub(super) fn prompt(req: &ChatRequest) -> u32 {
        let mut bytes = 0usize;
        for message in &req.messages {
            for part in &message.content {
                bytes += part_bytes(part);
            }
        }
        for tool in &req.tools {
            bytes += tool.name.len()
                + tool.description.as_ref().map_or(0, String::len)
                + tool.parameters.to_string().len();
        }
        text(bytes).saturating_add(saturate(req.messages.len()).saturating_mul(PER_MESSAGE))
    }

    fn part_bytes(part: &Part) -> usize {
        match part {
            Part::Text { text } | Part::Thinking { text, .. } => text.len(),
            Part::Image { .. } => 4 * IMAGE_TOKENS as usize,
            Part::ToolCall { name, arguments, .. } => name.len() + arguments.len(),
            Part::ToolResult { content, .. } => content.iter().map(part_bytes).sum(),
        }
    }
}

/// A flat charge per image. OpenAI bills an image by its size and detail
/// (85 tokens plus 170 per 512-pixel tile); the body carries only a URL or
/// the encoded bytes, so charge a 1024×1024 image in high detail.
const IMAGE_TOKENS: u32 = 765;

/// OpenAI's chat framing, from the cookbook ("How to count tokens with
/// tiktoken", section 6): every message is `<|start|>{role}<|message|>{content}<|end|>`.
const PER_MESSAGE: u64 = 3;
/// A `name` adds itself and one token.
const PER_NAME: u64 = 1;
/// Every reply is primed with `<|start|>assistant<|message|>`.
const REPLY_PRIMING: u64 = 3;
/// Every role name (`system`, `user`, `assistant`, `tool`) is one token in
/// both encodings, so they are not run through the tokenizer.
const ROLE: u64 = 1;
/// Framing of an assistant's tool call beyond its name and arguments; the
/// cookbook gives none, and tiktoken-rs's `num_tokens_from_messages` uses 1.
const PER_TOOL_CALL: u64 = 1;

/// OpenAI's chat framing around one request's texts, counted by `counter`.
/// Sums are kept in 64 bits and saturated once, at the end.
struct Framing {
    counter: Counter,
    tokenizer: Tokenizer,
}

impl Framing {
    fn count(&self, text: &str) -> u64 {
        self.counter.count(text)
    }

    fn prompt(&self, req: &ChatRequest) -> u32 {
        let mut total = REPLY_PRIMING;
        for message in &req.messages {
            total += self.message(message);
        }
        if !req.tools.is_empty() {
            total += self.tools(&req.tools);
        }
        u32::try_from(total).unwrap_or(u32::MAX)
    }

    fn message(&self, message: &Message) -> u64 {
        let mut total = PER_MESSAGE + ROLE;
        if let Some(name) = &message.name {
            total += self.count(name) + PER_NAME;
        }
        for part in &message.content {
            total += self.part(part);
        }
        total
    }

    fn part(&self, part: &Part) -> u64 {
        match part {
            Part::Text { text } => self.count(text),
            Part::Image { .. } => u64::from(IMAGE_TOKENS),
            Part::ToolCall { name, arguments, .. } => {
                self.count(name) + self.count(arguments) + PER_TOOL_CALL
            }
            Part::ToolResult { content, .. } => content.iter().map(|part| self.part(part)).sum(),
            // The OpenAI writer drops reasoning: OpenAI cannot take it back.
            Part::Thinking { .. } => 0,
        }
    }

    /// The cookbook's formula for function tools (section 7), which matches
    /// the API's counts for flat parameter objects. OpenAI renders tools as
    /// TypeScript-like declarations; the formula charges each function and
    /// property a fixed overhead plus its `name:description` (or
    /// `name:type:description`) line and its enum values. Whatever else a
    /// property holds (nested properties, array items, formats) is charged
    /// as its JSON: OpenAI renders that too, and the formula does not say how.
    fn tools(&self, tools: &[Tool]) -> u64 {
        // The enum overhead is negative: listing values replaces the type.
        const PER_PROPERTIES: u64 = 3;
        const PER_PROPERTY: u64 = 3;
        const PER_ENUM_ITEM: u64 = 3;
        const ENUM_SAVES: u64 = 3;
        const END: u64 = 12;
        let per_function: u64 = match self.tokenizer {
            Tokenizer::Cl100k => 10,
            // (`Approx` never gets here: it has no framing of its own.)
            Tokenizer::O200k | Tokenizer::Approx => 7,
        };
        let mut total = END;
        let mut line = String::new();
        for tool in tools {
            total += per_function;
            line.clear();
            line.push_str(&tool.name);
            if let Some(description) = &tool.description {
                line.push(':');
                line.push_str(description.strip_suffix('.').unwrap_or(description));
            }
            total += self.count(&line);
            let Some(properties) = tool.parameters.get("properties").and_then(Value::as_object)
            else {
                continue;
            };
            if properties.is_empty() {
                continue;
            }
            total += PER_PROPERTIES;
            for (name, schema) in properties {
                total += PER_PROPERTY;
                line.clear();
                line.push_str(name);
                line.push(':');
                match schema.get("type") {
                    Some(Value::String(ty)) => line.push_str(ty),
                    Some(other) => line.push_str(&other.to_string()),
                    None => {}
                }
                line.push(':');
                if let Some(description) = schema.get("description").and_then(Value::as_str) {
                    line.push_str(description.strip_suffix('.').unwrap_or(description));
                }
                total += self.count(&line);
                if let Some(items) = schema.get("enum").and_then(Value::as_array) {
                    for item in items {
                        total += PER_ENUM_ITEM;
                        total += match item {
                            Value::String(item) => self.count(item),
                            other => self.count(&other.to_string()),
                        };
                    }
                    total = total.saturating_sub(ENUM_SAVES);
                }
                let Some(schema) = schema.as_object() else { continue };
                for (key, value) in schema {
                    if !matches!(key.as_str(), "type" | "description" | "enum") {
                        total += self.count(key) + self.count(&value.to_string());
                    }
                }
            }
        }
        total
    }
}
