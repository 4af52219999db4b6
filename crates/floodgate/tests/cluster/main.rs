//! Cluster fault tests: three real `floodgate serve` processes on one Redis
//! and one PostgreSQL behind HAProxy, under load from `floodgate bench`,
//! while a node is killed or drained and while Redis or PostgreSQL go away.
//!
//! A test binary of its own (not a module of `tests/api`) so that cargo runs
//! it after the API tests rather than among them: each cluster is six
//! processes on a two-core machine, and these tests judge fault handling,
//! not who wins the CPU. Inside, one cluster runs at a time.

#![expect(clippy::expect_used, reason = "a test fails when its cluster cannot be made")]

mod harness;

use std::time::{Duration, Instant};

use harness::*;
use reqwest::Method;
use serde_json::{Value, json};

macro_rules! require_tools {
    ($name:literal) => {
        if let Some(reason) = missing_tools() {
            eprintln!("skipped {}: {reason}", $name);
            return;
        }
    };
}

async fn cluster(options: NodeOptions) -> Cluster {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let pg = Postgres::fresh_database().await;
    Cluster::start(dir, pg, options).await
}

/// A key's per-minute limit holds for the cluster, not per node: what the
/// three nodes let through is what one GCRA bucket admits, within 1 %.
#[tokio::test]
async fn a_global_rpm_limit_is_exact_across_three_nodes() {
    require_tools!("a_global_rpm_limit_is_exact_across_three_nodes");
    let _one = ONE_AT_A_TIME.lock().await;
    let cluster = cluster(NodeOptions::default()).await;
    let (_, key) = cluster.create_key(json!({"name": "rpm", "rpm": 600})).await;
    // 150 requests a second for 8 s against 600 a minute (one every 100 ms):
    // the full bucket's 600, then one per 100 ms for the rest.
    let rate = 150.0;
    let report = cluster.bench("rpm", &key, &["--rate", "150", "--duration", "8s"]).report().await;
    let (sent, ok, errors) = totals(&report);
    let span_s = (sent - 1) as f64 / rate;
    let expected = 600.0 + (span_s / 0.1).floor();
    let off = (ok as f64 - expected).abs() / expected;
    assert!(
        off <= 0.01,
        "{ok} of {sent} admitted, one bucket admits {expected}: {:.2} % off\n{}",
        off * 100.0,
        cluster.logs()
    );
    // Everything else was refused by the limit, and nothing failed.
    assert_eq!(report["errors_by_status"], json!({"429": errors}), "{report}");
    eprintln!(
        "global rpm: {ok} admitted of {sent}, expected {expected} ({:.2} % off)",
        off * 100.0
    );
}

/// A provider key's configured limit is split among the live nodes: three
/// nodes together stay within it, so the provider (the mock, counting the
/// same limit) never refuses one of their calls.
#[tokio::test]
async fn three_nodes_share_a_provider_keys_rpm_and_never_exceed_it() {
    require_tools!("three_nodes_share_a_provider_keys_rpm_and_never_exceed_it");
    let _one = ONE_AT_A_TIME.lock().await;
    // 600 a minute at the provider; the warm-up's 200 calls count too.
    let options = NodeOptions { mock_rpm: Some(600), key_rpm: Some(600), ..NodeOptions::default() };
    let cluster = cluster(options).await;
    for node in &cluster.nodes {
        let (_, ready) = cluster.get(&node.url(), "/health/ready", None).await;
        assert_eq!(ready["components"]["state"]["nodes"], 3, "{ready}");
    }
    let (_, key) = cluster.create_key(json!({"name": "load"})).await;
    // 100 a second for 6 s: far over what is left of the minute.
    let report =
        cluster.bench("share", &key, &["--rate", "100", "--duration", "6s"]).report().await;
    let (sent, ok, _) = totals(&report);
    let mut refused_upstream = 0.0;
    for node in &cluster.nodes {
        let text = cluster.metrics(node).await;
        refused_upstream += text
            .lines()
            .filter(|l| {
                l.starts_with("floodgate_upstream_errors_total") && l.contains("status_429")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
    }
    assert_eq!(refused_upstream, 0.0, "the provider refused calls: the nodes went over its limit");
    // The warm-up took 200 of the 600; the rest is used, less what an uneven
    // spread of requests over the nodes leaves in one node's share.
    assert!(ok <= 400, "{ok} answered of {sent}: more than the provider allows");
    assert!(ok >= 300, "{ok} answered of {sent}: the shares leave too much unused\n{report}");
    eprintln!(
        "provider key share: {ok} of {sent} answered within 400 left at the provider, 0 refused upstream"
    );
}

/// A key revoked through one node is refused by the two others within a
/// second, while they serve load.
#[tokio::test]
async fn a_key_revoked_on_one_node_is_refused_on_the_others_within_a_second() {
    require_tools!("a_key_revoked_on_one_node_is_refused_on_the_others_within_a_second");
    let _one = ONE_AT_A_TIME.lock().await;
    let cluster = cluster(NodeOptions::default()).await;
    let (_, load_key) = cluster.create_key(json!({"name": "load"})).await;
    let (id, key) = cluster.create_key(json!({"name": "doomed"})).await;
    let load = cluster.bench("revoke-load", &load_key, &["--rate", "60", "--duration", "5s"]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (a, others) = cluster.nodes.split_first().unwrap();
    let (status, body) =
        cluster.send(Method::DELETE, &a.url(), &format!("/admin/keys/{id}"), MASTER, None).await;
    assert_eq!(status, 200, "{body}");
    let revoked = Instant::now();
    // The writing node refuses it at once.
    assert_eq!(cluster.get(&a.url(), "/v1/models", Some(&key)).await.0, 401);
    let mut worst = Duration::ZERO;
    for node in others {
        cluster
            .eventually("the revoked key is refused", Duration::from_secs(1), || async {
                cluster.get(&node.url(), "/v1/models", Some(&key)).await.0 == 401
            })
            .await;
        worst = worst.max(revoked.elapsed());
    }
    assert!(worst < Duration::from_secs(1), "refused everywhere after {worst:?}");
    let (_, _, errors) = totals(&load.report().await);
    assert_eq!(errors, 0, "the other key's load was served");
    eprintln!("revocation: refused on every node {worst:?} after the DELETE answered");
}

/// `kill -9` of a node mid-load: only what it had in flight fails (under
/// 1 %), every job submitted finishes, and every answered request has its
/// ledger row once the node is back (its journal is replayed).
#[tokio::test]
async fn a_node_killed_mid_load_loses_no_job_and_no_ledger_row() {
    require_tools!("a_node_killed_mid_load_loses_no_job_and_no_ledger_row");
    let _one = ONE_AT_A_TIME.lock().await;
    let mut cluster = cluster(NodeOptions { latency_ms: 50, ..NodeOptions::default() }).await;
    let (load_id, load_key) = cluster.create_key(json!({"name": "load"})).await;
    let (_, jobs_key) = cluster.create_key(json!({"name": "jobs"})).await;
    let load = cluster.bench("kill", &load_key, &["--rate", "100", "--duration", "12s"]);

    // Jobs submitted before, during and after the kill.
    let mut jobs = Vec::new();
    let started = Instant::now();
    let mut killed = false;
    while started.elapsed() < Duration::from_secs(8) {
        if !killed && started.elapsed() > Duration::from_secs(3) {
            cluster.nodes[2].proc().signal("KILL");
            killed = true;
        }
        // As a client should: a submission whose answer was lost (its node
        // died under it) is sent again with the same idempotency key, which
        // yields the job it made, if it made one.
        let n = jobs.len();
        let body = json!({
            "request": {"model": "chat", "messages": [{"role": "user", "content": format!("job {n}")}]},
            "idempotency_key": format!("kill-test-{n}"),
        });
        let id = cluster
            .until("a submission is accepted", Duration::from_secs(20), || async {
                let (status, job) = cluster
                    .send(Method::POST, &cluster.lb(), "/v1/jobs", &jobs_key, Some(body.clone()))
                    .await;
                matches!(status, 200 | 202).then(|| job["id"].as_str().unwrap().to_string())
            })
            .await;
        jobs.push(id);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Back, as its container would be: it replays its ledger journal.
    let _ = cluster.nodes[2].proc().wait(Duration::from_secs(5)).await;
    cluster.nodes[2].start().await;

    let report = load.report().await;
    let (sent, ok, errors) = totals(&report);
    let rate = errors as f64 / sent as f64;
    assert!(rate < 0.01, "{errors} of {sent} failed ({:.2} %): {report}", rate * 100.0);

    // Every job finishes: those the killed node held are leased again.
    for id in &jobs {
        cluster
            .eventually("every job completes", Duration::from_secs(30), || async {
                let (_, job) =
                    cluster.get(&cluster.lb(), &format!("/v1/jobs/{id}"), Some(&jobs_key)).await;
                job["status"] == "completed"
            })
            .await;
    }
    // Every answered request is in the ledger.
    let rows = cluster
        .until("the ledger holds every answered request", Duration::from_secs(15), || async {
            let rows = cluster.usage(&load_id).await;
            (answered(&rows) >= ok).then_some(rows)
        })
        .await;
    assert!(rows["requests"].as_u64().unwrap() <= sent, "{rows}");
    eprintln!(
        "kill -9: {errors} of {sent} failed ({:.2} %), {} jobs all completed, ledger {} answered rows for {ok} answers",
        rate * 100.0,
        jobs.len(),
        answered(&rows)
    );
}

/// Ledger rows of requests that were answered (not errors).
fn answered(totals: &Value) -> u64 {
    totals["requests"].as_u64().unwrap_or(0) - totals["errors"].as_u64().unwrap_or(0)
}

/// SIGTERM of a node mid-load: it leaves the pool, finishes what it has,
/// and exits 0; no request and no stream fails.
#[tokio::test]
async fn a_node_stopped_with_sigterm_fails_no_request_and_no_stream() {
    require_tools!("a_node_stopped_with_sigterm_fails_no_request_and_no_stream");
    let _one = ONE_AT_A_TIME.lock().await;
    // Streams of 20 chunks 50 ms apart: each is open about a second.
    let mut cluster = cluster(NodeOptions { chunk_delay_ms: 50, ..NodeOptions::default() }).await;
    let (_, key) = cluster.create_key(json!({"name": "drain"})).await;
    let streams =
        cluster.bench("drain-streams", &key, &["--rate", "30", "--duration", "8s", "--stream"]);
    let plain = cluster.bench("drain-plain", &key, &["--rate", "60", "--duration", "8s"]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let node = cluster.nodes[1].proc();
    node.signal("TERM");
    let code = node.wait(Duration::from_secs(25)).await;
    assert_eq!(code, Some(0), "the drained node exits cleanly: {}", node.log());
    for (what, bench) in [("streams", streams), ("requests", plain)] {
        let report = bench.report().await;
        let (sent, ok, errors) = totals(&report);
        assert_eq!(
            errors,
            0,
            "{what}: {errors} of {sent} failed: {} {}\n{}",
            report["errors_by_status"],
            report["errors_by_kind"],
            cluster.logs()
        );
        assert_eq!(ok, sent, "{what}: {report}");
    }
}

/// Redis restarted mid-load: serving goes on (limits per node, the cache
/// on L1, job submissions refused with a clear 503 while it is away), every
/// node says so, and after it returns each converges back onto Redis.
#[tokio::test]
async fn redis_restarted_mid_load_serving_continues_and_state_converges() {
    require_tools!("redis_restarted_mid_load_serving_continues_and_state_converges");
    let _one = ONE_AT_A_TIME.lock().await;
    let mut cluster = cluster(NodeOptions::default()).await;
    let (_, key) = cluster.create_key(json!({"name": "load"})).await;
    let load = cluster.bench("redis", &key, &["--rate", "80", "--duration", "10s"]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.redis.stop().await;
    for node in &cluster.nodes {
        cluster
            .eventually("each node reports Redis degraded", Duration::from_secs(5), || async {
                let (status, ready) = cluster.get(&node.url(), "/health/ready", None).await;
                status == 200 && ready["components"]["state"]["status"] == "degraded"
            })
            .await;
        let text = cluster.metrics(node).await;
        assert_eq!(metric(&text, "floodgate_redis_up"), 0.0, "{text}");
    }
    let job = json!({"request": {"model": "chat", "messages": [{"role": "user", "content": "x"}]}});
    let (status, refused) =
        cluster.send(Method::POST, &cluster.lb(), "/v1/jobs", &key, Some(job.clone())).await;
    assert_eq!(status, 503, "{refused}");
    let message = refused["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("job queue"), "{refused}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.redis.up().await;

    let report = load.report().await;
    let (sent, _, errors) = totals(&report);
    assert_eq!(errors, 0, "served through the outage: {report}");

    for node in &cluster.nodes {
        cluster
            .eventually("each node is back on Redis", Duration::from_secs(10), || async {
                let (_, ready) = cluster.get(&node.url(), "/health/ready", None).await;
                ready["components"]["state"]["status"] == "ok"
                    && ready["components"]["limiter"]["status"] == "ok"
                    && ready["components"]["queue"]["status"] == "ok"
            })
            .await;
    }
    // Limits are the cluster's again: 10 a minute across three nodes.
    let (_, limited) = cluster.create_key(json!({"name": "after", "rpm": 10})).await;
    let mut admitted = 0;
    for i in 0..15 {
        let node = &cluster.nodes[i % 3];
        if cluster.chat(&node.url(), &limited).await == 200 {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 10, "one bucket for the cluster after Redis returned");
    // And the queue takes jobs again.
    let (status, accepted) =
        cluster.send(Method::POST, &cluster.lb(), "/v1/jobs", &key, Some(job)).await;
    assert_eq!(status, 202, "{accepted}");
    eprintln!("redis restart: 0 of {sent} failed; queue refused with: {message}");
}

/// PostgreSQL stopped for 30 s mid-load: requests are served on the keys
/// each node holds, usage records spill to disk, and once it is back every
/// answered request has its row.
#[tokio::test]
async fn postgres_stopped_for_30_seconds_loses_no_ledger_row() {
    require_tools!("postgres_stopped_for_30_seconds_loses_no_ledger_row");
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let pg = match Postgres::private(dir.path()).await {
        Ok(pg) => pg,
        Err(reason) => {
            eprintln!("skipped postgres_stopped_for_30_seconds_loses_no_ledger_row: {reason}");
            return;
        }
    };
    let mut cluster = Cluster::start(dir, pg, NodeOptions::default()).await;
    let (id, key) = cluster.create_key(json!({"name": "load"})).await;
    let load = cluster.bench("pg", &key, &["--rate", "40", "--duration", "40s"]);
    tokio::time::sleep(Duration::from_secs(4)).await;
    cluster.pg.stop().await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    cluster.pg.start().await;

    let report = load.report().await;
    let (sent, ok, errors) = totals(&report);
    assert_eq!(errors, 0, "served on the keys in memory: {report}");
    let rows = cluster
        .until("the spilled records are replayed", Duration::from_secs(20), || async {
            let (status, body) = cluster
                .get(&cluster.lb(), &format!("/admin/usage?key_id={id}"), Some(MASTER))
                .await;
            let rows = body["totals"].clone();
            (status == 200 && answered(&rows) == ok).then_some(rows)
        })
        .await;
    let mut spilled = 0.0;
    for node in &cluster.nodes {
        let text = cluster.metrics(node).await;
        spilled += metric(&text, "floodgate_ledger_records_spilled_total");
    }
    assert!(spilled > 0.0, "the outage was felt: records spilled");
    eprintln!(
        "postgres 30 s outage: {ok} of {sent} answered, {spilled} records spilled, {} rows after",
        answered(&rows)
    );
}

/// The value of an unlabelled series in Prometheus text.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}
