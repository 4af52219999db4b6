//! Shared, fast-changing state: what every node must agree on within a
//! moment, such as which provider keys are out of use (later: rate counters,
//! breaker state). One trait; in-process on a single node, Redis in a cluster.

pub mod bus;
pub mod members;
mod memory;
pub mod redis;
#[cfg(test)]
pub mod test_servers;

use async_trait::async_trait;

pub use memory::MemoryState;

#[derive(Debug, thiserror::Error)]
#[error("state backend {backend}: {message}")]
pub struct StateError {
    pub backend: &'static str,
    pub message: String,
}

#[async_trait]
pub trait StateBackend: Send + Sync + std::fmt::Debug {
    /// `memory` or `redis`, for health and metrics.
    fn name(&self) -> &'static str;

    /// Records that key `index` of `provider` was refused and is out of use.
    async fn disable_key(
        &self,
        provider: &str,
        index: usize,
        reason: &str,
    ) -> Result<(), StateError>;

    /// Puts every key of `provider` back in use (an operator's reset).
    async fn enable_keys(&self, provider: &str) -> Result<(), StateError>;

    /// `(index, reason)` of the keys of `provider` that are out of use.
    async fn disabled_keys(&self, provider: &str) -> Result<Vec<(usize, String)>, StateError>;

    /// Answers when the backend is reachable.
    async fn ping(&self) -> Result<(), StateError>;
}
