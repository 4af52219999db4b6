//! The publisher: `POST /v1/rooms/NAME/messages` at a constant rate (message `i` due at
//! start + i / rate, for every due time before the end), each body a probe stamped with its
//! send time, over a small pool of kept-alive HTTP/1.1 connections ([`CONCURRENCY`] posts in
//! flight at most: past that the publisher falls behind, which the achieved rate shows,
//! rather than piling up requests). A publisher still behind [`LATE_GRACE`] after the end
//! stops there: what it did not send is `scheduled` − `sent`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use super::Shared;
use super::wire;
use crate::client::{self, ErrorKind};

/// Posts in flight at most (and kept-alive connections to each node).
pub(crate) const CONCURRENCY: usize = 32;
/// The longest one post may take.
const POST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long past the end a publisher that fell behind goes on sending overdue messages.
const LATE_GRACE: Duration = Duration::from_secs(1);

/// What the publisher did.
#[derive(Debug, Clone, Default)]
pub(crate) struct Published {
    /// Posts sent.
    pub sent: u64,
    /// Posts answered 2xx.
    pub ok: u64,
    /// Failed posts by reason: `HTTP 503`, `timeout`, `connect: refused`, ...
    pub failures: BTreeMap<String, u64>,
    /// Unix time of the first post, in µs.
    pub first_sent_us: Option<u64>,
    /// When the last post was sent.
    pub last_sent: Option<Instant>,
}

/// Publishes the plan's messages due from `start` until `end` (overdue ones at most
/// [`LATE_GRACE`] past it), then waits for the posts in flight (at most [`POST_TIMEOUT`] each).
pub(crate) async fn run(shared: Arc<Shared>, start: Instant, end: Instant) -> Published {
    let tally = Arc::new(Mutex::new(Published::default()));
    let Some(publishing) = shared.plan.publishing.as_ref() else {
        return Published::default();
    };
    let targets: Vec<_> = if shared.plan.publish_all_nodes {
        shared.plan.nodes.iter().map(|node| node.publish_uri.clone()).collect()
    } else {
        vec![shared.plan.nodes[0].publish_uri.clone()]
    };
    let http = Arc::new(client::client(None, CONCURRENCY));
    let permits = Arc::new(Semaphore::new(CONCURRENCY));
    let tracker = TaskTracker::new();
    let cutoff = end + LATE_GRACE;
    for seq in 0..publishing.messages {
        let due = start + Duration::from_secs_f64(seq as f64 / publishing.rate);
        if due >= end || Instant::now() >= cutoff {
            break;
        }
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
        let permit = tokio::select! {
            biased;
            permit = Arc::clone(&permits).acquire_owned() => permit,
            () = tokio::time::sleep_until(cutoff.into()) => break,
        };
        let Ok(permit) = permit else {
            break;
        };
        let mut request = Request::new(Full::new(Bytes::new()));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = targets[usize::try_from(seq).unwrap_or(0) % targets.len()].clone();
        *request.headers_mut() = publishing.headers.clone();
        let (http, tally, shared) = (Arc::clone(&http), Arc::clone(&tally), Arc::clone(&shared));
        tracker.spawn(async move {
            let Some(publishing) = shared.plan.publishing.as_ref() else {
                return;
            };
            let sent_us = wire::unix_micros();
            let body = wire::publish_body(publishing.run, sent_us, seq, &publishing.pad);
            *request.body_mut() = Full::new(Bytes::from(body));
            {
                let mut tally = lock(&tally);
                tally.sent += 1;
                // Posts may start out of order: the first is the earliest, the last the latest.
                tally.first_sent_us = Some(tally.first_sent_us.map_or(sent_us, |f| f.min(sent_us)));
                let now = Instant::now();
                tally.last_sent = Some(tally.last_sent.map_or(now, |last| last.max(now)));
            }
            let result = match tokio::time::timeout(POST_TIMEOUT, post(&http, request)).await {
                Ok(result) => result,
                Err(_elapsed) => Err(ErrorKind::Timeout.describe().to_string()),
            };
            let mut tally = lock(&tally);
            match result {
                Ok(()) => tally.ok += 1,
                Err(reason) => *tally.failures.entry(reason).or_default() += 1,
            }
            drop(permit);
        });
    }
    tracker.close();
    tracker.wait().await;
    lock(&tally).clone()
}

/// One post: `Ok` for a 2xx answer (its body read to the end, keeping the connection).
async fn post(http: &client::HttpClient, request: Request<Full<Bytes>>) -> Result<(), String> {
    let response = http.request(request).await.map_err(|error| {
        let connecting = error.is_connect();
        client::classify_error(&error, connecting).describe().to_string()
    })?;
    let status = response.status();
    let read = client::drain(response.into_body()).await;
    if !status.is_success() {
        return Err(format!("HTTP {}", status.as_u16()));
    }
    read.map_err(|_| ErrorKind::BodyRead.describe().to_string())
}

fn lock(tally: &Mutex<Published>) -> std::sync::MutexGuard<'_, Published> {
    // Counters cannot be left half-updated in a way that matters for the report.
    tally.lock().unwrap_or_else(PoisonError::into_inner)
}
