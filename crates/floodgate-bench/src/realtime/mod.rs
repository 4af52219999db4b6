//! `floodgate bench --realtime ws|socketio`: holds many WebSocket connections (plain, or
//! Socket.IO v4 over the websocket transport) to one or more gateway nodes on this machine,
//! every one subscribed to one room, optionally publishes to that room over HTTP, and
//! measures what the gateway does with them: how fast and how reliably connections open and
//! subscribe, the server's memory per connection, and delivery (loss, duplicates, latency
//! from publish to receipt).
//!
//! A run has phases, each bounded in time:
//! 1. connect: connection `i` starts at `i / connect_rate`, at most `max_handshakes` opening
//!    at once, each within `timeout`; the phase ends by connections / rate + 30 s;
//! 2. hold: every subscribed connection is held for `duration` while, with a publish rate,
//!    the publisher posts messages stamped with their send time;
//! 3. drain: until every expected message arrived, at most 5 s after the last post;
//!
//! then every connection is closed (1000). The resident memory and CPU time of the server
//! processes and of the bench itself are read before the connect phase, after it, and before
//! closing.
//!
//! Memory, so that one process holds ~20,000 connections: one task per connection with a
//! small-buffered WebSocket and a bitset of the sequence numbers it saw; results go to a few
//! sharded accumulators, not per connection; no timer per connection once it is open.

mod connection;
mod plan;
mod procfs;
mod progress;
mod publish;
mod report;
mod socketio;
mod wire;

#[cfg(test)]
mod test_server;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use plan::{
    DEFAULT_CONNECT_RATE, DEFAULT_MAX_HANDSHAKES, DEFAULT_MESSAGE_BYTES, DEFAULT_OPEN_TIMEOUT,
    DEFAULT_ROOM, RealtimeConfig, Transport,
};
pub use report::{
    ConnectionsReport, DeliveryReport, ProcessReport, PublishReport, REALTIME_SCHEMA,
    RealtimeReport, RealtimeRunConfig,
};

use crate::error::BenchError;
use crate::limits::{self, ClientLimits};
use plan::Plan;
use progress::Progress;
use report::Measured;
use wire::{Probe, Seen};

/// The largest recordable latency: one hour, in microseconds (larger values are clamped).
const MAX_MICROS: u64 = 3_600_000_000;
/// How long the run waits for the last messages after publishing stopped.
const DRAIN: Duration = Duration::from_secs(5);
/// How long the connections get to close at the end.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// How often the hold and the drain look at the counters.
const TICK: Duration = Duration::from_millis(50);
/// File descriptors beyond the connections: the publisher's pool and the process's own.
const EXTRA_FILES: usize = publish::CONCURRENCY;

/// Runs the realtime benchmark described by `config` and returns what it measured.
///
/// Warnings about client limits are written to stderr at the start (and kept in the report).
/// What the connections and the publisher meet is a result, in the report; this fails only
/// when the configuration is refused ([`BenchError::Usage`]) or a histogram cannot be made.
pub async fn run(config: RealtimeConfig) -> Result<RealtimeReport, BenchError> {
    let plan = Plan::new(&config, std::io::stderr().is_terminal())?;
    crate::check_source_ips(&plan.source_ips)?;
    let mut warnings: Vec<String> = limits::raise_open_files().into_iter().collect();
    let client_limits = ClientLimits::read();
    warnings.extend(client_limits.warnings(plan.connections + EXTRA_FILES, plan.source_ips.len()));
    crate::warn(&warnings);
    let progress = Progress::new(plan.progress, plan.connections);
    let shared = Arc::new(Shared::new(plan, client_limits)?);
    let plan = &shared.plan;
    // The servers, then the bench itself.
    let pids: Vec<u32> = plan.server_pids.iter().copied().chain([std::process::id()]).collect();
    let before = procfs::sample(&pids);
    let opening = connection::open_all(&shared, &progress).await?;
    let connected = procfs::sample(&pids);
    let held_from = Instant::now();
    let (published, drain) = hold(&shared, &progress, opening.subscribed).await?;
    let end = procfs::sample(&pids);
    let held = held_from.elapsed();
    let open_at_end = shared.open.load(Ordering::Relaxed) as u64;
    let deliveries = shared.deliveries()?;
    let closed = lock(&shared.closed).clone();
    progress.finish();
    shared.stop.cancel();
    shared.tracker.close();
    // Connections close at once when told; the bound is for a server that stops answering.
    let _closed_in_time = tokio::time::timeout(CLOSE_GRACE, shared.tracker.wait()).await;
    let measured = Measured {
        opening,
        published,
        deliveries,
        drain,
        open_at_end,
        closed,
        samples: Samples { before, connected, end, held },
        client_limits,
        warnings,
    };
    Ok(RealtimeReport::build(plan, measured))
}

/// Holds the connections for the plan's duration, publishing meanwhile when there is a
/// rate, then waits for the last messages (until all expected arrived, at most [`DRAIN`]
/// after the last post). Returns what was published and how long the drain took.
async fn hold(
    shared: &Arc<Shared>,
    progress: &Progress,
    subscribed: u64,
) -> Result<(Option<publish::Published>, Duration), BenchError> {
    let plan = &shared.plan;
    let start = Instant::now();
    let end = start + plan.duration;
    progress.holding(plan.duration);
    let publisher = plan
        .publishing
        .is_some()
        .then(|| tokio::spawn(publish::run(Arc::clone(shared), start, end)));
    while Instant::now() < end {
        let next = (Instant::now() + TICK).min(end);
        tokio::time::sleep_until(next.into()).await;
        progress.held(start.elapsed(), shared.open.load(Ordering::Relaxed), shared.received());
    }
    let Some(publisher) = publisher else {
        return Ok((None, Duration::ZERO));
    };
    let published = publisher
        .await
        .map_err(|error| BenchError::Internal(format!("the publisher failed: {error}")))?;
    let drained_from = Instant::now();
    let expected = published.ok * subscribed;
    let deadline = published.last_sent.unwrap_or(end) + DRAIN;
    loop {
        let received = shared.received();
        progress.draining(received, expected);
        if received >= expected || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(TICK).await;
    }
    Ok((Some(published), drained_from.elapsed()))
}

/// The readings of each server pid, then of the bench itself, at the three moments.
#[derive(Debug, Clone, Default)]
pub(crate) struct Samples {
    pub before: Vec<procfs::Sample>,
    pub connected: Vec<procfs::Sample>,
    pub end: Vec<procfs::Sample>,
    /// From the `connected` reading to the `end` one.
    pub held: Duration,
}

/// Messages received by every connection together.
#[derive(Debug, Clone)]
pub(crate) struct Deliveries {
    /// Publish-to-receipt latency of each first receipt, in µs.
    pub latency: Histogram<u64>,
    /// First receipts of a sequence number on a connection.
    pub received: u64,
    /// Further receipts of one.
    pub duplicates: u64,
    /// Messages on the room that were not this run's probes.
    pub other: u64,
    /// Unix time of the last first receipt, in µs (0: none).
    pub last_us: u64,
}

impl Deliveries {
    fn new() -> Result<Deliveries, BenchError> {
        Ok(Deliveries { latency: histogram()?, received: 0, duplicates: 0, other: 0, last_us: 0 })
    }

    fn add(&mut self, other: &Deliveries) -> Result<(), BenchError> {
        self.latency
            .add(&other.latency)
            .map_err(|e| BenchError::Internal(format!("cannot merge histograms: {e}")))?;
        self.received += other.received;
        self.duplicates += other.duplicates;
        self.other += other.other;
        self.last_us = self.last_us.max(other.last_us);
        Ok(())
    }
}

/// Everything the connection tasks share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub plan: Plan,
    pub limits: ClientLimits,
    /// Connection `i` records into shard `i % len`: a handful of locks, rarely contended,
    /// instead of one per message for everyone or a histogram per connection.
    shards: Vec<Mutex<Deliveries>>,
    /// Connections closed by the server (or lost) after subscribing, by reason.
    closed: Mutex<BTreeMap<String, u64>>,
    /// Subscribed connections not closed yet.
    pub open: AtomicUsize,
    /// Cancelled when the connect phase ends: connections still opening give up.
    pub connecting: CancellationToken,
    /// Cancelled at the end of the run: every connection closes.
    pub stop: CancellationToken,
    pub tracker: TaskTracker,
}

impl Shared {
    fn new(plan: Plan, limits: ClientLimits) -> Result<Shared, BenchError> {
        let count = std::thread::available_parallelism().map_or(4, |n| n.get() * 2).clamp(4, 16);
        let shards =
            (0..count).map(|_| Deliveries::new().map(Mutex::new)).collect::<Result<_, _>>()?;
        Ok(Shared {
            plan,
            limits,
            shards,
            closed: Mutex::new(BTreeMap::new()),
            open: AtomicUsize::new(0),
            connecting: CancellationToken::new(),
            stop: CancellationToken::new(),
            tracker: TaskTracker::new(),
        })
    }

    /// Records a message on the room received by connection `index`, whose data held
    /// `probe` (if it was one).
    pub(crate) fn record(&self, index: usize, seen: &mut Seen, probe: Option<Probe>) {
        let now = wire::unix_micros();
        let ours = self.plan.publishing.as_ref().and_then(|publishing| {
            probe.filter(|probe| probe.run == publishing.run && probe.seq < publishing.messages)
        });
        let first = ours.map(|probe| seen.insert(probe.seq));
        let mut shard = lock(&self.shards[index % self.shards.len()]);
        match (ours, first) {
            (Some(probe), Some(true)) => {
                shard.received += 1;
                shard.latency.saturating_record(now.saturating_sub(probe.sent_us));
                shard.last_us = shard.last_us.max(now);
            }
            (Some(_), _) => shard.duplicates += 1,
            (None, _) => shard.other += 1,
        }
    }

    /// Counts a subscribed connection the server closed (or that was lost).
    pub(crate) fn closed(&self, reason: String) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        *lock(&self.closed).entry(reason).or_default() += 1;
    }

    /// First receipts so far.
    fn received(&self) -> u64 {
        self.shards.iter().map(|shard| lock(shard).received).sum()
    }

    fn deliveries(&self) -> Result<Deliveries, BenchError> {
        let mut total = Deliveries::new()?;
        for shard in &self.shards {
            total.add(&lock(shard))?;
        }
        Ok(total)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the counters half-updated in a way that
    // matters for a report, so a poisoned lock is used as it is.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A latency histogram: 1 µs to an hour, three significant figures.
fn histogram() -> Result<Histogram<u64>, BenchError> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3)
        .map_err(|e| BenchError::Internal(format!("cannot create a histogram: {e}")))
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}
