//! Placeholder: replaced by the wait queue.

use std::sync::Arc;

#[derive(Debug, Default)]
pub struct CapacitySignal {
    notify: tokio::sync::Notify,
}

impl CapacitySignal {
    pub fn new() -> Arc<Self> {
        Arc::new(CapacitySignal::default())
    }

    pub fn freed(&self) {
        self.notify.notify_waiters();
    }
}
