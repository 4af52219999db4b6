//! `GET /v1/models` and `GET /v1/models/{id}`: the model aliases clients can
//! use, in OpenAI's list shape, or Anthropic's when the client sends
//! `anthropic-version` (as the Anthropic SDK does).

use axum::extract::{Path, State};
use axum::response::Response;
use floodgate_protocol::Format;
use http::HeaderMap;
use serde_json::{Value, json};

use super::{json_response, respond};
use crate::app::AppState;
use crate::pipeline::observe::RouteInfo;

/// Aliases carry no creation time; this fixed one (2024-01-01) keeps
/// responses stable.
const CREATED: u64 = 1_704_067_200;
const CREATED_RFC3339: &str = "2024-01-01T00:00:00Z";

fn wants_anthropic(headers: &HeaderMap) -> bool {
    headers.contains_key("anthropic-version")
}

fn openai_model(id: &str) -> Value {
    json!({"id": id, "object": "model", "created": CREATED, "owned_by": "floodgate"})
}

fn anthropic_model(id: &str) -> Value {
    json!({"type": "model", "id": id, "display_name": id, "created_at": CREATED_RFC3339})
}

pub async fn list(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let names = app.router.model_names();
    let body = if wants_anthropic(&headers) {
        json!({
            "data": names.iter().map(|n| anthropic_model(n)).collect::<Vec<_>>(),
            "has_more": false,
            "first_id": names.first(),
            "last_id": names.last(),
        })
    } else {
        json!({"object": "list", "data": names.iter().map(|n| openai_model(n)).collect::<Vec<_>>()})
    };
    json_response(body.to_string().into_bytes())
}

pub async fn get(
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let anthropic = wants_anthropic(&headers);
    let format = if anthropic { Format::Anthropic } else { Format::OpenAi };
    let result = match app.router.resolve(&id) {
        Ok(route) => {
            let body =
                if anthropic { anthropic_model(&route.name) } else { openai_model(&route.name) };
            Ok(json_response(body.to_string().into_bytes()))
        }
        Err(e) => Err(e.into()),
    };
    respond(result, format, RouteInfo::default())
}
