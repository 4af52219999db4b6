//! `POST /v1/embeddings` (OpenAI format), served by any target with an
//! embeddings API (OpenAI, OpenAI-compatible, Gemini).

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use floodgate_protocol::{Format, openai};
use http::HeaderMap;

use super::chat::routed_headers;
use super::{ApiError, json_response, read_body, respond};
use crate::app::AppState;
use crate::pipeline::observe::{RequestId, RouteInfo};
use crate::usage::{Accounting, Outcome};

pub async fn embeddings(
    State(app): State<AppState>,
    Extension(id): Extension<RequestId>,
    client: super::chat::Client,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut info = RouteInfo::default();
    let result = async {
        let bytes = read_body(body, &headers, app.config.server.max_body_bytes).await?;
        let req = openai::parse_embeddings_request(&bytes)?;
        let route = app.router.resolve(&req.model)?;
        info.model = Some(route.name.clone());
        let admission = super::admission(&headers, &app.config.routing.wait)?;
        let accounting = Accounting::new(&app, &id, "embeddings", &route.name, false);
        let accounting = super::chat::admit(
            &app,
            &client,
            &headers,
            &route,
            req.user.as_deref(),
            |tokenizer| crate::routing::estimate::embeddings(&req, tokenizer),
            accounting,
        )
        .await?;
        match app.router.embeddings(&route, &req, admission).await {
            Ok(routed) => {
                info.provider = Some(routed.provider.clone());
                accounting.finish(
                    Outcome::answered(&routed.provider, &routed.model, routed.value.usage, None)
                        .attempts(routed.attempts),
                );
                // The client's `encoding_format` lives only in its native body.
                let base64 = openai::wants_base64(&req);
                let mut response =
                    json_response(openai::write_embeddings_response_as(&routed.value, base64));
                routed_headers(
                    response.headers_mut(),
                    &routed.provider,
                    &routed.model,
                    routed.attempts,
                );
                super::chat::routing_headers(response.headers_mut(), routed.waited, false);
                Ok(response)
            }
            Err(error) => {
                let error = ApiError::Route(error);
                accounting.finish(Outcome::failed(error.status().as_u16(), error.kind()));
                Err(error)
            }
        }
    }
    .await;
    respond(result, Format::OpenAi, info)
}
