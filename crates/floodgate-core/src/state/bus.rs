//! Topics: messages published on one node reach every subscriber of the
//! topic on every node. In process a topic is a `tokio::sync::broadcast`
//! channel that exists while someone listens; with Redis, each message is
//! also `PUBLISH`ed on `{prefix}topic:{name}`, and a node subscribes (one
//! pub/sub connection per node) to the channels of the topics its own
//! clients listen to, so a node hears only what it needs. A message carries
//! the node it came from, so a node never delivers its own message twice.
//!
//! Delivery is at most once: a listener that falls `CAPACITY` messages
//! behind misses the oldest (it is told, with [`Received::Lagged`]), and
//! messages published while Redis is unreachable reach only the local node.
//! Listeners that must not miss a final state (job events) re-read it from
//! its store after a lag.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use bytes::Bytes;
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::state::redis::RedisConnections;
use crate::telemetry::metric;

/// Messages a listener may fall behind before it misses some.
const CAPACITY: usize = 1024;
/// Messages waiting to be published to Redis; beyond it they stay local.
const PUBLISH_QUEUE: usize = 16 * 1024;

/// One message on a topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub topic: String,
    /// What happened (`token`, `completed`, …; a room's messages use `message`).
    pub event: String,
    pub data: Value,
    /// The message's place in its room's history (rooms that keep one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// When it was published (Unix microseconds), for the fan-out latency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_us: Option<u64>,
    /// The frame realtime clients get, made once for all of them.
    #[serde(skip)]
    frame: OnceLock<Bytes>,
}

impl Message {
    pub fn new(topic: &str, event: &str, data: Value) -> Message {
        Message {
            topic: topic.to_string(),
            event: event.to_string(),
            data,
            offset: None,
            at_us: None,
            frame: OnceLock::new(),
        }
    }

    /// `{"topic", "event", "data", "offset"?}` as JSON text: what `/ws`,
    /// Socket.IO and SSE clients receive.
    pub fn client_frame(&self) -> Bytes {
        self.frame
            .get_or_init(|| {
                let mut frame = serde_json::json!({
                    "topic": self.topic,
                    "event": self.event,
                    "data": self.data,
                });
                if let Some(offset) = self.offset {
                    frame["offset"] = offset.into();
                }
                Bytes::from(frame.to_string())
            })
            .clone()
    }
}

/// What a listener gets next.
#[derive(Debug)]
pub enum Received {
    Message(Arc<Message>),
    /// This many messages were missed.
    Lagged(u64),
}

/// A message as another node reads it from Redis.
#[derive(Deserialize)]
struct Wire {
    node: String,
    #[serde(flatten)]
    message: Message,
}

/// [`Wire`] as this node writes it, borrowing the message.
#[derive(Serialize)]
struct WireRef<'a> {
    node: &'a str,
    #[serde(flatten)]
    message: &'a Message,
}

enum Command {
    Subscribe(String),
    Unsubscribe(String),
}

#[derive(Debug)]
pub struct Bus {
    node: String,
    topics: Mutex<HashMap<String, broadcast::Sender<Arc<Message>>>>,
    redis: Option<RedisSide>,
}

#[derive(Debug)]
struct RedisSide {
    prefix: String,
    publish: mpsc::Sender<(String, String)>,
    commands: mpsc::UnboundedSender<CommandBox>,
}

/// `mpsc` needs `Debug` for the field's derive.
struct CommandBox(Command);

impl std::fmt::Debug for CommandBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Command")
    }
}

/// The background half of a Redis bus: spawn [`BusTasks::run`].
#[derive(Debug)]
pub struct BusTasks {
    bus: Arc<Bus>,
    connections: RedisConnections,
    publish: mpsc::Receiver<(String, String)>,
    commands: mpsc::UnboundedReceiver<CommandBox>,
}

impl Bus {
    /// A bus of this process only.
    pub fn local(node: &str) -> Arc<Bus> {
        Arc::new(Bus { node: node.to_string(), topics: Mutex::default(), redis: None })
    }

    /// A bus shared by every node on this Redis, under `prefix`.
    pub fn redis(node: &str, connections: RedisConnections, prefix: &str) -> (Arc<Bus>, BusTasks) {
        let (publish_tx, publish) = mpsc::channel(PUBLISH_QUEUE);
        let (commands_tx, commands) = mpsc::unbounded_channel();
        let bus = Arc::new(Bus {
            node: node.to_string(),
            topics: Mutex::default(),
            redis: Some(RedisSide {
                prefix: format!("{prefix}topic:"),
                publish: publish_tx,
                commands: commands_tx,
            }),
        });
        (bus.clone(), BusTasks { bus, connections, publish, commands })
    }

    /// Listens to `topic` until the [`Subscription`] is dropped.
    pub fn subscribe(self: &Arc<Self>, topic: &str) -> Subscription {
        let mut topics = self.topics.lock().unwrap_or_else(PoisonError::into_inner);
        let receiver = match topics.get(topic) {
            Some(sender) => sender.subscribe(),
            None => {
                let (sender, receiver) = broadcast::channel(CAPACITY);
                topics.insert(topic.to_string(), sender);
                if let Some(redis) = &self.redis {
                    let channel = format!("{}{topic}", redis.prefix);
                    let _ = redis.commands.send(CommandBox(Command::Subscribe(channel)));
                }
                receiver
            }
        };
        Subscription { bus: self.clone(), topic: topic.to_string(), receiver }
    }

    /// Sends `message` to its topic's listeners here and on every node.
    pub fn publish(&self, message: Message) {
        if let (Some(redis), Some(wire)) = (&self.redis, self.redis_wire(&message))
            && redis.publish.try_send(wire).is_err()
        {
            metrics::counter!(metric::BUS_DROPPED, "reason" => "publish_queue_full").increment(1);
        }
        self.deliver_local(message);
    }

    /// Whether a message on `topic` could reach anyone: a listener here, or
    /// (with Redis) on another node. Lets a publisher skip building
    /// messages nobody hears.
    pub fn wants(&self, topic: &str) -> bool {
        self.redis.is_some()
            || self.topics.lock().unwrap_or_else(PoisonError::into_inner).contains_key(topic)
    }

    /// Topics with a listener on this node.
    pub fn topics(&self) -> usize {
        self.topics.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// The Redis channel and payload [`Bus::publish`] would send for
    /// `message`, for a publisher that sends it itself (a room's history
    /// script publishes in the same step as it stores); `None` on a local bus.
    pub fn redis_wire(&self, message: &Message) -> Option<(String, String)> {
        let redis = self.redis.as_ref()?;
        let text = serde_json::to_string(&WireRef { node: &self.node, message }).ok()?;
        Some((format!("{}{}", redis.prefix, message.topic), text))
    }

    /// Delivers `message` to this node's listeners only (its Redis side
    /// was sent by the caller).
    pub fn deliver_local(&self, message: Message) {
        let topics = self.topics.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(sender) = topics.get(&message.topic) {
            let _ = sender.send(Arc::new(message));
        }
    }

    fn unsubscribe(&self, topic: &str) {
        let mut topics = self.topics.lock().unwrap_or_else(PoisonError::into_inner);
        // The dropped receiver is gone already; the last one takes the topic.
        if topics.get(topic).is_some_and(|s| s.receiver_count() == 0) {
            topics.remove(topic);
            if let Some(redis) = &self.redis {
                let channel = format!("{}{topic}", redis.prefix);
                let _ = redis.commands.send(CommandBox(Command::Unsubscribe(channel)));
            }
        }
    }
}

/// A listener of one topic; dropping it stops listening.
pub struct Subscription {
    bus: Arc<Bus>,
    topic: String,
    receiver: broadcast::Receiver<Arc<Message>>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription").field("topic", &self.topic).finish()
    }
}

impl Subscription {
    /// The next message; `None` never comes while the bus lives.
    pub async fn recv(&mut self) -> Option<Received> {
        match self.receiver.recv().await {
            Ok(message) => Some(Received::Message(message)),
            Err(broadcast::error::RecvError::Lagged(n)) => Some(Received::Lagged(n)),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // Replace the receiver first so the count no longer includes it.
        let (_, empty) = broadcast::channel::<Arc<Message>>(1);
        drop(std::mem::replace(&mut self.receiver, empty));
        self.bus.unsubscribe(&self.topic);
    }
}

impl BusTasks {
    /// Publishes queued messages and relays other nodes' messages until
    /// `shutdown`, reconnecting (and subscribing again) when Redis is lost.
    pub async fn run(self, shutdown: CancellationToken) {
        let BusTasks { bus, connections, mut publish, mut commands } = self;
        let publisher = {
            let connections = connections.clone();
            let shutdown = shutdown.clone();
            async move {
                let mut connection = connections.shared();
                loop {
                    let first = tokio::select! {
                        () = shutdown.cancelled() => return,
                        next = publish.recv() => match next { Some(m) => m, None => return },
                    };
                    // Everything queued goes in one pipeline.
                    let mut pipe = redis::pipe();
                    pipe.cmd("PUBLISH").arg(&first.0).arg(&first.1).ignore();
                    while let Ok((channel, text)) = publish.try_recv() {
                        pipe.cmd("PUBLISH").arg(channel).arg(text).ignore();
                    }
                    if let Err(error) = pipe.query_async::<()>(&mut connection).await {
                        tracing::debug!(%error, "could not publish to Redis; messages stayed local");
                        metrics::counter!(metric::BUS_DROPPED, "reason" => "redis").increment(1);
                    }
                }
            }
        };
        let subscriber = async move {
            loop {
                let connected = tokio::time::timeout(Duration::from_secs(2), connections.pubsub());
                let pubsub = tokio::select! {
                    () = shutdown.cancelled() => return,
                    result = connected => result,
                };
                let Ok(Ok(pubsub)) = pubsub else {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                };
                let (mut sink, mut stream) = pubsub.split();
                let prefix = bus.redis.as_ref().map(|r| r.prefix.clone()).unwrap_or_default();
                let current: Vec<String> = bus
                    .topics
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .keys()
                    .map(|t| format!("{prefix}{t}"))
                    .collect();
                if !current.is_empty() && sink.subscribe(&current).await.is_err() {
                    continue;
                }
                loop {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        command = commands.recv() => {
                            let result = match command {
                                None => return,
                                Some(CommandBox(Command::Subscribe(c))) => sink.subscribe(c).await,
                                Some(CommandBox(Command::Unsubscribe(c))) => sink.unsubscribe(c).await,
                            };
                            if result.is_err() {
                                break;
                            }
                        }
                        message = stream.next() => {
                            let Some(message) = message else { break };
                            let Ok(payload) = message.get_payload::<String>() else { continue };
                            match serde_json::from_str::<Wire>(&payload) {
                                Ok(wire) if wire.node != bus.node => bus.deliver_local(wire.message),
                                Ok(_) => {}
                                Err(error) => tracing::debug!(%error, "an unreadable bus message"),
                            }
                        }
                    }
                }
                tracing::warn!("lost the Redis pub/sub connection of the topic bus; reconnecting");
            }
        };
        tokio::join!(publisher, subscriber);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message(topic: &str, n: u64) -> Message {
        Message::new(topic, "token", json!(n))
    }

    async fn next(sub: &mut Subscription) -> Arc<Message> {
        match tokio::time::timeout(Duration::from_secs(5), sub.recv()).await {
            Ok(Some(Received::Message(m))) => m,
            other => panic!("no message: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_topic_lives_while_someone_listens() {
        let bus = Bus::local("a");
        bus.publish(message("job:1", 0));
        let mut one = bus.subscribe("job:1");
        let mut two = bus.subscribe("job:1");
        bus.publish(message("job:1", 1));
        bus.publish(message("job:2", 2));
        assert_eq!(next(&mut one).await.data, json!(1));
        assert_eq!(next(&mut two).await.data, json!(1));
        drop(one);
        assert_eq!(bus.topics(), 1);
        assert!(bus.wants("job:1") && !bus.wants("job:2"));
        drop(two);
        assert_eq!(bus.topics(), 0);
        assert!(!bus.wants("job:1"));
    }

    #[tokio::test]
    async fn a_slow_listener_is_told_what_it_missed() {
        let bus = Bus::local("a");
        let mut sub = bus.subscribe("t");
        for n in 0..(CAPACITY as u64 + 10) {
            bus.publish(message("t", n));
        }
        assert!(matches!(sub.recv().await, Some(Received::Lagged(10))));
        assert_eq!(next(&mut sub).await.data, json!(10));
    }

    #[tokio::test]
    async fn messages_cross_nodes_through_redis_once() {
        let Ok(url) = std::env::var("FLOODGATE_TEST_REDIS_URL") else { return };
        let prefix = format!("fgtest{}:", uuid::Uuid::new_v4().simple());
        let stop = CancellationToken::new();
        let mut buses = Vec::new();
        for node in ["a", "b"] {
            let connections = RedisConnections::connect(&url, 0).await.unwrap();
            let (bus, tasks) = Bus::redis(node, connections, &prefix);
            tokio::spawn(tasks.run(stop.clone()));
            buses.push(bus);
        }
        let mut on_a = buses[0].subscribe("job:x");
        let mut on_b = buses[1].subscribe("job:x");
        // The subscription reaches Redis in the background: publish until heard.
        let mut n = 0;
        loop {
            buses[0].publish(message("job:x", n));
            if let Ok(Some(Received::Message(m))) =
                tokio::time::timeout(Duration::from_millis(100), on_b.recv()).await
            {
                n = m.data.as_u64().unwrap();
                break;
            }
            n += 1;
            assert!(n < 50, "node b never heard node a");
        }
        buses[1].publish(message("job:x", 1000));
        // a hears its own messages once (locally) and b's once (via Redis).
        let mut heard = Vec::new();
        while let Ok(Some(Received::Message(m))) =
            tokio::time::timeout(Duration::from_millis(300), on_a.recv()).await
        {
            heard.push(m.data.as_u64().unwrap());
        }
        let mut sorted = heard.clone();
        sorted.dedup();
        assert_eq!(sorted.len(), heard.len(), "duplicates: {heard:?}");
        assert!(heard.contains(&1000) && heard.contains(&n), "{heard:?}");
        stop.cancel();
    }
}
