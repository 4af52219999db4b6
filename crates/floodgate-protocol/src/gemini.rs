//! Google Gemini generateContent / streamGenerateContent (SSE) and
//! batchEmbedContents: the upstream format of the `gemini` provider. No
//! client route speaks it; the model goes in the URL, not the body.

use bytes::Bytes;

use crate::canonical::*;
use crate::error::*;
use crate::sse::SseEvent;

/// Body of `POST /v1beta/models/{model}:generateContent` (and of
/// `:streamGenerateContent?alt=sse` when `req.stream`).
pub fn write_chat_request(req: &ChatRequest) -> Result<Vec<u8>, TranslateError> {
    let _ = req;
    unimplemented!()
}

/// `model` is the upstream model the request was sent to (Gemini answers
/// with `modelVersion`, used when present).
pub fn read_chat_response(
    req: &ChatRequest,
    model: &str,
    body: Bytes,
) -> Result<ChatResponse, DecodeError> {
    let _ = (req, model, body);
    unimplemented!()
}

#[derive(Debug)]
pub struct StreamReader {}

impl StreamReader {
    pub fn new(req: &ChatRequest, model: &str) -> Self {
        let _ = (req, model);
        unimplemented!()
    }

    pub fn read(&mut self, event: &SseEvent) -> Result<StreamChunk, StreamError> {
        let _ = event;
        unimplemented!()
    }
}

/// Body of `POST /v1beta/models/{model}:batchEmbedContents`.
pub fn write_embeddings_request(
    req: &EmbeddingsRequest,
    model: &str,
) -> Result<Vec<u8>, TranslateError> {
    let _ = (req, model);
    unimplemented!()
}

pub fn read_embeddings_response(
    model: &str,
    body: Bytes,
) -> Result<EmbeddingsResponse, DecodeError> {
    let _ = (model, body);
    unimplemented!()
}

pub fn read_error(body: &[u8]) -> Option<UpstreamErrorBody> {
    let _ = body;
    unimplemented!()
}
