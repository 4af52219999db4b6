//! Requests waiting for provider capacity, highest priority first.
//!
//! When every key of every target of an alias is at its rate limit (busy, not
//! failing), failing the request at once would make clients retry blindly;
//! instead it waits in the alias's [`WaitQueue`] until capacity frees or its
//! deadline passes. Only the head of the queue (highest priority, first come
//! within a priority) tries to reserve capacity, so freed capacity goes to
//! waiters in order and a newcomer cannot take it from them unless it
//! outranks them. The head retries when its last hint (how long until the
//! limit may allow it) elapses, when the app's [`CapacitySignal`] rings, or
//! when it has just become head.
//!
//! A waiting request holds nothing but its place in the queue (one small
//! map entry): `attempt` reserves capacity only when it succeeds, and the
//! request leaves the queue at that moment, so no waiter sits on a
//! reservation, a permit or a connection while it waits.
//!
//! Queues are shared by every worker thread (each with its own runtime), so
//! the state is behind a std mutex that is never held across an `await`, and
//! wakeups go through tokio's `Notify`, which works across runtimes.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering, fence};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::sync::futures::Notified;
use tokio::time::{Instant, sleep_until};

/// Gauge: requests waiting, by `model` (alias).
pub const WAIT_QUEUE_DEPTH: &str = "floodgate_wait_queue_depth";
/// Histogram: how long a request waited, by `model` and `outcome`
/// (admitted | timeout | cancelled | full); once per request that had to
/// wait, never for one served at once.
pub const WAIT_SECONDS: &str = "floodgate_wait_seconds";

/// The shortest pause between two attempts of the head, so that an attempt
/// returning a zero hint does not spin.
const MIN_RETRY: Duration = Duration::from_millis(1);

/// Rung when provider capacity may have freed (tokens returned to a bucket, a
/// key re-enabled). One per app, shared by every queue and key pool.
#[derive(Debug, Default)]
pub struct CapacitySignal {
    /// Heads currently waiting for a ring; `freed` skips the notify when 0.
    listening: AtomicUsize,
    notify: Notify,
}

impl CapacitySignal {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Wakes every queue head so that it tries again. Cheap when nobody
    /// waits: a fence and a load.
    pub fn freed(&self) {
        // Pairs with the fence in `listen`: either this load sees the
        // listener, or the listener's attempt sees the capacity that the
        // caller freed before calling this.
        fence(Ordering::SeqCst);
        if self.listening.load(Ordering::Relaxed) > 0 {
            self.notify.notify_waiters();
        }
    }

    /// Registers for the next ring. Call before the attempt it would repeat:
    /// a `Notified` receives `notify_waiters` from its creation, unpolled.
    fn listen(&self) -> (Listening<'_>, Notified<'_>) {
        let rung = self.notify.notified();
        self.listening.fetch_add(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        (Listening(self), rung)
    }
}

/// Counts a listener on the signal while it lives.
struct Listening<'a>(&'a CapacitySignal);

impl Drop for Listening<'_> {
    fn drop(&mut self) {
        self.0.listening.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why a request that waited for capacity got none.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WaitError {
    #[error(
        "every provider key for this model is at its rate limit and {max} requests are already waiting; retry later"
    )]
    Full { max: usize },
    #[error(
        "every provider key for this model stayed at its rate limit for the {} ms this request could wait; retry after {} ms",
        .waited.as_millis(),
        .retry_after.as_millis()
    )]
    Timeout { waited: Duration, retry_after: Duration },
}

impl WaitError {
    /// Label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            WaitError::Full { .. } => "wait_queue_full",
            WaitError::Timeout { .. } => "wait_timeout",
        }
    }

    /// What a 429 should put in `retry-after`, when known.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            WaitError::Full { .. } => None,
            WaitError::Timeout { retry_after, .. } => Some(*retry_after),
        }
    }
}

/// Queue order: higher priority first, then arrival.
type Place = (Reverse<u8>, u64);

/// The requests waiting for one model alias.
#[derive(Debug)]
pub struct WaitQueue {
    alias: Arc<str>,
    max_waiting: usize,
    signal: Arc<CapacitySignal>,
    /// Mirrors `state.waiting.len()` so the fast path reads it without the lock.
    len: AtomicUsize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Each waiter's wakeup for when it becomes head.
    waiting: BTreeMap<Place, Arc<Notify>>,
    next_seq: u64,
    /// The last hint any head got, for waiters that never attempted.
    last_hint: Option<Duration>,
}

impl State {
    fn head(&self) -> Option<Place> {
        self.waiting.first_key_value().map(|(place, _)| *place)
    }

    /// Removes `place`; if it was head, returns the new head's wakeup.
    fn remove(&mut self, place: Place) -> Option<Arc<Notify>> {
        let was_head = self.head() == Some(place);
        self.waiting.remove(&place);
        if was_head { self.waiting.first_key_value().map(|(_, n)| n.clone()) } else { None }
    }
}

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Admitted,
    Timeout,
    Cancelled,
    Full,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Admitted => "admitted",
            Outcome::Timeout => "timeout",
            Outcome::Cancelled => "cancelled",
            Outcome::Full => "full",
        }
    }
}

impl WaitQueue {
    pub fn new(alias: &str, max_waiting: usize, signal: Arc<CapacitySignal>) -> Arc<WaitQueue> {
        Arc::new(WaitQueue {
            alias: Arc::from(alias),
            max_waiting,
            signal,
            len: AtomicUsize::new(0),
            state: Mutex::new(State::default()),
        })
    }

    /// Requests waiting now.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs `attempt` (which tries to reserve capacity: `Ok` with it, or
    /// `Err` with how long until it may succeed) in queue order.
    ///
    /// - When nobody waits, it is tried once and an `Ok` returns at once
    ///   without joining the queue.
    /// - Otherwise the request joins ([`WaitError::Full`] at `max_waiting`)
    ///   and waits. Only the head calls `attempt`: when it becomes head, when
    ///   its last hint elapses, and when the signal rings. On `Ok` it leaves
    ///   and the next head tries at once.
    /// - At `deadline`, [`WaitError::Timeout`] with the last hint. With a
    ///   deadline already past, that is after one attempt (none if it would
    ///   have to pass requests already waiting).
    /// - Dropping the future (the client went away) leaves the queue, and the
    ///   next head tries at once if this one was head.
    pub async fn wait_for<T>(
        &self,
        priority: u8,
        deadline: Instant,
        mut attempt: impl FnMut() -> Result<T, Duration>,
    ) -> Result<T, WaitError> {
        let arrived = Instant::now();
        let mut hint = None;
        if self.is_empty() {
            match attempt() {
                Ok(value) => return Ok(value),
                Err(h) => hint = Some(h),
            }
            if deadline <= arrived {
                let error = WaitError::Timeout {
                    waited: Duration::ZERO,
                    retry_after: hint.unwrap_or_default(),
                };
                self.observe(Outcome::Timeout, Duration::ZERO);
                return Err(error);
            }
        }
        let mut entry = self.join(priority, arrived)?;
        loop {
            let now = Instant::now();
            let step = {
                let mut state = self.lock();
                if state.head() == Some(entry.place) {
                    // Listening before the attempt: capacity freed after the
                    // attempt looked rings this listener.
                    let (listening, rung) = self.signal.listen();
                    match attempt() {
                        Ok(value) => {
                            let next = state.remove(entry.place);
                            entry.queued = false;
                            self.set_depth(&state);
                            Step::Admitted(value, next)
                        }
                        Err(h) => {
                            state.last_hint = Some(h);
                            Step::Retry(h, listening, rung)
                        }
                    }
                } else {
                    Step::Behind(state.last_hint)
                }
            };
            match step {
                Step::Admitted(value, next) => {
                    if let Some(next) = next {
                        next.notify_one();
                    }
                    entry.outcome = Outcome::Admitted;
                    return Ok(value);
                }
                Step::Retry(h, _listening, rung) => {
                    hint = Some(h);
                    if now >= deadline {
                        return Err(entry.timeout(h));
                    }
                    let retry_at = (now + h.max(MIN_RETRY)).min(deadline);
                    let rung = pin!(rung);
                    // Also woken by `turn`: a head that was passed by a higher
                    // priority and is head again tries at once.
                    tokio::select! {
                        () = sleep_until(retry_at) => {}
                        () = rung => {}
                        () = entry.turn.notified() => {}
                    }
                }
                Step::Behind(last_hint) => {
                    if now >= deadline {
                        return Err(entry.timeout(hint.or(last_hint).unwrap_or_default()));
                    }
                    tokio::select! {
                        () = entry.turn.notified() => {}
                        () = sleep_until(deadline) => {}
                    }
                }
            }
        }
    }

    fn join(&self, priority: u8, arrived: Instant) -> Result<Entry<'_>, WaitError> {
        let mut state = self.lock();
        if state.waiting.len() >= self.max_waiting {
            drop(state);
            self.observe(Outcome::Full, Duration::ZERO);
            return Err(WaitError::Full { max: self.max_waiting });
        }
        let place = (Reverse(priority), state.next_seq);
        state.next_seq += 1;
        let turn = Arc::new(Notify::new());
        state.waiting.insert(place, turn.clone());
        self.set_depth(&state);
        Ok(Entry { queue: self, place, turn, arrived, outcome: Outcome::Cancelled, queued: true })
    }

    fn leave(&self, place: Place) {
        let next = {
            let mut state = self.lock();
            let next = state.remove(place);
            self.set_depth(&state);
            next
        };
        if let Some(next) = next {
            next.notify_one();
        }
    }

    /// A panic while the lock was held (in an `attempt`) leaves the state
    /// consistent: every change to it is a single map operation.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Under the lock, so that concurrent changes reach the gauge in order.
    fn set_depth(&self, state: &State) {
        let len = state.waiting.len();
        self.len.store(len, Ordering::Release);
        metrics::gauge!(WAIT_QUEUE_DEPTH, "model" => self.alias.clone()).set(len as f64);
    }

    fn observe(&self, outcome: Outcome, waited: Duration) {
        metrics::histogram!(WAIT_SECONDS, "model" => self.alias.clone(), "outcome" => outcome.label())
            .record(waited.as_secs_f64());
    }
}

enum Step<'a, T> {
    Admitted(T, Option<Arc<Notify>>),
    Retry(Duration, Listening<'a>, Notified<'a>),
    Behind(Option<Duration>),
}

/// A request's place in the queue. Dropping it leaves the queue (waking the
/// next head if it was head) and records how the wait ended.
struct Entry<'q> {
    queue: &'q WaitQueue,
    place: Place,
    /// Notified when this entry becomes head.
    turn: Arc<Notify>,
    arrived: Instant,
    outcome: Outcome,
    /// False once removed under the lock (admitted).
    queued: bool,
}

impl Entry<'_> {
    fn timeout(&mut self, retry_after: Duration) -> WaitError {
        self.outcome = Outcome::Timeout;
        WaitError::Timeout { waited: self.arrived.elapsed(), retry_after }
    }
}

impl Drop for Entry<'_> {
    fn drop(&mut self) {
        if self.queued {
            self.queue.leave(self.place);
        }
        self.queue.observe(self.outcome, self.arrived.elapsed());
    }
}

#[cfg(test)]
mod tests;
