//! Who is in a room: one entry per subscribed connection.
//!
//! In memory, the entries of this node. With Redis, each node keeps its
//! own entries of a room in a hash (`presence:{room}:{node}`) that it
//! refreshes while it lives, and lists itself in the room's set of nodes
//! with an expiry time; a reader reads the hashes of the nodes not yet
//! expired. A node that dies leaves nothing behind for longer than
//! [`NODE_TTL`].

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use redis::RedisError;
use serde_json::Value;

use crate::state::redis::RedisConnections;

/// How long a node's entries outlive its last refresh.
pub const NODE_TTL: Duration = Duration::from_secs(60);
/// How often a node refreshes its entries.
pub const REFRESH_EVERY: Duration = Duration::from_secs(20);

#[derive(Debug)]
pub struct Presence {
    /// room → connection id → entry (this node's).
    local: Mutex<HashMap<String, HashMap<u64, Value>>>,
    redis: Option<(RedisConnections, String, String)>,
}

impl Presence {
    pub fn new(redis: Option<(RedisConnections, &str)>, node: &str) -> Presence {
        Presence {
            local: Mutex::default(),
            redis: redis.map(|(c, prefix)| (c, format!("{prefix}presence:"), node.to_string())),
        }
    }

    pub async fn join(&self, room: &str, connection: u64, entry: Value) {
        let text = entry.to_string();
        self.local
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(room.to_string())
            .or_default()
            .insert(connection, entry);
        if let Some((connections, prefix, node)) = &self.redis {
            let hash = format!("{prefix}{room}:{node}");
            let nodes = format!("{prefix}{room}:nodes");
            let expires = crate::time::now_ms() + NODE_TTL.as_millis() as i64;
            let result: Result<(), RedisError> = async {
                let mut c = connections.get().await?;
                redis::pipe()
                    .hset(&hash, connection, text)
                    .ignore()
                    .pexpire(&hash, NODE_TTL.as_millis() as i64)
                    .ignore()
                    .zadd(&nodes, node, expires)
                    .ignore()
                    .pexpire(&nodes, NODE_TTL.as_millis() as i64)
                    .ignore()
                    .query_async(&mut c)
                    .await
            }
            .await;
            if let Err(error) = result {
                tracing::debug!(%error, "could not record presence in Redis");
            }
        }
    }

    pub async fn leave(&self, room: &str, connection: u64) {
        {
            let mut local = self.local.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(entries) = local.get_mut(room) {
                entries.remove(&connection);
                if entries.is_empty() {
                    local.remove(room);
                }
            }
        }
        if let Some((connections, prefix, node)) = &self.redis {
            let hash = format!("{prefix}{room}:{node}");
            let result: Result<(), RedisError> = async {
                let mut c = connections.get().await?;
                redis::cmd("HDEL").arg(&hash).arg(connection).query_async(&mut c).await
            }
            .await;
            if let Err(error) = result {
                tracing::debug!(%error, "could not remove presence from Redis");
            }
        }
    }

    /// Everyone in `room`, on every node.
    pub async fn list(&self, room: &str) -> Result<Vec<Value>, RedisError> {
        let Some((connections, prefix, _)) = &self.redis else {
            let local = self.local.lock().unwrap_or_else(PoisonError::into_inner);
            return Ok(local.get(room).map(|e| e.values().cloned().collect()).unwrap_or_default());
        };
        let mut c = connections.get().await?;
        let nodes_key = format!("{prefix}{room}:nodes");
        let nodes: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(&nodes_key)
            .arg(crate::time::now_ms())
            .arg("+inf")
            .query_async(&mut c)
            .await?;
        let mut pipe = redis::pipe();
        for node in &nodes {
            pipe.cmd("HVALS").arg(format!("{prefix}{room}:{node}"));
        }
        let values: Vec<Vec<String>> =
            if nodes.is_empty() { Vec::new() } else { pipe.query_async(&mut c).await? };
        Ok(values.iter().flatten().filter_map(|t| serde_json::from_str(t).ok()).collect())
    }

    /// Keeps this node's entries alive in Redis (call every [`REFRESH_EVERY`]).
    pub async fn refresh(&self) {
        let Some((connections, prefix, node)) = &self.redis else { return };
        let rooms: Vec<String> =
            self.local.lock().unwrap_or_else(PoisonError::into_inner).keys().cloned().collect();
        if rooms.is_empty() {
            return;
        }
        let expires = crate::time::now_ms() + NODE_TTL.as_millis() as i64;
        let mut pipe = redis::pipe();
        for room in &rooms {
            let hash = format!("{prefix}{room}:{node}");
            let nodes = format!("{prefix}{room}:nodes");
            pipe.pexpire(&hash, NODE_TTL.as_millis() as i64).ignore();
            pipe.zadd(&nodes, node, expires).ignore();
            pipe.pexpire(&nodes, NODE_TTL.as_millis() as i64).ignore();
            pipe.cmd("ZREMRANGEBYSCORE")
                .arg(&nodes)
                .arg("-inf")
                .arg(crate::time::now_ms())
                .ignore();
        }
        let result: Result<(), RedisError> = async {
            let mut c = connections.get().await?;
            pipe.query_async(&mut c).await
        }
        .await;
        if let Err(error) = result {
            tracing::debug!(%error, "could not refresh presence in Redis");
        }
    }
}
