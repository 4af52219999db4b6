use std::time::Duration;

use metrics_exporter_prometheus::PrometheusBuilder;
use proptest::prelude::*;
use tokio::time::advance;

use super::*;

const COOLDOWN: Duration = Duration::from_secs(30);
const WINDOW: Duration = Duration::from_secs(10);
const MS: Duration = Duration::from_millis(1);

fn config() -> BreakerConfig {
    BreakerConfig {
        consecutive_failures: 3,
        error_rate: 0.5,
        min_requests: 10,
        window: WINDOW,
        cooldown: COOLDOWN,
        half_open_probes: 2,
    }
}

/// A config that opens on the error rate only.
fn rate_only() -> BreakerConfig {
    BreakerConfig { consecutive_failures: 1000, ..config() }
}

fn labels() -> BreakerLabels {
    BreakerLabels { scope: "target", provider: "p".into(), model: "m".into(), key: None }
}

fn breaker(config: BreakerConfig) -> Arc<Breaker> {
    Breaker::new(config, labels())
}

fn fail(b: &Arc<Breaker>, n: u32) {
    for _ in 0..n {
        b.try_acquire().unwrap().failure();
    }
}

fn succeed(b: &Arc<Breaker>, n: u32) {
    for _ in 0..n {
        b.try_acquire().unwrap().success();
    }
}

fn trip(b: &Arc<Breaker>) {
    fail(b, b.config.consecutive_failures);
    assert_eq!(state(b), "open");
}

fn state(b: &Breaker) -> &'static str {
    b.snapshot().state
}

#[test]
fn opens_after_consecutive_failures() {
    let b = breaker(config());
    fail(&b, 2);
    assert_eq!(state(&b), "closed");
    assert!(b.allows());
    fail(&b, 1);
    let s = b.snapshot();
    assert_eq!(s.state, "open");
    assert_eq!(s.opened_total, 1);
    assert!(!b.allows());
    assert!(b.try_acquire().is_none());
}

#[test]
fn a_success_in_between_resets_the_run() {
    let b = breaker(config());
    fail(&b, 2);
    succeed(&b, 1);
    fail(&b, 2);
    let s = b.snapshot();
    assert_eq!((s.state, s.consecutive_failures), ("closed", 2));
    fail(&b, 1);
    assert_eq!(state(&b), "open");
}

#[test]
fn opens_on_error_rate_only_once_min_requests_reached() {
    let b = breaker(rate_only());
    fail(&b, 9);
    assert_eq!(state(&b), "closed", "9 calls are fewer than min_requests");
    fail(&b, 1);
    assert_eq!(state(&b), "open");

    // At the threshold exactly is not over it.
    let b = breaker(rate_only());
    succeed(&b, 10);
    fail(&b, 10);
    let s = b.snapshot();
    assert_eq!((s.state, s.window_calls, s.error_rate), ("closed", 20, 0.5));
    fail(&b, 1);
    assert_eq!(state(&b), "open");
}

#[tokio::test(start_paused = true)]
async fn the_window_forgets_old_calls() {
    let b = breaker(rate_only());
    fail(&b, 9);
    advance(WINDOW).await;
    fail(&b, 1);
    let s = b.snapshot();
    assert_eq!((s.state, s.window_calls), ("closed", 1));

    // Calls spread over less than a window all count.
    let b = breaker(rate_only());
    fail(&b, 5);
    advance(WINDOW / 2).await;
    fail(&b, 5);
    assert_eq!(state(&b), "open");
}

#[tokio::test(start_paused = true)]
async fn stays_open_for_the_cooldown_then_admits_exactly_the_probes() {
    let b = breaker(config());
    trip(&b);
    advance(COOLDOWN - MS).await;
    assert!(!b.allows());
    assert!(b.try_acquire().is_none());
    assert_eq!(b.snapshot().retry_in_ms, Some(1));

    advance(MS).await;
    assert!(b.allows());
    assert_eq!(b.snapshot().retry_in_ms, Some(0));
    let p1 = b.try_acquire().unwrap();
    assert_eq!(state(&b), "half_open");
    assert!(b.allows());
    let p2 = b.try_acquire().unwrap();
    assert!(!b.allows());
    assert!(b.try_acquire().is_none());
    assert_eq!(b.snapshot().retry_in_ms, None);
    drop((p1, p2));
}

#[tokio::test(start_paused = true)]
async fn closes_after_half_open_probes_successes() {
    let b = breaker(config());
    trip(&b);
    advance(COOLDOWN).await;
    let p1 = b.try_acquire().unwrap();
    let p2 = b.try_acquire().unwrap();
    p1.success();
    assert_eq!(state(&b), "half_open");
    // A successful probe keeps its slot: the verdict needs two successes,
    // not an endless stream of probes.
    assert!(b.try_acquire().is_none());
    p2.success();
    let s = b.snapshot();
    assert_eq!(s.state, "closed");
    assert_eq!((s.consecutive_failures, s.window_calls, s.window_failures), (0, 0, 0));
    assert!(b.allows());
    // A clean slate: it takes a full run of failures to open again.
    fail(&b, 2);
    assert_eq!(state(&b), "closed");
}

#[tokio::test(start_paused = true)]
async fn a_probe_failure_reopens_for_a_full_cooldown() {
    let b = breaker(config());
    trip(&b);
    advance(COOLDOWN).await;
    let p1 = b.try_acquire().unwrap();
    let p2 = b.try_acquire().unwrap();
    advance(Duration::from_secs(5)).await;
    p1.failure();
    let s = b.snapshot();
    assert_eq!(s.state, "open");
    assert_eq!(s.retry_in_ms, Some(COOLDOWN.as_millis() as u64));
    assert_eq!(s.opened_total, 2);
    // The other probe's late success belongs to the half-open period that ended.
    p2.success();
    assert_eq!(state(&b), "open");

    advance(COOLDOWN - MS).await;
    assert!(b.try_acquire().is_none());
    advance(MS).await;
    assert!(b.try_acquire().is_some());
}

#[tokio::test(start_paused = true)]
async fn a_dropped_permit_frees_its_probe_slot_and_counts_nothing() {
    let b = breaker(config());
    for _ in 0..5 {
        drop(b.try_acquire().unwrap());
    }
    let s = b.snapshot();
    assert_eq!((s.consecutive_failures, s.window_calls), (0, 0));
    // Neutral outcomes neither count nor break a run of failures.
    fail(&b, 2);
    drop(b.try_acquire().unwrap());
    fail(&b, 1);
    assert_eq!(state(&b), "open");

    advance(COOLDOWN).await;
    let p1 = b.try_acquire().unwrap();
    let _p2 = b.try_acquire().unwrap();
    assert!(b.try_acquire().is_none());
    drop(p1);
    assert!(b.allows());
    let _p3 = b.try_acquire().unwrap();
    assert!(b.try_acquire().is_none());
    let s = b.snapshot();
    assert_eq!((s.state, s.window_calls), ("half_open", 0));
}

#[tokio::test(start_paused = true)]
async fn late_permits_from_an_earlier_epoch_do_not_affect_state() {
    let b = breaker(BreakerConfig { half_open_probes: 1, ..config() });
    let late_success = b.try_acquire().unwrap();
    let late_failure = b.try_acquire().unwrap();
    trip(&b);

    // A success that started before the breaker opened does not close it
    // or reset its run.
    late_success.success();
    let s = b.snapshot();
    assert_eq!((s.state, s.consecutive_failures), ("open", 3));

    advance(COOLDOWN).await;
    let probe = b.try_acquire().unwrap();
    assert_eq!(state(&b), "half_open");
    // A failure from the closed period is not a probe failure.
    late_failure.failure();
    assert_eq!(state(&b), "half_open");
    probe.success();
    assert_eq!(state(&b), "closed");

    // A probe from before an admin reset does not count after it.
    trip(&b);
    advance(COOLDOWN).await;
    let old_probe = b.try_acquire().unwrap();
    b.reset();
    old_probe.failure();
    let s = b.snapshot();
    assert_eq!((s.state, s.consecutive_failures, s.window_calls), ("closed", 0, 0));

    // Nor does a closed-state call from before a reset of a closed breaker.
    let before_reset = b.try_acquire().unwrap();
    b.reset();
    before_reset.failure();
    assert_eq!(b.snapshot().window_calls, 0);
}

#[test]
fn reset_closes_and_forgets_the_counts() {
    let b = breaker(config());
    trip(&b);
    b.reset();
    let s = b.snapshot();
    assert_eq!(s.state, "closed");
    assert_eq!((s.consecutive_failures, s.window_calls, s.window_failures), (0, 0, 0));
    assert_eq!(s.retry_in_ms, None);
    assert_eq!(s.opened_total, 1, "a total, kept across resets");
    assert!(b.allows());
    assert!(b.try_acquire().is_some());
}

#[tokio::test(start_paused = true)]
async fn allows_agrees_with_try_acquire() {
    fn check(b: &Arc<Breaker>, held: &mut Vec<BreakerPermit>) -> bool {
        let allowed = b.allows();
        let permit = b.try_acquire();
        assert_eq!(allowed, permit.is_some(), "in state {}", state(b));
        held.extend(permit);
        allowed
    }
    let b = breaker(config());
    let mut held = Vec::new();
    assert!(check(&b, &mut held));
    held.clear();
    trip(&b);
    assert!(!check(&b, &mut held));
    advance(COOLDOWN).await;
    assert!(check(&b, &mut held));
    assert!(check(&b, &mut held));
    assert!(!check(&b, &mut held));
    held.pop();
    assert!(check(&b, &mut held));
    held.pop().unwrap().failure();
    assert!(!check(&b, &mut held));
}

#[tokio::test(start_paused = true)]
async fn snapshot_reports_the_numbers() {
    let b = breaker(config());
    fail(&b, 2);
    succeed(&b, 3);
    fail(&b, 1);
    let s = b.snapshot();
    assert_eq!(s.state, "closed");
    assert_eq!(s.consecutive_failures, 1);
    assert_eq!((s.window_calls, s.window_failures), (6, 3));
    assert_eq!(s.error_rate, 0.5);
    assert_eq!(s.retry_in_ms, None);
    assert_eq!(s.opened_total, 0);

    fail(&b, 2);
    advance(Duration::from_secs(10)).await;
    let json = serde_json::to_value(b.snapshot()).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "state": "open",
            "consecutive_failures": 3,
            "window_calls": 0,
            "window_failures": 0,
            "error_rate": 0.0,
            "retry_in_ms": 20_000,
            "opened_total": 1,
        })
    );
}

#[test]
fn transitions_are_logged_in_metrics_with_the_labels() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        let labels = BreakerLabels { scope: "key", key: Some(3), ..labels() };
        let b = Breaker::new(BreakerConfig { cooldown: Duration::ZERO, ..config() }, labels);
        trip(&b);
        let probe = b.try_acquire().unwrap();
        assert_eq!(state(&b), "half_open");
        probe.failure();
        b.reset();
    });
    let text = handle.render();
    let series = |name: &str, to: &str| {
        format!(r#"{name}{{scope="key",provider="p",model="m",key="3"{to}}}"#)
    };
    for (to, n) in [("open", 2), ("half_open", 1), ("closed", 1)] {
        let line = format!("{} {n}", series(CIRCUIT_TRANSITIONS, &format!(r#",to="{to}""#)));
        assert!(text.contains(&line), "no {line:?} in\n{text}");
    }
    let gauge = format!("{} 0", series(CIRCUIT_OPEN, ""));
    assert!(text.contains(&gauge), "no {gauge:?} in\n{text}");
}

#[test]
fn target_scope_has_an_empty_key_label() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || trip(&breaker(config())));
    let line = r#"floodgate_circuit_open{scope="target",provider="p",model="m",key=""} 1"#;
    assert!(handle.render().contains(line));
}

#[test]
fn counts_from_every_thread_land() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Breaker>();
    send_sync::<BreakerPermit>();

    let b = breaker(BreakerConfig { window: Duration::from_secs(3600), ..rate_only() });
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| succeed(&b, 1000));
        }
    });
    let s = b.snapshot();
    assert_eq!((s.state, s.window_calls), ("closed", 4000));
}

#[derive(Debug, Clone)]
enum Op {
    Acquire,
    Succeed(prop::sample::Index),
    Fail(prop::sample::Index),
    Drop(prop::sample::Index),
    Advance(u64),
    Reset,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => Just(Op::Acquire),
        3 => any::<prop::sample::Index>().prop_map(Op::Succeed),
        4 => any::<prop::sample::Index>().prop_map(Op::Fail),
        2 => any::<prop::sample::Index>().prop_map(Op::Drop),
        3 => (0u64..15_000).prop_map(Op::Advance),
        1 => Just(Op::Reset),
    ]
}

proptest! {
    #[test]
    fn invariants_hold_for_any_sequence(
        ops in prop::collection::vec(op(), 1..300),
        probes in 1u32..4,
        consecutive in 1u32..6,
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async move {
            let config = BreakerConfig {
                consecutive_failures: consecutive,
                error_rate: 0.5,
                min_requests: 4,
                window: WINDOW,
                cooldown: WINDOW,
                half_open_probes: probes,
            };
            let b = breaker(config);
            let mut held: Vec<BreakerPermit> = Vec::new();
            let mut opened_total = 0;
            let mut opened_at = None;
            for op in ops {
                match op {
                    Op::Acquire => {
                        let allowed = b.allows();
                        let permit = b.try_acquire();
                        prop_assert_eq!(allowed, permit.is_some());
                        held.extend(permit);
                    }
                    Op::Succeed(i) if !held.is_empty() => held.swap_remove(i.index(held.len())).success(),
                    Op::Fail(i) if !held.is_empty() => held.swap_remove(i.index(held.len())).failure(),
                    Op::Drop(i) if !held.is_empty() => drop(held.swap_remove(i.index(held.len()))),
                    Op::Succeed(_) | Op::Fail(_) | Op::Drop(_) => {}
                    Op::Advance(ms) => advance(Duration::from_millis(ms)).await,
                    Op::Reset => b.reset(),
                }

                let s = b.snapshot();
                if s.opened_total != opened_total {
                    // Every opening is for a full cooldown.
                    prop_assert_eq!(s.opened_total, opened_total + 1);
                    prop_assert_eq!(s.retry_in_ms, Some(WINDOW.as_millis() as u64));
                    opened_total = s.opened_total;
                    opened_at = Some(Instant::now());
                }
                if s.state == "open" {
                    let opened_at = opened_at.unwrap();
                    if Instant::now() < opened_at + WINDOW {
                        prop_assert!(!b.allows());
                        prop_assert!(b.try_acquire().is_none());
                    }
                }
                if s.state == "closed" {
                    prop_assert!(s.consecutive_failures < consecutive);
                }
                let status = b.status();
                let probes_out = held
                    .iter()
                    .filter(|p| status.state() == State::HalfOpen && p.status == status)
                    .count() as u32;
                prop_assert!(probes_out <= probes);
                prop_assert!(probes_out + b.lock().probe_successes <= probes);
                prop_assert!(b.probes_taken.load(Ordering::Relaxed) <= probes);
            }
            Ok(())
        })?;
    }
}
