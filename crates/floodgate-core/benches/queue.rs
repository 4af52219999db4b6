//! Jobs per second through the job queue's engine alone, with a no-op
//! handler, on SQLite (a temporary file) and on Redis (a fresh key prefix
//! per run). Each configuration: phase A, `CONCURRENCY` producer tasks
//! submit `JOBS` jobs between them; phase B, `CONCURRENCY` worker tasks
//! each loop `lease(BATCH)` → `complete` every leased job, the last one
//! with `complete_and_lease(BATCH)`, which leases the next ones in the same
//! step (as BullMQ's worker fetches its next job when it finishes one;
//! `FETCH_NEXT=0`: `complete`, then `lease`), until the queue is empty.
//!
//! Reports submit, process (from the first completion to the last, as
//! `bench/bullmq/bench.mjs` times BullMQ; in the JSON line also from the
//! workers' start) and whole (A + B) jobs/s, the per-job end-to-end time,
//! submit → complete (the phases being one after the other, that is mostly
//! the job's wait in the queue), and on Redis what Redis did per job (INFO
//! commandstats and cpu). A warm-up of `JOBS / 5` jobs (at most 2,000), as
//! in BullMQ's bench, runs first; each run ends with a check that every job
//! was completed once and that nothing is left queued or running. A call
//! that SQLite answers "database is locked" (its 5 s busy timeout passed)
//! is tried again, and counted in the report; there should be none, the
//! queue's writes taking turns in-process (only another process writing
//! the same file could cause one).
//!
//! Run with `cargo bench -p floodgate-core --bench queue`. Environment:
//! `JOBS` (10000), `CONCURRENCY` (16), `BATCH` (the lease limit, 1 as
//! BullMQ takes one job at a time), `EXTRA_BATCH` (16: a second run with
//! that limit; 0 for none), `FETCH_NEXT` (1), `BACKENDS` (`sqlite,redis`),
//! and `FLOODGATE_BENCH_REDIS_URL` (`redis://127.0.0.1:6379`). One line per
//! configuration, and one `JSON {…}` line for scripts (`bench/queue.sh`).

#![expect(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark's report"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use floodgate_core::queue::{NewJob, Queue, QueueError, RedisQueue, SqliteQueue};
use floodgate_core::state::redis::RedisConnections;
use floodgate_core::time::now_ms;
use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// Far longer than a run: no lease expires during one.
const LEASE_MS: i64 = 600_000;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn new_job(id: String) -> NewJob {
    NewJob {
        request: json!({"model": "chat", "messages": [{"role": "user", "content": id}]}),
        id,
        owner: Some("key_bench".to_string()),
        route: "chat".to_string(),
        priority: 5,
        max_attempts: 3,
        webhook_url: None,
        idempotency_key: None,
        deadline_ms: None,
    }
}

/// Times in ns since the run's start, one slot per job.
struct Times {
    start: Instant,
    submitted: Vec<AtomicU64>,
    completed: Vec<AtomicU64>,
}

impl Times {
    fn new(jobs: usize) -> Times {
        Times {
            start: Instant::now(),
            submitted: (0..jobs).map(|_| AtomicU64::new(0)).collect(),
            completed: (0..jobs).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
}

/// What Redis did during a phase, from `INFO commandstats` and `INFO cpu`
/// before and after it (the bench is alone on that Redis).
#[derive(Default, Clone, Copy)]
struct RedisWork {
    /// EVALSHA and EVAL calls: the round trips that ran a script.
    scripts: u64,
    /// Time Redis spent running those scripts (their `usec`).
    script_time: Duration,
    /// Every command, those scripts ran included.
    commands: u64,
    /// The main thread's CPU time, user + system.
    cpu: Duration,
}

impl RedisWork {
    async fn sample(connections: Option<&RedisConnections>) -> Option<RedisWork> {
        let mut redis = connections?.shared();
        let text: String = redis::cmd("INFO")
            .arg("commandstats")
            .arg("cpu")
            .query_async(&mut redis)
            .await
            .unwrap();
        let mut work = RedisWork::default();
        let mut cpu = 0.0;
        for line in text.lines() {
            if let Some((name, rest)) =
                line.strip_prefix("cmdstat_").and_then(|l| l.split_once(':'))
            {
                let field = |key: &str| {
                    rest.split(',')
                        .find_map(|kv| kv.strip_prefix(key))
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0)
                };
                work.commands += field("calls=");
                if name == "evalsha" || name == "eval" {
                    work.scripts += field("calls=");
                    work.script_time += Duration::from_micros(field("usec="));
                }
            } else if let Some((name, value)) = line.split_once(':')
                && (name == "used_cpu_user_main_thread" || name == "used_cpu_sys_main_thread")
            {
                cpu += value.trim().parse::<f64>().unwrap_or(0.0);
            }
        }
        work.cpu = Duration::from_secs_f64(cpu);
        Some(work)
    }

    fn since(self, before: RedisWork) -> RedisWork {
        RedisWork {
            scripts: self.scripts.saturating_sub(before.scripts),
            script_time: self.script_time.saturating_sub(before.script_time),
            commands: self.commands.saturating_sub(before.commands),
            cpu: self.cpu.saturating_sub(before.cpu),
        }
    }

    fn json(self, jobs: usize, wall: Duration) -> Value {
        let per_job = |n: f64| n / jobs as f64;
        json!({
            "scripts_per_job": per_job(self.scripts as f64),
            "script_us_per_job": per_job(self.script_time.as_secs_f64() * 1e6),
            "commands_per_job": per_job(self.commands as f64),
            "cpu_us_per_job": per_job(self.cpu.as_secs_f64() * 1e6),
            "busy": self.cpu.as_secs_f64() / wall.as_secs_f64(),
        })
    }
}

async fn redis_since(
    connections: Option<&RedisConnections>,
    before: Option<RedisWork>,
) -> Option<RedisWork> {
    Some(RedisWork::sample(connections).await?.since(before?))
}

/// This process's CPU time so far, every thread's (Linux: the first field
/// of each thread's `schedstat`, in ns); zero where there is none.
fn own_cpu() -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return Duration::ZERO };
    let mut ns = 0u64;
    for task in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) {
            ns += text.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    Duration::from_nanos(ns)
}

struct Run {
    /// Redis's work during submit and during process (Redis only).
    redis: Option<(RedisWork, RedisWork)>,
    /// The bench's own CPU time (the client's) during submit and process.
    client: (Duration, Duration),
    submit: Duration,
    /// From the workers' start to the last completion.
    process: Duration,
    /// From the first completion to the last (as BullMQ's bench times it).
    first_to_last: Duration,
    e2e: Histogram<u64>,
    /// "Database is locked" answers (SQLite) tried again, warm-up included.
    busy: usize,
}

/// `$call.await.unwrap()`, but tried again (up to 100 times) while SQLite
/// answers that the database is locked, its busy timeout (5 s) passed. The
/// queue's own writes take turns on one connection, so none should; each
/// such answer is counted in `$busy` and reported, not hidden.
macro_rules! busy_retry {
    ($busy:expr, $call:expr) => {{
        let mut tries = 0;
        loop {
            match $call.await {
                Err(QueueError::Backend { message, .. })
                    if message.contains("database is locked") && tries < 100 =>
                {
                    tries += 1;
                    $busy.fetch_add(1, Ordering::Relaxed);
                }
                other => break other.unwrap(),
            }
        }
    }};
}

/// Submits `ids` from `concurrency` tasks (task t takes every t-th).
async fn submit_all(
    q: &Arc<dyn Queue>,
    ids: Arc<Vec<String>>,
    concurrency: usize,
    busy: &Arc<AtomicUsize>,
    times: Option<Arc<Times>>,
) {
    let mut tasks = Vec::new();
    for t in 0..concurrency {
        let (q, ids, busy, times) = (q.clone(), ids.clone(), busy.clone(), times.clone());
        tasks.push(tokio::spawn(async move {
            for i in (t..ids.len()).step_by(concurrency) {
                let (_, created) = busy_retry!(busy, q.submit(new_job(ids[i].clone()), now_ms()));
                assert!(created, "{} is new", ids[i]);
                if let Some(times) = &times {
                    times.submitted[i].store(times.now(), Ordering::Relaxed);
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

/// Leases and completes from `concurrency` tasks until the queue is empty;
/// returns how many completions took effect. With `fetch_next`, a worker
/// completes the last job of each lease with `complete_and_lease` (as
/// BullMQ's worker asks for its next job when it finishes one), else with
/// `complete` and then a `lease`.
async fn process_all(
    q: &Arc<dyn Queue>,
    concurrency: usize,
    batch: usize,
    fetch_next: bool,
    busy: &Arc<AtomicUsize>,
    times: Option<Arc<Times>>,
) -> usize {
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let (q, done, busy, times) = (q.clone(), done.clone(), busy.clone(), times.clone());
        tasks.push(tokio::spawn(async move {
            let worker = format!("bench-w{w}");
            let result = Value::Null;
            let finished = |id: &str| {
                done.fetch_add(1, Ordering::Relaxed);
                if let Some(times) = &times
                    && let Some(i) = id.strip_prefix("job_").and_then(|n| n.parse::<usize>().ok())
                {
                    times.completed[i].store(times.now(), Ordering::Relaxed);
                }
            };
            let mut jobs = busy_retry!(busy, q.lease(&worker, batch, LEASE_MS, now_ms()));
            while let Some(last) = jobs.pop() {
                // The no-op handler, for each job in turn.
                for job in &jobs {
                    assert!(busy_retry!(busy, q.complete(&job.id, &worker, &result, now_ms())));
                    finished(&job.id);
                }
                if fetch_next {
                    let (completed, next) = busy_retry!(
                        busy,
                        q.complete_and_lease(&last.id, &worker, &result, batch, LEASE_MS, now_ms())
                    );
                    assert!(completed);
                    finished(&last.id);
                    jobs = next;
                } else {
                    assert!(busy_retry!(busy, q.complete(&last.id, &worker, &result, now_ms())));
                    finished(&last.id);
                    jobs = busy_retry!(busy, q.lease(&worker, batch, LEASE_MS, now_ms()));
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    done.load(Ordering::Relaxed)
}

#[derive(Clone, Copy)]
struct Setup {
    jobs: usize,
    concurrency: usize,
    batch: usize,
    fetch_next: bool,
}

async fn run(q: Arc<dyn Queue>, redis: Option<&RedisConnections>, setup: &Setup) -> Run {
    let Setup { jobs, concurrency, batch, fetch_next } = *setup;
    let warm = (jobs / 5).clamp(1, 2000);
    let warm_ids: Vec<String> = (0..warm).map(|i| format!("warm_{i:08}")).collect();
    let busy = Arc::new(AtomicUsize::new(0));
    submit_all(&q, Arc::new(warm_ids), concurrency, &busy, None).await;
    assert_eq!(process_all(&q, concurrency, batch, fetch_next, &busy, None).await, warm);

    let ids: Arc<Vec<String>> = Arc::new((0..jobs).map(|i| format!("job_{i:08}")).collect());
    let times = Arc::new(Times::new(jobs));
    let before = RedisWork::sample(redis).await;
    let cpu = own_cpu();
    let started = Instant::now();
    submit_all(&q, ids, concurrency, &busy, Some(times.clone())).await;
    let submit = started.elapsed();
    let submit_cpu = own_cpu().saturating_sub(cpu);
    let submit_work = redis_since(redis, before).await;
    let before = RedisWork::sample(redis).await;
    let cpu = own_cpu();
    let started = Instant::now();
    let completed =
        process_all(&q, concurrency, batch, fetch_next, &busy, Some(times.clone())).await;
    let process = started.elapsed();
    let process_cpu = own_cpu().saturating_sub(cpu);
    let process_work = redis_since(redis, before).await;
    assert_eq!(completed, jobs, "every job completed once");

    let stats = q.stats(now_ms()).await.unwrap();
    assert_eq!(stats.completed as usize, warm + jobs, "{stats:?}");
    assert_eq!((stats.running, stats.pending.iter().sum::<u64>()), (0, 0), "{stats:?}");
    let mut e2e = Histogram::<u64>::new(3).unwrap();
    let (mut first, mut last) = (u64::MAX, 0);
    for (s, c) in times.submitted.iter().zip(&times.completed) {
        let (s, c) = (s.load(Ordering::Relaxed), c.load(Ordering::Relaxed));
        assert!(c > 0, "a job without a completion time");
        (first, last) = (first.min(c), last.max(c));
        e2e.record(c.saturating_sub(s) / 1000).unwrap();
    }
    let first_to_last = Duration::from_nanos(last.saturating_sub(first));
    Run {
        busy: busy.load(Ordering::Relaxed),
        redis: submit_work.zip(process_work),
        client: (submit_cpu, process_cpu),
        submit,
        process,
        first_to_last,
        e2e,
    }
}

fn report(backend: &str, setup: &Setup, r: &Run) {
    let Setup { jobs, concurrency, batch, fetch_next } = *setup;
    let next = if fetch_next { "complete_and_lease" } else { "complete, lease" };
    let per_s = |d: Duration| jobs as f64 / d.as_secs_f64();
    let (submit, whole) = (per_s(r.submit), per_s(r.submit + r.process));
    // From the first completion to the last: `jobs - 1` intervals.
    let process = jobs.saturating_sub(1) as f64 / r.first_to_last.as_secs_f64();
    let ms = |q: f64| r.e2e.value_at_quantile(q) as f64 / 1000.0;
    let client_us = |cpu: Duration| cpu.as_secs_f64() * 1e6 / jobs as f64;
    println!(
        "floodgate {backend:<7} jobs={jobs} concurrency={concurrency} batch={batch:<3} \
         submit={submit:>8.0} jobs/s  process={process:>8.0} jobs/s  whole={whole:>8.0} jobs/s  \
         e2e p50={:.1} ms p99={:.1} ms  [{next}]",
        ms(0.50),
        ms(0.99),
    );
    if r.busy > 0 {
        println!("  {} calls answered 'database is locked' and were tried again", r.busy);
    }
    println!(
        "  client CPU: {:.1} µs per job submitting, {:.1} µs per job processing",
        client_us(r.client.0),
        client_us(r.client.1),
    );
    if let Some((submit_work, process_work)) = r.redis {
        let per_job = |w: RedisWork, wall: Duration| {
            format!(
                "{:.2} scripts ({:.1} µs), {:.1} commands, {:.1} µs CPU per job, {:.0} % busy",
                w.scripts as f64 / jobs as f64,
                w.script_time.as_secs_f64() * 1e6 / jobs as f64,
                w.commands as f64 / jobs as f64,
                w.cpu.as_secs_f64() * 1e6 / jobs as f64,
                100.0 * w.cpu.as_secs_f64() / wall.as_secs_f64(),
            )
        };
        println!("  redis during submit:  {}", per_job(submit_work, r.submit));
        println!("  redis during process: {}", per_job(process_work, r.process));
    }
    let line = json!({
        "engine": "floodgate", "backend": backend, "jobs": jobs, "concurrency": concurrency,
        "batch": batch, "fetch_next": fetch_next, "submit_s": r.submit.as_secs_f64(), "process_s": r.process.as_secs_f64(),
        "submit_per_s": submit, "process_per_s": process,
        "process_from_start_per_s": per_s(r.process), "whole_per_s": whole,
        "e2e_p50_ms": ms(0.50), "e2e_p99_ms": ms(0.99),
    "busy_retries": r.busy,
        "client_cpu_us_per_job": {"submit": client_us(r.client.0), "process": client_us(r.client.1)},
        "redis": r.redis.map(|(s, p)| json!({"submit": s.json(jobs, r.submit), "process": p.json(jobs, r.process)})),
    });
    println!("JSON {line}");
}

/// Deletes every key under `prefix`.
async fn delete_prefix(connections: &RedisConnections, prefix: &str) {
    let mut redis = connections.shared();
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut redis)
            .await
            .unwrap();
        if !keys.is_empty() {
            let _: () = redis::cmd("UNLINK").arg(&keys).query_async(&mut redis).await.unwrap();
        }
        if next == 0 {
            return;
        }
        cursor = next;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let jobs = env("JOBS", 10_000);
    let concurrency = env("CONCURRENCY", 16).max(1);
    let mut batches = vec![env("BATCH", 1).max(1)];
    let extra = env("EXTRA_BATCH", 16);
    if extra > 0 && !batches.contains(&extra) {
        batches.push(extra);
    }
    let fetch_next = env("FETCH_NEXT", 1) != 0;
    let backends = std::env::var("BACKENDS").unwrap_or_else(|_| "sqlite,redis".to_string());
    let url = std::env::var("FLOODGATE_BENCH_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string());
    for backend in backends.split(',').map(str::trim).filter(|b| !b.is_empty()) {
        for &batch in &batches {
            let setup = Setup { jobs, concurrency, batch, fetch_next };
            match backend {
                "sqlite" => {
                    let dir = tempfile::tempdir().unwrap();
                    let path = dir.path().join("queue.db");
                    let q: Arc<dyn Queue> = Arc::new(
                        SqliteQueue::open(&format!("sqlite://{}", path.display())).await.unwrap(),
                    );
                    let r = run(q, None, &setup).await;
                    report(backend, &setup, &r);
                }
                "redis" => {
                    // As short as a deployment's (`floodgate:`) or BullMQ's queue keys.
                    let id = uuid::Uuid::new_v4().simple().to_string();
                    let prefix = format!("fgbench-{}:", &id[..8]);
                    let connections =
                        RedisConnections::connect(&url, 0).await.expect("Redis answers");
                    let q: Arc<dyn Queue> =
                        Arc::new(RedisQueue::with_connections(connections.clone(), &prefix));
                    let r = run(q, Some(&connections), &setup).await;
                    report(backend, &setup, &r);
                    delete_prefix(&connections, &prefix).await;
                }
                other => panic!("unknown backend {other:?} (sqlite, redis)"),
            }
        }
    }
}
