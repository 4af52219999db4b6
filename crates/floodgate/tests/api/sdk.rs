//! The official OpenAI and Anthropic Python SDKs against a real gateway:
//! every alias (OpenAI-, Anthropic- and Gemini-format upstreams) from both
//! SDKs, plain, streamed, with tools, and their error types.
//!
//! Needs `FLOODGATE_TEST_PYTHON`: a Python with the SDKs of
//! `tests/sdk/requirements.txt` installed (`.ci/run` makes one). Without it
//! the test says so and passes, except under CI (`CI` set), where it fails.

use crate::helpers::*;

#[tokio::test]
async fn official_sdks_reach_every_upstream_format() {
    run_checks(DEFAULT_CONFIG.to_string(), &[]).await;
}

/// Cached answers replayed as streams and as a whole, read by both SDKs.
#[tokio::test]
async fn official_sdks_read_cached_answers_and_replayed_streams() {
    run_checks(format!("{DEFAULT_CONFIG}\n[cache]\nenabled = true\n"), &["cache"]).await;
}

#[expect(
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a test's helper: fails the test with a message, shows the SDKs' versions"
)]
async fn run_checks(config: String, args: &[&str]) {
    let Ok(python) = std::env::var("FLOODGATE_TEST_PYTHON") else {
        // CI always provides it: there, a missing interpreter is a failure, not a skip.
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must set FLOODGATE_TEST_PYTHON (.ci/run does)"
        );
        println!(
            "skipped: set FLOODGATE_TEST_PYTHON to a Python with tests/sdk/requirements.txt installed (.ci/run does)"
        );
        return;
    };
    let key = "fg-sdk-master-0123456789".to_string();
    let app =
        spawn_with(Options { config, master_key: Some(key.clone()), ..Options::default() }).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/check.py");
    let output = tokio::process::Command::new(python)
        .args([script, &format!("http://{}", app.addr), &key])
        .args(args)
        .output()
        .await
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "SDK checks failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("sdk checks passed"), "{stdout}");
    println!("{stdout}");
}
