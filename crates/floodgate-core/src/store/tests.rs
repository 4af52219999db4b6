//! One suite, run against every store: SQLite always (a file, and memory),
//! PostgreSQL when `FLOODGATE_TEST_DATABASE_URL` names a server — each test
//! in a database of its own.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;

use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};

use super::*;

const DAY: i64 = 86_400_000;
/// 2023-11-15T00:00:00Z.
const MIDNIGHT: i64 = 1_700_006_400_000;

/// A usage record with every field set; tests elsewhere in the crate start from it too.
pub(crate) fn record(record_id: &str) -> UsageRecord {
    UsageRecord {
        record_id: record_id.into(),
        at_ms: MIDNIGHT,
        request_id: format!("req-{record_id}"),
        route: "chat".into(),
        key_id: None,
        user: None,
        model: "m".into(),
        provider: "p".into(),
        upstream_model: "u".into(),
        status: 200,
        stream: false,
        input_tokens: 1,
        output_tokens: 1,
        cached_tokens: 0,
        cost_usd: 0.0,
        latency_ms: 5,
        ttft_ms: None,
        retries: 0,
        cache_hit: false,
        error: None,
    }
}

/// A live key with no limits; tests elsewhere in the crate start from it too.
pub(crate) fn key(id: &str) -> VirtualKey {
    VirtualKey {
        id: id.into(),
        name: format!("name of {id}"),
        hash: format!("{:0>64}", id.len().to_string() + id),
        prefix: "fg-abcdef".into(),
        models: None,
        rpm: None,
        tpm: None,
        max_concurrent: None,
        max_budget_usd: None,
        budget_period: BudgetPeriod::Total,
        metadata: serde_json::json!({}),
        scopes: Vec::new(),
        rooms: None,
        expires_at_ms: None,
        created_at_ms: 1,
        updated_at_ms: 1,
        revoked_at_ms: None,
        seq: 0,
    }
}

fn query(group_by: &[GroupBy]) -> UsageQuery {
    UsageQuery { from_ms: None, to_ms: None, group_by: group_by.to_vec(), key_id: None }
}

/// A row with no group columns set and the given sums.
fn sums(requests: i64, errors: i64, input_tokens: i64, cost_usd: f64) -> UsageRow {
    UsageRow {
        key_id: None,
        user: None,
        model: None,
        provider: None,
        day: None,
        requests,
        errors,
        cache_hits: 0,
        input_tokens,
        output_tokens: input_tokens / 10,
        cost_usd,
    }
}

fn with(mut row: UsageRow, group: GroupBy, value: &str) -> UsageRow {
    *row.group_mut(group) = Some(value.into());
    row
}

/// Four records across three UTC days, two keys (and none), two users (and
/// none), two models and two providers. Costs are binary fractions, so
/// their sums are exact.
async fn record_report_data(store: &dyn Store) {
    let records = [
        UsageRecord {
            key_id: Some("k1".into()),
            user: Some("u1".into()),
            model: "m1".into(),
            provider: "p1".into(),
            at_ms: MIDNIGHT - 1,
            input_tokens: 10,
            cost_usd: 0.25,
            ..record("r1")
        },
        UsageRecord {
            key_id: Some("k1".into()),
            user: Some("u2".into()),
            model: "m2".into(),
            provider: "p1".into(),
            at_ms: MIDNIGHT,
            status: 500,
            input_tokens: 20,
            cost_usd: 0.5,
            ..record("r2")
        },
        UsageRecord {
            key_id: Some("k2".into()),
            user: Some("u1".into()),
            model: "m1".into(),
            provider: "p2".into(),
            at_ms: MIDNIGHT + 1000,
            status: 429,
            input_tokens: 30,
            cost_usd: 1.0,
            ..record("r3")
        },
        UsageRecord {
            model: "m1".into(),
            provider: "p1".into(),
            at_ms: MIDNIGHT + DAY,
            input_tokens: 40,
            cost_usd: 2.0,
            ..record("r4")
        },
    ];
    let records = records.map(|r| UsageRecord { output_tokens: r.input_tokens / 10, ..r });
    assert_eq!(store.record_usage(&records).await.unwrap(), 4);
}

// The suite.

async fn recording_is_idempotent(store: Arc<dyn Store>) {
    assert_eq!(store.record_usage(&[]).await.unwrap(), 0);
    assert_eq!(store.record_usage(&[record("a"), record("b")]).await.unwrap(), 2);
    // The same record again, even with other values, is not stored again.
    let changed = UsageRecord { input_tokens: 1000, ..record("a") };
    assert_eq!(store.record_usage(std::slice::from_ref(&changed)).await.unwrap(), 0);
    let mixed = [record("a"), record("c"), record("b"), record("d")];
    assert_eq!(store.record_usage(&mixed).await.unwrap(), 2);
    // A duplicate within one batch is stored once.
    assert_eq!(store.record_usage(&[record("e"), record("e")]).await.unwrap(), 1);
    let totals = store.usage_totals().await.unwrap();
    assert_eq!(totals.len(), 1);
    assert_eq!(totals[0].requests, 5);
    assert_eq!(totals[0].input_tokens, 5);
}

async fn a_large_batch_is_written_whole(store: Arc<dyn Store>) {
    // 2,000 is not a multiple of any statement size, so every size is used.
    let records: Vec<UsageRecord> = (0..2000u32)
        .map(|i| UsageRecord {
            input_tokens: i,
            key_id: (i % 2 == 0).then(|| "even".to_string()),
            user: Some(format!("user-{}", i % 7)),
            ttft_ms: (i % 3 == 0).then_some(i),
            retries: i % 4,
            cache_hit: i % 5 == 0,
            error: (i % 6 == 0).then(|| "upstream_timeout".to_string()),
            status: if i % 6 == 0 { 504 } else { 200 },
            stream: i % 2 == 1,
            ..record(&format!("big-{i}"))
        })
        .collect();
    assert_eq!(store.record_usage(&records).await.unwrap(), 2000);
    assert_eq!(store.record_usage(&records).await.unwrap(), 0);
    let totals = store.usage_totals().await.unwrap();
    assert_eq!(totals[0].requests, 2000);
    assert_eq!(totals[0].input_tokens, (0..2000i64).sum::<i64>());
    let report = store.usage_report(&query(&[GroupBy::Key])).await.unwrap();
    assert_eq!(report.len(), 2);
    assert_eq!(report[0].key_id, None);
    assert_eq!(report[1].key_id.as_deref(), Some("even"));
    assert_eq!(report[1].requests, 1000);
    assert_eq!(report[0].errors + report[1].errors, 334);
    assert_eq!(report[0].cache_hits + report[1].cache_hits, 400);
    let users = store.usage_report(&query(&[GroupBy::User])).await.unwrap();
    assert_eq!(users.len(), 7);
}

async fn usage_totals_sum_per_model_and_provider(store: Arc<dyn Store>) {
    record_report_data(&*store).await;
    let totals = store.usage_totals().await.unwrap();
    let summary: Vec<(&str, &str, i64, i64, f64)> = totals
        .iter()
        .map(|t| (t.model.as_str(), t.provider.as_str(), t.requests, t.input_tokens, t.cost_usd))
        .collect();
    assert_eq!(
        summary,
        vec![("m1", "p1", 2, 50, 2.25), ("m1", "p2", 1, 30, 1.0), ("m2", "p1", 1, 20, 0.5)]
    );
}

async fn report_groups_by_each_column(store: Arc<dyn Store>) {
    record_report_data(&*store).await;
    let report = |group| {
        let store = store.clone();
        async move { store.usage_report(&query(&[group])).await.unwrap() }
    };
    use GroupBy::*;
    assert_eq!(
        report(Key).await,
        vec![
            sums(1, 0, 40, 2.0),
            with(sums(2, 1, 30, 0.75), Key, "k1"),
            with(sums(1, 1, 30, 1.0), Key, "k2"),
        ]
    );
    assert_eq!(
        report(User).await,
        vec![
            sums(1, 0, 40, 2.0),
            with(sums(2, 1, 40, 1.25), User, "u1"),
            with(sums(1, 1, 20, 0.5), User, "u2"),
        ]
    );
    assert_eq!(
        report(Model).await,
        vec![with(sums(3, 1, 80, 3.25), Model, "m1"), with(sums(1, 1, 20, 0.5), Model, "m2")]
    );
    assert_eq!(
        report(Provider).await,
        vec![with(sums(3, 1, 70, 2.75), Provider, "p1"), with(sums(1, 1, 30, 1.0), Provider, "p2")]
    );
    assert_eq!(
        report(Day).await,
        vec![
            with(sums(1, 0, 10, 0.25), Day, "2023-11-14"),
            with(sums(2, 2, 50, 1.5), Day, "2023-11-15"),
            with(sums(1, 0, 40, 2.0), Day, "2023-11-16"),
        ]
    );
}

async fn report_groups_by_key_model_and_day(store: Arc<dyn Store>) {
    record_report_data(&*store).await;
    use GroupBy::*;
    let row = |key: Option<&str>, model, day, sums| {
        let row = with(with(sums, Model, model), Day, day);
        match key {
            Some(key) => with(row, Key, key),
            None => row,
        }
    };
    assert_eq!(
        store.usage_report(&query(&[Key, Model, Day])).await.unwrap(),
        vec![
            row(None, "m1", "2023-11-16", sums(1, 0, 40, 2.0)),
            row(Some("k1"), "m1", "2023-11-14", sums(1, 0, 10, 0.25)),
            row(Some("k1"), "m2", "2023-11-15", sums(1, 1, 20, 0.5)),
            row(Some("k2"), "m1", "2023-11-15", sums(1, 1, 30, 1.0)),
        ]
    );
    // The order of the groups is the order of the sort.
    let by_day_first = store.usage_report(&query(&[Day, Key])).await.unwrap();
    let order: Vec<(Option<&str>, Option<&str>)> =
        by_day_first.iter().map(|r| (r.day.as_deref(), r.key_id.as_deref())).collect();
    assert_eq!(
        order,
        vec![
            (Some("2023-11-14"), Some("k1")),
            (Some("2023-11-15"), Some("k1")),
            (Some("2023-11-15"), Some("k2")),
            (Some("2023-11-16"), None),
        ]
    );
}

async fn report_without_groups_is_one_row_of_totals(store: Arc<dyn Store>) {
    assert_eq!(store.usage_report(&query(&[])).await.unwrap(), vec![sums(0, 0, 0, 0.0)]);
    assert_eq!(store.usage_report(&query(&[GroupBy::Model])).await.unwrap(), vec![]);
    record_report_data(&*store).await;
    assert_eq!(store.usage_report(&query(&[])).await.unwrap(), vec![sums(4, 2, 100, 3.75)]);
}

async fn report_window_is_from_inclusive_to_exclusive(store: Arc<dyn Store>) {
    record_report_data(&*store).await;
    let window = UsageQuery { from_ms: Some(MIDNIGHT), to_ms: Some(MIDNIGHT + DAY), ..query(&[]) };
    assert_eq!(store.usage_report(&window).await.unwrap(), vec![sums(2, 2, 50, 1.5)]);
    let from = UsageQuery { from_ms: Some(MIDNIGHT + 1000), ..query(&[]) };
    assert_eq!(store.usage_report(&from).await.unwrap(), vec![sums(2, 1, 70, 3.0)]);
    let to = UsageQuery { to_ms: Some(MIDNIGHT), ..query(&[]) };
    assert_eq!(store.usage_report(&to).await.unwrap(), vec![sums(1, 0, 10, 0.25)]);
    let empty = UsageQuery { from_ms: Some(MIDNIGHT), to_ms: Some(MIDNIGHT), ..query(&[]) };
    assert_eq!(store.usage_report(&empty).await.unwrap(), vec![sums(0, 0, 0, 0.0)]);
}

async fn report_filters_by_key(store: Arc<dyn Store>) {
    record_report_data(&*store).await;
    let k1 = UsageQuery { key_id: Some("k1".into()), ..query(&[GroupBy::Model]) };
    assert_eq!(
        store.usage_report(&k1).await.unwrap(),
        vec![
            with(sums(1, 0, 10, 0.25), GroupBy::Model, "m1"),
            with(sums(1, 1, 20, 0.5), GroupBy::Model, "m2"),
        ]
    );
    let windowed = UsageQuery { from_ms: Some(MIDNIGHT), ..k1 };
    assert_eq!(
        store.usage_report(&windowed).await.unwrap(),
        vec![with(sums(1, 1, 20, 0.5), GroupBy::Model, "m2")]
    );
    let nobody = UsageQuery { key_id: Some("nobody".into()), ..query(&[]) };
    assert_eq!(store.usage_report(&nobody).await.unwrap(), vec![sums(0, 0, 0, 0.0)]);
}

async fn report_days_are_utc_dates(store: Arc<dyn Store>) {
    let at = [
        ("before-epoch", -1),
        ("epoch", 0),
        ("last-ms-of-day-1", DAY - 1),
        ("day-2", DAY),
        ("before-midnight", MIDNIGHT - 1),
        ("midnight", MIDNIGHT),
        ("after-midnight", MIDNIGHT + 1),
    ];
    let records: Vec<UsageRecord> =
        at.iter().map(|(id, at_ms)| UsageRecord { at_ms: *at_ms, ..record(id) }).collect();
    store.record_usage(&records).await.unwrap();
    let days: Vec<(String, i64)> = store
        .usage_report(&query(&[GroupBy::Day]))
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.day.unwrap_or_default(), r.requests))
        .collect();
    assert_eq!(
        days,
        vec![
            ("1969-12-31".to_string(), 1),
            ("1970-01-01".to_string(), 2),
            ("1970-01-02".to_string(), 1),
            ("2023-11-14".to_string(), 1),
            ("2023-11-15".to_string(), 2),
        ]
    );
}

async fn errors_are_statuses_of_400_and_more(store: Arc<dyn Store>) {
    let records: Vec<UsageRecord> = [200u16, 204, 399, 400, 404, 429, 500, 503]
        .iter()
        .map(|status| UsageRecord { status: *status, ..record(&format!("s{status}")) })
        .collect();
    store.record_usage(&records).await.unwrap();
    let report = store.usage_report(&query(&[])).await.unwrap();
    assert_eq!((report[0].requests, report[0].errors), (8, 5));
}

async fn key_spend_sums_a_keys_cost_from_a_time(store: Arc<dyn Store>) {
    let spend = |id, key: &str, at_ms, cost_usd| UsageRecord {
        key_id: Some(key.into()),
        at_ms,
        cost_usd,
        ..record(id)
    };
    store
        .record_usage(&[
            spend("a", "k1", 100, 0.25),
            spend("b", "k1", 200, 0.5),
            spend("c", "k2", 150, 1.0),
            UsageRecord { at_ms: 300, cost_usd: 8.0, ..record("d") },
        ])
        .await
        .unwrap();
    assert_eq!(store.key_spend("k1", 0).await.unwrap(), 0.75);
    assert_eq!(store.key_spend("k1", 200).await.unwrap(), 0.5);
    assert_eq!(store.key_spend("k1", 201).await.unwrap(), 0.0);
    assert_eq!(store.key_spend("k2", i64::MIN).await.unwrap(), 1.0);
    assert_eq!(store.key_spend("nobody", 0).await.unwrap(), 0.0);
}

async fn keys_round_trip_every_field(store: Arc<dyn Store>) {
    let everything = VirtualKey {
        models: None,
        rpm: Some(u32::MAX),
        tpm: Some(100_000),
        max_concurrent: Some(0),
        max_budget_usd: Some(12.5),
        budget_period: BudgetPeriod::Month,
        metadata: serde_json::json!({
            "user": {"id": 7, "tags": ["a", "b"], "nested": {"deeper": [1.5, null, true]}},
            "plan": "pro — ünïcode",
            "empty": {},
        }),
        scopes: vec!["publish".into(), "admin:read".into()],
        rooms: Some(vec!["team-42-*".into(), "lobby".into(), "*".into()]),
        expires_at_ms: Some(MIDNIGHT + 30 * DAY),
        created_at_ms: MIDNIGHT - 5,
        updated_at_ms: MIDNIGHT,
        revoked_at_ms: None,
        ..key("key_everything")
    };
    let no_models = VirtualKey {
        models: Some(vec![]),
        rooms: Some(vec![]),
        budget_period: BudgetPeriod::Day,
        revoked_at_ms: Some(MIDNIGHT + 1),
        expires_at_ms: Some(-1),
        ..key("key_no_models")
    };
    let some_models = VirtualKey {
        models: Some(vec!["gpt-4o".into(), "claude-sonnet".into()]),
        max_budget_usd: Some(0.0),
        ..key("key_some_models")
    };
    // Rewriting a key replaces every field, `None` lists included.
    let every_room = VirtualKey { models: Some(vec![]), rooms: None, ..everything.clone() };
    for key in [everything, no_models, some_models, every_room] {
        let stored = store.put_key(&key).await.unwrap();
        assert!(stored.seq > 0);
        assert_eq!(stored, VirtualKey { seq: stored.seq, ..key.clone() });
        assert_eq!(store.get_key(&key.id).await.unwrap(), Some(stored));
    }
    assert_eq!(store.get_key("key_missing").await.unwrap(), None);
}

async fn a_hash_belongs_to_one_key(store: Arc<dyn Store>) {
    store.put_key(&key("key_a")).await.unwrap();
    let thief = VirtualKey { hash: key("key_a").hash, ..key("key_b") };
    assert!(store.put_key(&thief).await.is_err());
    assert_eq!(store.get_key("key_b").await.unwrap(), None);
}

async fn keys_since_follows_writes_in_seq_order(store: Arc<dyn Store>) {
    assert_eq!(store.keys_since(0).await.unwrap(), vec![]);
    let a = store.put_key(&key("key_a")).await.unwrap();
    let b = store.put_key(&key("key_b")).await.unwrap();
    let c = store.put_key(&key("key_c")).await.unwrap();
    assert!(a.seq < b.seq && b.seq < c.seq);
    // An update (here, a revocation) moves the key to the end.
    let revoked = VirtualKey { revoked_at_ms: Some(MIDNIGHT), name: "gone".into(), ..a };
    let a2 = store.put_key(&revoked).await.unwrap();
    assert!(a2.seq > c.seq);
    assert_eq!(a2.name, "gone");
    let ids = |keys: Vec<VirtualKey>| keys.into_iter().map(|k| k.id).collect::<Vec<_>>();
    assert_eq!(ids(store.keys_since(0).await.unwrap()), vec!["key_b", "key_c", "key_a"]);
    assert_eq!(ids(store.keys_since(b.seq).await.unwrap()), vec!["key_c", "key_a"]);
    assert_eq!(store.keys_since(a2.seq).await.unwrap(), vec![]);
    let all = store.keys_since(0).await.unwrap();
    assert_eq!(all[2], a2);
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    // Rewriting the newest key still takes a new seq.
    let a3 = store.put_key(&a2).await.unwrap();
    assert!(a3.seq > a2.seq);
}

async fn concurrent_key_writes_get_distinct_seqs(store: Arc<dyn Store>) {
    let writes: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.put_key(&key(&format!("key_{i}"))).await.unwrap() })
        })
        .collect();
    let mut seqs = HashSet::new();
    for write in writes {
        seqs.insert(write.await.unwrap().seq);
    }
    assert_eq!(seqs.len(), 8);
    let keys = store.keys_since(0).await.unwrap();
    assert_eq!(keys.len(), 8);
    assert!(keys.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(keys.iter().map(|k| k.seq).collect::<HashSet<_>>(), seqs);
}

async fn job_history_keeps_the_last_word_on_each_job(store: Arc<dyn Store>) {
    let job = |status: &str, at: i64| JobRecord {
        id: "job_1".into(),
        owner: Some("key_a".into()),
        status: status.into(),
        finished_at_ms: at,
        view: format!(r#"{{"id":"job_1","status":"{status}"}}"#),
    };
    assert_eq!(store.job_record("job_1").await.unwrap(), None);
    store.record_jobs(&[job("failed", 1)]).await.unwrap();
    assert_eq!(store.job_record("job_1").await.unwrap(), Some(job("failed", 1)));
    // Retried from the dead letters and finished again: the record follows.
    let other = JobRecord { id: "job_2".into(), owner: None, ..job("cancelled", 3) };
    store.record_jobs(&[job("completed", 2), other.clone()]).await.unwrap();
    assert_eq!(store.job_record("job_1").await.unwrap(), Some(job("completed", 2)));
    assert_eq!(store.job_record("job_2").await.unwrap(), Some(other));
    store.record_jobs(&[]).await.unwrap();
    // Past the history's TTL: job_1 finished at 2, job_2 at 3.
    assert_eq!(store.purge_jobs(3).await.unwrap(), 1);
    assert_eq!(store.job_record("job_1").await.unwrap(), None);
    assert!(store.job_record("job_2").await.unwrap().is_some());
}

/// Runs each suite function against every store.
macro_rules! suite {
    ($($test:ident),* $(,)?) => {
        mod sqlite_file {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let dir = tempfile::tempdir().unwrap();
                    let url = format!("sqlite://{}", dir.path().join("store.db").display());
                    let store = crate::store::open(&url, &super::PoolConfig::default())
                        .await
                        .unwrap();
                    assert_eq!(store.name(), "sqlite");
                    super::$test(store).await;
                }
            )*
        }
        mod sqlite_memory {
            $(
                #[tokio::test]
                async fn $test() {
                    let store =
                        crate::store::open("sqlite::memory:", &super::PoolConfig::default())
                            .await
                            .unwrap();
                    super::$test(store).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::on_postgres(super::$test).await;
                }
            )*
        }
    };
}

suite!(
    recording_is_idempotent,
    a_large_batch_is_written_whole,
    usage_totals_sum_per_model_and_provider,
    report_groups_by_each_column,
    report_groups_by_key_model_and_day,
    report_without_groups_is_one_row_of_totals,
    report_window_is_from_inclusive_to_exclusive,
    report_filters_by_key,
    report_days_are_utc_dates,
    errors_are_statuses_of_400_and_more,
    key_spend_sums_a_keys_cost_from_a_time,
    keys_round_trip_every_field,
    a_hash_belongs_to_one_key,
    keys_since_follows_writes_in_seq_order,
    concurrent_key_writes_get_distinct_seqs,
    job_history_keeps_the_last_word_on_each_job,
);

#[tokio::test]
async fn an_unknown_scheme_names_the_valid_ones_and_not_the_password() {
    let error =
        open("mysql://admin:hunter2@db/floodgate", &PoolConfig::default()).await.unwrap_err();
    let StoreError::Invalid(message) = &error else { panic!("{error:?}") };
    for scheme in ["sqlite://", "sqlite::memory:", "postgres://", "postgresql://", "\"mysql\""] {
        assert!(message.contains(scheme), "{message}");
    }
    assert!(!message.contains("hunter2"), "{message}");
    assert!(open("floodgate.db", &PoolConfig::default()).await.is_err());
}

#[tokio::test]
async fn a_pool_of_no_connections_is_refused() {
    let pool = PoolConfig { max_connections: 0, ..PoolConfig::default() };
    let error = open("sqlite::memory:", &pool).await.unwrap_err();
    assert!(matches!(error, StoreError::Invalid(_)), "{error:?}");
}

// PostgreSQL: a database of its own per test.

/// A database made for one test on the server `FLOODGATE_TEST_DATABASE_URL`
/// names, dropped by [`TestDatabase::drop_database`].
#[derive(Debug)]
struct TestDatabase {
    admin_url: String,
    name: String,
    /// The URL of the new database.
    url: String,
}

impl TestDatabase {
    /// `None` (after saying so) when no server is configured.
    async fn create() -> Option<TestDatabase> {
        let admin_url = match std::env::var("FLOODGATE_TEST_DATABASE_URL") {
            Ok(url) if !url.is_empty() => url,
            _ => {
                eprintln!("skipped: FLOODGATE_TEST_DATABASE_URL not set");
                return None;
            }
        };
        let name = format!("fg_test_{:016x}", fastrand::u64(..));
        let mut admin = PgConnection::connect(&admin_url).await.unwrap();
        // The name is ours (hex digits), not input.
        admin.execute(AssertSqlSafe(format!("CREATE DATABASE {name}"))).await.unwrap();
        admin.close().await.unwrap();
        let url = with_database(&admin_url, &name);
        Some(TestDatabase { admin_url, name, url })
    }

    /// Best effort: a database left behind only costs disk.
    async fn drop_database(&self) {
        let dropped = async {
            let mut admin = PgConnection::connect(&self.admin_url).await?;
            let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
            admin.execute(AssertSqlSafe(sql)).await?;
            admin.close().await
        };
        if let Err(error) = dropped.await {
            eprintln!("could not drop test database {}: {error}", self.name);
        }
    }
}

/// `url` with its database (path) replaced by `name`, query kept.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let authority = base.find("://").map_or(0, |i| i + 3);
    let base = base[authority..].find('/').map_or(base, |i| &base[..authority + i]);
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

/// Runs `test` against a PostgreSQL store in a fresh database, dropping the
/// database afterwards even when the test fails.
async fn on_postgres<F, Fut>(test: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(db) = TestDatabase::create().await else { return };
    let store = open(&db.url, &PoolConfig::default()).await.unwrap();
    assert_eq!(store.name(), "postgres");
    let outcome = tokio::spawn(test(store)).await;
    db.drop_database().await;
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}

#[test]
fn a_test_database_url_keeps_everything_but_the_database() {
    assert_eq!(
        with_database("postgres://u:p@h:5432/test?sslmode=disable", "x"),
        "postgres://u:p@h:5432/x?sslmode=disable"
    );
    assert_eq!(with_database("postgresql://h", "x"), "postgresql://h/x");
    assert_eq!(with_database("postgres://h/", "x"), "postgres://h/x");
}

#[tokio::test]
async fn postgres_reopened_keeps_everything_and_migrating_again_changes_nothing() {
    let Some(db) = TestDatabase::create().await else { return };
    let outcome = tokio::spawn({
        let url = db.url.replacen("postgres://", "postgresql://", 1);
        async move {
            let first = PostgresStore::open(&url).await.unwrap();
            assert_eq!(first.record_usage(&[record("a"), record("b")]).await.unwrap(), 2);
            let stored = first.put_key(&key("key_a")).await.unwrap();
            first.close().await;
            // Both schemes, and a second migration run, reach the same data.
            let again = open(&url, &PoolConfig::default()).await.unwrap();
            assert_eq!(again.usage_totals().await.unwrap()[0].requests, 2);
            assert_eq!(again.get_key("key_a").await.unwrap(), Some(stored.clone()));
            assert_eq!(again.record_usage(&[record("a")]).await.unwrap(), 0);
            assert!(again.put_key(&key("key_b")).await.unwrap().seq > stored.seq);
        }
    })
    .await;
    db.drop_database().await;
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}

#[tokio::test]
async fn postgres_writes_fail_cleanly_on_a_closed_pool_or_a_dropped_database() {
    let Some(db) = TestDatabase::create().await else { return };
    let pool =
        PoolConfig { acquire_timeout: std::time::Duration::from_secs(2), ..Default::default() };
    let closed = PostgresStore::open_with(&db.url, &pool).await.unwrap();
    closed.close().await;
    let error = closed.record_usage(&[record("a")]).await.unwrap_err();
    assert!(matches!(error, StoreError::Database(sqlx::Error::PoolClosed)), "{error:?}");

    let live = PostgresStore::open_with(&db.url, &pool).await.unwrap();
    assert_eq!(live.record_usage(&[record("a")]).await.unwrap(), 1);
    db.drop_database().await;
    assert!(live.record_usage(&[record("b")]).await.is_err());
    assert!(live.put_key(&key("key_a")).await.is_err());
    assert!(live.ping().await.is_err());
}

/// With a read replica, the admin reads (usage report and totals, the key
/// listing) go to it, and every write, the key sync and the key reads
/// before a change go to the primary. The "replica" here is a second,
/// different database with the same schema, so each answer shows which one
/// it came from; its sessions are read-only, so a write could not land there.
#[tokio::test]
async fn postgres_admin_reads_go_to_the_replica_and_everything_else_to_the_primary() {
    let Some(primary) = TestDatabase::create().await else { return };
    let Some(replica) = TestDatabase::create().await else { return };
    let outcome = tokio::spawn({
        let (primary_url, replica_url) = (primary.url.clone(), replica.url.clone());
        async move {
            // The replica's schema and one key and record of its own.
            let direct = PostgresStore::open(&replica_url).await.unwrap();
            direct.put_key(&key("key_on_replica")).await.unwrap();
            direct.record_usage(&[record("on-replica")]).await.unwrap();

            let read = super::ReadReplica { url: replica_url.clone(), pool: PoolConfig::default() };
            let store = super::open_with_replica(&primary_url, &PoolConfig::default(), Some(&read))
                .await
                .unwrap();
            let written = store.put_key(&key("key_on_primary")).await.unwrap();
            assert_eq!(store.record_usage(&[record("p1"), record("p2")]).await.unwrap(), 2);

            // Writes and the sync: the primary.
            let synced: Vec<String> =
                store.keys_since(0).await.unwrap().into_iter().map(|k| k.id).collect();
            assert_eq!(synced, ["key_on_primary"]);
            assert_eq!(store.get_key("key_on_primary").await.unwrap(), Some(written));
            assert_eq!(store.get_key("key_on_replica").await.unwrap(), None);
            let spent = UsageRecord {
                key_id: Some("key_on_primary".into()),
                cost_usd: 0.5,
                ..record("p3")
            };
            store.record_usage(&[spent]).await.unwrap();
            // A key's spend feeds budgets: the primary, not a lagging replica.
            assert_eq!(store.key_spend("key_on_primary", 0).await.unwrap(), 0.5);

            // Admin reads: the replica.
            let listed: Vec<String> =
                store.list_keys().await.unwrap().into_iter().map(|k| k.id).collect();
            assert_eq!(listed, ["key_on_replica"]);
            assert_eq!(store.usage_totals().await.unwrap()[0].requests, 1);
            let query = UsageQuery { from_ms: None, to_ms: None, group_by: vec![], key_id: None };
            assert_eq!(store.usage_report(&query).await.unwrap()[0].requests, 1);

            // Nothing was written to the replica, and its sessions refuse writes.
            let replica_keys: Vec<String> =
                direct.keys_since(0).await.unwrap().into_iter().map(|k| k.id).collect();
            assert_eq!(replica_keys, ["key_on_replica"]);
            assert_eq!(direct.usage_totals().await.unwrap()[0].requests, 1);
            let read_only =
                PostgresStore::open_with_replica(&primary_url, &PoolConfig::default(), &read)
                    .await
                    .unwrap();
            let write = sqlx::query("INSERT INTO usage (record_id) VALUES ('x')")
                .execute(read_only.reader())
                .await
                .unwrap_err();
            assert!(write.to_string().contains("read-only"), "{write}");

            // SQLite has no replica.
            assert!(
                super::open_with_replica("sqlite::memory:", &PoolConfig::default(), Some(&read))
                    .await
                    .is_err()
            );
        }
    })
    .await;
    primary.drop_database().await;
    replica.drop_database().await;
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}
