use std::time::Duration;

use proptest::prelude::*;
use tokio::time::advance;

use super::*;
use crate::alerts::Alerts;

fn limits(config: KeyConfig) -> Arc<KeyLimits> {
    let quota = Quota::new("p", 1, Alerts::log_only(Vec::new()), 0.0);
    KeyLimits::new(&config, Clock::new(), CapacitySignal::new(), quota)
}

fn key(rpm: Option<u32>, tpm: Option<u32>) -> KeyConfig {
    KeyConfig { rpm, tpm, ..KeyConfig::plain("k") }
}

#[tokio::test(start_paused = true)]
async fn no_sixty_second_window_ever_holds_more_than_the_limit() {
    let l = limits(key(Some(60), None));
    for _ in 0..60 {
        l.try_take(0, None).unwrap().settle(0);
    }
    let wait = l.try_take(0, None).unwrap_err();
    // The slot of second 0 stops counting at second 61.
    assert_eq!(wait, Duration::from_secs(61));
    advance(Duration::from_millis(60_999)).await;
    assert!(l.try_take(0, None).is_err());
    advance(Duration::from_millis(1)).await;
    // All 60 of second 0 have left: 60 more fit at once, no more.
    for _ in 0..60 {
        l.try_take(0, None).unwrap().settle(0);
    }
    assert!(l.try_take(0, None).is_err());
}

#[tokio::test(start_paused = true)]
async fn both_or_neither_and_settling_returns_unused_tokens() {
    let l = limits(key(Some(10), Some(1000)));
    let first = l.try_take(800, None).unwrap();
    // 200 tokens left: a 300-token call is refused and takes no request.
    assert!(l.try_take(300, None).is_err());
    let levels = l.levels();
    assert_eq!(levels.rpm.unwrap().remaining, 9);
    assert_eq!(levels.tpm.unwrap().remaining, 200);
    // The first call used only 100 of its 800.
    first.settle(100);
    assert_eq!(l.levels().tpm.unwrap().remaining, 900);
    l.try_take(300, None).unwrap().settle(500);
    let levels = l.levels();
    assert_eq!((levels.rpm.unwrap().remaining, levels.tpm.unwrap().remaining), (8, 400));
}

#[tokio::test(start_paused = true)]
async fn an_oversized_call_waits_for_an_empty_window_and_debt_delays_the_next() {
    let l = limits(key(None, Some(100)));
    let big = l.try_take(5000, None).unwrap();
    assert!(l.try_take(1, None).is_err());
    big.settle(160);
    advance(Duration::from_secs(10)).await;
    // 160 tokens booked at second 0 against a limit of 100: nothing fits
    // until that slot leaves the window.
    assert_eq!(l.try_take(1, None).unwrap_err(), Duration::from_secs(51));
    assert_eq!(l.levels().tpm.unwrap().used, 160);
}

#[tokio::test(start_paused = true)]
async fn daily_quotas_reset_at_midnight_utc() {
    let l = limits(KeyConfig { daily_requests: Some(2), ..KeyConfig::plain("k") });
    l.try_take(0, None).unwrap().settle(0);
    l.try_take(0, None).unwrap().settle(0);
    let wait = l.try_take(0, None).unwrap_err();
    assert!(wait <= Duration::from_secs(86_400), "{wait:?}");
    advance(wait).await;
    assert!(l.try_take(0, None).is_ok());
    assert_eq!(l.levels().daily_requests.unwrap().used, 1);
}

#[tokio::test(start_paused = true)]
async fn provider_headers_lower_the_room_until_their_reset() {
    let l = limits(key(Some(100), None));
    l.try_take(0, None).unwrap().settle(0);
    // Someone else uses this key too: the provider says only 10 are left,
    // full again in 5 s.
    l.observe(&Observed {
        requests: Reading {
            limit: Some(100),
            remaining: Some(10),
            reset: Some(Duration::from_secs(5)),
        },
        ..Observed::default()
    });
    assert_eq!(l.levels().rpm.unwrap().remaining, 10);
    for _ in 0..10 {
        l.try_take(0, None).unwrap().settle(0);
    }
    assert!(l.try_take(0, None).is_err());
    advance(Duration::from_secs(6)).await;
    // The phantom use expired with the provider's reset; ours stays.
    assert_eq!(l.levels().rpm.unwrap().remaining, 100 - 11);
    // A header saying more is left than we think changes nothing.
    l.observe(&Observed {
        requests: Reading { remaining: Some(100), ..Reading::default() },
        ..Observed::default()
    });
    assert_eq!(l.levels().rpm.unwrap().remaining, 89);
}

#[tokio::test(start_paused = true)]
async fn limits_the_config_does_not_set_are_learned_from_headers() {
    let l = limits(KeyConfig::plain("k"));
    assert!(!l.counts_tokens());
    assert!(l.try_take(0, None).is_ok());
    l.observe(&Observed {
        requests: Reading { limit: Some(3), remaining: Some(1), reset: None },
        tokens: Reading { limit: Some(500), remaining: Some(500), reset: None },
    });
    assert!(l.counts_tokens());
    let levels = l.levels();
    assert!(levels.rpm.unwrap().learned);
    assert_eq!(levels.rpm.unwrap().remaining, 1);
    assert_eq!(levels.tpm.unwrap().limit, 500);
    l.try_take(10, None).unwrap().settle(10);
    assert!(l.try_take(10, None).is_err());
}

#[tokio::test(start_paused = true)]
async fn headroom_is_the_tightest_share_left() {
    let l = limits(KeyConfig { rpm: Some(10), tpm: Some(100), ..KeyConfig::plain("k") });
    assert_eq!(l.headroom(), 1.0);
    l.try_take(50, None).unwrap().settle(50);
    assert!((l.headroom() - 0.5).abs() < 1e-6, "{}", l.headroom());
    l.try_take(0, None).unwrap().settle(0);
    assert!((l.headroom() - 0.5).abs() < 1e-6);
}

proptest! {
    /// Whatever the arrival pattern, no 60 s window admits more than the limit.
    #[test]
    fn sliding_window_never_exceeds_the_limit(limit in 1u32..40, gaps in proptest::collection::vec(0u64..4000, 1..300)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        rt.block_on(async {
            let l = limits(key(Some(limit), None));
            let start = Instant::now();
            let mut admitted: Vec<Duration> = Vec::new();
            for gap in gaps {
                advance(Duration::from_millis(gap)).await;
                if let Ok(r) = l.try_take(0, None) {
                    r.settle(0);
                    admitted.push(Instant::now() - start);
                }
            }
            for (i, t) in admitted.iter().enumerate() {
                let in_window = admitted[i..].iter().take_while(|u| **u < *t + Duration::from_secs(60)).count();
                prop_assert!(in_window <= limit as usize, "{in_window} admitted in the minute from {t:?}");
            }
            Ok(())
        })?;
    }
}

#[tokio::test(start_paused = true)]
async fn a_node_takes_its_share_of_configured_limits_but_not_of_learned_ones() {
    let config = KeyConfig { rpm: Some(100), daily_requests: Some(1000), ..KeyConfig::plain("k") };
    let l = limits(config);
    l.set_share(3);
    let levels = l.levels();
    assert_eq!(levels.rpm.unwrap().limit, 33, "rounded down: three nodes never exceed 100");
    assert_eq!(levels.daily_requests.unwrap().limit, 333);
    for _ in 0..33 {
        l.try_take(0, None).unwrap().settle(0);
    }
    assert!(l.try_take(0, None).is_err());
    // A node leaves: the share grows, and what was taken still counts.
    l.set_share(2);
    assert_eq!(l.levels().rpm.unwrap().remaining, 17);
    // A tiny limit on many nodes still lets each one call.
    let tiny = limits(key(Some(2), None));
    tiny.set_share(5);
    assert_eq!(tiny.levels().rpm.unwrap().limit, 1);
    // A limit the provider announced counts every node's calls already.
    let learned = limits(KeyConfig::plain("k"));
    learned.observe(&Observed {
        requests: Reading { limit: Some(90), remaining: Some(90), reset: None },
        tokens: Reading::default(),
    });
    learned.set_share(3);
    assert_eq!(learned.levels().rpm.unwrap().limit, 90);
}
