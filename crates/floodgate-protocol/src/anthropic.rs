//! Anthropic Messages: the client format of `/v1/messages` and the upstream
//! format of the `anthropic` provider.
//!
//! This module owns the public surface; the work is split by direction:
//! `parse` reads client requests, `request` writes upstream requests,
//! `response` reads and writes complete answers, `reader` and `writer`
//! translate streams, and `wire` holds the serde shapes of the JSON.
//!
//! Anthropic has no JSON mode, so a canonical `response_format` is carried by a
//! synthetic tool ([`RESPONSE_FORMAT_TOOL`]) that the request forces the model
//! to call; the response readers turn that call back into the text answer.

use bytes::Bytes;
use serde::Deserialize;

use crate::canonical::*;
use crate::error::*;

mod parse;
mod reader;
mod request;
mod response;
mod wire;
mod writer;

#[cfg(test)]
mod tests;

pub use reader::StreamReader;
pub use writer::StreamWriter;

/// `max_tokens` is required by Anthropic; used when the client gave none.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// The name of the synthetic tool that carries a JSON `response_format` to
/// Anthropic: the request forces a call to it with the wanted schema as its
/// input schema, and the readers turn its input back into the text answer.
pub const RESPONSE_FORMAT_TOOL: &str = "json_response";

/// Reads a client's `/v1/messages` body.
pub fn parse_chat_request(body: &[u8]) -> Result<ChatRequest, RequestError> {
    parse::parse_chat_request(body)
}

/// Writes the body to POST to `{base_url}/v1/messages` for `model`.
pub fn write_chat_request(req: &ChatRequest, model: &str) -> Result<Vec<u8>, TranslateError> {
    request::write_chat_request(req, model)
}

/// Reads an upstream Message (a complete, non-streamed answer).
///
/// `created` is left 0: Anthropic gives no timestamp, and the gateway sets it.
pub fn read_chat_response(req: &ChatRequest, body: Bytes) -> Result<ChatResponse, DecodeError> {
    response::read_chat_response(req, body)
}

/// Writes a complete answer as an Anthropic Message for the client.
pub fn write_chat_response(resp: &ChatResponse) -> Bytes {
    response::write_chat_response(resp)
}

/// Reads an upstream error body: Anthropic's `{"type":"error","error":{..}}`,
/// or the OpenAI shape that proxies in front of Anthropic sometimes answer with.
pub fn read_error(body: &[u8]) -> Option<UpstreamErrorBody> {
    let parsed: ErrorEnvelope = serde_json::from_slice(body).ok()?;
    let detail = parsed.error;
    Some(UpstreamErrorBody {
        message: detail.message,
        kind: detail.kind,
        code: detail.code.and_then(code_text),
    })
}

/// `{"type":"error","error":{"type","message"}}`
pub fn error_body(message: &str, kind: &str) -> Vec<u8> {
    wire::to_json(&wire::ErrorBodyOut::new(kind, message))
}

/// Either error shape: both keep the details under `error`.
#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    message: String,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    /// Only the OpenAI shape has a code, as a string or a number.
    #[serde(default)]
    code: Option<serde_json::Value>,
}

fn code_text(code: serde_json::Value) -> Option<String> {
    match code {
        serde_json::Value::String(text) => Some(text),
        serde_json::Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// The JSON schema a JSON `response_format` asks for, when it asks for one.
fn response_schema(format: Option<&ResponseFormat>) -> Option<serde_json::Value> {
    match format? {
        ResponseFormat::Text => None,
        ResponseFormat::JsonObject => Some(serde_json::json!({ "type": "object" })),
        ResponseFormat::JsonSchema { schema, .. } => Some(schema.clone()),
    }
}
