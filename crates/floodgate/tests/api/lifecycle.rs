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
