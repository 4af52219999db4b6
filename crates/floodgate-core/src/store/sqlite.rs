//! The embedded store: one SQLite file in WAL mode, migrated at start.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Row, SqlSafeStr};

use super::{Store, StoreError, UsageRecord, UsageTotals};

/// Statement sizes, largest first; 15 columns × 64 rows stays far below
/// SQLite's bound-parameter limit.
const ROWS_PER_INSERT: [usize; 4] = [64, 16, 4, 1];

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// `(rows, INSERT statement for that many rows)`, largest first.
    inserts: Arc<[(usize, String)]>,
}

const USAGE_COLUMNS: &str = "at_ms, request_id, route, model, provider, upstream_model, status, \
    stream, input_tokens, output_tokens, cached_tokens, cost_usd, latency_ms, ttft_ms, error";

/// `INSERT INTO usage (...) VALUES (?, …), …` for `rows` rows of 15 columns.
fn insert_sql(rows: usize) -> String {
    let row = format!("({})", vec!["?"; 15].join(", "));
    format!("INSERT INTO usage ({USAGE_COLUMNS}) VALUES {}", vec![row; rows].join(", "))
}

fn migrator() -> Migrator {
    Migrator::with_migrations(vec![Migration::new(
        1,
        "usage".into(),
        MigrationType::Simple,
        include_str!("migrations/0001_usage.sql").into_sql_str(),
        false,
    )])
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates `url`: `sqlite://path` or `sqlite::memory:`.
    pub async fn open(url: &str) -> Result<SqliteStore, StoreError> {
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
        // An in-memory database lives only as long as its one connection.
        let pool = if in_memory {
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            SqlitePoolOptions::new().max_connections(4)
        }
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await?;
        migrator().run(&pool).await?;
        let inserts = ROWS_PER_INSERT.iter().map(|n| (*n, insert_sql(*n))).collect();
        Ok(SqliteStore { pool, inserts })
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    async fn record_usage(&self, records: &[UsageRecord]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
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
            let mut query = sqlx::query(AssertSqlSafe(sql.as_str()));
            for r in chunk {
                query = query
                    .bind(r.at_ms)
                    .bind(r.request_id.as_str())
                    .bind(r.route)
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
                    .bind(r.error.as_deref());
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn usage_totals(&self) -> Result<Vec<UsageTotals>, StoreError> {
        let rows = sqlx::query(
            "SELECT model, provider, COUNT(*) AS requests, SUM(input_tokens) AS input_tokens, \
             SUM(output_tokens) AS output_tokens, SUM(cost_usd) AS cost_usd \
             FROM usage GROUP BY model, provider ORDER BY model, provider",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(UsageTotals {
                    model: row.try_get("model")?,
                    provider: row.try_get("provider")?,
                    requests: row.try_get("requests")?,
                    input_tokens: row.try_get("input_tokens")?,
                    output_tokens: row.try_get("output_tokens")?,
                    cost_usd: row.try_get("cost_usd")?,
                })
            })
            .collect()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(model: &str, input: u32) -> UsageRecord {
        UsageRecord {
            at_ms: 1,
            request_id: "r".into(),
            route: "chat",
            model: model.into(),
            provider: "p".into(),
            upstream_model: "m".into(),
            status: 200,
            stream: false,
            input_tokens: input,
            output_tokens: 2,
            cached_tokens: 0,
            cost_usd: 0.5,
            latency_ms: 3,
            ttft_ms: None,
            error: None,
        }
    }

    #[tokio::test]
    async fn records_and_sums_usage_in_a_file_that_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = SqliteStore::open(&url).await.unwrap();
        store.record_usage(&[record("a", 10), record("a", 5), record("b", 1)]).await.unwrap();
        drop(store);
        let store = SqliteStore::open(&url).await.unwrap();
        let totals = store.usage_totals().await.unwrap();
        assert_eq!(totals.len(), 2);
        assert_eq!(totals[0].model, "a");
        assert_eq!(totals[0].requests, 2);
        assert_eq!(totals[0].input_tokens, 15);
        assert!((totals[0].cost_usd - 1.0).abs() < 1e-9);
    }

    #[tokio::test]
    async fn in_memory_database_keeps_its_data() {
        let store = SqliteStore::open("sqlite::memory:").await.unwrap();
        store.record_usage(&[record("a", 1)]).await.unwrap();
        store.ping().await.unwrap();
        assert_eq!(store.usage_totals().await.unwrap().len(), 1);
    }
}
