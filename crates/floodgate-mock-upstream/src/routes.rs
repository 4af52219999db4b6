//! The route table, and the few handlers that belong to no single provider.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::call::{Fault, Incoming, Provider, error_response};
use crate::state::Shared;
use crate::{anthropic, gemini, openai};

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/v1/chat/completions", post(openai::chat))
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/v1/models", get(models))
        .route("/v1/messages", post(anthropic::messages))
        .route("/v1beta/models", get(gemini::models))
        .route("/v1beta/models/{*rest}", post(gemini::dispatch))
        .fallback(not_found)
        .with_state(shared)
}

async fn health(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    match Incoming::read(&shared, request, Provider::OpenAi).await {
        Ok(_) => "ok".into_response(),
        Err(response) => response,
    }
}

/// `GET /v1/models` is both OpenAI's and Anthropic's; Anthropic clients always send
/// `anthropic-version`.
async fn models(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    if request.headers().contains_key("anthropic-version") {
        anthropic::models(&shared, request).await
    } else {
        openai::models(&shared, request).await
    }
}

async fn not_found(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let provider = if request.uri().path().starts_with("/v1beta/") {
        Provider::Gemini
    } else if request.headers().contains_key("anthropic-version") {
        Provider::Anthropic
    } else {
        Provider::OpenAi
    };
    let message = format!("Invalid URL ({} {})", request.method(), request.uri().path());
    match Incoming::read(&shared, request, provider).await {
        Ok(_) => error_response(provider, Fault::NotFound, &message, None),
        Err(response) => response,
    }
}
