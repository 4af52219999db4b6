//! The durable job queue's engine: jobs with a priority (0–10, higher
//! first, FIFO within one), leased by workers for a visibility timeout and
//! heartbeated, retried with a delay until `max_attempts`, then kept as
//! dead letters. One [`Queue`] trait; `sqlite.rs` is the embedded backend
//! (jobs survive a restart), `redis.rs` the backend of a cluster (every
//! node's workers share one queue).
//!
//! Delivery is at least once: a job whose worker died is leased again once
//! its lease expires, and [`Queue::complete`] takes effect only for the
//! worker holding the current lease, so a job is completed once. Every
//! call takes the time (`now_ms`) from its caller, so tests step through
//! leases and retries without sleeping.
//!
//! `crate::jobs` runs the queue: submissions, workers, events, webhooks.

pub mod redis;
pub mod sqlite;

use async_trait::async_trait;
use serde_json::Value;

pub use redis::RedisQueue;
pub use sqlite::SqliteQueue;

/// Priorities run from 0 to this, higher first.
pub const MAX_PRIORITY: u8 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    Queued,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<JobStatus> {
        Some(match text {
            "queued" => JobStatus::Queued,
            "running" => JobStatus::Running,
            "completed" => JobStatus::Completed,
            "failed" => JobStatus::Failed,
            "cancelled" => JobStatus::Cancelled,
            _ => return None,
        })
    }

    /// The job will not run again (unless a dead letter is retried).
    pub fn is_final(self) -> bool {
        matches!(self, JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled)
    }
}

/// A job to submit.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub id: String,
    /// The virtual key that submitted it; `None` for the master key.
    pub owner: Option<String>,
    /// `chat` (OpenAI body) or `messages` (Anthropic body).
    pub route: String,
    pub request: Value,
    pub priority: u8,
    pub max_attempts: u32,
    pub webhook_url: Option<String>,
    pub idempotency_key: Option<String>,
    /// Unix ms after which the job is not started any more.
    pub deadline_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: String,
    pub owner: Option<String>,
    pub route: String,
    pub request: Value,
    pub priority: u8,
    pub status: JobStatus,
    /// Failed after its last attempt: a dead letter.
    pub dead: bool,
    /// Attempts started so far.
    pub attempts: u32,
    pub max_attempts: u32,
    /// A queued job is not leased before this (a retry's backoff).
    pub run_after_ms: i64,
    pub lease_owner: Option<String>,
    pub lease_until_ms: Option<i64>,
    pub deadline_ms: Option<i64>,
    pub webhook_url: Option<String>,
    pub idempotency_key: Option<String>,
    pub result: Option<Value>,
    pub error: Option<String>,
    /// The webhook's delivery status, as the deliverer last wrote it.
    pub webhook: Option<Value>,
    pub created_at_ms: i64,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
}

/// What [`Queue::fail`] did with a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failed {
    /// Queued again, to run from `run_after_ms`.
    Retrying { run_after_ms: i64 },
    /// That was the last attempt: a dead letter.
    Dead,
    /// The caller does not hold the job's lease (it expired and another
    /// worker has the job, or the job was cancelled): nothing changed.
    NotLeased,
}

/// `GET /admin/queue`'s figures.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct QueueStats {
    /// Queued jobs by priority, index = priority.
    pub pending: [u64; MAX_PRIORITY as usize + 1],
    pub running: u64,
    pub completed: u64,
    pub failed: u64,
    pub dead: u64,
    pub cancelled: u64,
    /// How long the oldest queued job that may run now has waited.
    pub oldest_wait_ms: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("job queue ({backend}): {message}")]
    Backend { backend: &'static str, message: String },
    #[error("a job with id {0:?} exists already")]
    Duplicate(String),
}

#[async_trait]
pub trait Queue: Send + Sync + std::fmt::Debug {
    /// `sqlite` or `redis`.
    fn name(&self) -> &'static str;

    /// Queues a job; `(job, true)` when new. A job of the same owner with
    /// the same idempotency key is returned as it is, `(job, false)`.
    async fn submit(&self, job: NewJob, now_ms: i64) -> Result<(Job, bool), QueueError>;

    async fn get(&self, id: &str) -> Result<Option<Job>, QueueError>;

    /// Leases up to `limit` jobs for `worker` until `now_ms + lease_ms`:
    /// queued ones whose `run_after_ms` has come, and running ones whose
    /// lease expired, in strict priority order, FIFO within a priority.
    /// Each leased job's `attempts` grows by one. A queued job past its
    /// deadline is failed instead (`error` says so) and not leased.
    async fn lease(
        &self,
        worker: &str,
        limit: usize,
        lease_ms: i64,
        now_ms: i64,
    ) -> Result<Vec<Job>, QueueError>;

    /// Extends `worker`'s lease of job `id`; `false` if it lost the lease
    /// or the job was cancelled (the worker should stop).
    async fn heartbeat(
        &self,
        id: &str,
        worker: &str,
        lease_ms: i64,
        now_ms: i64,
    ) -> Result<bool, QueueError>;

    /// Records the result, if `worker` still holds the lease; `false` (and
    /// nothing changed) otherwise.
    async fn complete(
        &self,
        id: &str,
        worker: &str,
        result: &Value,
        now_ms: i64,
    ) -> Result<bool, QueueError>;

    /// [`Queue::complete`], then [`Queue::lease`] of up to `limit` jobs for
    /// the same worker (whether or not the completion took effect), in one
    /// step: one round trip on Redis, one transaction on SQLite. A worker
    /// that finished a job asks for its next one with it, as BullMQ's
    /// `moveToFinished` fetches the next job. `limit` 0 only completes.
    async fn complete_and_lease(
        &self,
        id: &str,
        worker: &str,
        result: &Value,
        limit: usize,
        lease_ms: i64,
        now_ms: i64,
    ) -> Result<(bool, Vec<Job>), QueueError>;

    /// Gives a leased job back without counting its attempt: queued again
    /// from `run_after_ms`, its error unchanged. For attempts that never
    /// ran (the node shut down, the owner's own rate limit said wait);
    /// `false` (and nothing changed) when `worker` does not hold the lease.
    async fn release(
        &self,
        id: &str,
        worker: &str,
        run_after_ms: i64,
        now_ms: i64,
    ) -> Result<bool, QueueError>;

    /// Records a failed attempt: queued again from `retry_at_ms` while
    /// attempts remain (and `retry_at_ms` is given), else a dead letter.
    async fn fail(
        &self,
        id: &str,
        worker: &str,
        error: &str,
        retry_at_ms: Option<i64>,
        now_ms: i64,
    ) -> Result<Failed, QueueError>;

    /// Cancels a queued or running job; returns it as it is now, `None`
    /// when there is no such job. A final job is returned unchanged.
    async fn cancel(&self, id: &str, now_ms: i64) -> Result<Option<Job>, QueueError>;

    async fn stats(&self, now_ms: i64) -> Result<QueueStats, QueueError>;

    /// Dead letters, oldest failure first.
    async fn dead_letters(&self, limit: usize) -> Result<Vec<Job>, QueueError>;

    /// Queues a dead letter again with a fresh set of attempts.
    async fn retry_dead(&self, id: &str, now_ms: i64) -> Result<Option<Job>, QueueError>;

    /// Deletes a dead letter; `false` when there is none with that id.
    async fn delete_dead(&self, id: &str) -> Result<bool, QueueError>;

    /// Records the webhook's delivery status on job `id`; `false` when
    /// there is no such job (it was purged).
    async fn set_webhook(&self, id: &str, status: &Value) -> Result<bool, QueueError>;

    /// Deletes completed and cancelled jobs that finished before
    /// `before_ms` (results are kept for a TTL); returns how many.
    async fn purge(&self, before_ms: i64) -> Result<u64, QueueError>;
}

#[cfg(test)]
mod tests;
