//! Reading an upstream SSE stream: bytes → SSE events → canonical chunks,
//! under the between-chunk and total deadlines.
//!
//! Dropping an [`UpstreamStream`] drops the HTTP response, which closes the
//! upstream connection: that is how a client's disconnect cancels the call.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use floodgate_protocol::sse::SseParser;
use floodgate_protocol::{StreamChunk, StreamError, StreamEvent, anthropic, gemini, openai};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::{ErrorKind, ProviderError, StreamLimits, TimeoutPhase, innermost};
use crate::secrets::Scrubber;
use crate::telemetry::{self, metric};

/// A format's stream decoder.
#[derive(Debug)]
pub enum StreamReader {
    OpenAi(openai::StreamReader),
    Anthropic(anthropic::StreamReader),
    Gemini(gemini::StreamReader),
}

impl StreamReader {
    fn read(
        &mut self,
        event: &floodgate_protocol::sse::SseEvent,
    ) -> Result<StreamChunk, StreamError> {
        match self {
            StreamReader::OpenAi(r) => r.read(event),
            StreamReader::Anthropic(r) => r.read(event),
            StreamReader::Gemini(r) => r.read(event),
        }
    }

    /// Whether the format marks the end of a stream. Gemini's streams end
    /// when the body does.
    fn has_end_marker(&self) -> bool {
        match self {
            StreamReader::OpenAi(_) | StreamReader::Anthropic(_) => true,
            StreamReader::Gemini(_) => false,
        }
    }
}

/// An upstream stream whose response head has arrived.
pub struct UpstreamStream {
    body: Incoming,
    parser: SseParser,
    reader: StreamReader,
    limits: StreamLimits,
    pending: VecDeque<StreamChunk>,
    /// The upstream said the stream is complete.
    done: bool,
    /// Some choice finished: a stream that ends after this without an end
    /// marker is still complete (some OpenAI-compatible servers omit `[DONE]`).
    finished: bool,
    ended: bool,
    provider: String,
    model: String,
    started: Instant,
    first_chunk: Option<Instant>,
    scrubber: Arc<Scrubber>,
    outcome: Option<&'static str>,
}

impl std::fmt::Debug for UpstreamStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamStream")
            .field("provider", &self.provider)
            .field("model", &self.model)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl UpstreamStream {
    pub(super) fn new(
        response: http::Response<Incoming>,
        reader: StreamReader,
        limits: StreamLimits,
        provider: String,
        model: String,
        started: Instant,
        scrubber: Arc<Scrubber>,
    ) -> Self {
        UpstreamStream {
            body: response.into_body(),
            parser: SseParser::default(),
            reader,
            limits,
            pending: VecDeque::new(),
            done: false,
            finished: false,
            ended: false,
            provider,
            model,
            started,
            first_chunk: None,
            scrubber,
            outcome: None,
        }
    }

    /// When the first content chunk arrived (time to first token).
    pub fn first_chunk_at(&self) -> Option<Instant> {
        self.first_chunk
    }

    /// The next chunk; `None` once the stream is complete. An error ends the stream.
    pub async fn next_chunk(&mut self) -> Option<Result<StreamChunk, ProviderError>> {
        loop {
            if let Some(chunk) = self.pending.pop_front() {
                return Some(Ok(chunk));
            }
            if self.ended {
                return None;
            }
            if self.done {
                self.end("ok");
                return None;
            }
            let next =
                tokio::time::timeout_at(self.next_deadline().into(), self.body.frame()).await;
            let result = match next {
                Err(_) => Err(self.timeout()),
                Ok(Some(Ok(frame))) => match frame.into_data() {
                    Ok(bytes) => self.feed(&bytes),
                    // Trailers carry nothing we read.
                    Err(_) => Ok(()),
                },
                Ok(Some(Err(err))) => Err(ProviderError::new(
                    ErrorKind::Stream,
                    self.scrubber
                        .scrub(&format!(
                            "{}: the stream broke off: {}",
                            self.provider,
                            innermost(&err)
                        ))
                        .into_owned(),
                )),
                Ok(None) => {
                    self.parser.finish();
                    let drained = self.drain_parser();
                    match drained {
                        Ok(()) if self.done || self.finished || !self.reader.has_end_marker() => {
                            self.done = true;
                            continue;
                        }
                        Ok(()) => Err(ProviderError::new(
                            ErrorKind::Stream,
                            format!("{}: the stream ended before it was complete", self.provider),
                        )),
                        Err(e) => Err(e),
                    }
                }
            };
            if let Err(error) = result {
                self.end(error.label());
                return Some(Err(error));
            }
        }
    }

    fn next_deadline(&self) -> Instant {
        self.limits.deadline.min(Instant::now() + self.limits.chunk)
    }

    fn timeout(&self) -> ProviderError {
        let (phase, what) = if Instant::now() + self.limits.chunk > self.limits.deadline {
            (TimeoutPhase::Total, "for the whole exchange")
        } else {
            (TimeoutPhase::BetweenChunks, "between stream chunks")
        };
        ProviderError::new(
            ErrorKind::Timeout(phase),
            format!("{} timed out waiting {what}", self.provider),
        )
    }

    fn feed(&mut self, bytes: &[u8]) -> Result<(), ProviderError> {
        self.parser.push(bytes).map_err(|e| {
            ProviderError::new(ErrorKind::Decode, format!("{}: {e}", self.provider))
        })?;
        self.drain_parser()
    }

    fn drain_parser(&mut self) -> Result<(), ProviderError> {
        while let Some(event) = self.parser.next_event() {
            let mut chunk = self.reader.read(&event).map_err(|e| self.stream_error(e))?;
            for event in &mut chunk.events {
                match event {
                    StreamEvent::Start { created, .. } if *created == 0 => *created = unix_now(),
                    StreamEvent::Delta { .. } if self.first_chunk.is_none() => {
                        let now = Instant::now();
                        self.first_chunk = Some(now);
                        let labels =
                            [("provider", self.provider.as_str()), ("model", self.model.as_str())];
                        telemetry::histogram(metric::UPSTREAM_TTFT, &labels)
                            .record(now.duration_since(self.started));
                    }
                    StreamEvent::Finish { .. } => self.finished = true,
                    _ => {}
                }
            }
            self.done |= chunk.done;
            self.pending.push_back(chunk);
        }
        Ok(())
    }

    fn stream_error(&self, error: StreamError) -> ProviderError {
        match error {
            StreamError::Upstream(mut body) => {
                body.message = self.scrubber.scrub(&body.message).into_owned();
                ProviderError {
                    kind: ErrorKind::Stream,
                    message: format!("{} sent a stream error: {}", self.provider, body.message),
                    upstream: Some(Box::new(body)),
                    retry_after: None,
                    key: None,
                }
            }
            StreamError::Decode(e) => ProviderError::new(
                ErrorKind::Decode,
                format!("{} sent a stream event that is not valid: {e}", self.provider),
            ),
        }
    }

    fn end(&mut self, outcome: &'static str) {
        if self.ended {
            return;
        }
        self.ended = true;
        self.outcome = Some(outcome);
        let labels = [
            ("provider", self.provider.as_str()),
            ("model", self.model.as_str()),
            ("outcome", outcome),
        ];
        telemetry::histogram(metric::UPSTREAM_DURATION, &labels).record(self.started.elapsed());
        if outcome != "ok" {
            let labels = [("provider", self.provider.as_str()), ("kind", outcome)];
            telemetry::counter(metric::UPSTREAM_ERRORS, &labels).increment(1);
        }
    }
}

impl Drop for UpstreamStream {
    fn drop(&mut self) {
        // Dropped before the end: the client went away (or the gateway is
        // cancelling); record it so upstream durations stay honest.
        self.end("cancelled");
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
