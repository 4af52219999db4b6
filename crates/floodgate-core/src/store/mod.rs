//! Durable data: the usage ledger now; virtual keys, budgets and job history
//! later. One trait; SQLite embedded on a single node, PostgreSQL in a cluster.

mod sqlite;

use async_trait::async_trait;

pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// One answered (or failed) request, as the ledger keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageRecord {
    /// Unix milliseconds.
    pub at_ms: i64,
    pub request_id: String,
    /// `chat`, `messages` or `embeddings`.
    pub route: &'static str,
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
    /// Low-cardinality error label, when the request failed.
    pub error: Option<String>,
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
    fn name(&self) -> &'static str;

    /// Appends records in one transaction.
    async fn record_usage(&self, records: &[UsageRecord]) -> Result<(), StoreError>;

    async fn usage_totals(&self) -> Result<Vec<UsageTotals>, StoreError>;

    async fn ping(&self) -> Result<(), StoreError>;
}
