//! Connections to Redis shared by everything that keeps state there (the
//! limiter, the response cache's L2, the queue, the bus, rooms): one
//! connection per serving worker, so a command's driver task runs on the
//! runtime of the request that sent it and never wakes another thread (as
//! the upstream HTTP pools do, see `workers`), plus one for work off the
//! serving workers.
//!
//! Redis is one of three [`Target`]s (`[state] redis_mode`):
//!
//! - **standalone**: one primary at `redis_url`, a [`ConnectionManager`]
//!   that reconnects to it;
//! - **cluster**: a Redis Cluster found from `redis_nodes`, the crate's
//!   cluster client, which routes each command by its key's slot and
//!   follows `MOVED` and resharding. A script or pipeline must keep its keys
//!   in one slot, so the callers put the keys they use together under one
//!   hash tag ([`RedisConnections::group`]): the queue under
//!   `{<prefix>q}`, the limiter under `{<prefix>limits}`, a room's history
//!   and presence under `{<prefix>history:<room>}` and
//!   `{<prefix>presence:<room>}`; cache entries are single keys and spread
//!   over every master. `SCAN` reaches one node only, so [`Scan`] walks
//!   every master; pub/sub uses a plain connection to one seed node (a
//!   classic `PUBLISH` reaches subscribers on every node), the next seed
//!   after a failure;
//! - **sentinel**: the primary that the sentinels in `redis_nodes` name
//!   `redis_sentinel_master`; a [`SentinelConnection`] asks them again when
//!   a command fails as a failover makes it fail (connection lost, refused,
//!   `READONLY`, `MASTERDOWN`) and moves to the new primary.
//!
//! On a single Redis (standalone or sentinel) key names are exactly as
//! before the other modes existed: groups add no tag there.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, PubSub};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::sentinel::{Sentinel, SentinelNodeConnectionInfo};
use redis::{
    Cmd, ConnectionInfo, FromRedisValue, IntoConnectionInfo, Pipeline, RedisError, RedisFuture,
    RedisResult, Value,
};

/// A command unanswered after this is an error, not a hang.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);
/// Each connection attempt gives up after this.
const CONNECTION_TIMEOUT: Duration = Duration::from_millis(500);
/// [`RedisConnections::connect`] gives up after this, however the attempts go.
pub const CONNECT_DEADLINE: Duration = Duration::from_secs(2);
/// The sentinels are asked for the primary at most this often.
const SENTINEL_REFRESH_EVERY: Duration = Duration::from_millis(250);

/// Where Redis is: `[state] redis_mode` with `redis_url` or `redis_nodes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One primary (replicas behind it or not): `redis_url`.
    Standalone(String),
    /// A Redis Cluster, found from these seed nodes.
    Cluster(Vec<String>),
    /// The primary that these sentinels name `master`.
    Sentinel { sentinels: Vec<String>, master: String },
}

impl Target {
    /// What an error message names: the URLs with their passwords masked.
    pub fn describe(&self) -> String {
        let list = |urls: &[String]| {
            urls.iter().map(|u| crate::app::redact_url(u)).collect::<Vec<_>>().join(", ")
        };
        match self {
            Target::Standalone(url) => crate::app::redact_url(url),
            Target::Cluster(nodes) => format!("the cluster of {}", list(nodes)),
            Target::Sentinel { sentinels, master } => {
                format!("primary {master:?} of the sentinels {}", list(sentinels))
            }
        }
    }
}

/// One connection of any mode; cheap to clone (clones share the connection).
#[derive(Clone)]
pub enum RedisConnection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(SentinelConnection),
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RedisConnection::Single(_) => "RedisConnection::Single",
            RedisConnection::Cluster(_) => "RedisConnection::Cluster",
            RedisConnection::Sentinel(_) => "RedisConnection::Sentinel",
        })
    }
}

impl From<ConnectionManager> for RedisConnection {
    fn from(connection: ConnectionManager) -> Self {
        RedisConnection::Single(connection)
    }
}

/// Whether every command of `pipeline` is a `PUBLISH`: in a cluster such a
/// pipeline may go to any node (each forwards to every subscriber), while
/// the cluster client refuses one whose channels hash to several slots.
fn only_publish(pipeline: &Pipeline) -> bool {
    pipeline.cmd_iter().all(|cmd| {
        matches!(cmd.args_iter().next(), Some(redis::Arg::Simple(name))
            if name.eq_ignore_ascii_case(b"PUBLISH"))
    })
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConnection::Single(c) => c.req_packed_command(cmd),
            RedisConnection::Cluster(c) => c.req_packed_command(cmd),
            RedisConnection::Sentinel(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConnection::Single(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConnection::Cluster(c) => {
                if only_publish(pipeline) {
                    let route = SingleNodeRoutingInfo::Random;
                    Box::pin(c.route_pipeline(pipeline.clone(), offset, count, route))
                } else {
                    c.req_packed_commands(pipeline, offset, count)
                }
            }
            RedisConnection::Sentinel(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConnection::Single(c) => c.get_db(),
            RedisConnection::Cluster(c) => c.get_db(),
            RedisConnection::Sentinel(c) => c.get_db(),
        }
    }
}

/// Where one [`Scan`] runs: the one Redis, or one master of a cluster.
#[derive(Debug, Clone)]
enum ScanNode {
    Any,
    Address { host: String, port: u16 },
}

/// Every key that matches a pattern, a page at a time: `SCAN` on a single
/// Redis, and on each master in turn in a cluster (whose client would send
/// `SCAN` to one node only).
#[derive(Debug)]
pub struct Scan {
    pattern: String,
    count: usize,
    nodes: Vec<ScanNode>,
    cursor: u64,
}

impl Scan {
    /// A scan of `pattern`, asking `count` keys a page.
    pub async fn start(
        connection: &mut RedisConnection,
        pattern: &str,
        count: usize,
    ) -> RedisResult<Scan> {
        let nodes = match connection {
            RedisConnection::Cluster(cluster) => {
                let text: String = redis::cmd("CLUSTER").arg("NODES").query_async(cluster).await?;
                masters(&text)
            }
            _ => vec![ScanNode::Any],
        };
        Ok(Scan { pattern: pattern.to_string(), count, nodes, cursor: 0 })
    }

    /// The next page of keys (perhaps empty); `None` once every node is done.
    pub async fn next<T: FromRedisValue>(
        &mut self,
        connection: &mut RedisConnection,
    ) -> RedisResult<Option<Vec<T>>> {
        let Some(node) = self.nodes.last().cloned() else { return Ok(None) };
        let mut command = redis::cmd("SCAN");
        command.arg(self.cursor).arg("MATCH").arg(&self.pattern).arg("COUNT").arg(self.count);
        let (next, keys): (u64, Vec<T>) = match (&node, &mut *connection) {
            (ScanNode::Address { host, port }, RedisConnection::Cluster(cluster)) => {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port: *port,
                });
                let value = cluster.route_command(command, routing).await?;
                FromRedisValue::from_redis_value(value)?
            }
            _ => command.query_async(connection).await?,
        };
        self.cursor = next;
        if next == 0 {
            self.nodes.pop();
        }
        Ok(Some(keys))
    }
}

/// The masters that `CLUSTER NODES` lists as reachable.
fn masters(text: &str) -> Vec<ScanNode> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let address = fields.nth(1)?;
            let flags = fields.next()?;
            let flags: Vec<&str> = flags.split(',').collect();
            if !flags.contains(&"master")
                || flags.iter().any(|f| matches!(*f, "fail" | "fail?" | "noaddr" | "handshake"))
            {
                return None;
            }
            // `ip:port@cport[,hostname]`
            let address = address.split(['@', ',']).next()?;
            let (host, port) = address.rsplit_once(':')?;
            let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
            Some(ScanNode::Address { host, port: port.parse().ok()? })
        })
        .collect()
}

/// How one kind of connection is made, for each worker's own.
#[expect(clippy::large_enum_variant, reason = "one per RedisConnections, behind an Arc")]
enum Source {
    Standalone(redis::Client),
    Cluster {
        client: ClusterClient,
        /// A plain client per seed node, for pub/sub.
        seeds: Vec<redis::Client>,
        next_seed: AtomicUsize,
    },
    Sentinel(Arc<Resolver>),
}

#[derive(Clone)]
pub struct RedisConnections {
    /// Made at connect, on the caller's runtime; used off the serving workers.
    shared: RedisConnection,
    /// Made on first use on each worker's runtime.
    per_worker: Arc<[tokio::sync::OnceCell<RedisConnection>]>,
    source: Arc<Source>,
}

impl std::fmt::Debug for RedisConnections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConnections")
            .field("mode", &self.mode())
            .field("workers", &self.per_worker.len())
            .finish()
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

async fn within<T>(future: impl Future<Output = RedisResult<T>>) -> Result<T, ConnectError> {
    tokio::time::timeout(CONNECT_DEADLINE, future)
        .await
        .map_err(|_| ConnectError(format!("no answer in {CONNECT_DEADLINE:?}")))?
        .map_err(|e| ConnectError(e.to_string()))
}

impl RedisConnections {
    /// Connects to the Redis at `url`, with room for a connection per each
    /// of `workers` serving workers. Fails within [`CONNECT_DEADLINE`] when
    /// Redis does not answer.
    pub async fn connect(url: &str, workers: usize) -> Result<RedisConnections, ConnectError> {
        RedisConnections::connect_to(&Target::Standalone(url.to_string()), workers).await
    }

    /// As [`RedisConnections::connect`], to any [`Target`].
    pub async fn connect_to(
        target: &Target,
        workers: usize,
    ) -> Result<RedisConnections, ConnectError> {
        let source = match target {
            Target::Standalone(url) => {
                Source::Standalone(redis::Client::open(url.as_str()).map_err(invalid)?)
            }
            Target::Cluster(nodes) => {
                let client = ClusterClient::builder(nodes.iter().map(String::as_str))
                    .connection_timeout(CONNECTION_TIMEOUT)
                    .response_timeout(RESPONSE_TIMEOUT)
                    .retries(2)
                    .build()
                    .map_err(invalid)?;
                let seeds = nodes
                    .iter()
                    .map(|n| redis::Client::open(n.as_str()))
                    .collect::<RedisResult<_>>()
                    .map_err(invalid)?;
                Source::Cluster { client, seeds, next_seed: AtomicUsize::new(0) }
            }
            Target::Sentinel { sentinels, master } => {
                Source::Sentinel(within(Resolver::start(sentinels, master)).await?)
            }
        };
        let shared = within(source.open()).await?;
        Ok(RedisConnections {
            shared,
            per_worker: (0..workers).map(|_| tokio::sync::OnceCell::new()).collect(),
            source: Arc::new(source),
        })
    }

    /// `standalone`, `cluster` or `sentinel`.
    pub fn mode(&self) -> &'static str {
        match self.source.as_ref() {
            Source::Standalone(_) => "standalone",
            Source::Cluster { .. } => "cluster",
            Source::Sentinel(_) => "sentinel",
        }
    }

    /// Whether keys are spread over the slots of a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.source.as_ref(), Source::Cluster { .. })
    }

    /// The start of the names of a group of keys that one script or
    /// pipeline uses together: `base` itself on a single Redis, `{base}` in
    /// a cluster, a hash tag that keeps the group in one slot while other
    /// groups spread over the masters.
    pub fn group(&self, base: &str) -> String {
        if self.is_cluster() { format!("{{{base}}}") } else { base.to_string() }
    }

    /// This thread's connection: its worker's, else the shared one.
    pub async fn get(&self) -> Result<RedisConnection, RedisError> {
        let Some(slot) = crate::workers::current().and_then(|i| self.per_worker.get(i)) else {
            return Ok(self.shared.clone());
        };
        let connection = slot.get_or_try_init(|| self.source.open()).await?;
        Ok(connection.clone())
    }

    /// The connection for work off the serving workers.
    pub fn shared(&self) -> RedisConnection {
        self.shared.clone()
    }

    /// A new pub/sub connection: to the one Redis, to the primary the
    /// sentinels name, or in a cluster to the next seed node in turn (so
    /// one that failed is not the next one tried).
    pub async fn pubsub(&self) -> RedisResult<PubSub> {
        match self.source.as_ref() {
            Source::Standalone(client) => client.get_async_pubsub().await,
            Source::Cluster { seeds, next_seed, .. } => {
                let start = next_seed.fetch_add(1, Ordering::Relaxed);
                let mut last = None;
                for i in 0..seeds.len() {
                    let Some(seed) = seeds.get((start + i) % seeds.len()) else { continue };
                    let attempt =
                        tokio::time::timeout(CONNECTION_TIMEOUT, seed.get_async_pubsub()).await;
                    match attempt {
                        Ok(Ok(pubsub)) => return Ok(pubsub),
                        Ok(Err(error)) => last = Some(error),
                        Err(_) => {}
                    }
                }
                Err(last.unwrap_or_else(|| {
                    RedisError::from((redis::ErrorKind::Io, "no cluster seed node answered"))
                }))
            }
            Source::Sentinel(resolver) => {
                let answer = resolver.client().get_async_pubsub().await;
                if answer.is_err() {
                    resolver.refresh_soon();
                }
                answer
            }
        }
    }
}

fn invalid(error: RedisError) -> ConnectError {
    ConnectError(error.to_string())
}

impl Source {
    /// A new connection of this source's kind, on the caller's runtime.
    async fn open(&self) -> RedisResult<RedisConnection> {
        match self {
            Source::Standalone(client) => {
                ConnectionManager::new_with_config(client.clone(), manager_config())
                    .await
                    .map(RedisConnection::Single)
            }
            Source::Cluster { client, .. } => {
                client.get_async_connection().await.map(RedisConnection::Cluster)
            }
            Source::Sentinel(resolver) => {
                let (generation, client) = resolver.current();
                let manager = ConnectionManager::new_with_config(client, manager_config()).await?;
                Ok(RedisConnection::Sentinel(SentinelConnection {
                    resolver: resolver.clone(),
                    current: Arc::new(Mutex::new((generation, manager))),
                }))
            }
        }
    }
}

/// Finds the primary through the sentinels and keeps its address.
struct Resolver {
    sentinel: tokio::sync::Mutex<Sentinel>,
    master: String,
    node: SentinelNodeConnectionInfo,
    db: i64,
    /// The primary's client, and how many times it changed.
    current: Mutex<(u64, redis::Client)>,
    last_refresh: Mutex<Option<Instant>>,
    /// Where refreshes run: the runtime that connected (the sentinel
    /// connections they cache live there).
    runtime: tokio::runtime::Handle,
}

impl Resolver {
    async fn start(sentinels: &[String], master: &str) -> RedisResult<Arc<Resolver>> {
        let mut infos = Vec::with_capacity(sentinels.len());
        for url in sentinels {
            infos.push(url.as_str().into_connection_info()?);
        }
        // The user, password and database of the URLs serve the primary too;
        // a sentinel has no databases.
        let first = infos.first().map(|i| i.redis_settings().clone()).unwrap_or_default();
        let db = first.db();
        let node = SentinelNodeConnectionInfo::default().set_redis_connection_info(first);
        let infos: Vec<ConnectionInfo> = infos
            .into_iter()
            .map(|info| {
                let settings = info.redis_settings().clone().set_db(0);
                info.set_redis_settings(settings)
            })
            .collect();
        let mut sentinel = Sentinel::build(infos)?;
        let client = sentinel.async_master_for(master, Some(&node)).await?;
        Ok(Arc::new(Resolver {
            sentinel: tokio::sync::Mutex::new(sentinel),
            master: master.to_string(),
            node,
            db,
            current: Mutex::new((0, client)),
            last_refresh: Mutex::new(None),
            runtime: tokio::runtime::Handle::current(),
        }))
    }

    fn current(&self) -> (u64, redis::Client) {
        let current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        (current.0, current.1.clone())
    }

    fn client(&self) -> redis::Client {
        self.current().1
    }

    /// Asks the sentinels for the primary again, in the background, unless
    /// that was done a moment ago or is under way.
    fn refresh_soon(self: &Arc<Self>) {
        {
            let mut last = self.last_refresh.lock().unwrap_or_else(PoisonError::into_inner);
            if last.is_some_and(|at| at.elapsed() < SENTINEL_REFRESH_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        let resolver = self.clone();
        self.runtime.spawn(async move { resolver.refresh().await });
    }

    async fn refresh(&self) {
        let Ok(mut sentinel) = self.sentinel.try_lock() else { return };
        let found = tokio::time::timeout(
            CONNECT_DEADLINE,
            sentinel.async_master_for(&self.master, Some(&self.node)),
        )
        .await;
        let client = match found {
            Ok(Ok(client)) => client,
            Ok(Err(error)) => {
                tracing::warn!(%error, master = %self.master, "the sentinels did not name a primary");
                return;
            }
            Err(_) => {
                tracing::warn!(master = %self.master, "the sentinels did not answer in time");
                return;
            }
        };
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        let address = client.get_connection_info().addr().clone();
        if *current.1.get_connection_info().addr() != address {
            tracing::warn!(master = %self.master, %address, "Redis primary moved (Sentinel failover); reconnecting");
            *current = (current.0 + 1, client);
        }
    }
}

/// A connection to the primary that the sentinels name, which moves to the
/// new primary after a failover: a command that fails as a failover makes
/// commands fail has the sentinels asked again, and once they name another
/// address the next command goes there. The failed command is not retried
/// here (its caller decides, as for any Redis error).
#[derive(Clone)]
pub struct SentinelConnection {
    resolver: Arc<Resolver>,
    /// The primary's generation this connection is to, and the connection.
    current: Arc<Mutex<(u64, ConnectionManager)>>,
}

impl std::fmt::Debug for SentinelConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentinelConnection").field("master", &self.resolver.master).finish()
    }
}

impl SentinelConnection {
    /// The connection to the current primary, made anew (lazily, on the
    /// caller's runtime) when the primary changed.
    fn connection(&self) -> RedisResult<ConnectionManager> {
        let (generation, client) = self.resolver.current();
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if current.0 != generation {
            *current =
                (generation, ConnectionManager::new_lazy_with_config(client, manager_config())?);
        }
        Ok(current.1.clone())
    }

    fn after<T>(&self, answer: &RedisResult<T>) {
        if let Err(error) = answer
            && failover_sign(error)
        {
            self.resolver.refresh_soon();
        }
    }
}

/// An error a failover causes: the primary is gone or is a replica now.
fn failover_sign(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_timeout()
        || matches!(
            error.kind(),
            redis::ErrorKind::Server(
                redis::ServerErrorKind::ReadOnly | redis::ServerErrorKind::MasterDown
            )
        )
}

impl ConnectionLike for SentinelConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let mut connection = self.connection()?;
            let answer = connection.req_packed_command(cmd).await;
            self.after(&answer);
            answer
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let mut connection = self.connection()?;
            let answer = connection.req_packed_commands(pipeline, offset, count).await;
            self.after(&answer);
            answer
        })
    }

    fn get_db(&self) -> i64 {
        self.resolver.db
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_nodes_lists_the_reachable_masters() {
        let text = "\
07c3 127.0.0.1:30004@31004,host-4 slave e7d1 0 1426238317239 4 connected
67ed 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922
292f 127.0.0.1:30003@31003 myself,master - 0 0 3 connected 10923-16383
824f 127.0.0.1:30005@31005 master,fail - 0 0 5 connected
e7d1 [::1]:30001@31001,host-1 master - 0 1426238317741 1 connected 0-5460
";
        let found: Vec<(String, u16)> = masters(text)
            .into_iter()
            .filter_map(|n| match n {
                ScanNode::Address { host, port } => Some((host, port)),
                ScanNode::Any => None,
            })
            .collect();
        assert_eq!(
            found,
            [("127.0.0.1".into(), 30002), ("127.0.0.1".into(), 30003), ("::1".into(), 30001)]
        );
    }

    #[tokio::test]
    async fn in_a_cluster_keys_spread_a_scan_reaches_every_master_and_groups_share_a_slot() {
        use crate::state::test_servers::{RedisCluster, cli};
        let Some(cluster) = RedisCluster::shared() else { return };
        let connections =
            RedisConnections::connect_to(&Target::Cluster(cluster.nodes.clone()), 0).await.unwrap();
        assert!(connections.is_cluster());
        let mut connection = connections.shared();
        let prefix = format!("scan{}:", uuid::Uuid::new_v4().simple());
        for i in 0..60 {
            let _: () = redis::cmd("SET")
                .arg(format!("{prefix}cache:{i}"))
                .arg(i)
                .query_async(&mut connection)
                .await
                .unwrap();
        }
        // Single keys spread over every master.
        for port in &cluster.ports {
            let keys = cli(*port, &["--scan", "--pattern", &format!("{prefix}*")]);
            assert!(keys.lines().count() > 0, "no key on {port}");
        }
        let mut scan = Scan::start(&mut connection, &format!("{prefix}cache:*"), 7).await.unwrap();
        let mut found = Vec::new();
        while let Some(keys) = scan.next::<String>(&mut connection).await.unwrap() {
            found.extend(keys);
        }
        found.sort();
        found.dedup();
        assert_eq!(found.len(), 60);
        // One UNLINK of keys in many slots: the client splits it by slot.
        let removed: u64 =
            redis::cmd("UNLINK").arg(&found).query_async(&mut connection).await.unwrap();
        assert_eq!(removed, 60);

        // A group's keys share a slot; different groups need not.
        let slot = |key: String| {
            let port = cluster.ports[0];
            cli(port, &["cluster", "keyslot", &key]).trim().to_string()
        };
        let group = connections.group(&format!("{prefix}q"));
        assert_eq!(group, format!("{{{prefix}q}}"));
        assert_eq!(slot(format!("{group}:ready")), slot(format!("{group}:job:abc")));

        // Publishes to channels of many slots go in one pipeline.
        let mut pipe = redis::pipe();
        for channel in ["a", "b", "c", "d", "e"] {
            pipe.cmd("PUBLISH").arg(channel).arg("x").ignore();
        }
        pipe.query_async::<()>(&mut connection).await.unwrap();
        // And a subscriber on any node hears a publish sent through any other.
        let mut pubsub = connections.pubsub().await.unwrap();
        pubsub.subscribe(format!("{prefix}topic")).await.unwrap();
        let mut messages = pubsub.on_message();
        for _ in 0..3 {
            let mut pipe = redis::pipe();
            pipe.cmd("PUBLISH").arg(format!("{prefix}topic")).arg("hello").ignore();
            pipe.query_async::<()>(&mut connection).await.unwrap();
        }
        use futures_util::StreamExt;
        let message = tokio::time::timeout(Duration::from_secs(5), messages.next()).await.unwrap();
        assert_eq!(message.unwrap().get_payload::<String>().unwrap(), "hello");
    }

    #[tokio::test]
    async fn after_a_sentinel_failover_commands_go_to_the_new_primary() {
        use crate::state::test_servers::RedisSentinel;
        let Some(sentinel) = RedisSentinel::own() else { return };
        let target = Target::Sentinel {
            sentinels: vec![sentinel.sentinel_url.clone()],
            master: sentinel.master.to_string(),
        };
        let connections = RedisConnections::connect_to(&target, 0).await.unwrap();
        let mut connection = connections.shared();
        let _: () =
            redis::cmd("SET").arg("k").arg("before").query_async(&mut connection).await.unwrap();
        let sentinel = std::sync::Arc::new(sentinel);
        let failing = sentinel.clone();
        let new_primary = tokio::task::spawn_blocking(move || failing.fail_over()).await.unwrap();
        // Writes fail for a moment (or land on the old primary until the
        // sentinel turns it into a replica), then go to the new primary.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut n = 0;
        loop {
            n += 1;
            let value = format!("after-{n}");
            let set: RedisResult<()> =
                redis::cmd("SET").arg("k").arg(&value).query_async(&mut connection).await;
            let on_new = crate::state::test_servers::cli(new_primary, &["get", "k"]);
            if set.is_ok() && on_new.trim() == value {
                break;
            }
            assert!(Instant::now() < deadline, "no write reached {new_primary}: {set:?}, {on_new}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // From then on every write goes there.
        let _: () =
            redis::cmd("SET").arg("k").arg("last").query_async(&mut connection).await.unwrap();
        let on_new = crate::state::test_servers::cli(new_primary, &["get", "k"]);
        assert_eq!(on_new.trim(), "last");
    }

    #[test]
    fn a_pipeline_of_publishes_only_is_told_apart() {
        let mut publishes = redis::pipe();
        publishes.cmd("PUBLISH").arg("a").arg("1").cmd("publish").arg("b").arg("2");
        assert!(only_publish(&publishes));
        let mut mixed = redis::pipe();
        mixed.cmd("PUBLISH").arg("a").arg("1").cmd("SET").arg("k").arg("v");
        assert!(!only_publish(&mixed));
    }
}
