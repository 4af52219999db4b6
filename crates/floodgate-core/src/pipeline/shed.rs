//! Load shedding: at most `server.max_in_flight` requests at once on a node;
//! beyond that, an immediate 503 with `retry-after: 1`.
//!
//! Without a bound, a load above capacity queues without end: every waiting
//! request holds a client socket and, towards an HTTP/1.1 upstream, another
//! one, until the process runs out of file descriptors and then fails every
//! request, admitted ones included (the benchmark suite saw exactly that).
//! Shedding the excess keeps what was admitted fast. Health and metrics
//! routes are never shed, so probes see the node's real state.
//!
//! A permit lives until the response body ends, so a stream counts for its
//! whole length.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::http::error::{ApiError, format_for_path};
use crate::telemetry::{self, metric};

/// Requests in flight on this node, and the most allowed.
#[derive(Debug)]
pub struct InFlight {
    /// One permit per request that may still be admitted.
    places: Arc<Semaphore>,
    max: usize,
}

/// One admitted request; dropping it frees its place.
#[derive(Debug)]
pub struct Permit {
    _place: OwnedSemaphorePermit,
}

impl InFlight {
    pub fn new(max: usize) -> Arc<InFlight> {
        Arc::new(InFlight { places: Arc::new(Semaphore::new(max)), max })
    }

    pub fn try_acquire(&self) -> Option<Permit> {
        self.places.clone().try_acquire_owned().ok().map(|place| Permit { _place: place })
    }

    pub fn max(&self) -> usize {
        self.max
    }
}

/// The default bound: half the open-files limit (a request may hold a client
/// socket and an upstream one), less room for everything else.
pub fn default_max_in_flight() -> usize {
    let limit = std::fs::read_to_string("/proc/self/limits").ok().and_then(|text| {
        text.lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|soft| soft.parse::<usize>().ok())
    });
    match limit {
        Some(files) => (files.saturating_sub(1024) / 2).max(64),
        None => 4096,
    }
}

/// Probes, and realtime listeners (a room's SSE stream, Socket.IO's long
/// polls and the WebSocket upgrade), which `[realtime] max_connections`
/// bounds instead: a subscriber holds no upstream call.
fn exempt(path: &str) -> bool {
    path.starts_with("/health")
        || path == "/metrics"
        || path == "/ws"
        || path.starts_with("/socket.io/")
        || (path.starts_with("/v1/rooms/") && path.ends_with("/events"))
}

pub async fn shed(
    State(in_flight): State<Arc<InFlight>>,
    request: Request,
    next: Next,
) -> Response {
    if exempt(request.uri().path()) {
        return next.run(request).await;
    }
    let Some(permit) = in_flight.try_acquire() else {
        telemetry::counter(metric::HTTP_SHED, &[]).increment(1);
        let format = format_for_path(request.uri().path());
        return crate::http::respond(
            Err(ApiError::Overloaded { limit: in_flight.max() }),
            format,
            crate::pipeline::observe::RouteInfo::default(),
        );
    };
    let response = next.run(request).await;
    response.map(|body| Body::new(PermitBody { inner: body, _permit: permit }))
}

/// A response body that holds its request's place until it ends.
struct PermitBody {
    inner: Body,
    _permit: Permit,
}

impl HttpBody for PermitBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_are_bounded_and_returned_on_drop() {
        let in_flight = InFlight::new(2);
        let a = in_flight.try_acquire().unwrap();
        let _b = in_flight.try_acquire().unwrap();
        assert!(in_flight.try_acquire().is_none());
        drop(a);
        assert!(in_flight.try_acquire().is_some());
    }

    #[test]
    fn the_default_follows_the_open_files_limit() {
        // This machine's soft limit is readable on Linux; the bound is half of it, less headroom.
        let max = default_max_in_flight();
        assert!(max >= 64, "{max}");
    }

    #[test]
    fn probes_are_exempt() {
        assert!(exempt("/health") && exempt("/health/ready") && exempt("/metrics"));
        assert!(!exempt("/v1/chat/completions"));
    }
}
