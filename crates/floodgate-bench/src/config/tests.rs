use std::net::Ipv4Addr;

use super::*;

const URL: &str = "http://127.0.0.1:8080/v1/chat/completions";

fn closed() -> BenchConfig {
    BenchConfig {
        concurrency: Some(4),
        duration: Some(Duration::from_secs(1)),
        ..BenchConfig::new(URL)
    }
}

fn usage_message(config: &BenchConfig) -> String {
    match Plan::new(config, false) {
        Err(BenchError::Usage(message)) => message,
        other => panic!("expected a usage error, got {other:?}"),
    }
}

#[test]
fn rate_and_concurrency_together_are_refused() {
    let config = BenchConfig { rate: Some(10.0), ..closed() };
    assert_eq!(usage_message(&config), "--rate and --concurrency cannot be used together");
}

#[test]
fn a_load_is_required() {
    let config = BenchConfig { concurrency: None, ..closed() };
    assert_eq!(
        usage_message(&config),
        "give --rate R (open loop), --concurrency C (closed loop) or --scenario FILE"
    );
}

#[test]
fn duration_is_required_without_a_scenario_default() {
    let config = BenchConfig { duration: None, ..closed() };
    assert_eq!(usage_message(&config), "--duration is required (e.g. --duration 30s)");
}

#[test]
fn url_must_be_http_and_name_a_known_route() {
    let https =
        BenchConfig { url: "https://api.openai.com/v1/chat/completions".into(), ..closed() };
    assert!(usage_message(&https).contains("https is not supported"));
    let other = BenchConfig { url: "http://127.0.0.1:1/v1/embeddings".into(), ..closed() };
    assert!(usage_message(&other).contains("must end with /v1/chat/completions"));
}

#[test]
fn the_route_picks_the_wire_format() {
    let openai = Plan::new(&closed(), false).unwrap();
    assert_eq!(openai.api, Api::OpenAi);
    let anthropic = BenchConfig { url: "http://127.0.0.1:1/v1/messages".into(), ..closed() };
    assert_eq!(Plan::new(&anthropic, false).unwrap().api, Api::Anthropic);
}

#[test]
fn open_loop_cap_defaults_to_connections_then_twenty_thousand() {
    let open = |connections, max_in_flight| {
        let config = BenchConfig {
            concurrency: None,
            rate: Some(100.0),
            connections,
            max_in_flight,
            ..closed()
        };
        Plan::new(&config, false).unwrap().load
    };
    assert_eq!(open(None, None), Load::Open { rate: 100.0, cap: 20_000 });
    assert_eq!(open(Some(50), None), Load::Open { rate: 100.0, cap: 50 });
    assert_eq!(open(Some(50), Some(70)), Load::Open { rate: 100.0, cap: 70 });
}

#[test]
fn fewer_connections_than_workers_gate_the_workers() {
    let plan = Plan::new(&BenchConfig { connections: Some(2), ..closed() }, false).unwrap();
    assert_eq!((plan.connections, plan.gate), (2, Some(2)));
    let plan = Plan::new(&closed(), false).unwrap();
    assert_eq!((plan.connections, plan.gate), (4, None));
}

#[test]
fn arrivals_are_floor_of_rate_times_duration() {
    assert_eq!(Plan::arrivals(10.0, Duration::from_millis(1_550)), 15);
    assert_eq!(Plan::arrivals(0.1, Duration::from_secs(30)), 3);
    assert_eq!(Plan::arrivals(3.0, Duration::ZERO), 0);
}

#[test]
fn ip_ranges() {
    assert_eq!(parse_ip_range("127.0.0.2"), Ok(vec![IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))]));
    let range = parse_ip_range("127.0.0.1-127.0.0.3").unwrap();
    assert_eq!(
        range,
        vec![
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)),
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)),
        ]
    );
    assert!(parse_ip_range("127.0.0.3-127.0.0.1").unwrap_err().contains("ends before"));
    assert!(parse_ip_range("127.0.0.1-127.0.9.1").unwrap_err().contains("more than 256"));
    assert!(parse_ip_range("nope").unwrap_err().contains("not an IP address"));
}

#[test]
fn durations_use_humantime() {
    assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
    assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1_500)));
    assert!(parse_duration("soon").is_err());
}

#[test]
fn open_loop_peak_connections_is_what_the_rate_can_keep_in_flight() {
    let config = BenchConfig { concurrency: None, rate: Some(100.0), ..closed() };
    let plan = Plan::new(&config, false).unwrap();
    // 100 req/s, each taking at most the 60 s timeout: 6,000 at once, below the 20,000 cap.
    assert_eq!((plan.connections, plan.peak_connections), (20_000, 6_000));
    assert_eq!(Plan::new(&closed(), false).unwrap().peak_connections, 4);
}
