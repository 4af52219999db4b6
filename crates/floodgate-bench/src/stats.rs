//! Recording results while the load runs: HDR histograms (microseconds, 3 significant figures)
//! of total latency, time to first token and inter-token gaps; errors by status and kind; and a
//! per-second timeline with its own coarser histogram (2 significant figures) for p50/p99.
//!
//! Latencies count from the request's intended send time, so a client that falls behind its
//! schedule (open loop) shows the delay instead of hiding it (coordinated omission). Everything
//! sits behind one mutex taken once per finished request: a few hundred nanoseconds, far below
//! what the request itself costs.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::client::{ErrorKind, Exchange, Failure};
use crate::error::BenchError;

/// The largest recordable value: one hour, in microseconds (larger values are clamped).
const MAX_MICROS: u64 = 3_600_000_000;

/// Counts of one kind of request (one scenario mix entry).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct MixCount {
    pub ok: u64,
    pub errors: u64,
}

/// One second of the timeline, by completion time.
#[derive(Debug, Clone)]
pub(crate) struct Second {
    pub ok: u64,
    pub errors: u64,
    pub dropped: u64,
    pub latency: Histogram<u32>,
    /// Requests in flight at the end of the second.
    pub in_flight: u64,
}

/// Everything recorded.
#[derive(Debug, Clone)]
pub(crate) struct Stats {
    pub latency: Histogram<u64>,
    pub ttft: Histogram<u64>,
    pub gap: Histogram<u64>,
    pub ok: u64,
    pub by_status: BTreeMap<u16, u64>,
    pub by_kind: BTreeMap<ErrorKind, u64>,
    pub dropped: u64,
    pub timeline: Vec<Second>,
    pub mix: Vec<MixCount>,
    /// When the last recorded request finished, from the start of measurement.
    pub last_done: Duration,
    second_template: Histogram<u32>,
}

/// The second just finished, for the progress display.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SecondView {
    pub ok: u64,
    pub errors: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// Shared by every request task.
#[derive(Debug)]
pub(crate) struct Recorder {
    /// The start of measurement (after the warm-up).
    start: Instant,
    stats: Mutex<Stats>,
    /// Requests sent and not finished (warm-up ones included).
    pub in_flight: AtomicUsize,
}

impl Recorder {
    pub(crate) fn new(start: Instant, mixes: usize) -> Result<Recorder, BenchError> {
        let histogram = |figures| {
            Histogram::new_with_bounds(1, MAX_MICROS, figures)
                .map_err(|e| BenchError::Internal(format!("cannot create a histogram: {e}")))
        };
        let stats = Stats {
            latency: histogram(3)?,
            ttft: histogram(3)?,
            gap: histogram(3)?,
            ok: 0,
            by_status: BTreeMap::new(),
            by_kind: BTreeMap::new(),
            dropped: 0,
            timeline: Vec::new(),
            mix: vec![MixCount::default(); mixes],
            last_done: Duration::ZERO,
            second_template: Histogram::new_with_bounds(1, MAX_MICROS, 2)
                .map_err(|e| BenchError::Internal(format!("cannot create a histogram: {e}")))?,
        };
        Ok(Recorder { start, stats: Mutex::new(stats), in_flight: AtomicUsize::new(0) })
    }

    pub(crate) fn start(&self) -> Instant {
        self.start
    }

    fn lock(&self) -> MutexGuard<'_, Stats> {
        // A panic while holding the lock cannot leave the counters half-updated in a way that
        // matters for a report, so a poisoned lock is used as it is.
        self.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records one finished request of kind `mix` meant to be sent at `intended`.
    pub(crate) fn record(&self, intended: Instant, mix: usize, result: Result<Exchange, Failure>) {
        let done = match &result {
            Ok(exchange) => exchange.done,
            Err(_) => Instant::now(),
        };
        let since_start = done.saturating_duration_since(self.start);
        let mut stats = self.lock();
        stats.last_done = stats.last_done.max(since_start);
        let second = stats.second(since_start);
        match result {
            Ok(exchange) => {
                let total = micros(done.saturating_duration_since(intended));
                stats.latency.saturating_record(total);
                if let Some(first) = exchange.first_content {
                    stats.ttft.saturating_record(micros(first.saturating_duration_since(intended)));
                }
                for gap in &exchange.gaps {
                    stats.gap.saturating_record(micros(*gap));
                }
                stats.ok += 1;
                stats.timeline[second].ok += 1;
                stats.timeline[second].latency.saturating_record(total);
                if let Some(count) = stats.mix.get_mut(mix) {
                    count.ok += 1;
                }
            }
            Err(failure) => {
                match failure {
                    Failure::Status(status) => *stats.by_status.entry(status).or_default() += 1,
                    Failure::Kind(kind) => *stats.by_kind.entry(kind).or_default() += 1,
                }
                stats.timeline[second].errors += 1;
                if let Some(count) = stats.mix.get_mut(mix) {
                    count.errors += 1;
                }
            }
        }
    }

    /// Records an arrival that was not sent because the client was at its in-flight cap.
    pub(crate) fn record_drop(&self, intended: Instant) {
        let since_start = intended.saturating_duration_since(self.start);
        let mut stats = self.lock();
        let second = stats.second(since_start);
        stats.dropped += 1;
        *stats.by_kind.entry(ErrorKind::Dropped).or_default() += 1;
        stats.timeline[second].dropped += 1;
    }

    /// Notes the in-flight count at the end of second `index` and returns that second.
    pub(crate) fn close_second(&self, index: usize) -> SecondView {
        let in_flight = self.in_flight.load(Ordering::Relaxed) as u64;
        let mut stats = self.lock();
        stats.second(Duration::from_secs(index as u64));
        let second = &mut stats.timeline[index];
        second.in_flight = in_flight;
        SecondView {
            ok: second.ok,
            errors: second.errors,
            p50_ms: quantile_ms(&second.latency, 0.5),
            p99_ms: quantile_ms(&second.latency, 0.99),
        }
    }

    /// Errors and dropped arrivals so far.
    pub(crate) fn errors_and_drops(&self) -> (u64, u64) {
        let stats = self.lock();
        let errors = stats.by_status.values().sum::<u64>() + stats.by_kind.values().sum::<u64>();
        (errors - stats.dropped, stats.dropped)
    }

    /// A copy of everything recorded.
    pub(crate) fn snapshot(&self) -> Stats {
        self.lock().clone()
    }
}

impl Stats {
    /// The timeline index of `since_start`, growing the timeline to hold it.
    fn second(&mut self, since_start: Duration) -> usize {
        let index = usize::try_from(since_start.as_secs()).unwrap_or(usize::MAX - 1);
        while self.timeline.len() <= index {
            let latency = Histogram::new_from(&self.second_template);
            self.timeline.push(Second { ok: 0, errors: 0, dropped: 0, latency, in_flight: 0 });
        }
        index
    }
}

/// The `q` quantile of `histogram` in milliseconds, `None` when it is empty.
pub(crate) fn quantile_ms<T: hdrhistogram::Counter>(
    histogram: &Histogram<T>,
    q: f64,
) -> Option<f64> {
    (!histogram.is_empty()).then(|| to_ms(histogram.value_at_quantile(q)))
}

/// Microseconds to milliseconds.
pub(crate) fn to_ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_latency_from_the_intended_time_into_its_second() {
        let start = Instant::now();
        let recorder = Recorder::new(start, 1).unwrap();
        let intended = start + Duration::from_millis(100);
        let exchange = Exchange {
            done: start + Duration::from_millis(1_300),
            first_content: Some(start + Duration::from_millis(400)),
            gaps: vec![Duration::from_millis(5), Duration::from_millis(7)],
        };
        recorder.record(intended, 0, Ok(exchange));
        recorder.record(intended, 0, Err(Failure::Status(500)));
        recorder.record_drop(start + Duration::from_millis(2_500));
        let stats = recorder.snapshot();
        assert_eq!(stats.ok, 1);
        assert!(stats.latency.equivalent(stats.latency.max(), 1_200_000));
        assert_eq!(stats.ttft.len(), 1);
        assert!(stats.ttft.equivalent(stats.ttft.max(), 300_000));
        assert_eq!(stats.gap.len(), 2);
        assert_eq!(stats.by_status.get(&500), Some(&1));
        assert_eq!(stats.by_kind.get(&ErrorKind::Dropped), Some(&1));
        assert_eq!(stats.timeline.len(), 3);
        assert_eq!((stats.timeline[1].ok, stats.timeline[2].dropped), (1, 1));
        assert_eq!(stats.mix[0], MixCount { ok: 1, errors: 1 });
    }
}
