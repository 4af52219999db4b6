//! The embedded queue backend: one SQLite file of its own in WAL mode (the
//! ledger's writes never wait for the queue's, nor the other way round).
//! Every change is one statement where it can be: a statement is atomic
//! (SQLite takes the write lock before it reads), so two workers never
//! lease the same job; a lease, completion and all, is one. What must read
//! before it writes in two (a submission with an idempotency key) runs in
//! a `BEGIN IMMEDIATE` transaction.
//!
//! This process writes on one connection of its own, its writes taking
//! turns on an in-process lock around it: SQLite has one writer at a time,
//! and connections that find the database locked wait in its busy handler,
//! which sleeps and tries again, so the writers of one process would be
//! ordered by ms-scale sleeps, and one could be passed over until its busy
//! timeout ran out. The busy timeout stays for other processes. One writer
//! connection also keeps its page cache (a connection drops its cache when
//! it finds that another one wrote) and its prepared statements warm. Reads
//! run beside it on a pool of their own (WAL); in memory, where the one
//! connection is the database, they take their turn on the writer's.
//!
//! Every statement is answered from an index (a test checks their query
//! plans): the ones that find work use partial indexes of queued or
//! running jobs only, and the counts of `stats` are kept in a table of
//! their own, so the finished jobs kept for their TTL cost nothing.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{Sqlite, SqlitePool, SqlitePoolOptions, SqliteRow};
use sqlx::{ConnectOptions, Connection, Row, SqlSafeStr, SqliteConnection};
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};

use super::{Failed, Job, JobStatus, MAX_PRIORITY, NewJob, Queue, QueueError, QueueStats};

/// A job's columns, as [`job_from_row`] reads them (a macro, so that the
/// statements below are constants).
macro_rules! columns {
    () => {
        "seq, id, owner, idempotency_key, route, request, priority, status, dead, attempts, \
         max_attempts, run_after_ms, lease_owner, lease_until_ms, deadline_ms, webhook_url, \
         result, error, webhook, created_at_ms, started_at_ms, finished_at_ms"
    };
}

const GET: &str = concat!("SELECT ", columns!(), " FROM jobs WHERE id = ?1");

const FIND_IDEMPOTENT: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM jobs WHERE COALESCE(owner, '') = ?1 AND idempotency_key = ?2"
);

const INSERT: &str = concat!(
    "INSERT INTO jobs (id, owner, idempotency_key, route, request, priority, status, \
     max_attempts, run_after_ms, deadline_ms, webhook_url, created_at_ms) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'queued', ?7, ?8, ?9, ?10, ?8) RETURNING ",
    columns!()
);

/// A lease, in one statement (one round trip to SQLite's thread, one
/// commit): up to `limit` jobs for worker `?1`, leased until `?2`, at `?3`
/// = now, after the steps that come before it. Each row it changes is one
/// step of [`Queue::complete_and_lease`], named in `todo.step`:
///
/// - `complete`: job `?5` (none when `?5` is NULL) completes with result
///   `?4`, if `?1` holds its lease;
/// - `deadline`: a queued job whose deadline passed never starts;
/// - `expire`: a lease that expired on the last attempt is a dead letter
///   (its worker stopped);
/// - `lease`: the best `limit` queued jobs that may run (read in order
///   from `jobs_queued`) and the best `limit` expired leases (from
///   `jobs_leased`, sorted: there are few) are merged, and the best
///   `limit` of both leased, so strict priority then FIFO holds across
///   the two.
///
/// The steps take disjoint rows (a row the join meets twice would take one
/// of them at random): `lease` passes over what `deadline` and `expire`
/// take, as it would after them, and `expire` and `lease` pass over the
/// job `complete` takes, as they would after it. `RETURNING` gives every
/// row changed; their status tells the steps apart.
///
/// The limit is written into the statement, not bound: SQLite plans for
/// the value bound to a `LIMIT`, so a statement whose `LIMIT` is a
/// parameter is prepared again each time it is bound. This way each limit
/// a worker asks for is one statement, prepared once.
fn lease_sql(limit: usize) -> String {
    format!(
        concat!(
            "UPDATE jobs SET \
               status = CASE todo.step WHEN 'lease' THEN 'running' \
                 WHEN 'complete' THEN 'completed' ELSE 'failed' END, \
               dead = CASE todo.step WHEN 'expire' THEN 1 ELSE dead END, \
               attempts = attempts + (todo.step = 'lease'), \
               lease_owner = CASE todo.step WHEN 'lease' THEN ?1 END, \
               lease_until_ms = CASE todo.step WHEN 'lease' THEN ?2 END, \
               started_at_ms = CASE todo.step WHEN 'lease' THEN COALESCE(started_at_ms, ?3) \
                 ELSE started_at_ms END, \
               finished_at_ms = CASE todo.step WHEN 'lease' THEN finished_at_ms ELSE ?3 END, \
               result = CASE todo.step WHEN 'complete' THEN ?4 ELSE result END, \
               error = CASE todo.step WHEN 'complete' THEN NULL \
                 WHEN 'deadline' THEN 'the deadline passed before the job could start' \
                 WHEN 'expire' THEN COALESCE(error || '; ', '') \
                   || 'the lease of the last attempt expired (its worker stopped)' \
                 ELSE error END \
             FROM ( \
               SELECT seq, 'complete' AS step FROM jobs \
                 WHERE id = ?5 AND status = 'running' AND lease_owner = ?1 \
               UNION ALL \
               SELECT seq, 'deadline' FROM jobs \
                 WHERE status = 'queued' AND deadline_ms IS NOT NULL AND deadline_ms < ?3 \
               UNION ALL \
               SELECT seq, 'expire' FROM jobs \
                 WHERE status = 'running' AND lease_until_ms < ?3 \
                   AND attempts >= max_attempts AND (id IS NOT ?5 OR lease_owner IS NOT ?1) \
               UNION ALL \
               SELECT seq, 'lease' FROM ( \
                 SELECT seq, priority FROM (SELECT seq, priority FROM jobs \
                   WHERE status = 'queued' AND run_after_ms <= ?3 \
                     AND (deadline_ms IS NULL OR deadline_ms >= ?3) \
                   ORDER BY priority DESC, seq LIMIT {limit}) \
                 UNION ALL \
                 SELECT seq, priority FROM (SELECT seq, priority FROM jobs \
                   WHERE status = 'running' AND lease_until_ms < ?3 \
                     AND attempts < max_attempts AND (id IS NOT ?5 OR lease_owner IS NOT ?1) \
                   ORDER BY priority DESC, seq LIMIT {limit}) \
                 ORDER BY priority DESC, seq LIMIT {limit}) \
             ) AS todo \
             WHERE jobs.seq = todo.seq \
             RETURNING ",
            columns!()
        ),
        limit = limit_arg(limit)
    )
}

const COMPLETE: &str = "UPDATE jobs SET status = 'completed', result = ?1, error = NULL, \
     finished_at_ms = ?2, lease_owner = NULL, lease_until_ms = NULL \
     WHERE id = ?3 AND status = 'running' AND lease_owner = ?4";

const HEARTBEAT: &str = "UPDATE jobs SET lease_until_ms = ?1 \
     WHERE id = ?2 AND status = 'running' AND lease_owner = ?3";

const RELEASE: &str = "UPDATE jobs SET status = 'queued', run_after_ms = ?1, \
     attempts = MAX(attempts - 1, 0), lease_owner = NULL, lease_until_ms = NULL \
     WHERE id = ?2 AND status = 'running' AND lease_owner = ?3";

/// A failed attempt of job `?1` under worker `?2`'s lease, error `?3`:
/// queued again from `?4` while attempts remain and `?4` is given, else a
/// dead letter finished at `?5`. One statement: no read before the write.
const FAIL: &str = "UPDATE jobs SET \
     status = CASE WHEN ?4 IS NOT NULL AND attempts < max_attempts THEN 'queued' ELSE 'failed' END, \
     dead = CASE WHEN ?4 IS NOT NULL AND attempts < max_attempts THEN dead ELSE 1 END, \
     run_after_ms = CASE WHEN ?4 IS NOT NULL AND attempts < max_attempts THEN ?4 ELSE run_after_ms END, \
     finished_at_ms = CASE WHEN ?4 IS NOT NULL AND attempts < max_attempts THEN finished_at_ms ELSE ?5 END, \
     error = ?3, lease_owner = NULL, lease_until_ms = NULL \
     WHERE id = ?1 AND status = 'running' AND lease_owner = ?2 \
     RETURNING status";

const CANCEL: &str = concat!(
    "UPDATE jobs SET status = 'cancelled', finished_at_ms = ?1, lease_owner = NULL, \
     lease_until_ms = NULL WHERE id = ?2 AND status IN ('queued', 'running') RETURNING ",
    columns!()
);

const COUNTS: &str = "SELECT status, dead, priority, n FROM job_counts WHERE n != 0";

const OLDEST: &str =
    "SELECT MIN(run_after_ms) FROM jobs WHERE status = 'queued' AND run_after_ms <= ?1";

/// Its `LIMIT` is bound (see [`lease_sql`]): an admin's call, seldom made.
const DEAD_LETTERS: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM jobs WHERE dead = 1 ORDER BY finished_at_ms, seq LIMIT ?1"
);

const RETRY_DEAD: &str = concat!(
    "UPDATE jobs SET status = 'queued', dead = 0, attempts = 0, run_after_ms = ?1, \
     finished_at_ms = NULL WHERE id = ?2 AND dead = 1 RETURNING ",
    columns!()
);

const DELETE_DEAD: &str = "DELETE FROM jobs WHERE id = ?1 AND dead = 1";

const SET_WEBHOOK: &str = "UPDATE jobs SET webhook = ?1 WHERE id = ?2";

const PURGE: &str = "DELETE FROM jobs WHERE dead = 0 AND finished_at_ms IS NOT NULL \
     AND finished_at_ms < ?1 AND status IN ('completed', 'failed', 'cancelled')";

#[derive(Debug, Clone)]
pub struct SqliteQueue {
    /// The connection this process writes on; `None` once closed. Its lock
    /// is each write's turn: they take turns in the order they came.
    writer: Arc<Mutex<Option<Writer>>>,
    /// Connections to read on beside the writer; `None` in memory.
    reads: Option<SqlitePool>,
}

#[derive(Debug)]
struct Writer {
    conn: SqliteConnection,
    /// A transaction was begun and not ended: its future was dropped
    /// before it committed. The next turn rolls it back.
    open: bool,
}

/// The writer, this process's turn to write held with it.
type Turn<'a> = MappedMutexGuard<'a, Writer>;

/// A connection to read on: one of the pool, or in memory the writer's.
enum Reader<'a> {
    Pool(PoolConnection<Sqlite>),
    Writer(Turn<'a>),
}

impl Deref for Reader<'_> {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        match self {
            Reader::Pool(conn) => conn,
            Reader::Writer(turn) => &turn.conn,
        }
    }
}

impl DerefMut for Reader<'_> {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        match self {
            Reader::Pool(conn) => conn,
            Reader::Writer(turn) => &mut turn.conn,
        }
    }
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

fn limit_arg(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

impl SqliteQueue {
    /// Opens (creating if needed) and migrates `url`: `sqlite://path` or
    /// `sqlite::memory:`. The file must be the queue's own, not the store's.
    pub async fn open(url: &str) -> Result<SqliteQueue, QueueError> {
        // Its busy timeout is for other processes' writes: this one's take
        // turns on `writer`.
        let (options, in_memory) = crate::store::sqlite::connect_options(url)?;
        let mut conn = options.connect().await?;
        migrator().run(&mut conn).await.map_err(failed)?;
        let reads = if in_memory {
            // An in-memory database is its one connection's.
            None
        } else {
            // Opened now and kept open: a read never waits for a connection
            // to be opened (nor fails to open one once the file is gone).
            let pool = SqlitePoolOptions::new()
                .max_connections(3)
                .min_connections(3)
                .idle_timeout(None)
                .max_lifetime(None)
                // A local file's connection does not go stale: no ping first.
                .test_before_acquire(false)
                .connect_with(options)
                .await?;
            Some(pool)
        };
        let writer = Writer { conn, open: false };
        Ok(SqliteQueue { writer: Arc::new(Mutex::new(Some(writer))), reads })
    }

    /// Closes the connections (an in-memory queue is gone); every call
    /// after this fails.
    pub async fn close(&self) {
        if let Some(pool) = &self.reads {
            pool.close().await;
        }
        // The last one closed: it checkpoints the WAL into the file.
        if let Some(writer) = self.writer.lock().await.take() {
            let _ = writer.conn.close().await;
        }
    }

    /// This process's turn to write, on the writer.
    async fn turn(&self) -> Result<Turn<'_>, QueueError> {
        let writer = self.writer.lock().await;
        let mut turn = MutexGuard::try_map(writer, Option::as_mut)
            .map_err(|_| failed("the queue is closed"))?;
        if turn.open {
            // Not committed, so undone (an error: it was not open after all).
            let _ = sqlx::query("ROLLBACK").execute(&mut turn.conn).await;
            turn.open = false;
        }
        Ok(turn)
    }

    /// A write transaction (`BEGIN IMMEDIATE`) on the writer; end it with
    /// [`settle`], keeping the turn until then.
    async fn begin(&self) -> Result<Turn<'_>, QueueError> {
        let mut turn = self.turn().await?;
        turn.open = true;
        sqlx::query("BEGIN IMMEDIATE").execute(&mut turn.conn).await?;
        Ok(turn)
    }

    async fn reader(&self) -> Result<Reader<'_>, QueueError> {
        Ok(match &self.reads {
            Some(pool) => Reader::Pool(pool.acquire().await?),
            None => Reader::Writer(self.turn().await?),
        })
    }

    async fn job(&self, id: &str) -> Result<Option<Job>, QueueError> {
        let mut conn = self.reader().await?;
        let row = sqlx::query(GET).bind(id).fetch_optional(&mut *conn).await?;
        row.map(|r| job_from_row(&r).map(|(_, job)| job)).transpose()
    }
}

/// Ends a transaction begun with [`SqliteQueue::begin`]: commits when
/// `result` is a success, rolls back otherwise.
async fn settle<T>(mut turn: Turn<'_>, result: Result<T, QueueError>) -> Result<T, QueueError> {
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    let ended = sqlx::query(end).execute(&mut turn.conn).await;
    match (result, ended) {
        (Ok(value), Ok(_)) => {
            turn.open = false;
            Ok(value)
        }
        (Ok(_), Err(error)) => {
            // The commit failed: undone now, else at the next turn.
            let undone = sqlx::query("ROLLBACK").execute(&mut turn.conn).await;
            turn.open = undone.is_err();
            Err(error.into())
        }
        (Err(error), ended) => {
            turn.open = ended.is_err();
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

/// [`lease_sql`] for `worker`, after completing job `complete` (a job
/// id and its result) if given: whether it completed, and the jobs leased.
async fn lease_on(
    conn: &mut SqliteConnection,
    worker: &str,
    complete: Option<(&str, &Value)>,
    limit: usize,
    lease_ms: i64,
    now_ms: i64,
) -> Result<(bool, Vec<Job>), QueueError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(lease_sql(limit)))
        .bind(worker)
        .bind(now_ms.saturating_add(lease_ms))
        .bind(now_ms)
        .bind(complete.map(|(_, result)| result.to_string()))
        .bind(complete.map(|(id, _)| id))
        .fetch_all(&mut *conn)
        .await?;
    let mut completed = false;
    let mut leased = Vec::with_capacity(rows.len());
    for row in &rows {
        let (seq, job) = job_from_row(row)?;
        match job.status {
            JobStatus::Running => leased.push((seq, job)),
            JobStatus::Completed => completed = true,
            // Past its deadline, or its last lease expired.
            _ => {}
        }
    }
    // RETURNING gives rows in no particular order: strict priority, then FIFO.
    leased.sort_by(|(seq_a, a), (seq_b, b)| b.priority.cmp(&a.priority).then(seq_a.cmp(seq_b)));
    Ok((completed, leased.into_iter().map(|(_, job)| job).collect()))
}

/// The completion of [`Queue::complete`] on `conn`; `true` when it took effect.
async fn complete_in(
    conn: &mut SqliteConnection,
    id: &str,
    worker: &str,
    result: &Value,
    now_ms: i64,
) -> Result<bool, QueueError> {
    let done = sqlx::query(COMPLETE)
        .bind(result.to_string())
        .bind(now_ms)
        .bind(id)
        .bind(worker)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// [`INSERT`]s `job`.
async fn insert(conn: &mut SqliteConnection, job: &NewJob, now_ms: i64) -> Result<Job, QueueError> {
    let row = sqlx::query(INSERT)
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
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                QueueError::Duplicate(job.id.clone())
            }
            _ => failed(e),
        })?;
    Ok(job_from_row(&row)?.1)
}

/// The rows of [`COUNTS`] and the oldest wait's start, on `conn`.
async fn counts_on(
    conn: &mut SqliteConnection,
    now_ms: i64,
) -> Result<(Vec<SqliteRow>, Option<i64>), QueueError> {
    let rows = sqlx::query(COUNTS).fetch_all(&mut *conn).await?;
    let oldest = sqlx::query_scalar(OLDEST).bind(now_ms).fetch_one(&mut *conn).await?;
    Ok((rows, oldest))
}

#[async_trait]
impl Queue for SqliteQueue {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    async fn submit(&self, job: NewJob, now_ms: i64) -> Result<(Job, bool), QueueError> {
        let Some(key) = &job.idempotency_key else {
            // Nothing to read first: one statement.
            let mut turn = self.turn().await?;
            return Ok((insert(&mut turn.conn, &job, now_ms).await?, true));
        };
        let mut turn = self.begin().await?;
        let submitted = async {
            let existing = sqlx::query(FIND_IDEMPOTENT)
                .bind(job.owner.clone().unwrap_or_default())
                .bind(key)
                .fetch_optional(&mut turn.conn)
                .await?;
            Ok(match existing {
                Some(row) => (job_from_row(&row)?.1, false),
                None => (insert(&mut turn.conn, &job, now_ms).await?, true),
            })
        }
        .await;
        settle(turn, submitted).await
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
        let mut turn = self.turn().await?;
        Ok(lease_on(&mut turn.conn, worker, None, limit, lease_ms, now_ms).await?.1)
    }

    async fn heartbeat(
        &self,
        id: &str,
        worker: &str,
        lease_ms: i64,
        now_ms: i64,
    ) -> Result<bool, QueueError> {
        let mut turn = self.turn().await?;
        let done = sqlx::query(HEARTBEAT)
            .bind(now_ms.saturating_add(lease_ms))
            .bind(id)
            .bind(worker)
            .execute(&mut turn.conn)
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
        let mut turn = self.turn().await?;
        complete_in(&mut turn.conn, id, worker, result, now_ms).await
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
        let mut turn = self.turn().await?;
        if limit == 0 {
            return Ok((
                complete_in(&mut turn.conn, id, worker, result, now_ms).await?,
                Vec::new(),
            ));
        }
        lease_on(&mut turn.conn, worker, Some((id, result)), limit, lease_ms, now_ms).await
    }

    async fn fail(
        &self,
        id: &str,
        worker: &str,
        error: &str,
        retry_at_ms: Option<i64>,
        now_ms: i64,
    ) -> Result<Failed, QueueError> {
        let mut turn = self.turn().await?;
        let status: Option<String> = sqlx::query_scalar(FAIL)
            .bind(id)
            .bind(worker)
            .bind(error)
            .bind(retry_at_ms)
            .bind(now_ms)
            .fetch_optional(&mut turn.conn)
            .await?;
        Ok(match (status.as_deref(), retry_at_ms) {
            (None, _) => Failed::NotLeased,
            (Some("queued"), Some(run_after_ms)) => Failed::Retrying { run_after_ms },
            _ => Failed::Dead,
        })
    }

    async fn release(
        &self,
        id: &str,
        worker: &str,
        run_after_ms: i64,
        _now_ms: i64,
    ) -> Result<bool, QueueError> {
        let mut turn = self.turn().await?;
        let done = sqlx::query(RELEASE)
            .bind(run_after_ms)
            .bind(id)
            .bind(worker)
            .execute(&mut turn.conn)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn cancel(&self, id: &str, now_ms: i64) -> Result<Option<Job>, QueueError> {
        let mut turn = self.turn().await?;
        let mut row =
            sqlx::query(CANCEL).bind(now_ms).bind(id).fetch_optional(&mut turn.conn).await?;
        if row.is_none() {
            // Final already, or no such job: as it is.
            row = sqlx::query(GET).bind(id).fetch_optional(&mut turn.conn).await?;
        }
        row.map(|r| job_from_row(&r).map(|(_, job)| job)).transpose()
    }

    async fn stats(&self, now_ms: i64) -> Result<QueueStats, QueueError> {
        let (rows, oldest) = match &self.reads {
            Some(pool) => {
                // One read transaction: the counts and the oldest wait of one moment.
                let mut tx = pool.begin().await?;
                let counts = counts_on(&mut tx, now_ms).await?;
                tx.commit().await?;
                counts
            }
            // No write runs beside this one.
            None => counts_on(&mut self.turn().await?.conn, now_ms).await?,
        };
        let mut stats = QueueStats::default();
        for row in rows {
            let status: String = row.try_get("status")?;
            let dead = row.try_get::<i64, _>("dead")? != 0;
            let priority: i64 = row.try_get("priority")?;
            let n = u64::try_from(row.try_get::<i64, _>("n")?).unwrap_or(0);
            match JobStatus::parse(&status) {
                Some(JobStatus::Queued) => {
                    let slot =
                        usize::try_from(priority).unwrap_or(0).min(usize::from(MAX_PRIORITY));
                    stats.pending[slot] += n;
                }
                Some(JobStatus::Running) => stats.running += n,
                Some(JobStatus::Completed) => stats.completed += n,
                Some(JobStatus::Failed) => {
                    stats.failed += n;
                    if dead {
                        stats.dead += n;
                    }
                }
                Some(JobStatus::Cancelled) => stats.cancelled += n,
                None => {}
            }
        }
        stats.oldest_wait_ms = oldest.map(|t| now_ms.saturating_sub(t));
        Ok(stats)
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<Job>, QueueError> {
        let rows = sqlx::query(DEAD_LETTERS)
            .bind(limit_arg(limit))
            .fetch_all(&mut *self.reader().await?)
            .await?;
        rows.iter().map(|r| job_from_row(r).map(|(_, job)| job)).collect()
    }

    async fn retry_dead(&self, id: &str, now_ms: i64) -> Result<Option<Job>, QueueError> {
        let mut turn = self.turn().await?;
        let row =
            sqlx::query(RETRY_DEAD).bind(now_ms).bind(id).fetch_optional(&mut turn.conn).await?;
        row.map(|r| job_from_row(&r).map(|(_, job)| job)).transpose()
    }

    async fn delete_dead(&self, id: &str) -> Result<bool, QueueError> {
        let mut turn = self.turn().await?;
        let done = sqlx::query(DELETE_DEAD).bind(id).execute(&mut turn.conn).await?;
        Ok(done.rows_affected() == 1)
    }

    async fn set_webhook(&self, id: &str, status: &Value) -> Result<bool, QueueError> {
        let mut turn = self.turn().await?;
        let done = sqlx::query(SET_WEBHOOK)
            .bind(status.to_string())
            .bind(id)
            .execute(&mut turn.conn)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn purge(&self, before_ms: i64) -> Result<u64, QueueError> {
        let mut turn = self.turn().await?;
        let done = sqlx::query(PURGE).bind(before_ms).execute(&mut turn.conn).await?;
        Ok(done.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every statement the engine runs, by name.
    fn statements() -> Vec<(&'static str, String)> {
        let mut statements = vec![("lease 1", lease_sql(1)), ("lease 16", lease_sql(16))];
        statements.extend(
            [
                ("get", GET),
                ("find_idempotent", FIND_IDEMPOTENT),
                ("insert", INSERT),
                ("complete", COMPLETE),
                ("heartbeat", HEARTBEAT),
                ("release", RELEASE),
                ("fail", FAIL),
                ("cancel", CANCEL),
                ("counts", COUNTS),
                ("oldest", OLDEST),
                ("dead_letters", DEAD_LETTERS),
                ("retry_dead", RETRY_DEAD),
                ("delete_dead", DELETE_DEAD),
                ("set_webhook", SET_WEBHOOK),
                ("purge", PURGE),
            ]
            .map(|(name, sql)| (name, sql.to_string())),
        );
        statements
    }

    /// Partial indexes that a statement may read in order from their
    /// start: they hold only what that statement is after (queued jobs, in
    /// lease order; dead letters), and it stops at its `LIMIT`.
    const SCANNABLE: &[&str] =
        &["SCAN jobs USING COVERING INDEX jobs_queued", "SCAN jobs USING INDEX jobs_dead"];

    /// No statement reads the whole table, nor an index of every job: each
    /// one searches an index, or reads one of the partial indexes above
    /// in order (the finished jobs kept for their TTL are never read).
    #[tokio::test]
    async fn queue_statements_use_indexes() {
        let q = SqliteQueue::open("sqlite::memory:").await.unwrap();
        let mut plans = Vec::new();
        for (name, sql) in statements() {
            let explain = format!("EXPLAIN QUERY PLAN {sql}");
            let rows = sqlx::query(sqlx::AssertSqlSafe(explain))
                .fetch_all(&mut *q.reader().await.unwrap())
                .await
                .unwrap();
            for row in rows {
                let detail: String = row.try_get("detail").unwrap();
                plans.push(format!("{name}: {detail}"));
                if detail.starts_with("SCAN jobs") {
                    assert!(SCANNABLE.contains(&detail.as_str()), "{name} scans: {detail}\n{sql}");
                }
            }
            if name != "insert" {
                let searched = plans.iter().any(|p| {
                    p.starts_with(&format!("{name}: SEARCH jobs USING"))
                        || p.starts_with(&format!("{name}: SCAN job"))
                });
                assert!(searched, "{name} uses no index: {plans:#?}");
            }
        }
    }

    /// A transaction whose future was dropped before it ended is rolled
    /// back at the next turn, not left open under the next writes.
    #[tokio::test]
    async fn queue_a_dropped_transaction_is_rolled_back() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
        let q = SqliteQueue::open(&url).await.unwrap();
        let new = |id: &str| NewJob {
            id: id.to_string(),
            owner: None,
            route: "chat".to_string(),
            request: Value::Null,
            priority: 5,
            max_attempts: 1,
            webhook_url: None,
            idempotency_key: None,
            deadline_ms: None,
        };
        {
            let mut turn = q.begin().await.unwrap();
            insert(&mut turn.conn, &new("dropped"), 0).await.unwrap();
            // Dropped here, as a cancelled call's future would be.
        }
        q.submit(new("next"), 1).await.unwrap();
        assert!(q.get("dropped").await.unwrap().is_none());
        assert!(q.get("next").await.unwrap().is_some(), "committed, not left in the dropped one");
        assert_eq!(q.stats(2).await.unwrap().pending[5], 1);
    }
}
