//! The one integration-test binary: a real gateway on an ephemeral port, its
//! own SQLite file and its own mock upstream per test; the real binary where
//! the process matters (signals, exit codes, logs).

mod helpers;

mod cache;
mod jobs;
mod keys;
mod limits;
mod realtime;

mod anthropic_route;
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
