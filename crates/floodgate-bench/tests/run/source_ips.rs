//! `--source-ips`: client sockets are bound to the given local addresses, round robin.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::helpers::{closed, run};

/// A tiny HTTP/1.1 server that answers every request with `{}` and notes each peer address.
async fn peer_recording_server() -> (String, Arc<Mutex<BTreeSet<IpAddr>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/chat/completions", listener.local_addr().unwrap());
    let peers = Arc::new(Mutex::new(BTreeSet::new()));
    let seen = Arc::clone(&peers);
    tokio::spawn(async move {
        while let Ok((mut socket, peer)) = listener.accept().await {
            seen.lock().unwrap().insert(peer.ip());
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = [0_u8; 4096];
                while let Ok(n) = socket.read(&mut chunk).await {
                    if n == 0 {
                        return;
                    }
                    buffer.extend_from_slice(&chunk[..n]);
                    while let Some(length) = complete_request(&buffer) {
                        buffer.drain(..length);
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
                        if socket.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (url, peers)
}

/// The length of the first complete request in `buffer` (head plus `content-length` body).
fn complete_request(buffer: &[u8]) -> Option<usize> {
    let head_end = buffer.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .map_or(0, |value| value.trim().parse().unwrap());
    (buffer.len() >= head_end + length).then_some(head_end + length)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_are_bound_to_each_source_address() {
    let (url, peers) = peer_recording_server().await;
    let config = floodgate_bench::BenchConfig {
        source_ips: floodgate_bench::parse_ip_range("127.0.0.2-127.0.0.3").unwrap(),
        ..closed(&url, 4, 300)
    };
    let report = run(config).await;
    assert!(report.totals.ok > 0);
    assert_eq!(report.totals.errors, 0);
    let expected: BTreeSet<IpAddr> =
        ["127.0.0.2", "127.0.0.3"].iter().map(|ip| ip.parse().unwrap()).collect();
    assert_eq!(*peers.lock().unwrap(), expected);
    assert_eq!(report.config.source_ips, expected.into_iter().collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_of_another_machine_is_a_usage_error() {
    let config = floodgate_bench::BenchConfig {
        // TEST-NET-1 (RFC 5737): never assigned to this machine; only bound, never contacted.
        source_ips: vec!["192.0.2.1".parse().unwrap()],
        ..closed("http://127.0.0.1:9/v1/chat/completions", 1, 100)
    };
    let error = floodgate_bench::run(config).await.unwrap_err();
    assert_eq!(error.exit_code(), 64);
    assert!(error.to_string().contains("cannot bind to 192.0.2.1"), "{error}");
}
