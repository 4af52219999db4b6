use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::*;

/// A limit under test: units that waiters take one at a time, and the hint
/// an attempt gets while there are none.
#[derive(Debug, Clone)]
struct Capacity {
    units: Arc<AtomicU32>,
    hint: Duration,
    attempts: Arc<AtomicU32>,
}

impl Capacity {
    fn new(hint: Duration) -> Self {
        Capacity { units: Arc::default(), hint, attempts: Arc::default() }
    }

    fn take(&self) -> Result<(), Duration> {
        self.attempts.fetch_add(1, Ordering::Relaxed);
        self.units
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| u.checked_sub(1))
            .map(|_| ())
            .map_err(|_| self.hint)
    }

    fn add(&self, units: u32) {
        self.units.fetch_add(units, Ordering::AcqRel);
    }

    fn attempts(&self) -> u32 {
        self.attempts.load(Ordering::Relaxed)
    }
}

const HINT: Duration = Duration::from_secs(60);

fn far() -> Instant {
    Instant::now() + Duration::from_secs(3_600)
}

/// Lets spawned tasks run until they block, without letting paused time
/// advance (the runtime is never idle while this yields).
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

/// Spawns a waiter that reports its id on `admitted` when it gets a unit.
fn spawn_waiter(
    queue: &Arc<WaitQueue>,
    capacity: &Capacity,
    id: u32,
    priority: u8,
    admitted: &Arc<Mutex<Vec<u32>>>,
) -> JoinHandle<Result<u32, WaitError>> {
    let (queue, capacity, admitted) = (queue.clone(), capacity.clone(), admitted.clone());
    tokio::spawn(async move {
        queue
            .wait_for(priority, far(), || {
                capacity.take()?;
                admitted.lock().unwrap().push(id);
                Ok(id)
            })
            .await
    })
}

fn listeners(signal: &CapacitySignal) -> usize {
    signal.listening.load(Ordering::Relaxed)
}

#[tokio::test(start_paused = true)]
async fn fast_path_does_not_join() {
    let signal = CapacitySignal::new();
    let queue = WaitQueue::new("chat", 4, signal.clone());
    let capacity = Capacity::new(HINT);
    capacity.add(1);
    let got = queue
        .wait_for(5, far(), || {
            assert!(queue.is_empty(), "the fast path tries before joining");
            capacity.take().map(|()| "served")
        })
        .await;
    assert_eq!(got, Ok("served"));
    assert_eq!(capacity.attempts(), 1);
    assert!(queue.is_empty());
    assert_eq!(listeners(&signal), 0);
}

#[tokio::test(start_paused = true)]
async fn waiters_are_admitted_by_priority_then_arrival() {
    let signal = CapacitySignal::new();
    let queue = WaitQueue::new("chat", 16, signal.clone());
    let capacity = Capacity::new(HINT);
    let admitted = Arc::new(Mutex::new(Vec::new()));
    let priorities = [1, 5, 1, 9, 5, 1];
    let mut handles = Vec::new();
    for (id, priority) in priorities.into_iter().enumerate() {
        handles.push(spawn_waiter(&queue, &capacity, id as u32, priority, &admitted));
        settle().await;
    }
    assert_eq!(queue.len(), 6);
    let start = Instant::now();
    for served in 1..=6 {
        capacity.add(1);
        signal.freed();
        settle().await;
        assert_eq!(admitted.lock().unwrap().len(), served);
        assert_eq!(queue.len(), 6 - served);
    }
    assert_eq!(*admitted.lock().unwrap(), [3, 1, 4, 0, 2, 5]);
    // Each unit was taken on the signal, not when a hint elapsed.
    assert_eq!(start.elapsed(), Duration::ZERO);
    for handle in handles {
        assert!(handle.await.unwrap().is_ok());
    }
    assert_eq!(listeners(&signal), 0);
}

#[tokio::test(start_paused = true)]
async fn timeout_returns_the_last_hint() {
    let queue = WaitQueue::new("chat", 4, CapacitySignal::new());
    let capacity = Capacity::new(Duration::from_secs(7));
    let deadline = Instant::now() + Duration::from_secs(2);
    let got = queue.wait_for(5, deadline, || capacity.take()).await;
    let error = got.unwrap_err();
    assert_eq!(
        error,
        WaitError::Timeout { waited: Duration::from_secs(2), retry_after: Duration::from_secs(7) }
    );
    assert_eq!(error.retry_after(), Some(Duration::from_secs(7)));
    assert_eq!(
        error.to_string(),
        "every provider key for this model stayed at its rate limit for the 2000 ms this request could wait; retry after 7000 ms"
    );
    assert!(queue.is_empty());
}

#[tokio::test(start_paused = true)]
async fn head_retries_when_its_hint_elapses() {
    let queue = WaitQueue::new("chat", 4, CapacitySignal::new());
    let capacity = Capacity::new(Duration::from_secs(5));
    let task = {
        let (queue, capacity) = (queue.clone(), capacity.clone());
        tokio::spawn(async move { queue.wait_for(5, far(), || capacity.take()).await })
    };
    settle().await;
    // Capacity appears without a ring: found when the hint elapses.
    capacity.add(1);
    let start = Instant::now();
    assert_eq!(task.await.unwrap(), Ok(()));
    assert_eq!(start.elapsed(), Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn past_deadline_makes_one_attempt() {
    let queue = WaitQueue::new("chat", 4, CapacitySignal::new());
    let capacity = Capacity::new(Duration::from_secs(3));
    let got = queue.wait_for(5, Instant::now(), || capacity.take()).await;
    assert_eq!(
        got,
        Err(WaitError::Timeout { waited: Duration::ZERO, retry_after: Duration::from_secs(3) })
    );
    assert_eq!(capacity.attempts(), 1);
    assert!(queue.is_empty());
}

#[tokio::test(start_paused = true)]
async fn past_deadline_behind_waiters_does_not_pass_them() {
    let queue = WaitQueue::new("chat", 4, CapacitySignal::new());
    let capacity = Capacity::new(Duration::from_secs(3));
    let admitted = Arc::new(Mutex::new(Vec::new()));
    let _head = spawn_waiter(&queue, &capacity, 0, 5, &admitted);
    settle().await;
    capacity.add(1);
    let attempts = capacity.attempts();
    let got = queue.wait_for(5, Instant::now(), || capacity.take()).await;
    assert_eq!(
        got,
        Err(WaitError::Timeout { waited: Duration::ZERO, retry_after: Duration::from_secs(3) })
    );
    assert_eq!(capacity.attempts(), attempts, "only the head attempts");
    assert_eq!(queue.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_head_lets_the_next_one_try_at_once() {
    let signal = CapacitySignal::new();
    let queue = WaitQueue::new("chat", 4, signal.clone());
    let capacity = Capacity::new(HINT);
    let admitted = Arc::new(Mutex::new(Vec::new()));
    let head = spawn_waiter(&queue, &capacity, 0, 5, &admitted);
    settle().await;
    let next = spawn_waiter(&queue, &capacity, 1, 5, &admitted);
    let last = spawn_waiter(&queue, &capacity, 2, 5, &admitted);
    settle().await;
    assert_eq!(queue.len(), 3);

    // A waiter behind the head goes away: nothing else changes.
    last.abort();
    settle().await;
    assert_eq!(queue.len(), 2);

    // Capacity appears unannounced, then the head's client disconnects: the
    // next head tries as soon as it is head, long before its hint.
    capacity.add(1);
    let start = Instant::now();
    head.abort();
    assert_eq!(next.await.unwrap(), Ok(1));
    assert!(start.elapsed() < HINT);
    assert_eq!(*admitted.lock().unwrap(), [1]);
    assert!(queue.is_empty());
    assert_eq!(listeners(&signal), 0);
}

#[tokio::test(start_paused = true)]
async fn full_at_max_waiting() {
    let queue = WaitQueue::new("chat", 2, CapacitySignal::new());
    let capacity = Capacity::new(HINT);
    let admitted = Arc::new(Mutex::new(Vec::new()));
    let _a = spawn_waiter(&queue, &capacity, 0, 5, &admitted);
    let _b = spawn_waiter(&queue, &capacity, 1, 5, &admitted);
    settle().await;
    let got = queue.wait_for(9, far(), || capacity.take()).await;
    assert_eq!(got, Err(WaitError::Full { max: 2 }));
    assert_eq!(queue.len(), 2);
    assert_eq!(got.unwrap_err().kind(), "wait_queue_full");
}

#[tokio::test(start_paused = true)]
async fn signal_wakes_the_head_before_its_hint() {
    let signal = CapacitySignal::new();
    let queue = WaitQueue::new("chat", 4, signal.clone());
    let capacity = Capacity::new(HINT);
    let task = {
        let (queue, capacity) = (queue.clone(), capacity.clone());
        tokio::spawn(async move { queue.wait_for(5, far(), || capacity.take()).await })
    };
    settle().await;
    assert_eq!(listeners(&signal), 1, "the head listens");
    tokio::time::advance(Duration::from_secs(1)).await;
    capacity.add(1);
    signal.freed();
    let start = Instant::now();
    assert_eq!(task.await.unwrap(), Ok(()));
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(listeners(&signal), 0);
}

#[tokio::test(start_paused = true)]
async fn newcomers_queue_behind_unless_they_outrank() {
    let signal = CapacitySignal::new();
    let queue = WaitQueue::new("chat", 8, signal.clone());
    let capacity = Capacity::new(HINT);
    let admitted = Arc::new(Mutex::new(Vec::new()));
    let first = spawn_waiter(&queue, &capacity, 0, 5, &admitted);
    settle().await;

    // Capacity appears while the head sleeps on its hint; a newcomer of the
    // same priority does not take it but queues behind.
    capacity.add(1);
    let second = spawn_waiter(&queue, &capacity, 1, 5, &admitted);
    settle().await;
    assert_eq!(queue.len(), 2);
    assert!(admitted.lock().unwrap().is_empty());
    assert_eq!(first.await.unwrap(), Ok(0));
    assert_eq!(queue.len(), 1);

    // A newcomer of higher priority goes ahead of the one waiting.
    let urgent = spawn_waiter(&queue, &capacity, 2, 9, &admitted);
    settle().await;
    assert_eq!(queue.len(), 2);
    capacity.add(1);
    signal.freed();
    assert_eq!(urgent.await.unwrap(), Ok(2));
    settle().await;
    assert_eq!(queue.len(), 1);
    capacity.add(1);
    signal.freed();
    assert_eq!(second.await.unwrap(), Ok(1));
    assert_eq!(*admitted.lock().unwrap(), [0, 2, 1]);
}

#[tokio::test(start_paused = true)]
async fn a_passed_head_tries_again_when_it_is_head_again() {
    let signal = CapacitySignal::new();
    let queue = WaitQueue::new("chat", 8, signal.clone());
    let capacity = Capacity::new(HINT);
    let admitted = Arc::new(Mutex::new(Vec::new()));
    let low = spawn_waiter(&queue, &capacity, 0, 1, &admitted);
    settle().await;
    // Two units appear unannounced while the head sleeps on its hint. A
    // newcomer of higher priority becomes head and takes one at once; the
    // head it passed takes the other as soon as it is head again.
    capacity.add(2);
    let high = spawn_waiter(&queue, &capacity, 1, 9, &admitted);
    let start = Instant::now();
    assert_eq!(high.await.unwrap(), Ok(1));
    assert_eq!(low.await.unwrap(), Ok(0));
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(listeners(&signal), 0);
}

/// Worker threads each run their own runtime; a waiter on one is woken by a
/// ring from another.
#[test]
fn works_across_runtimes() {
    let signal = CapacitySignal::new();
    let queue = WaitQueue::new("chat", 4, signal.clone());
    let capacity = Capacity::new(Duration::from_secs(3_600));
    let worker = {
        let (queue, capacity) = (queue.clone(), capacity.clone());
        std::thread::spawn(move || {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
            runtime.block_on(queue.wait_for(5, far(), || capacity.take()))
        })
    };
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while listeners(&signal) == 0 {
        assert!(std::time::Instant::now() < give_up, "the waiter never became head");
        std::thread::yield_now();
    }
    capacity.add(1);
    signal.freed();
    assert_eq!(worker.join().unwrap(), Ok(()));
}

#[test]
fn metrics_count_each_waiting_request_once() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async {
            let signal = CapacitySignal::new();
            let queue = WaitQueue::new("chat", 2, signal.clone());
            let capacity = Capacity::new(HINT);
            let admitted = Arc::new(Mutex::new(Vec::new()));
            // Fast path: not counted.
            capacity.add(1);
            queue.wait_for(5, far(), || capacity.take()).await.unwrap();
            // Admitted, cancelled, full, timeout.
            let a = spawn_waiter(&queue, &capacity, 0, 5, &admitted);
            let b = spawn_waiter(&queue, &capacity, 1, 5, &admitted);
            settle().await;
            let full = queue.wait_for(5, far(), || capacity.take()).await;
            assert_eq!(full, Err(WaitError::Full { max: 2 }));
            b.abort();
            settle().await;
            capacity.add(1);
            signal.freed();
            a.await.unwrap().unwrap();
            let deadline = Instant::now() + Duration::from_secs(1);
            let timeout = queue.wait_for(5, deadline, || capacity.take()).await;
            assert!(matches!(timeout, Err(WaitError::Timeout { .. })));
        });
    });
    let text = handle.render();
    for outcome in ["admitted", "cancelled", "full", "timeout"] {
        let line = format!("{WAIT_SECONDS}_count{{model=\"chat\",outcome=\"{outcome}\"}} 1");
        assert!(text.contains(&line), "missing {line:?} in\n{text}");
    }
    assert!(text.contains(&format!("{WAIT_QUEUE_DEPTH}{{model=\"chat\"}} 0")), "{text}");
}

#[test]
fn queues_and_waits_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>(_: &T) {}
    send_sync::<WaitQueue>();
    send_sync::<CapacitySignal>();
    send_sync::<WaitError>();
    let queue = WaitQueue::new("chat", 1, CapacitySignal::new());
    send(&queue.wait_for(0, Instant::now(), || Ok::<_, Duration>(())));
}
