//! With traces off, what the request path calls into `telemetry::trace`
//! allocates nothing. A test binary of its own, since counting allocations
//! replaces the global allocator.

use std::time::Duration;

use allocation_counter::measure;
use floodgate_core::telemetry::trace::{self, Span, SpanKind};
use futures_util::FutureExt as _;

#[test]
fn the_request_paths_trace_calls_allocate_nothing_when_traces_are_off() {
    // OpenTelemetry's thread-local context is made on its first use, once
    // per thread (the serving threads live as long as the server).
    drop(Span::child("warm-up", SpanKind::Internal));
    let mut headers = http::HeaderMap::new();
    let info = measure(|| {
        for _ in 0..1000 {
            // observe: no server span; the handler runs under `Span::run`.
            let server = Span::NONE;
            server.set_str("floodgate.request_id", "0af3b5e2-d9fb-4b8e-baa7-f44fb6566658");
            assert_eq!(server.run(async { 7 }).now_or_never(), Some(7));
            // admission, cache, upstream: children of nothing.
            let child = Span::child("upstream", SpanKind::Client);
            assert!(!child.is_recording());
            child.set("floodgate.attempt", 1_i64);
            child.fail("status_5xx");
            // The cache flight's task, and the upstream request's headers.
            let task = trace::in_current(async { Duration::ZERO });
            assert_eq!(task.now_or_never(), Some(Duration::ZERO));
            trace::inject(&mut headers);
            trace::set_current("http.response.status_code", 200_i64);
        }
    });
    assert!(headers.is_empty());
    assert_eq!(info.count_total, 0, "{info:?}");
    // The counter counts: one box is one allocation.
    let control = measure(|| drop(std::hint::black_box(Box::new(1_u64))));
    assert_eq!(control.count_total, 1);
}
