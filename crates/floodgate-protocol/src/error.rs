//! Errors of reading and writing wire formats. None of them carries a secret:
//! protocol code never sees API keys.

/// A client body that cannot be read: malformed JSON, a missing field or a
/// field of the wrong type. Answered with 400.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct RequestError {
    /// What was wrong and what would be valid, e.g.
    /// "messages[1].content: invalid type: integer `3`, expected a string or an array of content parts".
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

    /// Reads a JSON body into `T`, naming the failing path on error.
    pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, RequestError> {
        let de = &mut serde_json::Deserializer::from_slice(body);
        match serde_path_to_error::deserialize::<_, T>(de) {
            Ok(value) => Ok(value),
            Err(err) => {
                let path = err.path().to_string();
                let inner = err.into_inner();
                if inner.is_syntax() || inner.is_eof() {
                    Err(RequestError::new(format!("the body is not valid JSON: {inner}")))
                } else if path == "." || path.is_empty() {
                    Err(RequestError::new(format!("invalid request body: {inner}")))
                } else {
                    Err(RequestError::at(path, inner.to_string()))
                }
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
