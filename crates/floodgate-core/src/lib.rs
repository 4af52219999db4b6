//! The Floodgate gateway as a library: the `floodgate` binary and the
//! integration tests both drive it through [`app::App`].
//!
//! Map (see ARCHITECTURE.md): `config` → `app` builds the shared state and the
//! tower stack from `pipeline` and `http`; handlers hand canonical requests to
//! `routing`, which calls `providers`; `usage` accounts each request into
//! `telemetry` metrics and the `ledger`, which writes to the `store`; `state`
//! holds what nodes share; `queue` and `jobs` run background jobs, and
//! `realtime` pushes topics (job events, rooms) to WebSocket, Socket.IO and
//! SSE clients; `telemetry::trace` exports each request's spans over OTLP.

pub mod admission;
pub mod alerts;
pub mod app;
pub mod cache;
pub mod config;
pub mod http;
pub mod jobs;
pub mod keys;
pub mod ledger;
pub mod limiter;
pub mod pipeline;
pub mod pricing;
pub mod providers;
pub mod queue;
pub mod realtime;
pub mod routing;
pub mod secrets;
pub mod shutdown;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod time;
pub mod usage;
pub mod workers;

pub use app::{App, AppState, StartupError};
pub use config::Config;
