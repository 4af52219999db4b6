//! The usage ledger: every request's record goes to the store in batches, off
//! the request path.
//!
//! Handlers hand records to an unbounded channel (never blocking, never
//! failing); one task, waking every [`FLUSH_EVERY`], writes them in
//! transactions of up to [`BATCH`] rows. A
//! failed write is retried with backoff and the rows are kept, so a database
//! hiccup delays the ledger but does not lose it. On shutdown the task drains
//! the channel before it returns.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::routing::Backoff;
use crate::store::{Store, UsageRecord};
use crate::telemetry::{self, metric};

const BATCH: usize = 512;
const FLUSH_EVERY: Duration = Duration::from_millis(250);

#[derive(Debug, Clone)]
pub struct Ledger {
    tx: mpsc::UnboundedSender<UsageRecord>,
}

/// The half that writes; run it with [`LedgerWriter::run`].
#[derive(Debug)]
pub struct LedgerWriter {
    rx: mpsc::UnboundedReceiver<UsageRecord>,
    store: Arc<dyn Store>,
}

impl Ledger {
    pub fn new(store: Arc<dyn Store>) -> (Ledger, LedgerWriter) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Ledger { tx }, LedgerWriter { rx, store })
    }

    pub fn record(&self, record: UsageRecord) {
        telemetry::gauge(metric::LEDGER_PENDING, &[]).increment(1.0);
        if self.tx.send(record).is_err() {
            // Only after shutdown finished: nothing can be written any more.
            metrics::gauge!(metric::LEDGER_PENDING).decrement(1.0);
            tracing::error!("usage record arrived after the ledger stopped; it is lost");
        }
    }
}

impl LedgerWriter {
    /// Writes until `shutdown`, then drains what is queued and returns.
    ///
    /// The writer wakes on a timer, not per record: waking it for every
    /// record would cost a cross-thread wake-up per request.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            let stopping = tokio::select! {
                biased;
                () = shutdown.cancelled() => true,
                () = tokio::time::sleep(FLUSH_EVERY) => false,
            };
            if stopping {
                self.rx.close();
            }
            while let Ok(record) = self.rx.try_recv() {
                batch.push(record);
                if batch.len() >= BATCH {
                    self.write(&mut batch, (!stopping).then_some(&shutdown)).await;
                }
            }
            self.write(&mut batch, (!stopping).then_some(&shutdown)).await;
            if stopping {
                return;
            }
        }
    }

    /// Writes `batch`, retrying until it succeeds. During shutdown (`None`)
    /// retries are bounded so the process can exit.
    async fn write(&self, batch: &mut Vec<UsageRecord>, shutdown: Option<&CancellationToken>) {
        if batch.is_empty() {
            return;
        }
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut tries = 0;
        loop {
            tries += 1;
            match self.store.record_usage(batch).await {
                Ok(_) => {
                    metrics::gauge!(metric::LEDGER_PENDING).decrement(batch.len() as f64);
                    metrics::counter!(metric::LEDGER_WRITTEN).increment(batch.len() as u64);
                    batch.clear();
                    return;
                }
                Err(error) => {
                    tracing::warn!(%error, rows = batch.len(), tries, "usage ledger write failed; retrying");
                    if shutdown.is_none() && tries >= 5 {
                        tracing::error!(
                            rows = batch.len(),
                            "usage ledger could not be written before exit; rows lost"
                        );
                        batch.clear();
                        return;
                    }
                    tokio::time::sleep(backoff.next_delay().max(Duration::from_millis(50))).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    fn record(i: u32) -> UsageRecord {
        UsageRecord {
            record_id: format!("rec-{i}"),
            at_ms: 0,
            request_id: format!("r{i}"),
            route: "chat".into(),
            key_id: None,
            user: None,
            model: "m".into(),
            provider: "p".into(),
            upstream_model: "u".into(),
            status: 200,
            stream: false,
            input_tokens: i,
            output_tokens: 0,
            cached_tokens: 0,
            cost_usd: 0.0,
            latency_ms: 0,
            ttft_ms: None,
            retries: 0,
            cache_hit: false,
            error: None,
        }
    }

    #[tokio::test]
    async fn every_record_is_written_by_the_time_run_returns() {
        let store = Arc::new(SqliteStore::open("sqlite::memory:").await.unwrap());
        let (ledger, writer) = Ledger::new(store.clone());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(writer.run(shutdown.clone()));
        for i in 0..1500 {
            ledger.record(record(i));
        }
        shutdown.cancel();
        task.await.unwrap();
        let totals = store.usage_totals().await.unwrap();
        assert_eq!(totals[0].requests, 1500);
        assert_eq!(totals[0].input_tokens, (0..1500i64).sum::<i64>());
    }
}
