//! The real binary: zero-config start, SIGTERM drain, check-config, the mock
//! CLI, and no secret in any log line.

#![expect(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "process helpers fail the test when the child cannot be driven"
)]

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use floodgate_mock_upstream::{MockConfig, MockServer};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::helpers::*;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_floodgate");

/// A running `floodgate` process whose output lines are collected.
pub(crate) struct Running {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Running {
    pub(crate) fn spawn(args: &[&str], dir: &std::path::Path, env: &[(&str, &str)]) -> Running {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("floodgate starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        for reader in
            [Box::new(stdout) as Box<dyn tokio::io::AsyncRead + Unpin + Send>, Box::new(stderr)]
        {
            let lines = lines.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(reader).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    lines.lock().unwrap().push(line);
                }
            });
        }
        Running { child, lines }
    }

    /// Waits for a line containing `needle` and returns it.
    async fn line_with(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(line) = self.lines.lock().unwrap().iter().find(|l| l.contains(needle)) {
                return line.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no line with {needle:?} in {:#?}",
                self.lines.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The address from the JSON "listening" log line.
    pub(crate) async fn address(&self) -> String {
        let line = self.line_with("floodgate listening").await;
        let value: Value =
            serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        value["address"].as_str().unwrap().to_string()
    }

    pub(crate) fn terminate(&self) {
        let pid = self.child.id().expect("running").to_string();
        let status = std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success());
    }

    pub(crate) async fn wait(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("exits")
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let lines = self.lines.lock().unwrap().clone();
        (status, lines)
    }
}

#[tokio::test]
async fn zero_config_serves_the_builtin_mock_offline() {
    let dir = tempfile::tempdir().unwrap();
    let running = Running::spawn(
        &["serve", "--listen", "127.0.0.1:0", "--log-format", "json"],
        dir.path(),
        &[("FLOODGATE_LOG", "info,floodgate::access=debug")],
    );
    let address = running.address().await;
    let http = http_client();
    let body = chat_body("mock", false);
    let response = http
        .post(format!("http://{address}/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let (code, headers, body) = json_of(response).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(headers["x-floodgate-provider"], "mock");
    assert!(body["choices"][0]["message"]["content"].as_str().unwrap().len() > 10);
    let (code, _, ready) =
        json_of(http.get(format!("http://{address}/health/ready")).send().await.unwrap()).await;
    assert_eq!(code, 200, "{ready}");
    running.terminate();
    let (status, lines) = running.wait().await;
    assert!(status.success());
    assert!(dir.path().join("floodgate.db").exists(), "the SQLite file is created");
    // One log line per request, saying it completed (not that the client left).
    let done: Vec<&String> = lines.iter().filter(|l| l.contains("\"request done\"")).collect();
    assert_eq!(done.len(), 2, "{lines:#?}");
    assert!(!lines.iter().any(|l| l.contains("client went away")), "{lines:#?}");
    assert!(lines.iter().any(|l| l.contains("draining in-flight requests")), "{lines:#?}");
}

#[tokio::test]
async fn sigterm_drains_a_running_stream_and_exits_zero() {
    let mock = MockServer::start(MockConfig {
        chunk_delay: Duration::from_millis(40),
        chunks: 25,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[[providers]]\nname = \"m\"\nkind = \"openai-compatible\"\nbase_url = \"{}\"\nkeys = [\"mock-key\"]\n\n[[models]]\nname = \"gpt\"\ntargets = [\"m/gpt\"]\n",
        mock.openai_base_url()
    );
    std::fs::write(dir.path().join("floodgate.toml"), config).unwrap();
    let running = Running::spawn(
        &["serve", "-c", "floodgate.toml", "--listen", "127.0.0.1:0", "--log-format", "json"],
        dir.path(),
        &[],
    );
    let address = running.address().await;
    let response = http_client()
        .post(format!("http://{address}/v1/chat/completions"))
        .json(&chat_body("gpt", true))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    running.terminate();
    let events = parse_sse(&response.bytes().await.unwrap());
    assert_eq!(events.last().unwrap().data, "[DONE]", "the stream finished despite SIGTERM");
    assert_eq!(
        data_of(&events).iter().filter(|c| c["choices"][0]["delta"]["content"].is_string()).count(),
        25 + 1
    );
    let (status, lines) = running.wait().await;
    assert!(status.success(), "{lines:#?}");
    assert!(lines.iter().any(|l| l.contains("draining")));
}

#[tokio::test]
async fn check_config_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.toml"),
        "listen = \"127.0.0.1:8080\"\n\n[[providers]]\nname = \"x\"\nkind = \"openia\"\n",
    )
    .unwrap();
    let output = std::process::Command::new(BIN)
        .args(["check-config", "bad.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("bad.toml:5:") && stderr.contains("openai-compatible"), "{stderr}");

    std::fs::write(dir.path().join("good.toml"), "[[providers]]\nname = \"m\"\nkind = \"mock\"\n\n[[models]]\nname = \"a\"\ntargets = [\"m/x\"]\n").unwrap();
    let output = std::process::Command::new(BIN)
        .args(["check-config", "good.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("good.toml: OK (1 provider, 1 model"));

    let output = std::process::Command::new(BIN)
        .args(["check-config", "missing.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("cannot read config file missing.toml")
    );
}

#[tokio::test]
async fn the_example_config_in_the_repository_is_valid() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../floodgate.example.toml");
    let output = std::process::Command::new(BIN)
        .args(["check-config", example])
        .env_clear()
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("OK (5 providers, 3 models, listen 127.0.0.1:8080)"), "{stdout}");
}

#[tokio::test]
async fn no_secret_reaches_logs_or_responses() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let master = "fg-master-SECRET-0123456789abcdef";
    let bad_key = "invalid-SECRET-key-0123456789abcdef";
    let good_key = "sk-good-SECRET-0123456789abcdef";
    let config = format!(
        "master_key = \"${{FLOODGATE_MASTER_KEY}}\"\n\n[[providers]]\nname = \"m\"\nkind = \"openai-compatible\"\nbase_url = \"{}\"\nkeys = [\"${{BAD_KEY}}\", \"${{GOOD_KEY}}\"]\n\n[[providers]]\nname = \"a\"\nkind = \"anthropic\"\nbase_url = \"{}\"\nkeys = [\"${{BAD_KEY}}\"]\n\n[[models]]\nname = \"gpt\"\ntargets = [\"m/gpt\"]\n\n[[models]]\nname = \"claude\"\ntargets = [\"a/claude\"]\n",
        mock.openai_base_url(),
        mock.base_url()
    );
    std::fs::write(dir.path().join("floodgate.toml"), config).unwrap();
    let env = [
        ("FLOODGATE_MASTER_KEY", master),
        ("BAD_KEY", bad_key),
        ("GOOD_KEY", good_key),
        ("FLOODGATE_LOG", "trace"),
    ];
    let running = Running::spawn(
        &["serve", "-c", "floodgate.toml", "--listen", "127.0.0.1:0", "--log-format", "json"],
        dir.path(),
        &env,
    );
    let address = running.address().await;
    let http = http_client();
    let mut bodies = Vec::new();
    // A bad client key, a good one; an upstream that echoes the refused key; streams.
    for (path, body, key) in [
        ("/v1/chat/completions", chat_body("gpt", false), "wrong-client-key"),
        ("/v1/chat/completions", chat_body("gpt", false), master),
        ("/v1/chat/completions", chat_body("gpt", true), master),
        ("/v1/messages", messages_body("claude", false), master),
        ("/v1/chat/completions", chat_body("claude", true), master),
    ] {
        let response = http
            .post(format!("http://{address}{path}"))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .unwrap();
        bodies.push(response.text().await.unwrap());
    }
    // A virtual key: made, used, listed, revoked, refused.
    let created: Value = http
        .post(format!("http://{address}/admin/keys"))
        .bearer_auth(master)
        .json(&serde_json::json!({"name": "app", "rpm": 100}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let virtual_key = created["key"].as_str().expect("a key").to_string();
    let id = created["id"].as_str().unwrap().to_string();
    for (method, path, key) in [
        (reqwest::Method::POST, "/v1/chat/completions".to_string(), virtual_key.as_str()),
        (reqwest::Method::GET, "/admin/keys".to_string(), master),
        (reqwest::Method::DELETE, format!("/admin/keys/{id}"), master),
        (reqwest::Method::POST, "/v1/chat/completions".to_string(), virtual_key.as_str()),
        (reqwest::Method::GET, "/admin/keys".to_string(), virtual_key.as_str()),
    ] {
        let response = http
            .request(method, format!("http://{address}{path}"))
            .bearer_auth(key)
            .json(&chat_body("gpt", false))
            .send()
            .await
            .unwrap();
        bodies.push(response.text().await.unwrap());
    }
    // The ledger is written in batches: wait for the key's row.
    let deadline = Instant::now() + Duration::from_secs(10);
    let usage = loop {
        let usage = http
            .get(format!("http://{address}/admin/usage?group_by=key"))
            .bearer_auth(master)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if usage.contains(&id) {
            break usage;
        }
        assert!(Instant::now() < deadline, "{usage}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let metrics =
        http.get(format!("http://{address}/metrics")).send().await.unwrap().text().await.unwrap();
    let ready = http
        .get(format!("http://{address}/health/ready"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    running.terminate();
    let (status, lines) = running.wait().await;
    assert!(status.success());
    assert!(lines.len() > 10, "trace logging produced lines: {lines:#?}");
    // The upstream did echo the refused key back to us.
    assert!(
        lines.iter().chain(&bodies).any(|l| l.contains("[REDACTED]")),
        "{lines:#?}\n{bodies:#?}"
    );
    let everything = [lines.join("\n"), bodies.join("\n"), metrics, ready, usage].join("\n");
    for secret in [master, bad_key, good_key, "SECRET", &virtual_key[3..]] {
        assert!(!everything.contains(secret), "{secret} leaked:\n{everything}");
    }
}

#[tokio::test]
async fn mock_upstream_cli_serves_until_terminated() {
    let dir = tempfile::tempdir().unwrap();
    let running =
        Running::spawn(&["mock-upstream", "--port", "0", "--chunks", "3"], dir.path(), &[]);
    let line = running.line_with("mock upstream listening on http://").await;
    let base = line.split_whitespace().find(|w| w.starts_with("http://")).unwrap().to_string();
    let response = http_client()
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth("k")
        .json(&chat_body("m", false))
        .send()
        .await
        .unwrap();
    let (code, _, body) = json_of(response).await;
    assert_eq!(code, 200);
    assert_eq!(body["choices"][0]["message"]["content"], floodgate_mock_upstream::answer_text(3));
    running.terminate();
    assert!(running.wait().await.0.success());
}

#[tokio::test]
async fn bench_cli_refuses_bad_arguments_and_writes_its_reports() {
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(BIN)
        .args([
            "bench",
            "--url",
            "http://127.0.0.1:9/v1/chat/completions",
            "--rate",
            "10",
            "--concurrency",
            "2",
            "--duration",
            "1s",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64), "{}", String::from_utf8_lossy(&output.stderr));

    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let url = format!("{}/chat/completions", mock.openai_base_url());
    let json = dir.path().join("report.json");
    let html = dir.path().join("report.html");
    let output = tokio::process::Command::new(BIN)
        .args([
            "bench",
            "--quiet",
            "--url",
            &url,
            "--key",
            "k",
            "--concurrency",
            "2",
            "--duration",
            "1s",
        ])
        .arg("--json")
        .arg(&json)
        .arg("--html")
        .arg(&html)
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["schema"], "floodgate-bench/1");
    let ok = report["totals"]["ok"].as_u64().unwrap();
    assert!(ok > 0 && report["totals"]["errors"] == 0, "{report}");
    assert_eq!(ok, mock.stats().requests, "every request the bench counts reached the mock");
    assert!(std::fs::read_to_string(&html).unwrap().contains("<svg"));
}

#[tokio::test]
async fn health_probe_exits_zero_only_when_the_node_is_ready() {
    let dir = tempfile::tempdir().unwrap();
    let running = Running::spawn(
        &["serve", "--listen", "127.0.0.1:0", "--log-format", "json"],
        dir.path(),
        &[],
    );
    let address = running.address().await;
    let probe = |url: String| async move {
        let output = tokio::process::Command::new(BIN)
            .args(["health", "--url", &url, "--timeout", "2s"])
            .output()
            .await
            .unwrap();
        let text = [output.stdout, output.stderr].concat();
        (output.status.code(), String::from_utf8_lossy(&text).trim().to_string())
    };
    let (code, line) = probe(format!("http://{address}")).await;
    assert_eq!(code, Some(0), "{line}");
    assert_eq!(line, format!("floodgate: health: http://{address}/health/ready: 200 ready"));
    running.terminate();
    assert!(running.wait().await.0.success());

    // Nothing listens there any more.
    let (code, line) = probe(format!("http://{address}/")).await;
    assert_eq!(code, Some(1), "{line}");
    assert!(line.contains("did not answer") && line.contains("refused"), "{line}");
    assert_eq!(line.lines().count(), 1, "{line}");

    // A node that answers but is not ready (here: one that says it is draining).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let draining = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut head = vec![0_u8; 4096];
        let _ = tokio::io::AsyncReadExt::read(&mut socket, &mut head).await.unwrap();
        let body = r#"{"status":"draining"}"#;
        let answer = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        tokio::io::AsyncWriteExt::write_all(&mut socket, answer.as_bytes()).await.unwrap();
    });
    let (code, line) = probe(format!("http://{draining}")).await;
    assert_eq!(code, Some(1), "{line}");
    assert_eq!(line, format!("floodgate: health: http://{draining}/health/ready: 503 draining"));
}
