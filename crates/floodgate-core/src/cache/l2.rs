//! The shared layer (L2): answers in Redis, under
//! `{prefix}cache:{alias}:{namespace}:{key}` with the answer's TTL, so one
//! node's answer serves every node and a per-alias or per-key clear is a
//! pattern.
//!
//! L2 never fails a request: every command is bounded by `l2_timeout`; the
//! first failure marks the layer degraded (`floodgate_cache_l2_degraded 1`,
//! `cache: degraded` in `/health/ready`) and requests then skip it, using L1
//! and the upstream only, until a ping every second answers again. Clears
//! reach the other nodes' L1 over a pub/sub channel; a node that lost that
//! channel drops its whole L1 when it reconnects, since it may have missed one.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use floodgate_protocol::Usage;
use futures_util::StreamExt;
use redis::AsyncCommands;

use super::Entry;
use super::key::Digest;
use crate::keys::hex;
use crate::state::redis::{RedisConnections, Scan, glob_escape};
use crate::telemetry::metric;

/// The value's layout version; a value of another version is a miss.
const VERSION: u8 = 1;

#[derive(Debug)]
pub struct L2 {
    connections: RedisConnections,
    prefix: String,
    timeout: Duration,
    degraded: AtomicBool,
    errors: AtomicU64,
}

/// A clear, as published to the other nodes.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClearMessage {
    pub model: Option<String>,
    pub key_id: Option<String>,
    /// The node that cleared (its own L1 is cleared already).
    pub origin: String,
}

impl L2 {
    pub fn new(connections: RedisConnections, prefix: &str, timeout: Duration) -> L2 {
        metrics::gauge!(metric::CACHE_L2_DEGRADED).set(0.0);
        L2 {
            connections,
            prefix: prefix.to_string(),
            timeout,
            degraded: AtomicBool::new(false),
            errors: AtomicU64::new(0),
        }
    }

    pub fn degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    fn fail(&self, what: &str, error: &str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(metric::CACHE_L2_ERRORS).increment(1);
        if !self.degraded.swap(true, Ordering::Relaxed) {
            metrics::gauge!(metric::CACHE_L2_DEGRADED).set(1.0);
            tracing::error!(
                what,
                error,
                "the shared cache (L2) failed; serving from this node's cache and the upstream until Redis answers"
            );
        }
    }

    fn redis_key(&self, alias: &str, namespace: &str, key: &Digest) -> String {
        format!("{}cache:{}:{}:{}", self.prefix, escape(alias), escape(namespace), hex(key))
    }

    fn channel(&self) -> String {
        format!("{}cache:clear", self.prefix)
    }

    /// One command under the timeout; a failure degrades the layer.
    async fn run<T>(
        &self,
        what: &str,
        command: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Option<T> {
        match tokio::time::timeout(self.timeout, command).await {
            Ok(Ok(value)) => Some(value),
            Ok(Err(error)) => {
                self.fail(what, &error.to_string());
                None
            }
            Err(_) => {
                self.fail(what, &format!("no answer in {:?}", self.timeout));
                None
            }
        }
    }

    /// The answer under `key`, when L2 has it and answers in time.
    pub async fn get(&self, alias: &str, namespace: &str, key: &Digest) -> Option<Entry> {
        if self.degraded() {
            return None;
        }
        let redis_key = self.redis_key(alias, namespace, key);
        let value: Option<Vec<u8>> = self
            .run("get", async {
                let mut connection = self.connections.get().await?;
                connection.get(&redis_key).await
            })
            .await?;
        decode(&value?, alias, namespace)
    }

    /// Stores an answer until it expires.
    pub async fn put(&self, key: &Digest, entry: &Entry) {
        if self.degraded() {
            return;
        }
        let ttl = entry.expires_at_ms.saturating_sub(super::unix_ms());
        if ttl == 0 {
            return;
        }
        let redis_key = self.redis_key(&entry.alias, &entry.namespace, key);
        let value = encode(entry);
        self.run("set", async {
            let mut connection = self.connections.get().await?;
            redis::cmd("SET")
                .arg(&redis_key)
                .arg(value.as_ref())
                .arg("PX")
                .arg(ttl)
                .query_async::<()>(&mut connection)
                .await
        })
        .await;
    }

    pub async fn remove(&self, alias: &str, namespace: &str, key: &Digest) {
        let redis_key = self.redis_key(alias, namespace, key);
        self.run("del", async {
            let mut connection = self.connections.get().await?;
            connection.unlink::<_, ()>(&redis_key).await
        })
        .await;
    }

    /// Deletes the answers of an alias, of a namespace, or all; and tells
    /// the other nodes to clear their L1. Not bounded by `l2_timeout`
    /// (an operator waits for it), but it fails rather than hangs.
    pub async fn clear(
        &self,
        alias: Option<&str>,
        namespace: Option<&str>,
        message: &ClearMessage,
    ) -> Result<u64, redis::RedisError> {
        let pattern = format!(
            "{}cache:{}:{}:*",
            glob_escape(&self.prefix),
            alias.map_or("*".to_string(), |a| glob_escape(&escape(a))),
            namespace.map_or("*".to_string(), |n| glob_escape(&escape(n))),
        );
        let mut connection = self.connections.get().await?;
        let mut deleted = 0u64;
        // In a cluster: every master's keys, each UNLINK split by slot.
        let mut scan = Scan::start(&mut connection, &pattern, 1000).await?;
        while let Some(keys) = scan.next::<String>(&mut connection).await? {
            if !keys.is_empty() {
                deleted += connection.unlink::<_, u64>(&keys).await?;
            }
        }
        let payload = serde_json::to_string(message).unwrap_or_default();
        connection.publish::<_, _, ()>(self.channel(), payload).await?;
        Ok(deleted)
    }

    /// While degraded, pings Redis every second.
    pub async fn run_probe(&self, shutdown: tokio_util::sync::CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            if !self.degraded() {
                continue;
            }
            let ping = tokio::time::timeout(Duration::from_millis(500), async {
                let mut connection = self.connections.get().await?;
                redis::cmd("PING").query_async::<String>(&mut connection).await
            })
            .await;
            if matches!(ping, Ok(Ok(_))) {
                self.degraded.store(false, Ordering::Relaxed);
                metrics::gauge!(metric::CACHE_L2_DEGRADED).set(0.0);
                tracing::info!("the shared cache (L2) answers again");
            }
        }
    }

    /// Receives the other nodes' clears and applies them to this node's L1
    /// with `apply`; `reset` is called when the channel was lost and found again.
    pub async fn run_clear_listener(
        &self,
        node: &str,
        apply: impl Fn(&ClearMessage),
        reset: impl Fn(),
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let mut lost = false;
        loop {
            let subscribed = async {
                let mut pubsub = self.connections.pubsub().await?;
                pubsub.subscribe(self.channel()).await?;
                redis::RedisResult::Ok(pubsub)
            };
            let pubsub = tokio::select! {
                () = shutdown.cancelled() => return,
                result = tokio::time::timeout(Duration::from_secs(2), subscribed) => result,
            };
            let Ok(Ok(pubsub)) = pubsub else {
                lost = true;
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            };
            if lost {
                reset();
            }
            let mut messages = pubsub.into_on_message();
            loop {
                let message = tokio::select! {
                    () = shutdown.cancelled() => return,
                    message = messages.next() => message,
                };
                let Some(message) = message else { break };
                let Ok(payload) = message.get_payload::<String>() else { continue };
                match serde_json::from_str::<ClearMessage>(&payload) {
                    Ok(clear) if clear.origin != node => apply(&clear),
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "an unreadable cache clear message"),
                }
            }
            lost = true;
        }
    }
}

/// `:` and `%` of an alias or namespace, percent-encoded so the key's parts
/// stay apart.
fn escape(part: &str) -> String {
    part.replace('%', "%25").replace(':', "%3A")
}

/// `version, header length (u32 LE), header JSON, body`.
fn encode(entry: &Entry) -> Bytes {
    let header = serde_json::json!({
        "provider": entry.provider,
        "model": entry.model,
        "stored_at_ms": entry.stored_at_ms,
        "expires_at_ms": entry.expires_at_ms,
        "usage": [entry.usage.input_tokens, entry.usage.output_tokens,
                  entry.usage.cache_read_tokens, entry.usage.cache_creation_tokens,
                  entry.usage.reasoning_tokens],
    })
    .to_string();
    let mut out = BytesMut::with_capacity(5 + header.len() + entry.body.len());
    out.put_u8(VERSION);
    out.put_u32_le(u32::try_from(header.len()).unwrap_or(u32::MAX));
    out.put_slice(header.as_bytes());
    out.put_slice(&entry.body);
    out.freeze()
}

#[derive(serde::Deserialize)]
struct Header {
    provider: String,
    model: String,
    stored_at_ms: u64,
    expires_at_ms: u64,
    usage: [u32; 5],
}

fn decode(value: &[u8], alias: &str, namespace: &str) -> Option<Entry> {
    let (&version, rest) = value.split_first()?;
    if version != VERSION || rest.len() < 4 {
        return None;
    }
    let (len, rest) = rest.split_at(4);
    let len = usize::try_from(u32::from_le_bytes(len.try_into().ok()?)).ok()?;
    if rest.len() < len {
        return None;
    }
    let (header, body) = rest.split_at(len);
    let header: Header = serde_json::from_slice(header).ok()?;
    let [input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens, reasoning_tokens] =
        header.usage;
    Some(Entry::new(
        Bytes::copy_from_slice(body),
        alias,
        namespace,
        header.provider,
        header.model,
        Usage {
            input_tokens,
            output_tokens,
            cache_read_tokens,
            cache_creation_tokens,
            reasoning_tokens,
        },
        header.stored_at_ms,
        header.expires_at_ms,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_bad_values_are_misses() {
        let entry = Entry::new(
            Bytes::from_static(b"{\"id\":\"x\"}"),
            "chat",
            "k:1",
            "mock".into(),
            "m".into(),
            Usage { input_tokens: 3, output_tokens: 4, ..Usage::default() },
            1,
            super::super::unix_ms() + 60_000,
        );
        let value = encode(&entry);
        let back = decode(&value, "chat", "k:1").unwrap_or_else(|| panic!("no entry"));
        assert_eq!(back.body, entry.body);
        assert_eq!(back.usage, entry.usage);
        assert_eq!(back.provider, "mock");
        assert!(decode(&value[..3], "chat", "k:1").is_none());
        assert!(decode(b"\x02abcd", "chat", "k:1").is_none());
        assert!(decode(b"", "chat", "k:1").is_none());
    }

    #[test]
    fn key_parts_cannot_run_into_each_other() {
        assert_eq!(escape("a:b%c"), "a%3Ab%25c");
        assert_eq!(glob_escape("fg:*[x]?"), "fg:\\*\\[x\\]\\?");
    }
}
