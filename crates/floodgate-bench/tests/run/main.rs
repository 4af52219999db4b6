//! Integration tests: the benchmark run for real against the in-process mock upstream (and once
//! against a real gateway in front of it), with short durations and no timed assertions.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers and the test server fail the test when setup or I/O fails"
)]

mod bodies;
mod errors;
mod gateway;
mod helpers;
mod load;
mod reports;
mod scenario;
mod source_ips;
mod streaming;
