//! Scenario files: parsing (with the line of every problem) and a user population run.

use std::time::Duration;

use floodgate_bench::{BenchConfig, BenchError, MixEntry, Mode, Scenario};
use floodgate_mock_upstream::MockConfig;

use crate::helpers::{KEY, assert_consistent, chat_url, mock, run};

const VALID: &str = r#"
users = 10000
duration = "60s"
ramp_up = "10s"

[[mix]]
weight = 3
model = "gpt"
stream = true
prompt_tokens = 200
max_tokens = 100
think_time = "5s"

[[mix]]
model = "claude"
"#;

#[test]
fn a_valid_scenario_parses_with_defaults_for_what_it_leaves_out() {
    let scenario = Scenario::parse(VALID, "chat.toml").unwrap();
    assert_eq!(
        scenario,
        Scenario {
            users: 10_000,
            duration: Some(Duration::from_secs(60)),
            ramp_up: Duration::from_secs(10),
            mix: vec![
                MixEntry {
                    weight: 3,
                    model: Some("gpt".into()),
                    stream: Some(true),
                    prompt_tokens: Some(200),
                    max_tokens: Some(100),
                    think_time: Duration::from_secs(5),
                },
                MixEntry {
                    weight: 1,
                    model: Some("claude".into()),
                    stream: None,
                    prompt_tokens: None,
                    max_tokens: None,
                    think_time: Duration::ZERO,
                },
            ],
        }
    );
}

fn scenario_error(text: &str) -> (Option<usize>, String, String) {
    let error = Scenario::parse(text, "s.toml").unwrap_err();
    let shown = error.to_string();
    assert_eq!(error.exit_code(), 64);
    match error {
        BenchError::Scenario { line, message, .. } => (line, message, shown),
        other => panic!("expected a scenario error, got {other:?}"),
    }
}

#[test]
fn an_unknown_field_is_refused_with_its_line() {
    let (line, message, shown) =
        scenario_error("users = 2\n\n[[mix]]\nweight = 1\nthinktime = \"1s\"\n");
    assert_eq!(line, Some(5));
    assert!(message.contains("unknown field `thinktime`"), "{message}");
    assert!(shown.starts_with("s.toml:5: "), "{shown}");
}

#[test]
fn a_zero_weight_is_refused_with_its_line() {
    let (line, message, _) =
        scenario_error("users = 2\n[[mix]]\nweight = 2\n[[mix]]\nweight = 0\n");
    assert_eq!(line, Some(5));
    assert_eq!(message, "mix weight must be at least 1 (remove the entry to leave it out)");
}

#[test]
fn a_negative_weight_is_refused_with_its_line() {
    let (line, _, _) = scenario_error("users = 2\n[[mix]]\nweight = -1\n");
    assert_eq!(line, Some(3));
}

#[test]
fn a_bad_duration_is_refused_with_its_line() {
    let (line, message, _) = scenario_error("users = 2\nramp_up = \"soon\"\n[[mix]]\n");
    assert_eq!(line, Some(2));
    assert!(message.contains("\"soon\" is not a duration"), "{message}");
}

#[test]
fn users_and_mix_are_required() {
    let (line, message, _) = scenario_error("users = 0\n[[mix]]\n");
    assert_eq!((line, message.as_str()), (Some(1), "users must be at least 1"));
    let (line, message, _) = scenario_error("users = 3\n");
    assert_eq!((line, message.as_str()), (None, "at least one [[mix]] entry is needed"));
    let (_, message, _) = scenario_error("[[mix]]\n");
    assert!(message.contains("missing field `users`"), "{message}");
}

#[test]
fn scenario_files_are_read_and_missing_ones_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chat.toml");
    std::fs::write(&path, VALID).unwrap();
    assert_eq!(Scenario::from_file(&path).unwrap().users, 10_000);
    let missing = Scenario::from_file(&dir.path().join("nope.toml")).unwrap_err();
    assert_eq!(missing.exit_code(), 64);
    assert!(missing.to_string().starts_with("cannot read scenario file"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_population_runs_its_mix() {
    let mock = mock(MockConfig::default()).await;
    let text = r#"
users = 6
duration = "600ms"
ramp_up = "200ms"

[[mix]]
weight = 2
stream = true
think_time = "20ms"

[[mix]]
weight = 1
stream = false
think_time = "20ms"
"#;
    let config = BenchConfig {
        scenario: Some(Scenario::parse(text, "s.toml").unwrap()),
        key: Some(KEY.into()),
        quiet: true,
        ..BenchConfig::new(chat_url(&mock))
    };
    let report = run(config).await;
    assert_consistent(&report);
    assert_eq!(report.config.mode, Mode::Scenario);
    assert_eq!(report.config.users, Some(6));
    assert_eq!(report.config.duration_s, 0.6);
    assert_eq!(report.totals.errors, 0);
    assert_eq!(report.totals.sent, mock.stats().requests);
    assert_eq!(report.mix.len(), 2);
    assert!(report.mix[0].stream && !report.mix[1].stream);
    // Streams were sent by the first entry only, and each has a first token.
    assert_eq!(mock.stats().streams_started, report.mix[0].sent);
    assert_eq!(report.ttft_ms.as_ref().map_or(0, |t| t.count), report.mix[0].ok);
    assert!(report.table().contains("mix"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scenario_with_a_rate_is_a_usage_error() {
    let config = BenchConfig {
        scenario: Some(Scenario::parse("users = 1\n[[mix]]\n", "s.toml").unwrap()),
        rate: Some(5.0),
        duration: Some(Duration::from_secs(1)),
        ..BenchConfig::new("http://127.0.0.1:9/v1/chat/completions")
    };
    let error = floodgate_bench::run(config).await.unwrap_err();
    assert_eq!(error.exit_code(), 64);
    assert!(error.to_string().contains("--scenario sets its own users"));
}
