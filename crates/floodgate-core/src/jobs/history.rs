//! The job history: every completed or cancelled job is written to the
//! store, PostgreSQL in a cluster and SQLite on one node, so
//! `GET /v1/jobs/{id}` still answers after the queue has forgotten the job
//! (`[queue] result_ttl`), and while the queue does not answer. (Failed
//! jobs are dead letters, which the queue keeps until an operator retries
//! or deletes them.) Records are deleted `[queue] history_ttl` after their
//! job finished (every node tries every ten minutes; the delete is the
//! same whoever runs it).
//!
//! Off the job's path: finished jobs go through a bounded channel to one
//! writer task, which writes what it has every [`FLUSH_EVERY`] in one
//! transaction. While the store fails it keeps them (up to [`PENDING`]) and
//! tries again; beyond that bound the oldest are dropped with an error
//! line. The queue keeps each job for `result_ttl` anyway, so a record that
//! waits hides nothing from a client meanwhile.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::queue::Job;
use crate::store::{JobRecord, Store};

const FLUSH_EVERY: Duration = Duration::from_millis(250);
/// How often records past `[queue] history_ttl` are deleted.
const PURGE_EVERY: Duration = Duration::from_secs(600);
/// Finished jobs held while the store does not answer.
const PENDING: usize = 100_000;

#[derive(Debug, Clone)]
pub struct History {
    tx: mpsc::Sender<JobRecord>,
}

#[derive(Debug)]
pub struct HistoryWriter {
    rx: mpsc::Receiver<JobRecord>,
    store: Arc<dyn Store>,
    /// Records are deleted this long after their job finished; zero keeps them.
    ttl: Duration,
}

impl History {
    pub fn new(store: Arc<dyn Store>, ttl: Duration) -> (History, HistoryWriter) {
        let (tx, rx) = mpsc::channel(PENDING);
        (History { tx }, HistoryWriter { rx, store, ttl })
    }

    /// Records `job` as it ended (its status, result or error).
    pub fn record(&self, job: &Job) {
        let record = JobRecord {
            id: job.id.clone(),
            owner: job.owner.clone(),
            status: job.status.as_str().to_string(),
            finished_at_ms: job.finished_at_ms.unwrap_or_else(crate::time::now_ms),
            view: super::view(job).to_string(),
        };
        if self.tx.try_send(record).is_err() {
            tracing::error!(job = %job.id, "the job history is full (the database has not answered for long); this job is not kept past result_ttl");
        }
    }
}

impl HistoryWriter {
    /// Writes until `shutdown`, then once more with what is left.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut batch: Vec<JobRecord> = Vec::new();
        let mut failing = false;
        let mut purged = tokio::time::Instant::now();
        loop {
            let stopping = tokio::select! {
                biased;
                () = shutdown.cancelled() => true,
                () = tokio::time::sleep(FLUSH_EVERY) => false,
            };
            while batch.len() < PENDING {
                match self.rx.try_recv() {
                    Ok(record) => batch.push(record),
                    Err(_) => break,
                }
            }
            if !batch.is_empty() {
                match tokio::time::timeout(Duration::from_secs(2), self.store.record_jobs(&batch))
                    .await
                {
                    Ok(Ok(())) => {
                        if failing {
                            tracing::info!("the job history is written again");
                        }
                        failing = false;
                        batch.clear();
                    }
                    outcome => {
                        if !failing {
                            let error = match outcome {
                                Ok(Err(error)) => error.to_string(),
                                _ => "no answer in 2s".to_string(),
                            };
                            tracing::warn!(%error, jobs = batch.len(), "cannot write the job history; keeping the jobs to try again");
                        }
                        failing = true;
                    }
                }
            }
            if stopping {
                return;
            }
            if !self.ttl.is_zero() && purged.elapsed() >= PURGE_EVERY {
                purged = tokio::time::Instant::now();
                let before = crate::time::now_ms() - self.ttl.as_millis() as i64;
                match self.store.purge_jobs(before).await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(jobs = n, "purged the job history"),
                    Err(error) => tracing::warn!(%error, "cannot purge the job history"),
                }
            }
        }
    }
}
