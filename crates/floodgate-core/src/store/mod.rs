//! Durable data: virtual keys and the usage ledger (job history later).
//! One trait; SQLite embedded on a single node, PostgreSQL in a cluster.

mod postgres;
mod sql;
pub(crate) mod sqlite;
#[cfg(test)]
pub(crate) mod tests;

use std::time::Duration;

use async_trait::async_trait;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database: {0}")]
    Invalid(String),
}

/// Connection-pool settings (`[database]` in the config).
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    pub max_connections: u32,
    pub min_connections: u32,
    /// Idle connections above `min_connections` are closed after this.
    pub idle_timeout: Option<Duration>,
    /// Connections are replaced after this age.
    pub max_lifetime: Option<Duration>,
    /// How long a caller waits for a free connection before an error.
    pub acquire_timeout: Duration,
    /// Ping a pooled connection before handing it out.
    pub test_before_acquire: bool,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_connections: 10,
            min_connections: 0,
            idle_timeout: Some(Duration::from_secs(600)),
            max_lifetime: Some(Duration::from_secs(1800)),
            acquire_timeout: Duration::from_secs(5),
            test_before_acquire: true,
        }
    }
}

impl PoolConfig {
    /// A pool of no connections would make every caller wait for the
    /// acquire timeout; say so at start instead.
    fn check(&self) -> Result<(), StoreError> {
        if self.max_connections == 0 {
            return Err(StoreError::Invalid("max_connections must be at least 1".into()));
        }
        Ok(())
    }
}

/// A read replica of the PostgreSQL store (`[database] read_url`), for the
/// read-heavy admin queries.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadReplica {
    pub url: String,
    pub pool: PoolConfig,
}

/// Opens the store `url` names: `sqlite://path`, `sqlite::memory:` or
/// `postgres://…` / `postgresql://…`, and runs its migrations.
pub async fn open(url: &str, pool: &PoolConfig) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    open_with_replica(url, pool, None).await
}

/// As [`open`], with the admin reads on `read` (PostgreSQL only).
pub async fn open_with_replica(
    url: &str,
    pool: &PoolConfig,
    read: Option<&ReadReplica>,
) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    if let Some(read) = read {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(StoreError::Invalid(format!(
                "a read replica needs a PostgreSQL database, not {:?}",
                scheme_of(url)
            )));
        }
        return Ok(std::sync::Arc::new(PostgresStore::open_with_replica(url, pool, read).await?));
    }
    if url.starts_with("sqlite:") {
        Ok(std::sync::Arc::new(SqliteStore::open_with(url, pool).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(std::sync::Arc::new(PostgresStore::open_with(url, pool).await?))
    } else {
        Err(StoreError::Invalid(format!(
            "unsupported database URL {:?}: use sqlite://path, sqlite::memory:, \
             postgres://… or postgresql://…",
            scheme_of(url)
        )))
    }
}

/// The part of `url` before `://` (or the first `:`), so an error can name
/// what was given without repeating a password the URL may hold.
fn scheme_of(url: &str) -> &str {
    let end = url.find("://").or_else(|| url.find(':')).unwrap_or(url.len());
    &url[..end]
}

/// How long a virtual key's budget runs before it starts again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BudgetPeriod {
    /// A UTC day.
    Day,
    /// A UTC calendar month.
    Month,
    /// Never resets.
    #[default]
    Total,
}

impl BudgetPeriod {
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetPeriod::Day => "day",
            BudgetPeriod::Month => "month",
            BudgetPeriod::Total => "total",
        }
    }

    /// The inverse of [`BudgetPeriod::as_str`].
    pub fn parse(text: &str) -> Option<BudgetPeriod> {
        match text {
            "day" => Some(BudgetPeriod::Day),
            "month" => Some(BudgetPeriod::Month),
            "total" => Some(BudgetPeriod::Total),
            _ => None,
        }
    }
}

/// A virtual key as the store keeps it: never the key itself, only its hash.
#[derive(Debug, Clone, PartialEq)]
pub struct VirtualKey {
    /// `key_` and 20 random characters; what the admin API and the ledger name.
    pub id: String,
    pub name: String,
    /// Lowercase hex SHA-256 of the key (64 characters).
    pub hash: String,
    /// The key's first characters (`fg-` and 6 more), to recognise it in lists.
    pub prefix: String,
    /// Aliases the key may use; `None` means all.
    pub models: Option<Vec<String>>,
    pub rpm: Option<u32>,
    pub tpm: Option<u32>,
    pub max_concurrent: Option<u32>,
    pub max_budget_usd: Option<f64>,
    pub budget_period: BudgetPeriod,
    /// Free-form JSON object the app attaches (user id, plan, …).
    pub metadata: serde_json::Value,
    /// Extra rights, e.g. `publish` (rooms).
    pub scopes: Vec<String>,
    /// Room name patterns this key may subscribe to and publish to (`*` matches any run of
    /// characters, e.g. `team-42-*`); `None` means every room.
    pub rooms: Option<Vec<String>>,
    /// Unix milliseconds.
    pub expires_at_ms: Option<i64>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
    /// Assigned by the store on every write, increasing in commit order:
    /// nodes sync their key cache with [`Store::keys_since`].
    pub seq: i64,
}

/// One answered (or failed) request, as the ledger keeps it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct UsageRecord {
    /// Made by the gateway for this record (a UUID), unique: writing the
    /// same record twice stores it once.
    pub record_id: String,
    /// Unix milliseconds.
    pub at_ms: i64,
    /// The `x-request-id` the client saw (the client may choose it, so it
    /// need not be unique).
    pub request_id: String,
    /// `chat`, `messages` or `embeddings`.
    pub route: String,
    /// The virtual key's id; `None` for the master key or with auth off.
    pub key_id: Option<String>,
    /// The end user (JWT `sub`, OpenAI `user`, or `x-floodgate-user`).
    pub user: Option<String>,
    /// The model name the client sent.
    pub model: String,
    /// Empty when no provider answered.
    pub provider: String,
    pub upstream_model: String,
    pub status: u16,
    pub stream: bool,
    pub input_tokens: u32,
    pub output_tokens: u32,
    pub cached_tokens: u32,
    pub cost_usd: f64,
    pub latency_ms: u32,
    pub ttft_ms: Option<u32>,
    /// Upstream calls after the first (retries, fallbacks, hedges).
    pub retries: u32,
    pub cache_hit: bool,
    /// Low-cardinality error label, when the request failed.
    pub error: Option<String>,
}

/// What `GET /admin/usage` groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Key,
    User,
    Model,
    Provider,
    /// The UTC day, `YYYY-MM-DD`.
    Day,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UsageQuery {
    /// Unix milliseconds, inclusive.
    pub from_ms: Option<i64>,
    /// Unix milliseconds, exclusive.
    pub to_ms: Option<i64>,
    /// Empty: one row with the totals.
    pub group_by: Vec<GroupBy>,
    /// Only this key's records.
    pub key_id: Option<String>,
}

/// One group of `GET /admin/usage`; the group columns not asked for are `None`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct UsageRow {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub day: Option<String>,
    pub requests: i64,
    /// Records with a status of 400 or more.
    pub errors: i64,
    /// Records served from the response cache (at no cost).
    pub cache_hits: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_usd: f64,
}

impl UsageRow {
    /// The field `group` fills.
    pub fn group_mut(&mut self, group: GroupBy) -> &mut Option<String> {
        match group {
            GroupBy::Key => &mut self.key_id,
            GroupBy::User => &mut self.user,
            GroupBy::Model => &mut self.model,
            GroupBy::Provider => &mut self.provider,
            GroupBy::Day => &mut self.day,
        }
    }
}

/// Sums of the ledger per model and provider.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageTotals {
    pub model: String,
    pub provider: String,
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_usd: f64,
}

#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// `sqlite` or `postgres`.
    fn name(&self) -> &'static str;

    /// Appends records in one transaction; a record whose `record_id` is
    /// already stored is skipped. Returns how many rows were new.
    async fn record_usage(&self, records: &[UsageRecord]) -> Result<u64, StoreError>;

    /// May read a replica (as [`Store::usage_report`]).
    async fn usage_totals(&self) -> Result<Vec<UsageTotals>, StoreError>;

    /// Sums per group, ordered by the group columns. May read a replica,
    /// so the records of the last moments may be missing.
    async fn usage_report(&self, query: &UsageQuery) -> Result<Vec<UsageRow>, StoreError>;

    /// Total `cost_usd` of `key_id`'s records at or after `from_ms`.
    async fn key_spend(&self, key_id: &str, from_ms: i64) -> Result<f64, StoreError>;

    /// Inserts or replaces (by `id`) a key; the store assigns `seq` and
    /// returns the key as stored. Writes are serialised, so `seq` order is
    /// commit order.
    async fn put_key(&self, key: &VirtualKey) -> Result<VirtualKey, StoreError>;

    async fn get_key(&self, id: &str) -> Result<Option<VirtualKey>, StoreError>;

    /// Keys (revoked ones included) written after `seq`, in `seq` order.
    /// Always read from the primary: the key sync must never miss a write.
    async fn keys_since(&self, seq: i64) -> Result<Vec<VirtualKey>, StoreError>;

    /// Every key (revoked ones included) in `seq` order, for the admin
    /// listing. May read a replica, so a key written a moment ago may be
    /// missing or show its earlier state.
    async fn list_keys(&self) -> Result<Vec<VirtualKey>, StoreError> {
        self.keys_since(0).await
    }

    /// Inserts or replaces (by `id`) finished jobs, in one transaction.
    async fn record_jobs(&self, jobs: &[JobRecord]) -> Result<(), StoreError>;

    /// A finished job by id. Always the primary: a job that just finished
    /// must not look unknown.
    async fn job_record(&self, id: &str) -> Result<Option<JobRecord>, StoreError>;

    /// Deletes history records of jobs that finished before `before_ms`;
    /// returns how many.
    async fn purge_jobs(&self, before_ms: i64) -> Result<u64, StoreError>;

    async fn ping(&self) -> Result<(), StoreError>;
}

/// A finished job in the job history: who owns it and how it is shown.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    pub id: String,
    pub owner: Option<String>,
    pub status: String,
    pub finished_at_ms: i64,
    /// The job's public JSON (`GET /v1/jobs/{id}`).
    pub view: String,
}
