//! The embedded store: one SQLite file in WAL mode, migrated at start.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Row, SqlSafeStr};

use super::sql::{self, Bind, Dialect};
use super::{
    JobRecord, PoolConfig, Store, StoreError, UsageQuery, UsageRecord, UsageRow, UsageTotals,
    VirtualKey,
};

/// The columns [`SqliteStore::record_usage`] writes, in bind order.
const USAGE_COLUMNS: [&str; 20] = [
    "record_id",
    "at_ms",
    "request_id",
    "route",
    "key_id",
    "end_user",
    "model",
    "provider",
    "upstream_model",
    "status",
    "stream",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "cost_usd",
    "latency_ms",
    "ttft_ms",
    "retries",
    "cache_hit",
    "error",
];

/// Statement sizes, largest first; 20 columns × 64 rows = 1,280 parameters,
/// far below SQLite's bound-parameter limit (32,766).
const ROWS_PER_INSERT: [usize; 4] = [64, 16, 4, 1];

/// `virtual_keys`' columns, in the order [`SqliteStore::put_key`] binds them
/// (a macro so the statements below are `concat!`ed literals).
macro_rules! key_columns {
    () => {
        "id, name, hash, prefix, models, rpm, tpm, max_concurrent, max_budget_usd, \
         budget_period, metadata, scopes, rooms, expires_at_ms, created_at_ms, \
         updated_at_ms, revoked_at_ms, seq"
    };
}

const PUT_KEY: &str = concat!(
    "INSERT INTO virtual_keys (",
    key_columns!(),
    ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
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

const GET_KEY: &str = concat!("SELECT ", key_columns!(), " FROM virtual_keys WHERE id = ?");

const KEYS_SINCE: &str =
    concat!("SELECT ", key_columns!(), " FROM virtual_keys WHERE seq > ? ORDER BY seq");

/// Write transactions take the write lock when they begin: a deferred one
/// that reads first and then writes can fail with `SQLITE_BUSY` instead of
/// waiting, and `put_key` must read the highest `seq` under the lock.
const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// `(rows, INSERT statement for that many rows)`, largest first.
    inserts: Arc<[(usize, Arc<str>)]>,
}

/// `INSERT INTO usage (...) VALUES (?, …), … ON CONFLICT (record_id) DO NOTHING`
/// for `rows` rows.
fn insert_sql(rows: usize) -> String {
    let row = format!("({})", vec!["?"; USAGE_COLUMNS.len()].join(", "));
    format!(
        "INSERT INTO usage ({}) VALUES {} ON CONFLICT (record_id) DO NOTHING",
        USAGE_COLUMNS.join(", "),
        vec![row; rows].join(", ")
    )
}

fn migrator() -> Migrator {
    Migrator::with_migrations(vec![
        Migration::new(
            1,
            "usage".into(),
            MigrationType::Simple,
            include_str!("migrations/0001_usage.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            2,
            "keys and ledger".into(),
            MigrationType::Simple,
            include_str!("migrations/0002_keys_and_ledger.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            3,
            "key rooms".into(),
            MigrationType::Simple,
            include_str!("migrations/0003_key_rooms.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            4,
            "job history".into(),
            MigrationType::Simple,
            include_str!("migrations/0004_job_history.sql").into_sql_str(),
            false,
        ),
    ])
}

/// How every SQLite file here is opened (the store's and the job
/// queue's): created when missing, WAL (or memory for an in-memory
/// database, the `bool`), `synchronous = NORMAL`, and a 5 s wait for
/// another connection's write lock.
pub(crate) fn connect_options(url: &str) -> Result<(SqliteConnectOptions, bool), sqlx::Error> {
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(if in_memory { SqliteJournalMode::Memory } else { SqliteJournalMode::Wal })
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5));
    Ok((options, in_memory))
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates `url` with the default pool.
    pub async fn open(url: &str) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_with(url, &PoolConfig::default()).await
    }

    /// Opens (creating if needed) and migrates `url`: `sqlite://path` or
    /// `sqlite::memory:`. An in-memory database ignores `pool`'s sizes.
    pub async fn open_with(url: &str, pool: &PoolConfig) -> Result<SqliteStore, StoreError> {
        pool.check()?;
        let (options, in_memory) = connect_options(url)?;
        // An in-memory database lives only as long as its one connection.
        let pool = if in_memory {
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            SqlitePoolOptions::new()
                .max_connections(pool.max_connections)
                .min_connections(pool.min_connections)
                .idle_timeout(pool.idle_timeout)
                .max_lifetime(pool.max_lifetime)
        }
        .acquire_timeout(pool.acquire_timeout)
        .test_before_acquire(pool.test_before_acquire)
        .connect_with(options)
        .await?;
        migrator().run(&pool).await?;
        let inserts = ROWS_PER_INSERT.iter().map(|n| (*n, Arc::from(insert_sql(*n)))).collect();
        Ok(SqliteStore { pool, inserts })
    }

    /// Closes the pool: later calls fail, and an in-memory database is gone.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn key_from_row(row: &SqliteRow) -> Result<VirtualKey, StoreError> {
    let limit = |column: &str| -> Result<Option<u32>, StoreError> {
        row.try_get::<Option<i64>, _>(column)?.map(|v| sql::to_u32(v, column)).transpose()
    };
    let models: Option<String> = row.try_get("models")?;
    let metadata: String = row.try_get("metadata")?;
    let scopes: String = row.try_get("scopes")?;
    let rooms: Option<String> = row.try_get("rooms")?;
    let budget_period: String = row.try_get("budget_period")?;
    Ok(VirtualKey {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        hash: row.try_get("hash")?,
        prefix: row.try_get("prefix")?,
        models: models.map(|m| sql::from_json(&m, "models")).transpose()?,
        rpm: limit("rpm")?,
        tpm: limit("tpm")?,
        max_concurrent: limit("max_concurrent")?,
        max_budget_usd: row.try_get("max_budget_usd")?,
        budget_period: sql::to_budget_period(&budget_period)?,
        metadata: sql::from_json(&metadata, "metadata")?,
        scopes: sql::from_json(&scopes, "scopes")?,
        rooms: rooms.map(|r| sql::from_json(&r, "rooms")).transpose()?,
        expires_at_ms: row.try_get("expires_at_ms")?,
        created_at_ms: row.try_get("created_at_ms")?,
        updated_at_ms: row.try_get("updated_at_ms")?,
        revoked_at_ms: row.try_get("revoked_at_ms")?,
        seq: row.try_get("seq")?,
    })
}

#[async_trait]
impl Store for SqliteStore {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    async fn record_usage(&self, records: &[UsageRecord]) -> Result<u64, StoreError> {
        if records.is_empty() {
            return Ok(0);
        }
        let mut tx = self.pool.begin_with(BEGIN_WRITE).await?;
        let mut written = 0;
        // Multi-row inserts, in a few fixed sizes: one statement per many
        // records is far cheaper than one per record, and fixed sizes keep
        // the SQL text (and so the prepared statement sqlx caches) the same
        // from batch to batch instead of preparing a new one each time.
        let mut rest = records;
        while !rest.is_empty() {
            // The sizes end with 1, so some size always fits.
            let Some((size, sql)) = self.inserts.iter().find(|(size, _)| *size <= rest.len())
            else {
                break;
            };
            let (chunk, tail) = rest.split_at(*size);
            rest = tail;
            let mut query = sqlx::query(AssertSqlSafe(Arc::clone(sql)));
            for r in chunk {
                query = query
                    .bind(r.record_id.as_str())
                    .bind(r.at_ms)
                    .bind(r.request_id.as_str())
                    .bind(r.route.as_str())
                    .bind(r.key_id.as_deref())
                    .bind(r.user.as_deref())
                    .bind(r.model.as_str())
                    .bind(r.provider.as_str())
                    .bind(r.upstream_model.as_str())
                    .bind(i64::from(r.status))
                    .bind(r.stream)
                    .bind(i64::from(r.input_tokens))
                    .bind(i64::from(r.output_tokens))
                    .bind(i64::from(r.cached_tokens))
                    .bind(r.cost_usd)
                    .bind(i64::from(r.latency_ms))
                    .bind(r.ttft_ms.map(i64::from))
                    .bind(i64::from(r.retries))
                    .bind(r.cache_hit)
                    .bind(r.error.as_deref());
            }
            written += query.execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok(written)
    }

    async fn usage_totals(&self) -> Result<Vec<UsageTotals>, StoreError> {
        let rows = sqlx::query(
            "SELECT model, provider, COUNT(*) AS requests, SUM(input_tokens) AS input_tokens, \
             SUM(output_tokens) AS output_tokens, SUM(cost_usd) AS cost_usd \
             FROM usage GROUP BY model, provider ORDER BY model, provider",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(sql::totals_row).collect()
    }

    async fn usage_report(&self, query: &UsageQuery) -> Result<Vec<UsageRow>, StoreError> {
        let report = sql::usage_report(query, Dialect::Sqlite);
        let mut statement = sqlx::query(AssertSqlSafe(report.sql));
        for bind in report.binds {
            statement = match bind {
                Bind::Int(value) => statement.bind(value),
                Bind::Text(value) => statement.bind(value),
            };
        }
        let rows = statement.fetch_all(&self.pool).await?;
        rows.iter().map(|row| sql::report_row(row, query)).collect()
    }

    async fn key_spend(&self, key_id: &str, from_ms: i64) -> Result<f64, StoreError> {
        let spend = sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(cost_usd), 0) AS REAL) FROM usage \
             WHERE key_id = ? AND at_ms >= ?",
        )
        .bind(key_id)
        .bind(from_ms)
        .fetch_one(&self.pool)
        .await?;
        Ok(spend)
    }

    async fn put_key(&self, key: &VirtualKey) -> Result<VirtualKey, StoreError> {
        let models = key.models.as_ref().map(|m| sql::to_json(m, "models")).transpose()?;
        let metadata = sql::to_json(&key.metadata, "metadata")?;
        let scopes = sql::to_json(&key.scopes, "scopes")?;
        let rooms = key.rooms.as_ref().map(|r| sql::to_json(r, "rooms")).transpose()?;
        // The immediate transaction holds the write lock from here to the
        // commit, so no other writer can take the same `seq`.
        let mut tx = self.pool.begin_with(BEGIN_WRITE).await?;
        let seq: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) + 1 FROM virtual_keys")
            .fetch_one(&mut *tx)
            .await?;
        let row = sqlx::query(PUT_KEY)
            .bind(key.id.as_str())
            .bind(key.name.as_str())
            .bind(key.hash.as_str())
            .bind(key.prefix.as_str())
            .bind(models)
            .bind(key.rpm.map(i64::from))
            .bind(key.tpm.map(i64::from))
            .bind(key.max_concurrent.map(i64::from))
            .bind(key.max_budget_usd)
            .bind(key.budget_period.as_str())
            .bind(metadata)
            .bind(scopes)
            .bind(rooms)
            .bind(key.expires_at_ms)
            .bind(key.created_at_ms)
            .bind(key.updated_at_ms)
            .bind(key.revoked_at_ms)
            .bind(seq)
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

    async fn record_jobs(&self, jobs: &[JobRecord]) -> Result<(), StoreError> {
        if jobs.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin_with(BEGIN_WRITE).await?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::BudgetPeriod;

    fn file_url(dir: &tempfile::TempDir) -> String {
        format!("sqlite://{}", dir.path().join("t.db").display())
    }

    /// The suite's record, charged $0.50 to key_1.
    fn record(record_id: &str) -> UsageRecord {
        UsageRecord {
            key_id: Some("key_1".into()),
            cost_usd: 0.5,
            ..crate::store::tests::record(record_id)
        }
    }

    /// The suite's key with a model list, an rpm and a daily budget.
    fn key() -> VirtualKey {
        VirtualKey {
            models: Some(vec!["gpt".into()]),
            rpm: Some(60),
            max_budget_usd: Some(1.0),
            budget_period: BudgetPeriod::Day,
            metadata: serde_json::json!({"team": "x"}),
            ..crate::store::tests::key("key_1")
        }
    }

    #[tokio::test]
    async fn a_reopened_file_keeps_everything_and_migrating_again_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&file_url(&dir)).await.unwrap();
        store.record_usage(&[record("x"), record("y")]).await.unwrap();
        let stored = store.put_key(&key()).await.unwrap();
        store.close().await;

        let store = SqliteStore::open(&file_url(&dir)).await.unwrap();
        migrator().run(&store.pool).await.unwrap();
        let versions: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
                .fetch_all(&store.pool)
                .await
                .unwrap();
        assert_eq!(versions, vec![1, 2, 3, 4]);
        assert_eq!(store.usage_totals().await.unwrap()[0].requests, 2);
        assert_eq!(store.key_spend("key_1", 0).await.unwrap(), 1.0);
        assert_eq!(store.get_key("key_1").await.unwrap(), Some(stored.clone()));
        // The ledger is still idempotent, and seqs carry on from the stored ones.
        assert_eq!(store.record_usage(&[record("x")]).await.unwrap(), 0);
        assert!(store.put_key(&key()).await.unwrap().seq > stored.seq);
    }

    /// A store file as an older build left it: only the first `n` migrations run.
    async fn migrated_to(url: &str, n: usize) -> sqlx::SqlitePool {
        let pool = SqlitePoolOptions::new()
            .connect_with(SqliteConnectOptions::from_str(url).unwrap().create_if_missing(true))
            .await
            .unwrap();
        Migrator::with_migrations(migrator().migrations[..n].to_vec()).run(&pool).await.unwrap();
        pool
    }

    #[tokio::test]
    async fn rows_from_before_record_ids_get_unique_ones() {
        let dir = tempfile::tempdir().unwrap();
        let url = file_url(&dir);
        {
            let pool = migrated_to(&url, 1).await;
            for _ in 0..3 {
                sqlx::query(
                    "INSERT INTO usage (at_ms, request_id, route, model, provider, \
                     upstream_model, status, stream, input_tokens, output_tokens, cached_tokens, \
                     cost_usd, latency_ms) VALUES (1, 'r', 'chat', 'm', 'p', 'u', 200, 0, 1, 1, 0, \
                     0.5, 1)",
                )
                .execute(&pool)
                .await
                .unwrap();
            }
            pool.close().await;
        }
        let store = SqliteStore::open(&url).await.unwrap();
        let ids: Vec<String> = sqlx::query_scalar("SELECT record_id FROM usage ORDER BY id")
            .fetch_all(&store.pool)
            .await
            .unwrap();
        assert_eq!(ids, vec!["legacy-1", "legacy-2", "legacy-3"]);
        let report = store
            .usage_report(&UsageQuery {
                from_ms: None,
                to_ms: None,
                group_by: vec![super::super::GroupBy::Key],
                key_id: None,
            })
            .await
            .unwrap();
        assert_eq!((report[0].key_id.as_deref(), report[0].requests), (None, 3));
        assert_eq!(store.record_usage(&[record("new")]).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn keys_from_before_room_rules_may_use_every_room() {
        let dir = tempfile::tempdir().unwrap();
        let url = file_url(&dir);
        {
            let pool = migrated_to(&url, 2).await;
            sqlx::query(
                "INSERT INTO virtual_keys (id, name, hash, prefix, budget_period, metadata, \
                 scopes, created_at_ms, updated_at_ms, seq) \
                 VALUES ('key_old', 'old', 'h', 'fg-abcdef', 'total', '{}', '[]', 1, 1, 1)",
            )
            .execute(&pool)
            .await
            .unwrap();
            pool.close().await;
        }
        let store = SqliteStore::open(&url).await.unwrap();
        let old = store.get_key("key_old").await.unwrap().unwrap();
        assert_eq!((old.name.as_str(), old.rooms), ("old", None));
    }

    #[tokio::test]
    async fn a_file_pool_follows_the_config_and_memory_keeps_one_connection() {
        let dir = tempfile::tempdir().unwrap();
        let config = PoolConfig {
            max_connections: 3,
            min_connections: 1,
            idle_timeout: Some(Duration::from_secs(7)),
            max_lifetime: None,
            acquire_timeout: Duration::from_secs(2),
            test_before_acquire: false,
        };
        let store = SqliteStore::open_with(&file_url(&dir), &config).await.unwrap();
        let options = store.pool.options();
        assert_eq!(options.get_max_connections(), 3);
        assert_eq!(options.get_min_connections(), 1);
        assert_eq!(options.get_idle_timeout(), Some(Duration::from_secs(7)));
        assert_eq!(options.get_max_lifetime(), None);
        assert_eq!(options.get_acquire_timeout(), Duration::from_secs(2));
        assert!(!options.get_test_before_acquire());

        let memory = SqliteStore::open_with("sqlite::memory:", &config).await.unwrap();
        assert_eq!(memory.pool.options().get_max_connections(), 1);
        assert_eq!(memory.pool.options().get_max_lifetime(), None);
    }

    #[tokio::test]
    async fn writing_to_a_closed_pool_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        for url in ["sqlite::memory:".to_string(), file_url(&dir)] {
            let store = SqliteStore::open(&url).await.unwrap();
            store.close().await;
            let error = store.record_usage(&[record("x")]).await.unwrap_err();
            assert!(matches!(error, StoreError::Database(sqlx::Error::PoolClosed)), "{error:?}");
            assert!(store.ping().await.is_err());
            assert!(store.put_key(&key()).await.is_err());
        }
    }
}
