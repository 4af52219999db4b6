//! Cache admin routes (master key only): `GET /admin/cache` (entries,
//! bytes, hit rates per layer and alias), `POST /admin/cache/clear` (all,
//! one alias or one virtual key's answers, on every node), and
//! `POST /admin/cache/warm` (pre-fills the cache with a list of requests).

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use floodgate_protocol::{Format, anthropic, openai};
use futures_util::StreamExt;
use http::HeaderMap;
use serde::Deserialize;
use serde_json::{Value, json};

use super::cached;
use super::{ApiError, json_response, parse_json, read_body, respond};
use crate::app::AppState;
use crate::cache::{CACHE_HEADER, Decision, TTL_HEADER};
use crate::pipeline::observe::{RequestId, RouteInfo};
use crate::providers::ClientHints;
use crate::usage::Accounting;

/// At most this many requests per warm call.
const MAX_WARM: usize = 1000;
/// Warm requests run this many at once.
const WARM_CONCURRENCY: usize = 4;

pub async fn view(State(app): State<AppState>) -> Response {
    json_response(app.cache.view().to_string().into_bytes())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClearBody {
    model: Option<String>,
    key_id: Option<String>,
}

pub async fn clear(State(app): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let result = async {
        let bytes = read_body(body, &headers, 64 * 1024).await?;
        let fields: ClearBody = if bytes.iter().all(u8::is_ascii_whitespace) {
            ClearBody::default()
        } else {
            parse_json(
                &bytes,
                "cache clear",
                "valid fields: model (an alias), key_id; none clears all",
            )?
        };
        if let Some(model) = &fields.model
            && !app.router.model_names().contains(model)
        {
            return Err(ApiError::NotFound {
                what: "model",
                name: model.clone(),
                known: app.router.model_names().to_vec(),
            });
        }
        let report = app
            .cache
            .clear(fields.model.as_deref(), fields.key_id.as_deref())
            .await
            .map_err(|message| ApiError::Unavailable { what: "the shared cache", message })?;
        let body = json!({
            "cleared": report,
            "model": fields.model,
            "key_id": fields.key_id,
        });
        Ok(json_response(body.to_string().into_bytes()))
    }
    .await;
    respond(result, Format::OpenAi, RouteInfo::default())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WarmBody {
    requests: Vec<WarmRequest>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WarmRequest {
    /// `chat` (OpenAI format, the default) or `messages` (Anthropic).
    #[serde(default)]
    route: WarmRoute,
    body: Value,
    /// Warm this virtual key's namespace (aliases with `namespace = "key"`).
    key_id: Option<String>,
    ttl_seconds: Option<u64>,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum WarmRoute {
    #[default]
    Chat,
    Messages,
}

pub async fn warm(
    State(app): State<AppState>,
    Extension(id): Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        let bytes = read_body(body, &headers, app.config.server.max_body_bytes).await?;
        let fields: WarmBody = parse_json(
            &bytes,
            "cache warm",
            "{\"requests\": [{\"route\": \"chat\"|\"messages\", \"body\": {...}, \"key_id\"?, \"ttl_seconds\"?}]}",
        )?;
        if fields.requests.len() > MAX_WARM {
            return Err(ApiError::Invalid {
                message: format!(
                    "requests holds {} requests; at most {MAX_WARM} per call",
                    fields.requests.len()
                ),
            });
        }
        let results: Vec<Value> = futures_util::stream::iter(fields.requests.into_iter().enumerate())
            .map(|(index, request)| {
                let app = app.clone();
                let id = id.clone();
                async move {
                    match warm_one(&app, &id, request).await {
                        Ok(status) => json!({"index": index, "status": status}),
                        Err(error) => json!({
                            "index": index,
                            "status": "error",
                            "error": error.to_string(),
                        }),
                    }
                }
            })
            .buffered(WARM_CONCURRENCY)
            .collect()
            .await;
        let count = |status: &str| results.iter().filter(|r| r["status"] == status).count();
        let body = json!({
            "stored": count("stored"),
            "cached": count("cached"),
            "not_cacheable": count("not_cacheable"),
            "errors": count("error"),
            "results": results,
        });
        Ok(json_response(body.to_string().into_bytes()))
    }
    .await;
    respond(result, Format::OpenAi, RouteInfo::default())
}

/// One warm request: `stored`, `cached` (it was already), or `not_cacheable`.
async fn warm_one(
    app: &AppState,
    id: &RequestId,
    request: WarmRequest,
) -> Result<&'static str, ApiError> {
    let bytes = serde_json::to_vec(&request.body).unwrap_or_default();
    let (format, route_label, mut req) = match request.route {
        WarmRoute::Chat => (Format::OpenAi, "chat", openai::parse_chat_request(&bytes)?),
        WarmRoute::Messages => {
            (Format::Anthropic, "messages", anthropic::parse_chat_request(&bytes)?)
        }
    };
    // One complete answer serves streaming and complete requests alike.
    req.stream = false;
    let route = app.router.resolve(&req.model)?;
    let mut headers = HeaderMap::new();
    if let Some(ttl) = request.ttl_seconds {
        headers.insert(TTL_HEADER, http::HeaderValue::from(ttl));
    }
    let decision = app
        .cache
        .plan(
            route_label,
            &route.name,
            request.key_id.as_deref(),
            &headers,
            req.native.as_ref().map(|n| &n.body),
            req.temperature,
        )
        .map_err(|e| ApiError::Invalid { message: e.message })?;
    let plan = match decision {
        Decision::Use(plan) => plan,
        Decision::Off | Decision::Bypass => return Ok("not_cacheable"),
    };
    let admission =
        crate::routing::Admission { priority: 0, max_wait: app.config.routing.wait.max_wait };
    let mut accounting = Accounting::new(app, id, route_label, &route.name, false);
    accounting.set_client(request.key_id.as_deref(), None);
    let request = cached::Request {
        format,
        req,
        hints: ClientHints::default(),
        route,
        admission,
        plan: plan.into(),
    };
    let mut info = RouteInfo::default();
    let response = cached::serve(app, request, accounting, &mut info).await?;
    let status = response.headers().get(CACHE_HEADER).and_then(|v| v.to_str().ok());
    match status {
        Some("hit" | "semantic-hit") => Ok("cached"),
        _ if response.status().is_success() => Ok("stored"),
        _ => Err(ApiError::Unavailable {
            what: "the upstream",
            message: format!("answered {}", response.status()),
        }),
    }
}
