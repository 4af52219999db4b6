//! OpenAI Chat Completions and Embeddings: the client format of
//! `/v1/chat/completions` and `/v1/embeddings`, and the upstream format of the
//! `openai`, `openai-compatible` and `mock` providers.
//!
//! The module is split by direction of travel:
//!
//! - `parse` reads a client's chat body into the canonical shape;
//! - `build` writes the body sent upstream (the client's own body when it
//!   spoke OpenAI, else one built from canonical fields);
//! - `response` reads and writes complete `chat.completion` objects;
//! - `stream` reads upstream `chat.completion.chunk` events and writes them
//!   for an OpenAI client;
//! - `embeddings` does the same four jobs for `/v1/embeddings`;
//! - `wire` holds what several of them share (lenient number reading, usage,
//!   finish reasons, the error object).
//!
//! Reading is strict on what a request or answer cannot do without and
//! lenient on everything optional, because "OpenAI-compatible" servers differ
//! in the details (missing `created`, `usage: null`, no `index` on tool-call
//! deltas…).

mod build;
mod embeddings;
mod parse;
mod response;
mod stream;
mod wire;

#[cfg(test)]
mod tests;

pub use build::write_chat_request;
pub use embeddings::{
    parse_embeddings_request, read_embeddings_response, wants_base64, write_embeddings_request,
    write_embeddings_response, write_embeddings_response_as,
};
pub use parse::parse_chat_request;
pub use response::{read_chat_response, read_chat_response_lean, write_chat_response};
pub use stream::{StreamReader, StreamWriter};
pub use wire::{error_body, read_error};

/// Which flavour of the OpenAI format an upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// api.openai.com: `max_completion_tokens` (reasoning models refuse `max_tokens`).
    OpenAi,
    /// vLLM, Ollama, Groq, Together…: `max_tokens`, the field they all accept.
    Compatible,
}
