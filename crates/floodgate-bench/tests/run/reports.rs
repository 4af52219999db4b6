//! The JSON report round-trips and has its timeline; the HTML report is one self-contained file.

use floodgate_bench::Report;
use floodgate_mock_upstream::MockConfig;
use serde_json::Value;

use crate::helpers::{chat_url, closed, mock, run};

async fn streamed_report() -> Report {
    let mock = mock(MockConfig { chunks: 4, ..MockConfig::default() }).await;
    let config = floodgate_bench::BenchConfig {
        stream: true,
        label: Some("ci <smoke>".into()),
        ..closed(&chat_url(&mock), 2, 1_200)
    };
    run(config).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_report_round_trips_and_has_the_documented_shape() {
    let report = streamed_report().await;
    let json = report.to_json();
    let back: Report = serde_json::from_str(&json).unwrap();
    assert_eq!(back, report);

    let value: Value = serde_json::from_str(&json).unwrap();
    let keys: Vec<&str> = value.as_object().unwrap().keys().map(String::as_str).collect();
    // serde_json's map keeps keys sorted.
    assert_eq!(
        keys,
        vec![
            "client_limits",
            "config",
            "errors_by_kind",
            "errors_by_status",
            "gap_ms",
            "latency_ms",
            "mix",
            "schema",
            "timeline",
            "totals",
            "ttft_ms",
            "warnings"
        ]
    );
    assert_eq!(value["schema"], "floodgate-bench/1");
    assert_eq!(value["config"]["mode"], "closed");
    assert_eq!(value["config"]["api"], "openai");
    assert_eq!(value["config"]["label"], "ci <smoke>");
    assert_eq!(value["config"]["stream"], true);
    let latency = value["latency_ms"].as_object().unwrap();
    let fields: Vec<&str> = latency.keys().map(String::as_str).collect();
    assert_eq!(fields, vec!["count", "max", "mean", "p50", "p90", "p99", "p999", "spectrum"]);
    assert_eq!(latency["spectrum"][0]["percentile"], 0.0);
    // 1.2 s of measurement: a full first second and part of a second one.
    let timeline = value["timeline"].as_array().unwrap();
    assert!(timeline.len() >= 2, "{timeline:?}");
    let second: Vec<&str> = timeline[0].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(second, vec!["dropped", "errors", "in_flight", "ok", "p50_ms", "p99_ms", "second"]);
    assert_eq!(timeline[0]["second"], 0);
    assert!(timeline[0]["ok"].as_u64().unwrap() > 0);
    assert!(timeline[0]["p99_ms"].as_f64().unwrap() >= timeline[0]["p50_ms"].as_f64().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn html_report_is_one_self_contained_file_with_charts() {
    let report = streamed_report().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.html");
    report.write_html(&path).unwrap();
    let html = std::fs::read_to_string(&path).unwrap();
    assert!(html.starts_with("<!doctype html>"));
    assert!(html.trim_end().ends_with("</html>"));
    assert_eq!(html.matches("<svg").count(), 3);
    for external in ["<script", "<link", " src=", " href=", "@import", "url("] {
        assert!(!html.contains(external), "the page refers to something outside it: {external}");
    }
    for tick in [">50%<", ">90%<", ">99%<", ">99.9%<", ">99.99%<"] {
        assert!(html.contains(tick), "tick {tick} missing");
    }
    assert!(html.contains("Latency by percentile"));
    assert!(html.contains("time to first token"));
    assert!(html.contains("ci &lt;smoke&gt;"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_table_shows_every_summary_row() {
    let report = streamed_report().await;
    let table = report.table();
    for row in ["latency (ms)", "ttft (ms)", "gap (ms)", "errors      none", "requests    sent"] {
        assert!(table.contains(row), "{row} missing from\n{table}");
    }
    assert!(table.contains("closed loop, 2 workers, 1.2 s, streaming, model gpt-4o-mini"));
}
