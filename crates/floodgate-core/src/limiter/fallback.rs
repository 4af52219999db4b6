//! The shared limiter with a local stand-in: while Redis does not answer,
//! this node limits on its own in-memory state (limits then hold per node,
//! not per cluster), says so in `floodgate_limiter_degraded` and
//! `/health/ready`, and goes back to Redis once a ping answers.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::{BudgetCheck, Check, Limiter, LimiterError, Rate, Settlement, Slot, Verdict};
use crate::telemetry::metric;

#[derive(Debug)]
pub struct Fallback {
    shared: Arc<dyn Limiter>,
    local: Arc<dyn Limiter>,
    degraded: AtomicBool,
    /// Slots the local limiter holds, so they are released there.
    local_slots: Mutex<HashSet<String>>,
}

impl Fallback {
    pub fn new(shared: Arc<dyn Limiter>, local: Arc<dyn Limiter>) -> Arc<Fallback> {
        metrics::gauge!(metric::LIMITER_DEGRADED).set(0.0);
        Arc::new(Fallback {
            shared,
            local,
            degraded: AtomicBool::new(false),
            local_slots: Mutex::new(HashSet::new()),
        })
    }

    pub fn degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    fn fail(&self, error: &LimiterError) {
        metrics::counter!(metric::LIMITER_ERRORS).increment(1);
        if !self.degraded.swap(true, Ordering::Relaxed) {
            metrics::gauge!(metric::LIMITER_DEGRADED).set(1.0);
            tracing::error!(%error, "the shared limiter is unreachable; limiting on this node's own state until it answers");
        }
    }

    /// While degraded, pings the shared limiter every second.
    pub async fn run_probe(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            if self.degraded() && self.shared.ping().await.is_ok() {
                self.degraded.store(false, Ordering::Relaxed);
                metrics::gauge!(metric::LIMITER_DEGRADED).set(0.0);
                tracing::info!("the shared limiter answers again");
            }
        }
    }

    fn active(&self) -> &Arc<dyn Limiter> {
        if self.degraded() { &self.local } else { &self.shared }
    }
}

#[async_trait]
impl Limiter for Fallback {
    fn name(&self) -> &'static str {
        self.shared.name()
    }

    async fn admit(
        &self,
        checks: &[Check],
        slot: Option<&Slot>,
        budget: Option<&BudgetCheck>,
    ) -> Result<Verdict, LimiterError> {
        if !self.degraded() {
            match self.shared.admit(checks, slot, budget).await {
                Ok(verdict) => return Ok(verdict),
                Err(error) => self.fail(&error),
            }
        }
        let verdict = self.local.admit(checks, slot, budget).await?;
        if let Some(slot) = slot
            && verdict.allowed()
            && let Ok(mut local) = self.local_slots.lock()
        {
            local.insert(slot.lease_id.clone());
        }
        Ok(verdict)
    }

    async fn adjust(&self, key: &str, rate: Rate, delta: i64) -> Result<(), LimiterError> {
        let result = self.active().adjust(key, rate, delta).await;
        if let Err(error) = &result
            && !self.degraded()
        {
            self.fail(error);
        }
        result
    }

    async fn release(&self, slot: &Slot) -> Result<(), LimiterError> {
        let local = self.local_slots.lock().map(|mut s| s.remove(&slot.lease_id)).unwrap_or(false);
        if local { self.local.release(slot).await } else { self.shared.release(slot).await }
    }

    async fn spend(
        &self,
        budget_key: &str,
        usd: f64,
        ttl: Option<Duration>,
    ) -> Result<(), LimiterError> {
        // Spend goes to both: the local copy stays close enough to stand in.
        let _ = self.local.spend(budget_key, usd, ttl).await;
        if self.degraded() {
            return Ok(());
        }
        let result = self.shared.spend(budget_key, usd, ttl).await;
        if let Err(error) = &result {
            self.fail(error);
        }
        result
    }

    async fn seed_spend(
        &self,
        budget_key: &str,
        usd: f64,
        ttl: Option<Duration>,
    ) -> Result<f64, LimiterError> {
        let local = self.local.seed_spend(budget_key, usd, ttl).await?;
        if self.degraded() {
            return Ok(local);
        }
        match self.shared.seed_spend(budget_key, usd, ttl).await {
            Ok(value) => Ok(value),
            Err(error) => {
                self.fail(&error);
                Ok(local)
            }
        }
    }

    async fn settle(&self, settlement: &Settlement) -> Result<(), LimiterError> {
        // Slots go back where they were taken.
        let (local_slots, shared_slots): (Vec<Slot>, Vec<Slot>) = {
            let mut local = self.local_slots.lock().ok();
            settlement
                .release
                .iter()
                .cloned()
                .partition(|slot| local.as_mut().is_some_and(|set| set.remove(&slot.lease_id)))
        };
        let local_part = Settlement {
            adjust: if self.degraded() { settlement.adjust.clone() } else { Vec::new() },
            spend: settlement.spend.clone(),
            release: local_slots,
        };
        // Spend goes to both: the local copy stays close enough to stand in.
        let _ = self.local.settle(&local_part).await;
        if self.degraded() {
            return Ok(());
        }
        let shared_part = Settlement {
            adjust: settlement.adjust.clone(),
            spend: settlement.spend.clone(),
            release: shared_slots,
        };
        let result = self.shared.settle(&shared_part).await;
        if let Err(error) = &result {
            self.fail(error);
        }
        result
    }

    async fn ping(&self) -> Result<(), LimiterError> {
        self.shared.ping().await
    }
}
