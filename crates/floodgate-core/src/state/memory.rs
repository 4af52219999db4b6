//! The single-node state backend: a map in this process.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{StateBackend, StateError};

#[derive(Debug, Default)]
pub struct MemoryState {
    disabled: Mutex<BTreeMap<(String, usize), String>>,
}

impl MemoryState {
    fn poisoned() -> StateError {
        StateError {
            backend: "memory",
            message: "a thread panicked while holding the state lock".into(),
        }
    }
}

#[async_trait]
impl StateBackend for MemoryState {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn disable_key(
        &self,
        provider: &str,
        index: usize,
        reason: &str,
    ) -> Result<(), StateError> {
        let mut map = self.disabled.lock().map_err(|_| Self::poisoned())?;
        map.insert((provider.to_string(), index), reason.to_string());
        Ok(())
    }

    async fn enable_keys(&self, provider: &str) -> Result<(), StateError> {
        let mut map = self.disabled.lock().map_err(|_| Self::poisoned())?;
        map.retain(|(p, _), _| p != provider);
        Ok(())
    }

    async fn disabled_keys(&self, provider: &str) -> Result<Vec<(usize, String)>, StateError> {
        let map = self.disabled.lock().map_err(|_| Self::poisoned())?;
        Ok(map
            .iter()
            .filter(|((p, _), _)| p == provider)
            .map(|((_, index), reason)| (*index, reason.clone()))
            .collect())
    }

    async fn ping(&self) -> Result<(), StateError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn disabled_keys_are_per_provider() {
        let state = MemoryState::default();
        state.disable_key("a", 1, "401").await.unwrap();
        state.disable_key("b", 0, "403").await.unwrap();
        assert_eq!(state.disabled_keys("a").await.unwrap(), vec![(1, "401".to_string())]);
        assert!(state.disabled_keys("c").await.unwrap().is_empty());
        state.enable_keys("a").await.unwrap();
        assert!(state.disabled_keys("a").await.unwrap().is_empty());
        assert_eq!(state.disabled_keys("b").await.unwrap().len(), 1);
    }
}
