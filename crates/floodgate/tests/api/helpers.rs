//! `spawn_app()`: a real gateway on port 0 with its own SQLite file and its
//! own scriptable mock upstream, plus typed helpers to talk to it.

#![expect(
    clippy::expect_used,
    reason = "test helpers fail the test with a message when setup or I/O fails"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use floodgate_core::config::{self, Env, Overrides};
use floodgate_core::store::{Store, UsageTotals};
use floodgate_core::{App, AppState};
use floodgate_mock_upstream::{MockConfig, MockServer, Recorded};
use floodgate_protocol::sse::{SseEvent, SseParser};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Three providers, one per wire format, all served by the same mock, and
/// one alias per provider. Fast retries so tests do not wait.
pub const DEFAULT_CONFIG: &str = r#"
[server]
shutdown_grace = "5s"

[routing]
retries = 2
backoff_base = "1ms"
backoff_max = "4ms"

[[providers]]
name = "oai"
kind = "openai-compatible"
base_url = "{openai}"
keys = ["oai-key-0123456789abcdef"]

[[providers]]
name = "ant"
kind = "anthropic"
base_url = "{base}"
keys = ["ant-key-0123456789abcdef"]

[[providers]]
name = "gem"
kind = "gemini"
base_url = "{base}"
keys = ["gem-key-0123456789abcdef"]

[[models]]
name = "gpt"
targets = ["oai/gpt-4o-mini"]

[[models]]
name = "claude"
targets = ["ant/claude-haiku-4-5"]

[[models]]
name = "gemini"
targets = ["gem/gemini-2.5-flash"]

[[models]]
name = "embed"
targets = ["oai/text-embedding-3-small"]
"#;

pub struct Options {
    /// TOML; `{openai}` and `{base}` become the mock's base URLs.
    pub config: String,
    pub mock: MockConfig,
    pub master_key: Option<String>,
    /// `[database] url`; default a SQLite file in the test's own directory.
    pub database_url: Option<String>,
    /// More `[database]` lines, e.g. `ledger_buffer = 10`.
    pub database_extra: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            config: DEFAULT_CONFIG.to_string(),
            mock: MockConfig { record: true, ..MockConfig::default() },
            master_key: None,
            database_url: None,
            database_extra: String::new(),
        }
    }
}

pub struct TestApp {
    pub addr: std::net::SocketAddr,
    pub mock: MockServer,
    pub http: reqwest::Client,
    pub state: AppState,
    pub key: Option<String>,
    shutdown: CancellationToken,
    server: JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

pub async fn spawn_app() -> TestApp {
    spawn_with(Options::default()).await
}

pub async fn spawn_config(config: &str) -> TestApp {
    spawn_with(Options { config: config.to_string(), ..Options::default() }).await
}

pub async fn spawn_with(options: Options) -> TestApp {
    let mock = MockServer::start(options.mock).await.expect("mock upstream starts");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut text = options
        .config
        .replace("{openai}", &mock.openai_base_url())
        .replace("{base}", &mock.base_url());
    let url = options
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("floodgate.db").display()));
    text.push_str(&format!(
        "\n[database]\nurl = \"{url}\"\nledger_spill_path = \"{}\"\n{}\n",
        dir.path().join("ledger.spill").display(),
        options.database_extra
    ));
    let mut env = Env::new();
    if let Some(key) = &options.master_key {
        env.insert("FLOODGATE_MASTER_KEY".to_string(), key.clone());
    }
    let config = config::from_text(&text, "test.toml", &env, &Overrides::default())
        .expect("test config is valid");
    let app = App::build(config).await.expect("app builds");
    let state = app.state().clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.serve(listener, shutdown.clone()));
    let http = http_client();
    TestApp { addr, mock, http, state, key: options.master_key, shutdown, server, _dir: dir }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    fn auth(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.auth(self.http.post(self.url(path)).json(body)).send().await.expect("request sent")
    }

    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.auth(
            self.http.post(self.url(path)).header("content-type", "application/json").body(body),
        )
        .send()
        .await
        .expect("request sent")
    }

    /// A request with `key` as the bearer key (none when `None`) instead of the test's.
    pub async fn send_as(
        &self,
        key: Option<&str>,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> reqwest::Response {
        let mut request = self.http.request(method, self.url(path));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        request.send().await.expect("request sent")
    }

    /// GET with `key` as the bearer key.
    pub async fn get_as(&self, key: &str, path: &str) -> reqwest::Response {
        self.send_as(Some(key), reqwest::Method::GET, path, None).await
    }

    /// The test's directory (the SQLite file and the spill file live there).
    pub fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.auth(self.http.get(self.url(path))).send().await.expect("request sent")
    }

    /// POST with extra headers (and the test's key, if any).
    pub async fn post_with(
        &self,
        path: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut request = self.auth(self.http.post(self.url(path)).json(body));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("request sent")
    }

    /// POST and read a JSON answer.
    pub async fn post_json(&self, path: &str, body: &Value) -> (StatusCode, HeaderMap, Value) {
        json_of(self.post(path, body).await).await
    }

    /// POST a streaming request and read every SSE event until the end.
    pub async fn post_sse(
        &self,
        path: &str,
        body: &Value,
    ) -> (StatusCode, HeaderMap, Vec<SseEvent>) {
        let response = self.post(path, body).await;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("stream read");
        (status, headers, parse_sse(&bytes))
    }

    pub fn upstream_requests(&self) -> Vec<Recorded> {
        self.mock.requests()
    }

    /// Ledger totals once `n` requests have been written (polling, with a deadline).
    pub async fn ledger_after(&self, n: i64) -> Vec<UsageTotals> {
        let store: Arc<dyn Store> = self.state.store.clone();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let totals = store.usage_totals().await.expect("usage totals");
            if totals.iter().map(|t| t.requests).sum::<i64>() >= n {
                return totals;
            }
            assert!(Instant::now() < deadline, "ledger did not reach {n} records: {totals:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn metrics(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }

    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    pub async fn wait_stopped(self) -> std::io::Result<()> {
        let result = self.server.await.expect("server task");
        self.mock.shutdown().await;
        result
    }
}

/// A client for tests. reqwest is built without a default TLS provider, so
/// install ring's before building one (a no-op when already installed).
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client")
}

pub async fn json_of(response: reqwest::Response) -> (StatusCode, HeaderMap, Value) {
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    let value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("body is not JSON: {text}"));
    (status, headers, value)
}

pub fn parse_sse(bytes: &[u8]) -> Vec<SseEvent> {
    let mut parser = SseParser::default();
    parser.push(bytes).expect("sse");
    parser.finish();
    let mut events = Vec::new();
    while let Some(event) = parser.next_event() {
        events.push(event);
    }
    events
}

/// The JSON data of every event but OpenAI's `[DONE]`.
pub fn data_of(events: &[SseEvent]) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e.data != "[DONE]")
        .map(|e| {
            serde_json::from_str(&e.data)
                .unwrap_or_else(|_| panic!("event data is not JSON: {}", e.data))
        })
        .collect()
}

/// Polls `check` until it holds, failing the test after 10 s.
pub async fn eventually<F, Fut>(mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "condition not reached within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A documented-looking OpenAI chat body.
pub fn chat_body(model: &str, stream: bool) -> Value {
    serde_json::json!({
        "model": model,
        "stream": stream,
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Say hello."}
        ]
    })
}

/// A documented-looking Anthropic messages body.
pub fn messages_body(model: &str, stream: bool) -> Value {
    serde_json::json!({
        "model": model,
        "max_tokens": 64,
        "stream": stream,
        "system": "You are terse.",
        "messages": [{"role": "user", "content": "Say hello."}]
    })
}

/// Sends one HTTP/1.1 request on `conn` and reads its whole answer
/// (`content-length` or chunked, to the terminating chunk).
pub async fn exchange(conn: &mut tokio::net::TcpStream, request: &str) -> String {
    let label = request.lines().next().unwrap_or_default().to_string();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    conn.write_all(request.as_bytes()).await.expect("request written");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = conn.read(&mut buf).await.unwrap_or_else(|e| panic!("{label}: {e}"));
        assert!(n > 0, "closed mid-answer: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&answer);
        if let Some(head_end) = text.find("\r\n\r\n") {
            let head = text[..head_end].to_ascii_lowercase();
            let body = &text[head_end + 4..];
            let complete = match head.split("content-length:").nth(1) {
                Some(rest) => {
                    let length = rest.trim_start().split("\r\n").next().unwrap_or_default();
                    body.len() >= length.trim().parse::<usize>().expect("a numeric content-length")
                }
                None => body.ends_with("0\r\n\r\n"),
            };
            if complete {
                return text.into_owned();
            }
        }
    }
}

pub async fn closed_by_server(conn: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 64];
    matches!(tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf)).await, Ok(Ok(0)))
}

/// A TCP forwarder to `target` that a test can cut: while down, live
/// connections are closed and new ones are accepted and dropped at once — a
/// database or Redis that went away, as its clients see it.
pub struct TcpProxy {
    pub addr: std::net::SocketAddr,
    up: Arc<std::sync::atomic::AtomicBool>,
    /// While down: hold new connections open without a word (a server that
    /// hangs) instead of closing them.
    hang: Arc<std::sync::atomic::AtomicBool>,
    /// Bumped on every cut; connections of an older generation close.
    generation: tokio::sync::watch::Sender<u64>,
    task: JoinHandle<()>,
}

impl TcpProxy {
    pub async fn start(target: std::net::SocketAddr) -> TcpProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let hang = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (generation, _) = tokio::sync::watch::channel(0u64);
        let (flag, hanging, gen_tx) = (up.clone(), hang.clone(), generation.clone());
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let Ok((mut client, _)) = listener.accept().await else { return };
                if !flag.load(std::sync::atomic::Ordering::SeqCst) {
                    if hanging.load(std::sync::atomic::Ordering::SeqCst) {
                        held.push(client);
                    } else {
                        drop(client);
                    }
                    continue;
                }
                held.clear();
                let mut cut = gen_tx.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        TcpProxy { addr, up, hang, generation, task }
    }

    /// Closes live connections and refuses new ones.
    pub fn cut(&self) {
        self.hang.store(false, std::sync::atomic::Ordering::SeqCst);
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Closes live connections and leaves new ones hanging, unanswered.
    pub fn hang(&self) {
        self.hang.store(true, std::sync::atomic::Ordering::SeqCst);
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    pub fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A fresh PostgreSQL database for one test, dropped (best effort) with it;
/// `None` (and a visible "skipped" line) without FLOODGATE_TEST_DATABASE_URL.
pub struct TestDatabase {
    pub url: String,
    admin: String,
    pub name: String,
}

impl TestDatabase {
    #[expect(clippy::print_stderr, reason = "a skipped test says so")]
    pub async fn create(test: &str) -> Option<TestDatabase> {
        let Ok(admin) = std::env::var("FLOODGATE_TEST_DATABASE_URL") else {
            eprintln!("skipped {test}: FLOODGATE_TEST_DATABASE_URL not set");
            return None;
        };
        let name = format!("fg_it_{:016x}", fastrand_u64());
        psql(&admin, &format!("CREATE DATABASE {name}")).await;
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(base, _)| base);
        Some(TestDatabase { url: format!("{base}/{name}"), admin, name })
    }

    /// The URL with its host and port replaced by `addr` (for a proxy).
    pub fn url_via(&self, addr: std::net::SocketAddr) -> String {
        let (scheme, rest) = self.url.split_once("://").expect("url has a scheme");
        let (userinfo, rest) = match rest.rsplit_once('@') {
            Some((user, rest)) => (format!("{user}@"), rest),
            None => (String::new(), rest),
        };
        let path = rest.split_once('/').map_or("", |(_, path)| path);
        format!("{scheme}://{userinfo}{addr}/{path}")
    }

    /// Host and port of the server.
    pub fn server(&self) -> std::net::SocketAddr {
        let rest = self.url.split_once("://").expect("scheme").1;
        let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
        let host = rest.split('/').next().expect("host");
        let host = if host.contains(':') { host.to_string() } else { format!("{host}:5432") };
        use std::net::ToSocketAddrs;
        host.to_socket_addrs().expect("resolves").next().expect("an address")
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Best effort, in the background of whatever runtime is left.
        let _ = std::process::Command::new("psql")
            .arg(&admin)
            .arg("-qc")
            .arg(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

async fn psql(url: &str, sql: &str) {
    let status = tokio::process::Command::new("psql")
        .arg(url)
        .arg("-qc")
        .arg(sql)
        .status()
        .await
        .expect("psql runs");
    assert!(status.success(), "psql {sql:?} failed");
}

pub fn fastrand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}
