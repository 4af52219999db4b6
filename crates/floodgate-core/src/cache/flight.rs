//! Request coalescing: identical requests in flight at once share one
//! upstream call.
//!
//! A [`Flight`] is one upstream call and what it produced so far: for a
//! stream, every chunk from the start (so a waiter that joins late still
//! reads the whole answer), for a complete answer, the answer. The call runs
//! in a task of its own, not in any client's request, so a waiter that
//! disconnects does not cancel it for the others; each waiter holds a
//! [`Waiter`], and when the last one is dropped before the call ended, the
//! task is aborted and the flight forgotten. Flights are found by cache key
//! in [`Flights`]; joining and leaving take its lock, so a waiter never
//! joins a flight that is being abandoned.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use floodgate_protocol::StreamChunk;
use tokio::sync::watch;
use tokio::task::AbortHandle;

use super::key::Digest;
use crate::providers::ProviderError;
use crate::routing::RouteError;

/// Who the routed call went to, known once a stream started or an answer came.
#[derive(Debug, Clone)]
pub struct Origin {
    pub provider: String,
    pub model: String,
    pub attempts: u32,
    pub waited: Duration,
    pub hedged: bool,
}

/// A complete answer, written once in the client's format for every waiter.
#[derive(Debug)]
pub struct Answer {
    pub body: bytes::Bytes,
    pub origin: Origin,
}

/// How a flight ended.
#[derive(Debug, Clone)]
pub enum End {
    /// A complete (non-streamed) answer.
    Answer(Arc<Answer>),
    /// The stream completed: every chunk is in `chunks`.
    Complete,
    /// The stream broke off after it started.
    Broken(ProviderError),
    /// No upstream answered.
    Failed(Arc<RouteError>),
    /// The call's task ended without an answer (it panicked or was aborted).
    Lost,
}

#[derive(Debug, Default)]
pub struct State {
    /// Set when a stream started (before its first chunk is pushed).
    pub origin: Option<Origin>,
    pub chunks: Vec<StreamChunk>,
    pub end: Option<End>,
    /// The call found a semantic cache hit (its layer and similarity).
    pub semantic: Option<(super::Layer, f32)>,
}

#[derive(Debug)]
pub struct Flight {
    key: Digest,
    state: Mutex<State>,
    changed: watch::Sender<u64>,
    waiters: AtomicUsize,
    task: Mutex<Option<AbortHandle>>,
}

impl Flight {
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn notify(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// The stream started at `origin`.
    pub fn start(&self, origin: Origin) {
        self.state().origin = Some(origin);
        self.notify();
    }

    pub fn push(&self, chunk: StreamChunk) {
        self.state().chunks.push(chunk);
        self.notify();
    }

    /// The flight ended; the first end counts.
    pub fn end(&self, end: End) {
        {
            let mut state = self.state();
            if state.end.is_none() {
                state.end = Some(end);
            }
        }
        self.notify();
    }

    pub fn is_over(&self) -> bool {
        self.state().end.is_some()
    }

    /// Waits for the next change after the last one `seen` observed.
    pub async fn changed(&self, seen: &mut watch::Receiver<u64>) {
        // The sender lives as long as the flight: this never fails.
        let _ = seen.changed().await;
    }

    pub fn watch(&self) -> watch::Receiver<u64> {
        let mut rx = self.changed.subscribe();
        rx.mark_changed();
        rx
    }
}

/// A waiter's hold on a flight; dropping the last one cancels the call.
#[derive(Debug)]
pub struct Waiter {
    pub flight: Arc<Flight>,
    flights: Arc<Flights>,
    /// This waiter made the call (it did not join another's).
    pub leader: bool,
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let mut map = self.flights.lock();
        if self.flight.waiters.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        if map.get(&self.flight.key).is_some_and(|f| Arc::ptr_eq(f, &self.flight)) {
            map.remove(&self.flight.key);
        }
        drop(map);
        if !self.flight.is_over()
            && let Some(task) = self.flight.task.lock().ok().and_then(|mut t| t.take())
        {
            task.abort();
            metrics::counter!(crate::telemetry::metric::CACHE_FLIGHTS_CANCELLED).increment(1);
        }
    }
}

struct EndOnDrop {
    flight: Arc<Flight>,
    flights: Arc<Flights>,
}

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        self.flight.end(End::Lost);
        self.flights.forget(&self.flight);
    }
}

/// The flights in progress, by cache key.
#[derive(Debug, Default)]
pub struct Flights {
    map: Mutex<HashMap<Digest, Arc<Flight>>>,
}

/// What [`Flights::join`] found.
#[derive(Debug)]
pub enum Joined {
    /// Another request's call: wait for it.
    Follower(Waiter),
    /// No call yet: start one with [`Flights::launch`].
    Leader(Waiter),
}

impl Flights {
    fn lock(&self) -> MutexGuard<'_, HashMap<Digest, Arc<Flight>>> {
        self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Joins the flight for `key`, or makes a new one. With `share` false,
    /// the new flight is private (no one else can join it).
    pub fn join(self: &Arc<Self>, key: Digest, share: bool) -> Joined {
        let mut map = self.lock();
        if share && let Some(flight) = map.get(&key) {
            flight.waiters.fetch_add(1, Ordering::AcqRel);
            return Joined::Follower(Waiter {
                flight: flight.clone(),
                flights: self.clone(),
                leader: false,
            });
        }
        let flight = Arc::new(Flight {
            key,
            state: Mutex::new(State::default()),
            changed: watch::Sender::new(0),
            waiters: AtomicUsize::new(1),
            task: Mutex::new(None),
        });
        if share {
            map.insert(key, flight.clone());
        }
        Joined::Leader(Waiter { flight, flights: self.clone(), leader: true })
    }

    /// Runs the call of a new flight in a task of its own. `call` must end
    /// the flight ([`Flight::end`]); the flight is forgotten (later requests
    /// no longer join it) once it ended.
    pub fn launch<F>(self: &Arc<Self>, waiter: &Waiter, call: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        // Ends the flight however the task ends: done, aborted or panicked,
        // so no waiter waits for a call that is gone.
        let guard = EndOnDrop { flight: waiter.flight.clone(), flights: self.clone() };
        let task = tokio::spawn(async move {
            call.await;
            drop(guard);
        });
        if let Ok(mut slot) = waiter.flight.task.lock() {
            *slot = Some(task.abort_handle());
        }
    }

    /// Later requests start their own call (this one ended).
    pub fn forget(&self, flight: &Arc<Flight>) {
        let mut map = self.lock();
        if map.get(&flight.key).is_some_and(|f| Arc::ptr_eq(f, flight)) {
            map.remove(&flight.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn followers_join_until_the_flight_is_forgotten() {
        let flights = Arc::new(Flights::default());
        let Joined::Leader(leader) = flights.join([1; 32], true) else { panic!("not a leader") };
        let Joined::Follower(follower) = flights.join([1; 32], true) else {
            panic!("not a follower")
        };
        assert!(Arc::ptr_eq(&leader.flight, &follower.flight));
        let Joined::Leader(private) = flights.join([1; 32], false) else { panic!("shared") };
        assert!(!Arc::ptr_eq(&leader.flight, &private.flight));
        flights.forget(&leader.flight);
        assert!(matches!(flights.join([1; 32], true), Joined::Leader(_)));
    }

    #[tokio::test]
    async fn the_call_is_aborted_only_when_the_last_waiter_leaves() {
        let flights = Arc::new(Flights::default());
        let Joined::Leader(leader) = flights.join([2; 32], true) else { panic!("not a leader") };
        let Joined::Follower(follower) = flights.join([2; 32], true) else {
            panic!("not a follower")
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        flights.launch(&leader, async move {
            std::future::pending::<()>().await;
            drop(tx);
        });
        let flight = leader.flight.clone();
        drop(leader);
        tokio::task::yield_now().await;
        assert!(!flight.is_over());
        assert_eq!(flights.len(), 1);
        drop(follower);
        // The aborted task drops its sender: the receiver sees the end.
        assert_eq!(rx.recv().await, None);
        assert_eq!(flights.len(), 0);
        // The aborted call ended the flight, so no waiter could wait forever.
        let mut seen = flight.watch();
        while !flight.is_over() {
            flight.changed(&mut seen).await;
        }
        assert!(matches!(flight.state().end, Some(End::Lost)));
    }
}
