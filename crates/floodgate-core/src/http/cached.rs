//! The chat routes' cached path: a request the cache may answer is looked
//! up (L1, L2, then the semantic index), and on a miss it joins or starts a
//! [`Flight`](crate::cache::flight::Flight): one upstream call in a task of
//! its own whose answer every identical request in flight shares, and which
//! is stored once it completes.
//!
//! The request that starts a flight hands its accounting to the call's task,
//! so its ledger record holds the call's real usage and cost even when that
//! client leaves early; the requests that join record the answer they got
//! as a cache hit at no cost. A streamed flight keeps every chunk from the
//! start, so a request that joins late still gets the whole stream.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use floodgate_protocol::{
    ChatRequest, ChatResponse, EmbeddingInput, EmbeddingsRequest, Format, StreamCollector,
    StreamEvent, Usage, anthropic, openai, replay_chunks,
};
use http::{HeaderMap, HeaderValue, header};
use tokio::sync::watch;

use super::chat::{ClientWriter, routed_headers, routing_headers, sse_headers, stream_error_body};
use super::{ApiError, json_response};
use crate::app::AppState;
use crate::cache::flight::{Answer, End, Flight, Origin};
use crate::cache::{
    CACHE_HEADER, Entry, Joined, LAYER_HEADER, Layer, Outcome as Lookup, Plan, Waiter,
};
use crate::pipeline::observe::RouteInfo;
use crate::providers::{ClientHints, Reservation, unix_now};
use crate::routing::{Admission, Route, Routed, StartedStream};
use crate::telemetry::metric;
use crate::telemetry::trace::{self, Span, SpanKind};
use crate::usage::{Accounting, Outcome};

/// An embedding call of the semantic cache gives up after this.
const EMBED_TIMEOUT: Duration = Duration::from_secs(10);

/// What a request brings to the cached path.
#[derive(Debug, Clone)]
pub(super) struct Request {
    pub format: Format,
    pub req: ChatRequest,
    pub hints: ClientHints,
    pub route: Route,
    pub admission: Admission,
    pub plan: Arc<Plan>,
}

pub(super) async fn serve(
    app: &AppState,
    request: Request,
    accounting: Accounting,
    info: &mut RouteInfo,
) -> Result<Response, ApiError> {
    let cache = &app.cache;
    let plan = &request.plan;
    let span = lookup_span(plan.lookup);
    if plan.lookup
        && let Some((entry, layer)) = cache.get(plan).await
        && let Some(body) = hit_body(&request, &entry)
    {
        cache.count(&plan.alias, Lookup::hit(layer));
        span.set(OUTCOME, Lookup::hit(layer).as_str());
        drop(span);
        return Ok(hit_response(&entry, body, layer, request.req.stream, accounting, info));
    }
    // The semantic lookup runs in the flight's call, so identical requests
    // in flight share its embedding call too.
    let (waiter, accounting) = match cache.flights.join(plan.key, plan.coalesce) {
        Joined::Leader(waiter) => {
            span.set(OUTCOME, Lookup::Miss.as_str());
            drop(span);
            let call = call(app.clone(), waiter.flight.clone(), request.clone(), accounting);
            // The call's task carries on this request's trace.
            cache.flights.launch(&waiter, trace::in_current(call));
            (waiter, None)
        }
        Joined::Follower(waiter) => {
            cache.count(&plan.alias, Lookup::Coalesced);
            span.set(OUTCOME, Lookup::Coalesced.as_str());
            drop(span);
            (waiter, Some(accounting))
        }
    };
    wait(&request, waiter, accounting, info).await
}

/// The outcome attribute of the `cache` span: a lookup result as the
/// `floodgate_cache_lookups_total` metric names it (`hit_l1`, `hit_l2`,
/// `miss`, `coalesced`, `bypass`).
pub(super) const OUTCOME: &str = "floodgate.cache.outcome";

/// The `cache` span of a request's trace: its exact lookup (L1, then L2),
/// until the outcome is known. `lookup` is false when the request asked not
/// to be answered from the cache (its answer may still be stored).
pub(super) fn lookup_span(lookup: bool) -> Span {
    let span = Span::child("cache", SpanKind::Internal);
    span.set("floodgate.cache.lookup", lookup);
    span
}

/// The response of a flight's waiter; `accounting` is a follower's own.
async fn wait(
    request: &Request,
    waiter: Waiter,
    accounting: Option<Accounting>,
    info: &mut RouteInfo,
) -> Result<Response, ApiError> {
    if request.req.stream {
        stream_waiter(request, waiter, accounting, info).await
    } else {
        complete_waiter(request, waiter, accounting, info).await
    }
}

/// The cached body as this request must get it: as it is, or replayed as a
/// stream. `None` if a stored answer cannot be read back (then it is a miss).
fn hit_body(request: &Request, entry: &Entry) -> Option<Bytes> {
    if !request.req.stream {
        return Some(entry.body.clone());
    }
    let resp = read_response(request, entry)?;
    Some(replay_sse(request, &resp, entry.body.len()))
}

/// A complete answer as the SSE stream a streaming request gets.
fn replay_sse(request: &Request, resp: &ChatResponse, size_hint: usize) -> Bytes {
    let mut writer = ClientWriter::new(request.format, &request.req);
    let mut out = Vec::with_capacity(size_hint * 2);
    for chunk in replay_chunks(resp) {
        writer.write(&chunk, &mut out);
    }
    writer.finish(&mut out);
    Bytes::from(out)
}

/// An exact hit (chat or embeddings): `x-floodgate-cache: hit`, its layer
/// and `age`; `body` is an SSE stream when `stream`.
pub(super) fn hit_response(
    entry: &Entry,
    body: Bytes,
    layer: Layer,
    stream: bool,
    accounting: Accounting,
    info: &mut RouteInfo,
) -> Response {
    accounting.finish(Outcome::cached(&entry.provider, &entry.model, entry.usage));
    info.provider = Some("cache".to_string());
    let mut response = if stream {
        let mut response = Body::from(body).into_response();
        sse_headers(response.headers_mut());
        response
    } else {
        json_response(body)
    };
    let headers = response.headers_mut();
    routed_headers(headers, &entry.provider, &entry.model, 0);
    headers.insert(LAYER_HEADER, HeaderValue::from_static(layer.as_str()));
    headers.insert(header::AGE, HeaderValue::from(entry.age_seconds()));
    headers.insert(CACHE_HEADER, HeaderValue::from_static("hit"));
    response
}

/// The embedding of the request's last user turn, through the router; `None`
/// (and a counted error) when the embedding call fails: the request then
/// goes on as a plain miss. The call is in the ledger as an `embeddings`
/// record of the same request and client.
async fn embed(app: &AppState, request: &Request, accounting: &Accounting) -> Option<Vec<f32>> {
    let semantic = request.plan.semantic.as_ref()?;
    let record = accounting.sibling("embeddings", &semantic.config.embedding_model);
    let failed = |message: String| {
        metrics::counter!(metric::CACHE_EMBED_ERRORS).increment(1);
        tracing::warn!(model = %semantic.config.embedding_model, error = %message, "the semantic cache could not embed a prompt; treating it as a miss");
        None
    };
    let route = match app.router.resolve(&semantic.config.embedding_model) {
        Ok(route) => route,
        Err(error) => {
            record.finish(Outcome::failed(404, "unknown_model"));
            return failed(error.to_string());
        }
    };
    let req = EmbeddingsRequest {
        model: semantic.config.embedding_model.clone(),
        input: EmbeddingInput::Texts(vec![semantic.parts.text.clone()]),
        ..EmbeddingsRequest::default()
    };
    let call = app.router.embeddings(&route, &req, request.admission);
    match tokio::time::timeout(EMBED_TIMEOUT, call).await {
        Ok(Ok(routed)) => {
            record.finish(
                Outcome::answered(&routed.provider, &routed.model, routed.value.usage, None)
                    .attempts(routed.attempts),
            );
            match routed.value.embeddings.into_iter().next() {
                Some(vector) if !vector.is_empty() => Some(vector),
                _ => failed("the embeddings answer held no vector".to_string()),
            }
        }
        Ok(Err(error)) => {
            let api = ApiError::Route(error.clone());
            record.finish(Outcome::failed(api.status().as_u16(), api.kind()));
            failed(error.to_string())
        }
        Err(_) => {
            record.finish(Outcome::failed(504, "timeout"));
            failed(format!("no answer in {EMBED_TIMEOUT:?}"))
        }
    }
}

/// The flight's upstream call: routes the request, feeds the flight, stores
/// a complete answer, and finishes the leader's accounting.
async fn call(app: AppState, flight: Arc<Flight>, request: Request, accounting: Accounting) {
    let plan = &request.plan;
    let mut vector = None;
    if plan.semantic.is_some() && (plan.lookup || plan.store) {
        vector = embed(&app, &request, &accounting).await;
        if plan.lookup
            && let Some(vector) = &vector
            && let Some((entry, layer, similarity)) = app.cache.semantic_get(plan, vector).await
            && semantic_answer(&flight, &request, &entry, layer, similarity)
        {
            app.cache.count(&plan.alias, Lookup::SemanticHit);
            accounting.finish(Outcome::cached(&entry.provider, &entry.model, entry.usage));
            return;
        }
    }
    app.cache.count(&plan.alias, Lookup::Miss);
    let Request { format, req, hints, route, admission, plan } = request;
    if !req.stream {
        match app.router.chat(&route, &req, &hints, admission).await {
            Ok(routed) => {
                let Routed { value: mut resp, provider, model, attempts, waited, hedged } = routed;
                if resp.created == 0 {
                    resp.created = unix_now();
                }
                accounting.finish(
                    Outcome::answered(&provider, &model, resp.usage, None).attempts(attempts),
                );
                let body = write_response(format, &resp);
                store(&app, &plan, body.clone(), &provider, &model, resp.usage, vector);
                let origin = Origin { provider, model, attempts, waited, hedged };
                flight.end(End::Answer(Arc::new(Answer { body, origin })));
            }
            Err(error) => {
                let api = ApiError::Route(error.clone());
                accounting.finish(Outcome::failed(api.status().as_u16(), api.kind()));
                flight.end(End::Failed(Arc::new(error)));
            }
        }
        return;
    }
    let routed = match app.router.chat_stream(&route, &req, &hints, admission).await {
        Ok(routed) => routed,
        Err(error) => {
            let api = ApiError::Route(error.clone());
            accounting.finish(Outcome::failed(api.status().as_u16(), api.kind()));
            flight.end(End::Failed(Arc::new(error)));
            return;
        }
    };
    let Routed {
        value: StartedStream { head, mut rest, reservation },
        provider,
        model,
        attempts,
        waited,
        hedged,
    } = routed;
    flight.start(Origin {
        provider: provider.clone(),
        model: model.clone(),
        attempts,
        waited,
        hedged,
    });
    let mut run = StreamRun {
        accounting: Some(accounting),
        reservation: Some(reservation),
        usage: Usage::default(),
        provider,
        model,
        attempts,
        first_chunk_at: None,
    };
    let mut collector = StreamCollector::default();
    let mut feed = |chunk: floodgate_protocol::StreamChunk, run: &mut StreamRun| {
        for event in &chunk.events {
            if let StreamEvent::Usage(usage) = event {
                run.usage = *usage;
            }
        }
        collector.push(&chunk);
        flight.push(chunk);
    };
    for chunk in head {
        feed(chunk, &mut run);
    }
    loop {
        match rest.next_chunk().await {
            Some(Ok(chunk)) => feed(chunk, &mut run),
            Some(Err(error)) => {
                run.first_chunk_at = rest.first_chunk_at();
                run.account(Some(error.label()));
                flight.end(End::Broken(error));
                return;
            }
            None => break,
        }
    }
    run.first_chunk_at = rest.first_chunk_at();
    run.account(None);
    // Only a stream that ended as the upstream ends it is stored.
    if let Some(mut resp) = collector.finish() {
        if resp.created == 0 {
            resp.created = unix_now();
        }
        let body = write_response(format, &resp);
        store(&app, &plan, body, &run.provider, &run.model, run.usage, vector);
    }
    flight.end(End::Complete);
}

/// Ends a flight with a semantic cache hit: the stored answer as it is, or
/// replayed as a stream. `false` if the stored answer cannot be read back.
fn semantic_answer(
    flight: &Flight,
    request: &Request,
    entry: &Entry,
    layer: Layer,
    similarity: f32,
) -> bool {
    let origin = Origin {
        provider: entry.provider.clone(),
        model: entry.model.clone(),
        attempts: 0,
        waited: Duration::ZERO,
        hedged: false,
    };
    if !request.req.stream {
        flight.state().semantic = Some((layer, similarity));
        flight.end(End::Answer(Arc::new(Answer { body: entry.body.clone(), origin })));
        return true;
    }
    let Some(resp) = read_response(request, entry) else { return false };
    flight.state().semantic = Some((layer, similarity));
    flight.start(origin);
    for chunk in replay_chunks(&resp) {
        flight.push(chunk);
    }
    flight.end(End::Complete);
    true
}

fn read_response(request: &Request, entry: &Entry) -> Option<ChatResponse> {
    decode(request, &entry.body)
}

/// A complete answer in the request's format, read back.
fn decode(request: &Request, body: &Bytes) -> Option<ChatResponse> {
    match request.format {
        Format::Anthropic => anthropic::read_chat_response(&request.req, body.clone()),
        Format::OpenAi | Format::Gemini => openai::read_chat_response(&request.req, body.clone()),
    }
    .ok()
}

/// A complete answer's body in the client's format.
pub(super) fn write_response(format: Format, resp: &ChatResponse) -> Bytes {
    match format {
        Format::Anthropic => anthropic::write_chat_response(resp),
        Format::OpenAi | Format::Gemini => openai::write_chat_response(resp),
    }
}

/// Stores an answer (chat or embeddings) in L1 and the semantic index at once (the next request
/// finds it), and in L2 (and the vector in Redis) in the background.
pub(super) fn store(
    app: &AppState,
    plan: &Arc<Plan>,
    body: Bytes,
    provider: &str,
    model: &str,
    usage: Usage,
    vector: Option<Vec<f32>>,
) {
    let Some(entry) = app.cache.put(plan, body, provider, model, usage) else { return };
    let record = vector.and_then(|vector| app.cache.semantic_put(plan, vector, &entry));
    if !app.cache.has_l2() && record.is_none() {
        return;
    }
    let (cache, plan) = (app.cache.clone(), plan.clone());
    tokio::spawn(async move {
        cache.put_shared(&plan.key, &entry).await;
        if let Some(record) = record {
            cache.semantic_save(&record).await;
        }
    });
}

/// The leader's side of a streamed call: settles its key reservation and
/// accounting once, when the stream ends or the call is dropped.
struct StreamRun {
    accounting: Option<Accounting>,
    reservation: Option<Reservation>,
    usage: Usage,
    provider: String,
    model: String,
    attempts: u32,
    first_chunk_at: Option<Instant>,
}

impl StreamRun {
    fn account(&mut self, error: Option<&'static str>) {
        if let Some(reservation) = self.reservation.take() {
            reservation.settle(self.usage.total());
        }
        if let Some(accounting) = self.accounting.take() {
            let ttft = self.first_chunk_at.map(|t| t.duration_since(accounting.started()));
            let outcome = Outcome::answered(&self.provider, &self.model, self.usage, ttft)
                .attempts(self.attempts);
            accounting.finish(match error {
                Some(label) => outcome.with_error(label),
                None => outcome,
            });
        }
    }
}

impl Drop for StreamRun {
    fn drop(&mut self) {
        // Every waiter left and the call was cancelled: account for what was generated.
        self.account(Some("client_disconnected"));
    }
}

fn lost() -> ApiError {
    ApiError::Unavailable {
        what: "the upstream call",
        message: "it ended without an answer; retry".to_string(),
    }
}

/// A complete answer for a waiter: the leader's (`miss`) or a share of it (`coalesced`).
async fn complete_waiter(
    request: &Request,
    waiter: Waiter,
    accounting: Option<Accounting>,
    info: &mut RouteInfo,
) -> Result<Response, ApiError> {
    let mut seen = waiter.flight.watch();
    let end = loop {
        seen.borrow_and_update();
        if let Some(end) = waiter.flight.state().end.clone() {
            break end;
        }
        waiter.flight.changed(&mut seen).await;
    };
    let answer = match end {
        End::Answer(answer) => answer,
        // A streaming request's call: its chunks assembled into the answer.
        End::Complete => match collected(request, &waiter.flight) {
            Some(answer) => Arc::new(answer),
            None => return Err(fail(accounting, lost())),
        },
        End::Failed(error) => return Err(fail(accounting, ApiError::Route((*error).clone()))),
        End::Broken(_) | End::Lost => return Err(fail(accounting, lost())),
    };
    let origin = &answer.origin;
    info.provider = Some(origin.provider.clone());
    if let Some(accounting) = accounting {
        let usage = usage_of(&answer.body);
        accounting.finish(Outcome::cached(&origin.provider, &origin.model, usage));
    }
    let mut response = json_response(answer.body.clone());
    let headers = response.headers_mut();
    routed_headers(headers, &origin.provider, &origin.model, origin.attempts);
    routing_headers(headers, origin.waited, origin.hedged);
    insert_cache_header(headers, &waiter, info);
    Ok(response)
}

/// A streamed flight's chunks as a complete answer in the request's format.
fn collected(request: &Request, flight: &Flight) -> Option<Answer> {
    let state = flight.state();
    let origin = state.origin.clone()?;
    let mut collector = StreamCollector::default();
    state.chunks.iter().for_each(|chunk| collector.push(chunk));
    drop(state);
    let mut resp = collector.finish()?;
    if resp.created == 0 {
        resp.created = unix_now();
    }
    Some(Answer { body: write_response(request.format, &resp), origin })
}

/// Finishes a follower's accounting with an error and returns it.
fn fail(accounting: Option<Accounting>, error: ApiError) -> ApiError {
    if let Some(accounting) = accounting {
        accounting.finish(Outcome::failed(error.status().as_u16(), error.kind()));
    }
    error
}

/// The usage of a complete answer body, for a follower's record.
fn usage_of(body: &Bytes) -> Usage {
    #[derive(serde::Deserialize, Default)]
    struct Counts {
        #[serde(default, alias = "input_tokens")]
        prompt_tokens: u32,
        #[serde(default, alias = "output_tokens")]
        completion_tokens: u32,
    }
    #[derive(serde::Deserialize)]
    struct UsageOnly {
        #[serde(default)]
        usage: Option<Counts>,
    }
    let counts =
        serde_json::from_slice::<UsageOnly>(body).ok().and_then(|u| u.usage).unwrap_or_default();
    Usage {
        input_tokens: counts.prompt_tokens,
        output_tokens: counts.completion_tokens,
        ..Usage::default()
    }
}

/// `x-floodgate-cache` of a waiter: `coalesced` for one that joined, else
/// `miss`, or `semantic-hit` (with its layer and similarity) when the call
/// found a close enough cached prompt.
fn insert_cache_header(headers: &mut HeaderMap, waiter: &Waiter, info: &mut RouteInfo) {
    if !waiter.leader {
        headers.insert(CACHE_HEADER, HeaderValue::from_static("coalesced"));
        return;
    }
    let semantic = waiter.flight.state().semantic;
    match semantic {
        Some((layer, similarity)) => {
            info.provider = Some("cache".to_string());
            headers.insert(CACHE_HEADER, HeaderValue::from_static("semantic-hit"));
            headers.insert(LAYER_HEADER, HeaderValue::from_static(layer.as_str()));
            if let Ok(v) = HeaderValue::from_str(&format!("{similarity:.4}")) {
                headers.insert(crate::cache::SIMILARITY_HEADER, v);
            }
        }
        None => {
            headers.insert(CACHE_HEADER, HeaderValue::from_static("miss"));
        }
    }
}

/// A stream for a waiter, from the flight's first chunk.
async fn stream_waiter(
    request: &Request,
    waiter: Waiter,
    accounting: Option<Accounting>,
    info: &mut RouteInfo,
) -> Result<Response, ApiError> {
    let mut seen = waiter.flight.watch();
    let origin = loop {
        seen.borrow_and_update();
        {
            let state = waiter.flight.state();
            if let Some(origin) = &state.origin {
                break origin.clone();
            }
            match &state.end {
                None => {}
                // A complete request's call: its answer replayed as a stream.
                Some(End::Answer(answer)) => {
                    let answer = answer.clone();
                    drop(state);
                    return replayed_answer(request, &waiter, &answer, accounting, info);
                }
                Some(End::Failed(error)) => {
                    let error = ApiError::Route((**error).clone());
                    drop(state);
                    return Err(fail(accounting, error));
                }
                Some(End::Complete | End::Broken(_) | End::Lost) => {
                    drop(state);
                    return Err(fail(accounting, lost()));
                }
            }
        }
        waiter.flight.changed(&mut seen).await;
    };
    info.provider = Some(origin.provider.clone());
    let mut cache_headers = HeaderMap::new();
    insert_cache_header(&mut cache_headers, &waiter, info);
    let relay = FlightRelay {
        writer: ClientWriter::new(request.format, &request.req),
        waiter,
        seen,
        cursor: 0,
        accounting,
        usage: Usage::default(),
        origin: origin.clone(),
        info: info.clone(),
        done: false,
    };
    let frames = futures_util::stream::unfold(relay, |mut relay| async move {
        relay.next_frame().await.map(|bytes| (Ok::<_, std::convert::Infallible>(bytes), relay))
    });
    let mut response = Body::from_stream(frames).into_response();
    let headers = response.headers_mut();
    sse_headers(headers);
    routed_headers(headers, &origin.provider, &origin.model, origin.attempts);
    routing_headers(headers, origin.waited, origin.hedged);
    headers.extend(cache_headers);
    Ok(response)
}

/// A complete flight's answer for a streaming waiter, as one SSE body.
fn replayed_answer(
    request: &Request,
    waiter: &Waiter,
    answer: &Answer,
    accounting: Option<Accounting>,
    info: &mut RouteInfo,
) -> Result<Response, ApiError> {
    let origin = &answer.origin;
    let Some(resp) = decode(request, &answer.body) else { return Err(fail(accounting, lost())) };
    let out = replay_sse(request, &resp, answer.body.len());
    if let Some(accounting) = accounting {
        accounting.finish(Outcome::cached(&origin.provider, &origin.model, resp.usage));
    }
    info.provider = Some(origin.provider.clone());
    let mut response = Body::from(out).into_response();
    let headers = response.headers_mut();
    sse_headers(headers);
    routed_headers(headers, &origin.provider, &origin.model, origin.attempts);
    routing_headers(headers, origin.waited, origin.hedged);
    insert_cache_header(headers, waiter, info);
    Ok(response)
}

/// One waiter's reading of a streamed flight, written in its format.
struct FlightRelay {
    waiter: Waiter,
    seen: watch::Receiver<u64>,
    /// Chunks of the flight already written.
    cursor: usize,
    writer: ClientWriter,
    /// A follower's own record (the leader's is the call's).
    accounting: Option<Accounting>,
    usage: Usage,
    origin: Origin,
    info: RouteInfo,
    done: bool,
}

impl FlightRelay {
    async fn next_frame(&mut self) -> Option<Bytes> {
        loop {
            if self.done {
                return None;
            }
            self.seen.borrow_and_update();
            let mut out = Vec::new();
            let end = {
                let state = self.waiter.flight.state();
                for chunk in &state.chunks[self.cursor.min(state.chunks.len())..] {
                    for event in &chunk.events {
                        if let StreamEvent::Usage(usage) = event {
                            self.usage = *usage;
                        }
                    }
                    self.writer.write(chunk, &mut out);
                }
                self.cursor = state.chunks.len();
                state.end.clone()
            };
            if !out.is_empty() {
                return Some(Bytes::from(out));
            }
            match end {
                None => self.waiter.flight.changed(&mut self.seen).await,
                Some(End::Complete) => {
                    self.writer.finish(&mut out);
                    self.finish(None);
                    return Some(Bytes::from(out));
                }
                Some(End::Broken(error)) => {
                    self.writer.write_error(&stream_error_body(&error), &mut out);
                    self.info.set_error(format!("stream failed mid-way: {}", error.message));
                    self.finish(Some(error.label()));
                    return Some(Bytes::from(out));
                }
                Some(End::Answer(_) | End::Failed(_) | End::Lost) => {
                    let error = crate::providers::ProviderError::new(
                        crate::providers::ErrorKind::Stream,
                        "the upstream call ended without completing the stream",
                    );
                    self.writer.write_error(&stream_error_body(&error), &mut out);
                    self.info.set_error("the coalesced upstream call was lost");
                    self.finish(Some("upstream_lost"));
                    return Some(Bytes::from(out));
                }
            }
        }
    }

    fn finish(&mut self, error: Option<&'static str>) {
        self.done = true;
        if let Some(accounting) = self.accounting.take() {
            let outcome = Outcome::cached(&self.origin.provider, &self.origin.model, self.usage);
            accounting.finish(match error {
                Some(label) => outcome.with_error(label),
                None => outcome,
            });
        }
    }
}

impl Drop for FlightRelay {
    fn drop(&mut self) {
        if !self.done {
            self.finish(Some("client_disconnected"));
        }
    }
}
