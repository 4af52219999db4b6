//! OpenAI Chat Completions and Embeddings: the client format of
//! `/v1/chat/completions` and `/v1/embeddings`, and the upstream format of the
//! `openai`, `openai-compatible` and `mock` providers.

use bytes::Bytes;

use crate::canonical::*;
use crate::error::*;
use crate::sse::SseEvent;

/// Reads a client's `/v1/chat/completions` body.
pub fn parse_chat_request(body: &[u8]) -> Result<ChatRequest, RequestError> {
    let _ = body;
    unimplemented!()
}

/// Which flavour of the OpenAI format an upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// api.openai.com: `max_completion_tokens` (reasoning models refuse `max_tokens`).
    OpenAi,
    /// vLLM, Ollama, Groq, Together…: `max_tokens`, the field they all accept.
    Compatible,
}

/// Writes the body to send upstream for `model`. Streaming requests always ask
/// for `stream_options.include_usage` so usage can be counted.
pub fn write_chat_request(
    req: &ChatRequest,
    model: &str,
    dialect: Dialect,
) -> Result<Vec<u8>, TranslateError> {
    let _ = (req, model, dialect);
    unimplemented!()
}

pub fn read_chat_response(req: &ChatRequest, body: Bytes) -> Result<ChatResponse, DecodeError> {
    let _ = (req, body);
    unimplemented!()
}

pub fn write_chat_response(resp: &ChatResponse) -> Vec<u8> {
    let _ = resp;
    unimplemented!()
}

/// Decodes an upstream OpenAI stream.
#[derive(Debug)]
pub struct StreamReader {}

impl StreamReader {
    pub fn new(req: &ChatRequest) -> Self {
        let _ = req;
        unimplemented!()
    }

    pub fn read(&mut self, event: &SseEvent) -> Result<StreamChunk, StreamError> {
        let _ = event;
        unimplemented!()
    }
}

/// Encodes a stream for an OpenAI client.
#[derive(Debug)]
pub struct StreamWriter {}

impl StreamWriter {
    pub fn new(req: &ChatRequest) -> Self {
        let _ = req;
        unimplemented!()
    }

    pub fn write(&mut self, chunk: &StreamChunk, out: &mut Vec<u8>) {
        let _ = (chunk, out);
        unimplemented!()
    }

    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let _ = out;
        unimplemented!()
    }

    pub fn write_error(&mut self, error: &UpstreamErrorBody, out: &mut Vec<u8>) {
        let _ = (error, out);
        unimplemented!()
    }
}

pub fn parse_embeddings_request(body: &[u8]) -> Result<EmbeddingsRequest, RequestError> {
    let _ = body;
    unimplemented!()
}

pub fn write_embeddings_request(
    req: &EmbeddingsRequest,
    model: &str,
) -> Result<Vec<u8>, TranslateError> {
    let _ = (req, model);
    unimplemented!()
}

pub fn read_embeddings_response(body: Bytes) -> Result<EmbeddingsResponse, DecodeError> {
    let _ = body;
    unimplemented!()
}

pub fn write_embeddings_response(resp: &EmbeddingsResponse) -> Vec<u8> {
    let _ = resp;
    unimplemented!()
}

pub fn read_error(body: &[u8]) -> Option<UpstreamErrorBody> {
    let _ = body;
    unimplemented!()
}

/// `{"error":{"message","type","code","param"}}`
pub fn error_body(message: &str, kind: &str, code: Option<&str>, param: Option<&str>) -> Vec<u8> {
    let _ = (message, kind, code, param);
    unimplemented!()
}
