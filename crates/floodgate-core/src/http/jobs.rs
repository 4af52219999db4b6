//! `/v1/jobs` (submit, read, cancel, the event stream) and the queue's
//! admin routes (`/admin/queue`, dead letters, webhook secrets).
//!
//! A submission is checked as the synchronous request would be (its body
//! read by the format's own parser, its model resolved and allowed for the
//! key) before it is queued, so a job that cannot run is a 400 now, not a
//! dead letter later. A job belongs to the key (or end user) that submitted
//! it: any other caller but the master key gets 404 for it, as for a job
//! that does not exist.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use floodgate_protocol::{Format, RequestError};
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::chat::Client;
use super::{ApiError, json_response, parse_json, read_body, respond};
use crate::app::AppState;
use crate::jobs::{self, may_access, owner_of, view};
use crate::pipeline::observe::RouteInfo;
use crate::queue::{Job, MAX_PRIORITY, NewJob, QueueError};
use crate::state::bus::Received;
use crate::time::now_ms;

/// `Idempotency-Key`, as an alternative to the body's `idempotency_key`.
const IDEMPOTENCY_HEADER: &str = "idempotency-key";
/// A comment line this often keeps an idle event stream open through proxies.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// An event stream re-reads its job this often, in case a final event was
/// missed (a lagging listener, a Redis reconnect).
const RECHECK: Duration = Duration::from_secs(5);

const VALID_FIELDS: &str = "valid fields: request (a chat completion or messages body, required), \
     format (\"openai\" or \"anthropic\"), priority (0-10), max_attempts, webhook_url, \
     idempotency_key, deadline (RFC 3339 time or Unix seconds)";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Submission {
    request: Option<Value>,
    format: Option<Value>,
    priority: Option<Value>,
    max_attempts: Option<Value>,
    webhook_url: Option<Value>,
    idempotency_key: Option<Value>,
    deadline: Option<Value>,
}

fn invalid(param: &str, message: impl Into<String>) -> ApiError {
    ApiError::InvalidRequest(RequestError::at(param, message))
}

fn unavailable(error: QueueError) -> ApiError {
    ApiError::Unavailable { what: "the job queue", message: error.to_string() }
}

fn not_found(id: &str) -> ApiError {
    ApiError::Missing {
        what: "job",
        id: id.to_string(),
        hint: " (or was submitted with another key)",
    }
}

fn no_dead_letter(id: &str) -> ApiError {
    ApiError::Missing {
        what: "dead letter",
        id: id.to_string(),
        hint: "; GET /admin/queue/dead-letters lists them",
    }
}

fn whole(
    value: &Value,
    param: &str,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, ApiError> {
    match value.as_u64() {
        Some(n) if range.contains(&n) => Ok(n),
        _ => Err(invalid(
            param,
            format!(
                "must be a whole number from {} to {}; got {value}",
                range.start(),
                range.end()
            ),
        )),
    }
}

fn text<'v>(value: &'v Value, param: &str) -> Result<&'v str, ApiError> {
    value.as_str().ok_or_else(|| invalid(param, format!("must be a string; got {value}")))
}

/// `POST /v1/jobs` → 202 with the job (200 with the existing one for a
/// repeated idempotency key).
pub async fn submit(
    State(app): State<AppState>,
    client: Client,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut info = RouteInfo::default();
    let result = async {
        let bytes = read_body(body, &headers, app.config.server.max_body_bytes).await?;
        let fields: Submission = parse_json(&bytes, "job", VALID_FIELDS)?;
        let request = fields.request.ok_or_else(|| {
            invalid("request", "required: the chat completion (or messages) body to run")
        })?;
        if !request.is_object() {
            return Err(invalid("request", "must be a JSON object (a chat completion body)"));
        }
        let format = match &fields.format {
            None => Format::OpenAi,
            Some(value) => match text(value, "format")? {
                "openai" => Format::OpenAi,
                "anthropic" => Format::Anthropic,
                other => {
                    return Err(invalid(
                        "format",
                        format!("must be \"openai\" (a chat completion body) or \"anthropic\" (a messages body); got {other:?}"),
                    ));
                }
            },
        };
        let request_bytes = serde_json::to_vec(&request).unwrap_or_default();
        let parsed = super::chat::parse_request(format, &request_bytes).map_err(|e| match e.param.as_deref() {
            Some(p) => {
                let message = e.message.strip_prefix(&format!("{p}: ")).unwrap_or(&e.message);
                invalid(&format!("request.{p}"), message)
            }
            None => invalid("request", e.message),
        })?;
        let route = app.router.resolve(&parsed.model).map_err(|e| invalid("request.model", format!("{e}; valid: {}", app.router.model_names().join(", "))))?;
        info.model = Some(route.name.clone());
        if let Some(key) = client.caller.key()
            && let Some(models) = &key.models
            && !models.contains(&route.name)
        {
            return Err(ApiError::ModelNotAllowed { model: route.name.clone(), allowed: models.clone() });
        }
        let priority = match &fields.priority {
            None => app.config.routing.wait.default_priority,
            Some(v) => whole(v, "priority", 0..=u64::from(MAX_PRIORITY))? as u8,
        };
        let cap = app.jobs.config.max_attempts_cap;
        let max_attempts = match &fields.max_attempts {
            None => app.jobs.config.max_attempts,
            Some(v) => whole(v, "max_attempts", 1..=u64::from(cap))? as u32,
        };
        let webhook_url = match &fields.webhook_url {
            None | Some(Value::Null) => None,
            Some(v) => {
                let url = text(v, "webhook_url")?;
                let ok = url.parse::<http::Uri>().ok().is_some_and(|u| {
                    matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some()
                });
                if !ok {
                    return Err(invalid(
                        "webhook_url",
                        "must be an absolute http:// or https:// URL",
                    ));
                }
                Some(url.to_string())
            }
        };
        let idempotency_key = match &fields.idempotency_key {
            Some(v) => Some(text(v, "idempotency_key")?.to_string()),
            None => headers
                .get(IDEMPOTENCY_HEADER)
                .map(|v| {
                    v.to_str().map(str::to_string).map_err(|_| {
                        ApiError::InvalidHeader {
                            name: IDEMPOTENCY_HEADER,
                            message: "idempotency-key is not valid text".to_string(),
                        }
                    })
                })
                .transpose()?,
        };
        if let Some(key) = &idempotency_key
            && (key.is_empty() || key.len() > 255)
        {
            return Err(invalid("idempotency_key", "must be 1 to 255 characters"));
        }
        let now = now_ms();
        let deadline_ms = match &fields.deadline {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => n.as_f64().filter(|s| s.is_finite() && *s > 0.0).map(|s| (s * 1000.0) as i64),
            Some(Value::String(s)) => crate::time::parse(s),
            Some(_) => None,
        };
        let deadline_ms = match (&fields.deadline, deadline_ms) {
            (None | Some(Value::Null), _) => None,
            (Some(_), Some(ms)) if ms > now => Some(ms),
            (Some(v), Some(_)) => {
                return Err(invalid("deadline", format!("{v} has passed already")));
            }
            (Some(v), None) => {
                return Err(invalid(
                    "deadline",
                    format!("must be an RFC 3339 time such as \"2026-12-01T10:00:00Z\" or Unix seconds; got {v}"),
                ));
            }
        };
        let job = NewJob {
            id: format!("job_{}", uuid::Uuid::new_v4().simple()),
            owner: owner_of(&client.caller),
            route: if format == Format::Anthropic { "messages" } else { "chat" }.to_string(),
            request,
            priority,
            max_attempts,
            webhook_url,
            idempotency_key,
            deadline_ms,
        };
        let (job, created) = app.jobs.queue.submit(job, now).await.map_err(|error| {
            ApiError::Unavailable {
                what: "the job queue",
                message: format!("{error}; the job was not queued, submit it again"),
            }
        })?;
        if created {
            app.jobs.submitted(&job);
        }
        let status = if created { StatusCode::ACCEPTED } else { StatusCode::OK };
        let mut response = json_response(view(&job).to_string().into_bytes());
        *response.status_mut() = status;
        Ok(response)
    }
    .await;
    respond(result, Format::OpenAi, info)
}

/// The job, if it exists and `client` may see it.
async fn visible(app: &AppState, client: &Client, id: &str) -> Result<Job, ApiError> {
    match app.jobs.queue.get(id).await.map_err(unavailable)? {
        Some(job) if may_access(&client.caller, job.owner.as_deref()) => Ok(job),
        _ => Err(not_found(id)),
    }
}

/// `GET /v1/jobs/{id}`: from the queue, or once the queue has forgotten the
/// job (or does not answer), from the job history in the store.
pub async fn get(State(app): State<AppState>, client: Client, Path(id): Path<String>) -> Response {
    let result = async {
        let missed = match visible(&app, &client, &id).await {
            Ok(job) => return Ok(json_response(view(&job).to_string().into_bytes())),
            Err(error) => error,
        };
        match app.store.job_record(&id).await {
            Ok(Some(record)) if may_access(&client.caller, record.owner.as_deref()) => {
                Ok(json_response(record.view.into_bytes()))
            }
            // Not in the history either: the queue's answer stands.
            _ => Err(missed),
        }
    }
    .await;
    respond(result, Format::OpenAi, RouteInfo::default())
}

/// `DELETE /v1/jobs/{id}`: cancels a queued or running job (a running one
/// stops within moments on whichever node runs it); a finished job is
/// returned as it is.
pub async fn cancel(
    State(app): State<AppState>,
    client: Client,
    Path(id): Path<String>,
) -> Response {
    let result = async {
        let job = visible(&app, &client, &id).await?;
        if job.status.is_final() {
            return Ok(json_response(view(&job).to_string().into_bytes()));
        }
        let job = app
            .jobs
            .queue
            .cancel(&id, now_ms())
            .await
            .map_err(unavailable)?
            .ok_or_else(|| not_found(&id))?;
        if job.status == crate::queue::JobStatus::Cancelled {
            app.jobs.cancelled(&job);
        }
        Ok(json_response(view(&job).to_string().into_bytes()))
    }
    .await;
    respond(result, Format::OpenAi, RouteInfo::default())
}

fn sse(event: &str, data: &Value) -> Bytes {
    let mut out = Vec::new();
    floodgate_protocol::sse::write_event(&mut out, Some(event), &data.to_string());
    Bytes::from(out)
}

/// The event that says where a job is now; final for a final job.
fn snapshot(job: &Job) -> (&'static str, Value) {
    use crate::queue::JobStatus as S;
    match job.status {
        S::Queued => {
            ("queued", json!({"id": job.id, "priority": job.priority, "attempts": job.attempts}))
        }
        S::Running => ("started", json!({"id": job.id, "attempt": job.attempts})),
        S::Completed => ("completed", view(job)),
        S::Failed => ("failed", view(job)),
        S::Cancelled => ("cancelled", view(job)),
    }
}

fn is_final_event(event: &str) -> bool {
    matches!(event, "completed" | "failed" | "cancelled")
}

/// `GET /v1/jobs/{id}/events`: SSE, first the job's state now, then each
/// event as it happens (`started`, `token`, `retrying`, and one of
/// `completed`, `failed`, `cancelled`, after which the stream ends). Tokens
/// streamed before the client connected are not repeated; the result is in
/// the final event.
pub async fn events(
    State(app): State<AppState>,
    client: Client,
    Path(id): Path<String>,
) -> Response {
    let result = async {
        // Listen first, then read: nothing that happens in between is lost
        // (a refused read drops the subscription).
        let subscription = app.jobs.bus.subscribe(&jobs::topic(&id));
        let job = visible(&app, &client, &id).await?;
        let (event, data) = snapshot(&job);
        let first = sse(event, &data);
        let done = is_final_event(event);
        let state = (app.clone(), id.clone(), subscription, Some(first), done);
        let frames = futures_util::stream::unfold(state, |(app, id, mut sub, first, done)| async move {
            if let Some(first) = first {
                return Some((Ok::<_, Infallible>(first), (app, id, sub, None, done)));
            }
            if done {
                return None;
            }
            let mut keep_alive = tokio::time::interval(KEEP_ALIVE);
            keep_alive.reset();
            let mut recheck = tokio::time::interval(RECHECK);
            recheck.reset();
            loop {
                tokio::select! {
                    received = sub.recv() => match received {
                        Some(Received::Message(m)) => {
                            let frame = sse(&m.event, &m.data);
                            let end = is_final_event(&m.event);
                            return Some((Ok(frame), (app, id, sub, None, end)));
                        }
                        Some(Received::Lagged(_)) | None => {
                            if let Ok(Some(job)) = app.jobs.queue.get(&id).await {
                                let (event, data) = snapshot(&job);
                                let end = is_final_event(event);
                                return Some((Ok(sse(event, &data)), (app, id, sub, None, end)));
                            }
                        }
                    },
                    _ = recheck.tick() => match app.jobs.queue.get(&id).await {
                        Ok(Some(job)) if job.status.is_final() => {
                            let (event, data) = snapshot(&job);
                            return Some((Ok(sse(event, &data)), (app, id, sub, None, true)));
                        }
                        // Deleted meanwhile (a dead letter deleted, a result purged).
                        Ok(None) => return None,
                        Ok(Some(_)) | Err(_) => {}
                    },
                    _ = keep_alive.tick() => {
                        return Some((Ok(Bytes::from_static(b": keep-alive\n\n")), (app, id, sub, None, false)));
                    }
                }
            }
        });
        let mut response = Body::from_stream(frames).into_response();
        super::chat::sse_headers(response.headers_mut());
        Ok(response)
    }
    .await;
    respond(result, Format::OpenAi, RouteInfo::default())
}

/// `GET /admin/queue`.
pub async fn admin_view(State(app): State<AppState>) -> Response {
    let result = async {
        let stats = app.jobs.queue.stats(now_ms()).await.map_err(unavailable)?;
        let pending: serde_json::Map<String, Value> =
            stats.pending.iter().enumerate().map(|(p, n)| (p.to_string(), json!(n))).collect();
        let body = json!({
            "backend": app.jobs.queue.name(),
            "pending": pending,
            "pending_total": stats.pending.iter().sum::<u64>(),
            "running": stats.running,
            "completed": stats.completed,
            "failed": stats.failed,
            "dead_letters": stats.dead,
            "cancelled": stats.cancelled,
            "oldest_wait_ms": stats.oldest_wait_ms,
            "node": {
                "workers": app.jobs.config.workers,
                "busy": app.jobs.busy(),
            },
        });
        Ok(json_response(body.to_string().into_bytes()))
    }
    .await;
    respond(result, Format::OpenAi, RouteInfo::default())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadQuery {
    limit: Option<usize>,
}

/// A dead letter for the admin: the job plus who sent it and what.
fn admin_job(job: &Job) -> Value {
    let mut value = view(job);
    if let Some(object) = value.as_object_mut() {
        object.insert("owner".into(), json!(job.owner));
        object.insert("request".into(), job.request.clone());
    }
    value
}

/// `GET /admin/queue/dead-letters?limit=` (oldest first, default 100, at most 1,000).
pub async fn dead_letters(
    State(app): State<AppState>,
    query: Result<Query<DeadQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let result = async {
        let Query(query) = query
            .map_err(|e| ApiError::Invalid { message: format!("{e}; valid: limit (1 to 1000)") })?;
        let limit = query.limit.unwrap_or(100);
        if !(1..=1000).contains(&limit) {
            return Err(invalid("limit", format!("must be from 1 to 1000; got {limit}")));
        }
        let dead = app.jobs.queue.dead_letters(limit).await.map_err(unavailable)?;
        let body =
            json!({"object": "list", "data": dead.iter().map(admin_job).collect::<Vec<_>>()});
        Ok(json_response(body.to_string().into_bytes()))
    }
    .await;
    respond(result, Format::OpenAi, RouteInfo::default())
}

/// `POST /admin/queue/dead-letters/{id}/retry`: queued again with a fresh set of attempts.
pub async fn retry_dead(State(app): State<AppState>, Path(id): Path<String>) -> Response {
    let result = async {
        let job = app.jobs.queue.retry_dead(&id, now_ms()).await.map_err(unavailable)?;
        let job = job.ok_or_else(|| no_dead_letter(&id))?;
        app.jobs.submitted(&job);
        Ok(json_response(admin_job(&job).to_string().into_bytes()))
    }
    .await;
    respond(result, Format::OpenAi, RouteInfo::default())
}

/// `DELETE /admin/queue/dead-letters/{id}`.
pub async fn delete_dead(State(app): State<AppState>, Path(id): Path<String>) -> Response {
    let result = async {
        if !app.jobs.queue.delete_dead(&id).await.map_err(unavailable)? {
            return Err(no_dead_letter(&id));
        }
        Ok(json_response(json!({"id": id, "deleted": true}).to_string().into_bytes()))
    }
    .await;
    respond(result, Format::OpenAi, RouteInfo::default())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretQuery {
    key_id: Option<String>,
}

/// `GET /admin/queue/webhook-secret?key_id=`: the secret that signs the
/// webhooks of that key's jobs (without `key_id`, the master key's jobs).
pub async fn webhook_secret(
    State(app): State<AppState>,
    query: Result<Query<SecretQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let result = async {
        let Query(query) = query.map_err(|e| ApiError::Invalid { message: format!("{e}; valid: key_id") })?;
        if let Some(id) = &query.key_id
            && app.keys.by_id(id).is_none()
        {
            return Err(ApiError::Missing { what: "key", id: id.clone(), hint: "; GET /admin/keys lists them" });
        }
        let secret = app.jobs.webhooks.secret_for(query.key_id.as_deref()).ok_or_else(|| ApiError::Invalid {
            message: "webhooks are unsigned: set [queue] webhook_secret (or a master key)".to_string(),
        })?;
        let body = json!({"key_id": query.key_id, "secret": secret, "header": jobs::webhook::SIGNATURE_HEADER, "algorithm": "HMAC-SHA256 of the raw body, hex, prefixed sha256="});
        Ok(json_response(body.to_string().into_bytes()))
    }
    .await;
    respond(result, Format::OpenAi, RouteInfo::default())
}
