//! Circuit breakers: one per target, and one per key on each target. A
//! breaker owns the decision "may a call go to this upstream now?" and the
//! counts behind it; the router asks before each call and reports each
//! outcome through the permit it was given.
//!
//! Closed, the breaker opens after `consecutive_failures` failures in a row,
//! or when the sliding `window` holds at least `min_requests` calls and more
//! than `error_rate` of them failed. Open, it refuses everything for
//! `cooldown`; the first acquire after that makes it half-open, which lets
//! `half_open_probes` probes through: that many successes close it (with a
//! clean window), one failure opens it again for a full cooldown.
//!
//! The design follows from who calls it and how often. `allows` and a closed
//! `try_acquire` run on every request of every worker thread, so they read
//! atomics only: the state and its epoch share one word, so one load sees a
//! consistent pair. Everything that changes state, and every reported
//! outcome, goes through one short `Mutex` section; a permit dropped while
//! closed (a cancelled or neutral call) takes no lock at all. Every state
//! change starts a new epoch and each permit remembers the epoch it was
//! issued in, so an outcome that arrives after the state moved on (a slow
//! call that started before the breaker opened) is ignored instead of being
//! mistaken for a probe result. The window is a ring of time slots rather
//! than a list of timestamps, so its memory and the cost of reading it are
//! fixed whatever the traffic. Logs and metrics are written only on
//! transitions, inside the lock, so the gauge's last write is always the
//! current state.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use metrics::Label;
use tokio::time::Instant;

use crate::config::BreakerConfig;

/// State changes, by scope, provider, model, key and the state entered (`to`).
pub const CIRCUIT_TRANSITIONS: &str = "floodgate_circuit_transitions_total";
/// 1 while a breaker is open or half-open, 0 while closed.
pub const CIRCUIT_OPEN: &str = "floodgate_circuit_open";

/// Time slots across the window: the window forgets a call between
/// 90 % and 100 % of `window` after it was reported.
const SLOTS: usize = 10;

/// Who a breaker guards, for logs and metric labels.
#[derive(Debug, Clone)]
pub struct BreakerLabels {
    /// `"target"` or `"key"`.
    pub scope: &'static str,
    pub provider: String,
    pub model: String,
    /// The key's index in its provider's pool, for `"key"` scope.
    pub key: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed,
    Open,
    HalfOpen,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }

    fn bits(self) -> u64 {
        match self {
            State::Closed => 0,
            State::Open => 1,
            State::HalfOpen => 2,
        }
    }
}

/// A state and its epoch in one word: the epoch in the high bits, the state
/// in the low two. Every transition increments the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Status(u64);

impl Status {
    fn state(self) -> State {
        match self.0 & 0b11 {
            0 => State::Closed,
            1 => State::Open,
            _ => State::HalfOpen,
        }
    }

    fn next(self, state: State) -> Status {
        Status((((self.0 >> 2) + 1) << 2) | state.bits())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Success,
    Failure,
    /// Cancelled, or an answer that says nothing about the upstream's health.
    Neutral,
}

#[derive(Debug)]
pub struct Breaker {
    config: BreakerConfig,
    labels: BreakerLabels,
    /// `labels` as metric labels, built once (used only on transitions).
    metric_labels: Vec<Label>,
    /// Times below are nanoseconds since this instant.
    origin: Instant,
    /// The current [`Status`]; written only under `inner`'s lock.
    status: AtomicU64,
    /// When the current open period ends; meaningful while open.
    open_until: AtomicU64,
    /// Half-open probe slots in use: probes outstanding plus probes that
    /// succeeded. A dropped probe gives its slot back. Written under the lock;
    /// read without it by `allows`.
    probes_taken: AtomicU32,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    consecutive_failures: u32,
    window: Window,
    probe_successes: u32,
    opened_total: u64,
}

impl Breaker {
    pub fn new(config: BreakerConfig, labels: BreakerLabels) -> Arc<Breaker> {
        // Validation already refuses zero for these; a hand-built config with
        // zero would otherwise never close (no probe could run) or open at once.
        let config = BreakerConfig {
            consecutive_failures: config.consecutive_failures.max(1),
            half_open_probes: config.half_open_probes.max(1),
            ..config
        };
        let metric_labels = vec![
            Label::new("scope", labels.scope),
            Label::new("provider", labels.provider.clone()),
            Label::new("model", labels.model.clone()),
            Label::new("key", labels.key.map(|k| k.to_string()).unwrap_or_default()),
        ];
        // The gauge exists from the start, so a dashboard sees closed
        // breakers as 0 rather than as missing.
        metrics::gauge!(CIRCUIT_OPEN, metric_labels.iter()).set(0.0);
        Arc::new(Breaker {
            config,
            labels,
            metric_labels,
            origin: Instant::now(),
            status: AtomicU64::new(Status(0).0),
            open_until: AtomicU64::new(0),
            probes_taken: AtomicU32::new(0),
            inner: Mutex::new(Inner {
                consecutive_failures: 0,
                window: Window::new(config.window),
                probe_successes: 0,
                opened_total: 0,
            }),
        })
    }

    pub fn labels(&self) -> &BreakerLabels {
        &self.labels
    }

    /// Cheap (atomics only, no lock): would a call be let through now?
    /// Closed → true; open before its cooldown ends → false; open after the
    /// cooldown, or half-open with a free probe slot → true.
    pub fn allows(&self) -> bool {
        match self.status().state() {
            State::Closed => true,
            State::Open => self.cooled_down(self.now()),
            State::HalfOpen => {
                self.probes_taken.load(Ordering::Relaxed) < self.config.half_open_probes
            }
        }
    }

    /// Permission for one call: always when closed; one of
    /// `half_open_probes` slots when half-open (the first acquire after the
    /// cooldown moves open → half-open); `None` when open or every probe
    /// slot is taken.
    pub fn try_acquire(self: &Arc<Self>) -> Option<BreakerPermit> {
        let status = self.status();
        match status.state() {
            State::Closed => Some(self.permit(status)),
            State::Open if !self.cooled_down(self.now()) => None,
            State::Open | State::HalfOpen => self.acquire_probe(),
        }
    }

    pub fn snapshot(&self) -> BreakerSnapshot {
        let now = self.now();
        let inner = self.lock();
        let status = self.status();
        let (window_calls, window_failures) = inner.window.totals(now);
        let retry_in_ms = (status.state() == State::Open).then(|| {
            let left = self.open_until.load(Ordering::Relaxed).saturating_sub(now);
            // Rounded up: "0 ms" only once a call would really be let through.
            left.div_ceil(1_000_000)
        });
        BreakerSnapshot {
            state: status.state().name(),
            consecutive_failures: inner.consecutive_failures,
            window_calls,
            window_failures,
            error_rate: rate(window_failures, window_calls),
            retry_in_ms,
            opened_total: inner.opened_total,
        }
    }

    /// Closes the breaker and forgets its counts (admin reset). Permits
    /// issued before the reset no longer count.
    pub fn reset(&self) {
        let now = self.now();
        let mut inner = self.lock();
        let status = self.status();
        if status.state() == State::Closed {
            // No transition to report, but a new epoch all the same so that
            // calls in flight do not count into the fresh window.
            self.clear_closed(&mut inner);
            self.status.store(status.next(State::Closed).0, Ordering::Release);
        } else {
            self.transition(&mut inner, status, State::Closed, now, "reset");
        }
    }

    fn status(&self) -> Status {
        Status(self.status.load(Ordering::Acquire))
    }

    fn now(&self) -> u64 {
        nanos(Instant::now().saturating_duration_since(self.origin))
    }

    fn cooled_down(&self, now: u64) -> bool {
        now >= self.open_until.load(Ordering::Relaxed)
    }

    /// The counts are plain numbers, consistent after any step, so a lock
    /// poisoned by a panic elsewhere is still safe to use.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn permit(self: &Arc<Self>, status: Status) -> BreakerPermit {
        BreakerPermit { breaker: Some(Arc::clone(self)), status }
    }

    fn acquire_probe(self: &Arc<Self>) -> Option<BreakerPermit> {
        let now = self.now();
        let mut inner = self.lock();
        let mut status = self.status();
        match status.state() {
            // Closed by another thread's probe since our first look.
            State::Closed => return Some(self.permit(status)),
            State::Open if !self.cooled_down(now) => return None,
            State::Open => {
                status = self.transition(&mut inner, status, State::HalfOpen, now, "cooldown over");
            }
            State::HalfOpen => {}
        }
        let taken = self.probes_taken.load(Ordering::Relaxed);
        if taken >= self.config.half_open_probes {
            return None;
        }
        self.probes_taken.store(taken + 1, Ordering::Relaxed);
        Some(self.permit(status))
    }

    fn report(&self, issued: Status, outcome: Outcome) {
        // The common neutral end of a closed-state call: nothing to count.
        if issued.state() == State::Closed && outcome == Outcome::Neutral {
            return;
        }
        let now = self.now();
        let mut inner = self.lock();
        let status = self.status();
        if status != issued {
            // Issued in an earlier epoch: it describes a state that is gone.
            return;
        }
        match (status.state(), outcome) {
            (State::Closed, Outcome::Success) => {
                inner.consecutive_failures = 0;
                inner.window.record(now, false);
            }
            (State::Closed, Outcome::Failure) => {
                inner.consecutive_failures = inner.consecutive_failures.saturating_add(1);
                inner.window.record(now, true);
                if let Some(reason) = self.trips(&inner, now) {
                    self.transition(&mut inner, status, State::Open, now, reason);
                }
            }
            (State::HalfOpen, Outcome::Success) => {
                inner.probe_successes += 1;
                if inner.probe_successes >= self.config.half_open_probes {
                    self.transition(&mut inner, status, State::Closed, now, "probes succeeded");
                }
            }
            (State::HalfOpen, Outcome::Failure) => {
                self.transition(&mut inner, status, State::Open, now, "probe failed");
            }
            (State::HalfOpen, Outcome::Neutral) => {
                let taken = self.probes_taken.load(Ordering::Relaxed);
                self.probes_taken.store(taken.saturating_sub(1), Ordering::Relaxed);
            }
            // Permits are issued only while closed or half-open; an equal
            // status is therefore never open.
            (State::Closed, Outcome::Neutral) | (State::Open, _) => {}
        }
    }

    /// Why the closed breaker should open now, if it should.
    fn trips(&self, inner: &Inner, now: u64) -> Option<&'static str> {
        if inner.consecutive_failures >= self.config.consecutive_failures {
            return Some("consecutive failures");
        }
        let (calls, failures) = inner.window.totals(now);
        let over = calls > 0
            && calls >= self.config.min_requests
            && rate(failures, calls) > self.config.error_rate;
        over.then_some("error rate")
    }

    fn clear_closed(&self, inner: &mut Inner) {
        inner.consecutive_failures = 0;
        inner.window.clear();
        inner.probe_successes = 0;
        self.probes_taken.store(0, Ordering::Relaxed);
    }

    /// Moves to `to` under the lock, in a new epoch, and says so once in the
    /// log and the metrics.
    fn transition(
        &self,
        inner: &mut Inner,
        from: Status,
        to: State,
        now: u64,
        reason: &'static str,
    ) -> Status {
        match to {
            State::Open => {
                let until = now.saturating_add(nanos(self.config.cooldown));
                self.open_until.store(until, Ordering::Relaxed);
                inner.opened_total += 1;
                inner.probe_successes = 0;
                self.probes_taken.store(0, Ordering::Relaxed);
            }
            State::HalfOpen => {
                inner.probe_successes = 0;
                self.probes_taken.store(0, Ordering::Relaxed);
            }
            State::Closed => self.clear_closed(inner),
        }
        let next = from.next(to);
        // Release: a thread that sees the new state also sees `open_until`.
        self.status.store(next.0, Ordering::Release);

        let labels = &self.labels;
        if to == State::Open {
            let (calls, failures) = inner.window.totals(now);
            tracing::warn!(
                scope = labels.scope,
                provider = %labels.provider,
                model = %labels.model,
                key = labels.key,
                reason,
                from = from.state().name(),
                consecutive_failures = inner.consecutive_failures,
                window_calls = calls,
                window_failures = failures,
                cooldown_ms = nanos(self.config.cooldown) / 1_000_000,
                "circuit breaker opened"
            );
        } else {
            tracing::info!(
                scope = labels.scope,
                provider = %labels.provider,
                model = %labels.model,
                key = labels.key,
                reason,
                from = from.state().name(),
                to = to.name(),
                "circuit breaker {}",
                if to == State::Closed { "closed" } else { "half-open" }
            );
        }
        let mut with_to = self.metric_labels.clone();
        with_to.push(Label::new("to", to.name()));
        metrics::counter!(CIRCUIT_TRANSITIONS, with_to).increment(1);
        let open = if to == State::Closed { 0.0 } else { 1.0 };
        metrics::gauge!(CIRCUIT_OPEN, self.metric_labels.iter()).set(open);
        next
    }
}

/// Leave to make one call. Report the outcome with [`success`] or
/// [`failure`]; dropping it without either (the call was cancelled, or ended
/// in a way that says nothing about the upstream, such as a 429 or a 400) is
/// neutral: it frees its probe slot and counts nothing.
///
/// [`success`]: BreakerPermit::success
/// [`failure`]: BreakerPermit::failure
#[derive(Debug)]
pub struct BreakerPermit {
    /// `None` once reported.
    breaker: Option<Arc<Breaker>>,
    /// The state and epoch it was issued in.
    status: Status,
}

impl BreakerPermit {
    pub fn success(mut self) {
        self.finish(Outcome::Success);
    }

    /// Only failures that mean the upstream is unhealthy are reported here
    /// (timeouts, 5xx, connection errors); the caller decides.
    pub fn failure(mut self) {
        self.finish(Outcome::Failure);
    }

    fn finish(&mut self, outcome: Outcome) {
        if let Some(breaker) = self.breaker.take() {
            breaker.report(self.status, outcome);
        }
    }
}

impl Drop for BreakerPermit {
    fn drop(&mut self) {
        self.finish(Outcome::Neutral);
    }
}

/// A breaker's state for the admin API.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BreakerSnapshot {
    /// `"closed"`, `"open"` or `"half_open"`. An open breaker whose cooldown
    /// is over stays `"open"` (with `retry_in_ms` 0) until the next acquire.
    pub state: &'static str,
    pub consecutive_failures: u32,
    pub window_calls: u32,
    pub window_failures: u32,
    /// `window_failures / window_calls`, 0 with no calls.
    pub error_rate: f64,
    /// Milliseconds until a call would be let through, when open.
    pub retry_in_ms: Option<u64>,
    /// Times it opened since it was built (resets do not clear this).
    pub opened_total: u64,
}

/// Calls and failures over the last `window`, in [`SLOTS`] time slots. A
/// slot is reused when time comes round to it again, which is what drops the
/// oldest counts.
#[derive(Debug)]
struct Window {
    slot_nanos: u64,
    /// The newest slot index seen, so a thread whose clock reading is a
    /// little older than another's never writes into a recycled slot.
    latest: u64,
    slots: [Slot; SLOTS],
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    index: u64,
    calls: u32,
    failures: u32,
}

impl Window {
    fn new(window: Duration) -> Window {
        let slot_nanos = (nanos(window) / SLOTS as u64).max(1);
        Window { slot_nanos, latest: 0, slots: [Slot::default(); SLOTS] }
    }

    fn index(&self, now: u64) -> u64 {
        (now / self.slot_nanos).max(self.latest)
    }

    fn record(&mut self, now: u64, failed: bool) {
        let index = self.index(now);
        self.latest = index;
        let slot = &mut self.slots[(index % SLOTS as u64) as usize];
        if slot.index != index {
            *slot = Slot { index, calls: 0, failures: 0 };
        }
        slot.calls = slot.calls.saturating_add(1);
        slot.failures = slot.failures.saturating_add(u32::from(failed));
    }

    /// (calls, failures) in the slots still inside the window.
    fn totals(&self, now: u64) -> (u32, u32) {
        let index = self.index(now);
        self.slots.iter().filter(|slot| index.wrapping_sub(slot.index) < SLOTS as u64).fold(
            (0u32, 0u32),
            |(calls, failures), slot| {
                (calls.saturating_add(slot.calls), failures.saturating_add(slot.failures))
            },
        )
    }

    fn clear(&mut self) {
        self.slots = [Slot::default(); SLOTS];
    }
}

fn rate(failures: u32, calls: u32) -> f64 {
    if calls == 0 { 0.0 } else { f64::from(failures) / f64::from(calls) }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
