//! The load generators: open loop (constant arrival rate, latency from the intended send time,
//! arrivals beyond the in-flight cap dropped and counted), closed loop (workers sending back to
//! back) and a user population (closed loop with think time, started over a ramp-up).
//!
//! A closed-loop run is a population of users who never think and start at once, so both share
//! one worker loop.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::client::{Clients, Failure, Target};
use crate::config::{Load, Plan};
use crate::request;
use crate::stats::Recorder;

/// How long a worker whose request found no connection waits before its next one.
const CONNECT_RETRY_PAUSE: Duration = Duration::from_millis(10);

/// Everything the request tasks share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub plan: Plan,
    pub target: Target,
    pub clients: Clients,
    pub recorder: Recorder,
    /// Limits requests in flight to the connection budget when it is below the worker count.
    gate: Option<Semaphore>,
    total_weight: u64,
}

impl Shared {
    pub(crate) fn new(plan: Plan, recorder: Recorder) -> Shared {
        let target = Target {
            uri: plan.uri.clone(),
            headers: request::headers(plan.api, plan.key.as_deref()),
            api: plan.api,
        };
        let clients = Clients::new(&plan.source_ips, plan.connections);
        let gate = plan.gate.map(Semaphore::new);
        let total_weight = plan.mixes.iter().map(|m| u64::from(m.weight)).sum();
        Shared { plan, target, clients, recorder, gate, total_weight }
    }

    /// A mix entry index, chosen with probability weight / total.
    fn pick_mix(&self) -> usize {
        if self.plan.mixes.len() == 1 {
            return 0;
        }
        let mut ticket = fastrand::u64(0..self.total_weight.max(1));
        for (index, mix) in self.plan.mixes.iter().enumerate() {
            let weight = u64::from(mix.weight);
            if ticket < weight {
                return index;
            }
            ticket -= weight;
        }
        0
    }

    /// Sends one request and records it if it was meant to be sent after the warm-up. The
    /// caller has counted it in flight; this uncounts it. Returns whether no connection could
    /// be made.
    async fn send(&self, worker: Option<usize>, mix: usize, intended: Instant) -> bool {
        let plan = &self.plan;
        let result =
            self.clients.exchange(worker, &self.target, &plan.mixes[mix], plan.timeout).await;
        self.recorder.in_flight.fetch_sub(1, Ordering::Relaxed);
        let unconnected = matches!(result, Err(Failure::Kind(kind)) if kind.is_connect());
        if intended >= self.recorder.start() {
            self.recorder.record(intended, mix, result);
        }
        unconnected
    }
}

/// Runs the plan's load from `t0` (warm-up first) and returns when every request has finished.
pub(crate) async fn drive(shared: Arc<Shared>, t0: Instant) {
    let tracker = TaskTracker::new();
    let end = shared.recorder.start() + shared.plan.duration;
    match shared.plan.load {
        Load::Open { rate, cap } => open_loop(&shared, &tracker, rate, cap, t0).await,
        Load::Closed { concurrency } => {
            for worker in 0..concurrency {
                tracker.spawn(user(Arc::clone(&shared), worker, t0, end));
            }
        }
        Load::Users { users, ramp_up } => {
            for index in 0..users {
                let offset = ramp_up.mul_f64(index as f64 / users as f64);
                tracker.spawn(user(Arc::clone(&shared), index, t0 + offset, end));
            }
        }
    }
    tracker.close();
    tracker.wait().await;
}

/// Schedules floor(rate × warm-up) then floor(rate × duration) arrivals, arrival `i` of a phase
/// at its start + i / rate. Arrivals whose time has passed (the timer is coarser than the
/// interval at high rates, or the scheduler was late) go out at once, keeping their intended
/// time.
async fn open_loop(
    shared: &Arc<Shared>,
    tracker: &TaskTracker,
    rate: f64,
    cap: usize,
    t0: Instant,
) {
    let plan = &shared.plan;
    let phases = [
        (t0, Plan::arrivals(rate, plan.warmup)),
        (shared.recorder.start(), Plan::arrivals(rate, plan.duration)),
    ];
    for (phase_start, count) in phases {
        let at = |i: u64| phase_start + Duration::from_secs_f64(i as f64 / rate);
        let mut next = 0;
        while next < count {
            let now = Instant::now();
            while next < count && at(next) <= now {
                arrive(shared, tracker, cap, at(next));
                next += 1;
            }
            if next < count {
                tokio::time::sleep_until(at(next).into()).await;
            }
        }
    }
}

/// One open-loop arrival: sent as its own task, or dropped when `cap` requests are in flight.
fn arrive(shared: &Arc<Shared>, tracker: &TaskTracker, cap: usize, intended: Instant) {
    let recorder = &shared.recorder;
    if recorder.in_flight.load(Ordering::Relaxed) >= cap {
        if intended >= recorder.start() {
            recorder.record_drop(intended);
        }
        return;
    }
    recorder.in_flight.fetch_add(1, Ordering::Relaxed);
    let shared = Arc::clone(shared);
    tracker.spawn(async move {
        let mix = shared.pick_mix();
        let _unconnected = shared.send(None, mix, intended).await;
    });
}

/// A closed-loop worker or simulated user: from `start` until `end`, pick a kind of request,
/// send it, await the whole answer, think, repeat. A request started before `end` finishes
/// (within the timeout) and is recorded. After a request that found no connection the worker
/// pauses [`CONNECT_RETRY_PAUSE`] before the next.
async fn user(shared: Arc<Shared>, index: usize, start: Instant, end: Instant) {
    tokio::time::sleep_until(start.into()).await;
    loop {
        let intended = Instant::now();
        if intended >= end {
            return;
        }
        let mix = shared.pick_mix();
        let unconnected = {
            // Waiting for a connection slot is part of the user's latency.
            let _permit = match &shared.gate {
                Some(gate) => gate.acquire().await.ok(),
                None => None,
            };
            shared.recorder.in_flight.fetch_add(1, Ordering::Relaxed);
            shared.send(Some(index), mix, intended).await
        };
        // A connection failure comes back at once; retrying at once would spin, starving the
        // workers that do have connections (and what they measure) of CPU.
        let pause = if unconnected { CONNECT_RETRY_PAUSE } else { Duration::ZERO };
        let think = pause + think_time(shared.plan.mixes[mix].think_time);
        if !think.is_zero() {
            let wake = Instant::now() + think;
            if wake >= end {
                return;
            }
            tokio::time::sleep_until(wake.into()).await;
        }
    }
}

/// An exponentially distributed pause of the given mean (zero stays zero).
fn think_time(mean: Duration) -> Duration {
    if mean.is_zero() {
        return Duration::ZERO;
    }
    // 1 - u is in (0, 1], so the logarithm is finite.
    let u = 1.0 - fastrand::f64();
    mean.mul_f64(-u.ln())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn think_time_is_exponential_with_the_given_mean() {
        assert_eq!(think_time(Duration::ZERO), Duration::ZERO);
        let n = 20_000;
        let total: f64 = (0..n).map(|_| think_time(Duration::from_secs(5)).as_secs_f64()).sum();
        let mean = total / f64::from(n);
        assert!((4.7..5.3).contains(&mean), "mean {mean}");
    }
}
