//! OpenAI Chat Completions upstreams: `openai`, `openai-compatible` and the
//! `mock` provider. The base URL includes `/v1`, as in the OpenAI SDK.

use bytes::Bytes;
use floodgate_protocol::{
    ChatRequest, ChatResponse, DecodeError, EmbeddingsRequest, EmbeddingsResponse, Format,
    TranslateError, UpstreamErrorBody, openai,
};
use http::HeaderMap;
use secrecy::SecretString;

pub use floodgate_protocol::openai::Dialect;

use super::{Api, Call, ClientHints, StreamReader, set_secret_header};

#[derive(Debug)]
pub struct OpenAiApi {
    dialect: Dialect,
}

impl OpenAiApi {
    pub fn new(dialect: Dialect) -> Self {
        OpenAiApi { dialect }
    }
}

impl Api for OpenAiApi {
    fn format(&self) -> Format {
        Format::OpenAi
    }

    fn chat(&self, req: &ChatRequest, model: &str) -> Result<Call, TranslateError> {
        let body = openai::write_chat_request(req, model, self.dialect)?;
        Ok(Call { path: "/chat/completions".to_string(), body })
    }

    fn read_chat(
        &self,
        req: &ChatRequest,
        _model: &str,
        body: Bytes,
    ) -> Result<ChatResponse, DecodeError> {
        // An OpenAI client gets this body verbatim: read only what accounting needs.
        if req.native.as_ref().is_some_and(|n| n.format == Format::OpenAi) {
            openai::read_chat_response_lean(req, body)
        } else {
            openai::read_chat_response(req, body)
        }
    }

    fn stream_reader(&self, req: &ChatRequest, _model: &str) -> StreamReader {
        StreamReader::OpenAi(openai::StreamReader::new(req))
    }

    fn embeddings(
        &self,
        req: &EmbeddingsRequest,
        model: &str,
    ) -> Option<Result<Call, TranslateError>> {
        Some(
            openai::write_embeddings_request(req, model)
                .map(|body| Call { path: "/embeddings".to_string(), body }),
        )
    }

    fn read_embeddings(
        &self,
        _model: &str,
        body: Bytes,
    ) -> Result<EmbeddingsResponse, DecodeError> {
        openai::read_embeddings_response(body)
    }

    fn read_error(&self, body: &[u8]) -> Option<UpstreamErrorBody> {
        openai::read_error(body)
    }

    fn headers(&self, key: Option<&SecretString>, _hints: &ClientHints, headers: &mut HeaderMap) {
        if let Some(key) = key {
            set_secret_header(headers, http::header::AUTHORIZATION, "Bearer ", key);
        }
    }
}
