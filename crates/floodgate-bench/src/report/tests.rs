use super::*;

/// A scenario report with every kind of row: errors by status and kind (client limits
/// included), drops, a timeline and two mix entries.
fn sample() -> Report {
    let summary = |count, base: f64| LatencySummary {
        count,
        mean: base * 1.2,
        p50: base,
        p90: base * 2.0,
        p99: base * 4.0,
        p999: base * 8.0,
        max: base * 10.0,
        spectrum: vec![
            SpectrumPoint { percentile: 0.0, ms: base / 2.0 },
            SpectrumPoint { percentile: 90.0, ms: base * 2.0 },
            SpectrumPoint { percentile: 99.0, ms: base * 4.0 },
        ],
    };
    Report {
        schema: SCHEMA.to_string(),
        config: ReportConfig {
            url: "http://127.0.0.1:8080/v1/messages".into(),
            api: Api::Anthropic,
            mode: Mode::Scenario,
            rate: None,
            concurrency: None,
            users: Some(10_000),
            ramp_up_s: Some(10.0),
            duration_s: 60.0,
            warmup_s: 0.0,
            timeout_s: 60.0,
            stream: false,
            model: "claude".into(),
            label: Some("nightly".into()),
            source_ips: vec!["127.0.0.2".parse().unwrap()],
            connections: 10_000,
            max_in_flight: None,
        },
        totals: Totals {
            sent: 1_000,
            ok: 990,
            errors: 10,
            dropped: 0,
            elapsed_s: 60.25,
            ok_per_s: 16.432,
            sent_per_s: 16.598,
        },
        latency_ms: Some(summary(990, 12.5)),
        ttft_ms: Some(summary(700, 1.25)),
        gap_ms: None,
        errors_by_status: BTreeMap::from([(429, 4), (500, 1)]),
        errors_by_kind: BTreeMap::from([
            (ErrorKind::ConnectRefused, 2),
            (ErrorKind::ClientOpenFiles, 1),
            (ErrorKind::ClientEphemeralPorts, 1),
            (ErrorKind::StreamIncomplete, 1),
        ]),
        client_limits: ClientLimits {
            open_files: Some(1024),
            ephemeral_ports: Some((32768, 60999)),
        },
        timeline: vec![TimelinePoint {
            second: 0,
            ok: 16,
            errors: 1,
            dropped: 0,
            p50_ms: Some(12.5),
            p99_ms: Some(50.0),
            in_flight: 12,
        }],
        mix: vec![
            MixReport {
                weight: 3,
                model: "claude".into(),
                stream: true,
                think_time_s: 5.0,
                sent: 700,
                ok: 695,
                errors: 5,
            },
            MixReport {
                weight: 1,
                model: "gpt".into(),
                stream: false,
                think_time_s: 0.5,
                sent: 300,
                ok: 295,
                errors: 5,
            },
        ],
        warnings: vec!["up to 10000 connections, but the open-file limit is 1024".into()],
    }
}

#[test]
fn table() {
    insta::assert_snapshot!(sample().table());
}

#[test]
fn json() {
    insta::assert_snapshot!(sample().to_json());
}

#[test]
fn rounding_keeps_short_decimals() {
    assert_eq!(round(1550.9722633271665, 3), 1550.972);
    assert_eq!(round(0.1 + 0.2, 6), 0.3);
    assert_eq!(seconds(std::time::Duration::from_nanos(1_200_000_400)), 1.2);
}
