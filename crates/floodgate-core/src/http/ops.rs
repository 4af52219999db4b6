//! Operational routes, without auth: `GET /health` (liveness),
//! `GET /health/ready` (readiness per component, 503 when not ready or
//! draining) and `GET /metrics` (Prometheus text format).

use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::{Map, Value, json};

use crate::app::AppState;

/// A dependency that does not answer within this is reported as timing
/// out. The checks run together, so readiness answers within this however
/// slow the dependencies are: probes (Kubernetes' default timeout is 1 s,
/// HAProxy's here 2 s) must not fail because the database is slow.
const CHECK_TIMEOUT: Duration = Duration::from_millis(800);

pub async fn health() -> Response {
    let mut response = json!({"status": "ok"}).to_string().into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

pub async fn ready(State(app): State<AppState>) -> Response {
    let mut ready = true;

    let mut providers = Map::new();
    let mut any_provider = false;
    for provider in app.router.providers() {
        let usable = provider.keys.in_use();
        any_provider |= usable;
        let disabled: Vec<Value> = provider
            .keys
            .disabled()
            .into_iter()
            .map(|(index, reason)| json!({"key": index, "reason": reason}))
            .collect();
        providers.insert(
            provider.name.clone(),
            json!({
                "status": if usable { "ok" } else { "no_usable_key" },
                "kind": provider.kind.as_str(),
                "keys": provider.keys.len(),
                "keys_usable": provider.keys.usable(),
                "keys_disabled": disabled,
                "key_limits": provider.keys.views().into_iter()
                    .map(|view| json!({
                        "key": view.key,
                        "requests_left": view.limits.rpm.map(|l| l.remaining),
                        "tokens_left": view.limits.tpm.map(|l| l.remaining),
                    }))
                    .collect::<Vec<_>>(),
            }),
        );
    }
    ready &= any_provider;

    // Neither a Redis nor a database outage takes the node out of service:
    // taking every node out of the load balancer would turn the outage of a
    // dependency into one of the whole gateway. Without Redis, limits hold
    // per node, the cache serves from L1 and job submissions are refused;
    // without the database, keys are held in memory and the ledger spills.
    let state = match &app.members {
        None => json!({"status": "ok", "backend": "memory"}),
        Some(members) if !members.redis_up() => json!({
            "status": "degraded",
            "backend": "redis",
            "nodes": members.count(),
            "message": "Redis does not answer: limits hold per node, the cache serves from this node, job submissions are refused (503) until it returns",
        }),
        Some(members) => json!({"status": "ok", "backend": "redis", "nodes": members.count()}),
    };
    let database = check(app.store.name(), app.store.ping());
    // The same for Redis: limits then hold on this node's own state.
    let limiter = match &app.limiter_fallback {
        None => json!({"status": "ok", "backend": app.limits.limiter.name()}),
        Some(fallback) if fallback.degraded() => json!({
            "status": "degraded",
            "backend": "redis",
            "message": "Redis does not answer; limits hold per node until it does",
        }),
        Some(_) => json!({"status": "ok", "backend": "redis"}),
    };
    // And for the cache: L1 and the upstream serve while L2 is down.
    let cache = match app.cache.l2_degraded() {
        _ if !app.cache.enabled() => json!({"status": "off"}),
        None => json!({"status": "ok", "layers": "l1"}),
        Some(true) => json!({
            "status": "degraded",
            "layers": "l1",
            "message": "the shared cache (Redis) does not answer; serving from this node's cache and the upstream",
        }),
        Some(false) => json!({"status": "ok", "layers": "l1+l2"}),
    };
    // A queue that does not answer refuses submissions (503); the
    // synchronous routes serve on.
    let queue = check(app.jobs.queue.name(), async {
        app.jobs.queue.stats(crate::time::now_ms()).await.map(|_| ())
    });
    let ((_, database), (_, mut queue)) = tokio::join!(database, queue);
    if let Some(object) = queue.as_object_mut() {
        object.insert("workers".into(), json!(app.jobs.config.workers));
        object.insert("busy".into(), json!(app.jobs.busy()));
    }
    let draining = app.draining.is_cancelled();
    let status = if draining {
        "draining"
    } else if ready {
        "ready"
    } else {
        "not_ready"
    };
    let body = json!({
        "status": status,
        "components": {
            "providers": {"status": if any_provider { "ok" } else { "no_usable_provider" }, "providers": providers},
            "state": state,
            "database": database,
            "limiter": limiter,
            "cache": cache,
            "queue": queue,
        }
    });
    let code = if ready && !draining { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let mut response = (code, body.to_string()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Pings a dependency with a deadline: `(ok, its JSON status)`.
async fn check<E: std::fmt::Display>(
    backend: &str,
    ping: impl Future<Output = Result<(), E>>,
) -> (bool, Value) {
    match tokio::time::timeout(CHECK_TIMEOUT, ping).await {
        Ok(Ok(())) => (true, json!({"status": "ok", "backend": backend})),
        Ok(Err(e)) => {
            (false, json!({"status": "error", "backend": backend, "error": e.to_string()}))
        }
        Err(_) => (false, json!({"status": "timeout", "backend": backend})),
    }
}

pub async fn metrics(State(app): State<AppState>) -> Response {
    let mut response = app.metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}
