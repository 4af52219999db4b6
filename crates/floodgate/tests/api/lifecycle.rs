//! Startup refusals and graceful drain, in-process.

use std::time::Duration;

use floodgate_core::App;
use floodgate_core::config::{self, Env, Overrides};
use floodgate_mock_upstream::MockConfig;
use tokio_util::sync::CancellationToken;

use crate::helpers::*;

#[tokio::test]
async fn drain_finishes_in_flight_streams_then_stops() {
    let app = spawn_with(Options {
        mock: MockConfig {
            record: true,
            chunk_delay: Duration::from_millis(30),
            chunks: 20,
            ..MockConfig::default()
        },
        ..Options::default()
    })
    .await;
    let url = app.url("/v1/chat/completions");
    let client = app.http.clone();
    let response = client.post(&url).json(&chat_body("gpt", true)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    app.begin_shutdown();
    // The stream that was running completes in full.
    let events = parse_sse(&response.bytes().await.unwrap());
    assert_eq!(events.last().unwrap().data, "[DONE]");
    let text: String = data_of(&events)
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, floodgate_mock_upstream::answer_text(20));
    let addr = app.addr;
    app.wait_stopped().await.expect("serve returns Ok after draining");
    // And nothing listens any more.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn refuses_a_public_address_without_a_master_key() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("[database]\nurl = \"sqlite://{}\"\n", dir.path().join("t.db").display());
    let build = |allow| {
        let overrides = Overrides { allow_unauthenticated: allow, ..Overrides::default() };
        config::from_text(&text, "t.toml", &Env::new(), &overrides).unwrap()
    };
    let app = App::build(build(false)).await.unwrap();
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let error = app.serve(listener, CancellationToken::new()).await.unwrap_err();
    assert!(
        error.to_string().contains("refusing to listen")
            && error.to_string().contains("--allow-unauthenticated"),
        "{error}"
    );

    let app = App::build(build(true)).await.unwrap();
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let stop = CancellationToken::new();
    stop.cancel();
    app.serve(listener, stop).await.expect("allowed with the flag");
}

#[tokio::test]
async fn load_beyond_max_in_flight_is_shed_with_503_and_probes_still_answer() {
    let app = spawn_with(Options {
        config: DEFAULT_CONFIG.replace("[server]\n", "[server]\nmax_in_flight = 2\n"),
        mock: MockConfig {
            record: true,
            chunk_delay: Duration::from_millis(200),
            chunks: 5,
            ..MockConfig::default()
        },
        ..Options::default()
    })
    .await;
    // Two streams hold both places until their last byte.
    let held: Vec<_> = (0..2)
        .map(|_| {
            let (http, url) = (app.http.clone(), app.url("/v1/chat/completions"));
            tokio::spawn(async move {
                let response = http.post(url).json(&chat_body("gpt", true)).send().await.unwrap();
                assert_eq!(response.status(), 200);
                parse_sse(&response.bytes().await.unwrap())
            })
        })
        .collect();
    eventually(|| async { app.mock.stats().streams_started == 2 }).await;

    let response = app.post("/v1/chat/completions", &chat_body("gpt", false)).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let (_, _, body) = json_of(response).await;
    assert_eq!(body["error"]["code"], "overloaded");
    let (code, _, body) = app.post_json("/v1/messages", &messages_body("claude", false)).await;
    assert_eq!((code.as_u16(), body["error"]["type"].as_str()), (503, Some("overloaded_error")));
    // Probes are never shed.
    assert_eq!(app.get("/health").await.status(), 200);
    assert_eq!(app.get("/metrics").await.status(), 200);
    // The shed requests never reached an upstream.
    assert_eq!(app.upstream_requests().len(), 2);

    for stream in held {
        assert_eq!(stream.await.unwrap().last().unwrap().data, "[DONE]");
    }
    let (code, _, _) = app.post_json("/v1/chat/completions", &chat_body("gpt", false)).await;
    assert_eq!(code, 200, "places come back when the streams end");
    assert!(app.metrics().await.contains("floodgate_http_requests_shed_total"));
}

#[tokio::test]
async fn at_max_connections_the_oldest_finish_their_answer_and_close_to_make_room() {
    let app = spawn_with(Options {
        config: DEFAULT_CONFIG
            .replace("[server]\n", "[server]\nmax_connections = 2\nworkers = 1\n"),
        mock: MockConfig {
            record: true,
            chunk_delay: Duration::from_millis(100),
            chunks: 5,
            ..MockConfig::default()
        },
        ..Options::default()
    })
    .await;
    let health = "GET /health HTTP/1.1\r\nhost: t\r\n\r\n";
    let body = chat_body("gpt", true).to_string();
    let stream = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    // The oldest connection is busy with a stream, the other one idle.
    let mut busy = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let busy_answer = tokio::spawn(async move {
        let answer = exchange(&mut busy, &stream).await;
        (answer, closed_by_server(&mut busy).await)
    });
    eventually(|| async { app.mock.stats().streams_started == 1 }).await;
    let mut idle = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    assert!(
        exchange(&mut idle, &health.replace("/health", "/health?idle"))
            .await
            .starts_with("HTTP/1.1 200")
    );

    // A third client is served: the node drains its oldest connections.
    let mut third = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let answer = tokio::time::timeout(
        Duration::from_secs(5),
        exchange(&mut third, &health.replace("/health", "/health?third")),
    )
    .await
    .expect("a client beyond max_connections must not wait forever");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // The stream in progress was not cut: it ran to [DONE], then its connection closed.
    let (busy_answer, busy_closed) = busy_answer.await.unwrap();
    assert!(busy_answer.contains("data: [DONE]"), "{busy_answer}");
    assert!(busy_closed, "a drained connection closes after its answer");
    assert!(closed_by_server(&mut idle).await, "the idle connection was closed for the newcomer");
    drop(third);
    assert!(app.metrics().await.contains("floodgate_http_connections_drained_total"));
}
