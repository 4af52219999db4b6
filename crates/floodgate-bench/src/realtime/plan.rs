//! What a realtime run is asked to do ([`RealtimeConfig`], as the command line gives it) and
//! the checked [`Plan`] it follows: nodes parsed and confined to loopback, frames and headers
//! built once, every refusal a [`BenchError::Usage`] that says what to change.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use hyper::Uri;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};

use super::{socketio, wire};
use crate::error::BenchError;

/// Connections opened per second when `--connect-rate` is not given.
pub const DEFAULT_CONNECT_RATE: f64 = 2000.0;
/// Handshakes in flight at once when `--max-in-flight` is not given.
pub const DEFAULT_MAX_HANDSHAKES: usize = 1000;
/// The room every connection subscribes to when `--room` is not given.
pub const DEFAULT_ROOM: &str = "bench";
/// Approximate size of a published message's `data` when `--message-bytes` is not given.
pub const DEFAULT_MESSAGE_BYTES: usize = 100;
/// How long one connection may take from its TCP connect to its subscription's
/// acknowledgement when `--timeout` is not given.
pub const DEFAULT_OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest `--message-bytes` accepted.
const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// The protocol the connections speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Plain WebSocket on `/ws`, JSON frames with an `op`.
    Ws,
    /// Socket.IO v4 over the engine.io websocket transport on `/socket.io/`.
    Socketio,
}

impl Transport {
    /// The name used on the command line and in the report.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Ws => "ws",
            Transport::Socketio => "socketio",
        }
    }
}

/// A realtime run as asked for; [`super::run`] refuses anything out of bounds with
/// [`BenchError::Usage`].
#[derive(Debug, Clone)]
pub struct RealtimeConfig {
    pub transport: Transport,
    /// Node base URLs, `http://HOST:PORT` on loopback; an entry may hold several, separated
    /// by commas. Connections are spread over them round robin.
    pub urls: Vec<String>,
    /// Connections to open and hold.
    pub connections: usize,
    /// Connections started per second.
    pub connect_rate: f64,
    /// Connections between the start of their TCP connect and their subscription's
    /// acknowledgement at once.
    pub max_handshakes: usize,
    /// Local addresses client sockets are bound to, round robin; empty: the system's choice.
    pub source_ips: Vec<IpAddr>,
    /// The room every connection subscribes to (topic `room:NAME`).
    pub room: String,
    /// The connections' token.
    pub key: Option<String>,
    /// The publisher's bearer token; `None`: `key`.
    pub publish_key: Option<String>,
    /// How long every connection is held once all are open (and, with a publish rate, how
    /// long the publisher publishes); required.
    pub duration: Option<Duration>,
    /// Messages published per second; `None` or 0: the connections are only held.
    pub publish_rate: Option<f64>,
    /// Approximate size of each published message's `data`, in bytes.
    pub message_bytes: usize,
    /// Publish to every node round robin instead of the first only.
    pub publish_all_nodes: bool,
    /// Server processes whose resident memory is read before, after connecting and at the end.
    pub server_pids: Vec<u32>,
    /// Per connection, from the TCP connect to the subscription's acknowledgement.
    pub timeout: Duration,
    /// No progress bar.
    pub quiet: bool,
    /// Free text carried into the report.
    pub label: Option<String>,
}

impl RealtimeConfig {
    /// The defaults of the command line for `connections` connections of `transport` to
    /// `urls`, held for `duration`, without publishing.
    pub fn new(
        transport: Transport,
        urls: Vec<String>,
        connections: usize,
        duration: Duration,
    ) -> RealtimeConfig {
        RealtimeConfig {
            transport,
            urls,
            connections,
            connect_rate: DEFAULT_CONNECT_RATE,
            max_handshakes: DEFAULT_MAX_HANDSHAKES,
            source_ips: Vec::new(),
            room: DEFAULT_ROOM.to_string(),
            key: None,
            publish_key: None,
            duration: Some(duration),
            publish_rate: None,
            message_bytes: DEFAULT_MESSAGE_BYTES,
            publish_all_nodes: false,
            server_pids: Vec::new(),
            timeout: DEFAULT_OPEN_TIMEOUT,
            quiet: false,
            label: None,
        }
    }
}

/// One gateway node.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    /// The base URL as given.
    pub url: String,
    pub addr: SocketAddr,
    /// The WebSocket URL the connections open, token included.
    pub ws_uri: String,
    /// `POST` target of the publisher.
    pub publish_uri: Uri,
}

/// What to publish, at what rate.
#[derive(Debug, Clone)]
pub(crate) struct Publishing {
    pub rate: f64,
    /// This run's number in every probe.
    pub run: u32,
    /// Messages scheduled: sequence numbers run from 0 to this, excluded.
    pub messages: u64,
    pub headers: HeaderMap,
    /// The `pad` string that brings each message to about `--message-bytes`.
    pub pad: String,
}

/// A checked [`RealtimeConfig`].
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub transport: Transport,
    pub nodes: Vec<Node>,
    pub connections: usize,
    pub connect_rate: f64,
    pub max_handshakes: usize,
    pub source_ips: Vec<IpAddr>,
    pub room: String,
    /// `room:NAME`.
    pub topic: String,
    /// The frame that subscribes to `topic` in this transport.
    pub subscribe_frame: String,
    /// Socket.IO's CONNECT packet, with the token.
    pub connect_packet: String,
    pub duration: Duration,
    pub publishing: Option<Publishing>,
    pub message_bytes: usize,
    pub publish_all_nodes: bool,
    pub server_pids: Vec<u32>,
    pub timeout: Duration,
    pub progress: bool,
    pub label: Option<String>,
}

impl Plan {
    /// Checks `config`; `interactive` tells whether a progress bar can be shown.
    pub(crate) fn new(config: &RealtimeConfig, interactive: bool) -> Result<Plan, BenchError> {
        let usage = |message: String| Err(BenchError::Usage(message));
        if config.connections == 0 {
            return usage(
                "--connections N is required with --realtime (how many connections to hold)".into(),
            );
        }
        if !(config.connect_rate.is_finite() && config.connect_rate > 0.0) {
            return usage(
                "--connect-rate must be a positive number of connections per second".into(),
            );
        }
        if config.max_handshakes == 0 {
            return usage("--max-in-flight must be at least 1".into());
        }
        if config.timeout.is_zero() {
            return usage("--timeout must be more than zero".into());
        }
        let Some(duration) = config.duration else {
            return usage("--duration is required (e.g. --duration 20s)".into());
        };
        if !valid_room(&config.room) {
            return usage(format!(
                "--room {:?}: use letters, digits and - _ . : ~ (at most 200)",
                config.room
            ));
        }
        if config.message_bytes > MAX_MESSAGE_BYTES {
            return usage(format!("--message-bytes must be at most {MAX_MESSAGE_BYTES}"));
        }
        let topic = format!("room:{}", config.room);
        let key = config.key.as_deref();
        let urls: Vec<&str> = config
            .urls
            .iter()
            .flat_map(|entry| entry.split(','))
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .collect();
        if urls.is_empty() {
            return usage("--url: give the base URL of at least one node".into());
        }
        let nodes = urls
            .iter()
            .map(|url| node(url, config.transport, &config.room, key))
            .collect::<Result<Vec<_>, _>>()?;
        check_source_ips(&config.source_ips, &nodes)?;
        for pid in &config.server_pids {
            if super::procfs::vm_rss(*pid).is_none() {
                return usage(format!(
                    "--server-pid {pid}: cannot read its resident memory in /proc/{pid}/status"
                ));
            }
        }
        let publish_key = config.publish_key.as_deref().or(key);
        let publishing = match config.publish_rate {
            None | Some(0.0) => None,
            Some(rate) => Some(publishing(rate, duration, config.message_bytes, publish_key)?),
        };
        let subscribe_frame = match config.transport {
            Transport::Ws => wire::subscribe_frame(&topic),
            Transport::Socketio => socketio::subscribe_packet(&topic),
        };
        Ok(Plan {
            transport: config.transport,
            nodes,
            connections: config.connections,
            connect_rate: config.connect_rate,
            max_handshakes: config.max_handshakes,
            source_ips: config.source_ips.clone(),
            room: config.room.clone(),
            subscribe_frame,
            connect_packet: socketio::connect_packet(key),
            topic,
            duration,
            publishing,
            message_bytes: config.message_bytes,
            publish_all_nodes: config.publish_all_nodes,
            server_pids: config.server_pids.clone(),
            timeout: config.timeout,
            progress: interactive && !config.quiet,
            label: config.label.clone(),
        })
    }

    /// The longest the connect phase may last: connections / rate, plus 30 s.
    pub(crate) fn connect_deadline(&self) -> Duration {
        Duration::from_secs_f64(self.connections as f64 / self.connect_rate)
            + Duration::from_secs(30)
    }

    /// The node connection `index` goes to, round robin.
    pub(crate) fn node_of(&self, index: usize) -> usize {
        index % self.nodes.len()
    }

    /// The source address connection `index` is bound to, round robin.
    pub(crate) fn source_of(&self, index: usize) -> Option<IpAddr> {
        (!self.source_ips.is_empty()).then(|| self.source_ips[index % self.source_ips.len()])
    }
}

/// Room names stay in one path segment and one topic without escaping.
fn valid_room(room: &str) -> bool {
    !room.is_empty()
        && room.len() <= 200
        && room.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:~".contains(&b))
}

/// A node from its base URL: `http://HOST:PORT` with a loopback host.
fn node(
    url: &str,
    transport: Transport,
    room: &str,
    key: Option<&str>,
) -> Result<Node, BenchError> {
    let refuse = |why: &str| Err(BenchError::Usage(format!("--url {url:?}: {why}")));
    let Ok(uri) = url.parse::<Uri>() else {
        return refuse("not a URL");
    };
    if uri.scheme_str() != Some("http") {
        return refuse("give the node's base URL, http://HOST:PORT");
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return refuse("give the node's base URL without a path (http://HOST:PORT)");
    }
    let Some(host) = uri.host() else {
        return refuse("no host");
    };
    let ip = if host.eq_ignore_ascii_case("localhost") {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        match host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            Ok(ip) => ip,
            Err(_) => return refuse("the host must be a loopback address (127.0.0.0/8 or ::1)"),
        }
    };
    if !ip.is_loopback() {
        return refuse(
            "realtime load goes to loopback only (127.0.0.0/8 or ::1): bounded tests on this \
             machine",
        );
    }
    let addr = SocketAddr::new(ip, uri.port_u16().unwrap_or(80));
    let authority = match ip {
        IpAddr::V4(_) => addr.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]:{}", addr.port()),
    };
    let token = key.map(|key| format!("token={}", wire::percent_encode(key)));
    let ws_uri = match (transport, token) {
        (Transport::Ws, Some(token)) => format!("ws://{authority}/ws?{token}"),
        (Transport::Ws, None) => format!("ws://{authority}/ws"),
        // Socket.IO carries the token in its CONNECT packet.
        (Transport::Socketio, _) => {
            format!("ws://{authority}/socket.io/?EIO=4&transport=websocket")
        }
    };
    let Ok(publish_uri) = format!("http://{authority}/v1/rooms/{room}/messages").parse::<Uri>()
    else {
        return refuse("cannot build the publish URL");
    };
    Ok(Node { url: url.to_string(), addr, ws_uri, publish_uri })
}

/// Source addresses must be loopback and of the nodes' address family.
fn check_source_ips(source_ips: &[IpAddr], nodes: &[Node]) -> Result<(), BenchError> {
    for ip in source_ips {
        if !ip.is_loopback() {
            return Err(BenchError::Usage(format!(
                "--source-ips: {ip} is not a loopback address (realtime load stays on loopback)"
            )));
        }
        if let Some(node) = nodes.iter().find(|node| node.addr.is_ipv4() != ip.is_ipv4()) {
            return Err(BenchError::Usage(format!(
                "--source-ips: {ip} cannot reach {} (another address family)",
                node.url
            )));
        }
    }
    Ok(())
}

fn publishing(
    rate: f64,
    duration: Duration,
    message_bytes: usize,
    key: Option<&str>,
) -> Result<Publishing, BenchError> {
    let usage = |message: &str| Err(BenchError::Usage(message.to_string()));
    if !(rate.is_finite() && rate > 0.0) {
        return usage("--publish-rate must be a positive number of messages per second (or 0)");
    }
    let messages = crate::config::Plan::arrivals(rate, duration);
    if messages == 0 {
        return usage("--publish-rate × --duration schedules no message at all");
    }
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(key) = key {
        let Ok(value) = HeaderValue::from_str(&format!("Bearer {key}")) else {
            return usage("--publish-key (or --key) cannot be sent in an HTTP header");
        };
        headers.insert(AUTHORIZATION, value);
    }
    let run = fastrand::u32(..);
    Ok(Publishing { rate, run, messages, headers, pad: wire::pad(message_bytes, messages, run) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> RealtimeConfig {
        RealtimeConfig::new(
            Transport::Ws,
            vec!["http://127.0.0.1:8080".into()],
            10,
            Duration::from_secs(1),
        )
    }

    fn usage_message(config: &RealtimeConfig) -> String {
        match Plan::new(config, false) {
            Err(BenchError::Usage(message)) => message,
            other => panic!("expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn only_loopback_nodes_are_accepted() {
        for url in ["http://10.0.0.1:8080", "http://example.com:80", "http://[2001:db8::1]:80"] {
            let message = usage_message(&RealtimeConfig { urls: vec![url.into()], ..config() });
            assert!(message.contains("loopback"), "{url}: {message}");
        }
        for url in ["http://127.0.0.2:9000", "http://localhost:9000/", "http://[::1]:9000"] {
            let plan = Plan::new(&RealtimeConfig { urls: vec![url.into()], ..config() }, false)
                .unwrap_or_else(|e| panic!("{url}: {e}"));
            assert!(plan.nodes[0].addr.ip().is_loopback());
        }
    }

    #[test]
    fn several_urls_come_from_repeats_and_commas() {
        let config = RealtimeConfig {
            urls: vec![
                "http://127.0.0.1:1, http://127.0.0.1:2".into(),
                "http://127.0.0.1:3".into(),
            ],
            key: Some("k y".into()),
            ..config()
        };
        let plan = Plan::new(&config, false).unwrap();
        let ports: Vec<u16> = plan.nodes.iter().map(|n| n.addr.port()).collect();
        assert_eq!(ports, [1, 2, 3]);
        assert_eq!(plan.nodes[1].ws_uri, "ws://127.0.0.1:2/ws?token=k%20y");
        assert_eq!(plan.nodes[2].publish_uri, "http://127.0.0.1:3/v1/rooms/bench/messages");
        assert_eq!((plan.node_of(4), plan.node_of(5)), (1, 2));
    }

    #[test]
    fn socketio_nodes_open_the_engine_io_websocket_transport() {
        let config = RealtimeConfig {
            transport: Transport::Socketio,
            urls: vec!["http://[::1]:7".into()],
            key: Some("secret".into()),
            ..config()
        };
        let plan = Plan::new(&config, false).unwrap();
        assert_eq!(plan.nodes[0].ws_uri, "ws://[::1]:7/socket.io/?EIO=4&transport=websocket");
        assert_eq!(plan.connect_packet, r#"40{"token":"secret"}"#);
        assert_eq!(plan.subscribe_frame, r#"42["subscribe",{"topic":"room:bench"}]"#);
    }

    #[test]
    fn bad_arguments_say_what_to_change() {
        let cases = [
            (RealtimeConfig { connections: 0, ..config() }, "--connections N is required"),
            (RealtimeConfig { duration: None, ..config() }, "--duration is required"),
            (RealtimeConfig { room: "a/b".into(), ..config() }, "--room"),
            (
                RealtimeConfig { urls: vec!["http://127.0.0.1:1/ws".into()], ..config() },
                "without a path",
            ),
            (RealtimeConfig { publish_rate: Some(-1.0), ..config() }, "--publish-rate"),
            (RealtimeConfig { publish_rate: Some(0.5), ..config() }, "schedules no message"),
            (RealtimeConfig { connect_rate: 0.0, ..config() }, "--connect-rate"),
            (
                RealtimeConfig { source_ips: vec!["10.1.1.1".parse().unwrap()], ..config() },
                "not a loopback",
            ),
            (
                RealtimeConfig { source_ips: vec!["::1".parse().unwrap()], ..config() },
                "another address family",
            ),
            (RealtimeConfig { server_pids: vec![u32::MAX], ..config() }, "--server-pid"),
        ];
        for (config, expected) in cases {
            let message = usage_message(&config);
            assert!(message.contains(expected), "{message:?} lacks {expected:?}");
        }
    }

    #[test]
    fn a_zero_publish_rate_only_holds() {
        let plan = Plan::new(&RealtimeConfig { publish_rate: Some(0.0), ..config() }, false);
        assert!(plan.unwrap().publishing.is_none());
        let plan = Plan::new(&RealtimeConfig { publish_rate: Some(10.0), ..config() }, false);
        let publishing = plan.unwrap().publishing.unwrap();
        assert_eq!(publishing.messages, 10);
        assert!(publishing.headers.get(AUTHORIZATION).is_none());
    }

    #[test]
    fn the_connect_phase_is_bounded_by_the_rate() {
        let plan = Plan::new(&RealtimeConfig { connections: 4000, ..config() }, false).unwrap();
        assert_eq!(plan.connect_deadline(), Duration::from_secs(32));
    }
}
