//! Realtime delivery: topics pushed to WebSocket (`/ws`), Socket.IO and
//! SSE clients.
//!
//! Every transport goes through one [`Realtime`] hub per node. A
//! connection is admitted first ([`Realtime::admit`]: the node's and the
//! key's connection caps), which gives it a [`Client`]: its bounded queue of
//! outgoing messages and its subscriptions. Subscribing checks the topic
//! and the caller's right to it (`job:<id>` for the job's owner,
//! `room:<name>` by the key's room patterns) and may replay the room's
//! history from a given offset.
//!
//! Messages come from the topic [`Bus`], so a message published on any
//! node reaches the subscribers of every node. Each topic with subscribers
//! here has one forwarding task, which hands each message to every
//! subscriber's queue without waiting: a subscriber whose queue is full is
//! too slow, and is told to close (its connection ends with a close reason)
//! rather than holding memory or the others back.

pub mod history;
pub mod presence;
pub mod socketio;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Instant;

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::RealtimeConfig;
use crate::jobs::Jobs;
use crate::pipeline::auth::Caller;
use crate::state::bus::{Bus, Message, Received};
use crate::state::redis::RedisConnections;
use crate::telemetry::metric;
pub use history::{History, Recovery, Since};
pub use presence::Presence;

pub const ROOM: &str = "room:";
pub const JOB: &str = "job:";

/// The scope a virtual key needs to publish to rooms.
pub const PUBLISH_SCOPE: &str = "publish";

/// Longest room name or pattern, in characters.
pub const MAX_NAME: usize = 128;

fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '@')
}

/// A character of a room pattern: a room name's, or `*`.
pub fn pattern_char(c: char) -> bool {
    c == '*' || name_char(c)
}

/// A room name: 1–128 characters from `A-Z a-z 0-9 _ - . : @`.
pub fn check_room_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME || !name.chars().all(name_char) {
        return Err(format!(
            "room name {name:?} must be 1 to {MAX_NAME} characters from A-Z a-z 0-9 _ - . : @"
        ));
    }
    Ok(())
}

/// A room pattern: a room name that may hold `*` (any run of characters).
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() || pattern.len() > MAX_NAME || !pattern.chars().all(pattern_char) {
        return Err(format!(
            "room pattern {pattern:?} must be 1 to {MAX_NAME} characters from A-Z a-z 0-9 _ - . : @ \
             and * (any run of characters), e.g. \"team-42-*\""
        ));
    }
    Ok(())
}

/// Whether `name` matches `pattern`, where `*` stands for any run of characters.
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let Some(first) = parts.next() else { return pattern == name };
    let Some(mut rest) = name.strip_prefix(first) else { return false };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else { return rest.is_empty() };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

/// Which transport a connection came in on (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    WebSocket,
    SocketIo,
    Sse,
}

impl Transport {
    pub const ALL: [Transport; 3] = [Transport::WebSocket, Transport::SocketIo, Transport::Sse];

    fn index(self) -> usize {
        self as usize
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Transport::WebSocket => "ws",
            Transport::SocketIo => "socketio",
            Transport::Sse => "sse",
        }
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("realtime is disabled on this node ([realtime] enabled = false)")]
    Disabled,
    #[error(
        "this node holds its maximum of {max} realtime connections (realtime.max_connections); \
         retry in a few seconds, or connect to another node"
    )]
    NodeFull { max: usize },
    #[error(
        "this key holds its maximum of {max} realtime connections on this node \
         (realtime.max_connections_per_key); close one first"
    )]
    KeyFull { max: usize },
    #[error("this node is shutting down; connect to another node")]
    Draining,
}

impl Refusal {
    /// Seconds a client should wait before trying again.
    pub fn retry_after(&self) -> u64 {
        match self {
            Refusal::NodeFull { .. } | Refusal::Draining => 2,
            Refusal::KeyFull { .. } => 10,
            Refusal::Disabled => 60,
        }
    }
}

/// Why a subscription (or a publish) was refused; the message goes to the client.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TopicError {
    #[error("topic {0:?} is not valid: use \"room:<name>\" or \"job:<id>\"")]
    Invalid(String),
    #[error("{0}")]
    BadRoom(String),
    #[error("this key may not use room {0:?} (its rooms do not include it)")]
    Forbidden(String),
    #[error(
        "this key may not publish to rooms: it needs the publish scope (or use the master key)"
    )]
    NoPublishScope,
    #[error("no job {0:?} for this key")]
    NoJob(String),
    #[error("at most {0} subscriptions per connection (realtime.max_subscriptions)")]
    TooMany(usize),
    #[error("{0}")]
    Unavailable(String),
}

/// One subscriber of a topic on this node.
#[derive(Debug)]
struct Sink {
    queue: mpsc::Sender<Arc<Message>>,
    slow: CancellationToken,
}

#[derive(Debug)]
struct Topic {
    sinks: HashMap<u64, Sink>,
    forwarder: tokio::task::AbortHandle,
}

/// The node's realtime hub.
#[derive(Debug)]
pub struct Realtime {
    pub config: RealtimeConfig,
    bus: Arc<Bus>,
    jobs: Arc<Jobs>,
    history: History,
    pub presence: Presence,
    node: String,
    /// Open connections by transport (`Transport::index`).
    by_transport: [AtomicUsize; 3],
    per_owner: Mutex<HashMap<String, usize>>,
    topics: Mutex<HashMap<String, Topic>>,
    subscriptions: AtomicUsize,
    next_id: AtomicU64,
    /// Cancelled at shutdown: every connection closes with "going away".
    pub closing: CancellationToken,
}

/// Who holds a connection, for its rights and its caps.
#[derive(Debug, Clone)]
pub struct Principal {
    pub caller: Caller,
}

impl Principal {
    /// What the per-key cap counts by: the key, the end user, or the master key.
    fn owner(&self) -> String {
        match &self.caller {
            Caller::Anonymous => "anonymous".into(),
            Caller::Master => "master".into(),
            Caller::Key(key) => key.id.clone(),
            Caller::User(user) => format!("user:{}", user.id),
        }
    }

    /// The master key (or an open gateway) may do anything.
    fn unlimited(&self) -> bool {
        matches!(self.caller, Caller::Anonymous | Caller::Master)
    }

    /// Whether this caller may subscribe to room `name`.
    pub fn may_join(&self, name: &str, config: &RealtimeConfig) -> bool {
        match &self.caller {
            Caller::Anonymous | Caller::Master => true,
            Caller::Key(key) => match &key.rooms {
                None => true,
                Some(patterns) => patterns.iter().any(|p| pattern_matches(p, name)),
            },
            Caller::User(user) => config
                .user_rooms
                .iter()
                .any(|p| pattern_matches(&p.replace("{sub}", &user.id), name)),
        }
    }

    /// Whether this caller may publish to room `name`: the master key, or a
    /// key with the `publish` scope whose rooms include it.
    pub fn may_publish(&self, name: &str, config: &RealtimeConfig) -> Result<(), TopicError> {
        let scoped = match &self.caller {
            Caller::Anonymous | Caller::Master => return Ok(()),
            Caller::Key(key) => key.scopes.iter().any(|s| s == PUBLISH_SCOPE),
            // End users never publish; their tokens have no scopes.
            Caller::User(_) => return Err(TopicError::Forbidden(name.to_string())),
        };
        if !scoped {
            return Err(TopicError::NoPublishScope);
        }
        if !self.may_join(name, config) {
            return Err(TopicError::Forbidden(name.to_string()));
        }
        Ok(())
    }

    /// How the connection appears in presence.
    fn presence_entry(&self, id: u64, transport: Transport, node: &str) -> Value {
        let (key_id, user) = match &self.caller {
            Caller::Key(key) => (Some(key.id.as_str()), None),
            Caller::User(user) => (None, Some(user.id.as_str())),
            _ => (None, None),
        };
        json!({
            "client": format!("{node}/{id}"),
            "key_id": key_id,
            "user": user,
            "transport": transport.as_str(),
            "joined_at": crate::time::rfc3339(crate::time::now_ms()),
        })
    }
}

/// A subscription that was made.
#[derive(Debug)]
pub struct Subscribed {
    pub topic: String,
    /// For rooms with history: where the room is now, and what was replayed.
    pub recovery: Option<Recovery>,
}

/// One admitted connection: its queue of outgoing messages and its
/// subscriptions. Dropping it unsubscribes everything and frees its place.
#[derive(Debug)]
pub struct Client {
    hub: Arc<Realtime>,
    pub id: u64,
    pub principal: Principal,
    transport: Transport,
    queue: mpsc::Sender<Arc<Message>>,
    pub incoming: mpsc::Receiver<Arc<Message>>,
    /// Cancelled when the client fell `send_buffer` messages behind.
    pub slow: CancellationToken,
    topics: HashSet<String>,
    /// After a recovery, live messages up to this offset were replayed already.
    replayed: HashMap<String, u64>,
}

impl Realtime {
    pub fn new(
        config: RealtimeConfig,
        bus: Arc<Bus>,
        jobs: Arc<Jobs>,
        redis: Option<(RedisConnections, &str)>,
        node: &str,
    ) -> Arc<Realtime> {
        let history = match &redis {
            Some((connections, prefix)) => History::redis(connections.clone(), prefix),
            None => History::memory(),
        };
        Arc::new(Realtime {
            config,
            bus,
            jobs,
            history,
            presence: Presence::new(redis, node),
            node: node.to_string(),
            by_transport: Default::default(),
            per_owner: Mutex::default(),
            topics: Mutex::default(),
            subscriptions: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            closing: CancellationToken::new(),
        })
    }

    /// Connections open on this node.
    pub fn open(&self) -> usize {
        self.by_transport.iter().map(|n| n.load(Ordering::Relaxed)).sum()
    }

    /// What `GET /admin/realtime` shows: this node's connections, topics
    /// and subscriptions, against its caps.
    pub fn view(&self) -> Value {
        let by_transport: serde_json::Map<String, Value> = Transport::ALL
            .iter()
            .map(|t| {
                (
                    t.as_str().to_string(),
                    self.by_transport[t.index()].load(Ordering::Relaxed).into(),
                )
            })
            .collect();
        let per_key = self.per_owner.lock().unwrap_or_else(PoisonError::into_inner).len();
        json!({
            "node": self.node,
            "enabled": self.config.enabled,
            "connections": self.open(),
            "max_connections": self.config.max_connections,
            "by_transport": by_transport,
            "keys_connected": per_key,
            "max_connections_per_key": self.config.max_connections_per_key,
            "subscriptions": self.subscriptions(),
            "topics": self.topics(),
            "send_buffer": self.config.send_buffer,
            "shutting_down": self.closing.is_cancelled(),
        })
    }

    /// Subscriptions on this node.
    pub fn subscriptions(&self) -> usize {
        self.subscriptions.load(Ordering::Relaxed)
    }

    /// Topics with a subscriber on this node.
    pub fn topics(&self) -> usize {
        self.topics.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Whether one more connection of `principal` may be admitted.
    fn check(&self, principal: &Principal) -> Result<(), Refusal> {
        if !self.config.enabled {
            return Err(Refusal::Disabled);
        }
        if self.closing.is_cancelled() {
            return Err(Refusal::Draining);
        }
        if self.open() >= self.config.max_connections {
            return Err(Refusal::NodeFull { max: self.config.max_connections });
        }
        let cap = self.config.max_connections_per_key;
        if cap > 0 && !principal.unlimited() {
            let owners = self.per_owner.lock().unwrap_or_else(PoisonError::into_inner);
            if owners.get(&principal.owner()).copied().unwrap_or(0) >= cap {
                return Err(Refusal::KeyFull { max: cap });
            }
        }
        Ok(())
    }

    /// Admits a connection of `principal`, or says why not.
    pub fn admit(
        self: &Arc<Self>,
        principal: Principal,
        transport: Transport,
    ) -> Result<Client, Refusal> {
        if let Err(refusal) = self.check(&principal) {
            let reason = match refusal {
                Refusal::NodeFull { .. } => "node_full",
                Refusal::KeyFull { .. } => "key_full",
                Refusal::Draining => "draining",
                Refusal::Disabled => "disabled",
            };
            metrics::counter!(metric::REALTIME_REFUSED, "reason" => reason).increment(1);
            return Err(refusal);
        }
        // Counted before the check of the next one; a race past the cap by
        // the connections admitted at the same instant is harmless.
        self.by_transport[transport.index()].fetch_add(1, Ordering::Relaxed);
        if !principal.unlimited() {
            *self
                .per_owner
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(principal.owner())
                .or_default() += 1;
        }
        metrics::gauge!(metric::REALTIME_CONNECTIONS, "transport" => transport.as_str())
            .increment(1.0);
        let (queue, incoming) = mpsc::channel(self.config.send_buffer);
        Ok(Client {
            hub: self.clone(),
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            principal,
            transport,
            queue,
            incoming,
            slow: CancellationToken::new(),
            topics: HashSet::new(),
            replayed: HashMap::new(),
        })
    }

    /// Publishes `data` to room `name` from this node; the room's history
    /// (when it keeps one) gives the message its offset.
    pub async fn publish(
        &self,
        name: &str,
        event: &str,
        data: Value,
    ) -> Result<Option<(u64, String)>, TopicError> {
        check_room_name(name).map_err(TopicError::BadRoom)?;
        let topic = format!("{ROOM}{name}");
        let mut message = Message::new(&topic, event, data);
        message.at_us = Some(crate::time::now_us());
        metrics::counter!(metric::REALTIME_PUBLISHED).increment(1);
        let options = self.config.room(name);
        if options.history_size == 0 {
            self.bus.publish(message);
            return Ok(None);
        }
        self.history
            .publish(&self.bus, message, options)
            .await
            .map(Some)
            .map_err(|e| TopicError::Unavailable(e.to_string()))
    }

    /// Who is in room `name`, on every node.
    pub async fn presence(&self, name: &str) -> Result<Vec<Value>, TopicError> {
        check_room_name(name).map_err(TopicError::BadRoom)?;
        self.presence
            .list(name)
            .await
            .map_err(|e| TopicError::Unavailable(format!("the presence store (Redis) failed: {e}")))
    }

    fn add_sink(self: &Arc<Self>, topic: &str, id: u64, sink: Sink) {
        let mut topics = self.topics.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = topics.get_mut(topic) {
            entry.sinks.insert(id, sink);
            return;
        }
        // Subscribed here, before the task runs, so nothing published
        // from now on is missed.
        let subscription = self.bus.subscribe(topic);
        let forwarder =
            tokio::spawn(forward(Arc::downgrade(self), topic.to_string(), subscription))
                .abort_handle();
        topics.insert(topic.to_string(), Topic { sinks: HashMap::from([(id, sink)]), forwarder });
    }

    fn remove_sink(&self, topic: &str, id: u64) {
        let mut topics = self.topics.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = topics.get_mut(topic) {
            entry.sinks.remove(&id);
            if entry.sinks.is_empty() {
                entry.forwarder.abort();
                topics.remove(topic);
            }
        }
    }

    /// Hands `message` to every subscriber of its topic here, never waiting.
    fn fan_out(&self, message: Arc<Message>) {
        let started = Instant::now();
        let mut delivered = 0u64;
        let mut slow = 0u64;
        {
            let topics = self.topics.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(entry) = topics.get(&message.topic) else { return };
            for sink in entry.sinks.values() {
                match sink.queue.try_send(message.clone()) {
                    Ok(()) => delivered += 1,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        if !sink.slow.is_cancelled() {
                            sink.slow.cancel();
                            slow += 1;
                        }
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {}
                }
            }
        }
        metrics::counter!(metric::REALTIME_MESSAGES, "direction" => "out").increment(delivered);
        if slow > 0 {
            metrics::counter!(metric::REALTIME_DROPPED, "reason" => "slow_consumer")
                .increment(slow);
        }
        // From publishing (on whichever node) to handed to every subscriber here.
        let seconds = match message.at_us {
            Some(at) => crate::time::now_us().saturating_sub(at) as f64 / 1e6,
            None => started.elapsed().as_secs_f64(),
        };
        metrics::histogram!(metric::REALTIME_FANOUT).record(seconds);
    }

    /// Drops expired in-memory room histories, refreshes this node's
    /// presence in Redis, and sets the gauges, until `shutdown`.
    pub async fn run_upkeep(self: Arc<Self>, shutdown: CancellationToken) {
        let mut last_purge = Instant::now();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(presence::REFRESH_EVERY.min(history::PURGE_EVERY)) => {}
            }
            if last_purge.elapsed() >= history::PURGE_EVERY {
                self.history.purge();
                last_purge = Instant::now();
            }
            self.presence.refresh().await;
            metrics::gauge!(metric::REALTIME_SUBSCRIPTIONS).set(self.subscriptions() as f64);
            metrics::gauge!(metric::REALTIME_TOPICS).set(self.topics() as f64);
        }
    }
}

/// One topic's forwarding task: every message of the topic on the bus goes
/// to the topic's subscribers here.
async fn forward(
    hub: Weak<Realtime>,
    topic: String,
    mut subscription: crate::state::bus::Subscription,
) {
    while let Some(received) = subscription.recv().await {
        let Some(hub) = hub.upgrade() else { return };
        match received {
            Received::Message(message) => hub.fan_out(message),
            Received::Lagged(missed) => {
                tracing::warn!(
                    topic,
                    missed,
                    "realtime fan-out fell behind the bus; messages were missed"
                );
                metrics::counter!(metric::REALTIME_DROPPED, "reason" => "lagged").increment(missed);
            }
        }
    }
}

impl Client {
    /// Subscribes to `topic` (`room:<name>` or `job:<id>`), after checking
    /// the caller's right to it. With `since`, a room with history replays
    /// what came after it (returned in [`Subscribed::recovery`]).
    pub async fn subscribe(
        &mut self,
        topic: &str,
        since: Option<&Since>,
    ) -> Result<Subscribed, TopicError> {
        let hub = self.hub.clone();
        let room = if let Some(name) = topic.strip_prefix(ROOM) {
            check_room_name(name).map_err(TopicError::BadRoom)?;
            if !self.principal.may_join(name, &hub.config) {
                return Err(TopicError::Forbidden(name.to_string()));
            }
            Some(name)
        } else if let Some(id) = topic.strip_prefix(JOB) {
            let job = hub.jobs.queue.get(id).await.map_err(|e| {
                TopicError::Unavailable(format!("the job queue did not answer: {e}"))
            })?;
            match job {
                Some(job)
                    if crate::jobs::may_access(&self.principal.caller, job.owner.as_deref()) => {}
                _ => return Err(TopicError::NoJob(id.to_string())),
            }
            None
        } else {
            return Err(TopicError::Invalid(topic.to_string()));
        };
        if self.topics.contains(topic) {
            return Ok(Subscribed { topic: topic.to_string(), recovery: None });
        }
        if self.topics.len() >= hub.config.max_subscriptions {
            return Err(TopicError::TooMany(hub.config.max_subscriptions));
        }
        hub.add_sink(topic, self.id, Sink { queue: self.queue.clone(), slow: self.slow.clone() });
        self.topics.insert(topic.to_string());
        hub.subscriptions.fetch_add(1, Ordering::Relaxed);
        let mut recovery = None;
        if let Some(name) = room {
            let options = hub.config.room(name);
            if options.presence {
                let entry = self.principal.presence_entry(self.id, self.transport, &hub.node);
                hub.presence.join(name, self.id, entry).await;
            }
            if options.history_size > 0 {
                // After subscribing: a message published in between comes
                // twice, and the second one is skipped (`replayed`).
                match hub.history.since(topic, since).await {
                    Ok(found) => {
                        if let Some(last) = found.messages.last().and_then(|m| m.offset) {
                            self.replayed.insert(topic.to_string(), last);
                        }
                        recovery = Some(found);
                    }
                    Err(error) if since.is_some() => {
                        tracing::debug!(%error, "room history unavailable for a recovery");
                    }
                    Err(_) => {}
                }
            }
        }
        Ok(Subscribed { topic: topic.to_string(), recovery })
    }

    pub async fn unsubscribe(&mut self, topic: &str) -> bool {
        if !self.topics.remove(topic) {
            return false;
        }
        self.hub.remove_sink(topic, self.id);
        self.hub.subscriptions.fetch_sub(1, Ordering::Relaxed);
        self.replayed.remove(topic);
        if let Some(name) = topic.strip_prefix(ROOM)
            && self.hub.config.room(name).presence
        {
            self.hub.presence.leave(name, self.id).await;
        }
        true
    }

    /// Whether `message` should go out: false for a live message that a
    /// recovery already replayed.
    pub fn fresh(&mut self, message: &Message) -> bool {
        let Some(last) = self.replayed.get(&message.topic).copied() else { return true };
        match message.offset {
            Some(offset) if offset <= last => false,
            _ => {
                self.replayed.remove(&message.topic);
                true
            }
        }
    }

    /// Counts an incoming frame.
    pub fn received(&self) {
        metrics::counter!(metric::REALTIME_MESSAGES, "direction" => "in").increment(1);
    }

    /// Leaves every topic (and presence) now; also done, without presence,
    /// on drop.
    pub async fn close(&mut self) {
        let topics: Vec<String> = self.topics.iter().cloned().collect();
        for topic in topics {
            self.unsubscribe(&topic).await;
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        for topic in self.topics.drain() {
            self.hub.remove_sink(&topic, self.id);
            self.hub.subscriptions.fetch_sub(1, Ordering::Relaxed);
            if let Some(name) = topic.strip_prefix(ROOM)
                && self.hub.config.room(name).presence
            {
                // Presence needs an await: leave it to a task.
                let hub = self.hub.clone();
                let (name, id) = (name.to_string(), self.id);
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    runtime.spawn(async move { hub.presence.leave(&name, id).await });
                }
            }
        }
        self.hub.by_transport[self.transport.index()].fetch_sub(1, Ordering::Relaxed);
        if !self.principal.unlimited() {
            let mut owners = self.hub.per_owner.lock().unwrap_or_else(PoisonError::into_inner);
            let owner = self.principal.owner();
            if let Some(count) = owners.get_mut(&owner) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    owners.remove(&owner);
                }
            }
        }
        metrics::gauge!(metric::REALTIME_CONNECTIONS, "transport" => self.transport.as_str())
            .decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert!(pattern_matches("team-42-*", "team-42-general"));
        assert!(pattern_matches("*", "anything"));
        assert!(pattern_matches("a*b*c", "aXXbYYc"));
        assert!(pattern_matches("exact", "exact"));
        assert!(!pattern_matches("exact", "exact2"));
        assert!(!pattern_matches("team-42-*", "team-43-general"));
        assert!(!pattern_matches("a*bc", "abc-bc-x"));
        assert!(pattern_matches("*-x", "a-x"));
        assert!(!pattern_matches("ab*ba", "aba"));
        assert!(check_room_name("demo").is_ok());
        assert!(check_room_name("has space").is_err());
        assert!(check_room_name("").is_err());
        assert!(check_pattern("team-*").is_ok());
        assert!(check_pattern("team/*").is_err());
    }
}
