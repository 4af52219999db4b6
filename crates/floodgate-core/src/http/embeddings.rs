//! `POST /v1/embeddings` (OpenAI format), served by any target with an
//! embeddings API (OpenAI, OpenAI-compatible, Gemini).

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use floodgate_protocol::{Format, openai};
use http::{HeaderMap, HeaderValue};

use super::chat::routed_headers;
use super::{ApiError, json_response, read_body, respond};
use crate::app::AppState;
use crate::cache::{CACHE_HEADER, Decision, Outcome as Lookup, Plan};
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
        let decision = app
            .cache
            .plan(
                "embeddings",
                &route.name,
                client.caller.key().map(|k| k.id.as_str()),
                &headers,
                req.native.as_ref().map(|n| &n.body),
                None,
            )
            .map_err(|e| ApiError::InvalidHeader { name: e.name, message: e.message })?;
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
        let plan = match decision {
            Decision::Use(plan) => Some(std::sync::Arc::<Plan>::from(plan)),
            Decision::Off | Decision::Bypass => None,
        };
        let span = plan.as_ref().map(|p| super::cached::lookup_span(p.lookup));
        if let Some(plan) = &plan
            && plan.lookup
            && let Some((entry, layer)) = app.cache.get(plan).await
        {
            app.cache.count(&plan.alias, Lookup::hit(layer));
            if let Some(span) = &span {
                span.set(super::cached::OUTCOME, Lookup::hit(layer).as_str());
            }
            drop(span);
            let body = entry.body.clone();
            return Ok(super::cached::hit_response(
                &entry, body, layer, false, accounting, &mut info,
            ));
        }
        if let Some(plan) = &plan {
            app.cache.count(&plan.alias, Lookup::Miss);
        }
        if let Some(span) = span {
            span.set(super::cached::OUTCOME, Lookup::Miss.as_str());
        }
        match app.router.embeddings(&route, &req, admission).await {
            Ok(routed) => {
                info.provider = Some(routed.provider.clone());
                accounting.finish(
                    Outcome::answered(&routed.provider, &routed.model, routed.value.usage, None)
                        .attempts(routed.attempts),
                );
                // The client's `encoding_format` lives only in its native body.
                let base64 = openai::wants_base64(&req);
                let body = openai::write_embeddings_response_as(&routed.value, base64);
                if let Some(plan) = &plan {
                    let (provider, model) = (&routed.provider, &routed.model);
                    let usage = routed.value.usage;
                    super::cached::store(
                        &app,
                        plan,
                        body.clone().into(),
                        provider,
                        model,
                        usage,
                        None,
                    );
                }
                let mut response = json_response(body);
                if plan.is_some() {
                    response.headers_mut().insert(CACHE_HEADER, HeaderValue::from_static("miss"));
                }
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
