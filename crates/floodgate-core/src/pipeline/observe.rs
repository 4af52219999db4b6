//! Request id, in-flight gauge, HTTP metrics and the one log line per request.
//!
//! The request id is the client's `x-request-id` when it is a sane token (so
//! ids follow a request across the app's services), else a new UUID; it is
//! put in the request's extensions, the tracing span and the response.
//! Metrics and the log line are emitted when the response body ends or is
//! dropped, so a stream is measured to its last byte and a client's
//! disconnect is seen. Handlers describe what they did in a [`RouteInfo`]
//! response extension; errors are logged here, once, never where they arise.
//! With traces on, the request's server span starts here (its parent the
//! client's `traceparent`, if any), is current while the handler runs, and
//! ends with the body.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use http_body::{Body as HttpBody, Frame, SizeHint};
use tracing::Instrument;

use crate::telemetry::trace::{Span, Traces};
use crate::telemetry::{self, metric};

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The log target of the one line per request.
pub const ACCESS: &str = "floodgate::access";

/// The request's id, in request extensions.
#[derive(Debug, Clone)]
pub struct RequestId(pub Arc<str>);

/// What a handler did, attached to its response for the edge log and metrics.
#[derive(Debug, Clone, Default)]
pub struct RouteInfo {
    pub model: Option<String>,
    pub provider: Option<String>,
    /// Filled in by the handler, or later by a stream that fails mid-way.
    pub error: Arc<Mutex<Option<String>>>,
}

impl RouteInfo {
    pub fn set_error(&self, message: impl Into<String>) {
        if let Ok(mut slot) = self.error.lock() {
            *slot = Some(message.into());
        }
    }
}

fn valid_request_id(value: &HeaderValue) -> Option<&str> {
    let text = value.to_str().ok()?;
    let ok = !text.is_empty()
        && text.len() <= 128
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    ok.then_some(text)
}

pub async fn observe(
    State(traces): State<Option<Arc<Traces>>>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let id: Arc<str> = match request.headers().get(&REQUEST_ID).and_then(valid_request_id) {
        Some(id) => id.into(),
        // A v4 UUID from a fast user-space generator: `Uuid::new_v4` makes a
        // `getrandom` system call per request, and ids need not be secret.
        None => uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes())
            .into_uuid()
            .to_string()
            .into(),
    };
    request.extensions_mut().insert(RequestId(id.clone()));
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = request.method().clone();
    // A debug-level span: formatting span fields for every request costs ~2 %
    // of throughput, so at the default level the id travels on the lines
    // that matter (failures) instead.
    let span = tracing::debug_span!("request", id = %id, method = %method, route = %route);
    let trace = match &traces {
        Some(traces) if !is_probe(&route) => traces.server(&request, &route),
        _ => Span::NONE,
    };
    trace.set_str("floodgate.request_id", &id);
    telemetry::gauge(metric::HTTP_IN_FLIGHT, &[]).increment(1.0);
    let mut response = trace.run(next.run(request).instrument(span.clone())).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    let info = response.extensions().get::<RouteInfo>().cloned().unwrap_or_default();
    let guard = Finish {
        id,
        started,
        route,
        status: response.status().as_u16(),
        info,
        span,
        trace,
        // An empty body is never polled at all.
        completed: response.body().is_end_stream(),
    };
    response.map(|body| Body::new(ObservedBody { inner: body, guard }))
}

/// Health checks and scrapes, which come every few seconds from every load
/// balancer and Prometheus: measured and logged, but not traced.
fn is_probe(route: &str) -> bool {
    matches!(route, "/health" | "/health/ready" | "/metrics")
}

/// Records the request when dropped (body finished, failed or abandoned).
struct Finish {
    id: Arc<str>,
    started: Instant,
    route: String,
    status: u16,
    info: RouteInfo,
    span: tracing::Span,
    /// Ends (as a field, after `drop` has set its attributes) with the request.
    trace: Span,
    completed: bool,
}

impl Finish {
    /// The server span's outcome; no attribute names a key, a body or a prompt.
    fn trace_outcome(&self) {
        let trace = &self.trace;
        if !trace.is_recording() {
            return;
        }
        trace.set("http.response.status_code", i64::from(self.status));
        if let Some(model) = &self.info.model {
            trace.set_str("floodgate.model", model);
        }
        if let Some(provider) = &self.info.provider {
            trace.set_str("floodgate.provider", provider);
        }
        if !self.completed {
            trace.set("floodgate.client_aborted", true);
        }
        // Server spans fail on 5xx only; a 4xx is the client's.
        if self.status >= 500 {
            trace.fail(&itoa_status(self.status));
        }
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        let elapsed = self.started.elapsed();
        let model = self.info.model.clone().unwrap_or_else(|| "none".to_string());
        let provider = self.info.provider.clone().unwrap_or_else(|| "none".to_string());
        let status = itoa_status(self.status);
        let labels = [
            ("route", self.route.as_str()),
            ("model", model.as_str()),
            ("provider", provider.as_str()),
            ("status", status.as_str()),
        ];
        telemetry::counter(metric::HTTP_REQUESTS, &labels).increment(1);
        telemetry::histogram(metric::HTTP_DURATION, &labels).record(elapsed);
        telemetry::gauge(metric::HTTP_IN_FLIGHT, &[]).decrement(1.0);
        self.trace_outcome();
        let error = self.info.error.lock().ok().and_then(|e| e.clone());
        let _enter = self.span.enter();
        // Milliseconds, to the microsecond.
        let ms = (elapsed.as_secs_f64() * 1_000_000.0).round() / 1000.0;
        // Failures at warn; every request at debug (the ledger and metrics
        // already record each one, and a line per request costs ~10 % of
        // throughput). `FLOODGATE_LOG=info,floodgate::access=debug` logs all.
        match (error, self.completed) {
            (Some(error), _) => tracing::warn!(
                target: ACCESS,
                id = %self.id,
                route = %self.route,
                status = self.status,
                ms,
                model,
                provider,
                error,
                "request failed"
            ),
            (None, false) => tracing::debug!(
                target: ACCESS,
                status = self.status,
                ms,
                model,
                provider,
                "client went away before the response ended"
            ),
            (None, true) => {
                tracing::debug!(target: ACCESS, status = self.status, ms, model, provider, "request done")
            }
        }
    }
}

/// A status code as text, without formatting machinery.
fn itoa_status(status: u16) -> String {
    http::StatusCode::from_u16(status)
        .map_or_else(|_| status.to_string(), |s| s.as_str().to_string())
}

struct ObservedBody {
    inner: Body,
    guard: Finish,
}

impl HttpBody for ObservedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let poll = Pin::new(&mut self.inner).poll_frame(cx);
        // hyper stops polling a body that says it has ended, so the end is
        // either `None` or a frame after which `is_end_stream` holds.
        let ended = match &poll {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => self.inner.is_end_stream(),
            Poll::Ready(Some(Err(_))) | Poll::Pending => false,
        };
        if ended {
            self.guard.completed = true;
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_checked() {
        assert_eq!(
            valid_request_id(&HeaderValue::from_static("abc-123_x.y:z")),
            Some("abc-123_x.y:z")
        );
        assert_eq!(valid_request_id(&HeaderValue::from_static("has space")), None);
        assert_eq!(valid_request_id(&HeaderValue::from_static("")), None);
        let long = "a".repeat(129);
        assert_eq!(valid_request_id(&HeaderValue::from_str(&long).unwrap()), None);
    }
}
