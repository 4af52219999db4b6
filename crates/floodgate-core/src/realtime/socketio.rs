//! Socket.IO v4 at `/socket.io/` (websocket and long-polling transports),
//! served by socketioxide, so `socket.io-client` front ends connect
//! unchanged.
//!
//! A client connects to the `/` namespace with `auth: {token: <key>}` (or
//! the key in `Authorization`, or `?token=` in the handshake URL). The
//! connect middleware authenticates it and admits it to the hub, or refuses
//! it: the client gets `connect_error` with the reason (`data.code` says
//! which: `invalid_api_key`, `node_full`, …, and `data.retry_after` when
//! retrying makes sense). Then it emits `subscribe` / `unsubscribe` with
//! `{"topic", "since"?}` and receives `subscribed` (and an acknowledgement,
//! when it asked for one), `error`, and `message` events `{"topic",
//! "event", "data", "offset"?}`.
//!
//! Every socket is one hub [`Client`] served by one task, the same as a
//! `/ws` connection: the fan-out across nodes is the hub's (the topic bus
//! on Redis) for all three transports, so one published message costs one
//! Redis `PUBLISH` whoever listens, and socket.io rooms and adapters are
//! not used.

use std::sync::{Arc, Mutex, PoisonError};

use http::HeaderMap;
use serde_json::{Value, json};
use socketioxide::extract::{AckSender, SocketRef, TryData};
use socketioxide::layer::SocketIoLayer;
use socketioxide::{SocketIo, TransportType};
use tokio::sync::mpsc;

use super::{Client, Realtime, Since, Transport};
use crate::http::ApiError;
use crate::http::realtime;
use crate::pipeline::auth::Auth;

enum Command {
    Subscribe { topic: String, since: Option<Since>, ack: AckSender },
    Unsubscribe { topic: String, ack: AckSender },
}

/// The admitted client, from the connect middleware to the handler.
#[derive(Clone)]
struct Admitted(Arc<Mutex<Option<Client>>>);

/// The socket's command queue, for its event handlers. Boxed: an empty
/// queue still holds a block of 32 slots, which is then 32 pointers.
#[derive(Clone)]
struct Commands(mpsc::UnboundedSender<Box<Command>>);

/// A refusal as `connect_error` shows it: `data.message` is the reason,
/// then the code and, when retrying makes sense, when to retry, e.g.
/// `this node holds its maximum … (code: node_full; retry after 2 s)`.
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn refusal(error: &ApiError) -> Refused {
    match error {
        ApiError::Refused(refusal) => Refused(format!(
            "{error} (code: {}; retry after {} s)",
            error.kind(),
            refusal.retry_after()
        )),
        _ => Refused(format!("{error} (code: {})", error.kind())),
    }
}

/// Builds the Socket.IO layer for `hub`, authenticating with `auth`.
pub fn layer(hub: Arc<Realtime>, auth: Arc<Auth>) -> SocketIoLayer {
    let config = &hub.config;
    let (layer, io) = SocketIo::builder()
        .ping_interval(config.ping_interval)
        .ping_timeout(config.ping_timeout)
        .max_payload(config.max_message_bytes as u64)
        .ws_max_message_size(config.max_message_bytes)
        .ws_max_frame_size(config.max_message_bytes)
        .max_buffer_size(config.send_buffer)
        // Small buffers for idle connections: most frames are small.
        .ws_read_buffer_size(1024)
        .connect_timeout(std::time::Duration::from_secs(10))
        .transports([TransportType::Polling, TransportType::Websocket])
        .build_layer();
    let middleware = {
        let hub = hub.clone();
        move |socket: SocketRef, TryData(data): TryData<Value>| {
            let (hub, auth) = (hub.clone(), auth.clone());
            async move {
                let token = data
                    .ok()
                    .as_ref()
                    .and_then(|d| d.get("token"))
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .or_else(|| realtime::query_token(&socket.req_parts().uri));
                let headers: &HeaderMap = &socket.req_parts().headers;
                let principal = realtime::authenticate(&auth, headers, token.as_deref())
                    .map_err(|e| refusal(&e))?;
                let client = hub
                    .admit(principal, Transport::SocketIo)
                    .map_err(|e| refusal(&ApiError::Refused(e)))?;
                socket.extensions.insert(Admitted(Arc::new(Mutex::new(Some(client)))));
                Ok::<(), Refused>(())
            }
        }
    };
    let handler = move |socket: SocketRef| {
        let hub = hub.clone();
        async move {
            let Some(Admitted(slot)) = socket.extensions.remove::<Admitted>() else { return };
            let Some(client) = slot.lock().unwrap_or_else(PoisonError::into_inner).take() else {
                return;
            };
            let (commands, queue) = mpsc::unbounded_channel();
            socket.extensions.insert(Commands(commands));
            socket.on(
                "subscribe",
                async |socket: SocketRef, TryData(data): TryData<Value>, ack: AckSender| {
                    send(&socket, data.ok(), ack, true);
                },
            );
            socket.on(
                "unsubscribe",
                async |socket: SocketRef, TryData(data): TryData<Value>, ack: AckSender| {
                    send(&socket, data.ok(), ack, false);
                },
            );
            socket.on_disconnect(async |socket: SocketRef| {
                // Dropping the command queue ends the socket's task.
                socket.extensions.remove::<Commands>();
            });
            tokio::spawn(serve(socket, client, queue, hub));
        }
    };
    io.ns("/", socketioxide::handler::ConnectHandler::with(handler, middleware));
    layer
}

/// A Socket.IO request with its URI (and axum's `OriginalUri`) and headers
/// copied out of the connection's read buffer. hyper parses them in place,
/// so they share that buffer (8–16 KiB), and engine.io keeps the
/// handshake's request head, extensions included, for the session's life:
/// without the copy every idle socket kept its connection's whole read
/// buffer (measured with massif: 16 KiB of a socket's 44; BENCHMARKS.md).
pub fn detach_head(mut request: axum::extract::Request) -> axum::extract::Request {
    if !request.uri().path().starts_with("/socket.io") {
        return request;
    }
    if let Ok(uri) = request.uri().to_string().parse::<http::Uri>() {
        // axum's copy of the URI too: it is the one that kept the buffer.
        request.extensions_mut().insert(axum::extract::OriginalUri(uri.clone()));
        *request.uri_mut() = uri;
    }
    let mut headers = HeaderMap::with_capacity(request.headers().len());
    for (name, value) in request.headers() {
        if let Ok(value) = http::HeaderValue::from_bytes(value.as_bytes()) {
            headers.append(name.clone(), value);
        }
    }
    *request.headers_mut() = headers;
    request
}

/// Queues a subscribe or unsubscribe for the socket's task.
fn send(socket: &SocketRef, data: Option<Value>, ack: AckSender, subscribe: bool) {
    let Some(Commands(commands)) = socket.extensions.get::<Commands>() else { return };
    let topic = data.as_ref().and_then(|d| d.get("topic")).and_then(Value::as_str);
    let Some(topic) = topic else {
        let message = "subscribe and unsubscribe take {\"topic\": \"room:<name>\" or \"job:<id>\", \
                       \"since\"?: {\"offset\", \"epoch\"}}";
        let error = json!({"message": message});
        let _ = socket.emit("error", &error);
        let _ = ack.send(&json!({"ok": false, "error": message}));
        return;
    };
    let topic = topic.to_string();
    let command = if subscribe {
        let since = data
            .as_ref()
            .and_then(|d| d.get("since"))
            .and_then(|s| serde_json::from_value::<Since>(s.clone()).ok());
        Command::Subscribe { topic, since, ack }
    } else {
        Command::Unsubscribe { topic, ack }
    };
    let _ = commands.send(Box::new(command));
}

/// One socket's task: its commands and its outgoing messages.
async fn serve(
    socket: SocketRef,
    mut client: Client,
    mut commands: mpsc::UnboundedReceiver<Box<Command>>,
    hub: Arc<Realtime>,
) {
    let slow = client.slow.clone();
    let slow_now = slow.clone().cancelled_owned();
    let closing = hub.closing.clone().cancelled_owned();
    tokio::pin!(slow_now, closing);
    loop {
        tokio::select! {
            biased;
            () = &mut slow_now => {
                let message = format!(
                    "slow consumer: {} messages were waiting to be sent (realtime.send_buffer); \
                     reconnect and recover from your last offset",
                    hub.config.send_buffer
                );
                let _ = socket.emit("error", &json!({"message": message, "code": "slow_consumer"}));
                break;
            }
            () = &mut closing => break,
            command = commands.recv() => match command.map(|c| *c) {
                None => break,
                Some(Command::Subscribe { topic, since, ack }) => {
                    match client.subscribe(&topic, since.as_ref()).await {
                        Ok(subscribed) => {
                            let answer = realtime::subscribed_ack(&subscribed);
                            let _ = ack.send(&json!({"ok": true, "subscribed": answer}));
                            let _ = socket.emit("subscribed", &answer);
                            for message in realtime::replayed(&subscribed) {
                                emit_frame(&socket, message.client_frame());
                            }
                        }
                        Err(error) => {
                            let data = json!({"message": error.to_string(), "topic": topic});
                            let _ = ack.send(&json!({"ok": false, "error": error.to_string()}));
                            let _ = socket.emit("error", &data);
                        }
                    }
                }
                Some(Command::Unsubscribe { topic, ack }) => {
                    let was = client.unsubscribe(&topic).await;
                    let _ = ack.send(&json!({"ok": true, "was_subscribed": was}));
                    let _ = socket.emit("unsubscribed", &json!({"topic": topic}));
                }
            },
            outgoing = client.incoming.recv() => {
                let Some(message) = outgoing else { break };
                if client.fresh(&message) && !emit_frame(&socket, message.client_frame()) {
                    // The engine's own buffer is full: as slow as a full queue.
                    slow.cancel();
                }
            }
        }
    }
    client.close().await;
    let _ = socket.disconnect();
}

/// Emits a prepared message frame as a `message` event; false when the
/// socket's buffer is full.
fn emit_frame(socket: &SocketRef, frame: bytes::Bytes) -> bool {
    let Ok(text) = String::from_utf8(frame.to_vec()) else { return true };
    let Ok(raw) = serde_json::value::RawValue::from_string(text) else { return true };
    !matches!(
        socket.emit("message", &raw),
        Err(socketioxide::SendError::Socket(socketioxide::SocketError::InternalChannelFull))
    )
}
