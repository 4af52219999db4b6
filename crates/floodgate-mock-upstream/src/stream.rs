//! Streaming (`text/event-stream`) responses: building frames, pacing them, and counting streams
//! that complete or are cancelled.
//!
//! A frame is the bytes sent in one go. Providers group their events so that one frame carries
//! one content piece; with no chunk delay everything is coalesced into a single frame, which is
//! the cheapest way to send a stream.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use serde::Serialize;

use crate::state::{Counters, Shared};

/// How long an aborted stream waits after its last event before failing, so that the event
/// reaches the socket first.
const ABORT_GRACE: Duration = Duration::from_millis(20);

/// Collects SSE events into frames.
pub(crate) struct Frames {
    frames: Vec<Bytes>,
    current: Vec<u8>,
    /// When false, `cut` does nothing and the whole stream is one frame.
    split: bool,
}

impl Frames {
    /// Frames for a stream paced by `delay` (a zero delay means one single frame).
    pub(crate) fn new(delay: Duration) -> Self {
        Self { frames: Vec::new(), current: Vec::with_capacity(1024), split: !delay.is_zero() }
    }

    /// Appends `data: <json>` plus the line ending `end` (`"\n\n"` or `"\r\n\r\n"`).
    pub(crate) fn data_json(&mut self, value: &impl Serialize, end: &str) {
        self.current.extend_from_slice(b"data: ");
        write_json(&mut self.current, value);
        self.current.extend_from_slice(end.as_bytes());
    }

    /// Appends `event: <name>` followed by `data: <json>` and a blank line.
    pub(crate) fn event_json(&mut self, name: &str, value: &impl Serialize) {
        self.current.extend_from_slice(b"event: ");
        self.current.extend_from_slice(name.as_bytes());
        self.current.push(b'\n');
        self.data_json(value, "\n\n");
    }

    /// Appends a raw event: an optional `event:` line and one `data:` line per line of `data`.
    pub(crate) fn raw_event(&mut self, name: Option<&str>, data: &str) {
        if let Some(name) = name {
            self.current.extend_from_slice(b"event: ");
            self.current.extend_from_slice(name.as_bytes());
            self.current.push(b'\n');
        }
        for line in data.split('\n') {
            self.current.extend_from_slice(b"data: ");
            self.current.extend_from_slice(line.as_bytes());
            self.current.push(b'\n');
        }
        self.current.push(b'\n');
    }

    /// Appends bytes as they are.
    pub(crate) fn raw(&mut self, bytes: &[u8]) {
        self.current.extend_from_slice(bytes);
    }

    /// Ends the current frame (the next event goes out after the chunk delay).
    pub(crate) fn cut(&mut self) {
        if self.split && !self.current.is_empty() {
            self.frames.push(Bytes::from(std::mem::take(&mut self.current)));
        }
    }

    pub(crate) fn finish(mut self) -> Vec<Bytes> {
        if !self.current.is_empty() {
            self.frames.push(Bytes::from(self.current));
        }
        self.frames
    }
}

/// Serialises `value` into `out`. The mock's own types cannot fail to serialise; if one ever
/// did, the event would be sent empty and the failure logged rather than crash the server.
pub(crate) fn write_json(out: &mut Vec<u8>, value: &impl Serialize) {
    if let Err(error) = serde_json::to_writer(&mut *out, value) {
        tracing::error!(%error, "mock upstream could not serialise a response");
    }
}

/// How a stream ends after its last frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// The body ends normally.
    Complete,
    /// The body fails, which aborts the response (no clean end of the body).
    Abort,
}

/// A `200 text/event-stream` response sending `frames` with `delay` between them.
pub(crate) fn sse_response(
    shared: &Arc<Shared>,
    frames: Vec<Bytes>,
    delay: Duration,
    ending: Ending,
) -> Response {
    let guard = StreamGuard::start(Arc::clone(shared), frames.is_empty());
    let state = StreamState { frames: frames.into_iter(), delay, first: true, ending, guard };
    let body = Body::from_stream(futures_util::stream::unfold(state, next_frame));
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

struct StreamState {
    frames: std::vec::IntoIter<Bytes>,
    delay: Duration,
    first: bool,
    ending: Ending,
    guard: StreamGuard,
}

async fn next_frame(
    mut state: StreamState,
) -> Option<(Result<Bytes, std::io::Error>, StreamState)> {
    if let Some(frame) = state.frames.next() {
        if !state.first && !state.delay.is_zero() {
            tokio::time::sleep(state.delay).await;
        }
        state.first = false;
        if state.frames.len() == 0 {
            state.guard.finish();
        }
        return Some((Ok(frame), state));
    }
    match state.ending {
        Ending::Complete => None,
        Ending::Abort => {
            tokio::time::sleep(ABORT_GRACE).await;
            // Only fail once: the stream ends after the error.
            state.ending = Ending::Complete;
            let error =
                std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "scripted abort");
            Some((Err(error), state))
        }
    }
}

/// Counts a stream as started when created, as completed when its last frame is handed over,
/// and as cancelled when it is dropped before that.
struct StreamGuard {
    shared: Arc<Shared>,
    finished: bool,
}

impl StreamGuard {
    fn start(shared: Arc<Shared>, empty: bool) -> Self {
        Counters::bump(&shared.stats.streams_started);
        let mut guard = Self { shared, finished: false };
        if empty {
            guard.finish();
        }
        guard
    }

    fn finish(&mut self) {
        if !self.finished {
            self.finished = true;
            Counters::bump(&self.shared.stats.streams_completed);
        }
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if !self.finished {
            Counters::bump(&self.shared.stats.streams_cancelled);
        }
    }
}
