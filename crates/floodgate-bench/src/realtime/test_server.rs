//! A tiny gateway for the tests, on 127.0.0.1 port 0: plain WebSocket on `/ws`, Socket.IO on
//! `/socket.io/`, and `POST /v1/rooms/NAME/messages` relaying `data` to the subscribers of
//! `room:NAME`, all on one port (the first bytes of a connection tell HTTP from an upgrade).
//! Nodes started on one [`Hub`] relay each other's posts, as gateway nodes on one Redis do.

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::value::RawValue;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{
    Request as UpgradeRequest, Response as UpgradeResponse,
};
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_util::sync::CancellationToken;

pub(crate) const TOKEN: &str = "test-token";

/// How the server treats its clients.
#[derive(Debug, Clone)]
pub(crate) struct Behavior {
    /// Connections served; later ones are refused (plain: close 1013 "node full"; Socket.IO:
    /// `44{"message":"node full"}`).
    pub capacity: usize,
    /// A ping every this long (plain: a WebSocket ping frame; Socket.IO: engine.io `2`); a
    /// client that has not answered the previous one by the next is closed (plain: 1011;
    /// Socket.IO: engine.io close `1`).
    pub ping_every: Option<Duration>,
    /// Every message goes out twice.
    pub duplicate: bool,
    /// Subscribed connections are closed with this code and reason after this long.
    pub close_after: Option<(Duration, u16, &'static str)>,
}

impl Default for Behavior {
    fn default() -> Behavior {
        Behavior { capacity: usize::MAX, ping_every: None, duplicate: false, close_after: None }
    }
}

/// What the server saw.
#[derive(Debug, Default)]
pub(crate) struct ServerStats {
    pub served: AtomicUsize,
    pub subscribed: AtomicUsize,
    pub published: AtomicUsize,
    pub pings: AtomicUsize,
    pub pongs: AtomicUsize,
    /// Close frames from clients.
    pub client_closes: AtomicUsize,
    /// Clients closed for not answering a ping.
    pub ping_timeouts: AtomicUsize,
    pub peers: Mutex<HashSet<IpAddr>>,
}

/// One published message.
#[derive(Debug)]
struct Relayed {
    topic: String,
    data: String,
}

/// What nodes share: their posts reach each other's subscribers.
#[derive(Debug, Clone)]
pub(crate) struct Hub(broadcast::Sender<Arc<Relayed>>);

impl Hub {
    pub(crate) fn new() -> Hub {
        Hub(broadcast::channel(4096).0)
    }
}

/// A running node; stops when dropped.
#[derive(Debug)]
pub(crate) struct TestServer {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    pub stats: Arc<ServerStats>,
    shutdown: CancellationToken,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

#[derive(Debug)]
struct Node {
    behavior: Behavior,
    stats: Arc<ServerStats>,
    hub: Hub,
    shutdown: CancellationToken,
}

pub(crate) async fn start(behavior: Behavior) -> TestServer {
    start_on(&Hub::new(), behavior).await
}

pub(crate) async fn start_on(hub: &Hub, behavior: Behavior) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stats = Arc::new(ServerStats::default());
    let shutdown = CancellationToken::new();
    let node = Arc::new(Node {
        behavior,
        stats: Arc::clone(&stats),
        hub: hub.clone(),
        shutdown: shutdown.clone(),
    });
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = node.shutdown.cancelled() => return,
            };
            if let Ok((stream, peer)) = accepted {
                node.stats.peers.lock().unwrap().insert(peer.ip());
                tokio::spawn(serve(stream, Arc::clone(&node)));
            }
        }
    });
    TestServer { url, stats, shutdown }
}

async fn serve(stream: TcpStream, node: Arc<Node>) {
    let mut head = [0_u8; 4];
    loop {
        match stream.peek(&mut head).await {
            Ok(0) | Err(_) => return,
            Ok(n) if n >= head.len() => break,
            Ok(_) => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    }
    if &head == b"POST" {
        let service = hyper::service::service_fn(move |request| {
            let node = Arc::clone(&node);
            async move { Ok::<_, Infallible>(publish(request, &node).await) }
        });
        let _ignored = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .await;
        return;
    }
    let mut target = String::new();
    #[expect(clippy::result_large_err, reason = "the signature of tungstenite's Callback")]
    let callback = |request: &UpgradeRequest, response: UpgradeResponse| {
        target = request.uri().to_string();
        Ok(response)
    };
    // Small buffers, as the bench's own: a test may hold thousands of connections.
    let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
    let Ok(ws) =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)).await
    else {
        return;
    };
    let refused = node.stats.served.fetch_add(1, Ordering::SeqCst) >= node.behavior.capacity;
    if target.starts_with("/socket.io/") {
        socketio(ws, &node, refused).await;
    } else {
        plain(ws, &target, &node, refused).await;
    }
}

async fn publish(request: Request<Incoming>, node: &Node) -> Response<Full<Bytes>> {
    let answer = |status: StatusCode, body: &str| {
        let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
        *response.status_mut() = status;
        response
    };
    let path = request.uri().path().to_string();
    let Some(room) = path.strip_prefix("/v1/rooms/").and_then(|p| p.strip_suffix("/messages"))
    else {
        return answer(StatusCode::NOT_FOUND, r#"{"error":"not found"}"#);
    };
    let authorized = request
        .headers()
        .get("authorization")
        .is_some_and(|value| value.as_bytes() == format!("Bearer {TOKEN}").as_bytes());
    if !authorized {
        return answer(StatusCode::UNAUTHORIZED, r#"{"error":"unauthorized"}"#);
    }
    let Ok(body) = request.into_body().collect().await else {
        return answer(StatusCode::BAD_REQUEST, r#"{"error":"body"}"#);
    };
    #[derive(serde::Deserialize)]
    struct Post {
        data: Box<RawValue>,
    }
    let Ok(post) = serde_json::from_slice::<Post>(&body.to_bytes()) else {
        return answer(StatusCode::BAD_REQUEST, r#"{"error":"json"}"#);
    };
    let relayed = Relayed { topic: format!("room:{room}"), data: post.data.get().to_string() };
    let receivers = node.hub.0.send(Arc::new(relayed)).unwrap_or(0);
    node.stats.published.fetch_add(1, Ordering::SeqCst);
    answer(StatusCode::OK, &format!(r#"{{"receivers":{receivers}}}"#))
}

type Ws = WebSocketStream<TcpStream>;

async fn close(ws: &mut Ws, code: u16, reason: &'static str) {
    let frame = CloseFrame { code: code.into(), reason: reason.into() };
    let _ignored = ws.send(Message::Close(Some(frame))).await;
}

/// Reads until the client has closed too (answering its close frame).
async fn finish(mut ws: Ws) {
    let _ignored =
        tokio::time::timeout(Duration::from_secs(2), async { while ws.next().await.is_some() {} })
            .await;
}

async fn plain(mut ws: Ws, target: &str, node: &Node, refused: bool) {
    if refused {
        close(&mut ws, 1013, "node full").await;
        return finish(ws).await;
    }
    if !target.contains(&format!("token={TOKEN}")) {
        close(&mut ws, 1008, "unauthorized").await;
        return finish(ws).await;
    }
    let mut relayed = node.hub.0.subscribe();
    let hello = ws.send(Message::text(r#"{"op":"connected","client":"c1"}"#)).await;
    if hello.is_err() {
        return;
    }
    let mut topic: Option<String> = None;
    let mut close_at: Option<tokio::time::Instant> = None;
    let every = node.behavior.ping_every.unwrap_or(Duration::from_secs(3600));
    let mut pings = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    // Late ticks are not made up in a burst, which would leave no time to answer.
    pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut awaiting_pong = false;
    loop {
        let far = tokio::time::Instant::now() + Duration::from_secs(3600);
        tokio::select! {
            message = ws.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    let frame: serde_json::Value = serde_json::from_str(&text).unwrap();
                    if frame["op"] == "subscribe" {
                        let subscribed = frame["topic"].as_str().unwrap().to_string();
                        let ack = serde_json::json!({"op": "subscribed", "topic": subscribed});
                        topic = Some(subscribed);
                        node.stats.subscribed.fetch_add(1, Ordering::SeqCst);
                        if ws.send(Message::text(ack.to_string())).await.is_err() {
                            return;
                        }
                        close_at = node
                            .behavior
                            .close_after
                            .map(|(after, _, _)| tokio::time::Instant::now() + after);
                    }
                }
                Some(Ok(Message::Pong(_))) => {
                    awaiting_pong = false;
                    node.stats.pongs.fetch_add(1, Ordering::SeqCst);
                }
                Some(Ok(Message::Close(_))) => {
                    node.stats.client_closes.fetch_add(1, Ordering::SeqCst);
                    return finish(ws).await;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            },
            _ = pings.tick(), if node.behavior.ping_every.is_some() => {
                if awaiting_pong {
                    node.stats.ping_timeouts.fetch_add(1, Ordering::SeqCst);
                    close(&mut ws, 1011, "ping timeout").await;
                    return finish(ws).await;
                }
                awaiting_pong = true;
                node.stats.pings.fetch_add(1, Ordering::SeqCst);
                if ws.send(Message::Ping(Bytes::from_static(b"hb"))).await.is_err() {
                    return;
                }
            }
            message = relayed.recv() => {
                let Ok(message) = message else { return };
                if topic.as_deref() != Some(message.topic.as_str()) {
                    continue;
                }
                let frame = format!(
                    r#"{{"topic":"{}","event":"message","data":{},"offset":1}}"#,
                    message.topic, message.data
                );
                for _ in 0..if node.behavior.duplicate { 2 } else { 1 } {
                    if ws.send(Message::text(frame.clone())).await.is_err() {
                        return;
                    }
                }
            }
            () = tokio::time::sleep_until(close_at.unwrap_or(far)), if close_at.is_some() => {
                let (_, code, reason) = node.behavior.close_after.unwrap();
                close(&mut ws, code, reason).await;
                return finish(ws).await;
            }
            () = node.shutdown.cancelled() => return,
        }
    }
}

async fn socketio(mut ws: Ws, node: &Node, refused: bool) {
    let open = r#"0{"sid":"e1","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#;
    if ws.send(Message::text(open)).await.is_err() {
        return;
    }
    // CONNECT with the token.
    loop {
        let Some(Ok(message)) = ws.next().await else { return };
        let Message::Text(text) = message else { continue };
        let Some(auth) = text.strip_prefix("40") else { continue };
        let token = serde_json::from_str::<serde_json::Value>(auth)
            .ok()
            .and_then(|auth| auth["token"].as_str().map(str::to_string));
        let answer = if refused {
            r#"44{"message":"node full"}"#
        } else if token.as_deref() != Some(TOKEN) {
            r#"44{"message":"unauthorized"}"#
        } else {
            r#"40{"sid":"s1"}"#
        };
        if ws.send(Message::text(answer)).await.is_err() || answer.starts_with("44") {
            return finish(ws).await;
        }
        break;
    }
    let mut relayed = node.hub.0.subscribe();
    let mut topic: Option<String> = None;
    let every = node.behavior.ping_every.unwrap_or(Duration::from_secs(3600));
    let mut pings = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    // Late ticks are not made up in a burst, which would leave no time to answer.
    pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut awaiting_pong = false;
    loop {
        tokio::select! {
            message = ws.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    if text.as_str() == "3" {
                        awaiting_pong = false;
                        node.stats.pongs.fetch_add(1, Ordering::SeqCst);
                    } else if let Some(event) = text.strip_prefix("42") {
                        let event: serde_json::Value = serde_json::from_str(event).unwrap();
                        if event[0] == "subscribe" {
                            let subscribed = event[1]["topic"].as_str().unwrap().to_string();
                            let ack = serde_json::json!(["subscribed", {"topic": subscribed}]);
                            topic = Some(subscribed);
                            node.stats.subscribed.fetch_add(1, Ordering::SeqCst);
                            if ws.send(Message::text(format!("42{ack}"))).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                Some(Ok(Message::Close(_))) => {
                    node.stats.client_closes.fetch_add(1, Ordering::SeqCst);
                    return finish(ws).await;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            },
            message = relayed.recv() => {
                let Ok(message) = message else { return };
                if topic.as_deref() != Some(message.topic.as_str()) {
                    continue;
                }
                let event = format!(
                    r#"42["message",{{"topic":"{}","data":{},"offset":1}}]"#,
                    message.topic, message.data
                );
                for _ in 0..if node.behavior.duplicate { 2 } else { 1 } {
                    if ws.send(Message::text(event.clone())).await.is_err() {
                        return;
                    }
                }
            }
            _ = pings.tick(), if node.behavior.ping_every.is_some() => {
                if awaiting_pong {
                    node.stats.ping_timeouts.fetch_add(1, Ordering::SeqCst);
                    let _ignored = ws.send(Message::text("1")).await;
                    return finish(ws).await;
                }
                awaiting_pong = true;
                node.stats.pings.fetch_add(1, Ordering::SeqCst);
                if ws.send(Message::text("2")).await.is_err() {
                    return;
                }
            }
            () = node.shutdown.cancelled() => return,
        }
    }
}
