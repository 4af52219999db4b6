//! What can go wrong on one upstream attempt, classified once, so retry,
//! fallback and key handling read fields, never strings.

use std::fmt;
use std::time::Duration;

use floodgate_protocol::UpstreamErrorBody;

/// Where an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// TCP/TLS connect failed or the connection broke before an answer.
    Connect,
    /// No response head within `first_byte_timeout`, no chunk within
    /// `chunk_timeout`, or the whole exchange past `total_timeout`.
    Timeout(TimeoutPhase),
    /// The upstream answered with this status.
    Status(u16),
    /// The upstream's body was not what its API documents.
    Decode,
    /// The request cannot be written in this target's format.
    Translate,
    /// The target does not offer this operation (e.g. embeddings on Anthropic).
    Unsupported,
    /// Every key of the provider is out of use.
    NoUsableKey,
    /// Every key in use is at its rpm/tpm limit for now.
    KeysBusy,
    /// The stream ended with an error event or broke off after it began.
    Stream,
    /// The target's circuit breaker (or every key's on it) is open.
    CircuitOpen,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutPhase {
    FirstByte,
    BetweenChunks,
    Total,
}

/// What the router should do about a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Transient: try the same target again after a backoff, then the next.
    Retry,
    /// This key was refused (401/403): take it out of use, try another key.
    RejectKey,
    /// This target cannot serve the request; the next one might.
    NextTarget,
    /// The request itself is wrong; every target would refuse it. Answer the
    /// client with the upstream's status and message.
    Reject,
}

/// One failed upstream attempt. `message` is safe to show: it never contains
/// a key (upstream messages are scrubbed before they get here).
#[derive(Debug, Clone)]
pub struct ProviderError {
    pub kind: ErrorKind,
    pub message: String,
    /// The upstream's own error body, scrubbed.
    pub upstream: Option<Box<UpstreamErrorBody>>,
    pub retry_after: Option<Duration>,
    /// The key the failed call was made with (its position, never its value;
    /// `u32` keeps the error small).
    pub key: Option<u32>,
}

impl ProviderError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ProviderError {
            kind,
            message: message.into(),
            upstream: None,
            retry_after: None,
            key: None,
        }
    }

    pub fn with_key(mut self, key: Option<usize>) -> Self {
        self.key = key.and_then(|k| u32::try_from(k).ok());
        self
    }

    /// [`ProviderError::key`] as an index.
    pub fn key_index(&self) -> Option<usize> {
        self.key.map(|k| k as usize)
    }

    pub fn disposition(&self) -> Disposition {
        match self.kind {
            ErrorKind::Connect | ErrorKind::Timeout(_) | ErrorKind::Stream => Disposition::Retry,
            ErrorKind::Status(status) => match status {
                401 | 403 => Disposition::RejectKey,
                408 | 409 | 425 | 429 | 500..=599 => Disposition::Retry,
                // A missing model or route is this target's problem.
                404 | 405 => Disposition::NextTarget,
                _ => Disposition::Reject,
            },
            ErrorKind::Decode
            | ErrorKind::Translate
            | ErrorKind::Unsupported
            | ErrorKind::NoUsableKey
            | ErrorKind::KeysBusy
            | ErrorKind::CircuitOpen => Disposition::NextTarget,
        }
    }

    /// Low-cardinality label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self.kind {
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout(TimeoutPhase::FirstByte) => "timeout_first_byte",
            ErrorKind::Timeout(TimeoutPhase::BetweenChunks) => "timeout_chunk",
            ErrorKind::Timeout(TimeoutPhase::Total) => "timeout_total",
            ErrorKind::Status(429) => "status_429",
            ErrorKind::Status(401 | 403) => "status_auth",
            ErrorKind::Status(500..=599) => "status_5xx",
            ErrorKind::Status(_) => "status_4xx",
            ErrorKind::Decode => "decode",
            ErrorKind::Translate => "translate",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::NoUsableKey => "no_usable_key",
            ErrorKind::KeysBusy => "keys_busy",
            ErrorKind::Stream => "stream",
            ErrorKind::CircuitOpen => "circuit_open",
        }
    }

    pub fn is_timeout(&self) -> bool {
        matches!(self.kind, ErrorKind::Timeout(_))
    }

    /// Capacity rather than fault: rate limited, overloaded, or no key left.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::Status(429 | 503 | 529)
                | ErrorKind::NoUsableKey
                | ErrorKind::KeysBusy
                | ErrorKind::CircuitOpen
        )
    }
}

impl fmt::Display for ProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ProviderError {}
