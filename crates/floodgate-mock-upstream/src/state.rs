//! State shared by every connection: configuration, counters, the script queue, the rate
//! limiter and the bounded record buffer.
//!
//! The hot path only touches atomics: the script queue is checked through an atomic length
//! before its lock is taken, and the limiter and the record buffer do not exist unless rate
//! limiting and recording are on.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio_util::sync::CancellationToken;

use crate::answer;
use crate::limit::Limiter;
use crate::{MockConfig, Recorded, Script, Stats};

/// How many requests the record buffer keeps.
const RECORD_CAPACITY: usize = 10_000;

/// Everything the handlers share.
pub(crate) struct Shared {
    pub(crate) config: MockConfig,
    /// The default answer text for `config.chunks` words, built once.
    pub(crate) default_text: String,
    pub(crate) stats: Counters,
    /// Cancelled when the server must stop.
    pub(crate) shutdown: CancellationToken,
    scripts: Mutex<VecDeque<Script>>,
    /// Mirrors `scripts.len()` so that the unscripted path never takes the lock.
    scripts_len: AtomicUsize,
    /// `None` unless rate limiting is on.
    pub(crate) limiter: Option<Limiter>,
    /// `None` unless recording is on.
    records: Option<Mutex<VecDeque<Recorded>>>,
    next_id: AtomicU64,
}

impl Shared {
    pub(crate) fn new(config: MockConfig, shutdown: CancellationToken) -> Self {
        let records = config.record.then(|| Mutex::new(VecDeque::with_capacity(256)));
        let limiter = config.rate_limit.map(Limiter::new);
        Self {
            default_text: answer::answer_text(config.chunks),
            config,
            stats: Counters::default(),
            shutdown,
            scripts: Mutex::new(VecDeque::new()),
            scripts_len: AtomicUsize::new(0),
            limiter,
            records,
            next_id: AtomicU64::new(1),
        }
    }

    /// A number unique to this server, used to build response ids.
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn enqueue(&self, script: Script) {
        let mut scripts = lock(&self.scripts);
        scripts.push_back(script);
        self.scripts_len.store(scripts.len(), Ordering::Release);
    }

    pub(crate) fn pending_scripts(&self) -> usize {
        self.scripts_len.load(Ordering::Acquire)
    }

    /// The next queued script, if any; lock-free when the queue is empty.
    pub(crate) fn take_script(&self) -> Option<Script> {
        if self.scripts_len.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut scripts = lock(&self.scripts);
        let script = scripts.pop_front();
        self.scripts_len.store(scripts.len(), Ordering::Release);
        script
    }

    pub(crate) fn recording(&self) -> bool {
        self.records.is_some()
    }

    pub(crate) fn record(&self, request: Recorded) {
        if let Some(records) = &self.records {
            let mut records = lock(records);
            if records.len() == RECORD_CAPACITY {
                records.pop_front();
            }
            records.push_back(request);
        }
    }

    pub(crate) fn requests(&self) -> Vec<Recorded> {
        self.records
            .as_ref()
            .map(|records| lock(records).iter().cloned().collect())
            .unwrap_or_default()
    }

    pub(crate) fn clear_requests(&self) {
        if let Some(records) = &self.records {
            lock(records).clear();
        }
    }
}

/// Locks a mutex, ignoring poisoning: the protected data (a queue, a key's window) stays
/// consistent even if a holder panicked, and the mock must keep serving.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The live counters behind [`Stats`].
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    pub(crate) streams_started: AtomicU64,
    pub(crate) streams_completed: AtomicU64,
    pub(crate) streams_cancelled: AtomicU64,
    pub(crate) hung: AtomicU64,
    pub(crate) rate_limited: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> Stats {
        Stats {
            requests: self.requests.load(Ordering::Relaxed),
            streams_started: self.streams_started.load(Ordering::Relaxed),
            streams_completed: self.streams_completed.load(Ordering::Relaxed),
            streams_cancelled: self.streams_cancelled.load(Ordering::Relaxed),
            hung: self.hung.load(Ordering::Relaxed),
            rate_limited: self.rate_limited.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
