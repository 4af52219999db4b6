//! A room's last messages, so a client that reconnects gets what it missed.
//!
//! Every message published to a room that keeps history gets the room's
//! next offset (1, 2, …) and joins its last `history_size` messages. A
//! history has an epoch, a random name given when it starts: once a quiet
//! room's history has expired, offsets start again under a new epoch, and a
//! client that names the old epoch learns that what it missed is gone.
//!
//! In memory the history lives in this process. With Redis it is shared:
//! one script assigns the offset, stores the message and publishes it, so
//! every node sees the offsets in publishing order.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use redis::RedisError;

use crate::config::RoomOptions;
use crate::state::bus::{Bus, Message};
use crate::state::redis::{Lua, RedisConnections, is_noscript};

/// Assigns the next offset, keeps the message, trims and publishes.
/// KEYS: meta hash, list. ARGV: epoch if new, size, ttl ms, channel, wire
/// before the offset, wire after it, stored message before, after.
const APPEND: &str = r"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'epoch', epoch)
end
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
local ttl = tonumber(ARGV[3])
redis.call('RPUSH', KEYS[2], ARGV[7] .. offset .. ARGV[8])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[2]), -1)
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('PUBLISH', ARGV[4], ARGV[5] .. offset .. ARGV[6])
return {epoch, offset}
";

/// What a subscriber that names where it stopped gets back.
#[derive(Debug, Clone, PartialEq)]
pub struct Recovery {
    /// Every message after the client's offset, in order.
    pub messages: Vec<Arc<Message>>,
    /// False when some were lost (the epoch changed, or the oldest kept
    /// message is newer than the client's next one).
    pub complete: bool,
    pub epoch: String,
    /// The room's latest offset.
    pub offset: u64,
}

/// Where the client says it stopped.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct Since {
    pub offset: u64,
    pub epoch: String,
}

#[derive(Debug)]
pub enum History {
    Memory(Mutex<HashMap<String, Ring>>),
    Redis(Box<RedisHistory>),
}

#[derive(Debug)]
pub struct RedisHistory {
    connections: RedisConnections,
    prefix: String,
    append: Lua,
}

#[derive(Debug)]
pub struct Ring {
    epoch: String,
    offset: u64,
    messages: VecDeque<Arc<Message>>,
    expires: Instant,
}

#[derive(Debug, thiserror::Error)]
#[error("the room history store (Redis) failed: {0}")]
pub struct HistoryError(String);

impl From<RedisError> for HistoryError {
    fn from(error: RedisError) -> Self {
        HistoryError(error.to_string())
    }
}

impl Ring {
    /// A history with no message yet, under a new epoch.
    fn new(now: Instant) -> Ring {
        Ring { epoch: new_epoch(), offset: 0, messages: VecDeque::new(), expires: now }
    }
}

/// A topic's two Redis keys: its epoch and last offset, and its messages;
/// one script uses both, so in a cluster they share the topic's hash tag.
fn keys(connections: &RedisConnections, prefix: &str, topic: &str) -> (String, String) {
    let group = connections.group(&format!("{prefix}{topic}"));
    (format!("{group}:meta"), format!("{group}:list"))
}

fn new_epoch() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

impl History {
    pub fn memory() -> History {
        History::Memory(Mutex::default())
    }

    pub fn redis(connections: RedisConnections, prefix: &str) -> History {
        History::Redis(Box::new(RedisHistory {
            connections,
            prefix: format!("{prefix}history:"),
            append: Lua::new(APPEND),
        }))
    }

    /// Publishes `message` to every node with its new offset, keeping it in
    /// the topic's history; returns the offset and epoch.
    pub async fn publish(
        &self,
        bus: &Bus,
        mut message: Message,
        options: &RoomOptions,
    ) -> Result<(u64, String), HistoryError> {
        match self {
            History::Memory(rings) => {
                let mut rings = rings.lock().unwrap_or_else(PoisonError::into_inner);
                let now = Instant::now();
                let ring = rings.entry(message.topic.clone()).or_insert_with(|| Ring::new(now));
                if ring.expires < now && ring.offset > 0 {
                    *ring = Ring::new(now);
                }
                ring.offset += 1;
                ring.expires = now + options.history_ttl;
                message.offset = Some(ring.offset);
                let message = Arc::new(message);
                ring.messages.push_back(message.clone());
                while ring.messages.len() > options.history_size {
                    ring.messages.pop_front();
                }
                let result = (ring.offset, ring.epoch.clone());
                // Under the lock, so listeners get the offsets in order.
                bus.publish(Message::clone(&message));
                Ok(result)
            }
            History::Redis(redis) => {
                let RedisHistory { connections, prefix, append } = redis.as_ref();
                // The offset goes between the two halves of each text.
                message.offset = Some(u64::MAX);
                let marker = u64::MAX.to_string();
                let (channel, wire) = bus
                    .redis_wire(&message)
                    .ok_or_else(|| HistoryError("the bus is not on Redis".into()))?;
                let stored =
                    serde_json::to_string(&message).map_err(|e| HistoryError(e.to_string()))?;
                let split = |text: &str| -> Result<(String, String), HistoryError> {
                    let (a, b) = text
                        .split_once(&marker)
                        .ok_or_else(|| HistoryError("could not place the offset".into()))?;
                    Ok((a.to_string(), b.to_string()))
                };
                let (wire_a, wire_b) = split(&wire)?;
                let (stored_a, stored_b) = split(&stored)?;
                let (meta, list) = keys(connections, prefix, &message.topic);
                let ttl = options.history_ttl.as_millis().max(1).to_string();
                let size = options.history_size.max(1).to_string();
                let epoch = new_epoch();
                let call = |body: bool| {
                    let mut command = append.command(body);
                    command.arg(2).arg(&meta).arg(&list);
                    command.arg(&epoch).arg(&size).arg(&ttl).arg(&channel);
                    command.arg(&wire_a).arg(&wire_b).arg(&stored_a).arg(&stored_b);
                    command
                };
                let mut connection = connections.get().await?;
                let (epoch, offset): (String, u64) =
                    match call(false).query_async(&mut connection).await {
                        Err(error) if is_noscript(&error) => {
                            call(true).query_async(&mut connection).await?
                        }
                        other => other?,
                    };
                message.offset = Some(offset);
                bus.deliver_local(message);
                Ok((offset, epoch))
            }
        }
    }

    /// The messages of `topic` after `since`, and the room's current place.
    pub async fn since(
        &self,
        topic: &str,
        since: Option<&Since>,
    ) -> Result<Recovery, HistoryError> {
        let (epoch, offset, messages) = match self {
            History::Memory(rings) => {
                let rings = rings.lock().unwrap_or_else(PoisonError::into_inner);
                match rings.get(topic) {
                    Some(ring) if ring.expires >= Instant::now() => {
                        (ring.epoch.clone(), ring.offset, ring.messages.iter().cloned().collect())
                    }
                    _ => (String::new(), 0, Vec::new()),
                }
            }
            History::Redis(redis) => {
                let RedisHistory { connections, prefix, .. } = redis.as_ref();
                let mut connection = connections.get().await?;
                let (meta, list) = keys(connections, prefix, topic);
                let ((epoch, offset), texts): ((Option<String>, Option<u64>), Vec<String>) =
                    redis::pipe()
                        .cmd("HMGET")
                        .arg(&meta)
                        .arg("epoch")
                        .arg("offset")
                        .cmd("LRANGE")
                        .arg(&list)
                        .arg(0)
                        .arg(-1)
                        .query_async(&mut connection)
                        .await?;
                let messages = texts
                    .iter()
                    .filter_map(|t| serde_json::from_str::<Message>(t).ok())
                    .map(Arc::new)
                    .collect();
                (epoch.unwrap_or_default(), offset.unwrap_or(0), messages)
            }
        };
        let Some(since) = since else {
            return Ok(Recovery { messages: Vec::new(), complete: true, epoch, offset });
        };
        if since.epoch != epoch {
            // A new history: everything in it is new to this client.
            let complete = epoch.is_empty() && since.offset == 0;
            return Ok(Recovery { messages, complete, epoch, offset });
        }
        let after: Vec<Arc<Message>> =
            messages.into_iter().filter(|m| m.offset.is_some_and(|o| o > since.offset)).collect();
        let first = after.first().and_then(|m| m.offset).unwrap_or(offset + 1);
        let complete = since.offset >= offset || first == since.offset + 1;
        Ok(Recovery { messages: after, complete, epoch, offset })
    }

    /// Drops expired in-memory histories.
    pub fn purge(&self) {
        if let History::Memory(rings) = self {
            let now = Instant::now();
            rings.lock().unwrap_or_else(PoisonError::into_inner).retain(|_, r| r.expires >= now);
        }
    }
}

/// How often expired in-memory histories are dropped.
pub const PURGE_EVERY: Duration = Duration::from_secs(30);
