//! Building the gateway and running it.
//!
//! [`App::build`] makes all shared state in one place (no globals but the
//! metrics recorder) and starts the background tasks under one cancellation
//! token; [`App::serve`] takes a bound listener and a shutdown token, so tests
//! bind port 0 and `main` owns signals.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ConnectInfo;
use axum::extract::FromRef;
use axum::extract::Request;
use axum::routing::{get, post};
use floodgate_mock_upstream::MockConfig;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder as ConnectionBuilder;
use hyper_util::service::TowerToHyperService;
use metrics_exporter_prometheus::PrometheusHandle;
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;

use crate::admission::{self, Limits};
use crate::alerts::Alerts;
use crate::cache::Cache;
use crate::config::{Config, ProviderKind};
use crate::config::{QueueBackend, StateBackendKind};
use crate::http;
use crate::http::listener::{Acceptor, Connections};
use crate::jobs::Jobs;
use crate::keys::KeyRegistry;
use crate::ledger::Ledger;
use crate::limiter::{Fallback, Limiter, MemoryLimiter, RedisLimiter};
use crate::pipeline::auth::{self, Auth};
use crate::pipeline::jwt::JwtVerifier;
use crate::pipeline::observe;
use crate::pipeline::shed::{self, InFlight};
use crate::pricing::PriceTable;
use crate::providers::Provider;
use crate::queue::{Queue, RedisQueue, SqliteQueue};
use crate::realtime::Realtime;
use crate::routing::Router;
use crate::routing::wait::CapacitySignal;
use crate::secrets::Scrubber;
use crate::state::bus::Bus;
use crate::state::members::Members;
use crate::state::redis::RedisConnections;
use crate::state::{MemoryState, StateBackend};
use crate::store::{Store, StoreError};
use crate::telemetry;
use crate::telemetry::trace::Traces;

/// The key the built-in mock provider is called with (it is not a secret:
/// the mock runs in this process, on loopback).
const BUILTIN_MOCK_KEY: &str = "floodgate-builtin-mock";

/// Everything handlers share: one `Arc`, so the per-request clone axum makes
/// is a single reference-count increment.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

#[derive(Debug)]
pub struct Shared {
    pub config: Arc<Config>,
    pub router: Arc<Router>,
    pub auth: Arc<Auth>,
    /// Virtual keys, synced from the store.
    pub keys: Arc<KeyRegistry>,
    /// Per-IP, per-key and per-user limits and budgets.
    pub limits: Limits,
    /// With `state.backend = "redis"`: the limiter, to report whether it is
    /// on local state because Redis does not answer.
    pub limiter_fallback: Option<Arc<Fallback>>,
    /// With `state.backend = "redis"`: the live nodes, and whether Redis
    /// answers.
    pub members: Option<Arc<Members>>,
    /// The response cache.
    pub cache: Arc<Cache>,
    pub state: Arc<dyn StateBackend>,
    pub store: Arc<dyn Store>,
    pub ledger: Ledger,
    pub prices: Arc<PriceTable>,
    pub metrics: PrometheusHandle,
    /// Cancelled when shutdown begins: readiness turns 503 so load balancers
    /// stop sending new work while in-flight requests finish.
    pub draining: CancellationToken,
    /// Requests in flight, bounded by `server.max_in_flight`.
    pub in_flight: Arc<InFlight>,
    /// The job queue, its events and webhooks.
    pub jobs: Arc<Jobs>,
    /// WebSocket, Socket.IO and SSE subscribers, and room publishing.
    pub realtime: Arc<Realtime>,
    /// OTLP trace export (`[telemetry]`); `None` when off.
    pub traces: Option<Arc<Traces>>,
}

impl FromRef<AppState> for Arc<Auth> {
    fn from_ref(state: &AppState) -> Self {
        state.auth.clone()
    }
}

/// Startup failures: each says what to change.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot open the database {url}: {source}")]
    Database { url: String, source: StoreError },
    #[error("cannot reach Redis at {url} ([state] redis_url or redis_nodes): {message}")]
    Redis { url: String, message: String },
    #[error("cannot open the job queue ({url}): {message}")]
    Queue { url: String, message: String },
    #[error("[auth.jwt]: {0}")]
    Jwt(String),
    #[error("cannot start the built-in mock provider: {0}")]
    Mock(std::io::Error),
    #[error("cannot start OTLP trace export to {endpoint} ([telemetry] otlp_endpoint): {message}")]
    Traces { endpoint: String, message: String },
    #[error(transparent)]
    Provider(#[from] crate::providers::BuildError),
    #[error(
        "refusing to listen on {addr} without a master key: anyone who can reach it could spend your \
         provider keys. Set master_key (or FLOODGATE_MASTER_KEY), listen on 127.0.0.1, or pass \
         --allow-unauthenticated"
    )]
    Unauthenticated { addr: SocketAddr },
}

/// A built gateway, ready to serve.
#[derive(Debug)]
pub struct App {
    state: AppState,
    /// Stops background tasks once the server has drained.
    background: CancellationToken,
    tasks: TaskTracker,
    ledger_task: JoinHandle<()>,
}

impl App {
    pub async fn build(config: Config) -> Result<App, StartupError> {
        // The recorder first: gauges set while building (breakers, the
        // degraded flags) would be lost to a recorder installed later.
        let metrics = telemetry::metrics_handle();
        let background = CancellationToken::new();
        let tasks = TaskTracker::new();

        let database_error =
            |source| StartupError::Database { url: redact_url(&config.database.url), source };
        let store: Arc<dyn Store> = crate::store::open_with_replica(
            &config.database.url,
            &config.database.pool,
            config.database.read.as_ref(),
        )
        .await
        .map_err(database_error)?;
        let keys = KeyRegistry::load(store.clone()).await.map_err(database_error)?;
        tasks.spawn(keys.clone().run_sync(background.clone()));
        let state: Arc<dyn StateBackend> = Arc::new(MemoryState::default());
        let local = Arc::new(MemoryLimiter::new());
        tasks.spawn(purge_limits(local.clone(), background.clone()));
        let redis_error =
            |message| StartupError::Redis { url: config.state.redis.describe(), message };
        // One set of connections for everything kept in Redis (limits, cache).
        let redis = match config.state.backend {
            StateBackendKind::Memory => None,
            StateBackendKind::Redis => Some(
                RedisConnections::connect_to(&config.state.redis, config.server.workers)
                    .await
                    .map_err(|e| redis_error(e.0))?,
            ),
        };
        let (limiter, limiter_fallback): (Arc<dyn Limiter>, _) = match &redis {
            None => (local as Arc<dyn Limiter>, None),
            Some(connections) => {
                let redis =
                    RedisLimiter::with_connections(connections.clone(), &config.state.redis_prefix)
                        .await
                        .map_err(|e| redis_error(e.message))?;
                let fallback = Fallback::new(Arc::new(redis), local);
                tasks.spawn(fallback.clone().run_probe(background.clone()));
                (fallback.clone() as Arc<dyn Limiter>, Some(fallback))
            }
        };
        let jwt = match &config.jwt {
            Some(jwt_config) => {
                let client = crate::providers::client::plain(std::time::Duration::from_secs(5))
                    .map_err(|e| StartupError::Jwt(e.to_string()))?;
                let verifier = JwtVerifier::new(jwt_config.clone(), client)
                    .await
                    .map_err(|e| StartupError::Jwt(e.to_string()))?;
                tasks.spawn(verifier.clone().run_refresh(background.clone()));
                Some(verifier)
            }
            None => None,
        };

        let mut secrets: Vec<SecretString> =
            config.providers.iter().flat_map(|p| p.keys.iter().map(|k| k.secret.clone())).collect();
        secrets.extend(config.master_key.clone());
        let scrubber = Arc::new(Scrubber::new(secrets));

        let (alerts, webhook) = Alerts::new(&config.alerts);
        if let Some(webhook) = webhook {
            tasks.spawn(webhook.run(background.clone()));
        }
        let capacity = CapacitySignal::new();
        let mut providers = Vec::new();
        for provider_config in &config.providers {
            let mut provider_config = provider_config.clone();
            let base_url = match (&provider_config.base_url, provider_config.kind) {
                (Some(url), _) => url.clone(),
                (None, ProviderKind::Mock) => {
                    let listener =
                        TcpListener::bind("127.0.0.1:0").await.map_err(StartupError::Mock)?;
                    let addr = listener.local_addr().map_err(StartupError::Mock)?;
                    let token = background.clone();
                    tasks.spawn(async move {
                        if let Err(error) =
                            floodgate_mock_upstream::serve(listener, MockConfig::default(), token)
                                .await
                        {
                            tracing::error!(%error, "built-in mock provider stopped");
                        }
                    });
                    provider_config.keys = vec![crate::config::KeyConfig {
                        rpm: provider_config.rpm,
                        tpm: provider_config.tpm,
                        daily_requests: provider_config.daily_requests,
                        daily_tokens: provider_config.daily_tokens,
                        ..crate::config::KeyConfig::plain(BUILTIN_MOCK_KEY)
                    }];
                    format!("http://{addr}/v1")
                }
                // Validation guarantees a base URL for every other kind.
                (None, kind) => {
                    return Err(StartupError::Provider(crate::providers::BuildError {
                        name: provider_config.name.clone(),
                        message: format!("kind {} needs base_url", kind.as_str()),
                    }));
                }
            };
            let provider = Provider::new(
                &provider_config,
                base_url,
                config.server.workers,
                scrubber.clone(),
                alerts.clone(),
                capacity.clone(),
            )?;
            // Keys other nodes (or an earlier run) took out of use stay out.
            if let Ok(disabled) = state.disabled_keys(&provider.name).await {
                for (index, reason) in disabled {
                    provider.keys.disable(index, &reason);
                }
            }
            providers.push(Arc::new(provider));
        }
        let router = Arc::new(Router::new(&config, providers, state.clone(), capacity.clone()));
        crate::routing::estimate::warm(router.tokenizers_needed());

        let (ledger, writer) = Ledger::new(
            store.clone(),
            config.database.ledger_buffer,
            &config.database.ledger_spill_path,
            config.database.ledger_journal,
        );
        let ledger_task = tokio::spawn(writer.run(background.clone()));

        let node = node_name();
        let traces = match &config.telemetry {
            None => None,
            Some(telemetry) => {
                let endpoint = redact_url(&telemetry.endpoint);
                let traces = Traces::start(telemetry, &node).map_err(|message| {
                    StartupError::Traces { endpoint: endpoint.clone(), message }
                })?;
                tracing::info!(
                    %endpoint,
                    protocol = telemetry.protocol.as_str(),
                    sample_ratio = telemetry.sample_ratio,
                    "exporting traces over OTLP"
                );
                Some(traces)
            }
        };
        let queue: Arc<dyn Queue> = match (config.queue.backend, &redis) {
            (QueueBackend::Redis, Some(connections)) => Arc::new(RedisQueue::with_connections(
                connections.clone(),
                &config.state.redis_prefix,
            )),
            // Validation allows the Redis backend only with Redis state.
            (QueueBackend::Redis, None) | (QueueBackend::Sqlite, _) => {
                Arc::new(SqliteQueue::open(&config.queue.sqlite_url).await.map_err(|e| {
                    StartupError::Queue {
                        url: config.queue.sqlite_url.clone(),
                        message: e.to_string(),
                    }
                })?)
            }
        };
        let bus = match &redis {
            None => Bus::local(&node),
            Some(connections) => {
                let (bus, bus_tasks) =
                    Bus::redis(&node, connections.clone(), &config.state.redis_prefix);
                tasks.spawn(bus_tasks.run(background.clone()));
                bus
            }
        };
        let signing = config.queue.webhook_secret.clone().or_else(|| config.master_key.clone());
        let (history, history_writer) =
            crate::jobs::history::History::new(store.clone(), config.queue.history_ttl);
        tasks.spawn(history_writer.run(background.clone()));
        let jobs =
            Jobs::new(queue, config.queue.clone(), bus.clone(), node.clone(), signing, history);
        let realtime = Realtime::new(
            config.realtime.clone(),
            bus,
            jobs.clone(),
            redis.clone().map(|c| (c, config.state.redis_prefix.as_str())),
            &node,
        );
        tasks.spawn(realtime.clone().run_upkeep(background.clone()));
        // Provider keys' configured limits are split among the live nodes.
        let members = redis.as_ref().map(|connections| {
            let members = Members::new(&config.state.redis_prefix, &node);
            let router = router.clone();
            let share = move |nodes| {
                for provider in router.providers() {
                    provider.keys.set_share(nodes);
                }
            };
            tasks.spawn(members.clone().run(connections.clone(), share, background.clone()));
            members
        });
        if config.realtime.enabled
            && config.realtime.max_connections >= config.server.max_connections
        {
            tracing::warn!(
                realtime = config.realtime.max_connections,
                server = config.server.max_connections,
                "realtime.max_connections is not below server.max_connections: realtime \
                 connections could take every place and leave none for API requests; raise \
                 server.max_connections (and ulimit -n) or lower realtime.max_connections"
            );
        }
        tasks.spawn(jobs.clone().run_cancel_listener(background.clone()));
        tasks.spawn(jobs.clone().run_upkeep(background.clone()));

        // A cache that is off anywhere keeps nothing in Redis.
        let cache_on =
            config.cache.enabled || config.models.iter().any(|m| m.cache.enabled == Some(true));
        let cache = Arc::new(Cache::new(
            &config.cache,
            &config.models,
            redis.filter(|_| cache_on).map(|c| (c, config.state.redis_prefix.as_str())),
        ));
        let loaded = cache.load_semantic().await;
        if loaded > 0 {
            tracing::info!(loaded, "semantic cache warmed up from Redis");
        }
        tasks.spawn(cache.clone().run(background.clone()));
        tasks.spawn(cache_gauges(cache.clone(), background.clone()));
        let config_max_in_flight = config.server.max_in_flight;
        let state = AppState(Arc::new(Shared {
            auth: Arc::new(Auth::new(config.master_key.clone(), Some(keys.clone()), jwt)),
            keys,
            limits: Limits::new(limiter, config.limits.clone(), store.clone()),
            limiter_fallback,
            members,
            cache,
            prices: Arc::new(PriceTable::new(&config.pricing)),
            config: Arc::new(config),
            router,
            state,
            store,
            ledger,
            metrics,
            draining: CancellationToken::new(),
            in_flight: InFlight::new(config_max_in_flight),
            jobs,
            realtime,
            traces,
        }));
        Ok(App { state, background, tasks, ledger_task })
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves on `listener` until `shutdown` is cancelled, then stops
    /// accepting, lets in-flight requests and streams finish for up to the
    /// configured grace period, stops background tasks and flushes the ledger.
    ///
    /// Serving is thread-per-core (see `workers`): `server.workers` threads,
    /// each with a single-threaded runtime, accept from the same socket.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let addr = listener.local_addr()?;
        if !self.state.auth.enabled()
            && !addr.ip().is_loopback()
            && !self.state.config.allow_unauthenticated
        {
            return Err(std::io::Error::other(StartupError::Unauthenticated { addr }));
        }
        let app = router(self.state.clone());
        let listener = listener.into_std()?;
        let connections = Connections::new(self.state.config.server.max_connections);
        // Cancelled when the workers are to stop accepting: at shutdown,
        // after the drain delay.
        let stop_accepting = CancellationToken::new();
        // Cancelled when the grace period is over: workers then drop what is left.
        let abort = CancellationToken::new();
        let mut finished = Vec::new();
        let threads = self.state.config.server.workers;
        let job_slots = self.state.config.queue.workers;
        for index in 0..threads {
            let (done, finished_rx) = tokio::sync::oneshot::channel();
            finished.push(finished_rx);
            let worker = Worker {
                index,
                listener: listener.try_clone()?,
                connections: connections.clone(),
                app: app.clone(),
                shutdown: stop_accepting.clone(),
                abort: abort.clone(),
                state: self.state.clone(),
                // The node's job workers, spread over its serving threads.
                job_slots: job_slots / threads + usize::from(index < job_slots % threads),
            };
            std::thread::Builder::new().name(format!("floodgate-worker-{index}")).spawn(
                move || {
                    let _ = done.send(worker.run());
                },
            )?;
        }
        drop(listener);
        let all_done = async {
            let mut outcome = Ok(());
            for rx in finished {
                let result = rx
                    .await
                    .unwrap_or_else(|_| Err(std::io::Error::other("a worker thread panicked")));
                if outcome.is_ok() {
                    outcome = result;
                }
            }
            outcome
        };
        tokio::pin!(all_done);
        // Biased: once shutdown is asked for, drain (and say so) even if the
        // workers, idle, would finish in the same instant.
        let result = tokio::select! {
            biased;
            () = shutdown.cancelled() => None,
            result = &mut all_done => Some(result),
        };
        let outcome = match result {
            Some(result) => result,
            None => {
                self.state.draining.cancel();
                // Still serving while load balancers see `draining` on
                // readiness and take the node out; a node that stopped
                // accepting at once would refuse what they still send it.
                let delay = self.state.config.server.drain_delay;
                if !delay.is_zero() {
                    tracing::info!(delay = %humantime::format_duration(delay), "shutting down: readiness says draining; still serving until the load balancers take this node out");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        result = &mut all_done => {
                            self.stop().await;
                            return result;
                        }
                    }
                }
                stop_accepting.cancel();
                // Realtime connections close at once ("going away"): their
                // clients reconnect to another node.
                self.state.realtime.closing.cancel();
                let grace = self.state.config.server.shutdown_grace;
                tracing::info!(grace = %humantime::format_duration(grace), "shutting down: no new connections; draining in-flight requests");
                match tokio::time::timeout(grace, &mut all_done).await {
                    Ok(result) => result,
                    Err(_) => {
                        tracing::warn!(
                            "grace period over with requests still in flight; closing them"
                        );
                        abort.cancel();
                        all_done.await
                    }
                }
            }
        };
        self.stop().await;
        outcome
    }

    /// Stops background tasks, waits for the ledger to be written and
    /// exports the last spans.
    pub async fn stop(self) {
        self.background.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        if let Err(error) = self.ledger_task.await {
            tracing::error!(%error, "the usage ledger task failed");
        }
        if let Some(traces) = &self.state.traces {
            traces.shutdown().await;
        }
    }
}

/// One serving thread: a single-threaded runtime serving the shared
/// listening socket until shutdown (gracefully) or abort (at once).
struct Worker {
    index: usize,
    listener: std::net::TcpListener,
    connections: Arc<Connections>,
    app: axum::Router,
    shutdown: CancellationToken,
    abort: CancellationToken,
    state: AppState,
    job_slots: usize,
}

impl Worker {
    fn run(self) -> std::io::Result<()> {
        crate::workers::set_index(self.index);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(async move {
            let listener = TcpListener::from_std(self.listener)?;
            let mut acceptor = Acceptor::new(listener, self.connections);
            let connections = TaskTracker::new();
            // Job workers run here, so their upstream calls use this thread's pools.
            let mut job_workers = tokio::spawn(crate::jobs::work(
                self.state.clone(),
                self.job_slots,
                self.shutdown.clone(),
                self.abort.clone(),
            ));
            let mut builder = ConnectionBuilder::new(TokioExecutor::new());
            // CONNECT for WebSockets over HTTP/2.
            builder.http2().enable_connect_protocol();
            // Idle keep-alive connections and slow request heads time out.
            builder.http1().timer(TokioTimer::new());
            loop {
                let (client, addr, connection) = tokio::select! {
                    biased;
                    () = self.abort.cancelled() => return Ok(()),
                    () = self.shutdown.cancelled() => break,
                    accepted = acceptor.accept() => accepted,
                };
                // Streams write many small frames: without TCP_NODELAY, Nagle's
                // algorithm holds them back until the client's delayed ACK (~40 ms).
                if let Err(error) = client.tcp().set_nodelay(true) {
                    tracing::debug!(%error, "could not set TCP_NODELAY");
                }
                let served = connection.clone();
                let service =
                    self.app.clone().map_request(move |mut request: Request<Incoming>| {
                        served.served();
                        request.extensions_mut().insert(ConnectInfo(addr));
                        request.map(axum::body::Body::new)
                    });
                let builder = builder.clone();
                let shutdown = self.shutdown.clone();
                connections.spawn(async move {
                    let serving = builder.serve_connection_with_upgrades(
                        TokioIo::new(client),
                        TowerToHyperService::new(service),
                    );
                    tokio::pin!(serving);
                    tokio::select! {
                        result = serving.as_mut() => return finished(result),
                        () = connection.drained() => {}
                        () = shutdown.cancelled() => {}
                    }
                    // Finish the request in progress (a stream to its end), then close.
                    serving.as_mut().graceful_shutdown();
                    finished(serving.await);
                });
            }
            drop(acceptor);
            connections.close();
            tokio::select! {
                () = connections.wait() => {}
                () = self.abort.cancelled() => {}
            }
            // Upgraded (WebSocket) connections run outside the tracker:
            // they are closing ("going away"); let them say so.
            let realtime = self.state.realtime.clone();
            tokio::select! {
                () = async {
                    while realtime.open() > 0 {
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    }
                } => {}
                () = self.abort.cancelled() => {}
            }
            // Running jobs finish within the grace period; past it they
            // are given back to the queue (which takes a moment).
            tokio::select! {
                _ = &mut job_workers => {}
                () = self.abort.cancelled() => {
                    let give_back = std::time::Duration::from_secs(5);
                    let _ = tokio::time::timeout(give_back, &mut job_workers).await;
                }
            }
            Ok(())
        })
        // Dropping the runtime here cancels whatever it still runs.
    }
}

/// Assembles the HTTP service. Layers, outermost first:
///
/// 1. `CatchPanicLayer` — a handler panic becomes a 500 in OpenAI's error
///    shape rather than a dropped connection (a bug, never expected).
/// 2. `observe` — reads or makes the request id (request extension, tracing
///    span, `x-request-id` response header); counts the request in flight;
///    when the response body ends or is dropped, records HTTP metrics and
///    writes the one log line, using the handler's `RouteInfo` extension.
///    With `[telemetry]` on, it also starts the request's server span (the
///    incoming `traceparent` its parent) and ends it with the body.
/// 3. `shed` — at most `server.max_in_flight` requests (streams until their
///    last byte) at once; beyond that an immediate 503 `overloaded` with
///    `retry-after: 1` in the route's format. Health and metrics are exempt.
/// 4. `CompressionLayer` — gzip or br when the client's `accept-encoding`
///    allows it and the config enables it; never on `text/event-stream` or
///    bodies under 32 bytes.
/// 5. Client and admin routes: `admission::limit_ip` — the per-IP limits
///    (`[limits] ip`, and `ip_ai` on AI routes), before auth so that key
///    guessing is limited too; it also writes the `x-ratelimit-*` headers
///    that later stages (key, user) fill in.
/// 6. Client routes only: `require_key` — checks `Authorization: Bearer` or
///    `x-api-key`, answers 401 in the route's format, puts the `Caller` in
///    request extensions. Admin routes only: `require_master` — the master
///    key or 401/403 (403 `admin_disabled` when no master key is set).
///
/// Handlers read the body themselves (with the configured size limit) so
/// that every rejection, 413 included, comes in the route's error format.
pub fn router(state: AppState) -> axum::Router {
    let client = axum::Router::new()
        .route("/v1/chat/completions", post(http::chat::chat_completions))
        .route("/v1/messages", post(http::chat::messages))
        .route("/v1/embeddings", post(http::embeddings::embeddings))
        .route("/v1/models", get(http::models::list))
        .route("/v1/models/{*id}", get(http::models::get))
        .route("/v1/jobs", post(http::jobs::submit))
        .route("/v1/jobs/{id}", get(http::jobs::get).delete(http::jobs::cancel))
        .route("/v1/jobs/{id}/events", get(http::jobs::events))
        .route("/v1/rooms/{name}/messages", post(http::realtime::publish))
        .route("/v1/rooms/{name}/events", get(http::realtime::events))
        .route("/v1/rooms/{name}/presence", get(http::realtime::presence))
        .route_layer(axum::middleware::from_fn_with_state(state.auth.clone(), auth::require_key))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), admission::limit_ip));
    let admin = axum::Router::new()
        .route("/admin/keys", post(http::keys::create_key).get(http::keys::list_keys))
        .route(
            "/admin/keys/{id}",
            get(http::keys::get_key).patch(http::keys::update_key).delete(http::keys::revoke_key),
        )
        .route("/admin/usage", get(http::keys::usage))
        .route("/admin/cache", get(http::cache::view))
        .route("/admin/cache/clear", post(http::cache::clear))
        .route("/admin/cache/warm", post(http::cache::warm))
        .route("/admin/queue", get(http::jobs::admin_view))
        .route("/admin/queue/dead-letters", get(http::jobs::dead_letters))
        .route("/admin/queue/dead-letters/{id}", axum::routing::delete(http::jobs::delete_dead))
        .route("/admin/queue/dead-letters/{id}/retry", post(http::jobs::retry_dead))
        .route("/admin/queue/webhook-secret", get(http::jobs::webhook_secret))
        .route("/admin/realtime", get(http::realtime::admin_view))
        .route("/admin/providers", get(http::admin::providers))
        .route("/admin/providers/{name}", get(http::admin::provider))
        .route("/admin/providers/{name}/reset", post(http::admin::reset))
        .route_layer(axum::middleware::from_fn_with_state(
            state.auth.clone(),
            http::admin::require_master,
        ))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), admission::limit_ip));
    // The key may come in `?token=` (browsers cannot set WebSocket headers).
    let realtime = axum::Router::new()
        .route("/ws", get(http::realtime::ws))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), admission::limit_ip));
    let ops = axum::Router::new()
        .route("/health", get(http::ops::health))
        .route("/health/ready", get(http::ops::ready))
        .route("/metrics", get(http::ops::metrics));
    let compression = CompressionLayer::new()
        .gzip(state.config.server.compression)
        .br(state.config.server.compression);
    client
        .merge(admin)
        .merge(realtime)
        .merge(ops)
        .fallback(http::no_route)
        .method_not_allowed_fallback(http::wrong_method)
        // Socket.IO answers `/socket.io/` itself; every other path passes through.
        .layer(crate::realtime::socketio::layer(state.realtime.clone(), state.auth.clone()))
        .layer(tower::util::MapRequestLayer::new(crate::realtime::socketio::detach_head))
        .layer(compression)
        .layer(axum::middleware::from_fn_with_state(state.in_flight.clone(), shed::shed))
        .layer(axum::middleware::from_fn_with_state(state.traces.clone(), observe::observe))
        .layer(CatchPanicLayer::custom(panic_response))
        .with_state(state)
}

fn panic_response(_panic: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    tracing::error!("a handler panicked; answering 500");
    let body = floodgate_protocol::openai::error_body(
        "internal error: the gateway hit a bug; the request was not completed",
        "api_error",
        Some("internal_error"),
        None,
    );
    let mut response = axum::response::IntoResponse::into_response((
        ::http::StatusCode::INTERNAL_SERVER_ERROR,
        body,
    ));
    response
        .headers_mut()
        .insert(::http::header::CONTENT_TYPE, ::http::HeaderValue::from_static("application/json"));
    response
}

/// Sets the cache's size gauges every 5 s.
async fn cache_gauges(cache: Arc<Cache>, shutdown: CancellationToken) {
    loop {
        let (entries, bytes) = cache.l1_size();
        metrics::gauge!(telemetry::metric::CACHE_ENTRIES).set(entries as f64);
        metrics::gauge!(telemetry::metric::CACHE_BYTES).set(bytes as f64);
        metrics::gauge!(telemetry::metric::CACHE_FLIGHTS).set(cache.flights.len() as f64);
        metrics::gauge!(telemetry::metric::CACHE_SEMANTIC_ENTRIES).set(cache.semantic_len() as f64);
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
        }
    }
}

/// Drops the limiter's idle counters every 10 s, so its memory follows the
/// clients active now, not every client ever seen.
async fn purge_limits(limiter: Arc<MemoryLimiter>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(std::time::Duration::from_secs(10)) => limiter.purge(),
        }
    }
}

/// This node's name in job leases and bus messages: host, process id and
/// a random part (a restarted process on the same host is another node).
fn node_name() -> String {
    let host =
        std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "node".into());
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &random[..8])
}

/// A URL with its password (if any) replaced, for errors and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

fn finished(result: Result<(), Box<dyn std::error::Error + Send + Sync>>) {
    if let Err(error) = result {
        tracing::trace!(%error, "connection ended with an error");
    }
}
