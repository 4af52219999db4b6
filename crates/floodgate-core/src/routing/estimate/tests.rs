use floodgate_protocol::{ImageSource, Role};
use serde_json::json;

use super::counter::{BUDGET, EXACT_MAX, WINDOW, WINDOWS};
use super::*;

/// Per-thread counters the code under test bumps (each test runs on its own
/// thread, and reads differences anyway).
pub(super) mod probe {
    use std::cell::Cell;

    thread_local! {
        static PROMPTS: Cell<u32> = const { Cell::new(0) };
        static TOKENIZED: Cell<usize> = const { Cell::new(0) };
    }

    pub(in crate::routing::estimate) fn prompt_counted() {
        PROMPTS.with(|n| n.set(n.get() + 1));
    }

    pub(in crate::routing::estimate) fn tokenized(bytes: usize) {
        TOKENIZED.with(|n| n.set(n.get() + bytes));
    }

    pub(super) fn prompts() -> u32 {
        PROMPTS.with(Cell::get)
    }

    pub(super) fn tokenized_bytes() -> usize {
        TOKENIZED.with(Cell::get)
    }
}

const BPES: [Tokenizer; 2] = [Tokenizer::O200k, Tokenizer::Cl100k];

fn count(tokenizer: Tokenizer, text: &str) -> u64 {
    Counter::new(tokenizer, tokenizer.bpe().unwrap(), true).count(text)
}

fn named(role: Role, name: &str, text: &str) -> Message {
    Message { name: Some(name.into()), ..Message::text(role, text) }
}

const PROSE: &str = "Floodgate reads each request into one canonical shape, resolves its \
model name to an ordered list of targets, and calls them in turn. When an upstream answers \
429, the key rests until its window reopens; when it fails outright, the next target is \
tried. Tokens are reserved before the call and settled afterwards with the count the \
upstream reports, so a rough estimate costs capacity, not correctness. ";

/// `len` bytes of prose, different for each `seed`.
fn prose(seed: usize, len: usize) -> String {
    let mut text = format!("Document {seed}. ");
    while text.len() < len {
        text.push_str(PROSE);
        text.push_str(&format!("Section {}. ", text.len() * seed % 9973));
    }
    text.truncate(len);
    text
}

#[test]
fn known_counts_of_fixed_strings() {
    // tiktoken's own examples (OpenAI cookbook, "How to count tokens with tiktoken").
    for tokenizer in BPES {
        assert_eq!(count(tokenizer, "hello world"), 2, "{}", tokenizer.as_str());
        assert_eq!(count(tokenizer, "tiktoken is great!"), 6, "{}", tokenizer.as_str());
    }
    assert_eq!(count(Tokenizer::Cl100k, "お誕生日おめでとう"), 9);
    assert_eq!(count(Tokenizer::O200k, "お誕生日おめでとう"), 8);
    // Special tokens in client text are ordinary text, as the API treats them.
    assert!(count(Tokenizer::O200k, "<|endoftext|>") > 1);
}

#[test]
fn every_role_is_one_token() {
    // `ROLE` relies on it (OpenAI writes `System` as "system").
    for tokenizer in BPES {
        for role in ["system", "developer", "user", "assistant", "tool"] {
            assert_eq!(count(tokenizer, role), 1, "{role} in {}", tokenizer.as_str());
        }
    }
}

/// The cookbook's example conversation, with the counts the OpenAI API
/// reported for it: 129 for gpt-3.5-turbo and gpt-4, 124 for gpt-4o and
/// gpt-4o-mini.
#[test]
fn cookbook_messages_count_as_the_api_did() {
    let req = ChatRequest {
        messages: vec![
            Message::text(
                Role::System,
                "You are a helpful, pattern-following assistant that translates corporate \
                 jargon into plain English.",
            ),
            named(Role::System, "example_user", "New synergies will help drive top-line growth."),
            named(
                Role::System,
                "example_assistant",
                "Things working well together will increase revenue.",
            ),
            named(
                Role::System,
                "example_user",
                "Let's circle back when we have more bandwidth to touch base on opportunities \
                 for increased leverage.",
            ),
            named(
                Role::System,
                "example_assistant",
                "Let's talk later when we're less busy about how to do better.",
            ),
            Message::text(
                Role::User,
                "This late pivot means we don't have time to boil the ocean for the client \
                 deliverable.",
            ),
        ],
        max_tokens: Some(1),
        ..ChatRequest::default()
    };
    let estimate = ChatEstimate::new(&req);
    assert_eq!(estimate.prompt_tokens(Tokenizer::Cl100k), 129);
    assert_eq!(estimate.prompt_tokens(Tokenizer::O200k), 124);
    assert_eq!(estimate.reservation(Tokenizer::O200k), 125);
}

/// The cookbook's tool example (section 7): 105 prompt tokens on
/// gpt-3.5-turbo and gpt-4, 101 on gpt-4o and gpt-4o-mini, by the API.
#[test]
fn cookbook_tools_count_as_the_api_did() {
    let req = ChatRequest {
        messages: vec![
            Message::text(
                Role::System,
                "You are a helpful assistant that can answer to questions about the weather.",
            ),
            Message::text(Role::User, "What's the weather like in San Francisco?"),
        ],
        tools: vec![Tool {
            name: "get_current_weather".into(),
            description: Some("Get the current weather in a given location".into()),
            parameters: json!({
                "type": "object",
                "properties": {
                    "location": {
                        "type": "string",
                        "description": "The city and state, e.g. San Francisco, CA",
                    },
                    "unit": {
                        "type": "string",
                        "description": "The unit of temperature to return",
                        "enum": ["celsius", "fahrenheit"],
                    },
                },
                "required": ["location"],
            }),
            strict: None,
        }],
        ..ChatRequest::default()
    };
    let estimate = ChatEstimate::new(&req);
    assert_eq!(estimate.prompt_tokens(Tokenizer::Cl100k), 105);
    assert_eq!(estimate.prompt_tokens(Tokenizer::O200k), 101);
}

#[test]
fn nested_tool_schemas_are_charged_beyond_the_formula() {
    let tool = |items: Value| Tool {
        name: "search".into(),
        description: None,
        parameters: json!({"type": "object", "properties": {"filters": items}}),
        strict: None,
    };
    let flat = ChatRequest { tools: vec![tool(json!({"type": "array"}))], ..Default::default() };
    let nested = ChatRequest {
        tools: vec![tool(json!({
            "type": "array",
            "items": {"type": "object", "properties": {"field": {"type": "string"}}},
        }))],
        ..Default::default()
    };
    for tokenizer in BPES {
        let flat = ChatEstimate::new(&flat).prompt_tokens(tokenizer);
        let nested = ChatEstimate::new(&nested).prompt_tokens(tokenizer);
        assert!(nested > flat + 10, "{nested} vs {flat}");
    }
}

#[test]
fn parts_names_tool_calls_and_images() {
    let req = ChatRequest {
        messages: vec![
            Message {
                role: Role::User,
                content: vec![
                    Part::Text { text: "hello world".into() },
                    Part::Image { source: ImageSource::Url("https://example.com/a.png".into()) },
                ],
                name: None,
            },
            Message {
                role: Role::Assistant,
                content: vec![
                    Part::Thinking { text: "a long thought ".repeat(50), signature: None },
                    Part::ToolCall {
                        id: "call_1".into(),
                        name: "lookup".into(),
                        arguments: r#"{"q":"hello world"}"#.into(),
                    },
                ],
                name: None,
            },
            Message {
                role: Role::Tool,
                content: vec![Part::ToolResult {
                    tool_call_id: "call_1".into(),
                    content: vec![Part::Text { text: "hello world".into() }],
                    is_error: false,
                }],
                name: None,
            },
        ],
        ..ChatRequest::default()
    };
    for tokenizer in BPES {
        let args = count(tokenizer, r#"{"q":"hello world"}"#);
        let lookup = count(tokenizer, "lookup");
        // Three messages of 3 + role, the text twice, one image, the call
        // (name, arguments, 1), thinking nothing (OpenAI does not take it), priming.
        let expected = 3 * 4 + 2 * 2 + 765 + lookup + args + 1 + 3;
        assert_eq!(u64::from(ChatEstimate::new(&req).prompt_tokens(tokenizer)), expected);
    }
}

#[test]
fn tokenizer_for_target() {
    use ProviderKind::{Anthropic, Gemini, Mock, Openai, OpenaiCompatible};
    for (kind, model, expected) in [
        (Openai, "gpt-4o", Tokenizer::O200k),
        (Openai, "gpt-4o-mini-2024-07-18", Tokenizer::O200k),
        (Openai, "chatgpt-4o-latest", Tokenizer::O200k),
        (Openai, "gpt-4.1-nano", Tokenizer::O200k),
        (Openai, "gpt-4.5-preview", Tokenizer::O200k),
        (Openai, "gpt-5", Tokenizer::O200k),
        (Openai, "gpt-5.2-codex", Tokenizer::O200k),
        (Openai, "o1", Tokenizer::O200k),
        (Openai, "o3-mini", Tokenizer::O200k),
        (Openai, "o4-mini", Tokenizer::O200k),
        (Openai, "o4", Tokenizer::O200k),
        (Openai, "o4-pro", Tokenizer::O200k),
        (Openai, "gpt-oss-120b", Tokenizer::O200k),
        (Openai, "ft:gpt-4o-mini:acme:support:abc123", Tokenizer::O200k),
        (OpenaiCompatible, "gpt-4o", Tokenizer::O200k),
        (Openai, "gpt-4", Tokenizer::Cl100k),
        (Openai, "gpt-4-turbo", Tokenizer::Cl100k),
        (Openai, "gpt-3.5-turbo", Tokenizer::Cl100k),
        (Openai, "gpt-3.5-turbo-0125", Tokenizer::Cl100k),
        (Openai, "gpt-35-turbo", Tokenizer::Cl100k),
        (Openai, "text-embedding-3-small", Tokenizer::Cl100k),
        (Openai, "text-embedding-3-large", Tokenizer::Cl100k),
        (Openai, "text-embedding-ada-002", Tokenizer::Cl100k),
        // Completions-era encodings and names nobody knows.
        (Openai, "text-davinci-003", Tokenizer::Approx),
        (Openai, "o5x", Tokenizer::Approx),
        (OpenaiCompatible, "llama-3.1-70b-instruct", Tokenizer::Approx),
        (OpenaiCompatible, "mistral-large", Tokenizer::Approx),
        // The provider decides first: these are not OpenAI's tokenizers.
        (Anthropic, "claude-sonnet-4-5", Tokenizer::Approx),
        (Gemini, "gemini-2.5-flash", Tokenizer::Approx),
        (Anthropic, "gpt-4o", Tokenizer::Approx),
        (Mock, "gpt-4o", Tokenizer::Approx),
    ] {
        assert_eq!(Tokenizer::for_target(kind, model), expected, "{} {model}", kind.as_str());
    }
    assert_eq!(Tokenizer::O200k.as_str(), "o200k_base");
    assert_eq!(Tokenizer::Cl100k.as_str(), "cl100k_base");
    assert_eq!(Tokenizer::Approx.as_str(), "approx");
}

#[test]
fn each_tokenizer_runs_once_per_request_and_only_when_asked() {
    let req = ChatRequest {
        messages: vec![Message::text(Role::User, prose(1, 500))],
        ..ChatRequest::default()
    };
    let before = probe::prompts();
    let estimate = ChatEstimate::new(&req);
    assert_eq!(probe::prompts(), before, "nothing is counted before it is asked for");
    let o200k = estimate.prompt_tokens(Tokenizer::O200k);
    assert_eq!(estimate.reservation(Tokenizer::O200k), o200k + DEFAULT_OUTPUT_TOKENS);
    assert_eq!(estimate.prompt_tokens(Tokenizer::O200k), o200k);
    assert_eq!(probe::prompts(), before + 1);
    estimate.reservation(Tokenizer::Approx);
    estimate.reservation(Tokenizer::Approx);
    assert_eq!(probe::prompts(), before + 2);
    estimate.prompt_tokens(Tokenizer::Cl100k);
    estimate.reservation(Tokenizer::O200k);
    estimate.reservation(Tokenizer::Cl100k);
    assert_eq!(probe::prompts(), before + 3);

    // It can live in an attempt the router shares across awaits.
    fn shareable<T: Send + Sync>(_: &T) {}
    shareable(&estimate);
}

#[test]
fn approx_is_unchanged_for_anthropic_and_gemini() {
    let req = ChatRequest {
        messages: vec![Message::text(Role::System, "abcd"), Message::text(Role::User, "abcdefgh")],
        max_tokens: Some(100),
        ..ChatRequest::default()
    };
    // 12 bytes over four, 4 per message, max_tokens.
    assert_eq!(chat(&req), 3 + 2 * 4 + 100);
    for (kind, model) in
        [(ProviderKind::Anthropic, "claude-haiku-4-5"), (ProviderKind::Gemini, "gemini-2.5-pro")]
    {
        let tokenizer = Tokenizer::for_target(kind, model);
        assert_eq!(ChatEstimate::new(&req).reservation(tokenizer), 3 + 2 * 4 + 100);
    }
    let req = ChatRequest { max_tokens: None, ..req };
    assert_eq!(chat(&req), 3 + 8 + DEFAULT_OUTPUT_TOKENS);

    let tools = ChatRequest {
        messages: vec![Message {
            role: Role::User,
            content: vec![Part::Image {
                source: ImageSource::Base64 { media_type: "image/png".into(), data: "AAAA".into() },
            }],
            name: None,
        }],
        tools: vec![Tool {
            name: "f".into(),
            description: Some("abc".into()),
            parameters: json!({}),
            strict: None,
        }],
        ..ChatRequest::default()
    };
    // An image is 765; the tool is 1 + 3 + 2 ("{}") bytes.
    assert_eq!(ChatEstimate::new(&tools).prompt_tokens(Tokenizer::Approx), 765 + 2 + 4);
}

#[test]
fn embeddings_count_texts_and_token_ids() {
    let texts = EmbeddingsRequest {
        input: EmbeddingInput::Texts(vec!["hello world".into(), "tiktoken is great!".into()]),
        ..Default::default()
    };
    assert_eq!(embeddings(&texts, Tokenizer::Cl100k), 2 + 6);
    assert_eq!(embeddings(&texts, Tokenizer::O200k), 2 + 6);
    // 11 + 18 bytes over four.
    assert_eq!(embeddings(&texts, Tokenizer::Approx), 8);
    let ids = EmbeddingsRequest {
        input: EmbeddingInput::Tokens(vec![vec![15339, 1917], vec![1, 2, 3]]),
        ..Default::default()
    };
    for tokenizer in Tokenizer::ALL {
        assert_eq!(embeddings(&ids, tokenizer), 5);
    }
}

#[test]
fn a_cached_count_is_the_count() {
    cache::clear();
    let text = prose(7, 3000);
    for tokenizer in BPES {
        let before = probe::tokenized_bytes();
        let first = count(tokenizer, &text);
        assert_eq!(probe::tokenized_bytes() - before, text.len());
        let again = count(tokenizer, &text);
        assert_eq!(again, first);
        assert_eq!(probe::tokenized_bytes() - before, text.len(), "the second count is a hit");
        assert_eq!(first, tokenizer.bpe().unwrap().count_ordinary(&text) as u64);
    }
    // Short texts are not cached, and embeddings do not use the cache.
    let before = probe::tokenized_bytes();
    count(Tokenizer::O200k, "hello world");
    count(Tokenizer::O200k, "hello world");
    let req = EmbeddingsRequest {
        input: EmbeddingInput::Texts(vec![text.clone()]),
        ..Default::default()
    };
    embeddings(&req, Tokenizer::O200k);
    assert_eq!(probe::tokenized_bytes() - before, 2 * 11 + text.len());
}

#[test]
fn long_texts_are_sampled_closely() {
    let text = prose(3, 100_000);
    let code = include_str!("../estimate.rs").repeat(4);
    let json = serde_json::to_string(&json!({
        "rows": (0..2000).map(|i| json!({"id": i, "name": format!("item {i}"), "ok": i % 3 == 0}))
            .collect::<Vec<_>>()
    }))
    .unwrap();
    let cjk = "お誕生日おめでとう。今日はいい天気ですね。".repeat(800);
    for tokenizer in BPES {
        let bpe = tokenizer.bpe().unwrap();
        for text in [&text, &code, &json, &cjk] {
            assert!(text.len() > EXACT_MAX);
            let exact = bpe.count_ordinary(text) as f64;
            let before = probe::tokenized_bytes();
            let sampled = Counter::new(tokenizer, bpe, false).count(text) as f64;
            assert!(probe::tokenized_bytes() - before <= WINDOWS * WINDOW);
            let error = (sampled - exact).abs() / exact;
            assert!(error < 0.05, "{}: {sampled} for {exact}", tokenizer.as_str());
        }
    }
}

#[test]
fn a_request_tokenizes_at_most_its_budget() {
    cache::clear();
    // Forty distinct 6 KB messages: 240 KB, far over the budget.
    let req = ChatRequest {
        messages: (0..40).map(|i| Message::text(Role::User, prose(100 + i, 6_000))).collect(),
        ..ChatRequest::default()
    };
    for tokenizer in BPES {
        let bpe = tokenizer.bpe().unwrap();
        let exact: usize = req.messages.iter().map(|m| bpe.count_ordinary(&m.joined_text())).sum();
        let exact = (exact + 40 * 4 + 3) as f64;
        let before = probe::tokenized_bytes();
        let estimate = f64::from(ChatEstimate::new(&req).prompt_tokens(tokenizer));
        assert!(probe::tokenized_bytes() - before <= BUDGET + EXACT_MAX);
        assert!((estimate - exact).abs() / exact < 0.03, "{estimate} for {exact}");
    }
}
