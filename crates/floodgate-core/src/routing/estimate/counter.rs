//! Counting one request's texts with one BPE encoding, in bounded time.
//!
//! tiktoken-rs reads about 45 MB/s in `o200k_base` and 25 MB/s in
//! `cl100k_base` on this project's 2-core machine. Measured with
//! `cargo run --release -p floodgate-core --example tokenizer_cost`, CPU
//! per system + user chat (three runs; µs):
//!
//! | chat                              |       o200k_base |      cl100k_base |
//! |-----------------------------------|-----------------:|-----------------:|
//! | 200 B                             |              5.6 |           9.5–10 |
//! | 4 KB                              |           85–100 |          160–180 |
//! | 100 KB, in full                   |        2100–2200 |        4000–4200 |
//! | 100 KB, sampled (below)           |              190 |          335–345 |
//! | cache hit (200 B / 4 KB / 100 KB) | 0.04 / 0.2 / 3.9 | 0.04 / 0.2 / 3.9 |
//!
//! — against about 35 µs of CPU for everything else a request does, on a
//! worker thread that serves all its other connections meanwhile. With the
//! default 10 MiB body limit one request could hold a worker for nearly
//! half a second. So:
//!
//! - a text seen recently on this thread is not tokenized again (`cache.rs`);
//! - a text up to [`EXACT_MAX`] bytes is counted in full;
//! - a longer one is counted on [`WINDOWS`] windows of [`WINDOW`] bytes spread
//!   evenly over it and scaled by its length (within a few percent on prose,
//!   code and JSON: the tokens-per-byte ratio of a text changes slowly);
//! - once a request has run [`BUDGET`] bytes through the tokenizer, its
//!   remaining texts (cache hits aside) are charged at the tokens-per-byte
//!   ratio its counted texts showed, or four bytes a token if none was
//!   counted.
//!
//! A request thus tokenizes at most `BUDGET + EXACT_MAX` (12 KiB: 0.25 ms in
//! `o200k_base`, 0.5 ms in `cl100k_base`) however large it is, and most
//! requests, shorter than the budget, are counted exactly. Sampling the
//! 100 KB chat above overcounts it by 1.3% (20,205 tokens for 19,944).

use std::cell::Cell;

use tiktoken_rs::CoreBPE;

use super::{Tokenizer, cache};

/// Bytes of text one request may run through the tokenizer.
pub(super) const BUDGET: usize = 8 * 1024;
/// Texts up to this length are counted in full.
pub(super) const EXACT_MAX: usize = 4 * 1024;
/// Samples taken from a longer text…
pub(super) const WINDOWS: usize = 8;
/// …of this many bytes each (less at a character boundary).
pub(super) const WINDOW: usize = 512;

/// One request's counting with one encoding.
pub(super) struct Counter {
    tokenizer: Tokenizer,
    bpe: &'static CoreBPE,
    cached: bool,
    /// Bytes the tokenizer may still read for this request.
    budget: Cell<usize>,
    /// Bytes and tokens of the texts counted so far: the request's own ratio,
    /// for text past the budget.
    seen: Cell<(u64, u64)>,
}

impl Counter {
    /// `cached`: whether texts go through the per-thread cache.
    pub(super) fn new(tokenizer: Tokenizer, bpe: &'static CoreBPE, cached: bool) -> Counter {
        Counter { tokenizer, bpe, cached, budget: Cell::new(BUDGET), seen: Cell::new((0, 0)) }
    }

    /// Tokens of `text`, as the encoding would split it on its own.
    pub(super) fn count(&self, text: &str) -> u64 {
        if text.is_empty() {
            return 0;
        }
        let key = if self.cached { cache::Key::new(self.tokenizer, text) } else { None };
        if let Some(tokens) = key.and_then(cache::get) {
            self.observe(text.len(), tokens);
            return tokens;
        }
        let budget = self.budget.get();
        if budget == 0 {
            // Not cached: a later request with budget left counts it properly.
            return self.extrapolate(text.len());
        }
        let (read, tokens) = if text.len() <= EXACT_MAX {
            (text.len(), self.tokenize(text))
        } else {
            self.sample(text)
        };
        self.budget.set(budget.saturating_sub(read));
        self.observe(text.len(), tokens);
        if let Some(key) = key {
            cache::put(key, tokens);
        }
        tokens
    }

    fn tokenize(&self, text: &str) -> u64 {
        #[cfg(test)]
        super::tests::probe::tokenized(text.len());
        self.bpe.count_ordinary(text) as u64
    }

    /// Bytes read and the estimated tokens of a text over [`EXACT_MAX`].
    fn sample(&self, text: &str) -> (usize, u64) {
        let stride = (text.len() - WINDOW) / (WINDOWS - 1);
        let (mut read, mut tokens) = (0, 0);
        for i in 0..WINDOWS {
            let start = text.floor_char_boundary(i * stride);
            let end = text.floor_char_boundary(start + WINDOW);
            read += end - start;
            tokens += self.tokenize(&text[start..end]);
        }
        (read, scale(tokens, read as u64, text.len()))
    }

    fn observe(&self, bytes: usize, tokens: u64) {
        let (b, t) = self.seen.get();
        self.seen.set((b + bytes as u64, t + tokens));
    }

    fn extrapolate(&self, bytes: usize) -> u64 {
        match self.seen.get() {
            (0, _) => bytes.div_ceil(4) as u64,
            (seen_bytes, seen_tokens) => scale(seen_tokens, seen_bytes, bytes),
        }
    }
}

/// `tokens` per `per` bytes, applied to `bytes` (rounded up).
fn scale(tokens: u64, per: u64, bytes: usize) -> u64 {
    (u128::from(tokens) * bytes as u128)
        .div_ceil(u128::from(per.max(1)))
        .try_into()
        .unwrap_or(u64::MAX)
}
