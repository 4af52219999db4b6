//! Once against the real thing: a floodgate gateway in front of the mock upstream.

use floodgate_core::App;
use floodgate_core::config::{self, Env, Overrides};
use floodgate_mock_upstream::{MockConfig, MockServer};
use tokio_util::sync::CancellationToken;

use crate::helpers::{assert_consistent, closed, run};

const CONFIG: &str = r#"
[[providers]]
name = "oai"
kind = "openai-compatible"
base_url = "{openai}"
keys = ["oai-key-0123456789abcdef"]

[[models]]
name = "gpt"
targets = ["oai/gpt-4o-mini"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_through_a_real_gateway() {
    let mock = MockServer::start(MockConfig { chunks: 6, ..MockConfig::default() }).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{}\n[database]\nurl = \"sqlite://{}\"\n",
        CONFIG.replace("{openai}", &mock.openai_base_url()),
        dir.path().join("floodgate.db").display()
    );
    let config =
        config::from_text(&text, "bench.toml", &Env::new(), &Overrides::default()).unwrap();
    let app = App::build(config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.serve(listener, shutdown.clone()));

    let url = format!("http://{addr}/v1/chat/completions");
    let bench =
        floodgate_bench::BenchConfig { stream: true, model: "gpt".into(), ..closed(&url, 2, 500) };
    let report = run(bench).await;
    assert_consistent(&report);
    assert!(report.totals.ok > 0);
    assert_eq!(report.totals.errors, 0);
    assert_eq!(mock.stats().streams_started, report.totals.sent);
    assert_eq!(report.ttft_ms.as_ref().unwrap().count, report.totals.ok);
    assert_eq!(report.gap_ms.as_ref().unwrap().count, report.totals.ok * 5);

    shutdown.cancel();
    server.await.unwrap().unwrap();
}
