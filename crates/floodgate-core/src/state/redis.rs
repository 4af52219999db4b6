//! Connections to Redis shared by everything that keeps state there (the
//! limiter, the response cache's L2): one multiplexed connection per serving
//! worker, so a command's driver task runs on the runtime of the request
//! that sent it and never wakes another thread (as the upstream HTTP pools
//! do, see `workers`), plus one for work off the serving workers.

use std::time::Duration;

use redis::RedisError;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// A command unanswered after this is an error, not a hang.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);
/// Each connection attempt gives up after this.
const CONNECTION_TIMEOUT: Duration = Duration::from_millis(500);
/// [`RedisConnections::connect`] gives up after this, however the attempts go.
pub const CONNECT_DEADLINE: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct RedisConnections {
    /// Made at connect, on the caller's runtime; used off the serving workers.
    shared: ConnectionManager,
    /// Made on first use on each worker's runtime.
    per_worker: std::sync::Arc<[tokio::sync::OnceCell<ConnectionManager>]>,
    client: redis::Client,
}

impl std::fmt::Debug for RedisConnections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConnections").field("workers", &self.per_worker.len()).finish()
    }
}

/// Why [`RedisConnections::connect`] failed, in words for a startup error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConnectError(pub String);

fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECTION_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(200))
}

impl RedisConnections {
    /// Connects to `url`, with room for a connection per each of `workers`
    /// serving workers. Fails within [`CONNECT_DEADLINE`] when Redis does not answer.
    pub async fn connect(url: &str, workers: usize) -> Result<RedisConnections, ConnectError> {
        let client = redis::Client::open(url).map_err(|e| ConnectError(e.to_string()))?;
        let shared = tokio::time::timeout(
            CONNECT_DEADLINE,
            ConnectionManager::new_with_config(client.clone(), manager_config()),
        )
        .await
        .map_err(|_| ConnectError(format!("no answer in {CONNECT_DEADLINE:?}")))?
        .map_err(|e| ConnectError(e.to_string()))?;
        Ok(RedisConnections {
            shared,
            per_worker: (0..workers).map(|_| tokio::sync::OnceCell::new()).collect(),
            client,
        })
    }

    /// This thread's connection: its worker's, else the shared one.
    pub async fn get(&self) -> Result<ConnectionManager, RedisError> {
        let Some(slot) = crate::workers::current().and_then(|i| self.per_worker.get(i)) else {
            return Ok(self.shared.clone());
        };
        let connection = slot
            .get_or_try_init(|| {
                ConnectionManager::new_with_config(self.client.clone(), manager_config())
            })
            .await?;
        Ok(connection.clone())
    }

    /// The connection for work off the serving workers.
    pub fn shared(&self) -> ConnectionManager {
        self.shared.clone()
    }

    /// The client, for connections of another kind (pub/sub).
    pub fn client(&self) -> &redis::Client {
        &self.client
    }
}

/// A Lua script run by its hash, with its body for when Redis lost its
/// script cache (a restart, `SCRIPT FLUSH`): then one more round trip
/// sends the body, which Redis caches again.
#[derive(Debug)]
pub struct Lua {
    script: redis::Script,
    code: &'static str,
}

impl Lua {
    pub fn new(code: &'static str) -> Lua {
        Lua { script: redis::Script::new(code), code }
    }

    pub fn hash(&self) -> &str {
        self.script.get_hash()
    }

    pub fn code(&self) -> &'static str {
        self.code
    }

    /// `EVALSHA <hash>`, or with `body` `EVAL <script>`; the caller adds
    /// the key count, keys and arguments.
    pub fn command(&self, body: bool) -> redis::Cmd {
        let mut command = redis::cmd(if body { "EVAL" } else { "EVALSHA" });
        command.arg(if body { self.code } else { self.hash() });
        command
    }
}

/// Redis does not hold the script an `EVALSHA` named.
pub fn is_noscript(error: &RedisError) -> bool {
    error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
}

/// `text` matched literally by a Redis glob pattern (`SCAN MATCH`).
pub fn glob_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// Whether Redis answers, as this node last saw it: [`RedisHealth::watch`]
/// pings it every [`PING_EVERY`] and publishes the answer in
/// `floodgate_redis_up` and to `/health/ready`.
#[derive(Debug)]
pub struct RedisHealth {
    up: std::sync::atomic::AtomicBool,
}

const PING_EVERY: Duration = Duration::from_secs(1);

impl RedisHealth {
    pub fn new() -> std::sync::Arc<RedisHealth> {
        std::sync::Arc::new(RedisHealth { up: std::sync::atomic::AtomicBool::new(true) })
    }

    pub fn up(&self) -> bool {
        self.up.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Pings until `shutdown`, logging each change.
    pub async fn watch(
        self: std::sync::Arc<Self>,
        connections: RedisConnections,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let gauge = crate::telemetry::gauge(crate::telemetry::metric::REDIS_UP, &[]);
        gauge.set(1.0);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(PING_EVERY) => {}
            }
            let mut connection = connections.shared();
            let command = redis::cmd("PING");
            let ping = command.query_async::<String>(&mut connection);
            let up = matches!(tokio::time::timeout(RESPONSE_TIMEOUT, ping).await, Ok(Ok(_)));
            if up != self.up.swap(up, std::sync::atomic::Ordering::Relaxed) {
                if up {
                    tracing::info!("Redis answers again; shared state is back");
                } else {
                    tracing::error!(
                        "Redis does not answer: limits hold per node, the cache serves from this node and job submissions are refused until it returns"
                    );
                }
            }
            gauge.set(if up { 1.0 } else { 0.0 });
        }
    }
}
