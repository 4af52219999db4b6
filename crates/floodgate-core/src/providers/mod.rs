//! Provider adapters and the one HTTP path every upstream call takes.
//!
//! An adapter ([`Api`], one file per wire format) only knows its format: the
//! URL path, the body, the auth header, how to read answers and errors. The
//! [`Provider`] does the I/O for all of them the same way: pooled client,
//! connect / first-byte / between-chunk / total timeouts, error
//! classification, scrubbing, upstream metrics. No adapter touches the
//! network, state or storage.

mod anthropic;
pub(crate) mod client;
mod error;
mod gemini;
pub mod keys;
pub mod limits;
mod openai;
pub mod quota;
pub mod ratelimit;
mod stream;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use floodgate_protocol::{
    ChatRequest, ChatResponse, DecodeError, EmbeddingsRequest, EmbeddingsResponse, Format,
    TranslateError, UpstreamErrorBody,
};
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use secrecy::{ExposeSecret, SecretString};

pub use error::{Disposition, ErrorKind, ProviderError, TimeoutPhase};
pub use keys::{Key, KeyPool, KeyUse, KeyView, Pick};
pub use limits::Reservation;
pub use stream::{StreamReader, UpstreamStream, unix_now};

use crate::config::{ProviderConfig, ProviderKind, Timeouts};
use crate::secrets::Scrubber;
use crate::telemetry::{self, metric};

/// Longest upstream error body we read; the rest is not worth holding.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Client headers an adapter may forward (Anthropic clients choose their API
/// version and beta features).
#[derive(Debug, Clone, Default)]
pub struct ClientHints {
    pub anthropic_version: Option<HeaderValue>,
    pub anthropic_beta: Option<HeaderValue>,
}

/// An upstream request an adapter wants sent: a path under the base URL and a body.
#[derive(Debug)]
pub struct Call {
    pub path: String,
    pub body: Vec<u8>,
}

/// One wire format's view of an upstream API.
pub trait Api: Send + Sync + fmt::Debug {
    fn format(&self) -> Format;
    fn chat(&self, req: &ChatRequest, model: &str) -> Result<Call, TranslateError>;
    fn read_chat(
        &self,
        req: &ChatRequest,
        model: &str,
        body: Bytes,
    ) -> Result<ChatResponse, DecodeError>;
    fn stream_reader(&self, req: &ChatRequest, model: &str) -> StreamReader;
    /// `None` when the API has no embeddings.
    fn embeddings(
        &self,
        req: &EmbeddingsRequest,
        model: &str,
    ) -> Option<Result<Call, TranslateError>>;
    fn read_embeddings(&self, model: &str, body: Bytes) -> Result<EmbeddingsResponse, DecodeError>;
    fn read_error(&self, body: &[u8]) -> Option<UpstreamErrorBody>;
    /// Auth and format headers for one request.
    fn headers(&self, key: Option<&SecretString>, hints: &ClientHints, headers: &mut HeaderMap);
}

/// A configured provider: its adapter, keys, client and limits.
#[derive(Debug)]
pub struct Provider {
    pub name: String,
    pub kind: ProviderKind,
    pub base_url: String,
    pub keys: KeyPool,
    api: Box<dyn Api>,
    http: client::HttpClients,
    timeouts: Timeouts,
    extra_headers: HeaderMap,
    scrubber: Arc<Scrubber>,
}

/// A provider could not be built from its config.
#[derive(Debug, thiserror::Error)]
#[error("provider {name:?}: {message}")]
pub struct BuildError {
    pub name: String,
    pub message: String,
}

impl Provider {
    /// `base_url` is the config's, or the in-process mock's address;
    /// `workers` is the number of serving threads (one connection pool each).
    pub fn new(
        config: &ProviderConfig,
        base_url: String,
        workers: usize,
        scrubber: Arc<Scrubber>,
        alerts: Arc<crate::alerts::Alerts>,
        signal: Arc<crate::routing::wait::CapacitySignal>,
    ) -> Result<Provider, BuildError> {
        let fail = |message: String| BuildError { name: config.name.clone(), message };
        let api: Box<dyn Api> = match config.kind {
            ProviderKind::Openai => Box::new(openai::OpenAiApi::new(openai::Dialect::OpenAi)),
            ProviderKind::OpenaiCompatible | ProviderKind::Mock => {
                Box::new(openai::OpenAiApi::new(openai::Dialect::Compatible))
            }
            ProviderKind::Anthropic => Box::new(anthropic::AnthropicApi),
            ProviderKind::Gemini => Box::new(gemini::GeminiApi),
        };
        let mut extra_headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let name = HeaderName::try_from(name.as_str())
                .map_err(|_| fail(format!("header name {name:?} is not valid")))?;
            let value = HeaderValue::try_from(value.as_str())
                .map_err(|_| fail(format!("header {name} has a value that is not valid")))?;
            extra_headers.insert(name, value);
        }
        extra_headers.insert(
            http::header::USER_AGENT,
            HeaderValue::from_static(concat!("floodgate/", env!("CARGO_PKG_VERSION"))),
        );
        extra_headers
            .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let http = client::HttpClients::new(config, workers)
            .map_err(|e| fail(format!("cannot build its HTTP client: {e}")))?;
        Ok(Provider {
            name: config.name.clone(),
            kind: config.kind,
            base_url,
            keys: KeyPool::new(
                &config.name,
                &config.keys,
                &crate::config::KeyConfig {
                    rpm: config.rpm,
                    tpm: config.tpm,
                    daily_requests: config.daily_requests,
                    daily_tokens: config.daily_tokens,
                    ..crate::config::KeyConfig::plain("")
                },
                alerts,
                signal,
            ),
            api,
            http,
            timeouts: config.timeouts,
            extra_headers,
            scrubber,
        })
    }

    pub fn format(&self) -> Format {
        self.api.format()
    }

    pub async fn chat(
        &self,
        req: &ChatRequest,
        model: &str,
        key: Option<&Key>,
        hints: &ClientHints,
    ) -> Result<ChatResponse, ProviderError> {
        let call = self.api.chat(req, model).map_err(translate_error)?;
        self.exchange(call, model, key, hints, |body| self.api.read_chat(req, model, body)).await
    }

    /// Sends a streaming request and returns once the response head is in.
    pub async fn chat_stream(
        &self,
        req: &ChatRequest,
        model: &str,
        key: Option<&Key>,
        hints: &ClientHints,
    ) -> Result<UpstreamStream, ProviderError> {
        let call = self.api.chat(req, model).map_err(translate_error)?;
        let started = Instant::now();
        let deadline = started + self.timeouts.total;
        let response = self.send(call, key, hints, deadline).await;
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                self.observe(model, started, Some(&e));
                return Err(e);
            }
        };
        Ok(UpstreamStream::new(
            response,
            self.api.stream_reader(req, model),
            StreamLimits { chunk: self.timeouts.chunk, deadline },
            self.name.clone(),
            model.to_string(),
            started,
            self.scrubber.clone(),
        ))
    }

    pub async fn embeddings(
        &self,
        req: &EmbeddingsRequest,
        model: &str,
        key: Option<&Key>,
    ) -> Result<EmbeddingsResponse, ProviderError> {
        let call = match self.api.embeddings(req, model) {
            Some(call) => call.map_err(translate_error)?,
            None => {
                return Err(ProviderError::new(
                    ErrorKind::Unsupported,
                    format!("{} ({}) has no embeddings API", self.name, self.kind.as_str()),
                ));
            }
        };
        let hints = ClientHints::default();
        self.exchange(call, model, key, &hints, |body| self.api.read_embeddings(model, body)).await
    }

    /// One complete (non-streamed) exchange: send, read the whole body within
    /// the total deadline, decode it with `read`, and record the outcome.
    async fn exchange<T>(
        &self,
        call: Call,
        model: &str,
        key: Option<&Key>,
        hints: &ClientHints,
        read: impl FnOnce(Bytes) -> Result<T, DecodeError>,
    ) -> Result<T, ProviderError> {
        let started = Instant::now();
        let deadline = started + self.timeouts.total;
        let result = async {
            let response = self.send(call, key, hints, deadline).await?;
            let body = tokio::time::timeout_at(deadline.into(), response.into_body().collect())
                .await
                .map_err(|_| self.timeout(TimeoutPhase::Total))?
                .map_err(|e| self.transport_error(&e, false))?
                .to_bytes();
            read(body).map_err(|e| self.decode_error(&e))
        }
        .await;
        self.observe(model, started, result.as_ref().err());
        result
    }

    /// Sends the call and waits for a successful response head.
    async fn send(
        &self,
        call: Call,
        key: Option<&Key>,
        hints: &ClientHints,
        deadline: Instant,
    ) -> Result<http::Response<Incoming>, ProviderError> {
        let uri = format!("{}{}", self.base_url, call.path);
        let mut request =
            http::Request::post(uri).body(client::Body::from(call.body)).map_err(|e| {
                ProviderError::new(
                    ErrorKind::Connect,
                    format!("{}: bad request URL: {e}", self.name),
                )
            })?;
        *request.headers_mut() = self.extra_headers.clone();
        self.api.headers(key.map(|k| &k.secret), hints, request.headers_mut());
        // The call's `upstream` span as the parent of the provider's own spans.
        crate::telemetry::trace::inject(request.headers_mut());
        let first_byte = deadline.min(Instant::now() + self.timeouts.first_byte);
        let phase =
            if first_byte < deadline { TimeoutPhase::FirstByte } else { TimeoutPhase::Total };
        let response = tokio::time::timeout_at(first_byte.into(), self.http.get().request(request))
            .await
            .map_err(|_| self.timeout(phase))?
            .map_err(|e| self.transport_error(&e, e.is_connect()))?;
        let status = response.status();
        crate::telemetry::trace::set_current(
            "http.response.status_code",
            i64::from(status.as_u16()),
        );
        let key_index = key.map(|k| k.index);
        let observed = ratelimit::read(self.format(), response.headers());
        self.keys.observe(key_index, &observed);
        if status.is_success() {
            return Ok(response);
        }
        let mut retry_after = retry_after(response.headers());
        if status.as_u16() == 429 && retry_after.is_none() {
            // The provider's own word on when this key has room again: the
            // reset of whichever limit it says is spent.
            retry_after = [observed.requests, observed.tokens]
                .into_iter()
                .filter(|r| r.remaining == Some(0))
                .filter_map(|r| r.reset)
                .max();
        }
        let body = read_limited(response, deadline).await;
        let upstream = self.api.read_error(&body).map(|mut e| {
            e.message = self.scrubber.scrub(&e.message).into_owned();
            e
        });
        let detail = match &upstream {
            Some(e) => e.message.clone(),
            None => self
                .scrubber
                .scrub(&String::from_utf8_lossy(&body[..body.len().min(200)]))
                .into_owned(),
        };
        Err(ProviderError {
            kind: ErrorKind::Status(status.as_u16()),
            message: format!("{} answered {}: {}", self.name, status.as_u16(), detail),
            upstream: upstream.map(Box::new),
            retry_after,
            // The router records the key on every failed call.
            key: None,
        })
    }

    fn timeout(&self, phase: TimeoutPhase) -> ProviderError {
        let (what, after) = match phase {
            TimeoutPhase::FirstByte => ("for the response", self.timeouts.first_byte),
            TimeoutPhase::BetweenChunks => ("between stream chunks", self.timeouts.chunk),
            TimeoutPhase::Total => ("for the whole exchange", self.timeouts.total),
        };
        ProviderError::new(
            ErrorKind::Timeout(phase),
            format!(
                "{} timed out waiting {what} after {}",
                self.name,
                humantime::format_duration(after)
            ),
        )
    }

    fn transport_error(
        &self,
        err: &(dyn std::error::Error + 'static),
        connect: bool,
    ) -> ProviderError {
        let what = if connect { "cannot connect" } else { "connection failed" };
        // The innermost cause says what happened ("Connection refused"); the
        // outer layers only say that a request failed.
        let message =
            self.scrubber.scrub(&format!("{}: {what}: {}", self.name, innermost(err))).into_owned();
        ProviderError::new(ErrorKind::Connect, message)
    }

    fn decode_error(&self, err: &DecodeError) -> ProviderError {
        ProviderError::new(
            ErrorKind::Decode,
            format!(
                "{} sent an answer that is not valid {}: {}",
                self.name,
                self.format().as_str(),
                err
            ),
        )
    }

    fn observe(&self, model: &str, started: Instant, error: Option<&ProviderError>) {
        let outcome = error.map_or("ok", ProviderError::label);
        let labels = [("provider", self.name.as_str()), ("model", model), ("outcome", outcome)];
        telemetry::histogram(metric::UPSTREAM_DURATION, &labels).record(started.elapsed());
        if let Some(error) = error {
            let labels = [("provider", self.name.as_str()), ("kind", error.label())];
            telemetry::counter(metric::UPSTREAM_ERRORS, &labels).increment(1);
        }
    }
}

/// Deadlines of a stream after its head arrived.
#[derive(Debug, Clone, Copy)]
pub struct StreamLimits {
    pub chunk: Duration,
    pub deadline: Instant,
}

fn translate_error(err: TranslateError) -> ProviderError {
    ProviderError::new(ErrorKind::Translate, err.message)
}

/// The message of the deepest error in `err`'s source chain.
pub(crate) fn innermost(err: &(dyn std::error::Error + 'static)) -> String {
    let mut current = err;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

async fn read_limited(response: http::Response<Incoming>, deadline: Instant) -> Vec<u8> {
    let mut incoming = response.into_body();
    let mut body = Vec::new();
    let read = async {
        while let Some(Ok(frame)) = incoming.frame().await {
            let Ok(chunk) = frame.into_data() else { continue };
            let room = MAX_ERROR_BODY.saturating_sub(body.len());
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if body.len() >= MAX_ERROR_BODY {
                break;
            }
        }
    };
    // An error body that never ends is still an error; what we have will do.
    let _ = tokio::time::timeout_at(deadline.into(), read).await;
    body
}

/// `retry-after-ms` (OpenAI), else `retry-after` as seconds or an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(ms) = text("retry-after-ms").and_then(|v| v.parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    let value = text("retry-after")?;
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(std::time::SystemTime::now()).unwrap_or(Duration::ZERO))
}

/// Puts `key` in `name`, marked sensitive so no layer logs it.
fn set_secret_header(headers: &mut HeaderMap, name: HeaderName, prefix: &str, key: &SecretString) {
    let value = format!("{prefix}{}", key.expose_secret());
    if let Ok(mut value) = HeaderValue::try_from(value) {
        value.set_sensitive(true);
        headers.insert(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert("retry-after-ms", HeaderValue::from_static("1500"));
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(1500)));
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"));
        assert_eq!(retry_after(&headers), Some(Duration::ZERO));
        headers.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers), None);
    }
}
