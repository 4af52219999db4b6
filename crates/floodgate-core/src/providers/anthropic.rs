//! Anthropic Messages upstreams. The base URL has no `/v1`, as in the
//! Anthropic SDK. An Anthropic client's `anthropic-version` and
//! `anthropic-beta` headers are forwarded so its features keep working.

use bytes::Bytes;
use floodgate_protocol::{
    ChatRequest, ChatResponse, DecodeError, EmbeddingsRequest, EmbeddingsResponse, Format,
    TranslateError, UpstreamErrorBody, anthropic,
};
use http::{HeaderMap, HeaderName, HeaderValue};
use secrecy::SecretString;

use super::{Api, Call, ClientHints, StreamReader, set_secret_header};

/// The API version sent when the client did not choose one.
const DEFAULT_VERSION: &str = "2023-06-01";

#[derive(Debug)]
pub struct AnthropicApi;

impl Api for AnthropicApi {
    fn format(&self) -> Format {
        Format::Anthropic
    }

    fn chat(&self, req: &ChatRequest, model: &str) -> Result<Call, TranslateError> {
        let body = anthropic::write_chat_request(req, model)?;
        Ok(Call { path: "/v1/messages".to_string(), body })
    }

    fn read_chat(
        &self,
        req: &ChatRequest,
        _model: &str,
        body: Bytes,
    ) -> Result<ChatResponse, DecodeError> {
        anthropic::read_chat_response(req, body)
    }

    fn stream_reader(&self, req: &ChatRequest, _model: &str) -> StreamReader {
        StreamReader::Anthropic(anthropic::StreamReader::new(req))
    }

    fn embeddings(
        &self,
        _req: &EmbeddingsRequest,
        _model: &str,
    ) -> Option<Result<Call, TranslateError>> {
        None
    }

    fn read_embeddings(
        &self,
        _model: &str,
        _body: Bytes,
    ) -> Result<EmbeddingsResponse, DecodeError> {
        Err(DecodeError::new("Anthropic has no embeddings API"))
    }

    fn read_error(&self, body: &[u8]) -> Option<UpstreamErrorBody> {
        anthropic::read_error(body)
    }

    fn headers(&self, key: Option<&SecretString>, hints: &ClientHints, headers: &mut HeaderMap) {
        if let Some(key) = key {
            set_secret_header(headers, HeaderName::from_static("x-api-key"), "", key);
        }
        let version = hints
            .anthropic_version
            .clone()
            .unwrap_or_else(|| HeaderValue::from_static(DEFAULT_VERSION));
        headers.insert(HeaderName::from_static("anthropic-version"), version);
        if let Some(beta) = &hints.anthropic_beta {
            headers.insert(HeaderName::from_static("anthropic-beta"), beta.clone());
        }
    }
}
