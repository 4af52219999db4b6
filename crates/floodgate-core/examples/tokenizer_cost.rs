//! What a token estimate costs on the request path, per tokenizer and prompt
//! size: the BPE tables' load time and memory, then CPU per request for a
//! system + user chat of about 200 bytes, 4 KB and 100 KB, counted by the
//! tokenizer alone (no cache), through `ChatEstimate` with texts never seen
//! before (cache misses) and with the same texts again (cache hits).
//!
//! `cargo run --release -p floodgate-core --example tokenizer_cost`
#![expect(clippy::print_stdout, reason = "an example that prints its measurements")]

use std::hint::black_box;
use std::time::{Duration, Instant};

use floodgate_core::routing::estimate::{ChatEstimate, Tokenizer};
use floodgate_protocol::{ChatRequest, Message, Role};

const PROSE: &str = "The gateway reads each request into one canonical shape, resolves \
its model name to an ordered list of targets, and calls them in turn. When an upstream \
answers 429, the key rests until its window reopens; when it fails outright, the next \
target is tried. Tokens are reserved before the call and settled afterwards with the \
count the upstream reports, so a rough estimate costs capacity, not correctness. \
Customers asked for three things: fewer surprises at the end of the month, answers in \
under a second, and logs that never contain their data. ";

fn main() {
    println!("tables: first use (load) time and resident memory added");
    for tokenizer in [Tokenizer::O200k, Tokenizer::Cl100k] {
        let rss = rss_bytes();
        let start = Instant::now();
        let req = chat(0, 10, 10);
        black_box(ChatEstimate::new(&req).prompt_tokens(tokenizer));
        println!(
            "  {:<12} {:>6.0} ms  {:>5.1} MB",
            tokenizer.as_str(),
            start.elapsed().as_secs_f64() * 1e3,
            (rss_bytes().saturating_sub(rss)) as f64 / 1e6
        );
    }

    println!("\nper request, system + user message (µs); distinct = cache misses, repeated = hits");
    println!(
        "  {:<12} {:>7} {:>8} {:>8} {:>11} {:>10} {:>10}",
        "tokenizer", "size", "exact", "estimate", "tokenizer", "distinct", "repeated"
    );
    for (label, system, user) in
        [("200 B", 80, 120), ("4 KB", 3_000, 1_000), ("100 KB", 90_000, 10_000)]
    {
        let variants = if system < 1_000 {
            20_000
        } else if system < 10_000 {
            2_000
        } else {
            60
        };
        // Three pools of texts, each timed in one pass so that no text is counted twice.
        let pools: Vec<Vec<ChatRequest>> = (0..3)
            .map(|pool| (0..variants).map(|i| chat(pool * variants + i, system, user)).collect())
            .collect();
        for tokenizer in [Tokenizer::O200k, Tokenizer::Cl100k, Tokenizer::Approx] {
            let estimate = ChatEstimate::new(&pools[0][0]).prompt_tokens(tokenizer);
            // Content by the tokenizer alone, plus the framing of two messages.
            let exact = match tokenizer {
                Tokenizer::Approx => estimate as usize,
                _ => bare_tokenizer(&pools[0][0], tokenizer) + 2 * 4 + 3,
            };
            let bare = per_op(&pools[0], |req| bare_tokenizer(req, tokenizer));
            let missed = per_pass(&pools, |req| ChatEstimate::new(req).reservation(tokenizer));
            let repeated =
                per_op(&pools[0][..1], |req| ChatEstimate::new(req).reservation(tokenizer));
            println!(
                "  {:<12} {:>7} {:>8} {:>8} {:>11.2} {:>10.2} {:>10.2}",
                tokenizer.as_str(),
                label,
                exact,
                estimate,
                bare,
                missed,
                repeated
            );
        }
    }
}

/// A chat whose system prompt and user message are `system` and `user`
/// bytes of prose, made distinct by `seed`.
fn chat(seed: usize, system: usize, user: usize) -> ChatRequest {
    let text = |len: usize, salt: &str| {
        let mut s = format!("{salt} {seed}: ");
        while s.len() < len {
            s.push_str(PROSE);
        }
        s.truncate(s.floor_char_boundary(len));
        s
    };
    ChatRequest {
        messages: vec![
            Message::text(Role::System, text(system, "Instructions")),
            Message::text(Role::User, text(user, "Question")),
        ],
        max_tokens: Some(512),
        ..ChatRequest::default()
    }
}

/// The BPE alone, on each message's text: what the estimate costs without a cache.
fn bare_tokenizer(req: &ChatRequest, tokenizer: Tokenizer) -> usize {
    let bpe = match tokenizer {
        Tokenizer::O200k => tiktoken_rs::o200k_base_singleton(),
        Tokenizer::Cl100k => tiktoken_rs::cl100k_base_singleton(),
        Tokenizer::Approx => return ChatEstimate::new(req).prompt_tokens(tokenizer) as usize,
    };
    req.messages
        .iter()
        .flat_map(|m| &m.content)
        .map(|part| match part {
            floodgate_protocol::Part::Text { text } => bpe.count_ordinary(text),
            _ => 0,
        })
        .sum()
}

/// Microseconds per call of `f`, cycling through `reqs`: the best of five
/// rounds of at least 200 ms each (the best, so a descheduled round does not count).
fn per_op<T>(reqs: &[ChatRequest], f: impl Fn(&ChatRequest) -> T) -> f64 {
    let mut best = f64::MAX;
    let mut next = 0;
    for _ in 0..5 {
        let start = Instant::now();
        let mut calls = 0u64;
        while start.elapsed() < Duration::from_millis(200) {
            for _ in 0..16 {
                black_box(f(black_box(&reqs[next])));
                next = (next + 1) % reqs.len();
                calls += 1;
            }
        }
        best = best.min(start.elapsed().as_secs_f64() * 1e6 / calls as f64);
    }
    best
}

/// Microseconds per call of `f`, each request of a pool once: the best pool.
fn per_pass<T>(pools: &[Vec<ChatRequest>], f: impl Fn(&ChatRequest) -> T) -> f64 {
    let mut best = f64::MAX;
    for pool in pools {
        let start = Instant::now();
        for req in pool {
            black_box(f(black_box(req)));
        }
        best = best.min(start.elapsed().as_secs_f64() * 1e6 / pool.len() as f64);
    }
    best
}

fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map_or(0, |pages| pages * 4096)
}
