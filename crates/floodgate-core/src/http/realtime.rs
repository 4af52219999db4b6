//! Realtime routes: the plain WebSocket at `/ws`, a room's SSE stream
//! (`GET /v1/rooms/{name}/events`), publishing (`POST
//! /v1/rooms/{name}/messages`) and presence (`GET /v1/rooms/{name}/presence`).
//! Socket.IO is served by [`crate::realtime::socketio`].
//!
//! `/ws` frames are JSON text. In: `{"op": "subscribe", "topic", "since"?:
//! {"offset", "epoch"}}`, `{"op": "unsubscribe", "topic"}`, `{"op":
//! "ping"}`. Out: `{"op": "connected", "client"}` first, then
//! `{"op": "subscribed", "topic", "offset"?, "epoch"?, "recovered"?}`,
//! `{"op": "unsubscribed", "topic"}`, `{"op": "pong"}`, `{"op": "error",
//! "message", "topic"?}`, and the messages `{"topic", "event", "data",
//! "offset"?}`. The node pings every `ping_interval` and closes a
//! connection it has heard nothing from for `ping_interval +
//! ping_timeout`. Close codes: 1001 (node shutting down), 1009 (frame too
//! large), 4008 (slow consumer: its send buffer was full), 4000 (ping
//! timeout).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message as Frame, Utf8Bytes};

use super::chat::Client as Caller;
use super::{ApiError, json_response, parse_json, read_body, respond};
use crate::app::AppState;
use crate::pipeline::auth::Auth;
use crate::pipeline::observe::RouteInfo;
use crate::realtime::{Client, Principal, Realtime, Since, Subscribed, Transport};
use crate::telemetry::metric;
use floodgate_protocol::Format;

/// A comment line this often keeps an idle SSE stream open through proxies.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
pub const CLOSE_SLOW: u16 = 4008;
pub const CLOSE_PING_TIMEOUT: u16 = 4000;

/// The caller of a realtime connection: the key in `Authorization` or
/// `x-api-key`, or (for browsers, which cannot set headers on a WebSocket)
/// in `?token=`. A refusal is counted.
pub fn authenticate(
    auth: &Auth,
    headers: &HeaderMap,
    token: Option<&str>,
) -> Result<Principal, ApiError> {
    let caller = match token.filter(|t| !t.is_empty()) {
        Some(token) if !headers.contains_key(header::AUTHORIZATION) => {
            HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| ApiError::InvalidKey)
                .and_then(|value| {
                    let mut with_token = HeaderMap::new();
                    with_token.insert(header::AUTHORIZATION, value);
                    auth.check(&with_token)
                })
        }
        _ => auth.check(headers),
    };
    let caller = caller.inspect_err(|_| {
        metrics::counter!(metric::REALTIME_REFUSED, "reason" => "auth").increment(1);
    })?;
    Ok(Principal { caller })
}

#[derive(Debug, Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// The `?token=` of a realtime handshake URL (percent-decoded).
pub fn query_token(uri: &http::Uri) -> Option<String> {
    Query::<TokenQuery>::try_from_uri(uri).ok().and_then(|Query(q)| q.token)
}

/// `GET /ws`: upgrades to a WebSocket once the key and the caps allow it;
/// a refusal is an HTTP answer (401, 429, 503 with `retry-after`).
pub async fn ws(State(app): State<AppState>, mut request: Request) -> Response {
    let result = (|| {
        let headers = request.headers();
        let upgrade = headers
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
        let key = headers.get(header::SEC_WEBSOCKET_KEY).cloned();
        let version_ok =
            headers.get(header::SEC_WEBSOCKET_VERSION).is_some_and(|v| v.as_bytes() == b"13");
        let (true, Some(key), true) = (upgrade, key, version_ok) else {
            return Err(ApiError::Invalid {
                message: "GET /ws is a WebSocket endpoint: send an HTTP/1.1 upgrade request \
                          (Upgrade: websocket, Sec-WebSocket-Version: 13, Sec-WebSocket-Key)"
                    .into(),
            });
        };
        let token = query_token(request.uri());
        let principal = authenticate(&app.auth, headers, token.as_deref())?;
        let client = app.realtime.admit(principal, Transport::WebSocket)?;
        Ok((key, client))
    })();
    let (key, client) = match result {
        Ok(ok) => ok,
        Err(error) => return respond(Err(error), Format::OpenAi, RouteInfo::default()),
    };
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let upgrade = hyper::upgrade::on(&mut request);
    let hub = app.realtime.clone();
    tokio::spawn(async move {
        let upgraded = match upgrade.await {
            Ok(upgraded) => upgraded,
            Err(error) => {
                tracing::debug!(%error, "a WebSocket upgrade did not complete");
                return;
            }
        };
        let config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0)
            .max_message_size(Some(hub.config.max_message_bytes))
            .max_frame_size(Some(hub.config.max_message_bytes));
        let socket =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config))
                .await;
        serve(socket, client, hub).await;
    });
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(value) = HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, value);
    }
    response.extensions_mut().insert(RouteInfo::default());
    response
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Command {
    op: String,
    topic: Option<String>,
    since: Option<Since>,
}

const OPS: &str = "valid ops: subscribe, unsubscribe, ping";

fn text(value: &Value) -> Frame {
    Frame::Text(Utf8Bytes::from(value.to_string()))
}

fn close(code: u16, reason: String) -> Frame {
    Frame::Close(Some(CloseFrame { code: CloseCode::from(code), reason: Utf8Bytes::from(reason) }))
}

/// A subscription's acknowledgement; what it recovered follows it, in
/// each transport's own framing.
pub fn subscribed_ack(subscribed: &Subscribed) -> Value {
    let mut ack = json!({"op": "subscribed", "topic": subscribed.topic});
    if let Some(recovery) = &subscribed.recovery {
        ack["offset"] = recovery.offset.into();
        ack["epoch"] = recovery.epoch.clone().into();
        ack["recovered"] = recovery.complete.into();
        ack["replayed"] = recovery.messages.len().into();
    }
    ack
}

/// The messages a subscription recovered, oldest first.
pub fn replayed(subscribed: &Subscribed) -> &[Arc<crate::state::bus::Message>] {
    subscribed.recovery.as_ref().map_or(&[], |r| r.messages.as_slice())
}

async fn serve<S>(mut socket: WebSocketStream<S>, mut client: Client, hub: Arc<Realtime>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let hello = json!({"op": "connected", "client": client.id});
    if socket.send(text(&hello)).await.is_err() {
        return;
    }
    let ping_interval = hub.config.ping_interval;
    let silence_limit = ping_interval + hub.config.ping_timeout;
    let mut ping = tokio::time::interval(ping_interval);
    ping.reset();
    let mut last_heard = Instant::now();
    // Made once: a fresh `cancelled()` each turn would register and
    // deregister with the node-wide token for every message sent.
    let slow = client.slow.clone().cancelled_owned();
    let closing = hub.closing.clone().cancelled_owned();
    tokio::pin!(slow, closing);
    let ending = loop {
        tokio::select! {
            biased;
            () = &mut slow => break Some(slow_close(hub.config.send_buffer)),
            () = &mut closing => break Some(going_away()),
            frame = socket.next() => {
                last_heard = Instant::now();
                match frame {
                    None => break None,
                    Some(Err(tungstenite::Error::Capacity(_))) => {
                        break Some(close(1009, format!(
                            "frame larger than {} bytes (realtime.max_message_bytes)",
                            hub.config.max_message_bytes
                        )));
                    }
                    Some(Err(_)) => break None,
                    Some(Ok(Frame::Text(body))) => {
                        client.received();
                        let answers = command(&mut client, body.as_str()).await;
                        let mut failed = false;
                        for answer in answers {
                            failed |= socket.feed(answer).await.is_err();
                        }
                        if failed || socket.flush().await.is_err() {
                            break None;
                        }
                    }
                    Some(Ok(Frame::Binary(_))) => {
                        client.received();
                        let error = json!({"op": "error", "message": "frames are JSON text, not binary"});
                        if socket.send(text(&error)).await.is_err() {
                            break None;
                        }
                    }
                    // tungstenite answers pings and close frames itself; flushing sends the answer.
                    Some(Ok(Frame::Close(_))) => {
                        let _ = socket.flush().await;
                        break None;
                    }
                    Some(Ok(_)) => {
                        if socket.flush().await.is_err() {
                            break None;
                        }
                    }
                }
            }
            outgoing = client.incoming.recv() => {
                let Some(first) = outgoing else { break None };
                // Whatever else is waiting goes in the same write.
                let mut frames = Vec::new();
                if client.fresh(&first) {
                    frames.push(message_frame(&first));
                }
                while let Ok(next) = client.incoming.try_recv() {
                    if client.fresh(&next) {
                        frames.push(message_frame(&next));
                    }
                }
                let write = async {
                    for frame in frames {
                        socket.feed(frame).await?;
                    }
                    socket.flush().await
                };
                // A client that stops reading blocks the write: its queue
                // then fills, and being slow must still end it.
                tokio::select! {
                    biased;
                    () = &mut slow => break Some(slow_close(hub.config.send_buffer)),
                    () = &mut closing => break Some(going_away()),
                    written = write => if written.is_err() { break None },
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() >= silence_limit {
                    break Some(close(CLOSE_PING_TIMEOUT, format!(
                        "no frame or pong for {}s (realtime.ping_interval + ping_timeout)",
                        silence_limit.as_secs()
                    )));
                }
                if socket.send(Frame::Ping(Bytes::new())).await.is_err() {
                    break None;
                }
            }
        }
    };
    if let Some(frame) = ending {
        let _ = tokio::time::timeout(Duration::from_secs(2), socket.send(frame)).await;
    }
    client.close().await;
}

fn going_away() -> Frame {
    close(1001, "this node is shutting down; reconnect".into())
}

fn slow_close(send_buffer: usize) -> Frame {
    close(
        CLOSE_SLOW,
        format!(
            "slow consumer: {send_buffer} messages were waiting to be sent (realtime.send_buffer); \
             reconnect and recover from your last offset"
        ),
    )
}

fn message_frame(message: &crate::state::bus::Message) -> Frame {
    match Utf8Bytes::try_from(message.client_frame()) {
        Ok(text) => Frame::Text(text),
        Err(_) => Frame::Text(Utf8Bytes::from_static("{}")),
    }
}

/// Runs one client command and returns the frames that answer it.
async fn command(client: &mut Client, body: &str) -> Vec<Frame> {
    let error = |message: String, topic: Option<&str>| {
        let mut frame = json!({"op": "error", "message": message});
        if let Some(topic) = topic {
            frame["topic"] = topic.into();
        }
        vec![text(&frame)]
    };
    let command: Command = match serde_json::from_str(body) {
        Ok(c) => c,
        Err(e) => {
            return error(
                format!("a frame must be JSON {{\"op\", \"topic\"?, \"since\"?}}: {e}; {OPS}"),
                None,
            );
        }
    };
    let topic = command.topic.as_deref();
    match (command.op.as_str(), topic) {
        ("ping", _) => vec![text(&json!({"op": "pong"}))],
        ("subscribe" | "unsubscribe", None) => {
            error(format!("{} needs a topic, e.g. \"room:demo\" or \"job:<id>\"", command.op), None)
        }
        ("subscribe", Some(topic)) => match client.subscribe(topic, command.since.as_ref()).await {
            Ok(subscribed) => {
                let mut frames = vec![text(&subscribed_ack(&subscribed))];
                frames.extend(replayed(&subscribed).iter().map(|m| message_frame(m)));
                frames
            }
            Err(e) => error(e.to_string(), Some(topic)),
        },
        ("unsubscribe", Some(topic)) => {
            client.unsubscribe(topic).await;
            vec![text(&json!({"op": "unsubscribed", "topic": topic}))]
        }
        (op, _) => error(format!("unknown op {op:?}; {OPS}"), topic),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Publication {
    data: Value,
    /// The event name subscribers see (default `message`).
    event: Option<String>,
}

/// `POST /v1/rooms/{name}/messages`: `{"data": <any JSON>, "event"?}`,
/// for the master key or a key with the `publish` scope.
pub async fn publish(
    State(app): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        let principal = Principal { caller: caller.caller };
        let config = &app.realtime.config;
        crate::realtime::check_room_name(&name)
            .map_err(|m| ApiError::Topic(crate::realtime::TopicError::BadRoom(m)))?;
        principal.may_publish(&name, config)?;
        // The data's limit, plus room for the envelope.
        let bytes = read_body(body, &headers, config.max_message_bytes + 256).await?;
        let publication: Publication = parse_json(
            &bytes,
            "publish",
            "valid fields: data (any JSON, required), event (a name, default \"message\")",
        )?;
        let event = publication.event.unwrap_or_else(|| "message".to_string());
        if event.is_empty()
            || event.len() > 64
            || !event
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
        {
            return Err(ApiError::Invalid {
                message: format!(
                    "event {event:?} must be 1 to 64 characters from A-Z a-z 0-9 _ - . :"
                ),
            });
        }
        let placed = app.realtime.publish(&name, &event, publication.data).await?;
        let mut answer = json!({"topic": format!("room:{name}"), "event": event});
        if let Some((offset, epoch)) = placed {
            answer["offset"] = offset.into();
            answer["epoch"] = epoch.into();
        }
        Ok(json_response(answer.to_string()))
    }
    .await;
    respond(result, Format::OpenAi, RouteInfo::default())
}

/// `GET /v1/rooms/{name}/presence`: who is subscribed, on every node (for
/// rooms with presence on).
pub async fn presence(
    State(app): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Response {
    let result = async {
        let principal = Principal { caller: caller.caller };
        crate::realtime::check_room_name(&name)
            .map_err(|m| ApiError::Topic(crate::realtime::TopicError::BadRoom(m)))?;
        if !principal.may_join(&name, &app.realtime.config) {
            return Err(ApiError::Topic(crate::realtime::TopicError::Forbidden(name.clone())));
        }
        if !app.realtime.config.room(&name).presence {
            return Err(ApiError::Invalid {
                message: format!(
                    "room {name:?} keeps no presence; turn it on with [realtime] presence = true \
                     or a [[realtime.rooms]] rule with presence = true"
                ),
            });
        }
        let clients = app.realtime.presence(&name).await?;
        Ok(json_response(
            json!({"room": name, "count": clients.len(), "clients": clients}).to_string(),
        ))
    }
    .await;
    respond(result, Format::OpenAi, RouteInfo::default())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Recover from this offset (with `epoch`); `Last-Event-ID` does the same.
    since: Option<u64>,
    epoch: Option<String>,
}

/// `GET /v1/rooms/{name}/events`: the room as Server-Sent Events. The first
/// event (`subscribed`) says where the room is; each message is an event
/// named by its `event` with `id: <epoch>:<offset>` when the room keeps
/// history, so a reconnecting `EventSource` (which sends `Last-Event-ID`)
/// gets what it missed.
pub async fn events(
    State(app): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(query): Query<EventsQuery>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let principal = Principal { caller: caller.caller };
        let since = match (query.since, query.epoch) {
            (Some(offset), Some(epoch)) => Some(Since { offset, epoch }),
            (None, None) => headers
                .get("last-event-id")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split_once(':'))
                .and_then(|(epoch, offset)| {
                    Some(Since { offset: offset.parse().ok()?, epoch: epoch.to_string() })
                }),
            _ => {
                return Err(ApiError::Invalid {
                    message:
                        "since and epoch go together: ?since=<offset>&epoch=<epoch> (from the \
                              subscribed event or a message's id)"
                            .into(),
                });
            }
        };
        let mut client = app.realtime.admit(principal, Transport::Sse)?;
        let topic = format!("room:{name}");
        let subscribed = client.subscribe(&topic, since.as_ref()).await?;
        let epoch = subscribed.recovery.as_ref().map(|r| r.epoch.clone()).unwrap_or_default();
        let mut first = sse_event("subscribed", None, &subscribed_ack(&subscribed).to_string());
        for message in replayed(&subscribed) {
            first.extend_from_slice(&message_event(message, &epoch));
        }
        let hub = app.realtime.clone();
        let stream = RoomStream {
            slow: Box::pin(client.slow.clone().cancelled_owned()),
            closing: Box::pin(hub.closing.clone().cancelled_owned()),
            client,
            hub,
            epoch,
            first: Some(Bytes::from(first)),
            done: false,
        };
        let frames = futures_util::stream::unfold(stream, |mut stream| async move {
            let frame = stream.next().await?;
            Some((Ok::<_, Infallible>(frame), stream))
        });
        let mut response = Body::from_stream(frames).into_response();
        super::chat::sse_headers(response.headers_mut());
        Ok(response)
    }
    .await;
    respond(result, Format::OpenAi, RouteInfo::default())
}

/// A room's SSE stream: the subscription's first events, then messages as
/// they come, a keep-alive comment after 15 s of quiet, and an `error`
/// event before the end when the client fell too far behind.
struct RoomStream {
    client: Client,
    hub: Arc<Realtime>,
    epoch: String,
    first: Option<Bytes>,
    done: bool,
    // Made once: a fresh `cancelled()` each turn would register and
    // deregister with the node-wide token for every message.
    slow: std::pin::Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
    closing: std::pin::Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
}

impl RoomStream {
    async fn next(&mut self) -> Option<Bytes> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        if self.done {
            return None;
        }
        let mut keep_alive = tokio::time::interval(KEEP_ALIVE);
        keep_alive.reset();
        tokio::select! {
            biased;
            () = &mut self.slow => {
                self.done = true;
                let data = json!({"message": format!(
                    "slow consumer: {} messages were waiting (realtime.send_buffer); reconnect with Last-Event-ID",
                    self.hub.config.send_buffer
                )});
                Some(Bytes::from(sse_event("error", None, &data.to_string())))
            }
            () = &mut self.closing => None,
            outgoing = self.client.incoming.recv() => {
                let first = outgoing?;
                let mut out = Vec::new();
                if self.client.fresh(&first) {
                    out.extend_from_slice(&message_event(&first, &self.epoch));
                }
                while let Ok(next) = self.client.incoming.try_recv() {
                    if self.client.fresh(&next) {
                        out.extend_from_slice(&message_event(&next, &self.epoch));
                    }
                }
                Some(Bytes::from(out))
            }
            _ = keep_alive.tick() => Some(Bytes::from_static(b": keep-alive\n\n")),
        }
    }
}

fn sse_event(event: &str, id: Option<&str>, data: &str) -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(id) = id {
        out.extend_from_slice(format!("id: {id}\n").as_bytes());
    }
    floodgate_protocol::sse::write_event(&mut out, Some(event), data);
    out
}

fn message_event(message: &crate::state::bus::Message, epoch: &str) -> Vec<u8> {
    let id = message.offset.map(|o| format!("{epoch}:{o}"));
    let frame = message.client_frame();
    sse_event(&message.event, id.as_deref(), std::str::from_utf8(&frame).unwrap_or("{}"))
}

/// `GET /admin/realtime`: this node's realtime connections and topics.
pub async fn admin_view(State(app): State<AppState>) -> Response {
    json_response(app.realtime.view().to_string())
}
