//! Errors of reading and writing wire formats. None of them carries a secret:
//! protocol code never sees API keys.

use serde_json::{Map, Value};

/// A client body that cannot be read: malformed JSON, a missing field or a
/// field of the wrong type. Answered with 400.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct RequestError {
    /// What was wrong and what would be valid, e.g.
    /// "`messages[1].content`: invalid type: integer `3`, expected a string or an array of content parts".
    pub message: String,
    /// The JSON path of the failing field, when there is one (OpenAI's `param`).
    pub param: Option<String>,
}

impl RequestError {
    pub fn new(message: impl Into<String>) -> Self {
        RequestError { message: message.into(), param: None }
    }

    pub fn at(param: impl Into<String>, message: impl Into<String>) -> Self {
        let param = param.into();
        RequestError { message: format!("{param}: {}", message.into()), param: Some(param) }
    }

    /// Parses a client body that must be one JSON object; `what`, when
    /// given, names the expected request in the error (e.g. "an Anthropic
    /// Messages request").
    pub fn read_object(
        body: &[u8],
        what: Option<&str>,
    ) -> Result<Map<String, Value>, RequestError> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|err| RequestError::new(format!("the body is not valid JSON: {err}")))?;
        match value {
            Value::Object(map) => Ok(map),
            other => {
                let what = what.map(|w| format!(" ({w})")).unwrap_or_default();
                Err(RequestError::new(format!(
                    "the body must be a JSON object{what}, not {}",
                    json_kind(&other)
                )))
            }
        }
    }
}

/// A request that cannot be written in the target's format, e.g. an audio
/// part for an Anthropic upstream. The client's request is fine; this target
/// cannot serve it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct TranslateError {
    pub message: String,
}

impl TranslateError {
    pub fn new(message: impl Into<String>) -> Self {
        TranslateError { message: message.into() }
    }
}

/// An upstream body we cannot understand.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct DecodeError {
    pub message: String,
}

impl DecodeError {
    pub fn new(message: impl Into<String>) -> Self {
        DecodeError { message: message.into() }
    }
}

/// An error the upstream reported in its own shape, as read from its body.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpstreamErrorBody {
    pub message: String,
    /// OpenAI `error.type`, Anthropic `error.type`, Gemini `error.status`.
    pub kind: Option<String>,
    /// OpenAI `error.code`, Gemini `error.code` (as text).
    pub code: Option<String>,
}

/// Why a stream could not be read further.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StreamError {
    /// The upstream sent an error event (Anthropic `event: error`, an OpenAI
    /// chunk with an `error` object, a Gemini error object).
    #[error("upstream stream error: {}", .0.message)]
    Upstream(UpstreamErrorBody),
    #[error("undecodable upstream stream event: {0}")]
    Decode(#[from] DecodeError),
}

/// "a string", "an array"…: how error messages name a JSON value's type.
pub(crate) fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
