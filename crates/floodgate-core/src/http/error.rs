//! The one place errors become HTTP responses.
//!
//! Every client-visible failure is an [`ApiError`]; [`ApiError::into_response_for`]
//! chooses the status (with an exhaustive match) and writes the body in the
//! route's format: OpenAI's `{"error":{message,type,code,param}}` everywhere
//! except `/v1/messages`, which answers in Anthropic's
//! `{"type":"error","error":{type,message}}`. Messages never carry a secret:
//! upstream text is scrubbed before it becomes a `ProviderError`.

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use floodgate_protocol::{Format, RequestError, anthropic, openai};
use http::{HeaderValue, StatusCode, header};

use crate::providers::ErrorKind;
use crate::routing::RouteError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidRequest(RequestError),
    #[error("the request body could not be read: {0}")]
    BodyRead(String),
    #[error("{message}")]
    InvalidHeader { name: &'static str, message: String },
    #[error(
        "the admin API is off: no master key is configured; set master_key (or FLOODGATE_MASTER_KEY)"
    )]
    AdminDisabled,
    #[error("this route needs the master key")]
    NotMaster,
    #[error("{what} {name:?} does not exist; valid: {}", .known.join(", "))]
    NotFound { what: &'static str, name: String, known: Vec<String> },
    /// A thing by id that does not exist (or is not the caller's to see).
    #[error("{what} {id:?} does not exist{hint}")]
    Missing { what: &'static str, id: String, hint: &'static str },
    #[error("missing API key")]
    MissingKey,
    #[error("invalid API key")]
    InvalidKey,
    #[error("this API key expired at {at}")]
    KeyExpired { at: String },
    #[error("invalid bearer token: {0}")]
    InvalidToken(String),
    #[error("this key may not use model {model:?}; it may use: {}", .allowed.join(", "))]
    ModelNotAllowed { model: String, allowed: Vec<String> },
    /// A client limit refused the request; `code` says which kind.
    #[error("{message}")]
    Limited { code: &'static str, message: String, retry_after: Option<Duration> },
    #[error("{message}")]
    Invalid { message: String },
    #[error("{what} is unavailable: {message}")]
    Unavailable { what: &'static str, message: String },
    #[error("the request body is larger than the {limit}-byte limit")]
    PayloadTooLarge { limit: usize },
    #[error("no route {method} {path}")]
    NoRoute { method: String, path: String },
    #[error("{path} does not accept {method}")]
    MethodNotAllowed { method: String, path: String },
    #[error("the gateway is at its limit of {limit} requests in flight; retry shortly")]
    Overloaded { limit: usize },
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error(transparent)]
    Refused(#[from] crate::realtime::Refusal),
    #[error(transparent)]
    Topic(#[from] crate::realtime::TopicError),
}

/// The error format of a path: Anthropic's on `/v1/messages`, OpenAI's elsewhere.
pub fn format_for_path(path: &str) -> Format {
    if path.starts_with("/v1/messages") { Format::Anthropic } else { Format::OpenAi }
}

/// How an error is presented: status, machine-readable code, and per-format type.
struct Shape {
    status: StatusCode,
    code: &'static str,
    openai_type: &'static str,
    anthropic_type: &'static str,
    param: Option<String>,
    retry_after: Option<Duration>,
}

impl Shape {
    fn new(
        status: StatusCode,
        code: &'static str,
        openai_type: &'static str,
        anthropic_type: &'static str,
    ) -> Self {
        Shape { status, code, openai_type, anthropic_type, param: None, retry_after: None }
    }
}

impl ApiError {
    /// Low-cardinality label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        self.shape().code
    }

    pub fn status(&self) -> StatusCode {
        self.shape().status
    }

    fn shape(&self) -> Shape {
        use StatusCode as S;
        match self {
            ApiError::InvalidRequest(e) => Shape {
                param: e.param.clone(),
                ..Shape::new(
                    S::BAD_REQUEST,
                    "invalid_request",
                    "invalid_request_error",
                    "invalid_request_error",
                )
            },
            ApiError::BodyRead(_) => Shape::new(
                S::BAD_REQUEST,
                "invalid_body",
                "invalid_request_error",
                "invalid_request_error",
            ),
            ApiError::InvalidHeader { name, .. } => Shape {
                param: Some((*name).to_string()),
                ..Shape::new(
                    S::BAD_REQUEST,
                    "invalid_header",
                    "invalid_request_error",
                    "invalid_request_error",
                )
            },
            ApiError::AdminDisabled => Shape::new(
                S::FORBIDDEN,
                "admin_disabled",
                "invalid_request_error",
                "permission_error",
            ),
            ApiError::NotMaster => Shape::new(
                S::FORBIDDEN,
                "master_key_required",
                "invalid_request_error",
                "permission_error",
            ),
            ApiError::NotFound { .. } => {
                Shape::new(S::NOT_FOUND, "not_found", "invalid_request_error", "not_found_error")
            }
            ApiError::Missing { .. } => {
                Shape::new(S::NOT_FOUND, "not_found", "invalid_request_error", "not_found_error")
            }
            ApiError::MissingKey => Shape::new(
                S::UNAUTHORIZED,
                "missing_api_key",
                "invalid_request_error",
                "authentication_error",
            ),
            ApiError::InvalidKey => Shape::new(
                S::UNAUTHORIZED,
                "invalid_api_key",
                "invalid_request_error",
                "authentication_error",
            ),
            ApiError::KeyExpired { .. } => Shape::new(
                S::UNAUTHORIZED,
                "expired_api_key",
                "invalid_request_error",
                "authentication_error",
            ),
            ApiError::InvalidToken(_) => Shape::new(
                S::UNAUTHORIZED,
                "invalid_token",
                "invalid_request_error",
                "authentication_error",
            ),
            ApiError::ModelNotAllowed { .. } => Shape {
                param: Some("model".to_string()),
                ..Shape::new(
                    S::FORBIDDEN,
                    "model_not_allowed",
                    "invalid_request_error",
                    "permission_error",
                )
            },
            ApiError::Limited { code, retry_after, .. } => Shape {
                retry_after: *retry_after,
                ..Shape::new(S::TOO_MANY_REQUESTS, code, "rate_limit_error", "rate_limit_error")
            },
            ApiError::Invalid { .. } => Shape::new(
                S::BAD_REQUEST,
                "invalid_request",
                "invalid_request_error",
                "invalid_request_error",
            ),
            ApiError::Unavailable { .. } => Shape {
                retry_after: Some(Duration::from_secs(1)),
                ..Shape::new(S::SERVICE_UNAVAILABLE, "unavailable", "api_error", "overloaded_error")
            },
            ApiError::PayloadTooLarge { .. } => Shape::new(
                S::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "invalid_request_error",
                "request_too_large",
            ),
            ApiError::NoRoute { .. } => Shape::new(
                S::NOT_FOUND,
                "unknown_route",
                "invalid_request_error",
                "not_found_error",
            ),
            ApiError::MethodNotAllowed { .. } => Shape::new(
                S::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "invalid_request_error",
                "invalid_request_error",
            ),
            ApiError::Refused(refusal) => {
                use crate::realtime::Refusal;
                let (status, code) = match refusal {
                    Refusal::KeyFull { .. } => (S::TOO_MANY_REQUESTS, "too_many_connections"),
                    Refusal::NodeFull { .. } => (S::SERVICE_UNAVAILABLE, "node_full"),
                    Refusal::Draining => (S::SERVICE_UNAVAILABLE, "draining"),
                    Refusal::Disabled => (S::SERVICE_UNAVAILABLE, "realtime_disabled"),
                };
                Shape {
                    retry_after: Some(Duration::from_secs(refusal.retry_after())),
                    ..Shape::new(status, code, "api_error", "overloaded_error")
                }
            }
            ApiError::Topic(error) => {
                use crate::realtime::TopicError;
                match error {
                    TopicError::Invalid(_) | TopicError::BadRoom(_) | TopicError::TooMany(_) => {
                        Shape {
                            param: Some("topic".to_string()),
                            ..Shape::new(
                                S::BAD_REQUEST,
                                "invalid_topic",
                                "invalid_request_error",
                                "invalid_request_error",
                            )
                        }
                    }
                    TopicError::Forbidden(_) => Shape::new(
                        S::FORBIDDEN,
                        "room_not_allowed",
                        "invalid_request_error",
                        "permission_error",
                    ),
                    TopicError::NoPublishScope => Shape::new(
                        S::FORBIDDEN,
                        "publish_not_allowed",
                        "invalid_request_error",
                        "permission_error",
                    ),
                    TopicError::NoJob(_) => Shape::new(
                        S::NOT_FOUND,
                        "not_found",
                        "invalid_request_error",
                        "not_found_error",
                    ),
                    TopicError::Unavailable(_) => Shape {
                        retry_after: Some(Duration::from_secs(1)),
                        ..Shape::new(
                            S::SERVICE_UNAVAILABLE,
                            "unavailable",
                            "api_error",
                            "overloaded_error",
                        )
                    },
                }
            }
            ApiError::Overloaded { .. } => Shape {
                retry_after: Some(Duration::from_secs(1)),
                ..Shape::new(S::SERVICE_UNAVAILABLE, "overloaded", "api_error", "overloaded_error")
            },
            ApiError::Route(RouteError::UnknownModel { .. }) => Shape::new(
                S::NOT_FOUND,
                "model_not_found",
                "invalid_request_error",
                "not_found_error",
            ),
            ApiError::Route(RouteError::Rejected { error, .. }) => {
                let status = match error.kind {
                    ErrorKind::Status(code) => S::from_u16(code).unwrap_or(S::BAD_REQUEST),
                    _ => S::BAD_REQUEST,
                };
                let (openai_type, anthropic_type) = match status {
                    S::PAYLOAD_TOO_LARGE => ("invalid_request_error", "request_too_large"),
                    _ => ("invalid_request_error", "invalid_request_error"),
                };
                Shape::new(status, "upstream_rejected", openai_type, anthropic_type)
            }
            ApiError::Route(RouteError::Capacity { retry_after, .. }) => Shape {
                retry_after: Some(*retry_after),
                ..Shape::new(
                    S::TOO_MANY_REQUESTS,
                    "capacity_exceeded",
                    "rate_limit_error",
                    "rate_limit_error",
                )
            },
            ApiError::Route(RouteError::QueueFull { .. }) => Shape {
                retry_after: Some(Duration::from_secs(1)),
                ..Shape::new(
                    S::TOO_MANY_REQUESTS,
                    "wait_queue_full",
                    "rate_limit_error",
                    "rate_limit_error",
                )
            },
            ApiError::Route(RouteError::Exhausted { failures, .. }) => {
                let all = |f: fn(&crate::providers::ProviderError) -> bool| {
                    !failures.is_empty() && failures.iter().all(|t| f(&t.error))
                };
                if all(|e| e.is_timeout()) {
                    Shape::new(S::GATEWAY_TIMEOUT, "upstream_timeout", "api_error", "timeout_error")
                } else if all(|e| e.is_unavailable()) {
                    Shape {
                        retry_after: failures.iter().filter_map(|t| t.error.retry_after).min(),
                        ..Shape::new(
                            S::SERVICE_UNAVAILABLE,
                            "upstream_unavailable",
                            "api_error",
                            "overloaded_error",
                        )
                    }
                } else {
                    Shape::new(S::BAD_GATEWAY, "upstream_error", "api_error", "api_error")
                }
            }
        }
    }

    fn message(&self) -> String {
        match self {
            ApiError::Route(RouteError::UnknownModel { model }) => format!(
                "model {model:?} does not exist; GET /v1/models lists the models you can use"
            ),
            ApiError::Route(RouteError::Rejected { target, error }) => {
                let upstream =
                    error.upstream.as_ref().map_or(error.message.as_str(), |u| u.message.as_str());
                format!("{target} refused the request: {upstream}")
            }
            ApiError::MissingKey => {
                "missing API key: send `Authorization: Bearer <key>` or `x-api-key: <key>`"
                    .to_string()
            }
            ApiError::InvalidKey => "invalid API key".to_string(),
            ApiError::NoRoute { method, path } => format!(
                "no route {method} {path}; client routes are POST /v1/chat/completions, POST /v1/messages, \
                 POST /v1/embeddings and GET /v1/models"
            ),
            other => other.to_string(),
        }
    }

    pub fn into_response_for(self, format: Format) -> Response {
        let shape = self.shape();
        let message = self.message();
        let body = match format {
            Format::Anthropic => anthropic::error_body(&message, shape.anthropic_type),
            Format::OpenAi | Format::Gemini => openai::error_body(
                &message,
                shape.openai_type,
                Some(shape.code),
                shape.param.as_deref(),
            ),
        };
        let mut response = (shape.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(after) = shape.retry_after {
            // Whole seconds, rounded up: `retry-after: 0` would invite a hot loop.
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        response
    }
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        ApiError::InvalidRequest(e)
    }
}
