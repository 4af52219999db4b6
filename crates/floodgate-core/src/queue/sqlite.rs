//! The embedded queue backend: one SQLite file of its own in WAL mode (the
//! ledger's writes never wait for the queue's, nor the other way round).
//! Every change that reads before it writes runs in a `BEGIN IMMEDIATE`
//! transaction, so two workers never lease the same job.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, SqlSafeStr};

use super::{Failed, Job, JobStatus, MAX_PRIORITY, NewJob, Queue, QueueError, QueueStats};

const COLUMNS: &str = "seq, id, owner, idempotency_key, route, request, priority, status, dead, \
                       attempts, max_attempts, run_after_ms, lease_owner, lease_until_ms, \
                       deadline_ms, webhook_url, result, error, webhook, created_at_ms, \
                       started_at_ms, finished_at_ms";

#[derive(Debug, Clone)]
pub struct SqliteQueue {
    pool: SqlitePool,
}

fn failed(error: impl std::fmt::Display) -> QueueError {
    QueueError::Backend { backend: "sqlite", message: error.to_string() }
}

impl From<sqlx::Error> for QueueError {
    fn from(error: sqlx::Error) -> Self {
        failed(error)
    }
}

fn migrator() -> Migrator {
    Migrator::with_migrations(vec![Migration::new(
        1,
        "jobs".into(),
        MigrationType::Simple,
        include_str!("migrations/0001_jobs.sql").into_sql_str(),
        false,
    )])
}

impl SqliteQueue {
    /// Opens (creating if needed) and migrates `url`: `sqlite://path` or
    /// `sqlite::memory:`. The file must be the queue's own, not the store's.
    pub async fn open(url: &str) -> Result<SqliteQueue, QueueError> {
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(if in_memory {
                SqliteJournalMode::Memory
            } else {
                SqliteJournalMode::Wal
            })
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            // An in-memory database lives only as long as its one connection.
            .max_connections(if in_memory { 1 } else { 4 })
            .min_connections(u32::from(in_memory))
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await?;
        migrator().run(&pool).await.map_err(failed)?;
        Ok(SqliteQueue { pool })
    }

    /// Closes the pool (an in-memory queue is gone).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn begin(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Sqlite>, QueueError> {
        let mut conn = self.pool.acquire().await?;
        sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
        Ok(conn)
    }

    async fn job(&self, id: &str) -> Result<Option<Job>, QueueError> {
        let sql = format!("SELECT {COLUMNS} FROM jobs WHERE id = ?");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(&self.pool).await?;
        row.map(|r| job_from_row(&r).map(|(_, job)| job)).transpose()
    }
}

/// Ends a transaction begun with [`SqliteQueue::begin`]: commits when
/// `result` is a success, rolls back otherwise (the connection returns to
/// the pool with no transaction open).
async fn settle<T>(
    mut conn: sqlx::pool::PoolConnection<sqlx::Sqlite>,
    result: Result<T, QueueError>,
) -> Result<T, QueueError> {
    match result {
        Ok(value) => {
            sqlx::query("COMMIT").execute(&mut *conn).await?;
            Ok(value)
        }
        Err(error) => {
            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
            Err(error)
        }
    }
}

fn job_from_row(row: &SqliteRow) -> Result<(i64, Job), QueueError> {
    let json = |column: &str| -> Result<Option<Value>, QueueError> {
        let text: Option<String> = row.try_get(column)?;
        text.map(|t| serde_json::from_str(&t).map_err(failed)).transpose()
    };
    let status: String = row.try_get("status")?;
    let count = |column: &str| -> Result<u32, QueueError> {
        let v: i64 = row.try_get(column)?;
        u32::try_from(v).map_err(|_| failed(format!("{column} {v} is out of range")))
    };
    let priority: i64 = row.try_get("priority")?;
    Ok((
        row.try_get("seq")?,
        Job {
            id: row.try_get("id")?,
            owner: row.try_get("owner")?,
            route: row.try_get("route")?,
            request: json("request")?.unwrap_or(Value::Null),
            priority: u8::try_from(priority).unwrap_or(MAX_PRIORITY).min(MAX_PRIORITY),
            status: JobStatus::parse(&status)
                .ok_or_else(|| failed(format!("unknown job status {status:?}")))?,
            dead: row.try_get::<i64, _>("dead")? != 0,
            attempts: count("attempts")?,
            max_attempts: count("max_attempts")?,
            run_after_ms: row.try_get("run_after_ms")?,
            lease_owner: row.try_get("lease_owner")?,
            lease_until_ms: row.try_get("lease_until_ms")?,
            deadline_ms: row.try_get("deadline_ms")?,
            webhook_url: row.try_get("webhook_url")?,
            idempotency_key: row.try_get("idempotency_key")?,
            result: json("result")?,
            error: row.try_get("error")?,
            webhook: json("webhook")?,
            created_at_ms: row.try_get("created_at_ms")?,
            started_at_ms: row.try_get("started_at_ms")?,
            finished_at_ms: row.try_get("finished_at_ms")?,
        },
    ))
}

fn jobs_from_rows(rows: &[SqliteRow]) -> Result<Vec<Job>, QueueError> {
    let mut jobs = rows.iter().map(job_from_row).collect::<Result<Vec<_>, _>>()?;
    // RETURNING gives rows in no particular order: strict priority, then FIFO.
    jobs.sort_by(|(seq_a, a), (seq_b, b)| b.priority.cmp(&a.priority).then(seq_a.cmp(seq_b)));
    Ok(jobs.into_iter().map(|(_, job)| job).collect())
}

/// The lease of [`Queue::lease`], in the transaction open on `conn`.
async fn lease_in(
    conn: &mut sqlx::SqliteConnection,
    worker: &str,
    limit: usize,
    lease_ms: i64,
    now_ms: i64,
) -> Result<Vec<Job>, QueueError> {
    // Queued jobs whose deadline passed never start.
    sqlx::query(
        "UPDATE jobs SET status = 'failed', finished_at_ms = ?, \
             error = 'the deadline passed before the job could start' \
             WHERE status = 'queued' AND deadline_ms IS NOT NULL AND deadline_ms < ?",
    )
    .bind(now_ms)
    .bind(now_ms)
    .execute(&mut *conn)
    .await?;
    // A lease that expired on the last attempt: its worker stopped.
    sqlx::query(
            "UPDATE jobs SET status = 'failed', dead = 1, finished_at_ms = ?, \
             lease_owner = NULL, lease_until_ms = NULL, \
             error = COALESCE(error || '; ', '') || 'the lease of the last attempt expired (its worker stopped)' \
             WHERE status = 'running' AND lease_until_ms < ? AND attempts >= max_attempts",
        )
        .bind(now_ms)
        .bind(now_ms)
        .execute(&mut *conn)
        .await?;
    let sql = format!(
        "UPDATE jobs SET status = 'running', lease_owner = ?, lease_until_ms = ?, \
             attempts = attempts + 1, started_at_ms = COALESCE(started_at_ms, ?) \
             WHERE seq IN (SELECT seq FROM jobs \
               WHERE (status = 'queued' AND run_after_ms <= ?) \
                  OR (status = 'running' AND lease_until_ms < ?) \
               ORDER BY priority DESC, seq LIMIT ?) \
             RETURNING {COLUMNS}"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(worker)
        .bind(now_ms.saturating_add(lease_ms))
        .bind(now_ms)
        .bind(now_ms)
        .bind(now_ms)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *conn)
        .await?;
    jobs_from_rows(&rows)
}

/// The completion of [`Queue::complete`] on `conn`; `true` when it took effect.
async fn complete_in(
    conn: &mut sqlx::SqliteConnection,
    id: &str,
    worker: &str,
    result: &Value,
    now_ms: i64,
) -> Result<bool, QueueError> {
    let done = sqlx::query(
        "UPDATE jobs SET status = 'completed', result = ?, error = NULL, finished_at_ms = ?, \
         lease_owner = NULL, lease_until_ms = NULL \
         WHERE id = ? AND status = 'running' AND lease_owner = ?",
    )
    .bind(result.to_string())
    .bind(now_ms)
    .bind(id)
    .bind(worker)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

#[async_trait]
impl Queue for SqliteQueue {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    async fn submit(&self, job: NewJob, now_ms: i64) -> Result<(Job, bool), QueueError> {
        let mut conn = self.begin().await?;
        let result = async {
            if let Some(key) = &job.idempotency_key {
                let sql = format!(
                    "SELECT {COLUMNS} FROM jobs WHERE COALESCE(owner, '') = ? AND idempotency_key = ?"
                );
                let existing = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(job.owner.clone().unwrap_or_default())
                    .bind(key)
                    .fetch_optional(&mut *conn)
                    .await?;
                if let Some(row) = existing {
                    return Ok((job_from_row(&row)?.1, false));
                }
            }
            let sql = format!(
                "INSERT INTO jobs (id, owner, idempotency_key, route, request, priority, status, \
                 max_attempts, run_after_ms, deadline_ms, webhook_url, created_at_ms) \
                 VALUES (?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?) RETURNING {COLUMNS}"
            );
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(&job.id)
                .bind(&job.owner)
                .bind(&job.idempotency_key)
                .bind(&job.route)
                .bind(job.request.to_string())
                .bind(i64::from(job.priority.min(MAX_PRIORITY)))
                .bind(i64::from(job.max_attempts.max(1)))
                .bind(now_ms)
                .bind(job.deadline_ms)
                .bind(&job.webhook_url)
                .bind(now_ms)
                .fetch_one(&mut *conn)
                .await
                .map_err(|e| match &e {
                    sqlx::Error::Database(db) if db.is_unique_violation() => {
                        QueueError::Duplicate(job.id.clone())
                    }
                    _ => failed(e),
                })?;
            Ok((job_from_row(&row)?.1, true))
        }
        .await;
        settle(conn, result).await
    }

    async fn get(&self, id: &str) -> Result<Option<Job>, QueueError> {
        self.job(id).await
    }

    async fn lease(
        &self,
        worker: &str,
        limit: usize,
        lease_ms: i64,
        now_ms: i64,
    ) -> Result<Vec<Job>, QueueError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.begin().await?;
        let result = lease_in(&mut conn, worker, limit, lease_ms, now_ms).await;
        settle(conn, result).await
    }

    async fn heartbeat(
        &self,
        id: &str,
        worker: &str,
        lease_ms: i64,
        now_ms: i64,
    ) -> Result<bool, QueueError> {
        let done = sqlx::query(
            "UPDATE jobs SET lease_until_ms = ? \
             WHERE id = ? AND status = 'running' AND lease_owner = ?",
        )
        .bind(now_ms.saturating_add(lease_ms))
        .bind(id)
        .bind(worker)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn complete(
        &self,
        id: &str,
        worker: &str,
        result: &Value,
        now_ms: i64,
    ) -> Result<bool, QueueError> {
        let mut conn = self.pool.acquire().await?;
        complete_in(&mut conn, id, worker, result, now_ms).await
    }

    async fn complete_and_lease(
        &self,
        id: &str,
        worker: &str,
        result: &Value,
        limit: usize,
        lease_ms: i64,
        now_ms: i64,
    ) -> Result<(bool, Vec<Job>), QueueError> {
        let mut conn = self.begin().await?;
        let result = async {
            let done = complete_in(&mut conn, id, worker, result, now_ms).await?;
            let jobs = if limit == 0 {
                Vec::new()
            } else {
                lease_in(&mut conn, worker, limit, lease_ms, now_ms).await?
            };
            Ok((done, jobs))
        }
        .await;
        settle(conn, result).await
    }

    async fn fail(
        &self,
        id: &str,
        worker: &str,
        error: &str,
        retry_at_ms: Option<i64>,
        now_ms: i64,
    ) -> Result<Failed, QueueError> {
        let mut conn = self.begin().await?;
        let result = async {
            let row = sqlx::query(
                "SELECT attempts, max_attempts FROM jobs \
                 WHERE id = ? AND status = 'running' AND lease_owner = ?",
            )
            .bind(id)
            .bind(worker)
            .fetch_optional(&mut *conn)
            .await?;
            let Some(row) = row else { return Ok(Failed::NotLeased) };
            let attempts: i64 = row.try_get("attempts")?;
            let max_attempts: i64 = row.try_get("max_attempts")?;
            match retry_at_ms {
                Some(run_after_ms) if attempts < max_attempts => {
                    sqlx::query(
                        "UPDATE jobs SET status = 'queued', run_after_ms = ?, error = ?, \
                         lease_owner = NULL, lease_until_ms = NULL WHERE id = ?",
                    )
                    .bind(run_after_ms)
                    .bind(error)
                    .bind(id)
                    .execute(&mut *conn)
                    .await?;
                    Ok(Failed::Retrying { run_after_ms })
                }
                _ => {
                    sqlx::query(
                        "UPDATE jobs SET status = 'failed', dead = 1, error = ?, finished_at_ms = ?, \
                         lease_owner = NULL, lease_until_ms = NULL WHERE id = ?",
                    )
                    .bind(error)
                    .bind(now_ms)
                    .bind(id)
                    .execute(&mut *conn)
                    .await?;
                    Ok(Failed::Dead)
                }
            }
        }
        .await;
        settle(conn, result).await
    }

    async fn release(
        &self,
        id: &str,
        worker: &str,
        run_after_ms: i64,
        _now_ms: i64,
    ) -> Result<bool, QueueError> {
        let done = sqlx::query(
            "UPDATE jobs SET status = 'queued', run_after_ms = ?, attempts = MAX(attempts - 1, 0), \
             lease_owner = NULL, lease_until_ms = NULL \
             WHERE id = ? AND status = 'running' AND lease_owner = ?",
        )
        .bind(run_after_ms)
        .bind(id)
        .bind(worker)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn cancel(&self, id: &str, now_ms: i64) -> Result<Option<Job>, QueueError> {
        sqlx::query(
            "UPDATE jobs SET status = 'cancelled', finished_at_ms = ?, lease_owner = NULL, \
             lease_until_ms = NULL WHERE id = ? AND status IN ('queued', 'running')",
        )
        .bind(now_ms)
        .bind(id)
        .execute(&self.pool)
        .await?;
        self.job(id).await
    }

    async fn stats(&self, now_ms: i64) -> Result<QueueStats, QueueError> {
        let mut stats = QueueStats::default();
        let rows = sqlx::query(
            "SELECT priority, COUNT(*) AS n FROM jobs WHERE status = 'queued' GROUP BY priority",
        )
        .fetch_all(&self.pool)
        .await?;
        for row in rows {
            let priority: i64 = row.try_get("priority")?;
            let n: i64 = row.try_get("n")?;
            let slot = usize::try_from(priority).unwrap_or(0).min(usize::from(MAX_PRIORITY));
            stats.pending[slot] += u64::try_from(n).unwrap_or(0);
        }
        let rows = sqlx::query(
            "SELECT status, dead, COUNT(*) AS n FROM jobs WHERE status != 'queued' \
             GROUP BY status, dead",
        )
        .fetch_all(&self.pool)
        .await?;
        for row in rows {
            let status: String = row.try_get("status")?;
            let dead = row.try_get::<i64, _>("dead")? != 0;
            let n = u64::try_from(row.try_get::<i64, _>("n")?).unwrap_or(0);
            match JobStatus::parse(&status) {
                Some(JobStatus::Running) => stats.running += n,
                Some(JobStatus::Completed) => stats.completed += n,
                Some(JobStatus::Failed) => {
                    stats.failed += n;
                    if dead {
                        stats.dead += n;
                    }
                }
                Some(JobStatus::Cancelled) => stats.cancelled += n,
                Some(JobStatus::Queued) | None => {}
            }
        }
        let oldest: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(run_after_ms) FROM jobs WHERE status = 'queued' AND run_after_ms <= ?",
        )
        .bind(now_ms)
        .fetch_one(&self.pool)
        .await?;
        stats.oldest_wait_ms = oldest.map(|t| now_ms.saturating_sub(t));
        Ok(stats)
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<Job>, QueueError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM jobs WHERE dead = 1 ORDER BY finished_at_ms, seq LIMIT ?"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| job_from_row(r).map(|(_, job)| job)).collect()
    }

    async fn retry_dead(&self, id: &str, now_ms: i64) -> Result<Option<Job>, QueueError> {
        let sql = format!(
            "UPDATE jobs SET status = 'queued', dead = 0, attempts = 0, run_after_ms = ?, \
             finished_at_ms = NULL WHERE id = ? AND dead = 1 RETURNING {COLUMNS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now_ms)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| job_from_row(&r).map(|(_, job)| job)).transpose()
    }

    async fn delete_dead(&self, id: &str) -> Result<bool, QueueError> {
        let done = sqlx::query("DELETE FROM jobs WHERE id = ? AND dead = 1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn set_webhook(&self, id: &str, status: &Value) -> Result<bool, QueueError> {
        let done = sqlx::query("UPDATE jobs SET webhook = ? WHERE id = ?")
            .bind(status.to_string())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn purge(&self, before_ms: i64) -> Result<u64, QueueError> {
        let done = sqlx::query(
            "DELETE FROM jobs WHERE dead = 0 AND status IN ('completed', 'failed', 'cancelled') \
             AND finished_at_ms < ?",
        )
        .bind(before_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}
