//! The cost of one in-memory admission: one check on a warm key, three
//! checks (requests, tokens and client IP, in three shards), and one check
//! over 10,000 keys in turn (so the counters are not all in cache). Every
//! admission is allowed, as most are. Run with
//! `cargo bench -p floodgate-core --bench limiter`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use floodgate_core::limiter::{Check, Limiter, MemoryLimiter, Rate, Verdict};
use futures_util::FutureExt as _;

/// High enough that no admission in a run is refused.
const RATE: Rate = Rate { limit: 1_000_000_000_000, period: Duration::from_secs(60) };

fn check(key: &str, cost: u64) -> Check {
    Check { key: key.into(), rate: RATE, cost }
}

/// Through the trait, as the gateway calls it; the memory backend's future
/// is ready at its first poll.
fn admit(limiter: &MemoryLimiter, checks: &[Check]) -> Verdict {
    match limiter.admit(checks, None, None).now_or_never() {
        Some(Ok(verdict)) => verdict,
        other => panic!("admission did not complete: {other:?}"),
    }
}

fn bench(c: &mut Criterion) {
    let limiter = MemoryLimiter::new();

    let one = [check("k:key_abcdefghijklmnopqrst:rpm", 1)];
    assert!(admit(&limiter, &one).allowed());
    c.bench_function("memory/admit/1 check/warm key", |b| {
        b.iter(|| black_box(admit(&limiter, black_box(&one))))
    });
    c.bench_function("memory/admit_now/1 check/warm key", |b| {
        b.iter(|| black_box(limiter.admit_now(black_box(&one), None, None)))
    });

    let three = [
        check("k:key_abcdefghijklmnopqrst:rpm", 1),
        check("k:key_abcdefghijklmnopqrst:tpm", 1500),
        check("ip:203.0.113.7", 1),
    ];
    assert!(admit(&limiter, &three).allowed());
    c.bench_function("memory/admit/3 checks (rpm+tpm+ip)/warm keys", |b| {
        b.iter(|| black_box(admit(&limiter, black_box(&three))))
    });

    let many: Vec<[Check; 1]> =
        (0..10_000).map(|n| [check(&format!("k:key_{n:020}:rpm"), 1)]).collect();
    for checks in &many {
        assert!(admit(&limiter, checks).allowed());
    }
    let mut next = 0;
    c.bench_function("memory/admit/1 check/10,000 keys round-robin", |b| {
        b.iter(|| {
            next = (next + 1) % many.len();
            black_box(admit(&limiter, black_box(&many[next])))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
