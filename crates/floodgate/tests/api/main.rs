//! The one integration-test binary: a real gateway on an ephemeral port, its
//! own SQLite file and its own mock upstream per test; the real binary where
//! the process matters (signals, exit codes, logs).

mod helpers;

mod cache;
mod jobs;
mod keys;
mod limits;
mod realtime;
mod redis_modes;
#[expect(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    reason = "test helpers (a skipped test says why); the API tests start clusters of their own, not the shared one"
)]
#[path = "../../../floodgate-core/src/state/test_servers.rs"]
mod redis_servers;

mod anthropic_route;
mod deploy;
mod errors;
mod lifecycle;
mod openai_route;
mod ops;
mod otel;
mod process;
mod resilience;
mod routing;
mod sdk;
mod streaming;
mod translation;
