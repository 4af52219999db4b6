//! Anthropic Messages: the client format of `/v1/messages` and the upstream
//! format of the `anthropic` provider.

use bytes::Bytes;

use crate::canonical::*;
use crate::error::*;
use crate::sse::SseEvent;

/// `max_tokens` is required by Anthropic; used when the client gave none.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

pub fn parse_chat_request(body: &[u8]) -> Result<ChatRequest, RequestError> {
    let _ = body;
    unimplemented!()
}

pub fn write_chat_request(req: &ChatRequest, model: &str) -> Result<Vec<u8>, TranslateError> {
    let _ = (req, model);
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

pub fn read_error(body: &[u8]) -> Option<UpstreamErrorBody> {
    let _ = body;
    unimplemented!()
}

/// `{"type":"error","error":{"type","message"}}`
pub fn error_body(message: &str, kind: &str) -> Vec<u8> {
    let _ = (message, kind);
    unimplemented!()
}
