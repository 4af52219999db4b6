//! Virtual keys: made here, kept in the store as SHA-256 hashes, and held by
//! every node in memory so a request's key check never waits for the database.
//!
//! Each node keeps all keys (revoked ones dropped) in a map by hash, and
//! every [`SYNC_EVERY`] asks the store for keys written after the last `seq`
//! it saw: a key created, changed or revoked on any node takes effect on
//! every node within that interval (and at once on the node that wrote it).
//! Keys are random 256-bit strings, so a plain SHA-256 is the right hash:
//! there is nothing to brute-force that a slow hash would protect.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ring::rand::{SecureRandom, SystemRandom};
use tokio_util::sync::CancellationToken;

use crate::store::{Store, StoreError, VirtualKey};
use crate::telemetry::{self, metric};

/// How often a node looks for keys other nodes wrote.
pub const SYNC_EVERY: Duration = Duration::from_millis(250);

/// What every virtual key starts with.
pub const KEY_PREFIX: &str = "fg-";

type Map<V> = HashMap<String, V, foldhash::fast::RandomState>;

#[derive(Debug, Default)]
struct Keys {
    by_hash: Map<Arc<VirtualKey>>,
    /// id → hash, to drop the old entry when a key's row changes.
    hash_of: Map<String>,
    seq: i64,
}

/// The in-memory copy of the store's keys.
#[derive(Debug)]
pub struct KeyRegistry {
    store: Arc<dyn Store>,
    keys: RwLock<Keys>,
}

/// Why a presented key is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRefusal {
    Unknown,
    Expired { at_ms: i64 },
}

impl KeyRegistry {
    /// Loads every key from the store.
    pub async fn load(store: Arc<dyn Store>) -> Result<Arc<KeyRegistry>, StoreError> {
        let registry = Arc::new(KeyRegistry { store, keys: RwLock::new(Keys::default()) });
        registry.sync().await?;
        Ok(registry)
    }

    /// Applies the keys written since the last sync.
    pub async fn sync(&self) -> Result<(), StoreError> {
        let since = self.keys.read().map(|k| k.seq).unwrap_or_default();
        let changed = self.store.keys_since(since).await?;
        if !changed.is_empty() {
            self.apply(changed);
        }
        Ok(())
    }

    /// Puts keys this node just wrote (or read) in place.
    pub fn apply(&self, changed: Vec<VirtualKey>) {
        let Ok(mut keys) = self.keys.write() else {
            return;
        };
        for key in changed {
            keys.seq = keys.seq.max(key.seq);
            if let Some(old) = keys.hash_of.remove(&key.id) {
                keys.by_hash.remove(&old);
            }
            if key.revoked_at_ms.is_none() {
                keys.hash_of.insert(key.id.clone(), key.hash.clone());
                keys.by_hash.insert(key.hash.clone(), Arc::new(key));
            }
        }
        telemetry::gauge(metric::KEYS_ACTIVE, &[]).set(keys.by_hash.len() as f64);
    }

    /// The live key `presented` is, if any.
    pub fn lookup(&self, presented: &str, now_ms: i64) -> Result<Arc<VirtualKey>, KeyRefusal> {
        if !presented.starts_with(KEY_PREFIX) {
            return Err(KeyRefusal::Unknown);
        }
        let hash = hash_key(presented);
        let key = self
            .keys
            .read()
            .ok()
            .and_then(|k| k.by_hash.get(&hash).cloned())
            .ok_or(KeyRefusal::Unknown)?;
        match key.expires_at_ms {
            Some(at_ms) if at_ms <= now_ms => Err(KeyRefusal::Expired { at_ms }),
            _ => Ok(key),
        }
    }

    /// The live (not revoked) key with this id, expired or not.
    pub fn by_id(&self, id: &str) -> Option<Arc<VirtualKey>> {
        let keys = self.keys.read().ok()?;
        keys.hash_of.get(id).and_then(|hash| keys.by_hash.get(hash)).cloned()
    }

    /// Syncs every [`SYNC_EVERY`] until `shutdown`.
    pub async fn run_sync(self: Arc<Self>, shutdown: CancellationToken) {
        let mut failing = false;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(SYNC_EVERY) => {}
            }
            match self.sync().await {
                Ok(()) if failing => {
                    tracing::info!("virtual key sync works again");
                    failing = false;
                }
                Ok(()) => {}
                Err(error) if !failing => {
                    tracing::warn!(%error, "cannot sync virtual keys from the database; serving the keys known so far");
                    failing = true;
                }
                Err(_) => {}
            }
        }
    }
}

/// Lowercase hex SHA-256 of a key.
pub fn hash_key(key: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, key.as_bytes()).as_ref())
}

/// Lowercase hex, for digests in keys and logs.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

/// A new key (`fg-` and 43 base64url characters: 256 random bits) and a new
/// key id (`key_` and 20 hex characters).
pub fn generate() -> Result<(String, String), ring::error::Unspecified> {
    use base64::Engine as _;
    let rng = SystemRandom::new();
    let mut secret = [0u8; 32];
    rng.fill(&mut secret)?;
    let mut id = [0u8; 10];
    rng.fill(&mut id)?;
    let key =
        format!("{KEY_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret));
    Ok((key, format!("key_{}", hex(&id))))
}

/// What lists show of a key: its first characters.
pub fn display_prefix(key: &str) -> String {
    key.chars().take(KEY_PREFIX.len() + 6).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    fn stored(id: &str, key: &str) -> VirtualKey {
        VirtualKey {
            hash: hash_key(key),
            prefix: display_prefix(key),
            ..crate::store::tests::key(id)
        }
    }

    #[test]
    fn keys_are_random_prefixed_and_hashed_to_64_hex() {
        let (a, id_a) = generate().unwrap();
        let (b, id_b) = generate().unwrap();
        assert_ne!(a, b);
        assert_ne!(id_a, id_b);
        assert!(a.starts_with("fg-") && a.len() == 46, "{a}");
        assert!(id_a.starts_with("key_") && id_a.len() == 24);
        let h = hash_key(&a);
        assert_eq!(h.len(), 64);
        assert!(!h.contains(&a[3..]));
        assert_eq!(h, hash_key(&a));
    }

    #[tokio::test]
    async fn a_key_written_by_another_node_is_seen_after_a_sync_and_revocation_removes_it() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("k.db").display());
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&url).await.unwrap());
        let other: Arc<dyn Store> = Arc::new(SqliteStore::open(&url).await.unwrap());
        let registry = KeyRegistry::load(store).await.unwrap();
        let (key, id) = generate().unwrap();
        assert_eq!(registry.lookup(&key, 0), Err(KeyRefusal::Unknown));
        let written = other.put_key(&stored(&id, &key)).await.unwrap();
        registry.sync().await.unwrap();
        assert_eq!(registry.lookup(&key, 0).unwrap().id, id);
        let revoked = VirtualKey { revoked_at_ms: Some(1), ..written };
        other.put_key(&revoked).await.unwrap();
        registry.sync().await.unwrap();
        assert_eq!(registry.lookup(&key, 0), Err(KeyRefusal::Unknown));
    }

    #[tokio::test]
    async fn an_expired_key_is_refused_with_its_expiry() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open("sqlite::memory:").await.unwrap());
        let registry = KeyRegistry::load(store.clone()).await.unwrap();
        let (key, id) = generate().unwrap();
        let written = store
            .put_key(&VirtualKey { expires_at_ms: Some(1000), ..stored(&id, &key) })
            .await
            .unwrap();
        registry.apply(vec![written]);
        assert!(registry.lookup(&key, 999).is_ok());
        assert_eq!(registry.lookup(&key, 1000), Err(KeyRefusal::Expired { at_ms: 1000 }));
    }
}
