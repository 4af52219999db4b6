//! OTLP trace export end to end: a real gateway exporting to an in-process
//! OTLP/HTTP collector (axum on an ephemeral port), its spans decoded from
//! the wire (OTLP JSON with serde_json, protobuf with opentelemetry-proto)
//! and checked as a tree. Each test has its own collector and service name;
//! they run side by side in this one process.

#![expect(
    clippy::expect_used,
    reason = "the collector and decoding helpers fail the test with a message"
)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use floodgate_core::jobs;
use floodgate_mock_upstream::{Recorded, Script};
use prost::Message as _;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{DEFAULT_CONFIG, Options, TestApp, spawn_app, spawn_with};

const MASTER: &str = "fg-test-master-key-for-otel-0123";
const COLLECTOR_TOKEN: &str = "collector-token-0123456789abcdef";
/// Marks prompt text, which must never reach a span.
const PROMPT_MARK: &str = "PROMPT-SECRET";

/// OTLP span kinds and status codes (the protocol's enum values).
const SERVER: i64 = 2;
const CLIENT: i64 = 3;
const CONSUMER: i64 = 5;
const STATUS_ERROR: i64 = 2;

/// One export request as the collector received it.
#[derive(Debug, Clone)]
struct Export {
    content_type: String,
    authorization: Option<String>,
    body: Bytes,
}

#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<Export>>>);

struct Collector {
    endpoint: String,
    received: Received,
    task: tokio::task::JoinHandle<()>,
}

impl Collector {
    async fn start() -> Collector {
        let received = Received::default();
        let app =
            axum::Router::new().route("/v1/traces", post(accept)).with_state(received.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind collector");
        let addr = listener.local_addr().expect("collector addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        // The bare address: the gateway appends OTLP's `/v1/traces`.
        Collector { endpoint: format!("http://{addr}"), received, task }
    }

    fn exports(&self) -> Vec<Export> {
        self.received.0.lock().expect("exports").clone()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept(State(received): State<Received>, headers: HeaderMap, body: Bytes) -> Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let content_type = header("content-type").unwrap_or_default();
    received.0.lock().expect("exports").push(Export {
        content_type: content_type.clone(),
        authorization: header("authorization"),
        body,
    });
    // An empty ExportTraceServiceResponse: `{}`, or no bytes in protobuf.
    let answer = if content_type.starts_with("application/json") { "{}" } else { "" };
    ([("content-type", content_type)], answer).into_response()
}

/// A span as exported, its attribute values as text.
#[derive(Debug, Clone)]
struct SpanRec {
    service: String,
    trace_id: String,
    span_id: String,
    parent: String,
    name: String,
    kind: i64,
    status: i64,
    attrs: BTreeMap<String, String>,
}

impl SpanRec {
    fn attr(&self, key: &str) -> &str {
        self.attrs.get(key).map_or("", String::as_str)
    }
}

/// Every span of an OTLP JSON export request.
fn spans_of_json(request: &Value) -> Vec<SpanRec> {
    let mut out = Vec::new();
    for resource in request["resourceSpans"].as_array().into_iter().flatten() {
        let service = attributes(&resource["resource"]["attributes"])
            .remove("service.name")
            .unwrap_or_default();
        for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
            for span in scope["spans"].as_array().into_iter().flatten() {
                let text = |key: &str| span[key].as_str().unwrap_or_default().to_string();
                out.push(SpanRec {
                    service: service.clone(),
                    trace_id: text("traceId"),
                    span_id: text("spanId"),
                    parent: text("parentSpanId"),
                    name: text("name"),
                    kind: enum_value(&span["kind"]),
                    status: enum_value(&span["status"]["code"]),
                    attrs: attributes(&span["attributes"]),
                });
            }
        }
    }
    out
}

/// An OTLP enum: a number, or its name (JSON allows both).
fn enum_value(value: &Value) -> i64 {
    match value {
        Value::Number(n) => n.as_i64().unwrap_or(-1),
        Value::String(s) => match s.as_str() {
            "SPAN_KIND_INTERNAL" | "STATUS_CODE_OK" => 1,
            "SPAN_KIND_SERVER" | "STATUS_CODE_ERROR" => 2,
            "SPAN_KIND_CLIENT" => 3,
            "SPAN_KIND_PRODUCER" => 4,
            "SPAN_KIND_CONSUMER" => 5,
            _ => 0,
        },
        _ => 0,
    }
}

fn attributes(list: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for kv in list.as_array().into_iter().flatten() {
        let value = &kv["value"];
        let text = if let Some(s) = value["stringValue"].as_str() {
            s.to_string()
        } else if let Some(b) = value["boolValue"].as_bool() {
            b.to_string()
        } else if let Some(i) = value["intValue"].as_i64() {
            i.to_string()
        } else if let Some(i) = value["intValue"].as_str() {
            i.to_string()
        } else {
            value.to_string()
        };
        out.insert(kv["key"].as_str().unwrap_or_default().to_string(), text);
    }
    out
}

/// Every span the collector received, whatever the encoding.
fn spans(collector: &Collector) -> Vec<SpanRec> {
    collector
        .exports()
        .iter()
        .flat_map(|export| {
            let request: Value = if export.content_type.starts_with("application/json") {
                serde_json::from_slice(&export.body).expect("an OTLP JSON body")
            } else {
                let decoded =
                    opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::decode(
                        export.body.as_ref(),
                    )
                    .expect("an OTLP protobuf body");
                // The proto types' serde form is OTLP JSON: one reader for both.
                serde_json::to_value(&decoded).expect("serializable")
            };
            spans_of_json(&request)
        })
        .collect()
}

fn children<'a>(spans: &'a [SpanRec], parent: &SpanRec) -> Vec<&'a SpanRec> {
    let mut found: Vec<&SpanRec> = spans
        .iter()
        .filter(|s| s.trace_id == parent.trace_id && s.parent == parent.span_id)
        .collect();
    found.sort_by(|a, b| a.attr("floodgate.attempt").cmp(b.attr("floodgate.attempt")));
    found
}

fn named<'a>(spans: &[&'a SpanRec], name: &str) -> Vec<&'a SpanRec> {
    spans.iter().copied().filter(|s| s.name == name).collect()
}

fn server_span<'a>(spans: &'a [SpanRec], trace_id: &str) -> &'a SpanRec {
    spans
        .iter()
        .find(|s| s.trace_id == trace_id && s.kind == SERVER)
        .unwrap_or_else(|| panic!("no server span in trace {trace_id}: {spans:#?}"))
}

/// The upstream requests of one trace, in arrival order.
fn upstream_calls<'a>(calls: &'a [Recorded], trace_id: &str) -> Vec<&'a Recorded> {
    calls.iter().filter(|r| r.header("traceparent").is_some_and(|t| t.contains(trace_id))).collect()
}

fn traceparent(trace_id: &str, span_id: &str) -> String {
    format!("00-{trace_id}-{span_id}-01")
}

/// An alias whose first target hangs, hedged on a second after 50 ms (its
/// name is this file's own: metrics are the process's, shared by all tests).
const HEDGED: &str = "[[models]]\nname = \"otel-hedged\"\ntargets = [\"oai/hang-first\", \"oai/fast\"]\n\
                      hedge_after = \"50ms\"\n";

fn config(collector: &Collector, protocol: &str, service: &str, extra: &str) -> String {
    format!(
        "{DEFAULT_CONFIG}\n{HEDGED}\n[cache]\nenabled = true\n\n[queue]\nworkers = 0\n\n[telemetry]\n\
         otlp_endpoint = \"{}\"\notlp_protocol = \"{protocol}\"\nservice_name = \"{service}\"\n\
         {extra}\n[telemetry.otlp_headers]\nauthorization = \"Bearer {COLLECTOR_TOKEN}\"\n",
        collector.endpoint
    )
}

async fn traced_app(config: String) -> TestApp {
    spawn_with(Options { config, master_key: Some(MASTER.to_string()), ..Options::default() }).await
}

fn chat(text: &str) -> Value {
    json!({"model": "gpt", "temperature": 0, "messages": [{"role": "user", "content": text}]})
}

/// Stops the app (which exports the last spans) and returns what the mock received.
async fn stop(app: TestApp) -> Vec<Recorded> {
    let calls = app.upstream_requests();
    app.begin_shutdown();
    app.wait_stopped().await.expect("the app stops cleanly");
    calls
}

/// Nothing secret in any attribute: no key, no collector credential, no prompt.
fn assert_no_secrets(spans: &[SpanRec]) {
    let secrets = [
        "oai-key-0123456789abcdef",
        "ant-key-0123456789abcdef",
        MASTER,
        COLLECTOR_TOKEN,
        "Bearer",
        PROMPT_MARK,
    ];
    for span in spans {
        for (key, value) in &span.attrs {
            for secret in secrets {
                assert!(
                    !value.contains(secret) && !key.contains(secret),
                    "span {} has {key}={value:?}, which holds {secret:?}",
                    span.name
                );
            }
        }
    }
}

#[tokio::test]
async fn otel_spans_form_a_tree_per_request_and_job_and_join_the_callers_and_providers_traces() {
    let collector = Collector::start().await;
    let app = traced_app(config(&collector, "http/json", "fg-otel-json", "")).await;
    assert!(app.state.traces.is_some());

    // A: a cache miss with the caller's traceparent.
    let (trace_a, parent_a) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let body_a = chat(&format!("first question {PROMPT_MARK}-A"));
    let tp = traceparent(trace_a, parent_a);
    let response = app.post_with("/v1/chat/completions", &body_a, &[("traceparent", &tp)]).await;
    assert_eq!(response.status(), StatusCode::OK);
    // B: a 503, then an answer on the retry.
    let trace_b = "5bf92f3577b34da6a3ce929d0e0e4736";
    app.mock.enqueue(Script::Status {
        status: 503,
        headers: Vec::new(),
        body: json!({"error": {"message": "overloaded", "type": "server_error"}}),
    });
    let tp = traceparent(trace_b, "10f067aa0ba902b7");
    let body_b = chat(&format!("second question {PROMPT_MARK}-B"));
    let response = app.post_with("/v1/chat/completions", &body_b, &[("traceparent", &tp)]).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-floodgate-attempts"], "2");
    // C: A again, from the cache.
    let trace_c = "6bf92f3577b34da6a3ce929d0e0e4736";
    let tp = traceparent(trace_c, "20f067aa0ba902b7");
    let response = app.post_with("/v1/chat/completions", &body_a, &[("traceparent", &tp)]).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-floodgate-cache"], "hit");
    // D: a job, submitted under a trace of its own and run by stepping the queue.
    let trace_d = "7bf92f3577b34da6a3ce929d0e0e4736";
    let tp = traceparent(trace_d, "30f067aa0ba902b7");
    let job = json!({"request": chat(&format!("a job {PROMPT_MARK}-D"))});
    let response = app.post_with("/v1/jobs", &job, &[("traceparent", &tp)]).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let job_id = response.json::<Value>().await.expect("job")["id"].as_str().unwrap().to_string();
    let ran = jobs::try_run_one(&app.state).await.expect("the queue answers");
    assert_eq!(ran.as_deref(), Some(job_id.as_str()));
    // E: a hedged request: the hanging first call and the hedge that wins.
    let trace_e = "abf92f3577b34da6a3ce929d0e0e4736";
    let tp = traceparent(trace_e, "60f067aa0ba902b7");
    let mut body_e = chat(&format!("hedge me {PROMPT_MARK}-E"));
    body_e["model"] = json!("otel-hedged");
    let response = app.post_with("/v1/chat/completions", &body_e, &[("traceparent", &tp)]).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-floodgate-hedged"], "true");

    let calls = stop(app).await;
    let spans = spans(&collector);
    let exports = collector.exports();
    assert!(!exports.is_empty());
    for export in &exports {
        assert!(export.content_type.starts_with("application/json"), "{export:?}");
        let expected = format!("Bearer {COLLECTOR_TOKEN}");
        assert_eq!(export.authorization.as_deref(), Some(expected.as_str()));
    }
    assert!(spans.iter().all(|s| s.service == "fg-otel-json"), "another app's spans came here");
    assert_no_secrets(&spans);

    // A: the caller's span is the server span's parent; admission, cache
    // and one upstream call below it; the upstream request carried the
    // upstream span's traceparent.
    let server = server_span(&spans, trace_a);
    assert_eq!(server.parent, parent_a);
    assert_eq!(server.name, "POST /v1/chat/completions");
    assert_eq!(server.attr("http.request.method"), "POST");
    assert_eq!(server.attr("http.route"), "/v1/chat/completions");
    assert_eq!(server.attr("url.path"), "/v1/chat/completions");
    assert_eq!(server.attr("http.response.status_code"), "200");
    assert_eq!(server.attr("floodgate.model"), "gpt");
    assert_eq!(server.attr("floodgate.provider"), "oai");
    assert!(!server.attr("floodgate.request_id").is_empty());
    let below = children(&spans, server);
    let names: Vec<&str> = below.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names.len(), 3, "{below:#?}");
    let admission = named(&below, "admission");
    assert_eq!(admission.len(), 1, "{below:#?}");
    assert_eq!(admission[0].attr("floodgate.admission.outcome"), "admitted");
    let cache = named(&below, "cache");
    assert_eq!(cache.len(), 1, "{below:#?}");
    assert_eq!(cache[0].attr("floodgate.cache.outcome"), "miss");
    let upstream = named(&below, "upstream");
    assert_eq!(upstream.len(), 1, "{below:#?}");
    let up = upstream[0];
    assert_eq!(up.kind, CLIENT);
    assert_eq!(up.attr("gen_ai.operation.name"), "chat");
    assert_eq!(up.attr("gen_ai.system"), "openai-compatible");
    assert_eq!(up.attr("gen_ai.request.model"), "gpt-4o-mini");
    assert_eq!(up.attr("floodgate.provider"), "oai");
    assert_eq!(up.attr("floodgate.attempt"), "1");
    assert_eq!(up.attr("floodgate.upstream.outcome"), "ok");
    assert_eq!(up.attr("http.response.status_code"), "200");
    assert_eq!(up.attr("server.address"), "127.0.0.1");
    assert!(up.attr("gen_ai.usage.input_tokens").parse::<u32>().is_ok_and(|n| n > 0), "{up:?}");
    let sent = upstream_calls(&calls, trace_a);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].header("traceparent"), Some(traceparent(trace_a, &up.span_id).as_str()));

    // B: two upstream spans, attempts 1 (failed, 503) and 2 (answered), each
    // the parent of its own upstream request.
    let server = server_span(&spans, trace_b);
    let below = children(&spans, server);
    let upstream = named(&below, "upstream");
    assert_eq!(upstream.len(), 2, "{below:#?}");
    let (first, second) = (upstream[0], upstream[1]);
    assert_eq!(first.attr("floodgate.attempt"), "1");
    assert_eq!(first.attr("http.response.status_code"), "503");
    assert_eq!(first.attr("floodgate.upstream.outcome"), "status_5xx");
    assert_eq!(first.attr("error.type"), "status_5xx");
    assert_eq!(first.status, STATUS_ERROR);
    assert_eq!(second.attr("floodgate.attempt"), "2");
    assert_eq!(second.attr("http.response.status_code"), "200");
    assert_eq!(second.attr("floodgate.upstream.outcome"), "ok");
    assert_ne!(second.status, STATUS_ERROR);
    assert_ne!(first.span_id, second.span_id);
    let sent = upstream_calls(&calls, trace_b);
    let parents: Vec<&str> = sent.iter().filter_map(|r| r.header("traceparent")).collect();
    assert_eq!(
        parents,
        [traceparent(trace_b, &first.span_id), traceparent(trace_b, &second.span_id)]
    );
    // The request itself succeeded.
    assert_eq!(server.attr("http.response.status_code"), "200");
    assert_ne!(server.status, STATUS_ERROR);

    // C: answered by the cache, no upstream call.
    let server = server_span(&spans, trace_c);
    let below = children(&spans, server);
    let cache = named(&below, "cache");
    assert_eq!(cache.len(), 1, "{below:#?}");
    assert_eq!(cache[0].attr("floodgate.cache.outcome"), "hit_l1");
    assert!(named(&below, "upstream").is_empty(), "{below:#?}");
    assert!(upstream_calls(&calls, trace_c).is_empty());
    assert_eq!(server.attr("floodgate.provider"), "cache");

    // D: the submission is its own server span; the run is a job span that
    // starts a trace, with the request's spans below it.
    let submit = server_span(&spans, trace_d);
    assert_eq!(submit.name, "POST /v1/jobs");
    assert_eq!(submit.attr("http.response.status_code"), "202");
    let job =
        spans.iter().find(|s| s.name == "job").unwrap_or_else(|| panic!("no job span: {spans:#?}"));
    assert_eq!(job.kind, CONSUMER);
    assert_eq!(job.parent, "");
    assert_eq!(job.attr("floodgate.job.id"), job_id);
    assert_eq!(job.attr("floodgate.job.attempt"), "1");
    assert_eq!(job.attr("floodgate.job.outcome"), "completed");
    let below = children(&spans, job);
    assert_eq!(named(&below, "admission").len(), 1, "{below:#?}");
    assert_eq!(named(&below, "cache").len(), 1, "{below:#?}");
    let upstream = named(&below, "upstream");
    assert_eq!(upstream.len(), 1, "{below:#?}");
    assert_eq!(upstream[0].attr("floodgate.stream"), "true");
    let sent = upstream_calls(&calls, &job.trace_id);
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].header("traceparent"),
        Some(traceparent(&job.trace_id, &upstream[0].span_id).as_str())
    );

    // E: the first call and its hedge are two spans; the loser was dropped.
    let server = server_span(&spans, trace_e);
    let below = children(&spans, server);
    let upstream = named(&below, "upstream");
    assert_eq!(upstream.len(), 2, "{below:#?}");
    let (first, hedge) = (upstream[0], upstream[1]);
    assert_eq!((first.attr("floodgate.attempt"), first.attr("floodgate.hedge")), ("1", "false"));
    assert_eq!(first.attr("gen_ai.request.model"), "hang-first");
    assert_eq!(first.attr("floodgate.upstream.outcome"), "cancelled");
    assert_eq!((hedge.attr("floodgate.attempt"), hedge.attr("floodgate.hedge")), ("2", "true"));
    assert_eq!(hedge.attr("gen_ai.request.model"), "fast");
    assert_eq!(hedge.attr("floodgate.upstream.outcome"), "ok");
    assert_eq!(upstream_calls(&calls, trace_e).len(), 2);
}

#[tokio::test]
async fn otel_protobuf_export_follows_the_callers_sampling_decision() {
    let collector = Collector::start().await;
    let app =
        traced_app(config(&collector, "http/protobuf", "fg-otel-proto", "sample_ratio = 0.0"))
            .await;
    // No caller's trace and a ratio of 0: not recorded, but the decision
    // still travels upstream (flags 00).
    let response = app.post("/v1/chat/completions", &chat("unsampled")).await;
    assert_eq!(response.status(), StatusCode::OK);
    // The caller sampled its trace: this one is recorded whatever the ratio.
    let trace = "8bf92f3577b34da6a3ce929d0e0e4736";
    let tp = traceparent(trace, "40f067aa0ba902b7");
    let response =
        app.post_with("/v1/chat/completions", &chat("sampled"), &[("traceparent", &tp)]).await;
    assert_eq!(response.status(), StatusCode::OK);
    // Health checks are not traced, even in a sampled trace.
    let health = app.http.get(app.url("/health")).header("traceparent", &tp).send().await;
    assert_eq!(health.expect("health answers").status(), StatusCode::OK);
    let calls = stop(app).await;

    let exports = collector.exports();
    assert!(!exports.is_empty());
    for export in &exports {
        assert_eq!(export.content_type, "application/x-protobuf");
        assert!(!export.body.is_empty());
        assert_eq!(export.authorization, Some(format!("Bearer {COLLECTOR_TOKEN}")));
    }
    let spans = spans(&collector);
    assert!(spans.iter().all(|s| s.service == "fg-otel-proto"), "another app's spans came here");
    assert!(spans.iter().all(|s| s.trace_id == trace), "an unsampled trace was exported");
    let server = server_span(&spans, trace);
    let below = children(&spans, server);
    assert_eq!(named(&below, "upstream").len(), 1, "{below:#?}");
    assert!(!spans.iter().any(|s| s.attr("url.path") == "/health"), "{spans:#?}");
    assert_no_secrets(&spans);

    assert_eq!(calls.len(), 2);
    let unsampled = calls[0].header("traceparent").expect("a traceparent");
    assert!(unsampled.starts_with("00-") && unsampled.ends_with("-00"), "{unsampled}");
    assert!(!unsampled.contains(trace));
    assert!(
        calls[1].header("traceparent").is_some_and(|t| t.contains(trace) && t.ends_with("-01"))
    );
}

#[tokio::test]
async fn otel_off_makes_no_spans_and_forwards_no_traceparent() {
    let app = spawn_app().await;
    assert!(app.state.traces.is_none());
    let tp = traceparent("9bf92f3577b34da6a3ce929d0e0e4736", "50f067aa0ba902b7");
    let response =
        app.post_with("/v1/chat/completions", &chat("plain"), &[("traceparent", &tp)]).await;
    assert_eq!(response.status(), StatusCode::OK);
    let calls = stop(app).await;
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].header("traceparent"), None);
}
