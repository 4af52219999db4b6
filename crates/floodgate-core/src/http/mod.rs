//! HTTP surface: the route table, body reading, and one module per route group.
//! `error.rs` is the only place that chooses a status code.

pub mod admin;
pub mod cache;
mod cached;
pub mod chat;
pub mod embeddings;
pub mod error;
pub mod jobs;
pub mod keys;
pub mod listener;
pub mod models;
pub mod ops;
pub mod realtime;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use floodgate_protocol::Format;
use http::{HeaderMap, HeaderValue, Method, Uri, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::config::WaitConfig;
use crate::pipeline::observe::RouteInfo;
use crate::routing::Admission;
pub use error::ApiError;

pub const PRIORITY_HEADER: &str = "x-floodgate-priority";
pub const MAX_WAIT_HEADER: &str = "x-floodgate-max-wait-ms";

/// A request's priority and how long it may wait for provider capacity,
/// from `x-floodgate-priority` (0–10) and `x-floodgate-max-wait-ms` (capped
/// at `routing.wait.max_wait_cap`), else the configured defaults.
pub fn admission(headers: &HeaderMap, config: &WaitConfig) -> Result<Admission, ApiError> {
    let text = |name: &'static str| -> Result<Option<&str>, ApiError> {
        match headers.get(name) {
            None => Ok(None),
            Some(value) => value.to_str().map(|v| Some(v.trim())).map_err(|_| {
                ApiError::InvalidHeader { name, message: format!("{name} is not valid text") }
            }),
        }
    };
    let priority = match text(PRIORITY_HEADER)? {
        None => config.default_priority,
        Some(value) => match value.parse::<u8>() {
            Ok(p) if p <= 10 => p,
            _ => {
                return Err(ApiError::InvalidHeader {
                    name: PRIORITY_HEADER,
                    message: format!(
                        "{PRIORITY_HEADER} must be a whole number from 0 to 10 (higher is served \
                         first); got {value:?}"
                    ),
                });
            }
        },
    };
    let max_wait = match text(MAX_WAIT_HEADER)? {
        None => config.max_wait,
        Some(value) => match value.parse::<u64>() {
            Ok(ms) => std::time::Duration::from_millis(ms).min(config.max_wait_cap),
            Err(_) => {
                return Err(ApiError::InvalidHeader {
                    name: MAX_WAIT_HEADER,
                    message: format!(
                        "{MAX_WAIT_HEADER} must be a whole number of milliseconds (0 = do not \
                         wait; at most {} is used); got {value:?}",
                        config.max_wait_cap.as_millis()
                    ),
                });
            }
        },
    };
    Ok(Admission { priority, max_wait })
}

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

/// A JSON body read into `T`; a bad one is a 400 naming where it went wrong
/// (`at .field`) and, in `valid`, what would be valid. `what` names the body.
pub fn parse_json<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: &str,
    valid: &str,
) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        ApiError::Invalid {
            message: if path == "." {
                format!("invalid {what} body: {inner}; {valid}")
            } else {
                format!("invalid {what} body at {path}: {inner}; {valid}")
            },
        }
    })
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
