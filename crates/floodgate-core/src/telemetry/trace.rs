//! Traces: one span tree per request and per job run, exported over OTLP/HTTP.
//!
//! Spans are made with the OpenTelemetry API directly, not through `tracing`
//! and `tracing-opentelemetry`. The log subscriber is one per process, but a
//! process may run several apps (the tests do), each with its own collector;
//! so each [`App`](crate::App) builds its own tracer provider ([`Traces`]),
//! and a request's OpenTelemetry [`Context`] carries it: the server span is
//! started from the app's `Traces`, and every span below it finds the tracer
//! in the current context ([`Span::child`]). No global provider, propagator or
//! routing layer is involved, so apps never see each other's spans.
//!
//! The current context follows a request as the `tracing` span would: it is
//! attached while a future is polled ([`Span::run`], [`in_current`] for a
//! spawned task), so a request's spans stay parented on its worker thread
//! and in the cache flight's own task.
//!
//! With no endpoint configured there is no `Traces` at all: no span is made,
//! nothing is allocated, and the request path pays a check of an `Option`
//! (the server span) or of a thread-local context (an empty one, below it).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::Either;
use http::HeaderMap;
use http_body_util::BodyExt as _;
use opentelemetry::context::{FutureExt as _, WithContext};
use opentelemetry::propagation::TextMapPropagator as _;
pub use opentelemetry::trace::SpanKind;
use opentelemetry::trace::{Status, TraceContextExt as _, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, InstrumentationScope, KeyValue, Value};
use opentelemetry_http::{HeaderExtractor, HeaderInjector, HttpError};
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::resource::{Resource, TelemetryResourceDetector};
use opentelemetry_sdk::runtime;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{BatchConfigBuilder, Sampler, SdkTracer, SdkTracerProvider};
use secrecy::ExposeSecret as _;

use crate::config::{OtlpProtocol, ProviderKind, TelemetryConfig};
use crate::providers::client;

/// Spans waiting for export; beyond this new ones are dropped (and counted
/// by the SDK, which warns once) rather than held.
const MAX_QUEUE: usize = 16_384;
/// Spans per export request.
const BATCH: usize = 512;
/// A partial batch waits at most this long.
const EXPORT_EVERY: Duration = Duration::from_secs(1);
/// Largest collector answer read (it is a small status message).
const MAX_ANSWER: usize = 64 * 1024;

/// This app's tracer provider: the exporter, the batch task, the sampler.
pub struct Traces {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
    timeout: Duration,
    stopped: AtomicBool,
}

impl fmt::Debug for Traces {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Traces").finish_non_exhaustive()
    }
}

/// The app whose trace a context belongs to, carried in the context.
#[derive(Clone)]
struct Active(Arc<Traces>);

impl Traces {
    /// Builds the exporter and its batch task (on the caller's runtime).
    /// `instance` is this node's name (`service.instance.id`).
    pub fn start(config: &TelemetryConfig, instance: &str) -> Result<Arc<Traces>, String> {
        let http = client::plain(config.timeout)
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let headers: HashMap<String, String> = config
            .headers
            .iter()
            .map(|(name, value)| (name.clone(), value.expose_secret().to_string()))
            .collect();
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(ExportClient { http, timeout: config.timeout })
            .with_endpoint(config.endpoint.clone())
            .with_protocol(match config.protocol {
                OtlpProtocol::HttpProtobuf => Protocol::HttpBinary,
                OtlpProtocol::HttpJson => Protocol::HttpJson,
            })
            .with_timeout(config.timeout)
            .with_headers(headers)
            .build()
            .map_err(|e| e.to_string())?;
        // Every setting given, so none comes from OTEL_BSP_* variables.
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(MAX_QUEUE)
            .with_max_export_batch_size(BATCH)
            .with_scheduled_delay(EXPORT_EVERY)
            .with_max_export_timeout(config.timeout)
            .with_max_concurrent_exports(1)
            .build();
        let processor =
            BatchSpanProcessor::builder(exporter, runtime::Tokio).with_batch_config(batch).build();
        let resource = Resource::builder_empty()
            .with_detector(Box::new(TelemetryResourceDetector))
            .with_service_name(config.service_name.clone())
            .with_attributes([
                KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
                KeyValue::new("service.instance.id", instance.to_string()),
            ])
            .build();
        let root = if config.sample_ratio >= 1.0 {
            Sampler::AlwaysOn
        } else {
            Sampler::TraceIdRatioBased(config.sample_ratio)
        };
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::ParentBased(Box::new(root)))
            .with_resource(resource)
            .build();
        let scope = InstrumentationScope::builder("floodgate")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        let tracer = provider.tracer_with_scope(scope);
        Ok(Arc::new(Traces {
            provider,
            tracer,
            propagator: TraceContextPropagator::new(),
            timeout: config.timeout,
            stopped: AtomicBool::new(false),
        }))
    }

    /// The server span of one HTTP request: a child of the caller's span
    /// when the request carries a W3C `traceparent`, else a new trace.
    pub fn server(
        self: &Arc<Self>,
        request: &http::Request<axum::body::Body>,
        route: &str,
    ) -> Span {
        let parent = self
            .propagator
            .extract_with_context(&Context::new(), &HeaderExtractor(request.headers()))
            .with_value(Active(self.clone()));
        let method = request.method().as_str().to_string();
        let matched = route != "unmatched";
        let name = if matched { format!("{method} {route}") } else { method.clone() };
        let mut attributes = vec![
            KeyValue::new("http.request.method", method),
            // The path only: a query may carry a token (`/ws?token=`).
            KeyValue::new("url.path", request.uri().path().to_string()),
            KeyValue::new("url.scheme", "http"),
            KeyValue::new("network.protocol.version", protocol_version(request.version())),
        ];
        if matched {
            attributes.push(KeyValue::new("http.route", route.to_string()));
        }
        let span = self
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &parent);
        Span(Some(parent.with_span(span)))
    }

    /// A span that starts a trace of its own (a job's run).
    pub fn root(self: &Arc<Self>, name: &'static str, kind: SpanKind) -> Span {
        let parent = Context::new().with_value(Active(self.clone()));
        let span = self
            .tracer
            .span_builder(name)
            .with_kind(kind)
            .start_with_context(&self.tracer, &parent);
        Span(Some(parent.with_span(span)))
    }

    /// Exports what is still queued and stops the batch task. The SDK's
    /// shutdown blocks its thread until the batch task (on this runtime) has
    /// answered, so it runs on a blocking thread; it is bounded by the export
    /// timeout.
    pub async fn shutdown(&self) {
        if self.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        let provider = self.provider.clone();
        let done = tokio::task::spawn_blocking(move || provider.shutdown());
        match tokio::time::timeout(self.timeout + Duration::from_secs(1), done).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => {
                tracing::warn!(%error, "the last spans may not have been exported")
            }
            Ok(Err(error)) => tracing::warn!(%error, "the trace exporter's shutdown failed"),
            Err(_) => tracing::warn!(
                "the trace exporter did not finish in time; the last spans may be lost"
            ),
        }
    }
}

impl Drop for Traces {
    /// An app dropped without [`Traces::shutdown`] (a failed start): its
    /// provider is shut down on a thread of its own, since the SDK's shutdown
    /// blocks until the batch task answers, which may need this very thread.
    fn drop(&mut self) {
        if self.stopped.load(Ordering::SeqCst) {
            return;
        }
        let provider = self.provider.clone();
        let spawned = std::thread::Builder::new()
            .name("floodgate-traces-stop".into())
            .spawn(move || drop(provider.shutdown()));
        if let Err(error) = spawned {
            tracing::debug!(%error, "cannot stop the trace exporter");
        }
    }
}

/// `gen_ai.system` (and `gen_ai.provider.name`) of a provider kind: the
/// GenAI semantic conventions' well-known names where one applies.
pub fn gen_ai_system(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::Openai => "openai",
        ProviderKind::Anthropic => "anthropic",
        ProviderKind::Gemini => "gcp.gemini",
        ProviderKind::OpenaiCompatible => "openai-compatible",
        ProviderKind::Mock => "mock",
    }
}

fn protocol_version(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "0.9",
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

/// A span of this app's trace, or nothing when traces are off (or when
/// there is no trace to join). Ends when dropped.
#[derive(Debug, Default)]
pub struct Span(Option<Context>);

impl Span {
    pub const NONE: Span = Span(None);

    /// A child of the current span; nothing unless the current context is
    /// one of this app's traces.
    pub fn child(name: &'static str, kind: SpanKind) -> Span {
        Span(Context::map_current(|cx| {
            let Active(traces) = cx.get::<Active>()?;
            let span = traces
                .tracer
                .span_builder(name)
                .with_kind(kind)
                .start_with_context(&traces.tracer, cx);
            Some(cx.with_span(span))
        }))
    }

    /// Whether attributes set now are kept: a sampled span. Attribute values
    /// that cost something to make are made only then.
    pub fn is_recording(&self) -> bool {
        self.0.as_ref().is_some_and(|cx| cx.span().is_recording())
    }

    pub fn set(&self, key: &'static str, value: impl Into<Value>) {
        if let Some(cx) = &self.0 {
            cx.span().set_attribute(KeyValue::new(key, value));
        }
    }

    /// A string attribute, copied only when it is kept.
    pub fn set_str(&self, key: &'static str, value: &str) {
        if self.is_recording() {
            self.set(key, value.to_string());
        }
    }

    /// Marks the span failed: `error.type` and an error status, both with a
    /// low-cardinality code (never a message, which may quote a prompt).
    pub fn fail(&self, error_type: &str) {
        if self.is_recording()
            && let Some(cx) = &self.0
        {
            let span = cx.span();
            span.set_attribute(KeyValue::new("error.type", error_type.to_string()));
            span.set_status(Status::error(error_type.to_string()));
        }
    }

    /// Runs `future` with this span current, so the spans it makes are its
    /// children and its upstream calls carry its `traceparent`.
    pub async fn run<F: Future>(&self, future: F) -> F::Output {
        match &self.0 {
            Some(cx) => future.with_context(cx.clone()).await,
            None => future.await,
        }
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        if let Some(cx) = &self.0 {
            cx.span().end();
        }
    }
}

/// `future` with the current trace context attached, for a task spawned on
/// behalf of the current request (the cache flight's call); as it is when
/// there is no trace.
pub fn in_current<F: Future>(future: F) -> Either<WithContext<F>, F> {
    match Context::map_current(|cx| cx.get::<Active>().is_some().then(|| cx.clone())) {
        Some(cx) => Either::Left(future.with_context(cx)),
        None => Either::Right(future),
    }
}

/// Writes the current span's W3C `traceparent` (and `tracestate`) into an
/// upstream request, so the provider's own traces join this one.
pub fn inject(headers: &mut HeaderMap) {
    Context::map_current(|cx| {
        if let Some(Active(traces)) = cx.get::<Active>()
            && cx.span().span_context().is_valid()
        {
            traces.propagator.inject_context(cx, &mut HeaderInjector(headers));
        }
    });
}

/// Sets an attribute on the current span, if it is one of this app's.
pub fn set_current(key: &'static str, value: impl Into<Value>) {
    Context::map_current(|cx| {
        if cx.get::<Active>().is_some() {
            cx.span().set_attribute(KeyValue::new(key, value));
        }
    });
}

/// OTLP exports through the gateway's own hyper-util client (rustls with
/// ring and the platform verifier): no second HTTP stack or TLS library.
/// It runs in the batch task, on the runtime that built the app.
#[derive(Debug)]
struct ExportClient {
    http: client::HttpClient,
    timeout: Duration,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for ExportClient {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, HttpError> {
        let request = request.map(client::Body::new);
        let exchange = async {
            let response = self.http.request(request).await?;
            let (parts, body) = response.into_parts();
            let body = http_body_util::Limited::new(body, MAX_ANSWER).collect().await?.to_bytes();
            Ok::<_, HttpError>(http::Response::from_parts(parts, body))
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(format!("the collector did not answer within {:?}", self.timeout).into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> TelemetryConfig {
        TelemetryConfig {
            // Nothing listens on the discard port: exports fail, spans are still made.
            endpoint: "http://127.0.0.1:9/v1/traces".to_string(),
            protocol: OtlpProtocol::HttpProtobuf,
            headers: Vec::new(),
            timeout: Duration::from_millis(200),
            service_name: "test".to_string(),
            sample_ratio: 1.0,
        }
    }

    fn traceparent(headers: &HeaderMap) -> Option<String> {
        headers.get("traceparent").and_then(|v| v.to_str().ok()).map(str::to_string)
    }

    /// Without an app's trace in the current context nothing is made or
    /// written: the path every request takes when traces are off.
    #[test]
    fn outside_a_trace_nothing_is_made() {
        let span = Span::child("admission", SpanKind::Internal);
        assert!(span.0.is_none() && !span.is_recording());
        assert!(matches!(in_current(async {}), Either::Right(_)));
        let mut headers = HeaderMap::new();
        inject(&mut headers);
        assert!(headers.is_empty());
        // Even inside someone else's OpenTelemetry context.
        let foreign = Context::new().with_value(7u32);
        let _guard = foreign.attach();
        assert!(Span::child("cache", SpanKind::Internal).0.is_none());
    }

    #[tokio::test]
    async fn children_nest_under_the_current_span_and_upstream_requests_carry_it() {
        let traces = Traces::start(&config(), "node-1").unwrap();
        let root = traces.root("job", SpanKind::Consumer);
        let root_context = root.0.as_ref().unwrap().span().span_context().clone();
        let (child_context, headers, in_task) = root
            .run(async {
                let child = Span::child("upstream", SpanKind::Client);
                assert!(child.is_recording());
                let context = child.0.as_ref().unwrap().span().span_context().clone();
                let mut headers = HeaderMap::new();
                child.run(async { inject(&mut headers) }).await;
                // A task spawned from here carries the trace on.
                let in_task = tokio::spawn(in_current(async {
                    Span::child("cache", SpanKind::Internal).is_recording()
                }))
                .await
                .unwrap();
                (context, headers, in_task)
            })
            .await;
        assert_eq!(child_context.trace_id(), root_context.trace_id());
        assert_ne!(child_context.span_id(), root_context.span_id());
        let expected = format!("00-{}-{}-01", child_context.trace_id(), child_context.span_id());
        assert_eq!(traceparent(&headers), Some(expected));
        assert!(in_task);
        drop(root);
        traces.shutdown().await;
    }

    #[tokio::test]
    async fn a_callers_traceparent_is_the_server_spans_parent() {
        let traces = Traces::start(&config(), "node-1").unwrap();
        let request = http::Request::post("/v1/chat/completions")
            .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .body(axum::body::Body::empty())
            .unwrap();
        let server = traces.server(&request, "/v1/chat/completions");
        let context = server.0.as_ref().unwrap().span().span_context().clone();
        assert_eq!(context.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(context.is_sampled());
        drop(server);
        traces.shutdown().await;
    }
}
