//! Live numbers per target (calls in flight, latency, errors) and the order in
//! which a request tries the targets of its route.
//!
//! Each target has one [`TargetStats`], shared by every worker thread, so a
//! routing decision on any thread sees the load the others put on a target.
//! Reads on the request path are lock-free: in-flight count, EWMA and p95 are
//! atomics, and the p95 is a cached value recomputed at most every
//! [`P95_EVERY`] samples or [`P95_STALE_AFTER`]. Only [`TargetStats::record`]
//! (once per finished call) takes a short lock to add a sample to the window.
//!
//! [`order`] turns a [`Strategy`] and what is known of each target
//! ([`Candidate`]) into a permutation of the targets. It runs for every
//! request of a balanced alias, so it allocates only the returned `Vec`
//! (scratch space is on the stack) and never sorts fewer than two targets;
//! for 20 targets it measured about 50 ns (fallback), 120 ns (least-busy),
//! 190 ns (least-latency) and 290 ns (weighted), allocation included.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::Strategy;

/// Weight of a new sample in the latency EWMA.
///
/// Sample-weighted: it follows a change in latency within about ten calls
/// whatever the traffic. A target that gets no calls would keep its last
/// value for ever — at low concurrency a target that was once slow would
/// never be picked again to show it is fast now — so least-latency reads it
/// through [`TargetStats::decayed_ewma`], which halves it every
/// [`EWMA_HALF_LIFE`] without a success, until the target is tried and
/// measured again (Finagle's peak-EWMA balancer decays the same way).
pub const EWMA_ALPHA: f64 = 0.2;

/// How fast an unrefreshed latency estimate loses weight for least-latency.
pub const EWMA_HALF_LIFE: Duration = Duration::from_secs(10);

/// The p95 is `None` until the window holds this many successful samples.
pub const P95_MIN_SAMPLES: u64 = 20;

/// The cached p95 is recomputed after this many new samples (and as soon as
/// the window holds enough for a first one)…
pub const P95_EVERY: u32 = 32;

/// …or when it is older than this, so it also ages when calls stop.
pub const P95_STALE_AFTER: Duration = Duration::from_secs(1);

/// The window is two halves of this length: it covers the last 30 to 60 s.
const HALF_WINDOW: Duration = Duration::from_secs(30);

/// Per-target numbers, one per target, shared (`Arc`) by every worker.
#[derive(Debug, Default)]
pub struct TargetStats {
    in_flight: AtomicU32,
    /// Nanoseconds; 0 until the first successful call (samples are at least 1 ns).
    ewma_ns: AtomicU64,
    /// When `ewma_ns` last took a sample, in nanoseconds since `epoch`.
    ewma_at_ns: AtomicU64,
    /// Cached p95 in nanoseconds; 0 for none.
    p95_ns: AtomicU64,
    /// Nanoseconds since `epoch` after which `p95_ns` must be recomputed.
    p95_fresh_until: AtomicU64,
    epoch: Epoch,
    window: Mutex<Window>,
}

/// When the stats were made: times are kept as nanoseconds since then, so
/// they fit in atomics.
#[derive(Debug)]
struct Epoch(Instant);

impl Default for Epoch {
    fn default() -> Self {
        Epoch(Instant::now())
    }
}

impl TargetStats {
    pub fn new() -> Arc<TargetStats> {
        Arc::new(TargetStats::default())
    }

    /// Counts a call in flight until the guard drops.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight { stats: self.clone() }
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// A finished call: latency (to the full answer, or to a stream's first
    /// chunk) and whether it failed. Only successful calls feed the latency
    /// numbers: a fast failure says nothing about how fast answers come.
    pub fn record(&self, latency: Duration, ok: bool) {
        let now = self.now_ns();
        let mut window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        window.rotate(now);
        window.current.calls += 1;
        if !ok {
            window.current.errors += 1;
            return;
        }
        // Under the lock, so a plain load and store cannot lose an update.
        let sample = nanos(latency).max(1);
        let ewma = match self.ewma_ns.load(Ordering::Relaxed) {
            0 => sample,
            old => {
                let old = old as f64;
                ((old + (sample as f64 - old) * EWMA_ALPHA) as u64).max(1)
            }
        };
        self.ewma_ns.store(ewma, Ordering::Relaxed);
        self.ewma_at_ns.store(now, Ordering::Relaxed);
        window.current.add(bucket(sample / 1_000));
        window.since_refresh += 1;
        // The first p95 is published as soon as there are enough samples
        // rather than up to a second later.
        let first = self.p95_ns.load(Ordering::Relaxed) == 0
            && window.current.samples + window.previous.samples >= P95_MIN_SAMPLES;
        if first
            || window.since_refresh >= P95_EVERY
            || now >= self.p95_fresh_until.load(Ordering::Relaxed)
        {
            self.refresh_p95(&mut window, now);
        }
    }

    /// Exponentially weighted moving average of successful latencies (see
    /// [`EWMA_ALPHA`]); `None` before the first.
    pub fn ewma(&self) -> Option<Duration> {
        match self.ewma_ns.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }

    /// The EWMA halved for every [`EWMA_HALF_LIFE`] since its last sample,
    /// as of `now` (read once by the caller for all targets).
    pub fn decayed_ewma(&self, now: Instant) -> Option<Duration> {
        let ewma = self.ewma()?;
        let at = self.ewma_at_ns.load(Ordering::Relaxed);
        let now = nanos(now.saturating_duration_since(self.epoch.0));
        let idle = now.saturating_sub(at) as f64 / EWMA_HALF_LIFE.as_nanos() as f64;
        if idle < 0.1 {
            return Some(ewma);
        }
        Some(Duration::from_nanos(((ewma.as_nanos() as f64) * 0.5f64.powf(idle)).max(1.0) as u64))
    }

    /// p95 of successful latencies over the last 30–60 s, `None` with fewer
    /// than [`P95_MIN_SAMPLES`] samples. Within 1/32 of the true value (the
    /// resolution of the histogram); lock-free unless the cache is stale.
    pub fn p95(&self) -> Option<Duration> {
        let now = self.now_ns();
        if now >= self.p95_fresh_until.load(Ordering::Acquire) {
            let mut window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
            window.rotate(now);
            self.refresh_p95(&mut window, now);
        }
        match self.p95_ns.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }

    /// Everything at once, for the admin API and logs; calls and errors are
    /// counted over the same window as the p95.
    pub fn snapshot(&self) -> StatsSnapshot {
        let (calls, errors) = {
            let mut window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
            window.rotate(self.now_ns());
            (
                window.current.calls + window.previous.calls,
                window.current.errors + window.previous.errors,
            )
        };
        let ms = |d: Duration| d.as_secs_f64() * 1_000.0;
        StatsSnapshot {
            in_flight: self.in_flight(),
            ewma_ms: self.ewma().map(ms),
            p95_ms: self.p95().map(ms),
            calls,
            errors,
            error_rate: if calls == 0 { 0.0 } else { errors as f64 / calls as f64 },
        }
    }

    /// What [`order`] needs to know of this target.
    pub fn candidate(&self, weight: u32, available: bool) -> Candidate {
        Candidate { weight, in_flight: self.in_flight(), ewma: self.ewma(), available }
    }

    fn now_ns(&self) -> u64 {
        nanos(Instant::now().saturating_duration_since(self.epoch.0))
    }

    fn refresh_p95(&self, window: &mut Window, now: u64) {
        window.since_refresh = 0;
        let p95 = window.p95().map_or(0, |us| us.saturating_mul(1_000).max(1));
        self.p95_ns.store(p95, Ordering::Relaxed);
        self.p95_fresh_until.store(now.saturating_add(nanos(P95_STALE_AFTER)), Ordering::Release);
    }
}

/// Counts one call in flight on a target until dropped.
#[derive(Debug)]
pub struct InFlight {
    stats: Arc<TargetStats>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A target's numbers at one moment.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StatsSnapshot {
    pub in_flight: u32,
    pub ewma_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    /// Finished calls over the recent window.
    pub calls: u64,
    pub errors: u64,
    /// `errors / calls`, 0 without calls.
    pub error_rate: f64,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Two half-windows: samples go into `current`; when it is `HALF_WINDOW` old it
/// becomes `previous` and the old `previous` is dropped. Percentiles count both.
#[derive(Debug, Default)]
struct Window {
    current: Half,
    previous: Half,
    /// Nanoseconds since the epoch at which `current` began.
    start: u64,
    /// Samples since the cached p95 was computed.
    since_refresh: u32,
}

impl Window {
    fn rotate(&mut self, now: u64) {
        let half = nanos(HALF_WINDOW);
        let elapsed = now.saturating_sub(self.start);
        if elapsed < half {
            return;
        }
        if elapsed < 2 * half {
            std::mem::swap(&mut self.current, &mut self.previous);
            self.current.clear();
        } else {
            self.current.clear();
            self.previous.clear();
        }
        self.start += elapsed / half * half;
    }

    /// Nearest-rank p95 in microseconds (a bucket's middle value).
    fn p95(&self) -> Option<u64> {
        let samples = self.current.samples + self.previous.samples;
        if samples < P95_MIN_SAMPLES {
            return None;
        }
        let rank = (samples * 95).div_ceil(100);
        let mut seen = 0;
        for b in 0..BUCKETS {
            seen += self.current.count(b) + self.previous.count(b);
            if seen >= rank {
                return Some(bucket_value(b));
            }
        }
        None
    }
}

/// One half-window: a log-linear histogram of successful latencies in
/// microseconds (16 buckets per power of two, so a bucket's middle is within
/// 1/32 of any value in it, from 1 µs to 71 minutes) and the call counts.
/// Hand-written rather than `hdrhistogram` because two halves are summed
/// bucket by bucket on every refresh, with no allocation.
#[derive(Default)]
struct Half {
    /// Empty until the first sample, then `BUCKETS` long.
    counts: Vec<u32>,
    samples: u64,
    calls: u64,
    errors: u64,
}

impl std::fmt::Debug for Half {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Half")
            .field("samples", &self.samples)
            .field("calls", &self.calls)
            .field("errors", &self.errors)
            .finish_non_exhaustive()
    }
}

impl Half {
    fn add(&mut self, bucket: usize) {
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS];
        }
        if let Some(count) = self.counts.get_mut(bucket) {
            *count = count.saturating_add(1);
            self.samples += 1;
        }
    }

    fn count(&self, bucket: usize) -> u64 {
        self.counts.get(bucket).map_or(0, |&c| u64::from(c))
    }

    /// Keeps the allocation: halves are reused every 30 s.
    fn clear(&mut self) {
        self.counts.fill(0);
        self.samples = 0;
        self.calls = 0;
        self.errors = 0;
    }
}

/// Sub-buckets per power of two, as bits.
const SUB_BITS: u32 = 4;
const SUB: usize = 1 << SUB_BITS;
/// Values below `SUB` have a bucket each; each power of two from `SUB` to
/// 2³¹ has `SUB`.
const BUCKETS: usize = (32 - SUB_BITS as usize + 1) * SUB;

fn bucket(us: u64) -> usize {
    let v = us.min(u64::from(u32::MAX));
    if v < SUB as u64 {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros();
    let sub = (v >> (exp - SUB_BITS)) as usize & (SUB - 1);
    (exp - SUB_BITS + 1) as usize * SUB + sub
}

/// The middle value of bucket `b`.
fn bucket_value(b: usize) -> u64 {
    if b < SUB {
        return b as u64;
    }
    let shift = (b / SUB - 1) as u32;
    let lower = ((SUB + b % SUB) as u64) << shift;
    let width = 1u64 << shift;
    lower + (width - 1) / 2
}

/// What the strategy knows about one target of a route.
#[derive(Debug, Clone, Copy)]
pub struct Candidate {
    pub weight: u32,
    pub in_flight: u32,
    pub ewma: Option<Duration>,
    /// False when its breaker is open or it has no usable key.
    pub available: bool,
}

/// The order in which a request tries its targets: indexes into
/// `candidates`, every index exactly once, unavailable ones last (in their
/// written order).
///
/// - `Fallback`: written order.
/// - `Weighted`: drawn at random in proportion to weight, without
///   replacement; weight-0 targets come after the others, in written order.
/// - `LeastLatency`: power of two choices. Two distinct random targets; the
///   one with the lower score (EWMA × (in flight + 1)) goes first, then the
///   rest by ascending score (ties in written order). A target without a
///   latency yet scores as the lowest known EWMA, so new targets get tried;
///   with none known, the score is in-flight + 1.
/// - `LeastBusy`: ascending in-flight, ties in written order.
pub fn order(strategy: Strategy, candidates: &[Candidate], rng: &mut fastrand::Rng) -> Vec<usize> {
    let mut out = Vec::with_capacity(candidates.len());
    out.extend(candidates.iter().enumerate().filter(|(_, c)| c.available).map(|(i, _)| i));
    let available = out.len();
    out.extend(candidates.iter().enumerate().filter(|(_, c)| !c.available).map(|(i, _)| i));
    if available < 2 {
        return out;
    }
    let slots = &mut out[..available];
    match strategy {
        Strategy::Fallback => {}
        Strategy::Weighted => weighted(slots, candidates, rng),
        Strategy::LeastLatency => least_latency(slots, candidates, rng),
        Strategy::LeastBusy => least_busy(slots, candidates),
    }
    out
}

/// Routes of up to this many targets are ordered in scratch space on the
/// stack; longer ones (not expected in practice) allocate it.
const INLINE: usize = 32;

fn with_scratch<T: Copy + Default, R>(n: usize, f: impl FnOnce(&mut [T]) -> R) -> R {
    if n <= INLINE {
        let mut scratch = [T::default(); INLINE];
        f(&mut scratch[..n])
    } else {
        f(&mut vec![T::default(); n])
    }
}

/// Weighted draws without replacement. Each slot is packed with its weight
/// (`weight << 32 | index`) so the scans read one contiguous array.
/// Weight-0 targets come last, in written order.
fn weighted(slots: &mut [usize], candidates: &[Candidate], rng: &mut fastrand::Rng) {
    if u32::try_from(candidates.len()).is_err() {
        // Indexes would not fit the packing; no real route comes near.
        return;
    }
    with_scratch(slots.len(), |packed: &mut [u64]| {
        let mut total = 0;
        for (p, &i) in packed.iter_mut().zip(slots.iter()) {
            let weight = u64::from(candidates[i].weight);
            total += weight;
            *p = weight << 32 | i as u64;
        }
        for start in 0..packed.len() - 1 {
            if total == 0 {
                break;
            }
            let mut draw = rng.u64(0..total);
            let mut pick = start;
            for &p in &packed[start..] {
                if draw < p >> 32 {
                    break;
                }
                draw -= p >> 32;
                pick += 1;
            }
            total -= packed[pick] >> 32;
            packed.swap(start, pick);
        }
        // Only weight-0 targets remain undrawn: their packed value is their
        // index, so sorting restores written order. (Swapping and sorting
        // this rare tail is much cheaper than shifting on every draw.)
        if let Some(undrawn) = packed.iter().position(|&p| p >> 32 == 0) {
            packed[undrawn..].sort_unstable();
        }
        for (slot, &p) in slots.iter_mut().zip(packed.iter()) {
            *slot = (p & u64::from(u32::MAX)) as usize;
        }
    });
}

/// Ascending in-flight, sorted as packed `in_flight << 32 | index` integers
/// (ties in written order).
fn least_busy(slots: &mut [usize], candidates: &[Candidate]) {
    if u32::try_from(candidates.len()).is_err() {
        slots.sort_by_key(|&i| candidates[i].in_flight);
        return;
    }
    with_scratch(slots.len(), |keys: &mut [u64]| {
        for (key, &i) in keys.iter_mut().zip(slots.iter()) {
            *key = u64::from(candidates[i].in_flight) << 32 | i as u64;
        }
        keys.sort_unstable();
        for (slot, &key) in slots.iter_mut().zip(keys.iter()) {
            *slot = (key & u64::from(u32::MAX)) as usize;
        }
    });
}

/// Power of two choices, then the rest by score. Scores are computed once
/// per target and packed with the index (`score << 64 | index`), so sorting
/// compares plain integers and ties fall in written order.
fn least_latency(slots: &mut [usize], candidates: &[Candidate], rng: &mut fastrand::Rng) {
    let floor = slots.iter().filter_map(|&i| candidates[i].ewma).min().map_or(1, nanos).max(1);
    let n = slots.len();
    let a = rng.usize(0..n);
    let mut b = rng.usize(0..n - 1);
    if b >= a {
        b += 1;
    }
    with_scratch(n, |keys: &mut [u128]| {
        for (key, &i) in keys.iter_mut().zip(slots.iter()) {
            let c = &candidates[i];
            let latency = c.ewma.map_or(floor, nanos).max(1);
            let score = latency.saturating_mul(u64::from(c.in_flight) + 1);
            *key = u128::from(score) << 64 | i as u128;
        }
        // On equal scores the first drawn wins, which is random: a new
        // target (scored as the fastest) shares the traffic of the fastest.
        let first = if keys[b] >> 64 < keys[a] >> 64 { b } else { a };
        keys.swap(0, first);
        keys[1..].sort_unstable();
        for (slot, &key) in slots.iter_mut().zip(keys.iter()) {
            *slot = key as u64 as usize;
        }
    });
}

#[cfg(test)]
mod tests;
