//! Google Gemini upstreams (native generateContent API). The base URL has no
//! version, as in the Google GenAI SDK; the model goes in the path.

use bytes::Bytes;
use floodgate_protocol::{
    ChatRequest, ChatResponse, DecodeError, EmbeddingsRequest, EmbeddingsResponse, Format,
    TranslateError, UpstreamErrorBody, gemini,
};
use http::{HeaderMap, HeaderName};
use secrecy::SecretString;

use super::{Api, Call, ClientHints, StreamReader, set_secret_header};

#[derive(Debug)]
pub struct GeminiApi;

/// `models/gemini-x` and `gemini-x` name the same model.
fn model_path(model: &str) -> &str {
    model.strip_prefix("models/").unwrap_or(model)
}

impl Api for GeminiApi {
    fn format(&self) -> Format {
        Format::Gemini
    }

    fn chat(&self, req: &ChatRequest, model: &str) -> Result<Call, TranslateError> {
        let body = gemini::write_chat_request(req)?;
        let model = model_path(model);
        let path = if req.stream {
            format!("/v1beta/models/{model}:streamGenerateContent?alt=sse")
        } else {
            format!("/v1beta/models/{model}:generateContent")
        };
        Ok(Call { path, body })
    }

    fn read_chat(
        &self,
        req: &ChatRequest,
        model: &str,
        body: Bytes,
    ) -> Result<ChatResponse, DecodeError> {
        gemini::read_chat_response(req, model, body)
    }

    fn stream_reader(&self, req: &ChatRequest, model: &str) -> StreamReader {
        StreamReader::Gemini(gemini::StreamReader::new(req, model))
    }

    fn embeddings(
        &self,
        req: &EmbeddingsRequest,
        model: &str,
    ) -> Option<Result<Call, TranslateError>> {
        let model = model_path(model);
        Some(
            gemini::write_embeddings_request(req, model).map(|body| Call {
                path: format!("/v1beta/models/{model}:batchEmbedContents"),
                body,
            }),
        )
    }

    fn read_embeddings(&self, model: &str, body: Bytes) -> Result<EmbeddingsResponse, DecodeError> {
        gemini::read_embeddings_response(model, body)
    }

    fn read_error(&self, body: &[u8]) -> Option<UpstreamErrorBody> {
        gemini::read_error(body)
    }

    fn headers(&self, key: Option<&SecretString>, _hints: &ClientHints, headers: &mut HeaderMap) {
        if let Some(key) = key {
            set_secret_header(headers, HeaderName::from_static("x-goog-api-key"), "", key);
        }
    }
}
