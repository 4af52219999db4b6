//! Which nodes are alive in a cluster, so that each can take its share of
//! what the nodes split between them (provider keys' configured limits),
//! and whether Redis answers this node: the beat is its ping, so readiness
//! and `floodgate_redis_up` come from it.
//!
//! Every node writes its name with the time into one sorted set in Redis
//! (`<prefix>nodes`) every [`BEAT`], drops entries older than [`GONE_AFTER`]
//! and counts the rest. A node that drains removes itself, so the others'
//! shares grow at once; one that dies ages out. When Redis does not answer,
//! the last count stands: a node never takes a larger share than it had on
//! an unanswered count.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::redis::RedisConnections;
use crate::telemetry::{self, metric};

/// How often a node says it is alive.
const BEAT: Duration = Duration::from_secs(1);
/// A node not heard from for this long is counted out.
const GONE_AFTER: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct Members {
    key: String,
    node: String,
    count: AtomicU64,
    /// The last beat reached Redis (within its deadline).
    up: AtomicBool,
}

impl Members {
    pub fn new(prefix: &str, node: &str) -> Arc<Members> {
        Arc::new(Members {
            key: format!("{prefix}nodes"),
            node: node.to_string(),
            count: AtomicU64::new(1),
            up: AtomicBool::new(true),
        })
    }

    /// Live nodes, this one included, as last counted.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Whether Redis answered the last beat.
    pub fn redis_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Beats until `shutdown`, calling `changed` with each new count (and
    /// once with the first); then leaves the set.
    pub async fn run(
        self: Arc<Self>,
        connections: RedisConnections,
        changed: impl Fn(u64) + Send + 'static,
        shutdown: CancellationToken,
    ) {
        let gauge = telemetry::gauge(metric::CLUSTER_NODES, &[]);
        let up_gauge = telemetry::gauge(metric::REDIS_UP, &[]);
        up_gauge.set(1.0);
        let mut first = true;
        loop {
            let beat = self.beat(&connections).await;
            let up = beat.is_ok();
            up_gauge.set(if up { 1.0 } else { 0.0 });
            if up != self.up.swap(up, Ordering::Relaxed) {
                if up {
                    tracing::info!("Redis answers again; shared state is back");
                } else {
                    tracing::error!(
                        "Redis does not answer: limits hold per node, the cache serves from this node and job submissions are refused until it returns"
                    );
                }
            }
            match beat {
                Ok(count) => {
                    let count = count.max(1);
                    gauge.set(count as f64);
                    if self.count.swap(count, Ordering::Relaxed) != count || first {
                        tracing::info!(
                            nodes = count,
                            "cluster size changed; provider key limits are shared among the nodes"
                        );
                        changed(count);
                    }
                    first = false;
                }
                Err(error) => tracing::debug!(%error, "cluster membership beat failed"),
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(BEAT) => {}
            }
        }
        let mut connection = connections.shared();
        let leave = redis::cmd("ZREM").arg(&self.key).arg(&self.node).to_owned();
        let _ = tokio::time::timeout(
            Duration::from_millis(500),
            leave.query_async::<i64>(&mut connection),
        )
        .await;
    }

    async fn beat(&self, connections: &RedisConnections) -> Result<u64, String> {
        let now = crate::time::now_ms();
        let gone = now - GONE_AFTER.as_millis() as i64;
        let mut connection = connections.shared();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("ZADD")
            .arg(&self.key)
            .arg(now)
            .arg(&self.node)
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(&self.key)
            .arg("-inf")
            .arg(format!("({gone}"))
            .ignore()
            .cmd("PEXPIRE")
            .arg(&self.key)
            .arg(GONE_AFTER.as_millis() as u64 * 10)
            .ignore()
            .cmd("ZCARD")
            .arg(&self.key);
        let answer = tokio::time::timeout(
            Duration::from_millis(500),
            pipe.query_async::<(u64,)>(&mut connection),
        )
        .await
        .map_err(|_| "no answer in 500ms".to_string())?
        .map_err(|e| e.to_string())?;
        Ok(answer.0)
    }
}
