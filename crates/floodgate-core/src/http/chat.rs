//! `POST /v1/chat/completions` (OpenAI) and `POST /v1/messages` (Anthropic).
//!
//! Both read the client's body into the canonical request, route it, and
//! write the answer back in the client's format, whatever format the upstream
//! spoke. Streams are passed through chunk by chunk as they arrive: nothing
//! is buffered beyond one upstream read, and dropping the response body (the
//! client went away) drops the upstream call.

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use floodgate_protocol::{
    ChatRequest, ChatResponse, Format, StreamChunk, StreamEvent, UpstreamErrorBody, Usage,
    anthropic, openai,
};
use http::{HeaderMap, HeaderName, HeaderValue, header};

use super::{ApiError, cached, json_response, read_body, respond};
use crate::admission::{self, Ask, RateHeaders};
use crate::app::AppState;
use crate::cache::Decision;
use crate::pipeline::auth::Caller;
use crate::pipeline::observe::{RequestId, RouteInfo};
use crate::providers::{ClientHints, ProviderError, Reservation, UpstreamStream, unix_now};
use crate::routing::estimate::{ChatEstimate, Tokenizer};
use crate::routing::{Admission, Route, Routed, StartedStream};
use crate::usage::{Accounting, Outcome};

pub const PROVIDER_HEADER: HeaderName = HeaderName::from_static("x-floodgate-provider");
pub const MODEL_HEADER: HeaderName = HeaderName::from_static("x-floodgate-model");
pub const ATTEMPTS_HEADER: HeaderName = HeaderName::from_static("x-floodgate-attempts");
pub const WAITED_HEADER: HeaderName = HeaderName::from_static("x-floodgate-waited-ms");
pub const HEDGED_HEADER: HeaderName = HeaderName::from_static("x-floodgate-hedged");

pub async fn chat_completions(
    State(app): State<AppState>,
    Extension(id): Extension<RequestId>,
    client: Client,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut info = RouteInfo::default();
    let result = async {
        let bytes = read_body(body, &headers, app.config.server.max_body_bytes).await?;
        let req = openai::parse_chat_request(&bytes)?;
        let admission = super::admission(&headers, &app.config.routing.wait)?;
        let hints = ClientHints::default();
        chat(&app, &client, &headers, Format::OpenAi, req, hints, admission, &id, &mut info).await
    }
    .await;
    respond(result, Format::OpenAi, info)
}

pub async fn messages(
    State(app): State<AppState>,
    Extension(id): Extension<RequestId>,
    client: Client,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut info = RouteInfo::default();
    let result = async {
        let bytes = read_body(body, &headers, app.config.server.max_body_bytes).await?;
        let req = anthropic::parse_chat_request(&bytes)?;
        let hints = ClientHints {
            anthropic_version: headers.get("anthropic-version").cloned(),
            anthropic_beta: headers.get("anthropic-beta").cloned(),
        };
        let admission = super::admission(&headers, &app.config.routing.wait)?;
        chat(&app, &client, &headers, Format::Anthropic, req, hints, admission, &id, &mut info)
            .await
    }
    .await;
    respond(result, Format::Anthropic, info)
}

/// The caller and the rate-limit headers the middleware put in extensions.
#[derive(Debug, Clone)]
pub struct Client {
    pub caller: Caller,
    pub rate: RateHeaders,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Client {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Client {
            caller: parts.extensions.get::<Caller>().cloned().unwrap_or(Caller::Anonymous),
            rate: parts.extensions.get::<RateHeaders>().cloned().unwrap_or_default(),
        })
    }
}

/// Admits a request against the key's and the end user's limits; a refusal
/// is accounted (the ledger records every request that named a model).
pub(super) async fn admit(
    app: &AppState,
    client: &Client,
    headers: &HeaderMap,
    route: &Route,
    body_user: Option<&str>,
    prompt_tokens: impl FnOnce(Tokenizer) -> u32,
    mut accounting: Accounting,
) -> Result<Accounting, ApiError> {
    let user = admission::end_user(&client.caller, headers, body_user);
    accounting.set_client(client.caller.key().map(|k| k.id.as_str()), user);
    let (tokenizer, upstream_model) = route
        .targets()
        .first()
        .map_or((Tokenizer::Approx, ""), |t| (t.tokenizer, t.model.as_str()));
    let tokens = prompt_tokens(tokenizer);
    let cost_usd =
        app.prices.cost(upstream_model, &Usage { input_tokens: tokens, ..Usage::default() });
    let ask = Ask {
        caller: &client.caller,
        user,
        model: &route.name,
        tokens: u64::from(tokens),
        cost_usd,
    };
    match app.limits.admit(&ask, &client.rate).await {
        Ok(admitted) => {
            accounting.hold(admitted);
            Ok(accounting)
        }
        Err(error) => {
            accounting.finish(Outcome::failed(error.status().as_u16(), error.kind()));
            Err(error)
        }
    }
}

#[expect(clippy::too_many_arguments, reason = "the two routes' common body")]
async fn chat(
    app: &AppState,
    client: &Client,
    headers: &HeaderMap,
    format: Format,
    req: ChatRequest,
    hints: ClientHints,
    admission: Admission,
    id: &RequestId,
    info: &mut RouteInfo,
) -> Result<Response, ApiError> {
    let route = app.router.resolve(&req.model)?;
    info.model = Some(route.name.clone());
    let route_label = match format {
        Format::Anthropic => "messages",
        Format::OpenAi | Format::Gemini => "chat",
    };
    let decision = app
        .cache
        .plan(
            route_label,
            &route.name,
            client.caller.key().map(|k| k.id.as_str()),
            headers,
            req.native.as_ref().map(|n| &n.body),
            req.temperature,
        )
        .map_err(|e| ApiError::InvalidHeader { name: e.name, message: e.message })?;
    let accounting = Accounting::new(app, id, route_label, &route.name, req.stream);
    let accounting = admit(
        app,
        client,
        headers,
        &route,
        req.user.as_deref(),
        |tokenizer| ChatEstimate::new(&req).prompt_tokens(tokenizer),
        accounting,
    )
    .await?;
    let bypass = match decision {
        Decision::Use(plan) => {
            let request =
                cached::Request { format, req, hints, route, admission, plan: plan.into() };
            return cached::serve(app, request, accounting, info).await;
        }
        Decision::Bypass => {
            app.cache.count(&route.name, crate::cache::Outcome::Bypass);
            let span = cached::lookup_span(false);
            span.set(cached::OUTCOME, crate::cache::Outcome::Bypass.as_str());
            true
        }
        Decision::Off => false,
    };
    let mark = |mut response: Response| {
        if bypass {
            response
                .headers_mut()
                .insert(crate::cache::CACHE_HEADER, HeaderValue::from_static("bypass"));
        }
        response
    };
    let result = if req.stream {
        match app.router.chat_stream(&route, &req, &hints, admission).await {
            Ok(routed) => {
                info.provider = Some(routed.provider.clone());
                return Ok(mark(stream_response(format, &req, routed, accounting, info)));
            }
            Err(error) => error,
        }
    } else {
        match app.router.chat(&route, &req, &hints, admission).await {
            Ok(routed) => {
                info.provider = Some(routed.provider.clone());
                return Ok(mark(complete_response(format, routed, accounting)));
            }
            Err(error) => error,
        }
    };
    let error = ApiError::Route(result);
    accounting.finish(Outcome::failed(error.status().as_u16(), error.kind()));
    Err(error)
}

fn complete_response(
    format: Format,
    routed: Routed<ChatResponse>,
    accounting: Accounting,
) -> Response {
    let Routed { value: mut resp, provider, model, attempts, waited, hedged } = routed;
    if resp.created == 0 {
        resp.created = unix_now();
    }
    accounting.finish(Outcome::answered(&provider, &model, resp.usage, None).attempts(attempts));
    let mut response = json_response(cached::write_response(format, &resp));
    routed_headers(response.headers_mut(), &provider, &model, attempts);
    routing_headers(response.headers_mut(), waited, hedged);
    response
}

/// `x-floodgate-waited-ms` when the request waited for capacity, and
/// `x-floodgate-hedged: true` when a hedged call answered.
pub(super) fn routing_headers(headers: &mut HeaderMap, waited: std::time::Duration, hedged: bool) {
    if !waited.is_zero() {
        headers.insert(WAITED_HEADER, HeaderValue::from(waited.as_millis() as u64));
    }
    if hedged {
        headers.insert(HEDGED_HEADER, HeaderValue::from_static("true"));
    }
}

/// `x-floodgate-provider`, `x-floodgate-model`, `x-floodgate-attempts`.
pub(super) fn routed_headers(headers: &mut HeaderMap, provider: &str, model: &str, attempts: u32) {
    if let Ok(v) = HeaderValue::from_str(provider) {
        headers.insert(PROVIDER_HEADER, v);
    }
    if let Ok(v) = HeaderValue::from_str(model) {
        headers.insert(MODEL_HEADER, v);
    }
    headers.insert(ATTEMPTS_HEADER, HeaderValue::from(attempts));
}

/// Writes canonical chunks in the client's SSE format.
pub(super) enum ClientWriter {
    OpenAi(openai::StreamWriter),
    Anthropic(anthropic::StreamWriter),
}

impl ClientWriter {
    pub(super) fn new(format: Format, req: &ChatRequest) -> Self {
        match format {
            Format::Anthropic => ClientWriter::Anthropic(anthropic::StreamWriter::new(req)),
            Format::OpenAi | Format::Gemini => ClientWriter::OpenAi(openai::StreamWriter::new(req)),
        }
    }

    pub(super) fn write(&mut self, chunk: &StreamChunk, out: &mut Vec<u8>) {
        match self {
            ClientWriter::OpenAi(w) => w.write(chunk, out),
            ClientWriter::Anthropic(w) => w.write(chunk, out),
        }
    }

    pub(super) fn finish(&mut self, out: &mut Vec<u8>) {
        match self {
            ClientWriter::OpenAi(w) => w.finish(out),
            ClientWriter::Anthropic(w) => w.finish(out),
        }
    }

    pub(super) fn write_error(&mut self, error: &UpstreamErrorBody, out: &mut Vec<u8>) {
        match self {
            ClientWriter::OpenAi(w) => w.write_error(error, out),
            ClientWriter::Anthropic(w) => w.write_error(error, out),
        }
    }
}

/// The state of a response stream between two frames.
struct Relay {
    head: VecDeque<StreamChunk>,
    rest: UpstreamStream,
    writer: ClientWriter,
    usage: Usage,
    accounting: Option<Accounting>,
    /// The key's tokens reserved for this call, settled with the final usage.
    reservation: Option<Reservation>,
    provider: String,
    model: String,
    info: RouteInfo,
    attempts: u32,
    done: bool,
}

impl Relay {
    /// The next bytes for the client, or `None` at the end.
    async fn next_frame(&mut self) -> Option<Bytes> {
        let mut out = Vec::new();
        while out.is_empty() {
            if self.done {
                return None;
            }
            let next = match self.head.pop_front() {
                Some(chunk) => Some(Ok(chunk)),
                None => self.rest.next_chunk().await,
            };
            match next {
                Some(Ok(chunk)) => {
                    for event in &chunk.events {
                        if let StreamEvent::Usage(usage) = event {
                            self.usage = *usage;
                        }
                    }
                    self.writer.write(&chunk, &mut out);
                }
                None => {
                    self.writer.finish(&mut out);
                    self.done = true;
                    self.account(None);
                }
                Some(Err(error)) => {
                    // Bytes already reached the client: no fallback is possible
                    // any more, so the stream ends with an error event.
                    self.writer.write_error(&stream_error_body(&error), &mut out);
                    self.done = true;
                    self.info.set_error(format!("stream failed mid-way: {}", error.message));
                    self.account(Some(error.label()));
                }
            }
        }
        Some(Bytes::from(out))
    }

    fn account(&mut self, error: Option<&'static str>) {
        if let Some(reservation) = self.reservation.take() {
            reservation.settle(self.usage.total());
        }
        if let Some(accounting) = self.accounting.take() {
            let ttft = self.rest.first_chunk_at().map(|t| t.duration_since(accounting.started()));
            let outcome = Outcome::answered(&self.provider, &self.model, self.usage, ttft)
                .attempts(self.attempts);
            accounting.finish(match error {
                Some(label) => outcome.with_error(label),
                None => outcome,
            });
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        // The client went away mid-stream: account for what was generated.
        if !self.done {
            self.account(Some("client_disconnected"));
        }
    }
}

pub(super) fn stream_error_body(error: &ProviderError) -> UpstreamErrorBody {
    let kind = if error.is_unavailable() { "overloaded_error" } else { "api_error" };
    UpstreamErrorBody { message: error.message.clone(), kind: Some(kind.to_string()), code: None }
}

/// The headers of every SSE response.
pub(super) fn sse_headers(headers: &mut HeaderMap) {
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Tells nginx-style proxies in front of us not to buffer the stream.
    headers.insert(HeaderName::from_static("x-accel-buffering"), HeaderValue::from_static("no"));
}

fn stream_response(
    format: Format,
    req: &ChatRequest,
    routed: Routed<StartedStream>,
    accounting: Accounting,
    info: &RouteInfo,
) -> Response {
    let Routed {
        value: StartedStream { head, rest, reservation },
        provider,
        model,
        attempts,
        waited,
        hedged,
    } = routed;
    let relay = Relay {
        head: head.into(),
        rest,
        writer: ClientWriter::new(format, req),
        usage: Usage::default(),
        accounting: Some(accounting),
        reservation: Some(reservation),
        provider: provider.clone(),
        model: model.clone(),
        info: info.clone(),
        done: false,
        attempts,
    };
    let frames = futures_util::stream::unfold(relay, |mut relay| async move {
        relay.next_frame().await.map(|bytes| (Ok::<_, Infallible>(bytes), relay))
    });
    let mut response = Body::from_stream(frames).into_response();
    let headers = response.headers_mut();
    sse_headers(headers);
    routed_headers(headers, &provider, &model, attempts);
    routing_headers(headers, waited, hedged);
    response
}

/// Why a job's attempt failed, and whether another attempt may succeed.
#[derive(Debug, Clone, PartialEq)]
pub struct JobFailure {
    pub message: String,
    /// The HTTP status a synchronous request would have got (0 for a stream
    /// that broke off).
    pub status: u16,
    /// The error's `code` (`rate_limit_exceeded`, `upstream_error`, …;
    /// `stream_failed` for a stream that broke off).
    pub code: &'static str,
    /// A rate limit, an unavailable upstream, a broken stream: try again.
    /// A bad request, an unknown or forbidden model: do not.
    pub retryable: bool,
    /// The upstream's or the limiter's `retry-after`.
    pub retry_after: Option<std::time::Duration>,
}

/// Runs a job's request as its owner's streaming request through the same
/// path as `/v1/chat/completions` or `/v1/messages` (the owner's limits and
/// budget, the cache, the router with its retries and fallbacks), calling
/// `on_text` with each piece of text as it streams, and returns the answer
/// in the request's format (a complete, non-streamed response body).
/// Dropping the future stops the request (and its upstream call).
pub(crate) async fn run_job(
    app: &AppState,
    caller: Caller,
    format: Format,
    request: &serde_json::Value,
    request_id: &str,
    admission: Admission,
    mut on_text: impl FnMut(u32, &str),
) -> Result<serde_json::Value, JobFailure> {
    use http_body_util::BodyExt;

    let permanent = |message: String, status: u16| JobFailure {
        message,
        status,
        code: "invalid_request",
        retryable: false,
        retry_after: None,
    };
    let mut body = request.clone();
    if let Some(object) = body.as_object_mut() {
        object.insert("stream".into(), serde_json::Value::Bool(true));
        if format == Format::OpenAi {
            object.insert("stream_options".into(), serde_json::json!({"include_usage": true}));
        }
    }
    let bytes = serde_json::to_vec(&body).map_err(|e| permanent(e.to_string(), 400))?;
    let req = parse_request(format, &bytes)
        .map_err(|e| permanent(format!("the job's request is invalid: {e}"), 400))?;
    // The reader of the answer needs the request; `chat` takes it.
    let mut reader = JobReader::new(format, &req);
    let client = Client { caller, rate: RateHeaders::default() };
    let id = RequestId(request_id.into());
    let mut info = RouteInfo::default();
    let headers = HeaderMap::new();
    let hints = ClientHints::default();
    let result = chat(app, &client, &headers, format, req, hints, admission, &id, &mut info).await;
    let response = match result {
        Ok(response) => response,
        Err(error) => {
            let status = error.status();
            let retry_after = match &error {
                ApiError::Limited { retry_after, .. } => *retry_after,
                _ => None,
            };
            return Err(JobFailure {
                message: format!("{}: {error}", error.kind()),
                status: status.as_u16(),
                code: error.kind(),
                retryable: status.as_u16() == 429 || status.is_server_error(),
                retry_after,
            });
        }
    };
    let broken = |message: String| JobFailure {
        message,
        status: 0,
        code: "stream_failed",
        retryable: true,
        retry_after: None,
    };
    let mut stream = response.into_body();
    let mut parser = floodgate_protocol::sse::SseParser::new(4 << 20);
    let mut collector = floodgate_protocol::StreamCollector::default();
    let mut ended = false;
    while !ended {
        let frame = match stream.frame().await {
            None => break,
            Some(Ok(frame)) => frame,
            Some(Err(error)) => return Err(broken(format!("the answer's stream failed: {error}"))),
        };
        let Ok(data) = frame.into_data() else { continue };
        parser.push(&data).map_err(|e| broken(format!("the answer's stream: {e}")))?;
        while let Some(event) = parser.next_event() {
            let chunk = reader.read(&event).map_err(|e| match e {
                floodgate_protocol::StreamError::Upstream(body) => {
                    broken(format!("the upstream failed mid-stream: {}", body.message))
                }
                other => broken(format!("the answer's stream could not be read: {other}")),
            })?;
            for event in &chunk.events {
                if let StreamEvent::Delta { choice, delta: floodgate_protocol::Delta::Text(text) } =
                    event
                {
                    on_text(*choice, text);
                }
            }
            collector.push(&chunk);
            ended |= chunk.done;
        }
    }
    let mut answer = collector
        .finish()
        .ok_or_else(|| broken("the answer's stream ended before the answer was complete".into()))?;
    if answer.created == 0 {
        answer.created = unix_now();
    }
    serde_json::from_slice(&cached::write_response(format, &answer))
        .map_err(|e| broken(format!("the answer is not JSON: {e}")))
}

/// A chat request body in `format` (`/v1/messages`' for Anthropic,
/// `/v1/chat/completions`' otherwise) read into the canonical request.
pub(super) fn parse_request(
    format: Format,
    bytes: &[u8],
) -> Result<ChatRequest, floodgate_protocol::RequestError> {
    match format {
        Format::Anthropic => anthropic::parse_chat_request(bytes),
        Format::OpenAi | Format::Gemini => openai::parse_chat_request(bytes),
    }
}

/// Reads the gateway's own SSE back into canonical chunks.
enum JobReader {
    OpenAi(openai::StreamReader),
    Anthropic(anthropic::StreamReader),
}

impl JobReader {
    fn new(format: Format, req: &ChatRequest) -> Self {
        match format {
            Format::Anthropic => JobReader::Anthropic(anthropic::StreamReader::new(req)),
            Format::OpenAi | Format::Gemini => JobReader::OpenAi(openai::StreamReader::new(req)),
        }
    }

    fn read(
        &mut self,
        event: &floodgate_protocol::sse::SseEvent,
    ) -> Result<StreamChunk, floodgate_protocol::StreamError> {
        match self {
            JobReader::OpenAi(r) => r.read(event),
            JobReader::Anthropic(r) => r.read(event),
        }
    }
}
