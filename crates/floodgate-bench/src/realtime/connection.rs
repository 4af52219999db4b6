//! The connections: the connect phase that opens them at the planned rate (handshakes in
//! flight bounded, each within the timeout, the phase within its deadline), and one task per
//! connection that opens it (TCP from its source address, WebSocket upgrade, Socket.IO
//! CONNECT, subscribe), then reads it until the run stops or the server closes it.
//!
//! Reading is what answers the server's heartbeats: tungstenite queues the pong of a
//! WebSocket ping and writes it on the next read; an engine.io ping (`2`) is answered with `3`
//! here.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use hdrhistogram::Histogram;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc::{self, UnboundedSender};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};

use super::Shared;
use super::plan::Transport;
use super::progress::Progress;
use super::socketio::{self, PONG, Packet};
use super::wire::{self, Envelope, Seen, WsFrame};
use crate::client::{EADDRNOTAVAIL, EMFILE, ENFILE};
use crate::error::BenchError;
use crate::limits::ClientLimits;

/// Linux `EADDRINUSE`: binding to port 0 of a source address finds no free port.
const EADDRINUSE: i32 = 98;
/// How long the connect phase waits, past its deadline, for the connections it stopped to
/// say so.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// How long a connection waits for its close frame to go out, or for the server's to finish.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

type Ws = WebSocketStream<TcpStream>;

/// What the connect phase achieved.
#[derive(Debug)]
pub(crate) struct Opening {
    /// Connections whose transport opened (WebSocket upgraded; Socket.IO CONNECT accepted).
    pub opened: u64,
    /// Connections whose subscription was acknowledged: the ones held.
    pub subscribed: u64,
    /// Subscribed connections per node, in the order of the plan's nodes.
    pub subscribed_per_node: Vec<u64>,
    /// Why the others did not get there.
    pub failures: BTreeMap<String, u64>,
    /// From the start of the TCP connect to the subscription's acknowledgement, in µs.
    pub latency: Histogram<u64>,
    /// How long the phase took.
    pub elapsed: Duration,
}

impl Opening {
    fn new(nodes: usize) -> Result<Opening, BenchError> {
        Ok(Opening {
            opened: 0,
            subscribed: 0,
            subscribed_per_node: vec![0; nodes],
            failures: BTreeMap::new(),
            latency: super::histogram()?,
            elapsed: Duration::ZERO,
        })
    }

    /// Connections that subscribed or failed.
    pub(crate) fn settled(&self) -> u64 {
        self.subscribed + self.failed()
    }

    pub(crate) fn failed(&self) -> u64 {
        self.failures.values().sum()
    }

    fn add(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Ready { node, took } => {
                self.opened += 1;
                self.subscribed += 1;
                self.subscribed_per_node[node] += 1;
                self.latency.saturating_record(super::micros(took));
            }
            Outcome::Failed { opened, reason } => {
                self.opened += u64::from(opened);
                *self.failures.entry(reason).or_default() += 1;
            }
        }
    }
}

/// How one connection's opening ended.
#[derive(Debug)]
enum Outcome {
    Ready { node: usize, took: Duration },
    Failed { opened: bool, reason: String },
}

/// How far an opening got, for the reason of a timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Tcp,
    Upgrade,
    Join,
    Subscribe,
}

impl Stage {
    fn describe(self) -> &'static str {
        match self {
            Stage::Tcp => "tcp connect",
            Stage::Upgrade => "websocket upgrade",
            Stage::Join => "socket.io connect",
            Stage::Subscribe => "subscribe",
        }
    }

    /// Whether the transport was open (only the subscription was missing).
    fn opened(self) -> bool {
        self == Stage::Subscribe
    }
}

/// Opens every connection of the plan, `connect_rate` a second with at most
/// `max_handshakes` opening at once, and returns when each has subscribed or failed, or at
/// the phase's deadline (connections still opening then fail as "connect phase ended").
/// Subscribed connections go on reading in their tasks.
pub(crate) async fn open_all(
    shared: &Arc<Shared>,
    progress: &Progress,
) -> Result<Opening, BenchError> {
    let plan = &shared.plan;
    let t0 = Instant::now();
    let deadline = t0 + plan.connect_deadline();
    let mut opening = Opening::new(plan.nodes.len())?;
    let (sender, mut outcomes) = mpsc::unbounded_channel();
    let spawner = tokio::spawn(spawn_all(Arc::clone(shared), sender, t0));
    // The channel closes when the spawner is done and every connection has reported.
    loop {
        let outcome = tokio::select! {
            outcome = outcomes.recv() => outcome,
            () = tokio::time::sleep_until(deadline.into()) => break,
        };
        let Some(outcome) = outcome else {
            break;
        };
        opening.add(outcome);
        progress.connecting(opening.settled(), opening.subscribed, opening.failed());
    }
    shared.connecting.cancel();
    // The spawner only spawns; if it failed, the connections it did not start are counted
    // below.
    let _spawned = spawner.await;
    let grace = tokio::time::Instant::now() + STOP_GRACE;
    while let Ok(Some(outcome)) = tokio::time::timeout_at(grace, outcomes.recv()).await {
        opening.add(outcome);
    }
    let unsettled = (plan.connections as u64).saturating_sub(opening.settled());
    if unsettled > 0 {
        *opening.failures.entry("connect phase ended: not started".to_string()).or_default() +=
            unsettled;
    }
    opening.elapsed = t0.elapsed();
    Ok(opening)
}

/// Starts connection `i` at `t0 + i / rate`, or later when `max_handshakes` are opening,
/// until all are started or the connect phase is over.
async fn spawn_all(shared: Arc<Shared>, outcomes: UnboundedSender<Outcome>, t0: Instant) {
    let plan = &shared.plan;
    let permits = Arc::new(Semaphore::new(plan.max_handshakes));
    for index in 0..plan.connections {
        let due = t0 + Duration::from_secs_f64(index as f64 / plan.connect_rate);
        let permit = tokio::select! {
            biased;
            () = shared.connecting.cancelled() => return,
            permit = paced(due, &permits) => permit,
        };
        let Ok(permit) = permit else {
            return;
        };
        let task = connection(Arc::clone(&shared), index, permit, outcomes.clone());
        shared.tracker.spawn(task);
    }
}

/// A handshake slot, not before `due`.
async fn paced(
    due: Instant,
    permits: &Arc<Semaphore>,
) -> Result<OwnedSemaphorePermit, tokio::sync::AcquireError> {
    if due > Instant::now() {
        tokio::time::sleep_until(due.into()).await;
    }
    Arc::clone(permits).acquire_owned().await
}

/// One connection: opens it (holding a handshake slot), reports how that went, then reads it
/// until the run stops or the server closes it.
async fn connection(
    shared: Arc<Shared>,
    index: usize,
    permit: OwnedSemaphorePermit,
    outcomes: UnboundedSender<Outcome>,
) {
    let plan = &shared.plan;
    let node = plan.node_of(index);
    let started = Instant::now();
    let mut stage = Stage::Tcp;
    // Boxed, so that the opening's larger state is freed once open, rather than sized into
    // the task for the whole of its life.
    let opening = Box::pin(open(&shared, node, plan.source_of(index), &mut stage));
    let result = tokio::select! {
        biased;
        () = shared.connecting.cancelled() => Err(None),
        result = tokio::time::timeout(plan.timeout, opening) => match result {
            Ok(opened) => opened.map_err(Some),
            Err(_elapsed) => Err(None),
        },
    };
    drop(permit);
    let ws = match result {
        Ok(ws) => ws,
        Err(reason) => {
            let reason = reason.unwrap_or_else(|| {
                let why = if shared.connecting.is_cancelled() {
                    "connect phase ended"
                } else {
                    "timeout"
                };
                format!("{why}: {}", stage.describe())
            });
            // The receiver is gone only once the connect phase stopped listening.
            let _ignored = outcomes.send(Outcome::Failed { opened: stage.opened(), reason });
            return;
        }
    };
    shared.open.fetch_add(1, Ordering::Relaxed);
    let _ignored = outcomes.send(Outcome::Ready { node, took: started.elapsed() });
    drop(outcomes);
    receive(ws, &shared, index).await;
}

/// TCP (bound to `source` first, when given), the WebSocket upgrade, then the transport's
/// own opening; `stage` follows the progress.
async fn open(
    shared: &Shared,
    node: usize,
    source: Option<IpAddr>,
    stage: &mut Stage,
) -> Result<Ws, String> {
    let plan = &shared.plan;
    let node = &plan.nodes[node];
    let stream =
        tcp(node.addr, source).await.map_err(|error| connect_reason(&error, &shared.limits))?;
    *stage = Stage::Upgrade;
    let (mut ws, _response) =
        tokio_tungstenite::client_async_with_config(node.ws_uri.as_str(), stream, Some(config()))
            .await
            .map_err(|error| format!("handshake: {}", ws_error_reason(&error)))?;
    if plan.transport == Transport::Socketio {
        *stage = Stage::Join;
        join(&mut ws, &plan.connect_packet).await?;
    }
    *stage = Stage::Subscribe;
    send(&mut ws, &plan.subscribe_frame).await?;
    loop {
        let text = next_text(&mut ws).await?;
        let answer = match plan.transport {
            Transport::Ws => match wire::parse_ws(&text) {
                WsFrame::Subscribed(topic) => acknowledged(&topic, &plan.topic),
                WsFrame::Error(message) => Some(Err(format!("error: {message}"))),
                _ => None,
            },
            Transport::Socketio => match socketio::parse(&text) {
                Packet::Ping => {
                    send(&mut ws, PONG).await?;
                    None
                }
                Packet::Event { name, arg } if name == "subscribed" => {
                    let topic = arg.and_then(envelope).and_then(|e| e.topic).unwrap_or_default();
                    acknowledged(&topic, &plan.topic)
                }
                Packet::Event { name, arg } if name == "error" => {
                    let message = arg.and_then(envelope).and_then(|e| e.message);
                    Some(Err(format!("error: {}", wire::error_message(message))))
                }
                Packet::Close | Packet::Disconnect => {
                    Some(Err("closed before subscribed".to_string()))
                }
                _ => None,
            },
        };
        match answer {
            Some(Ok(())) => return Ok(ws),
            Some(Err(reason)) => return Err(reason),
            None => {}
        }
    }
}

/// The acknowledgement of `topic` when it is the subscribed one (or names none).
fn acknowledged(topic: &str, subscribed: &str) -> Option<Result<(), String>> {
    (topic.is_empty() || topic == subscribed).then_some(Ok(()))
}

/// Socket.IO's opening: the engine.io open packet, then CONNECT to `/` with the token,
/// answered by CONNECT (accepted) or CONNECT_ERROR (refused, with the server's message).
async fn join(ws: &mut Ws, connect_packet: &str) -> Result<(), String> {
    let first = next_text(ws).await?;
    if socketio::parse(&first) != Packet::Open {
        return Err(format!(
            "protocol: expected the engine.io open packet, got {:?}",
            preview(&first)
        ));
    }
    send(ws, connect_packet).await?;
    loop {
        let text = next_text(ws).await?;
        match socketio::parse(&text) {
            Packet::Ping => send(ws, PONG).await?,
            Packet::Connect => return Ok(()),
            Packet::ConnectError(message) => return Err(format!("refused: {message}")),
            Packet::Close | Packet::Disconnect => {
                return Err("closed before connected".to_string());
            }
            _ => {}
        }
    }
}

/// A Socket.IO event's argument as an envelope.
fn envelope(arg: &str) -> Option<Envelope<'_>> {
    serde_json::from_str(arg).ok()
}

/// The start of a frame, for a protocol error.
fn preview(text: &str) -> String {
    text.chars().take(40).collect()
}

/// Reads one subscribed connection until the run stops (then closes it with 1000) or the
/// server closes it (then counts why).
async fn receive(mut ws: Ws, shared: &Shared, index: usize) {
    let plan = &shared.plan;
    let mut seen = Seen::default();
    let stopped = shared.stop.cancelled();
    tokio::pin!(stopped);
    let ended = loop {
        let message = tokio::select! {
            biased;
            () = &mut stopped => break None,
            message = ws.next() => message,
        };
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => break Some(close_reason(frame.as_ref())),
            Some(Ok(_)) => continue,
            Some(Err(error)) => break Some(format!("error: {}", ws_error_reason(&error))),
            None => break Some("ended without a close frame".to_string()),
        };
        match plan.transport {
            Transport::Ws => {
                if let WsFrame::Message { topic, probe } = wire::parse_ws(&text)
                    && topic == plan.topic
                {
                    shared.record(index, &mut seen, probe);
                }
            }
            Transport::Socketio => match socketio::parse(&text) {
                Packet::Ping => {
                    if let Err(reason) = send(&mut ws, PONG).await {
                        break Some(reason);
                    }
                }
                Packet::Event { name, arg } if name == "message" => {
                    if let Some(message) = arg.and_then(envelope)
                        && message.topic.as_deref() == Some(plan.topic.as_str())
                    {
                        shared.record(index, &mut seen, message.data.and_then(wire::probe));
                    }
                }
                Packet::Close => break Some("engine.io close".to_string()),
                Packet::Disconnect => break Some("socket.io disconnect".to_string()),
                _ => {}
            },
        }
    };
    match ended {
        None => {
            let goodbye = CloseFrame { code: CloseCode::Normal, reason: "bench done".into() };
            // The run is over: a close frame that cannot be sent changes nothing.
            let _ignored = tokio::time::timeout(CLOSE_WAIT, ws.close(Some(goodbye))).await;
        }
        Some(reason) => {
            shared.closed(reason);
            // Reading on lets tungstenite answer the server's close frame.
            let _ignored =
                tokio::time::timeout(CLOSE_WAIT, async { while ws.next().await.is_some() {} })
                    .await;
        }
    }
}

/// The next text frame while opening; a close frame, the end of the stream or an error is
/// why the connection failed.
async fn next_text(ws: &mut Ws) -> Result<Utf8Bytes, String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => return Ok(text),
            Some(Ok(Message::Close(frame))) => {
                return Err(format!("refused: {}", close_reason(frame.as_ref())));
            }
            Some(Ok(_)) => {}
            Some(Err(error)) => return Err(format!("error: {}", ws_error_reason(&error))),
            None => return Err("closed without a close frame".to_string()),
        }
    }
}

async fn send(ws: &mut Ws, text: &str) -> Result<(), String> {
    ws.send(Message::text(text)).await.map_err(|error| format!("send: {}", ws_error_reason(&error)))
}

/// Small buffers: a held connection costs its task, its socket and about 4 KB of buffer.
fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(4 << 20))
        .max_frame_size(Some(4 << 20))
}

async fn tcp(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// "refused: ..." reasons read `code reason`, e.g. `1013 node full`.
fn close_reason(frame: Option<&CloseFrame>) -> String {
    match frame {
        Some(frame) if frame.reason.is_empty() => u16::from(frame.code).to_string(),
        Some(frame) => format!("{} {}", u16::from(frame.code), frame.reason.as_str()),
        None => "close frame without a code".to_string(),
    }
}

/// A failed TCP connect, the client's own limits named as such.
fn connect_reason(error: &io::Error, limits: &ClientLimits) -> String {
    match error.raw_os_error() {
        Some(EMFILE | ENFILE) => limits.open_files_message(),
        Some(EADDRNOTAVAIL | EADDRINUSE) => limits.ephemeral_ports_message(),
        _ => format!("connect: {}", io_message(error)),
    }
}

fn ws_error_reason(error: &WsError) -> String {
    match error {
        WsError::Io(error) => io_message(error),
        WsError::Http(response) => format!("HTTP {}", response.status().as_u16()),
        WsError::ConnectionClosed | WsError::AlreadyClosed => "closed".to_string(),
        other => other.to_string(),
    }
}

/// An I/O error without its errno, so that reasons group: "Connection refused".
fn io_message(error: &io::Error) -> String {
    let text = error.to_string();
    match text.split_once(" (os error") {
        Some((message, _)) => message.to_string(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reasons_read_code_then_reason() {
        let frame = |code: u16, reason: &'static str| CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        };
        assert_eq!(close_reason(Some(&frame(1013, "node full"))), "1013 node full");
        assert_eq!(close_reason(Some(&frame(4008, ""))), "4008");
        assert_eq!(close_reason(None), "close frame without a code");
    }

    #[test]
    fn connect_failures_name_the_client_limits() {
        let limits = ClientLimits { open_files: Some(1024), ephemeral_ports: Some((1, 2)) };
        let reason = |errno| connect_reason(&io::Error::from_raw_os_error(errno), &limits);
        assert_eq!(reason(111), "connect: Connection refused");
        assert!(reason(24).starts_with("client limit: open files"));
        assert!(reason(99).starts_with("client limit: ephemeral ports"));
        assert!(reason(98).starts_with("client limit: ephemeral ports"));
    }
}
