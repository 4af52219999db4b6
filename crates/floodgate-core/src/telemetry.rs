//! Logs (`tracing`, pretty or JSON) and metrics (Prometheus text format).
//!
//! Metric names live in [`metric`] so every emitter and the docs agree. The
//! `metrics` facade has one recorder per process by design; it is installed
//! once and every app in the process (tests start many) renders from it.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::config::{LogConfig, LogFormat};

/// Metric names.
pub mod metric {
    pub const HTTP_REQUESTS: &str = "floodgate_http_requests_total";
    pub const HTTP_DURATION: &str = "floodgate_http_request_duration_seconds";
    pub const HTTP_IN_FLIGHT: &str = "floodgate_http_requests_in_flight";
    pub const UPSTREAM_DURATION: &str = "floodgate_upstream_request_duration_seconds";
    pub const UPSTREAM_TTFT: &str = "floodgate_upstream_time_to_first_token_seconds";
    pub const UPSTREAM_ERRORS: &str = "floodgate_upstream_errors_total";
    pub const UPSTREAM_RETRIES: &str = "floodgate_upstream_retries_total";
    pub const KEYS_DISABLED: &str = "floodgate_provider_keys_disabled_total";
    pub const TOKENS: &str = "floodgate_tokens_total";
    pub const COST: &str = "floodgate_cost_usd";
    pub const LEDGER_PENDING: &str = "floodgate_ledger_pending_records";
    pub const LEDGER_WRITTEN: &str = "floodgate_ledger_records_written_total";
}

/// Latency buckets in seconds: 1 ms to 10 min, dense where gateway overhead lives.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0,
];

static RECORDER: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's Prometheus recorder, installed on first use.
pub fn metrics_handle() -> PrometheusHandle {
    RECORDER
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_string()), LATENCY_BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first, in which
            // case ours still renders (empty) and nothing breaks.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        metric::HTTP_REQUESTS,
        "Client requests answered, by route, model, provider and status."
    );
    describe_histogram!(
        metric::HTTP_DURATION,
        Unit::Seconds,
        "Client request duration, streams until their last byte."
    );
    describe_gauge!(metric::HTTP_IN_FLIGHT, "Client requests in progress, open streams included.");
    describe_histogram!(
        metric::UPSTREAM_DURATION,
        Unit::Seconds,
        "Upstream call duration by provider, model and outcome."
    );
    describe_histogram!(
        metric::UPSTREAM_TTFT,
        Unit::Seconds,
        "Upstream time to first streamed token."
    );
    describe_counter!(metric::UPSTREAM_ERRORS, "Failed upstream calls by provider and error kind.");
    describe_counter!(metric::UPSTREAM_RETRIES, "Upstream retries by provider and reason.");
    describe_counter!(
        metric::KEYS_DISABLED,
        "Provider keys taken out of use after the upstream refused them."
    );
    describe_counter!(metric::TOKENS, "Tokens by direction (input/output), provider and model.");
    describe_gauge!(
        metric::COST,
        "Estimated cost in USD by provider and model since start (only grows)."
    );
    describe_gauge!(metric::LEDGER_PENDING, "Usage records waiting to be written.");
    describe_counter!(metric::LEDGER_WRITTEN, "Usage records written to the store.");
}

/// Installs the global log subscriber. Returns false if one was already set.
pub fn init_logging(config: &LogConfig) -> bool {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(&config.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match config.format {
        LogFormat::Json => {
            builder.json().flatten_event(true).with_current_span(true).try_init().is_ok()
        }
        LogFormat::Pretty => builder.compact().try_init().is_ok(),
    }
}
