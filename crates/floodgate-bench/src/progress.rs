//! The live progress line (indicatif, on stderr, only when stderr is a terminal and `--quiet`
//! is not given): elapsed of total, completions in the last second, in flight, p50/p99 of the
//! last second, errors so far. A ticker task updates it and closes each timeline second.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio_util::sync::CancellationToken;

use crate::load::Shared;
use crate::stats::SecondView;

/// The progress display; hidden when not wanted.
#[derive(Debug)]
pub(crate) struct Progress {
    bar: ProgressBar,
}

impl Progress {
    pub(crate) fn new(visible: bool, duration: Duration) -> Progress {
        if !visible {
            return Progress { bar: ProgressBar::hidden() };
        }
        let bar = ProgressBar::with_draw_target(
            Some(duration.as_secs().max(1)),
            ProgressDrawTarget::stderr_with_hz(4),
        );
        if let Ok(style) = ProgressStyle::with_template("{bar:24.cyan/blue} {pos:>4}/{len}s {msg}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message("starting");
        Progress { bar }
    }

    fn warming_up(&self, in_flight: usize) {
        self.bar.set_message(format!("warming up, {in_flight} in flight"));
    }

    fn second(
        &self,
        elapsed: u64,
        view: SecondView,
        in_flight: usize,
        (errors, drops): (u64, u64),
    ) {
        let ms = |value: Option<f64>| value.map_or_else(|| "-".to_string(), |v| format!("{v:.2}"));
        self.bar.set_position(elapsed);
        self.bar.set_message(format!(
            "{} req/s  in flight {in_flight}  p50 {} ms  p99 {} ms  errors {errors}{}",
            view.ok + view.errors,
            ms(view.p50_ms),
            ms(view.p99_ms),
            if drops > 0 { format!("  dropped {drops}") } else { String::new() },
        ));
    }

    pub(crate) fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// Once a second until `stop`: during the warm-up (from `t0`) shows it; then, aligned on the
/// start of measurement, closes the timeline second just ended (noting the in-flight count) and
/// updates the display.
pub(crate) async fn tick(
    shared: Arc<Shared>,
    progress: Arc<Progress>,
    t0: Instant,
    stop: CancellationToken,
) {
    let recorder = &shared.recorder;
    let start = recorder.start();
    let mut next = t0 + Duration::from_secs(1);
    while next < start {
        if !sleep_until(next, &stop).await {
            return;
        }
        progress.warming_up(recorder.in_flight.load(Ordering::Relaxed));
        next += Duration::from_secs(1);
    }
    for elapsed in 1_u64.. {
        if !sleep_until(start + Duration::from_secs(elapsed), &stop).await {
            return;
        }
        let in_flight = recorder.in_flight.load(Ordering::Relaxed);
        let index = usize::try_from(elapsed - 1).unwrap_or(usize::MAX);
        let view = recorder.close_second(index);
        progress.second(elapsed, view, in_flight, recorder.errors_and_drops());
    }
}

/// Sleeps until `at`; false when `stop` came first.
async fn sleep_until(at: Instant, stop: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep_until(at.into()) => true,
        () = stop.cancelled() => false,
    }
}
