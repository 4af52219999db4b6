//! Logs (`tracing`, pretty or JSON), metrics (Prometheus text format) and
//! traces (OTLP, in [`trace`]).
//!
//! Metric names live in [`metric`] so every emitter and the docs agree. The
//! `metrics` facade has one recorder per process by design; it is installed
//! once and every app in the process (tests start many) renders from it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Label};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::config::{LogConfig, LogFormat};

pub mod trace;

/// Metric names.
pub mod metric {
    pub const HTTP_REQUESTS: &str = "floodgate_http_requests_total";
    pub const HTTP_DURATION: &str = "floodgate_http_request_duration_seconds";
    pub const HTTP_IN_FLIGHT: &str = "floodgate_http_requests_in_flight";
    pub const HTTP_SHED: &str = "floodgate_http_requests_shed_total";
    pub const HTTP_CONNECTIONS: &str = "floodgate_http_connections_open";
    pub const HTTP_CONNECTIONS_DRAINED: &str = "floodgate_http_connections_drained_total";
    pub const UPSTREAM_DURATION: &str = "floodgate_upstream_request_duration_seconds";
    pub const UPSTREAM_TTFT: &str = "floodgate_upstream_time_to_first_token_seconds";
    pub const UPSTREAM_ERRORS: &str = "floodgate_upstream_errors_total";
    pub const UPSTREAM_RETRIES: &str = "floodgate_upstream_retries_total";
    pub const KEYS_DISABLED: &str = "floodgate_provider_keys_disabled_total";
    pub const ROUTING_RULES: &str = "floodgate_routing_rule_matches_total";
    pub const RETRY_BUDGET_EXHAUSTED: &str = "floodgate_retry_budget_exhausted_total";
    pub const HEDGES: &str = "floodgate_hedges_total";
    pub const QUOTA_ALERTS: &str = "floodgate_quota_alerts_total";
    pub const ALERT_WEBHOOK_FAILURES: &str = "floodgate_alert_webhook_failures_total";
    pub const TOKENS: &str = "floodgate_tokens_total";
    pub const COST: &str = "floodgate_cost_usd";
    pub const LEDGER_PENDING: &str = "floodgate_ledger_pending_records";
    pub const LEDGER_WRITTEN: &str = "floodgate_ledger_records_written_total";
    pub const LEDGER_SPILLED: &str = "floodgate_ledger_records_spilled_total";
    pub const LEDGER_REPLAYED: &str = "floodgate_ledger_records_replayed_total";
    pub const LEDGER_OVERFLOW: &str = "floodgate_ledger_buffer_overflows_total";
    pub const LIMITED: &str = "floodgate_client_limited_total";
    pub const LIMITER_DEGRADED: &str = "floodgate_limiter_degraded";
    pub const REDIS_UP: &str = "floodgate_redis_up";
    pub const CLUSTER_NODES: &str = "floodgate_cluster_nodes";
    pub const LIMITER_ERRORS: &str = "floodgate_limiter_errors_total";
    pub const KEYS_ACTIVE: &str = "floodgate_virtual_keys";
    pub const BUDGET_USED_MAX: &str = "floodgate_budget_used_ratio_max";
    pub const CACHE_LOOKUPS: &str = "floodgate_cache_lookups_total";
    pub const CACHE_STORES: &str = "floodgate_cache_stores_total";
    pub const CACHE_ENTRIES: &str = "floodgate_cache_entries";
    pub const CACHE_BYTES: &str = "floodgate_cache_bytes";
    pub const CACHE_L2_DEGRADED: &str = "floodgate_cache_l2_degraded";
    pub const CACHE_L2_ERRORS: &str = "floodgate_cache_l2_errors_total";
    pub const CACHE_FLIGHTS: &str = "floodgate_cache_flights_in_progress";
    pub const CACHE_FLIGHTS_CANCELLED: &str = "floodgate_cache_flights_cancelled_total";
    pub const CACHE_SEMANTIC_ENTRIES: &str = "floodgate_cache_semantic_entries";
    pub const CACHE_EMBED_ERRORS: &str = "floodgate_cache_semantic_embed_errors_total";
    pub const QUEUE_PENDING: &str = "floodgate_queue_pending_jobs";
    pub const QUEUE_RUNNING: &str = "floodgate_queue_running_jobs";
    pub const QUEUE_OLDEST_WAIT: &str = "floodgate_queue_oldest_wait_seconds";
    pub const QUEUE_FINISHED: &str = "floodgate_queue_finished_jobs";
    pub const QUEUE_JOBS: &str = "floodgate_queue_jobs_total";
    pub const QUEUE_WAIT: &str = "floodgate_queue_job_wait_seconds";
    pub const QUEUE_RUN: &str = "floodgate_queue_job_run_seconds";
    pub const QUEUE_ERRORS: &str = "floodgate_queue_backend_errors_total";
    pub const QUEUE_WEBHOOKS: &str = "floodgate_queue_webhooks_total";
    pub const QUEUE_WORKERS_BUSY: &str = "floodgate_queue_workers_busy";
    pub const BUS_DROPPED: &str = "floodgate_bus_messages_dropped_total";
    pub const REALTIME_CONNECTIONS: &str = "floodgate_realtime_connections";
    pub const REALTIME_SUBSCRIPTIONS: &str = "floodgate_realtime_subscriptions";
    pub const REALTIME_TOPICS: &str = "floodgate_realtime_topics";
    pub const REALTIME_MESSAGES: &str = "floodgate_realtime_messages_total";
    pub const REALTIME_PUBLISHED: &str = "floodgate_realtime_published_total";
    pub const REALTIME_DROPPED: &str = "floodgate_realtime_dropped_total";
    pub const REALTIME_REFUSED: &str = "floodgate_realtime_connections_refused_total";
    pub const REALTIME_FANOUT: &str = "floodgate_realtime_fanout_seconds";
}

/// Latency buckets in seconds: 1 ms to 10 min, dense where gateway overhead lives.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0,
];

/// Fan-out buckets in seconds: 100 µs to 5 s.
const FANOUT_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

static RECORDER: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's Prometheus recorder, installed on first use.
pub fn metrics_handle() -> PrometheusHandle {
    RECORDER
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_string()), LATENCY_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(metric::REALTIME_FANOUT.to_string()),
                        FANOUT_BUCKETS,
                    )
                })
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first, in which
            // case ours still renders (empty) and nothing breaks.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            spawn_upkeep(handle.clone());
            handle
        })
        .clone()
}

/// How often histogram samples are folded into their buckets.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Histogram samples wait in per-metric queues until upkeep folds them into
/// buckets; a recorder built by hand (as here, to install it ourselves) does
/// not schedule upkeep, so without this every sample would be kept until
/// something scrapes `/metrics`: memory growing with traffic. One thread for
/// the process, like the recorder it serves.
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned =
        std::thread::Builder::new().name("floodgate-metrics-upkeep".into()).spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                handle.run_upkeep();
            }
        });
    if let Err(error) = spawned {
        tracing::error!(%error, "cannot start the metrics upkeep thread; histograms grow until scraped");
    }
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
    describe_counter!(
        metric::HTTP_SHED,
        "Requests refused with 503 because max_in_flight was reached."
    );
    describe_gauge!(
        metric::HTTP_CONNECTIONS,
        "Client connections open; at server.max_connections the node stops accepting."
    );
    describe_counter!(
        metric::HTTP_CONNECTIONS_DRAINED,
        "Client connections asked to close after their current response because the node was at server.max_connections."
    );
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
    describe_counter!(
        metric::LEDGER_SPILLED,
        "Usage records appended to the spill file (database down or buffer full)."
    );
    describe_counter!(metric::LEDGER_REPLAYED, "Spilled usage records written to the store.");
    describe_counter!(
        metric::LEDGER_OVERFLOW,
        "Usage records that found the ledger buffer full and were spilled at once."
    );
    describe_counter!(
        metric::LIMITED,
        "Client requests refused by a limit, by scope (key, user, ip, ip_ai) and code."
    );
    describe_gauge!(
        metric::LIMITER_DEGRADED,
        "1 while the shared (Redis) limiter is unreachable and this node limits on local state."
    );
    describe_counter!(metric::LIMITER_ERRORS, "Failed calls to the shared limiter.");
    describe_gauge!(
        metric::CLUSTER_NODES,
        "Live nodes sharing this node's Redis, as this node last counted them."
    );
    describe_gauge!(
        metric::REDIS_UP,
        "1 while Redis answers this node's pings (once a second), 0 while it does not."
    );
    describe_gauge!(metric::KEYS_ACTIVE, "Virtual keys known to this node (not revoked).");
    describe_gauge!(
        metric::BUDGET_USED_MAX,
        "The highest fraction of its budget spent in the current period by a virtual key this node \
         served (1 = spent; the last request may pass it), read after a request's spend (at most \
         every 10 s per key) and on a budget refusal."
    );
    describe_counter!(
        metric::CACHE_LOOKUPS,
        "Response cache lookups by model alias and result (hit_l1, hit_l2, semantic_hit, coalesced, miss, bypass)."
    );
    describe_counter!(
        metric::CACHE_STORES,
        "Answers stored in the response cache, by model alias."
    );
    describe_gauge!(metric::CACHE_ENTRIES, "Answers in this node's cache (L1).");
    describe_gauge!(metric::CACHE_BYTES, "Bytes of the answers in this node's cache (L1).");
    describe_gauge!(
        metric::CACHE_L2_DEGRADED,
        "1 while the shared cache (Redis L2) is unreachable and skipped."
    );
    describe_counter!(metric::CACHE_L2_ERRORS, "Failed or timed-out shared cache (L2) commands.");
    describe_gauge!(
        metric::CACHE_FLIGHTS,
        "Upstream calls that identical requests can join (coalescing) right now."
    );
    describe_counter!(
        metric::CACHE_FLIGHTS_CANCELLED,
        "Coalesced upstream calls cancelled because every waiting client left."
    );
    describe_gauge!(metric::CACHE_SEMANTIC_ENTRIES, "Prompts in the semantic cache's index.");
    describe_counter!(
        metric::CACHE_EMBED_ERRORS,
        "Semantic cache lookups skipped because the embedding call failed."
    );
    describe_gauge!(
        metric::QUEUE_PENDING,
        "Queued jobs by priority (the shared queue's figure: every node of a cluster reports it)."
    );
    describe_gauge!(metric::QUEUE_RUNNING, "Jobs leased by a worker (in the whole queue).");
    describe_gauge!(
        metric::QUEUE_OLDEST_WAIT,
        "How long the oldest job that may run now has been waiting."
    );
    describe_gauge!(
        metric::QUEUE_FINISHED,
        "Jobs kept in the queue that finished, by status (completed, failed, dead, cancelled): \
         the whole queue's totals (purged ones leave them)."
    );
    describe_counter!(
        metric::QUEUE_JOBS,
        "Job attempts this node finished, by outcome (completed, retried, waiting, dead, cancelled, lost_lease, released) \
         and submissions (submitted)."
    );
    describe_histogram!(
        metric::QUEUE_WAIT,
        "From the moment a job could run (submitted, or its retry's backoff ended) to its lease."
    );
    describe_histogram!(metric::QUEUE_RUN, "How long a job's attempt ran, by outcome.");
    describe_counter!(metric::QUEUE_ERRORS, "Failed job queue backend calls, by operation.");
    describe_counter!(metric::QUEUE_WEBHOOKS, "Job webhook delivery attempts, by outcome.");
    describe_gauge!(metric::QUEUE_WORKERS_BUSY, "This node's job workers running a job.");
    describe_gauge!(
        metric::REALTIME_CONNECTIONS,
        "Realtime connections open on this node, by transport (ws, socketio, sse)."
    );
    describe_gauge!(metric::REALTIME_SUBSCRIPTIONS, "Topic subscriptions on this node.");
    describe_gauge!(metric::REALTIME_TOPICS, "Topics with a subscriber on this node.");
    describe_counter!(
        metric::REALTIME_MESSAGES,
        "Realtime messages: in = frames from clients, out = messages handed to subscribers."
    );
    describe_counter!(metric::REALTIME_PUBLISHED, "Room messages published through this node.");
    describe_counter!(
        metric::REALTIME_DROPPED,
        "Realtime losses: slow_consumer = connections closed for a full send buffer, \
         lagged = messages the fan-out missed."
    );
    describe_counter!(
        metric::REALTIME_REFUSED,
        "Realtime connections refused, by reason (node_full, key_full, draining, disabled, auth)."
    );
    describe_histogram!(
        metric::REALTIME_FANOUT,
        "From a room message's publication (on any node) to its hand-off to every subscriber here."
    );
    describe_counter!(
        metric::BUS_DROPPED,
        "Topic messages (job events) that reached only this node, by reason."
    );
}

/// A metric handle, cached per thread.
#[derive(Clone)]
enum Handle {
    Counter(Counter),
    Gauge(Gauge),
    Histogram(Histogram),
}

thread_local! {
    /// Handles by metric name and label values. The `metrics` macros build a
    /// key (allocating every label) and look it up in the shared registry on
    /// each call, several times per request; with one thread per core a
    /// per-thread cache needs no lock at all. Label sets are bounded by the
    /// config (aliases, providers, models, statuses), and so is this map.
    static HANDLES: RefCell<HashMap<String, Handle, foldhash::fast::RandomState>> =
        RefCell::new(HashMap::default());
    static KEY: RefCell<String> = const { RefCell::new(String::new()) };
}

fn cached(
    name: &'static str,
    labels: &[(&'static str, &str)],
    make: impl FnOnce(Vec<Label>) -> Handle,
) -> Handle {
    KEY.with_borrow_mut(|key| {
        key.clear();
        key.push_str(name);
        for (_, value) in labels {
            // A separator that cannot appear in a label value we emit.
            key.push('\u{1f}');
            key.push_str(value);
        }
        HANDLES.with_borrow_mut(|handles| {
            if let Some(handle) = handles.get(key.as_str()) {
                return handle.clone();
            }
            let owned = labels.iter().map(|(k, v)| Label::new(*k, v.to_string())).collect();
            let handle = make(owned);
            handles.insert(key.clone(), handle.clone());
            handle
        })
    })
}

/// The counter `name` with these label values, from the thread's cache.
pub fn counter(name: &'static str, labels: &[(&'static str, &str)]) -> Counter {
    match cached(name, labels, |l| Handle::Counter(metrics::counter!(name, l))) {
        Handle::Counter(c) => c,
        Handle::Gauge(_) | Handle::Histogram(_) => metrics::counter!(name),
    }
}

/// The gauge `name` with these label values, from the thread's cache.
pub fn gauge(name: &'static str, labels: &[(&'static str, &str)]) -> Gauge {
    match cached(name, labels, |l| Handle::Gauge(metrics::gauge!(name, l))) {
        Handle::Gauge(g) => g,
        Handle::Counter(_) | Handle::Histogram(_) => metrics::gauge!(name),
    }
}

/// The histogram `name` with these label values, from the thread's cache.
pub fn histogram(name: &'static str, labels: &[(&'static str, &str)]) -> Histogram {
    match cached(name, labels, |l| Handle::Histogram(metrics::histogram!(name, l))) {
        Handle::Histogram(h) => h,
        Handle::Counter(_) | Handle::Gauge(_) => metrics::histogram!(name),
    }
}

/// Keeps the log writer thread alive; dropping it flushes what is queued.
/// Hold it until the process exits.
pub type LogGuard = tracing_appender::non_blocking::WorkerGuard;

/// Installs the global log subscriber, writing to stderr.
///
/// Lines are formatted on the caller's thread but written by a dedicated
/// thread through a buffer flushed whenever its queue empties: under load
/// many lines go out in one `write`, when idle each goes out at once. (With
/// every request logged, a `write` per line on the request path cost about
/// 17 % of throughput.) If 128,000 lines are ever waiting, further lines are
/// dropped rather than stalling requests.
pub fn init_logging(config: &LogConfig) -> LogGuard {
    use tracing_subscriber::EnvFilter;
    let (writer, guard) =
        tracing_appender::non_blocking(std::io::BufWriter::new(std::io::stderr()));
    let filter = EnvFilter::try_new(&config.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    // Fails only if a subscriber is already installed (never in `main`).
    let _ = match config.format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
    guard
}
