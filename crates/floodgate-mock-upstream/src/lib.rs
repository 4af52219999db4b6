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
//! `hang`, `reset` or `slow-<ms>` misbehave accordingly on every request.

mod answer;
mod anthropic;
mod call;
mod embed;
mod gemini;
mod openai;
mod routes;
mod script;
mod server;
mod state;
mod stream;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

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
    /// Seconds sent in `retry-after` with a 429 answer. Default 1.
    pub retry_after_secs: u64,
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
            record: false,
        }
    }
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
