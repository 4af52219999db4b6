//! The live progress line of a realtime run (indicatif, on stderr, only when stderr is a
//! terminal and `--quiet` is not given): connections settled of requested while connecting,
//! then seconds held of the hold, with what is open and received.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The progress display; hidden when not wanted.
#[derive(Debug)]
pub(crate) struct Progress {
    bar: ProgressBar,
}

impl Progress {
    pub(crate) fn new(visible: bool, connections: usize) -> Progress {
        if !visible {
            return Progress { bar: ProgressBar::hidden() };
        }
        let bar = ProgressBar::with_draw_target(
            Some(connections as u64),
            ProgressDrawTarget::stderr_with_hz(4),
        );
        if let Ok(style) = ProgressStyle::with_template("{bar:24.cyan/blue} {pos:>6}/{len} {msg}") {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message("connecting");
        Progress { bar }
    }

    pub(crate) fn connecting(&self, settled: u64, subscribed: u64, failed: u64) {
        self.bar.set_position(settled);
        self.bar.set_message(format!("connecting: {subscribed} open, {failed} failed"));
    }

    pub(crate) fn holding(&self, duration: Duration) {
        self.bar.set_length(duration.as_secs().max(1));
        self.bar.set_position(0);
        self.bar.set_message("holding");
    }

    pub(crate) fn held(&self, elapsed: Duration, open: usize, received: u64) {
        self.bar.set_position(elapsed.as_secs());
        self.bar.set_message(format!("s held: {open} open, {received} messages received"));
    }

    pub(crate) fn draining(&self, received: u64, expected: u64) {
        self.bar.set_message(format!("draining: {received} of {expected} messages received"));
    }

    pub(crate) fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
