//! Wire formats of the LLM APIs Floodgate speaks, the canonical chat shape
//! they translate through, and SSE framing.
//!
//! Pure data: no I/O, no async runtime, no secrets. Every format module has
//! the same surface, so the gateway treats formats uniformly:
//!
//! - `parse_*_request` reads a client body (client formats only);
//! - `write_*_request` writes a canonical request in the format, sending the
//!   client's own body verbatim (model replaced) when the formats match;
//! - `read_*_response` / `write_*_response` for complete answers;
//! - `StreamReader` turns upstream SSE events into [`canonical::StreamChunk`]s,
//!   `StreamWriter` turns chunks into the client's SSE bytes;
//! - `read_error` / `error_body` for the format's error shape.
//!
//! [`replay`] converts between a complete answer and its canonical stream,
//! so a cached answer can be streamed and a streamed one cached.

pub mod anthropic;
pub mod canonical;
pub mod error;
pub mod gemini;
pub mod openai;
pub mod replay;
pub mod sse;

pub use canonical::*;
pub use error::{DecodeError, RequestError, StreamError, TranslateError, UpstreamErrorBody};
pub use replay::{StreamCollector, replay_chunks};
