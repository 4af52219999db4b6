//! Who is in a room: one entry per subscribed connection.
//!
//! In memory, the entries of this node. With Redis, each node keeps its
//! own entries of a room in a hash (`presence:{room}:{node}`, in a Redis
//! Cluster `{presence:{room}}:{node}`, the room's hash tag) that it
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
    redis: Option<Shared>,
}

/// This node's side of presence in Redis.
#[derive(Debug)]
struct Shared {
    connections: RedisConnections,
    /// `{prefix}presence:`.
    prefix: String,
    node: String,
}

impl Shared {
    /// The start of `room`'s keys; in a cluster a hash tag, so that the
    /// pipelines of one room stay in one slot.
    fn room(&self, room: &str) -> String {
        self.connections.group(&format!("{}{room}", self.prefix))
    }

    /// A node's entries in `room`.
    fn hash(&self, room: &str, node: &str) -> String {
        format!("{}:{node}", self.room(room))
    }

    /// The nodes with entries in `room`, scored by when theirs expire.
    fn nodes(&self, room: &str) -> String {
        format!("{}:nodes", self.room(room))
    }

    /// Adds to `pipe` what keeps this node's entries in `room` alive for
    /// another [`NODE_TTL`].
    fn keep_alive(&self, pipe: &mut redis::Pipeline, room: &str) {
        let ttl = NODE_TTL.as_millis() as i64;
        let nodes = self.nodes(room);
        pipe.pexpire(self.hash(room, &self.node), ttl).ignore();
        pipe.zadd(&nodes, &self.node, crate::time::now_ms() + ttl).ignore();
        pipe.pexpire(&nodes, ttl).ignore();
    }

    /// Runs `pipe`; a failure is logged (presence is best effort).
    async fn run(&self, pipe: redis::Pipeline, what: &str) {
        let result: Result<(), RedisError> = async {
            let mut c = self.connections.get().await?;
            pipe.query_async(&mut c).await
        }
        .await;
        if let Err(error) = result {
            tracing::debug!(%error, "could not {what} presence in Redis");
        }
    }
}

impl Presence {
    pub fn new(redis: Option<(RedisConnections, &str)>, node: &str) -> Presence {
        Presence {
            local: Mutex::default(),
            redis: redis.map(|(connections, prefix)| Shared {
                connections,
                prefix: format!("{prefix}presence:"),
                node: node.to_string(),
            }),
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
        if let Some(shared) = &self.redis {
            let mut pipe = redis::pipe();
            pipe.hset(shared.hash(room, &shared.node), connection, text).ignore();
            shared.keep_alive(&mut pipe, room);
            shared.run(pipe, "record").await;
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
        if let Some(shared) = &self.redis {
            let mut pipe = redis::pipe();
            pipe.hdel(shared.hash(room, &shared.node), connection).ignore();
            shared.run(pipe, "remove").await;
        }
    }

    /// Everyone in `room`, on every node.
    pub async fn list(&self, room: &str) -> Result<Vec<Value>, RedisError> {
        let Some(shared) = &self.redis else {
            let local = self.local.lock().unwrap_or_else(PoisonError::into_inner);
            return Ok(local.get(room).map(|e| e.values().cloned().collect()).unwrap_or_default());
        };
        let mut c = shared.connections.get().await?;
        let nodes: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(shared.nodes(room))
            .arg(crate::time::now_ms())
            .arg("+inf")
            .query_async(&mut c)
            .await?;
        let mut pipe = redis::pipe();
        for node in &nodes {
            pipe.cmd("HVALS").arg(shared.hash(room, node));
        }
        let values: Vec<Vec<String>> =
            if nodes.is_empty() { Vec::new() } else { pipe.query_async(&mut c).await? };
        Ok(values.iter().flatten().filter_map(|t| serde_json::from_str(t).ok()).collect())
    }

    /// Keeps this node's entries alive in Redis (call every [`REFRESH_EVERY`]).
    pub async fn refresh(&self) {
        let Some(shared) = &self.redis else { return };
        let rooms: Vec<String> =
            self.local.lock().unwrap_or_else(PoisonError::into_inner).keys().cloned().collect();
        if rooms.is_empty() {
            return;
        }
        let refresh = |pipe: &mut redis::Pipeline, room: &str| {
            shared.keep_alive(pipe, room);
            pipe.cmd("ZREMRANGEBYSCORE")
                .arg(shared.nodes(room))
                .arg("-inf")
                .arg(crate::time::now_ms())
                .ignore();
        };
        if shared.connections.is_cluster() {
            // Each room's keys are in a slot of their own: a pipeline each.
            let pipes = rooms.iter().map(|room| {
                let mut pipe = redis::pipe();
                refresh(&mut pipe, room);
                shared.run(pipe, "refresh")
            });
            futures_util::future::join_all(pipes).await;
            return;
        }
        let mut pipe = redis::pipe();
        for room in &rooms {
            refresh(&mut pipe, room);
        }
        shared.run(pipe, "refresh").await;
    }
}
