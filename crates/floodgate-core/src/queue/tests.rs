//! The queue engine's behaviour, on every backend: SQLite in a file and in
//! memory, Redis when `FLOODGATE_TEST_REDIS_URL` is set, and a Redis Cluster
//! of three masters the tests start when `redis-server` is installed (each
//! further backend is added to [`queues`]). Time is passed in, so leases and
//! retries are stepped.

use std::sync::Arc;

use serde_json::json;

use super::*;

fn job(id: &str, priority: u8) -> NewJob {
    NewJob {
        id: id.to_string(),
        owner: Some("key_a".to_string()),
        route: "chat".to_string(),
        request: json!({"model": "chat", "messages": [{"role": "user", "content": id}]}),
        priority,
        max_attempts: 3,
        webhook_url: None,
        idempotency_key: None,
        deadline_ms: None,
    }
}

/// Every backend, each fresh; the guard keeps its files alive.
async fn queues() -> Vec<(Arc<dyn Queue>, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let file = SqliteQueue::open(&format!("sqlite://{}", dir.path().join("jobs.db").display()))
        .await
        .unwrap();
    let memory = SqliteQueue::open("sqlite::memory:").await.unwrap();
    let mut queues: Vec<(Arc<dyn Queue>, Option<tempfile::TempDir>)> =
        vec![(Arc::new(file), Some(dir)), (Arc::new(memory), None)];
    if let Some(url) = redis_url() {
        queues.push((Arc::new(RedisQueue::connect(&url, &fresh_prefix()).await.unwrap()), None));
    }
    if let Some(cluster) = crate::state::test_servers::RedisCluster::shared() {
        let target = crate::state::redis::Target::Cluster(cluster.nodes.clone());
        let connections =
            crate::state::redis::RedisConnections::connect_to(&target, 0).await.unwrap();
        queues.push((Arc::new(RedisQueue::with_connections(connections, &fresh_prefix())), None));
    }
    queues
}

fn redis_url() -> Option<String> {
    std::env::var("FLOODGATE_TEST_REDIS_URL").ok()
}

/// A prefix no other test uses (Redis here keeps nothing on disk).
fn fresh_prefix() -> String {
    format!("fgtest{}:", uuid::Uuid::new_v4().simple())
}

fn ids(jobs: &[Job]) -> Vec<&str> {
    jobs.iter().map(|j| j.id.as_str()).collect()
}

#[tokio::test]
async fn strict_priority_then_fifo() {
    for (q, _dir) in queues().await {
        for (i, priority) in [5u8, 1, 10, 5, 0, 10].into_iter().enumerate() {
            q.submit(job(&format!("j{i}"), priority), 1000 + i as i64).await.unwrap();
        }
        let first = q.lease("w1", 3, 30_000, 2000).await.unwrap();
        assert_eq!(ids(&first), ["j2", "j5", "j0"]);
        assert!(first.iter().all(|j| j.status == JobStatus::Running && j.attempts == 1));
        let rest = q.lease("w2", 10, 30_000, 2000).await.unwrap();
        assert_eq!(ids(&rest), ["j3", "j1", "j4"]);
        assert!(q.lease("w3", 10, 30_000, 2000).await.unwrap().is_empty());
        let stats = q.stats(2000).await.unwrap();
        assert_eq!((stats.running, stats.pending.iter().sum::<u64>()), (6, 0));
    }
}

#[tokio::test]
async fn the_same_idempotency_key_returns_the_same_job() {
    for (q, _dir) in queues().await {
        let keyed = NewJob { idempotency_key: Some("order-1".into()), ..job("a", 5) };
        let (first, created) = q.submit(keyed.clone(), 1).await.unwrap();
        assert!(created);
        let again = NewJob { id: "b".into(), ..keyed.clone() };
        let (second, created) = q.submit(again, 2).await.unwrap();
        assert!(!created);
        assert_eq!(second.id, first.id);
        // Another owner's key is another job.
        let other = NewJob { id: "c".into(), owner: Some("key_b".into()), ..keyed };
        assert!(q.submit(other, 3).await.unwrap().1);
        assert!(matches!(q.submit(job("a", 5), 4).await, Err(QueueError::Duplicate(_))));
        assert_eq!(q.stats(5).await.unwrap().pending[5], 2);
    }
}

#[tokio::test]
async fn failures_retry_then_dead_letter_then_an_admin_retry_starts_over() {
    for (q, _dir) in queues().await {
        q.submit(job("j", 5), 0).await.unwrap();
        for attempt in 1..=2 {
            // Each attempt when the last one's backoff is over.
            let now = 100 * (attempt - 1);
            let leased = q.lease("w", 1, 1000, now).await.unwrap();
            assert_eq!(leased[0].attempts as i64, attempt);
            let retry_at = 100 * attempt;
            let outcome = q.fail("j", "w", "upstream 503", Some(retry_at), now).await.unwrap();
            assert_eq!(outcome, Failed::Retrying { run_after_ms: retry_at });
            // Not before its backoff.
            assert!(q.lease("w", 1, 1000, retry_at - 1).await.unwrap().is_empty());
            assert_eq!(q.stats(retry_at).await.unwrap().oldest_wait_ms, Some(0));
        }
        let leased = q.lease("w", 1, 1000, 200).await.unwrap();
        assert_eq!(leased[0].attempts, 3);
        assert_eq!(
            q.fail("j", "w", "upstream 503 again", Some(400), 300).await.unwrap(),
            Failed::Dead
        );
        let dead = q.dead_letters(10).await.unwrap();
        assert_eq!(ids(&dead), ["j"]);
        assert_eq!(dead[0].status, JobStatus::Failed);
        assert_eq!(dead[0].error.as_deref(), Some("upstream 503 again"));
        let stats = q.stats(400).await.unwrap();
        assert_eq!((stats.failed, stats.dead), (1, 1));
        let retried = q.retry_dead("j", 500).await.unwrap().unwrap();
        assert_eq!((retried.status, retried.attempts, retried.dead), (JobStatus::Queued, 0, false));
        assert_eq!(q.lease("w", 1, 1000, 500).await.unwrap()[0].attempts, 1);
        assert!(q.retry_dead("j", 600).await.unwrap().is_none(), "not a dead letter any more");
        assert!(!q.delete_dead("j").await.unwrap());
    }
}

#[tokio::test]
async fn an_expired_lease_goes_to_another_worker_and_completes_once() {
    for (q, _dir) in queues().await {
        q.submit(job("j", 5), 0).await.unwrap();
        assert_eq!(q.lease("dead-worker", 1, 1000, 0).await.unwrap().len(), 1);
        assert!(q.heartbeat("j", "dead-worker", 1000, 500).await.unwrap());
        // Its lease (extended to 1,500) has not expired at 1,400.
        assert!(q.lease("w2", 1, 1000, 1400).await.unwrap().is_empty());
        let again = q.lease("w2", 1, 1000, 1600).await.unwrap();
        assert_eq!((again[0].attempts, again[0].lease_owner.as_deref()), (2, Some("w2")));
        // The first worker wakes up: it holds nothing any more.
        assert!(!q.heartbeat("j", "dead-worker", 1000, 1700).await.unwrap());
        assert!(!q.complete("j", "dead-worker", &json!({"late": true}), 1700).await.unwrap());
        assert_eq!(
            q.fail("j", "dead-worker", "x", Some(0), 1700).await.unwrap(),
            Failed::NotLeased
        );
        assert!(q.complete("j", "w2", &json!({"ok": 1}), 1800).await.unwrap());
        assert!(!q.complete("j", "w2", &json!({"ok": 2}), 1900).await.unwrap(), "once");
        let done = q.get("j").await.unwrap().unwrap();
        assert_eq!((done.status, done.result), (JobStatus::Completed, Some(json!({"ok": 1}))));
        assert_eq!(done.finished_at_ms, Some(1800));
    }
}

#[tokio::test]
async fn a_lease_that_expires_on_the_last_attempt_is_a_dead_letter() {
    for (q, _dir) in queues().await {
        q.submit(NewJob { max_attempts: 1, ..job("j", 5) }, 0).await.unwrap();
        q.lease("w", 1, 100, 0).await.unwrap();
        assert!(q.lease("w2", 1, 100, 200).await.unwrap().is_empty());
        let dead = q.get("j").await.unwrap().unwrap();
        assert!(dead.dead && dead.status == JobStatus::Failed, "{dead:?}");
        assert!(dead.error.unwrap().contains("lease"));
    }
}

#[tokio::test]
async fn cancel_stops_queued_and_running_jobs() {
    for (q, _dir) in queues().await {
        q.submit(job("queued", 5), 0).await.unwrap();
        q.submit(job("running", 9), 0).await.unwrap();
        assert_eq!(ids(&q.lease("w", 1, 1000, 1).await.unwrap()), ["running"]);
        let cancelled = q.cancel("queued", 2).await.unwrap().unwrap();
        assert_eq!(cancelled.status, JobStatus::Cancelled);
        let cancelled = q.cancel("running", 3).await.unwrap().unwrap();
        assert_eq!(cancelled.status, JobStatus::Cancelled);
        // The worker learns it at its next heartbeat; its result is refused.
        assert!(!q.heartbeat("running", "w", 1000, 4).await.unwrap());
        assert!(!q.complete("running", "w", &json!(1), 5).await.unwrap());
        assert!(q.lease("w", 10, 1000, 6).await.unwrap().is_empty());
        assert!(q.cancel("nope", 7).await.unwrap().is_none());
        assert_eq!(q.stats(8).await.unwrap().cancelled, 2);
    }
}

#[tokio::test]
async fn a_deadline_that_passes_in_the_queue_fails_the_job() {
    for (q, _dir) in queues().await {
        q.submit(NewJob { deadline_ms: Some(100), ..job("late", 5) }, 0).await.unwrap();
        q.submit(NewJob { deadline_ms: Some(10_000), ..job("fine", 5) }, 0).await.unwrap();
        assert_eq!(ids(&q.lease("w", 10, 1000, 200).await.unwrap()), ["fine"]);
        let late = q.get("late").await.unwrap().unwrap();
        assert_eq!((late.status, late.dead), (JobStatus::Failed, false));
        assert!(late.error.unwrap().contains("deadline"));
    }
}

#[tokio::test]
async fn finished_jobs_are_purged_after_their_ttl_and_dead_letters_are_kept() {
    for (q, _dir) in queues().await {
        for id in ["done", "dead", "open"] {
            q.submit(NewJob { max_attempts: 1, ..job(id, 5) }, 0).await.unwrap();
        }
        q.lease("w", 2, 1000, 0).await.unwrap();
        assert!(q.complete("done", "w", &json!("ok"), 10).await.unwrap());
        assert_eq!(q.fail("dead", "w", "no", None, 10).await.unwrap(), Failed::Dead);
        assert_eq!(q.purge(5).await.unwrap(), 0);
        assert_eq!(q.purge(11).await.unwrap(), 1);
        assert!(q.get("done").await.unwrap().is_none());
        assert!(q.get("dead").await.unwrap().is_some());
        assert!(q.get("open").await.unwrap().is_some());
        assert!(q.delete_dead("dead").await.unwrap());
        assert!(q.get("dead").await.unwrap().is_none());
    }
}

#[tokio::test]
async fn queued_jobs_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
    let q = SqliteQueue::open(&url).await.unwrap();
    for i in 0..5 {
        q.submit(job(&format!("j{i}"), 5), i).await.unwrap();
    }
    q.lease("w", 2, 1000, 10).await.unwrap();
    q.close().await;
    let q = SqliteQueue::open(&url).await.unwrap();
    let stats = q.stats(20).await.unwrap();
    assert_eq!((stats.pending[5], stats.running), (3, 2));
    // The two leased before the restart come back once their leases expire.
    assert_eq!(ids(&q.lease("w2", 10, 1000, 2000).await.unwrap()), ["j0", "j1", "j2", "j3", "j4"]);
}

#[tokio::test]
async fn redis_jobs_survive_a_reconnect() {
    let Some(url) = redis_url() else { return };
    let prefix = fresh_prefix();
    let q = RedisQueue::connect(&url, &prefix).await.unwrap();
    for i in 0..5 {
        q.submit(job(&format!("j{i}"), 5), i).await.unwrap();
    }
    q.lease("w", 2, 1000, 10).await.unwrap();
    drop(q);
    let q = RedisQueue::connect(&url, &prefix).await.unwrap();
    let stats = q.stats(20).await.unwrap();
    assert_eq!((stats.pending[5], stats.running), (3, 2));
    assert_eq!(ids(&q.lease("w2", 10, 1000, 2000).await.unwrap()), ["j0", "j1", "j2", "j3", "j4"]);
}

#[tokio::test]
async fn two_redis_nodes_never_lease_the_same_job() {
    let Some(url) = redis_url() else { return };
    let prefix = fresh_prefix();
    let a: Arc<dyn Queue> = Arc::new(RedisQueue::connect(&url, &prefix).await.unwrap());
    let b: Arc<dyn Queue> = Arc::new(RedisQueue::connect(&url, &prefix).await.unwrap());
    concurrent_leases(&[a.clone(), b]).await;
    assert_eq!(a.stats(1000).await.unwrap().running, 200);
}

#[tokio::test]
async fn concurrent_workers_never_lease_the_same_job() {
    for (q, _dir) in queues().await {
        concurrent_leases(&[q]).await;
    }
}

/// 200 jobs leased 7 at a time by 4 workers spread over `nodes` (queues
/// on one backend): each job is leased exactly once.
async fn concurrent_leases(nodes: &[Arc<dyn Queue>]) {
    for i in 0..200 {
        nodes[0].submit(job(&format!("j{i:03}"), (i % 11) as u8), i).await.unwrap();
    }
    let mut tasks = Vec::new();
    for w in 0..4 {
        let (node, q) = (w % nodes.len(), nodes[w % nodes.len()].clone());
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let jobs = q.lease(&format!("node{node}-w{w}"), 7, 60_000, 1000).await.unwrap();
                if jobs.is_empty() {
                    return mine;
                }
                mine.extend(jobs.into_iter().map(|j| j.id));
            }
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let total = all.len();
    all.sort();
    all.dedup();
    assert_eq!((total, all.len()), (200, 200));
}

/// One mixed history on every backend: each ends with the same jobs and
/// the same stats as the first (the reference, SQLite), so a backend's
/// counters and sets never drift from what its jobs say.
#[tokio::test]
async fn every_backend_ends_a_mixed_history_alike() {
    let mut ends = Vec::new();
    for (q, _dir) in queues().await {
        for i in 0..12i64 {
            let new = NewJob {
                max_attempts: 2,
                deadline_ms: (i % 5 == 0).then_some(150),
                idempotency_key: (i % 4 == 0).then(|| format!("k{}", i % 8)),
                owner: (i % 3 != 0).then(|| "key_a".to_string()),
                ..job(&format!("j{i:02}"), (i % 4) as u8 * 3)
            };
            q.submit(new, i).await.unwrap();
        }
        let first = q.lease("w1", 5, 100, 100).await.unwrap();
        q.complete(&first[0].id, "w1", &json!({"n": 0}), 110).await.unwrap();
        q.fail(&first[1].id, "w1", "503", Some(130), 110).await.unwrap();
        q.fail(&first[2].id, "w1", "400", None, 110).await.unwrap();
        q.cancel(&first[3].id, 120).await.unwrap();
        // first[4]'s lease expires at 200; the deadlines (150) pass.
        let second = q.lease("w2", 3, 100, 201).await.unwrap();
        // w2 finishes its first with its next lease, in one step.
        let (done, third_of_w2) =
            q.complete_and_lease(&second[2].id, "w2", &json!({"n": 2}), 1, 100, 240).await.unwrap();
        assert!(done, "{}: {third_of_w2:?}", q.name());
        assert!(q.heartbeat(&second[0].id, "w2", 1000, 250).await.unwrap());
        q.cancel(&second[1].id, 260).await.unwrap();
        let third = q.lease("w3", 20, 100, 400).await.unwrap();
        for j in &third {
            q.fail(&j.id, "w3", "again", Some(500), 410).await.unwrap();
        }
        q.purge(115).await.unwrap();
        let dead = q.dead_letters(100).await.unwrap();
        if let Some(d) = dead.first() {
            q.retry_dead(&d.id, 420).await.unwrap();
        }
        let mut jobs = Vec::new();
        for i in 0..12 {
            jobs.push(q.get(&format!("j{i:02}")).await.unwrap());
        }
        ends.push((q.name(), q.stats(450).await.unwrap(), ids(&dead).join(","), jobs));
    }
    let (_, stats, dead, jobs) = &ends[0];
    // The history reaches every state (purge took the one completed).
    assert!(stats.dead > 0 && stats.failed > stats.dead && stats.cancelled == 2, "{stats:?}");
    assert!(stats.running > 0 && stats.pending.iter().sum::<u64>() > 0, "{stats:?}");
    assert!(jobs.iter().any(Option::is_none), "purged");
    for (name, other_stats, other_dead, other_jobs) in &ends[1..] {
        assert_eq!(other_stats, stats, "{name}");
        assert_eq!(other_dead, dead, "{name}");
        assert_eq!(other_jobs, jobs, "{name}");
    }
}

#[tokio::test]
async fn redis_reloads_scripts_it_lost() {
    let Some(url) = redis_url() else { return };
    let q = RedisQueue::connect(&url, &fresh_prefix()).await.unwrap();
    q.submit(job("a", 5), 0).await.unwrap();
    let client = ::redis::Client::open(url).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    ::redis::cmd("SCRIPT").arg("FLUSH").query_async::<()>(&mut connection).await.unwrap();
    assert_eq!(ids(&q.lease("w", 1, 1000, 1).await.unwrap()), ["a"]);
}

#[tokio::test]
async fn the_webhook_status_is_kept_on_the_job() {
    for (q, _dir) in queues().await {
        q.submit(job("a", 5), 0).await.unwrap();
        let status = json!({"status": "delivered", "attempts": 2});
        assert!(q.set_webhook("a", &status).await.unwrap(), "{}", q.name());
        assert_eq!(q.get("a").await.unwrap().unwrap().webhook, Some(status), "{}", q.name());
        assert!(!q.set_webhook("missing", &json!({})).await.unwrap(), "{}", q.name());
        assert!(q.get("missing").await.unwrap().is_none(), "{}", q.name());
    }
}

#[tokio::test]
async fn complete_and_lease_completes_under_the_lease_then_leases_the_next() {
    for (q, _dir) in queues().await {
        let name = q.name();
        for (id, priority) in [("a", 5u8), ("b", 9), ("c", 5), ("d", 0)] {
            q.submit(job(id, priority), 0).await.unwrap();
        }
        assert_eq!(ids(&q.lease("w1", 1, 1000, 10).await.unwrap()), ["b"], "{name}");
        // Done with b: the next two, in strict priority then FIFO.
        let (done, next) =
            q.complete_and_lease("b", "w1", &json!({"n": 1}), 2, 1000, 20).await.unwrap();
        assert!(done, "{name}");
        assert_eq!(ids(&next), ["a", "c"], "{name}");
        assert!(
            next.iter().all(|j| j.status == JobStatus::Running
                && j.lease_owner.as_deref() == Some("w1")
                && j.lease_until_ms == Some(1020)
                && j.attempts == 1),
            "{name}: {next:?}"
        );
        let b = q.get("b").await.unwrap().unwrap();
        assert_eq!(
            (b.status, b.result, b.finished_at_ms),
            (JobStatus::Completed, Some(json!({"n": 1})), Some(20)),
            "{name}"
        );
        assert_eq!(b.lease_owner, None, "{name}");
        // Another worker's completion does nothing, but it still gets work.
        let (done, next) =
            q.complete_and_lease("a", "w2", &json!("stolen"), 1, 1000, 30).await.unwrap();
        assert!(!done, "{name}");
        assert_eq!(ids(&next), ["d"], "{name}");
        assert_eq!(q.get("a").await.unwrap().unwrap().status, JobStatus::Running, "{name}");
        // Limit 0 only completes.
        let (done, next) = q.complete_and_lease("c", "w1", &json!(3), 0, 1000, 40).await.unwrap();
        assert!(done && next.is_empty(), "{name}");
        // After a's lease (to 1,020) expired, w2 finishing d takes a over.
        let (done, next) = q.complete_and_lease("d", "w2", &json!(4), 5, 1000, 1100).await.unwrap();
        assert!(done, "{name}");
        assert_eq!(ids(&next), ["a"], "{name}");
        assert_eq!((next[0].attempts, next[0].lease_owner.as_deref()), (2, Some("w2")), "{name}");
        // The first worker wakes up: its result is refused, its next lease empty.
        let (done, next) =
            q.complete_and_lease("a", "w1", &json!("late"), 1, 1000, 1200).await.unwrap();
        assert!(!done && next.is_empty(), "{name}");
        assert!(q.complete("a", "w2", &json!(5), 1300).await.unwrap(), "{name}");
        let stats = q.stats(1300).await.unwrap();
        assert_eq!(
            (stats.completed, stats.running, stats.pending.iter().sum::<u64>()),
            (4, 0, 0),
            "{name}: {stats:?}"
        );
        assert_eq!(q.get("a").await.unwrap().unwrap().result, Some(json!(5)), "{name}");
    }
}

#[tokio::test]
async fn submit_returns_the_job_as_stored() {
    for (q, _dir) in queues().await {
        let full = NewJob {
            idempotency_key: Some("k".into()),
            deadline_ms: Some(9_000),
            webhook_url: Some("https://example.test/hook".into()),
            max_attempts: 0,
            ..job("full", 42)
        };
        let bare = NewJob { owner: None, ..job("bare", 0) };
        for new in [full, bare] {
            let (submitted, created) = q.submit(new, 7).await.unwrap();
            assert!(created, "{}", q.name());
            let stored = q.get(&submitted.id).await.unwrap().unwrap();
            assert_eq!(submitted, stored, "{}", q.name());
        }
        let full = q.get("full").await.unwrap().unwrap();
        assert_eq!((full.priority, full.max_attempts), (MAX_PRIORITY, 1), "{}", q.name());
    }
}

#[tokio::test]
async fn backoffs_deadlines_and_leases_come_due_at_their_time() {
    for (q, _dir) in queues().await {
        let name = q.name();
        // a: a deadline at 300 while it waits out a retry's backoff, to 500.
        q.submit(NewJob { deadline_ms: Some(300), ..job("a", 5) }, 0).await.unwrap();
        assert_eq!(ids(&q.lease("w", 1, 1000, 0).await.unwrap()), ["a"], "{name}");
        let retrying = q.fail("a", "w", "503", Some(500), 10).await.unwrap();
        assert_eq!(retrying, Failed::Retrying { run_after_ms: 500 }, "{name}");
        // b: leased until 1,000. c: its backoff ends at 200.
        q.submit(job("b", 5), 20).await.unwrap();
        assert_eq!(ids(&q.lease("w", 1, 980, 20).await.unwrap()), ["b"], "{name}");
        q.submit(job("c", 5), 30).await.unwrap();
        assert_eq!(ids(&q.lease("w", 1, 1000, 30).await.unwrap()), ["c"], "{name}");
        q.fail("c", "w", "503", Some(200), 40).await.unwrap();
        // At 200 c's backoff is over; b's lease holds.
        assert_eq!(ids(&q.lease("w2", 5, 1000, 200).await.unwrap()), ["c"], "{name}");
        // At 300 a's deadline has not passed yet: a still waits.
        assert!(q.lease("w2", 5, 1000, 300).await.unwrap().is_empty(), "{name}");
        assert_eq!(q.get("a").await.unwrap().unwrap().status, JobStatus::Queued, "{name}");
        // At 301 it has: a failed, and is not leased after its backoff either.
        assert!(q.lease("w2", 5, 1000, 301).await.unwrap().is_empty(), "{name}");
        let a = q.get("a").await.unwrap().unwrap();
        assert_eq!((a.status, a.dead), (JobStatus::Failed, false), "{name}");
        assert!(a.error.unwrap().contains("deadline"), "{name}");
        assert!(q.lease("w2", 5, 1000, 600).await.unwrap().is_empty(), "{name}");
        // At 1,000 b's lease holds; at 1,001 b is another worker's.
        assert!(q.lease("w3", 5, 1000, 1000).await.unwrap().is_empty(), "{name}");
        let b = q.lease("w3", 5, 1000, 1001).await.unwrap();
        assert_eq!((ids(&b), b[0].attempts), (vec!["b"], 2), "{name}");
        let stats = q.stats(1001).await.unwrap();
        assert_eq!(
            (stats.failed, stats.running, stats.pending.iter().sum::<u64>()),
            (1, 2, 0),
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_released_job_runs_again_without_its_attempt_counting() {
    for (q, _dir) in queues().await {
        let name = q.name();
        q.submit(job("a", 5), 0).await.unwrap();
        let leased = q.lease("w1", 1, 1000, 10).await.unwrap();
        assert_eq!(leased[0].attempts, 1, "{name}");
        assert!(!q.release("a", "w2", 50, 20).await.unwrap(), "{name}: not w2's lease");
        assert!(q.release("a", "w1", 50, 20).await.unwrap(), "{name}");
        let released = q.get("a").await.unwrap().unwrap();
        assert_eq!((released.status, released.attempts), (JobStatus::Queued, 0), "{name}");
        assert!(q.lease("w2", 1, 1000, 40).await.unwrap().is_empty(), "{name}: not before 50");
        let again = q.lease("w2", 1, 1000, 50).await.unwrap();
        assert_eq!(again[0].attempts, 1, "{name}");
        assert!(!q.complete("a", "w1", &json!(1), 60).await.unwrap(), "{name}: w1 let go");
        assert!(q.complete("a", "w2", &json!(1), 60).await.unwrap(), "{name}");
        let stats = q.stats(70).await.unwrap();
        assert_eq!(
            (stats.running, stats.completed, stats.pending.iter().sum::<u64>()),
            (0, 1, 0),
            "{name}"
        );
    }
}

/// Thousands of finished jobs in the queue change nothing about a lease:
/// it takes the same jobs in the same order (strict priority then FIFO,
/// across queued jobs and expired leases), still fails what passed its
/// deadline and passes over a backoff; the stats count the finished ones.
#[tokio::test]
async fn a_lease_is_the_same_among_thousands_of_finished_jobs() {
    for (q, _dir) in queues().await {
        let name = q.name();
        for i in 0..5000 {
            q.submit(job(&format!("old{i:04}"), (i % 11) as u8), i).await.unwrap();
        }
        loop {
            let jobs = q.lease("w", 500, 1000, 10_000).await.unwrap();
            if jobs.is_empty() {
                break;
            }
            for j in &jobs {
                assert!(q.complete(&j.id, "w", &json!(null), 10_001).await.unwrap(), "{name}");
            }
        }
        // lost: leased by a worker that stops; its lease expires at 20,100.
        q.submit(job("lost", 7), 20_000).await.unwrap();
        assert_eq!(ids(&q.lease("stopped", 1, 100, 20_000).await.unwrap()), ["lost"], "{name}");
        // retrying: waits out a backoff to 99,000.
        q.submit(job("retrying", 10), 20_010).await.unwrap();
        assert_eq!(ids(&q.lease("w", 1, 1000, 20_010).await.unwrap()), ["retrying"], "{name}");
        q.fail("retrying", "w", "503", Some(99_000), 20_010).await.unwrap();
        q.submit(NewJob { deadline_ms: Some(20_500), ..job("late", 10) }, 20_020).await.unwrap();
        for (i, (id, priority)) in
            [("a", 5u8), ("b", 9), ("c", 5), ("d", 0)].into_iter().enumerate()
        {
            q.submit(job(id, priority), 20_030 + i as i64).await.unwrap();
        }
        let first = q.lease("w2", 3, 1000, 21_000).await.unwrap();
        assert_eq!(ids(&first), ["b", "lost", "a"], "{name}");
        assert_eq!(first.iter().map(|j| j.attempts).collect::<Vec<_>>(), [1, 2, 1], "{name}");
        assert_eq!(ids(&q.lease("w2", 10, 1000, 21_000).await.unwrap()), ["c", "d"], "{name}");
        let late = q.get("late").await.unwrap().unwrap();
        assert_eq!((late.status, late.dead), (JobStatus::Failed, false), "{name}");
        let stats = q.stats(21_000).await.unwrap();
        assert_eq!((stats.completed, stats.running, stats.failed), (5000, 5, 1), "{name}");
        assert_eq!((stats.pending[10], stats.pending.iter().sum::<u64>()), (1, 1), "{name}");
        assert_eq!(stats.oldest_wait_ms, None, "{name}: retrying waits until 99,000");
    }
}
