//! The life of a request common to every provider: reading and recording it, checking its key,
//! playing a queued script, misbehaving on purpose (magic model names, random errors, latency)
//! and charging its answer to the key's rate limit. Also owns the providers' error shapes.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};

use crate::limit::{Quota, Refusal, Verdict, go_duration};
use crate::server::ConnCtx;
use crate::state::{Counters, Shared};
use crate::stream::write_json;
use crate::{ErrorKind, Recorded, script};

/// The largest request body the mock reads.
const BODY_LIMIT: usize = 64 * 1024 * 1024;

/// Which API a route belongs to, and so which error shape and key header it uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Provider {
    OpenAi,
    Anthropic,
    Gemini,
}

/// The classes of error the mock answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    /// Too many requests (OpenAI's error type `requests`).
    RateLimited,
    /// Too many tokens (OpenAI's error type `tokens`).
    TokensLimited,
    Internal,
}

impl Fault {
    fn status(self) -> StatusCode {
        match self {
            Fault::BadRequest => StatusCode::BAD_REQUEST,
            Fault::Unauthorized => StatusCode::UNAUTHORIZED,
            Fault::Forbidden => StatusCode::FORBIDDEN,
            Fault::NotFound => StatusCode::NOT_FOUND,
            Fault::RateLimited | Fault::TokensLimited => StatusCode::TOO_MANY_REQUESTS,
            Fault::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// OpenAI's `type` and `code` for this fault.
    fn openai(self) -> (&'static str, Option<&'static str>) {
        match self {
            Fault::BadRequest | Fault::NotFound => ("invalid_request_error", None),
            Fault::Unauthorized => ("invalid_request_error", Some("invalid_api_key")),
            Fault::Forbidden => ("invalid_request_error", Some("insufficient_permissions")),
            Fault::RateLimited => ("requests", Some("rate_limit_exceeded")),
            Fault::TokensLimited => ("tokens", Some("rate_limit_exceeded")),
            Fault::Internal => ("server_error", None),
        }
    }

    /// Anthropic's error `type` for this fault.
    fn anthropic(self) -> &'static str {
        match self {
            Fault::BadRequest => "invalid_request_error",
            Fault::Unauthorized => "authentication_error",
            Fault::Forbidden => "permission_error",
            Fault::NotFound => "not_found_error",
            Fault::RateLimited | Fault::TokensLimited => "rate_limit_error",
            Fault::Internal => "api_error",
        }
    }

    /// Gemini's (Google RPC) `status` for this fault.
    fn gemini(self) -> &'static str {
        match self {
            Fault::BadRequest => "INVALID_ARGUMENT",
            Fault::Unauthorized => "UNAUTHENTICATED",
            Fault::Forbidden => "PERMISSION_DENIED",
            Fault::NotFound => "NOT_FOUND",
            Fault::RateLimited | Fault::TokensLimited => "RESOURCE_EXHAUSTED",
            Fault::Internal => "INTERNAL",
        }
    }
}

/// An error response in `provider`'s documented shape. `retry_after` adds a `retry-after`
/// header (and, for Gemini, a `RetryInfo` detail).
pub(crate) fn error_response(
    provider: Provider,
    fault: Fault,
    message: &str,
    retry_after: Option<u64>,
) -> Response {
    let body = match provider {
        Provider::OpenAi => {
            let (kind, code) = fault.openai();
            json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
        }
        Provider::Anthropic => {
            json!({"type": "error", "error": {"type": fault.anthropic(), "message": message}})
        }
        Provider::Gemini => {
            let mut error = json!({
                "code": fault.status().as_u16(),
                "message": message,
                "status": fault.gemini(),
            });
            if let (Some(secs), Some(map)) = (retry_after, error.as_object_mut()) {
                let detail = json!({
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": format!("{secs}s"),
                });
                map.insert("details".to_owned(), Value::Array(vec![detail]));
            }
            json!({ "error": error })
        }
    };
    let mut response = json_response(fault.status(), &body);
    if let Some(secs) = retry_after {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

/// An error answer not yet rendered; small, so that functions can return it in a `Result`.
#[derive(Debug)]
pub(crate) struct ApiError {
    provider: Provider,
    fault: Fault,
    message: Cow<'static, str>,
}

impl ApiError {
    pub(crate) fn new(
        provider: Provider,
        fault: Fault,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self { provider, fault, message: message.into() }
    }

    pub(crate) fn bad_request(provider: Provider, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(provider, Fault::BadRequest, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error_response(self.provider, self.fault, &self.message, None)
    }
}

/// A JSON response with this status.
pub(crate) fn json_response(status: StatusCode, value: &impl Serialize) -> Response {
    let mut bytes = Vec::with_capacity(512);
    write_json(&mut bytes, value);
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A request read in full, with the connection it came on.
pub(crate) struct Incoming {
    pub(crate) parts: Parts,
    /// The body parsed as JSON; `None` when it is empty or not JSON.
    pub(crate) json: Option<Value>,
    pub(crate) conn: Arc<ConnCtx>,
}

impl Incoming {
    /// Reads the body, counts the request and records it when recording is on.
    pub(crate) async fn read(
        shared: &Shared,
        request: Request,
        provider: Provider,
    ) -> Result<Incoming, Response> {
        let received_at = Instant::now();
        Counters::bump(&shared.stats.requests);
        let (parts, body) = request.into_parts();
        let conn =
            parts.extensions.get::<Arc<ConnCtx>>().cloned().unwrap_or_else(ConnCtx::detached);
        let bytes = match axum::body::to_bytes(body, BODY_LIMIT).await {
            Ok(bytes) => bytes,
            Err(error) => {
                let message = format!("could not read the request body: {error}");
                return Err(error_response(provider, Fault::BadRequest, &message, None));
            }
        };
        let json = if bytes.is_empty() { None } else { serde_json::from_slice(&bytes).ok() };
        if shared.recording() {
            shared.record(recorded(&parts, json.as_ref(), received_at));
        }
        Ok(Incoming { parts, json, conn })
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.parts.headers.get(name).and_then(|value| value.to_str().ok())
    }

    pub(crate) fn query_param(&self, name: &str) -> Option<&str> {
        self.parts.uri.query()?.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key == name).then_some(value)
        })
    }

    /// The API key in the provider's own place: `Authorization: Bearer` (OpenAI), `x-api-key`
    /// (Anthropic), `x-goog-api-key` or `?key=` (Gemini). Empty keys count as missing.
    pub(crate) fn api_key(&self, provider: Provider) -> Option<&str> {
        let key = match provider {
            Provider::OpenAi => {
                self.header("authorization").and_then(|value| value.strip_prefix("Bearer "))
            }
            Provider::Anthropic => self.header("x-api-key"),
            Provider::Gemini => self.header("x-goog-api-key").or_else(|| self.query_param("key")),
        };
        key.map(str::trim).filter(|key| !key.is_empty())
    }

    /// Rejects a missing key, a key starting with `invalid` (401) or `forbidden` (403), in the
    /// provider's shape. OpenAI's 401 echoes the whole key, as the real API echoes part of it.
    pub(crate) fn check_key(&self, provider: Provider) -> Result<(), ApiError> {
        let Some(key) = self.api_key(provider) else {
            return Err(ApiError::new(provider, Fault::Unauthorized, missing_key(provider)));
        };
        if key.starts_with("invalid") {
            let message = match provider {
                Provider::OpenAi => format!(
                    "Incorrect API key provided: {key}. You can find your API key at \
                     https://platform.openai.com/account/api-keys."
                ),
                Provider::Anthropic => "invalid x-api-key".to_owned(),
                Provider::Gemini => "API key not valid. Please pass a valid API key.".to_owned(),
            };
            return Err(ApiError::new(provider, Fault::Unauthorized, message));
        }
        if key.starts_with("forbidden") {
            let message = "This API key does not have permission to use the specified resource.";
            return Err(ApiError::new(provider, Fault::Forbidden, message));
        }
        Ok(())
    }
}

fn missing_key(provider: Provider) -> &'static str {
    match provider {
        Provider::OpenAi => {
            "You didn't provide an API key. You need to provide your API key in an Authorization \
             header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
        }
        Provider::Anthropic => "x-api-key header is required",
        Provider::Gemini => {
            "Method doesn't allow unregistered callers (callers without established identity). \
             Please use API Key or other form of API consumer identity to call this API."
        }
    }
}

fn recorded(parts: &Parts, json: Option<&Value>, received_at: Instant) -> Recorded {
    let headers = parts
        .headers
        .iter()
        .map(|(name, value)| {
            (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned())
        })
        .collect();
    Recorded {
        version: format!("{:?}", parts.version),
        method: parts.method.as_str().to_owned(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers,
        body: json.cloned().unwrap_or(Value::Null),
        received_at,
    }
}

/// A chat/messages/embeddings request past the key check, with a JSON body.
pub(crate) struct Call {
    pub(crate) shared: Arc<Shared>,
    pub(crate) provider: Provider,
    pub(crate) incoming: Incoming,
    pub(crate) body: Value,
}

impl Call {
    /// Reads the request and runs the checks every model call gets. `Err` is the response to
    /// send instead of a default answer: a key or header error, a played script, or a 400 for a
    /// body that is not JSON.
    pub(crate) async fn begin(
        shared: &Arc<Shared>,
        request: Request,
        provider: Provider,
    ) -> Result<Call, Response> {
        let incoming = Self::admit(shared, request, provider).await?;
        Self::proceed(shared, incoming, provider).await
    }

    /// The first half of [`Call::begin`]: reads the request and checks its key and headers.
    pub(crate) async fn admit(
        shared: &Arc<Shared>,
        request: Request,
        provider: Provider,
    ) -> Result<Incoming, Response> {
        let incoming = Incoming::read(shared, request, provider).await?;
        incoming.check_key(provider).map_err(IntoResponse::into_response)?;
        if provider == Provider::Anthropic && incoming.header("anthropic-version").is_none() {
            let message = "anthropic-version: header is required";
            return Err(error_response(provider, Fault::BadRequest, message, None));
        }
        Ok(incoming)
    }

    /// The second half of [`Call::begin`]: plays a queued script or parses the body.
    pub(crate) async fn proceed(
        shared: &Arc<Shared>,
        mut incoming: Incoming,
        provider: Provider,
    ) -> Result<Call, Response> {
        if let Some(script) = shared.take_script() {
            sleep(shared.config.latency).await;
            return Err(script::play(shared, &incoming.conn, script).await);
        }
        let Some(body) = incoming.json.take() else {
            return Err(error_response(provider, Fault::BadRequest, invalid_json(provider), None));
        };
        Ok(Call { shared: Arc::clone(shared), provider, incoming, body })
    }

    /// A 400 in this call's provider shape.
    pub(crate) fn bad_request(&self, message: &str) -> Response {
        error_response(self.provider, Fault::BadRequest, message, None)
    }

    /// Waits the configured latency (plus `slow-<ms>` from the model name), then returns the
    /// failure this request must get, if any: a magic model name first, else a random error at
    /// `error_rate`. Hanging and resetting never return.
    pub(crate) async fn settle(&self, model: &str) -> Option<Response> {
        let config = &self.shared.config;
        let (magic, slow) = magic(model);
        sleep(config.latency + slow).await;
        let misbehaviour = magic.or_else(|| {
            (config.error_rate > 0.0 && fastrand::f64() < config.error_rate)
                .then_some(Misbehaviour::from(config.error_kind))
        })?;
        Some(self.misbehave(misbehaviour).await)
    }

    /// Charges this answer (one request and `tokens`, the usage it reports) to its key's rate
    /// limit. `Err` is the 429 to send instead (boxed: a response is large, and this is the rare
    /// path); `Ok` stamps the rate-limit headers on the answer. Does nothing when rate limiting
    /// is off.
    pub(crate) fn charge(&self, model: &str, tokens: u64) -> Result<Charged, Box<Response>> {
        let provider = self.provider;
        let Some(limiter) = &self.shared.limiter else {
            return Ok(Charged { provider, verdict: None });
        };
        // The key check has passed, so the key is there.
        let key = self.incoming.api_key(provider).unwrap_or_default();
        let verdict = limiter.charge(key, tokens);
        match &verdict.refused {
            None => Ok(Charged { provider, verdict: Some(verdict) }),
            Some(refusal) => {
                Counters::bump(&self.shared.stats.rate_limited);
                let fault = match refusal.quota {
                    Quota::Requests => Fault::RateLimited,
                    Quota::Tokens => Fault::TokensLimited,
                };
                let message = rate_limit_message(provider, model, refusal, &verdict);
                let response =
                    error_response(provider, fault, &message, Some(refusal.retry_after()));
                Err(Box::new(Charged { provider, verdict: Some(verdict) }.stamp(response)))
            }
        }
    }

    async fn misbehave(&self, misbehaviour: Misbehaviour) -> Response {
        let provider = self.provider;
        match misbehaviour {
            Misbehaviour::Status500 => {
                error_response(provider, Fault::Internal, "The server had an error.", None)
            }
            Misbehaviour::Status429 => {
                let retry = Some(self.shared.config.retry_after_secs);
                error_response(provider, Fault::RateLimited, "Rate limit reached.", retry)
            }
            Misbehaviour::Status401 => {
                error_response(provider, Fault::Unauthorized, "Invalid authentication.", None)
            }
            Misbehaviour::Hang => hang(&self.shared, &self.incoming.conn).await,
            Misbehaviour::Reset => reset(&self.incoming.conn).await,
        }
    }
}

/// An answer charged to its key's rate limit, waiting for its headers.
#[must_use = "the answer must be stamped with the rate-limit headers"]
pub(crate) struct Charged {
    provider: Provider,
    verdict: Option<Verdict>,
}

impl Charged {
    /// Adds the rate-limit headers (none when rate limiting is off, or for Gemini).
    pub(crate) fn stamp(&self, mut response: Response) -> Response {
        if let Some(verdict) = &self.verdict {
            verdict.write_headers(self.provider, response.headers_mut());
        }
        response
    }
}

/// The message of a rate-limit 429, after each provider's own.
fn rate_limit_message(
    provider: Provider,
    model: &str,
    refusal: &Refusal,
    verdict: &Verdict,
) -> String {
    let (what, short) = match refusal.quota {
        Quota::Requests => ("requests", "RPM"),
        Quota::Tokens => ("tokens", "TPM"),
    };
    let (limit, used) = verdict.meter(refusal.quota).map_or((0, 0), |m| (m.limit, m.used));
    match provider {
        Provider::OpenAi => format!(
            "Rate limit reached for {model} on {what} per min ({short}): Limit {limit}, Used \
             {used}, Requested {}. Please try again in {}. Visit \
             https://platform.openai.com/account/rate-limits to learn more.",
            refusal.requested,
            go_duration(refusal.wait)
        ),
        Provider::Anthropic => format!(
            "This request would exceed your rate limit of {limit} {what} per minute. You can see \
             the response headers for current usage. Please try again later."
        ),
        Provider::Gemini => "Resource has been exhausted (e.g. check quota).".to_owned(),
    }
}

fn invalid_json(provider: Provider) -> &'static str {
    match provider {
        Provider::OpenAi => {
            "We could not parse the JSON body of your request. (HINT: This likely means you \
             aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, \
             but what was sent was not valid JSON.)"
        }
        Provider::Anthropic => "There was an error parsing the body of your request.",
        Provider::Gemini => "Invalid JSON payload received.",
    }
}

/// Sleeps, unless the duration is zero (the benchmark path must not touch the timer).
pub(crate) async fn sleep(duration: Duration) {
    if !duration.is_zero() {
        tokio::time::sleep(duration).await;
    }
}

/// A failure forced on a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Misbehaviour {
    Status500,
    Status429,
    Status401,
    Hang,
    Reset,
}

impl From<ErrorKind> for Misbehaviour {
    fn from(kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::Status500 => Misbehaviour::Status500,
            ErrorKind::Status429 => Misbehaviour::Status429,
            ErrorKind::Hang => Misbehaviour::Hang,
            ErrorKind::Reset => Misbehaviour::Reset,
        }
    }
}

/// The misbehaviour a model name asks for, and the extra latency of `slow-<ms>`.
fn magic(model: &str) -> (Option<Misbehaviour>, Duration) {
    let misbehaviour = [
        ("error-500", Misbehaviour::Status500),
        ("error-429", Misbehaviour::Status429),
        ("error-401", Misbehaviour::Status401),
        ("hang", Misbehaviour::Hang),
        ("reset", Misbehaviour::Reset),
    ]
    .into_iter()
    .find_map(|(name, misbehaviour)| model.contains(name).then_some(misbehaviour));
    let slow = model
        .split_once("slow-")
        .map(|(_, rest)| {
            let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
            rest[..digits].parse().unwrap_or(0)
        })
        .map_or(Duration::ZERO, Duration::from_millis);
    (misbehaviour, slow)
}

/// Never answers: waits until the client goes away (the connection drops this future) or the
/// server shuts down (then the connection is closed without an answer).
pub(crate) async fn hang(shared: &Shared, conn: &ConnCtx) -> Response {
    let _hung = HungGuard::new(&shared.stats);
    shared.shutdown.cancelled().await;
    conn.close();
    std::future::pending().await
}

/// Resets the connection before any response byte.
pub(crate) async fn reset(conn: &ConnCtx) -> Response {
    conn.reset();
    std::future::pending().await
}

/// Counts a request in `hung` while it exists.
struct HungGuard<'a>(&'a Counters);

impl<'a> HungGuard<'a> {
    fn new(counters: &'a Counters) -> Self {
        Counters::bump(&counters.hung);
        Self(counters)
    }
}

impl Drop for HungGuard<'_> {
    fn drop(&mut self) {
        self.0.hung.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_names() {
        assert_eq!(magic("gpt-4o"), (None, Duration::ZERO));
        assert_eq!(magic("mock-error-500"), (Some(Misbehaviour::Status500), Duration::ZERO));
        assert_eq!(magic("error-429"), (Some(Misbehaviour::Status429), Duration::ZERO));
        assert_eq!(magic("x-error-401-y"), (Some(Misbehaviour::Status401), Duration::ZERO));
        assert_eq!(magic("mock-hang"), (Some(Misbehaviour::Hang), Duration::ZERO));
        assert_eq!(magic("mock-reset"), (Some(Misbehaviour::Reset), Duration::ZERO));
        assert_eq!(magic("mock-slow-250"), (None, Duration::from_millis(250)));
        assert_eq!(
            magic("slow-40-error-500"),
            (Some(Misbehaviour::Status500), Duration::from_millis(40))
        );
        assert_eq!(magic("slow-"), (None, Duration::ZERO));
    }
}
