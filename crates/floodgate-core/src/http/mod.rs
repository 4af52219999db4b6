//! HTTP surface: the route table, body reading, and one module per route group.
//! `error.rs` is the only place that chooses a status code.

pub mod chat;
pub mod embeddings;
pub mod error;
pub mod listener;
pub mod models;
pub mod ops;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use floodgate_protocol::Format;
use http::{HeaderMap, HeaderValue, Method, Uri, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::pipeline::observe::RouteInfo;
pub use error::ApiError;

/// Reads a request body, refusing more than `limit` bytes with 413 (at once
/// when `content-length` says so, else as soon as the limit is passed).
pub async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ApiError::PayloadTooLarge { limit })
        }
        Err(e) => Err(ApiError::BodyRead(e.to_string())),
    }
}

/// Turns a handler's result into its response, in the route's format, with
/// the [`RouteInfo`] the edge log and metrics read.
pub fn respond(result: Result<Response, ApiError>, format: Format, info: RouteInfo) -> Response {
    let mut response = match result {
        Ok(response) => response,
        Err(error) => {
            info.set_error(format!("{}: {}", error.kind(), error));
            error.into_response_for(format)
        }
    };
    response.extensions_mut().insert(info);
    response
}

pub fn json_response(body: impl Into<Bytes>) -> Response {
    let mut response = Body::from(body.into()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Unknown path: 404 in the path's format.
pub async fn no_route(method: Method, uri: Uri) -> Response {
    let path = uri.path().to_string();
    let format = error::format_for_path(&path);
    respond(
        Err(ApiError::NoRoute { method: method.to_string(), path }),
        format,
        RouteInfo::default(),
    )
}

/// Known path, wrong method: 405 in the path's format.
pub async fn wrong_method(method: Method, uri: Uri) -> Response {
    let path = uri.path().to_string();
    let format = error::format_for_path(&path);
    respond(
        Err(ApiError::MethodNotAllowed { method: method.to_string(), path }),
        format,
        RouteInfo::default(),
    )
}
