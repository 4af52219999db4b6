//! Admin routes (master key only): `GET /admin/providers` (every provider's
//! keys, limits and quotas used, every target's breaker, latency and error
//! rate, every alias's retry budget and wait queue),
//! `GET /admin/providers/{name}`, and `POST /admin/providers/{name}/reset`
//! (closes breakers, re-enables keys a 401/403 took out of use, forgets 429
//! pauses).

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use floodgate_protocol::Format;
use serde_json::json;

use super::{ApiError, json_response, respond};
use crate::app::AppState;
use crate::pipeline::auth::{Auth, Caller};
use crate::pipeline::observe::RouteInfo;

/// Lets only the master key through; with no master key the admin API is off.
pub async fn require_master(
    State(auth): State<Arc<Auth>>,
    request: Request,
    next: Next,
) -> Response {
    let result = if auth.enabled() {
        match auth.check(request.headers()) {
            Ok(Caller::Master) => Ok(()),
            Ok(_) => Err(ApiError::NotMaster),
            Err(error) => Err(error),
        }
    } else {
        Err(ApiError::AdminDisabled)
    };
    match result {
        Ok(()) => next.run(request).await,
        Err(error) => respond(Err(error), Format::OpenAi, RouteInfo::default()),
    }
}

pub async fn providers(State(app): State<AppState>) -> Response {
    let body = json!({
        "providers": app.router.provider_views(),
        "models": app.router.alias_views(),
    });
    json_response(body.to_string().into_bytes())
}

pub async fn provider(State(app): State<AppState>, Path(name): Path<String>) -> Response {
    let result = match app.router.provider_view(&name) {
        Some(view) => match serde_json::to_vec(&view) {
            Ok(body) => Ok(json_response(body)),
            Err(e) => Err(ApiError::BodyRead(e.to_string())),
        },
        None => Err(unknown_provider(&app, name)),
    };
    respond(result, Format::OpenAi, RouteInfo::default())
}

pub async fn reset(State(app): State<AppState>, Path(name): Path<String>) -> Response {
    let result = match app.router.reset_provider(&name).await {
        Some(report) => {
            let body = json!({
                "provider": name,
                "breakers_closed": report.breakers_closed,
                "keys_enabled": report.keys_enabled,
            });
            Ok(json_response(body.to_string().into_bytes()))
        }
        None => Err(unknown_provider(&app, name)),
    };
    respond(result, Format::OpenAi, RouteInfo::default())
}

fn unknown_provider(app: &AppState, name: String) -> ApiError {
    let known: Vec<String> = app.router.providers().map(|p| p.name.clone()).collect();
    ApiError::NotFound { what: "provider", name, known }
}
