//! A fast, scriptable fake of the OpenAI, Anthropic and Gemini HTTP APIs.
//!
//! This crate owns the public face of the mock: its configuration ([`MockConfig`]), the scripts a
//! test can queue ([`Script`]), what it records ([`Recorded`], [`Stats`]) and the two ways to run
//! it ([`serve`] for the CLI and the gateway's built-in provider, [`MockServer`] for tests).
//!
//! The mock speaks each provider's documented wire format, written out with `serde_json` and
//! without any dependency on the gateway's own protocol crate, so that it is an independent check
//! on the gateway's translators.
//!
//! Routes:
//! - OpenAI: `POST /v1/chat/completions`, `POST /v1/embeddings`, `GET /v1/models`.
//! - Anthropic: `POST /v1/messages`, `GET /v1/models` (with an `anthropic-version` header).
//! - Gemini: `POST /v1beta/models/{model}:generateContent`, `:streamGenerateContent?alt=sse`,
//!   `:embedContent`, `:batchEmbedContents`, and `GET /v1beta/models`.
//! - `GET /health` answers `ok`.
//!
//! Default answers are deterministic: `chunks` words from a fixed list ([`answer_text`]), usage
//! computed from the request text, a tool call `{"mock":true}` when the request offers tools and
//! the last turn is a user turn. Model names containing `error-500`, `error-429`, `error-401`,
//! `hang`, `reset` or `slow-<ms>` misbehave accordingly on every request; keys starting with
//! `invalid` get 401 and `forbidden` 403. Embeddings are deterministic and similarity-preserving
//! ([`embedding_vector`]): the normalised sum of per-word vectors, so texts sharing most words are
//! close and unrelated texts are not.
//!
//! Behaviours a config turns on: latency and paced streams, random errors of one kind (500, 429,
//! hang, reset: [`MockConfig::error_rate`]), and per-key rate limits ([`RateLimit`]): requests
//! and tokens per key over a sliding 60-second window, 429s in each provider's shape with a
//! computed `retry-after`, and OpenAI's `x-ratelimit-*` and Anthropic's `anthropic-ratelimit-*`
//! headers on every answer of a limited key. Recorded requests carry the instant they arrived
//! ([`Recorded::received_at`]), so a test can measure how a client spaces its requests.

mod answer;
mod anthropic;
mod call;
mod embed;
mod gemini;
mod limit;
mod openai;
mod routes;
mod script;
mod server;
mod state;
mod stream;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use answer::{TOOL_ARGUMENTS, TOOL_CALL_COMPLETION_TOKENS, WORDS, answer_text, prompt_tokens};
pub use embed::embedding_vector;

use state::Shared;

/// How the mock behaves when it is not scripted.
#[derive(Debug, Clone, PartialEq)]
pub struct MockConfig {
    /// Wait before the response head (and so before the first stream chunk) of every
    /// chat/messages/embeddings response, scripted ones included.
    pub latency: Duration,
    /// Content pieces (words) of a streamed answer; a non-streamed answer has the same words
    /// joined. Default 20.
    pub chunks: usize,
    /// Pause between stream chunks. Default 0 (no sleeping at all).
    pub chunk_delay: Duration,
    /// Fraction (0..=1) of unscripted chat/messages/embeddings requests that fail with
    /// [`MockConfig::error_kind`].
    pub error_rate: f64,
    /// What a randomly failing request gets.
    pub error_kind: ErrorKind,
    /// Seconds sent in `retry-after` with a 429 answer forced by [`MockConfig::error_kind`] or a
    /// model name. Default 1. (A 429 from [`MockConfig::rate_limit`] computes its own.)
    pub retry_after_secs: u64,
    /// Per-key rate limits, like a provider's RPM and TPM. Off (`None`) by default.
    pub rate_limit: Option<RateLimit>,
    /// Keep the last 10 000 requests for [`MockServer::requests`]. Off by default so that the
    /// benchmark path takes no lock; tests turn it on.
    pub record: bool,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            chunks: 20,
            chunk_delay: Duration::ZERO,
            error_rate: 0.0,
            error_kind: ErrorKind::Status500,
            retry_after_secs: 1,
            rate_limit: None,
            record: false,
        }
    }
}

/// Limits per API key over a sliding 60-second window, as providers limit RPM and TPM.
///
/// A key is the value the request presented in its provider's place: `Authorization: Bearer`
/// (OpenAI), `x-api-key` (Anthropic), `x-goog-api-key` or `?key=` (Gemini); each value has its
/// own window, whatever the route. The window is exact: it keeps the time and tokens of every
/// answer it counts, and an answer leaves it 60 seconds after it was given.
///
/// What counts: every default chat/messages/embeddings answer, as one request and the tokens of
/// the usage it reports (prompt plus completion; for a stream the numbers its usage will report,
/// charged when the stream starts, whether or not the stream carries usage). Gemini embeddings
/// report no usage and cost no tokens. Scripted answers, errors (400s, magic model names, random
/// errors) and the 429s of this limit are not counted.
///
/// A request that does not fit (one more request over `requests_per_minute`, or its tokens over
/// `tokens_per_minute`) gets a 429 in its provider's error shape, with `retry-after` in whole
/// seconds until it would fit (at least 1). OpenAI and Anthropic answers of a limited key, 200s
/// and these 429s alike, carry the providers' rate-limit headers for each limit that is set:
///
/// - OpenAI: `x-ratelimit-limit-requests`, `x-ratelimit-remaining-requests`,
///   `x-ratelimit-reset-requests`, and the same three with `-tokens`. Resets are durations until
///   the window is fully replenished, written as OpenAI writes them (`17ms`, `1s`, `59.5s`,
///   `1m0s`), to the millisecond and rounded up.
/// - Anthropic: `anthropic-ratelimit-requests-limit`, `-requests-remaining`, `-requests-reset`,
///   and the same three for `tokens`. Resets are the RFC 3339 UTC time of full replenishment in
///   whole seconds, rounded up (`2025-01-15T14:24:00Z`). Remaining tokens are exact (the real
///   API rounds them to thousands).
/// - Gemini sends no such headers; its 429 is `RESOURCE_EXHAUSTED` with a `RetryInfo` detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RateLimit {
    /// Answers per key in any 60 seconds; `None` for no request limit.
    pub requests_per_minute: Option<u32>,
    /// Tokens (prompt plus completion) per key in any 60 seconds; `None` for no token limit.
    pub tokens_per_minute: Option<u32>,
}

/// What a randomly failing request (see [`MockConfig::error_rate`]) gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ErrorKind {
    /// A 500 in the provider's error shape.
    #[default]
    Status500,
    /// A 429 in the provider's error shape with `retry-after: retry_after_secs`.
    Status429,
    /// No answer at all until the client goes away (or the server shuts down).
    Hang,
    /// The TCP connection is reset before any response byte.
    Reset,
}

/// A scripted answer for the next chat/messages/embeddings request, whatever its route.
///
/// Scripts take effect after the API-key check (and, for Anthropic, the `anthropic-version`
/// check) and before the body is looked at, so they answer even an invalid body.
#[derive(Debug, Clone, PartialEq)]
pub enum Script {
    /// This status, these extra headers, and this body: a JSON value is sent as JSON, except that
    /// a JSON string is sent as raw text (to imitate HTML error pages of proxies) and `Null` as an
    /// empty body. A `content-type` in `headers` overrides the default one.
    Status { status: u16, headers: Vec<(String, String)>, body: serde_json::Value },
    /// 200 with exactly this JSON body.
    Json(serde_json::Value),
    /// 200 `text/event-stream` with exactly these `(event, data)` events, `delay` between them.
    Sse { events: Vec<(Option<String>, String)>, delay: Duration },
    /// Like [`Script::Sse`], then the response is aborted (no clean end of the body).
    SseThenReset { events: Vec<(Option<String>, String)>, delay: Duration },
    /// Never answer (until the client goes away or the server shuts down).
    Hang,
    /// Close the TCP connection with a reset and no HTTP response (on HTTP/2 this ends every
    /// stream of the connection).
    Reset,
    /// Wait, then play the inner script.
    Delay(Duration, Box<Script>),
}

/// One request as the mock received it.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// The HTTP method, e.g. `POST`.
    pub method: String,
    /// The protocol version, e.g. `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    /// The path without the query, e.g. `/v1/chat/completions`.
    pub path: String,
    /// The raw query string, if any.
    pub query: Option<String>,
    /// Every header in arrival order, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body parsed as JSON, or `Null` when it is empty or not JSON.
    pub body: serde_json::Value,
    /// When the request head reached its handler (before the body was read), to measure the
    /// spacing of requests, e.g. how well a client keeps to a rate limit.
    pub received_at: Instant,
}

impl Recorded {
    /// The first value of a header (name in lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Counters of what the mock has done since it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Every HTTP request routed to a handler.
    pub requests: u64,
    /// Streaming responses whose body was created.
    pub streams_started: u64,
    /// Streaming responses whose last event was handed to the connection.
    pub streams_completed: u64,
    /// Streaming responses dropped before their last event (the client went away).
    pub streams_cancelled: u64,
    /// Requests hanging right now.
    pub hung: u64,
    /// Requests refused with a 429 by [`MockConfig::rate_limit`] (not counting forced 429s).
    pub rate_limited: u64,
}

/// Serves the mock on `listener` until `shutdown` is cancelled.
///
/// On shutdown it stops accepting, lets in-flight responses finish for up to a second, then
/// drops whatever connections remain.
pub async fn serve(
    listener: TcpListener,
    config: MockConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    server::run(listener, Arc::new(Shared::new(config, shutdown))).await
}

/// A mock running on a loopback port, with a handle to script and inspect it.
///
/// Dropping it stops the server too (without waiting); [`MockServer::shutdown`] waits.
pub struct MockServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl std::fmt::Debug for MockServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockServer").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl MockServer {
    /// Binds `127.0.0.1:0` and starts serving in a background task.
    pub async fn start(config: MockConfig) -> std::io::Result<MockServer> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(config, CancellationToken::new()));
        let task = tokio::spawn(server::run(listener, Arc::clone(&shared)));
        Ok(MockServer { addr, shared, task: Some(task) })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:P`, the base URL convention of Anthropic and Gemini clients.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:P/v1`, the base URL convention of OpenAI clients.
    pub fn openai_base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Queues a script: the next chat/messages/embeddings request (any route) plays it instead
    /// of the default answer. Scripts are played in FIFO order.
    pub fn enqueue(&self, script: Script) {
        self.shared.enqueue(script);
    }

    /// Scripts queued and not yet played.
    pub fn pending_scripts(&self) -> usize {
        self.shared.pending_scripts()
    }

    /// The recorded requests, oldest first (empty unless [`MockConfig::record`] is on).
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.shared.clear_requests();
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.shared.stats.snapshot()
    }

    /// Stops the server and waits for it to finish.
    pub async fn shutdown(mut self) {
        self.shared.shutdown.cancel();
        if let Some(task) = self.task.take() {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::warn!(%error, "mock upstream stopped with an error"),
                Err(error) => tracing::warn!(%error, "mock upstream task failed"),
            }
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}
