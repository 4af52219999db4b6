//! The cluster store: PostgreSQL, shared by every node, migrated at start
//! (the migrator's advisory lock lets nodes start together).
//!
//! With a read replica (`[database] read_url`) the read-heavy admin
//! queries, the usage report and totals and the key listing, go to the
//! replica's pool, whose sessions are read-only
//! (`default_transaction_read_only`), so no write can land there. Every
//! write, the key sync (`keys_since`: replica lag could hide a write from
//! it for good, since it asks only past the last `seq` it saw), a key read
//! before a change (`get_key`) and a key's spend (budgets) stay on the
//! primary. The replica is not migrated (it follows the primary), and its
//! pool connects on first use, so a replica that is down fails those reads
//! and nothing else.

use std::str::FromStr;

use async_trait::async_trait;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, Row, SqlSafeStr};

use super::sql::{self, Bind, Dialect};
use super::{
    JobRecord, PoolConfig, Store, StoreError, UsageQuery, UsageRecord, UsageRow, UsageTotals,
    VirtualKey,
};

/// Records per `INSERT`: each statement sends one array per column, so its
/// size is bounded by memory, not by a parameter limit; this keeps any one
/// message to a few megabytes.
const ROWS_PER_INSERT: usize = 4096;

/// One `INSERT … SELECT FROM UNNEST(<one array per column>)`: a single
/// statement with 20 parameters whatever the batch size, so it is prepared
/// once and each batch is one round trip.
const INSERT_USAGE: &str = "INSERT INTO usage (record_id, at_ms, request_id, route, key_id, \
    end_user, model, provider, upstream_model, status, stream, input_tokens, output_tokens, \
    cached_tokens, cost_usd, latency_ms, ttft_ms, retries, cache_hit, error) \
    SELECT * FROM UNNEST($1::TEXT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], \
    $6::TEXT[], $7::TEXT[], $8::TEXT[], $9::TEXT[], $10::INTEGER[], $11::BOOLEAN[], \
    $12::BIGINT[], $13::BIGINT[], $14::BIGINT[], $15::DOUBLE PRECISION[], $16::BIGINT[], \
    $17::BIGINT[], $18::BIGINT[], $19::BOOLEAN[], $20::TEXT[]) \
    ON CONFLICT (record_id) DO NOTHING";

/// The advisory lock every key write holds until it commits ("fg-keys" in
/// ASCII), so the `seq` each takes is in commit order: without it, a
/// writer could take a `seq` and commit after one that took a larger one,
/// and a node syncing in between would skip it for good.
const KEY_WRITE_LOCK: i64 = 0x0066_672d_6b65_7973;

/// `virtual_keys`' columns as [`key_from_row`] reads them (a macro so the
/// statements below are `concat!`ed literals).
macro_rules! key_columns {
    () => {
        "id, name, hash, prefix, models, rpm, tpm, max_concurrent, max_budget_usd, \
         budget_period, metadata::TEXT AS metadata, scopes, rooms, expires_at_ms, \
         created_at_ms, updated_at_ms, revoked_at_ms, seq"
    };
}

const PUT_KEY: &str = concat!(
    "INSERT INTO virtual_keys (id, name, hash, prefix, models, rpm, tpm, max_concurrent, \
     max_budget_usd, budget_period, metadata, scopes, rooms, expires_at_ms, created_at_ms, \
     updated_at_ms, revoked_at_ms, seq) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::JSONB, $12, $13, $14, $15, $16, \
     $17, nextval('virtual_keys_seq')) \
     ON CONFLICT (id) DO UPDATE SET name = excluded.name, hash = excluded.hash, \
     prefix = excluded.prefix, models = excluded.models, rpm = excluded.rpm, \
     tpm = excluded.tpm, max_concurrent = excluded.max_concurrent, \
     max_budget_usd = excluded.max_budget_usd, budget_period = excluded.budget_period, \
     metadata = excluded.metadata, scopes = excluded.scopes, rooms = excluded.rooms, \
     expires_at_ms = excluded.expires_at_ms, created_at_ms = excluded.created_at_ms, \
     updated_at_ms = excluded.updated_at_ms, revoked_at_ms = excluded.revoked_at_ms, \
     seq = excluded.seq RETURNING ",
    key_columns!()
);

const GET_KEY: &str = concat!("SELECT ", key_columns!(), " FROM virtual_keys WHERE id = $1");

const KEYS_SINCE: &str =
    concat!("SELECT ", key_columns!(), " FROM virtual_keys WHERE seq > $1 ORDER BY seq");

#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// The read replica's pool, when there is one.
    read: Option<PgPool>,
}

fn pool_options(pool: &PoolConfig) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(pool.max_connections)
        .min_connections(pool.min_connections)
        .idle_timeout(pool.idle_timeout)
        .max_lifetime(pool.max_lifetime)
        .acquire_timeout(pool.acquire_timeout)
        .test_before_acquire(pool.test_before_acquire)
}

fn migrator() -> Migrator {
    Migrator::with_migrations(vec![
        Migration::new(
            1,
            "ledger and keys".into(),
            MigrationType::Simple,
            include_str!("migrations/postgres/0001_ledger_and_keys.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            2,
            "key rooms".into(),
            MigrationType::Simple,
            include_str!("migrations/postgres/0002_key_rooms.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            3,
            "job history".into(),
            MigrationType::Simple,
            include_str!("migrations/postgres/0003_job_history.sql").into_sql_str(),
            false,
        ),
    ])
}

impl PostgresStore {
    /// Connects to and migrates `url` with the default pool.
    pub async fn open(url: &str) -> Result<PostgresStore, StoreError> {
        PostgresStore::open_with(url, &PoolConfig::default()).await
    }

    /// Connects to and migrates `url`: `postgres://…` or `postgresql://…`.
    pub async fn open_with(url: &str, pool: &PoolConfig) -> Result<PostgresStore, StoreError> {
        pool.check()?;
        let options = PgConnectOptions::from_str(url)?.application_name("floodgate");
        let pool = pool_options(pool).connect_with(options).await?;
        migrator().run(&pool).await?;
        Ok(PostgresStore { pool, read: None })
    }

    /// As [`PostgresStore::open_with`], with the admin reads on the replica
    /// at `read.url` (see the module's comment).
    pub async fn open_with_replica(
        url: &str,
        pool: &PoolConfig,
        read: &super::ReadReplica,
    ) -> Result<PostgresStore, StoreError> {
        read.pool.check()?;
        let mut store = PostgresStore::open_with(url, pool).await?;
        let options = PgConnectOptions::from_str(&read.url)?
            .application_name("floodgate-read")
            .options([("default_transaction_read_only", "on")]);
        store.read = Some(pool_options(&read.pool).connect_lazy_with(options));
        Ok(store)
    }

    /// The pool for reads that may lag behind the writes.
    pub(crate) fn reader(&self) -> &PgPool {
        self.read.as_ref().unwrap_or(&self.pool)
    }

    /// Closes the pool: later calls fail.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// One array per column of `records`, bound to [`INSERT_USAGE`].
fn insert_usage(
    records: &[UsageRecord],
) -> sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let column = |f: fn(&UsageRecord) -> &str| records.iter().map(f).collect::<Vec<_>>();
    let optional = |f: fn(&UsageRecord) -> Option<&str>| records.iter().map(f).collect::<Vec<_>>();
    let number =
        |f: fn(&UsageRecord) -> u32| records.iter().map(|r| i64::from(f(r))).collect::<Vec<_>>();
    sqlx::query(INSERT_USAGE)
        .bind(column(|r| &r.record_id))
        .bind(records.iter().map(|r| r.at_ms).collect::<Vec<_>>())
        .bind(column(|r| &r.request_id))
        .bind(column(|r| &r.route))
        .bind(optional(|r| r.key_id.as_deref()))
        .bind(optional(|r| r.user.as_deref()))
        .bind(column(|r| &r.model))
        .bind(column(|r| &r.provider))
        .bind(column(|r| &r.upstream_model))
        .bind(records.iter().map(|r| i32::from(r.status)).collect::<Vec<_>>())
        .bind(records.iter().map(|r| r.stream).collect::<Vec<_>>())
        .bind(number(|r| r.input_tokens))
        .bind(number(|r| r.output_tokens))
        .bind(number(|r| r.cached_tokens))
        .bind(records.iter().map(|r| r.cost_usd).collect::<Vec<_>>())
        .bind(number(|r| r.latency_ms))
        .bind(records.iter().map(|r| r.ttft_ms.map(i64::from)).collect::<Vec<_>>())
        .bind(number(|r| r.retries))
        .bind(records.iter().map(|r| r.cache_hit).collect::<Vec<_>>())
        .bind(optional(|r| r.error.as_deref()))
}

fn key_from_row(row: &PgRow) -> Result<VirtualKey, StoreError> {
    let limit = |column: &str| -> Result<Option<u32>, StoreError> {
        row.try_get::<Option<i64>, _>(column)?.map(|v| sql::to_u32(v, column)).transpose()
    };
    let metadata: String = row.try_get("metadata")?;
    let budget_period: String = row.try_get("budget_period")?;
    Ok(VirtualKey {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        hash: row.try_get("hash")?,
        prefix: row.try_get("prefix")?,
        models: row.try_get("models")?,
        rpm: limit("rpm")?,
        tpm: limit("tpm")?,
        max_concurrent: limit("max_concurrent")?,
        max_budget_usd: row.try_get("max_budget_usd")?,
        budget_period: sql::to_budget_period(&budget_period)?,
        metadata: sql::from_json(&metadata, "metadata")?,
        scopes: row.try_get("scopes")?,
        rooms: row.try_get("rooms")?,
        expires_at_ms: row.try_get("expires_at_ms")?,
        created_at_ms: row.try_get("created_at_ms")?,
        updated_at_ms: row.try_get("updated_at_ms")?,
        revoked_at_ms: row.try_get("revoked_at_ms")?,
        seq: row.try_get("seq")?,
    })
}

#[async_trait]
impl Store for PostgresStore {
    fn name(&self) -> &'static str {
        "postgres"
    }

    async fn record_usage(&self, records: &[UsageRecord]) -> Result<u64, StoreError> {
        if records.is_empty() {
            return Ok(0);
        }
        // One statement is atomic by itself; only a batch of several needs
        // a transaction (and its two extra round trips).
        if records.len() <= ROWS_PER_INSERT {
            return Ok(insert_usage(records).execute(&self.pool).await?.rows_affected());
        }
        let mut tx = self.pool.begin().await?;
        let mut written = 0;
        for chunk in records.chunks(ROWS_PER_INSERT) {
            written += insert_usage(chunk).execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok(written)
    }

    async fn usage_totals(&self) -> Result<Vec<UsageTotals>, StoreError> {
        let rows = sqlx::query(
            "SELECT model, provider, COUNT(*) AS requests, \
             CAST(SUM(input_tokens) AS BIGINT) AS input_tokens, \
             CAST(SUM(output_tokens) AS BIGINT) AS output_tokens, SUM(cost_usd) AS cost_usd \
             FROM usage GROUP BY model, provider \
             ORDER BY model COLLATE \"C\", provider COLLATE \"C\"",
        )
        .fetch_all(self.reader())
        .await?;
        rows.iter().map(sql::totals_row).collect()
    }

    async fn usage_report(&self, query: &UsageQuery) -> Result<Vec<UsageRow>, StoreError> {
        let report = sql::usage_report(query, Dialect::Postgres);
        let mut statement = sqlx::query(AssertSqlSafe(report.sql));
        for bind in report.binds {
            statement = match bind {
                Bind::Int(value) => statement.bind(value),
                Bind::Text(value) => statement.bind(value),
            };
        }
        let rows = statement.fetch_all(self.reader()).await?;
        rows.iter().map(|row| sql::report_row(row, query)).collect()
    }

    async fn key_spend(&self, key_id: &str, from_ms: i64) -> Result<f64, StoreError> {
        let spend = sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(cost_usd), 0) AS DOUBLE PRECISION) FROM usage \
             WHERE key_id = $1 AND at_ms >= $2",
        )
        .bind(key_id)
        .bind(from_ms)
        .fetch_one(&self.pool)
        .await?;
        Ok(spend)
    }

    async fn put_key(&self, key: &VirtualKey) -> Result<VirtualKey, StoreError> {
        let metadata = sql::to_json(&key.metadata, "metadata")?;
        let mut tx = self.pool.begin().await?;
        // Held until the commit (or rollback): key writes take their `seq`
        // one at a time.
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(KEY_WRITE_LOCK)
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query(PUT_KEY)
            .bind(key.id.as_str())
            .bind(key.name.as_str())
            .bind(key.hash.as_str())
            .bind(key.prefix.as_str())
            .bind(key.models.as_deref())
            .bind(key.rpm.map(i64::from))
            .bind(key.tpm.map(i64::from))
            .bind(key.max_concurrent.map(i64::from))
            .bind(key.max_budget_usd)
            .bind(key.budget_period.as_str())
            .bind(metadata)
            .bind(key.scopes.as_slice())
            .bind(key.rooms.as_deref())
            .bind(key.expires_at_ms)
            .bind(key.created_at_ms)
            .bind(key.updated_at_ms)
            .bind(key.revoked_at_ms)
            .fetch_one(&mut *tx)
            .await?;
        let stored = key_from_row(&row)?;
        tx.commit().await?;
        Ok(stored)
    }

    async fn get_key(&self, id: &str) -> Result<Option<VirtualKey>, StoreError> {
        let row = sqlx::query(GET_KEY).bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn keys_since(&self, seq: i64) -> Result<Vec<VirtualKey>, StoreError> {
        let rows = sqlx::query(KEYS_SINCE).bind(seq).fetch_all(&self.pool).await?;
        rows.iter().map(key_from_row).collect()
    }

    async fn list_keys(&self) -> Result<Vec<VirtualKey>, StoreError> {
        let rows = sqlx::query(KEYS_SINCE).bind(0i64).fetch_all(self.reader()).await?;
        rows.iter().map(key_from_row).collect()
    }

    async fn record_jobs(&self, jobs: &[JobRecord]) -> Result<(), StoreError> {
        if jobs.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for job in jobs {
            sql::bind_job(sqlx::query(sql::PUT_JOB), job).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn job_record(&self, id: &str) -> Result<Option<JobRecord>, StoreError> {
        let row = sqlx::query(sql::GET_JOB).bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(sql::job_row).transpose()
    }

    async fn purge_jobs(&self, before_ms: i64) -> Result<u64, StoreError> {
        let done = sqlx::query(sql::PURGE_JOBS).bind(before_ms).execute(&self.pool).await?;
        Ok(done.rows_affected())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
