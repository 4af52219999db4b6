//! Runs the job queue: the workers inside every `floodgate serve`, the
//! events of each job on its topic `job:<id>`, webhooks, and the upkeep
//! (gauges, purging old results). The queue itself (`crate::queue`) only
//! stores jobs; `http/jobs.rs` is the HTTP side.
//!
//! A worker takes jobs only while it has a free slot and no request of the
//! router is waiting for provider capacity, so a full queue turns into
//! jobs waiting in the queue rather than 429s upstream. A leased job runs as
//! its owner's streaming request through the same path as a synchronous one
//! (`http::chat::run_job`: the owner's limits and budget, the cache, the
//! router), waiting for capacity in the router for up to
//! `[queue] max_wait` at the job's priority. It is heartbeated every third
//! of its lease; a worker that loses the lease (its job was cancelled, or
//! it stalled and another node took the job) stops at once.
//!
//! Failures that another attempt may cure (rate limits, unavailable
//! upstreams, broken streams) are retried after a full-jitter backoff (at
//! least the `retry-after` they came with) until `max_attempts`; the others
//! (a bad request, a forbidden model, a revoked key) become dead letters at
//! once, since repeating them cannot help.

pub mod history;
pub mod webhook;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use floodgate_protocol::Format;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::app::AppState;
use crate::config::QueueConfig;
use crate::keys::KeyRegistry;
use crate::pipeline::auth::Caller;
use crate::pipeline::jwt::EndUser;
use crate::queue::{Failed, Job, JobStatus, Queue, QueueError};
use crate::routing::Admission;
use crate::routing::backoff::Backoff;
use crate::state::bus::{Bus, Message, Received};
use crate::telemetry::metric;
use crate::telemetry::trace::{Span, SpanKind};
use crate::time::{now_ms, rfc3339};

/// The topic on which `DELETE /v1/jobs/{id}` tells every node to stop a job.
const CANCEL_TOPIC: &str = "queue:cancel";
/// An owner string of an end user (JWT): `user:{tier}:{id}`.
const USER_OWNER: &str = "user:";

/// The topic of a job's events.
pub fn topic(id: &str) -> String {
    format!("job:{id}")
}

/// What the app knows about its queue.
#[derive(Debug)]
pub struct Jobs {
    pub queue: Arc<dyn Queue>,
    pub config: QueueConfig,
    pub bus: Arc<Bus>,
    /// This node's name in leases: host, process and a random part.
    node: String,
    /// Rung on a local submission, so an idle worker leases at once.
    wake: Notify,
    /// This node's running jobs, to stop one on cancel.
    running: Mutex<HashMap<String, CancellationToken>>,
    busy: AtomicUsize,
    pub webhooks: webhook::Webhooks,
    /// Finished jobs, kept in the store.
    pub history: history::History,
}

impl Jobs {
    pub fn new(
        queue: Arc<dyn Queue>,
        config: QueueConfig,
        bus: Arc<Bus>,
        node: String,
        signing: Option<secrecy::SecretString>,
        history: history::History,
    ) -> Arc<Jobs> {
        let webhooks = webhook::Webhooks::new(signing, &config);
        Arc::new(Jobs {
            queue,
            config,
            bus,
            node,
            wake: Notify::new(),
            running: Mutex::default(),
            busy: AtomicUsize::new(0),
            webhooks,
            history,
        })
    }

    /// A job was queued here: wake the idle workers and say so on its topic.
    pub fn submitted(&self, job: &Job) {
        metrics::counter!(metric::QUEUE_JOBS, "outcome" => "submitted").increment(1);
        self.wake.notify_waiters();
        self.event(&job.id, "queued", json!({"id": job.id, "priority": job.priority}));
    }

    /// Stops the job wherever it runs (the queue has marked it cancelled).
    pub fn cancelled(&self, job: &Job) {
        self.stop_local(&job.id);
        self.bus.publish(Message::new(CANCEL_TOPIC, "cancel", json!(job.id)));
        self.event(&job.id, "cancelled", view(job));
        self.history.record(job);
    }

    fn stop_local(&self, id: &str) {
        let running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(token) = running.get(id) {
            token.cancel();
        }
    }

    /// Jobs running on this node now.
    pub fn busy(&self) -> usize {
        self.busy.load(Ordering::Relaxed)
    }

    fn event(&self, id: &str, event: &str, data: Value) {
        self.bus.publish(Message::new(&topic(id), event, data));
    }

    /// Listens for cancellations from other nodes until `shutdown`.
    pub async fn run_cancel_listener(self: Arc<Self>, shutdown: CancellationToken) {
        let mut subscription = self.bus.subscribe(CANCEL_TOPIC);
        loop {
            let received = tokio::select! {
                () = shutdown.cancelled() => return,
                received = subscription.recv() => received,
            };
            match received {
                Some(Received::Message(message)) => {
                    if let Some(id) = message.data.as_str() {
                        self.stop_local(id);
                    }
                }
                // A missed cancel is still seen by the job's next heartbeat.
                Some(Received::Lagged(_)) => {}
                None => return,
            }
        }
    }

    /// Queue gauges every 5 s; purges results older than `result_ttl` every minute.
    pub async fn run_upkeep(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = 0u64;
        loop {
            let now = now_ms();
            match self.queue.stats(now).await {
                Ok(stats) => {
                    for (priority, count) in stats.pending.iter().enumerate() {
                        metrics::gauge!(metric::QUEUE_PENDING, "priority" => priority.to_string())
                            .set(*count as f64);
                    }
                    metrics::gauge!(metric::QUEUE_RUNNING).set(stats.running as f64);
                    for (status, count) in [
                        ("completed", stats.completed),
                        ("failed", stats.failed),
                        ("dead", stats.dead),
                        ("cancelled", stats.cancelled),
                    ] {
                        metrics::gauge!(metric::QUEUE_FINISHED, "status" => status)
                            .set(count as f64);
                    }
                    metrics::gauge!(metric::QUEUE_OLDEST_WAIT)
                        .set(stats.oldest_wait_ms.unwrap_or(0) as f64 / 1000.0);
                }
                Err(error) => backend_error("stats", &error),
            }
            metrics::gauge!(metric::QUEUE_WORKERS_BUSY).set(self.busy() as f64);
            if tick.is_multiple_of(12) {
                let before = now - i64::try_from(self.config.result_ttl.as_millis()).unwrap_or(0);
                match self.queue.purge(before).await {
                    Ok(0) => {}
                    Ok(purged) => {
                        tracing::debug!(purged, "purged finished jobs past queue.result_ttl")
                    }
                    Err(error) => backend_error("purge", &error),
                }
            }
            tick += 1;
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
        }
    }
}

fn backend_error(operation: &'static str, error: &QueueError) {
    metrics::counter!(metric::QUEUE_ERRORS, "operation" => operation).increment(1);
    tracing::warn!(%error, operation, "job queue backend call failed");
}

/// The owner recorded on a job submitted by `caller`: the virtual key's id,
/// `user:{tier}:{id}` for an end user, `None` for the master key (or an
/// open gateway).
pub fn owner_of(caller: &Caller) -> Option<String> {
    match caller {
        Caller::Anonymous | Caller::Master => None,
        Caller::Key(key) => Some(key.id.clone()),
        Caller::User(user) => {
            Some(format!("{USER_OWNER}{}:{}", user.tier.as_deref().unwrap_or_default(), user.id))
        }
    }
}

/// Whether `caller` may see and cancel a job of `owner`: its owner, and
/// the master key (or anyone, on an open gateway) for every job.
pub fn may_access(caller: &Caller, owner: Option<&str>) -> bool {
    match caller {
        Caller::Anonymous | Caller::Master => true,
        Caller::Key(key) => owner == Some(key.id.as_str()),
        Caller::User(user) => owner
            .and_then(|o| o.strip_prefix(USER_OWNER))
            .and_then(|rest| rest.split_once(':'))
            .is_some_and(|(_, id)| id == user.id),
    }
}

/// Who a job runs as: its owner, as it is now. A revoked or expired key
/// cannot run its jobs.
fn caller_for(
    keys: &KeyRegistry,
    auth_on: bool,
    owner: Option<&str>,
    now: i64,
) -> Result<Caller, String> {
    let Some(owner) = owner else {
        return Ok(if auth_on { Caller::Master } else { Caller::Anonymous });
    };
    if let Some(rest) = owner.strip_prefix(USER_OWNER) {
        let (tier, id) = rest.split_once(':').unwrap_or(("", rest));
        let tier = (!tier.is_empty()).then(|| tier.to_string());
        return Ok(Caller::User(EndUser { id: id.to_string(), tier }));
    }
    match keys.by_id(owner) {
        Some(key) if key.expires_at_ms.is_some_and(|at| at <= now) => {
            Err(format!("the key {owner} that submitted the job expired"))
        }
        Some(key) => Ok(Caller::Key(key)),
        None => Err(format!("the key {owner} that submitted the job was revoked")),
    }
}

/// The format of a job's request, from the route it names.
fn format_of(job: &Job) -> Format {
    if job.route == "messages" { Format::Anthropic } else { Format::OpenAi }
}

/// A job as clients see it (`GET /v1/jobs/{id}`, events, webhooks).
pub fn view(job: &Job) -> Value {
    let time = |ms: Option<i64>| ms.map(rfc3339);
    json!({
        "id": job.id,
        "object": "job",
        "status": job.status.as_str(),
        "dead_letter": job.dead,
        "model": job.request.get("model"),
        "format": if job.route == "messages" { "anthropic" } else { "openai" },
        "priority": job.priority,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "created_at": rfc3339(job.created_at_ms),
        "started_at": time(job.started_at_ms),
        "finished_at": time(job.finished_at_ms),
        "run_after": (job.status == JobStatus::Queued && job.run_after_ms > job.created_at_ms)
            .then(|| rfc3339(job.run_after_ms)),
        "deadline": time(job.deadline_ms),
        "idempotency_key": job.idempotency_key,
        "result": job.result,
        "error": job.error,
        "webhook": job.webhook_url.as_ref().map(|_| job.webhook.clone().unwrap_or_else(|| json!({"status": "pending"}))),
    })
}

/// Why a running job stopped before it ended.
enum Stopped {
    /// Its lease is gone: cancelled, or another worker has it.
    LostLease,
    /// Cancelled on this node (the queue has it as cancelled already).
    Cancelled,
    /// The node is shutting down past its grace period.
    Shutdown,
}

/// This node's job workers on one serving thread: up to `slots` jobs at
/// once, until `draining` (then no new leases; running jobs go on) and
/// `abort` (running jobs are given back to the queue).
pub async fn work(
    app: AppState,
    slots: usize,
    draining: CancellationToken,
    abort: CancellationToken,
) {
    if slots == 0 {
        return;
    }
    let jobs = app.jobs.clone();
    let worker = format!("{}-{}", jobs.node, crate::workers::index());
    let lease_ms = millis(jobs.config.lease);
    let poll = jobs.config.poll_interval;
    let mut tasks = JoinSet::new();
    let mut failing = false;
    loop {
        while tasks.try_join_next().is_some() {}
        if draining.is_cancelled() {
            break;
        }
        let free = slots.saturating_sub(tasks.len());
        let idle = async {
            tokio::select! {
                () = jobs.wake.notified() => {}
                () = tokio::time::sleep(poll) => {}
            }
        };
        if free == 0 {
            tokio::select! {
                () = draining.cancelled() => break,
                _ = tasks.join_next() => {}
            }
            continue;
        }
        if app.router.waiting() > 0 {
            // Requests wait for provider capacity: taking jobs now would only
            // make them wait too (or turn into 429s upstream).
            tokio::select! {
                () = draining.cancelled() => break,
                () = tokio::time::sleep(poll) => {}
                _ = tasks.join_next(), if !tasks.is_empty() => {}
            }
            continue;
        }
        match jobs.queue.lease(&worker, free, lease_ms, now_ms()).await {
            Ok(leased) if leased.is_empty() => {
                failing = false;
                tokio::select! {
                    () = draining.cancelled() => break,
                    () = idle => {}
                    _ = tasks.join_next(), if !tasks.is_empty() => {}
                }
            }
            Ok(leased) => {
                failing = false;
                for job in leased {
                    let (worker, abort) = (worker.clone(), abort.clone());
                    tasks.spawn(run_chain(app.clone(), worker, job, abort, draining.clone()));
                }
            }
            Err(error) => {
                if !failing {
                    backend_error("lease", &error);
                }
                failing = true;
                tokio::select! {
                    () = draining.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
    // Draining: running jobs finish, or give their job back on abort.
    while tasks.join_next().await.is_some() {}
}

/// Leases one job, if one is ready, and runs it to the end of its attempt
/// in the calling task; `Some(id)` of the job it ran. For tests and tools
/// that step through the queue (`[queue] workers = 0`).
pub async fn try_run_one(app: &AppState) -> Result<Option<String>, QueueError> {
    let worker = format!("{}-step", app.jobs.node);
    let lease_ms = millis(app.jobs.config.lease);
    let Some(job) = app.jobs.queue.lease(&worker, 1, lease_ms, now_ms()).await?.pop() else {
        return Ok(None);
    };
    let id = job.id.clone();
    run_leased(app.clone(), worker, job, CancellationToken::new(), More::Never).await;
    Ok(Some(id))
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Unregisters a running job and frees its slot when the attempt ends.
struct Running<'a> {
    jobs: &'a Jobs,
    id: String,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.jobs.running.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.id);
        self.jobs.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One attempt of a leased job.
async fn run_leased(
    app: AppState,
    worker: String,
    job: Job,
    abort: CancellationToken,
    more: More,
) -> Option<Job> {
    let jobs = app.jobs.clone();
    let started = Instant::now();
    let now = now_ms();
    let ready_at = job.run_after_ms.max(job.created_at_ms);
    metrics::histogram!(metric::QUEUE_WAIT).record((now - ready_at).max(0) as f64 / 1000.0);
    let stop = CancellationToken::new();
    jobs.running
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(job.id.clone(), stop.clone());
    jobs.busy.fetch_add(1, Ordering::Relaxed);
    let _running = Running { jobs: &jobs, id: job.id.clone() };
    jobs.event(&job.id, "started", json!({"id": job.id, "attempt": job.attempts}));
    // The attempt's trace: its request's admission, cache and upstream
    // spans are this span's children.
    let span = match &app.traces {
        Some(traces) => traces.root("job", SpanKind::Consumer),
        None => Span::NONE,
    };
    if span.is_recording() {
        span.set_str("floodgate.job.id", &job.id);
        span.set("floodgate.job.attempt", i64::from(job.attempts));
        span.set("floodgate.job.priority", i64::from(job.priority));
    }

    let lease_ms = millis(jobs.config.lease);
    let heartbeat = async {
        let every = jobs.config.lease / 3;
        loop {
            tokio::time::sleep(every).await;
            match jobs.queue.heartbeat(&job.id, &worker, lease_ms, now_ms()).await {
                Ok(true) => {}
                Ok(false) => return,
                // The lease may still hold; the next beat tries again.
                Err(error) => backend_error("heartbeat", &error),
            }
        }
    };
    let attempt = async {
        let caller = caller_for(&app.keys, app.auth.enabled(), job.owner.as_deref(), now).map_err(
            |message| crate::http::chat::JobFailure {
                message,
                status: 401,
                code: "invalid_api_key",
                retryable: false,
                retry_after: None,
            },
        )?;
        let admission = Admission { priority: job.priority, max_wait: jobs.config.max_wait };
        let request_id = format!("{}-{}", job.id, job.attempts);
        let topic = topic(&job.id);
        crate::http::chat::run_job(
            &app,
            caller,
            format_of(&job),
            &job.request,
            &request_id,
            admission,
            |choice, text| {
                if !jobs.bus.wants(&topic) {
                    return;
                }
                jobs.bus.publish(Message::new(
                    &topic,
                    "token",
                    json!({"id": job.id, "choice": choice, "text": text}),
                ));
            },
        )
        .await
    };
    let outcome = tokio::select! {
        outcome = span.run(attempt) => Ok(outcome),
        () = heartbeat => Err(Stopped::LostLease),
        () = stop.cancelled() => Err(Stopped::Cancelled),
        () = abort.cancelled() => Err(Stopped::Shutdown),
    };
    let seconds = started.elapsed().as_secs_f64();
    let mut next = None;
    let failed = match &outcome {
        Ok(Err(failure)) if !must_wait(failure) => Some(failure.code),
        _ => None,
    };
    let label = match outcome {
        Err(Stopped::LostLease) => "lost_lease",
        Err(Stopped::Cancelled) => "cancelled",
        Err(Stopped::Shutdown) => {
            // Given back at once, its attempt not counted, rather than left
            // to its lease's expiry.
            let now = now_ms();
            if let Err(error) = jobs.queue.release(&job.id, &worker, now, now).await {
                backend_error("release", &error);
            }
            "released"
        }
        Ok(Ok(result)) => {
            let limit = usize::from(more.may_lease(&app));
            let now = now_ms();
            match jobs
                .queue
                .complete_and_lease(&job.id, &worker, &result, limit, lease_ms, now)
                .await
            {
                Ok((done, leased)) => {
                    next = leased.into_iter().next();
                    if done {
                        let mut job = job;
                        job.status = JobStatus::Completed;
                        job.result = Some(result);
                        job.finished_at_ms = Some(now);
                        job.lease_owner = None;
                        job.lease_until_ms = None;
                        finished(&jobs, job);
                        "completed"
                    } else {
                        "lost_lease"
                    }
                }
                Err(error) => {
                    // The lease expires and another attempt runs the job again.
                    backend_error("complete", &error);
                    "backend_error"
                }
            }
        }
        Ok(Err(failure)) if must_wait(&failure) => {
            // The owner's own limit (or the providers' capacity) said wait:
            // the attempt never ran, so it does not count.
            let wait = failure.retry_after.unwrap_or(Duration::from_secs(1));
            let run_after = now_ms() + millis(wait.max(Duration::from_millis(100)));
            match jobs.queue.release(&job.id, &worker, run_after, now_ms()).await {
                Ok(true) => {
                    retrying(&jobs, &job, &failure.message, run_after, false);
                    "waiting"
                }
                Ok(false) => "lost_lease",
                Err(error) => {
                    backend_error("release", &error);
                    "backend_error"
                }
            }
        }
        Ok(Err(failure)) => {
            let retry_at = (failure.retryable && job.attempts < job.max_attempts).then(|| {
                let mut backoff = Backoff::new(jobs.config.retry_base, jobs.config.retry_max);
                for _ in 1..job.attempts {
                    backoff.next_delay();
                }
                let delay = backoff.next_delay().max(failure.retry_after.unwrap_or_default());
                now_ms() + millis(delay)
            });
            let now = now_ms();
            match jobs.queue.fail(&job.id, &worker, &failure.message, retry_at, now).await {
                Ok(Failed::Retrying { run_after_ms }) => {
                    retrying(&jobs, &job, &failure.message, run_after_ms, true);
                    "retried"
                }
                Ok(Failed::Dead) => {
                    finished(&jobs, dead(job, &failure.message, now));
                    "dead"
                }
                Ok(Failed::NotLeased) => "lost_lease",
                Err(error) => {
                    backend_error("fail", &error);
                    "backend_error"
                }
            }
        }
    };
    metrics::counter!(metric::QUEUE_JOBS, "outcome" => label).increment(1);
    span.set("floodgate.job.outcome", label);
    if let Some(code) = failed {
        span.fail(code);
    }
    metrics::histogram!(metric::QUEUE_RUN, "outcome" => label).record(seconds);
    next
}

/// Failures that say "not now" rather than "this failed": the owner's own
/// rate, token or concurrency limit, or every provider key at its limit for
/// as long as the job could wait. A request larger than a token limit
/// (`tokens_exceeded` with no `retry-after`) never fits, so it fails.
fn must_wait(failure: &crate::http::chat::JobFailure) -> bool {
    match failure.code {
        "rate_limit_exceeded"
        | "concurrency_exceeded"
        | "capacity_exceeded"
        | "wait_queue_full" => true,
        "tokens_exceeded" => failure.retry_after.is_some(),
        _ => false,
    }
}

/// Whether a worker that finished a job may take the next one at once.
#[derive(Clone)]
enum More {
    /// Only while the node is not draining.
    Unless(CancellationToken),
    Never,
}

impl More {
    fn may_lease(&self, app: &AppState) -> bool {
        match self {
            More::Unless(draining) => !draining.is_cancelled() && app.router.waiting() == 0,
            More::Never => false,
        }
    }
}

/// A worker slot: runs its job, then the next one it leased on completing
/// it, until there is none.
async fn run_chain(
    app: AppState,
    worker: String,
    job: Job,
    abort: CancellationToken,
    draining: CancellationToken,
) {
    let mut next = Some(job);
    while let Some(job) = next.take() {
        next = run_leased(
            app.clone(),
            worker.clone(),
            job,
            abort.clone(),
            More::Unless(draining.clone()),
        )
        .await;
    }
}

/// A job's `retrying` event: queued again to run from `run_after_ms`.
fn retrying(jobs: &Jobs, job: &Job, error: &str, run_after_ms: i64, attempt_counted: bool) {
    let data = json!({"id": job.id, "attempt": job.attempts, "error": error,
                      "retry_at": rfc3339(run_after_ms), "attempt_counted": attempt_counted});
    jobs.event(&job.id, "retrying", data);
}

/// The job as the queue has just recorded it: a dead letter.
fn dead(mut job: Job, error: &str, now: i64) -> Job {
    job.status = JobStatus::Failed;
    job.dead = true;
    job.error = Some(error.to_string());
    job.finished_at_ms = Some(now);
    job.lease_owner = None;
    job.lease_until_ms = None;
    job
}

/// A job ended (`completed` or `failed`, as the queue has just recorded
/// it, so it is not read back): its final event, then its webhook.
fn finished(jobs: &Arc<Jobs>, job: Job) {
    let event = if job.status == JobStatus::Completed { "completed" } else { "failed" };
    jobs.event(&job.id, event, view(&job));
    // A dead letter stays in the queue until an operator retries or
    // deletes it; only completed jobs outlive `result_ttl`.
    if job.status == JobStatus::Completed {
        jobs.history.record(&job);
    }
    if job.webhook_url.is_some() {
        tokio::spawn(webhook::deliver(jobs.clone(), job));
    }
}
