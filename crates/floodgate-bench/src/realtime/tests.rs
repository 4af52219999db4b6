//! Realtime runs against the test gateway of `test_server`, over real sockets on 127.0.0.1.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::test_server::{Behavior, Hub, TOKEN, TestServer, start, start_on};
use super::*;

const WS: Transport = Transport::Ws;
const SOCKETIO: Transport = Transport::Socketio;

fn config(servers: &[&TestServer], transport: Transport, connections: usize) -> RealtimeConfig {
    let urls = servers.iter().map(|server| server.url.clone()).collect();
    RealtimeConfig {
        key: Some(TOKEN.to_string()),
        timeout: Duration::from_secs(5),
        quiet: true,
        ..RealtimeConfig::new(transport, urls, connections, Duration::from_millis(300))
    }
}

/// `config` publishing `rate` messages a second for `duration`.
fn publishing(
    servers: &[&TestServer],
    transport: Transport,
    connections: usize,
    rate: f64,
    duration: Duration,
) -> RealtimeConfig {
    RealtimeConfig {
        publish_rate: Some(rate),
        duration: Some(duration),
        ..config(servers, transport, connections)
    }
}

/// Waits (at most 5 s) until `check` holds.
async fn eventually(mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(reason, n)| (reason.to_string(), *n)).collect()
}

async fn every_message_arrives(transport: Transport) {
    let server = start(Behavior::default()).await;
    let report =
        run(publishing(&[&server], transport, 20, 50.0, Duration::from_secs(1))).await.unwrap();
    let c = &report.connections;
    assert_eq!((c.requested, c.opened, c.subscribed, c.failed), (20, 20, 20, 0), "{c:?}");
    assert_eq!((c.open_at_end, c.closed_during_run), (20, 0));
    assert_eq!(report.connect_ms.as_ref().unwrap().count, 20);
    let publish = report.publish.as_ref().unwrap();
    assert_eq!((publish.scheduled, publish.sent, publish.ok, publish.failed), (50, 50, 50, 0));
    assert_eq!(server.stats.published.load(Ordering::SeqCst), 50);
    let delivery = report.delivery.as_ref().unwrap();
    assert_eq!((delivery.expected, delivery.received, delivery.lost), (1000, 1000, 0));
    assert_eq!((delivery.duplicates, delivery.other), (0, 0));
    let latency = delivery.latency_ms.as_ref().unwrap();
    assert_eq!(latency.count, 1000);
    assert!(latency.max < 5000.0, "{latency:?}");
    assert!(delivery.received_per_s > 0.0);
    assert!(delivery.drain_s < 5.0);
    // Every connection was closed at the end.
    assert!(eventually(|| server.stats.client_closes.load(Ordering::SeqCst) == 20).await);
    let table = report.table();
    assert!(table.contains("received 1000 of 1000 expected"), "{table}");
    let json: RealtimeReport = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(json, report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_subscribers_receive_every_published_message() {
    every_message_arrives(WS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socketio_subscribers_receive_every_published_message() {
    every_message_arrives(SOCKETIO).await;
}

/// The server pings every 100 ms and closes a client that has not answered the previous ping.
async fn every_ping_is_answered(transport: Transport) {
    let behavior = Behavior { ping_every: Some(Duration::from_millis(100)), ..Behavior::default() };
    let server = start(behavior).await;
    let config = RealtimeConfig {
        duration: Some(Duration::from_millis(800)),
        ..config(&[&server], transport, 5)
    };
    let report = run(config).await.unwrap();
    let stats = &server.stats;
    assert_eq!(report.connections.subscribed, 5);
    assert_eq!(stats.ping_timeouts.load(Ordering::SeqCst), 0);
    assert_eq!(report.connections.closed_during_run, 0, "{:?}", report.connections.closed);
    assert!(stats.pings.load(Ordering::SeqCst) >= 5 * 4, "{stats:?}");
    // Each ping was answered, but for those sent as the run closed.
    assert!(stats.pongs.load(Ordering::SeqCst) + 5 >= stats.pings.load(Ordering::SeqCst));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socketio_clients_answer_every_engine_io_ping() {
    every_ping_is_answered(SOCKETIO).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_clients_answer_every_websocket_ping() {
    every_ping_is_answered(WS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_full_refusal_is_a_failure_with_its_reason() {
    let server = start(Behavior { capacity: 5, ..Behavior::default() }).await;
    let report = run(config(&[&server], WS, 8)).await.unwrap();
    let c = &report.connections;
    // A plain WebSocket is refused by a close frame after its upgrade: opened, then failed.
    assert_eq!((c.subscribed, c.failed, c.opened), (5, 3, 8));
    assert_eq!(c.failures, counts(&[("refused: 1013 node full", 3)]));
    assert_eq!(report.connect_ms.unwrap().count, 5);

    let server = start(Behavior { capacity: 3, ..Behavior::default() }).await;
    let report = run(config(&[&server], SOCKETIO, 5)).await.unwrap();
    let c = &report.connections;
    // Socket.IO's refusal comes before its transport counts as open.
    assert_eq!((c.subscribed, c.failed, c.opened), (3, 2, 3));
    assert_eq!(c.failures, counts(&[("refused: node full", 2)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_refused_for_connections_and_posts() {
    let server = start(Behavior::default()).await;
    let wrong = |transport| RealtimeConfig {
        key: Some("wrong".into()),
        ..config(&[&server], transport, 2)
    };
    let report = run(wrong(WS)).await.unwrap();
    assert_eq!(report.connections.failures, counts(&[("refused: 1008 unauthorized", 2)]));
    let report = run(wrong(SOCKETIO)).await.unwrap();
    assert_eq!(report.connections.failures, counts(&[("refused: unauthorized", 2)]));

    let config = RealtimeConfig {
        publish_key: Some("wrong".into()),
        ..publishing(&[&server], WS, 2, 20.0, Duration::from_millis(500))
    };
    let report = run(config).await.unwrap();
    let publish = report.publish.unwrap();
    assert_eq!((publish.sent, publish.ok, publish.failed), (10, 0, 10));
    assert_eq!(publish.failures, counts(&[("HTTP 401", 10)]));
    let delivery = report.delivery.unwrap();
    assert_eq!((delivery.expected, delivery.received, delivery.lost), (0, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_and_silent_nodes_fail_with_their_reason() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = RealtimeConfig {
        urls: vec![format!("http://127.0.0.1:{port}")],
        ..RealtimeConfig::new(WS, Vec::new(), 3, Duration::ZERO)
    };
    let report = run(RealtimeConfig { quiet: true, ..config }).await.unwrap();
    assert_eq!(report.connections.failures, counts(&[("connect: Connection refused", 3)]));
    assert!(report.connect_ms.is_none());

    // A node that accepts TCP and never answers the upgrade.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let config = RealtimeConfig {
        timeout: Duration::from_millis(200),
        quiet: true,
        ..RealtimeConfig::new(SOCKETIO, vec![url], 4, Duration::ZERO)
    };
    let started = Instant::now();
    let report = run(config).await.unwrap();
    assert_eq!(report.connections.failures, counts(&[("timeout: websocket upgrade", 4)]));
    assert!(started.elapsed() < Duration::from_secs(3));
    holder.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_the_server_closes_are_counted_by_code() {
    let behavior = Behavior {
        close_after: Some((Duration::from_millis(50), 4008, "slow consumer")),
        ..Behavior::default()
    };
    let server = start(behavior).await;
    let report = run(config(&[&server], WS, 6)).await.unwrap();
    let c = &report.connections;
    assert_eq!((c.subscribed, c.open_at_end, c.closed_during_run), (6, 0, 6));
    assert_eq!(c.closed, counts(&[("4008 slow consumer", 6)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_are_counted_apart() {
    let server = start(Behavior { duplicate: true, ..Behavior::default() }).await;
    let report =
        run(publishing(&[&server], WS, 4, 20.0, Duration::from_millis(500))).await.unwrap();
    let delivery = report.delivery.unwrap();
    assert_eq!((delivery.expected, delivery.received, delivery.lost), (40, 40, 0));
    assert_eq!(delivery.duplicates, 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_spread_over_nodes_and_source_addresses() {
    let hub = Hub::new();
    let (a, b) =
        (start_on(&hub, Behavior::default()).await, start_on(&hub, Behavior::default()).await);
    let config = RealtimeConfig {
        source_ips: crate::parse_ip_range("127.0.0.1-127.0.0.3").unwrap(),
        publish_all_nodes: true,
        server_pids: vec![std::process::id()],
        ..publishing(&[&a, &b], WS, 12, 20.0, Duration::from_millis(500))
    };
    let report = run(config).await.unwrap();
    let c = &report.connections;
    assert_eq!(c.subscribed_per_url, [6, 6]);
    assert_eq!(report.urls, [a.url.clone(), b.url.clone()]);
    // Publishing round robin: each node took half the posts.
    assert_eq!(a.stats.published.load(Ordering::SeqCst), 5);
    assert_eq!(b.stats.published.load(Ordering::SeqCst), 5);
    let delivery = report.delivery.as_ref().unwrap();
    assert_eq!((delivery.expected, delivery.received), (120, 120));
    let peers = |server: &TestServer| server.stats.peers.lock().unwrap().len();
    // Three source addresses for the connections (the publisher's own is one of them).
    assert_eq!((peers(&a), peers(&b)), (3, 3));
    // One pid for two nodes: its growth is divided by every connection.
    assert_eq!(report.servers.len(), 1);
    let server = &report.servers[0];
    assert_eq!(server.pid, Some(std::process::id()));
    assert_eq!(server.connections, 12);
    assert!(server.rss_before_bytes.is_some() && server.rss_end_bytes.is_some());
    assert!(server.rss_per_connection_bytes.is_some() && server.hold_cpu_cores.is_some());
    let total = report.servers_total.as_ref().unwrap();
    assert_eq!((total.pid, total.rss_before_bytes), (None, server.rss_before_bytes));
    // The bench is this process too.
    assert_eq!((report.client.pid, report.client.connections), (server.pid, 12));
    assert!(report.table().contains("  server"));
}

#[tokio::test]
async fn non_loopback_nodes_are_refused_before_anything_is_sent() {
    let config = RealtimeConfig::new(WS, vec!["http://192.0.2.1:80".into()], 1, Duration::ZERO);
    match run(config).await {
        Err(BenchError::Usage(message)) => assert!(message.contains("loopback"), "{message}"),
        other => panic!("expected a usage error, got {other:?}"),
    }
}
