//! A cluster on loopback, made of real processes: Redis, PostgreSQL (the
//! machine's server with a fresh database, or a private one the test can
//! stop), `floodgate mock-upstream`, three `floodgate serve` nodes, HAProxy
//! in front with the repository's `deploy/haproxy/haproxy.cfg`, and
//! `floodgate bench` as the client.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "the harness fails the test when a process cannot be driven"
)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The binary under test: `FLOODGATE_BIN` (CI points it at the release
/// build, the one the Dockerfile ships), else this build's.
pub fn bin() -> String {
    std::env::var("FLOODGATE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_floodgate").to_string())
}
pub const MASTER: &str = "cluster-master-key-0123456789";
const HAPROXY_CFG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/haproxy/haproxy.cfg");

/// One cluster at a time: each is five processes on two cores, and the
/// checks are about faults, not about competing for the CPU.
pub static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A free loopback port (bound, then released for the process to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Why a cluster test cannot run here, if it cannot.
pub fn missing_tools() -> Option<String> {
    for tool in ["redis-server", "haproxy", "psql"] {
        let found = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Some(format!("{tool} is not installed"));
        }
    }
    if std::env::var("FLOODGATE_TEST_DATABASE_URL").is_err() {
        return Some("FLOODGATE_TEST_DATABASE_URL is not set".into());
    }
    None
}

/// A child process whose output lines are kept (for failure messages).
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub lines: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    pub fn spawn(name: &str, command: &mut Command) -> Proc {
        command.stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        let mut child = command.spawn().unwrap_or_else(|e| panic!("{name} starts: {e}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        for reader in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let lines = lines.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(reader).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    lines.lock().unwrap().push(line);
                }
            });
        }
        Proc { name: name.to_string(), child, lines }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("the process runs")
    }

    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} {}", self.name);
    }

    /// Waits for the process to end, at most `limit`; its exit code.
    pub async fn wait(&mut self, limit: Duration) -> Option<i32> {
        let status = tokio::time::timeout(limit, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} did not exit within {limit:?}", self.name))
            .unwrap();
        status.code()
    }

    /// The last 40 lines, but for refusals by a limit (expected in bulk).
    pub fn log(&self) -> String {
        let lines = self.lines.lock().unwrap();
        let lines: Vec<&str> = lines
            .iter()
            .map(String::as_str)
            .filter(|line| !line.contains(r#""status":429"#))
            // HAProxy's lines of normal exchanges (termination state ----).
            .filter(|line| !(line.contains(" 200 ") && line.contains(" ---- ")))
            .collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

async fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "{what} is not listening on {port}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A Redis of the test's own, with an append-only file as a production
/// Redis holding a job queue has, so a restart keeps its data.
pub struct Redis {
    pub port: u16,
    dir: PathBuf,
    proc: Option<Proc>,
}

impl Redis {
    pub async fn start(dir: &Path) -> Redis {
        let dir = dir.join("redis");
        std::fs::create_dir_all(&dir).unwrap();
        let mut redis = Redis { port: free_port(), dir, proc: None };
        redis.up().await;
        redis
    }

    pub async fn up(&mut self) {
        let mut command = Command::new("redis-server");
        command.args([
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
        ]);
        command.arg("--dir").arg(&self.dir);
        self.proc = Some(Proc::spawn("redis", &mut command));
        wait_for_port(self.port, "redis").await;
    }

    /// `SHUTDOWN` (SIGTERM): Redis writes its append-only file and exits.
    pub async fn stop(&mut self) {
        let mut proc = self.proc.take().expect("redis runs");
        proc.signal("TERM");
        proc.wait(Duration::from_secs(10)).await;
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

/// Where the nodes keep durable data.
pub enum Postgres {
    /// A fresh database on the machine's server (FLOODGATE_TEST_DATABASE_URL).
    Shared { url: String },
    /// A server of the test's own (initdb as the `postgres` user), which the
    /// test may stop and start.
    Private { port: u16, data: PathBuf, running: bool },
}

impl Postgres {
    pub async fn fresh_database() -> Postgres {
        let base = std::env::var("FLOODGATE_TEST_DATABASE_URL").unwrap();
        let name = format!("fg_cluster_{:016x}", rand_u64());
        psql(&base, &format!("CREATE DATABASE {name}")).await;
        let (root, _) = base.rsplit_once('/').unwrap();
        Postgres::Shared { url: format!("{root}/{name}") }
    }

    /// A private server; `None` (with the reason) when this machine cannot
    /// run one (no initdb, or no `postgres` user to run it as).
    pub async fn private(dir: &Path) -> Result<Postgres, String> {
        let bin = pg_bin().ok_or("no PostgreSQL server binaries under /usr/lib/postgresql")?;
        let root = dir.join("pg");
        std::fs::create_dir_all(&root).unwrap();
        let chown = std::process::Command::new("chown")
            .args(["-R", "postgres"])
            .arg(&root)
            .status()
            .map_err(|e| e.to_string())?;
        if !chown.success() {
            return Err("cannot hand a directory to the postgres user".into());
        }
        let data = root.join("data");
        let init = Command::from(as_postgres(&bin.join("initdb")))
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "--no-sync"])
            .output()
            .await
            .map_err(|e| e.to_string())?;
        if !init.status.success() {
            return Err(format!("initdb failed: {}", String::from_utf8_lossy(&init.stderr)));
        }
        let mut pg = Postgres::Private { port: free_port(), data, running: false };
        pg.start().await;
        Ok(pg)
    }

    pub fn url(&self) -> String {
        match self {
            Postgres::Shared { url } => url.clone(),
            Postgres::Private { port, .. } => {
                format!("postgres://postgres@127.0.0.1:{port}/postgres")
            }
        }
    }

    pub async fn start(&mut self) {
        let Postgres::Private { port, data, running } = self else {
            panic!("only a private server can be started");
        };
        let options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off",
            data.parent().unwrap().display()
        );
        let out = Command::from(pg_ctl(data))
            .args(["-o", &options, "-l"])
            .arg(data.parent().unwrap().join("log"))
            .args(["-w", "start"])
            .output()
            .await
            .unwrap();
        assert!(out.status.success(), "pg_ctl start: {}", String::from_utf8_lossy(&out.stderr));
        *running = true;
    }

    /// A fast shutdown: open connections are ended, new ones refused.
    pub async fn stop(&mut self) {
        let Postgres::Private { data, running, .. } = self else {
            panic!("only a private server can be stopped");
        };
        let out =
            Command::from(pg_ctl(data)).args(["-m", "fast", "-w", "stop"]).output().await.unwrap();
        assert!(out.status.success(), "pg_ctl stop: {}", String::from_utf8_lossy(&out.stderr));
        *running = false;
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        match self {
            Postgres::Private { data, running: true, .. } => {
                let _ = pg_ctl(data).args(["-m", "immediate", "stop"]).output();
            }
            Postgres::Private { .. } => {}
            Postgres::Shared { url } => {
                let base = std::env::var("FLOODGATE_TEST_DATABASE_URL").unwrap();
                let name = url.rsplit('/').next().unwrap().to_string();
                let _ = std::process::Command::new("psql")
                    .arg(&base)
                    .args(["-qc", &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")])
                    .output();
            }
        }
    }
}

fn pg_bin() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop()
}

/// `program`, run as the `postgres` user (PostgreSQL refuses root).
fn as_postgres(program: &Path) -> std::process::Command {
    let mut command = std::process::Command::new("runuser");
    command.args(["-u", "postgres", "--"]).arg(program);
    command
}

/// `pg_ctl -D data`, run as the `postgres` user.
fn pg_ctl(data: &Path) -> std::process::Command {
    let mut command = as_postgres(&pg_bin().expect("PostgreSQL's server binaries").join("pg_ctl"));
    command.arg("-D").arg(data);
    command
}

async fn psql(url: &str, sql: &str) {
    let out = Command::new("psql").arg(url).args(["-qc", sql]).output().await.unwrap();
    assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
}

pub fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    hasher.write_u128(now.map_or(0, |d| d.as_nanos()));
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// What the nodes' config varies by.
pub struct NodeOptions {
    /// Delay of the mock's every answer (and before a stream's first chunk).
    pub latency_ms: u64,
    /// Gap between a streamed answer's chunks (20 chunks).
    pub chunk_delay_ms: u64,
    pub shutdown_grace: &'static str,
    /// The mock's own per-key limit (`--rpm`), refusing beyond with 429s.
    pub mock_rpm: Option<u32>,
    /// `rpm` of the provider key in the nodes' config.
    pub key_rpm: Option<u32>,
}

impl Default for NodeOptions {
    fn default() -> Self {
        NodeOptions {
            latency_ms: 20,
            chunk_delay_ms: 0,
            shutdown_grace: "15s",
            mock_rpm: None,
            key_rpm: None,
        }
    }
}

pub struct Node {
    pub port: u16,
    config: PathBuf,
    dir: PathBuf,
    pub proc: Option<Proc>,
}

impl Node {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub async fn start(&mut self) {
        let mut command = Command::new(bin());
        command
            .args(["serve", "--config"])
            .arg(&self.config)
            .current_dir(&self.dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default());
        self.proc = Some(Proc::spawn(&format!("node:{}", self.port), &mut command));
        let deadline = Instant::now() + Duration::from_secs(30);
        let http = reqwest::Client::new();
        loop {
            let ready = http
                .get(format!("{}/health/ready", self.url()))
                .timeout(Duration::from_secs(1))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {} is not ready: {}",
                self.port,
                self.proc.as_ref().unwrap().log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn proc(&mut self) -> &mut Proc {
        self.proc.as_mut().expect("the node runs")
    }
}

pub struct Cluster {
    pub redis: Redis,
    pub pg: Postgres,
    pub nodes: Vec<Node>,
    pub lb_port: u16,
    pub http: reqwest::Client,
    _mock: Proc,
    _haproxy: Proc,
    /// Last, so it is removed after everything that runs in it has stopped
    /// (fields drop in order): a private PostgreSQL is stopped with
    /// `pg_ctl -D` on a data directory that must still be there.
    pub dir: tempfile::TempDir,
}

impl Cluster {
    /// Three nodes on `pg` (made with [`Cluster::dir`]'s directory) and a
    /// new Redis, behind HAProxy.
    pub async fn start(dir: tempfile::TempDir, pg: Postgres, options: NodeOptions) -> Cluster {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let redis = Redis::start(dir.path()).await;
        let mock_port = free_port();
        let mut mock = Command::new(bin());
        mock.args([
            "mock-upstream",
            "--port",
            &mock_port.to_string(),
            "--latency-ms",
            &options.latency_ms.to_string(),
            "--chunk-delay-ms",
            &options.chunk_delay_ms.to_string(),
        ]);
        if let Some(rpm) = options.mock_rpm {
            mock.args(["--rpm", &rpm.to_string()]);
        }
        let mock = Proc::spawn("mock-upstream", &mut mock);
        wait_for_port(mock_port, "mock-upstream").await;

        let mut nodes = Vec::new();
        for i in 1..=3 {
            let port = free_port();
            let node_dir = dir.path().join(format!("node{i}"));
            std::fs::create_dir_all(&node_dir).unwrap();
            let config = node_dir.join("floodgate.toml");
            std::fs::write(
                &config,
                node_config(port, &redis.url(), &pg.url(), mock_port, &options),
            )
            .unwrap();
            nodes.push(Node { port, config, dir: node_dir, proc: None });
        }
        // The first creates the schema; the others then start together.
        nodes[0].start().await;
        futures_util::future::join_all(nodes[1..].iter_mut().map(Node::start)).await;

        let lb_port = free_port();
        let mut haproxy = Command::new("haproxy");
        haproxy
            .args(["-db", "-f", HAPROXY_CFG])
            .env("FLOODGATE_LB_BIND", format!("127.0.0.1:{lb_port}"))
            .current_dir(dir.path());
        for (i, node) in nodes.iter().enumerate() {
            haproxy.env(format!("FLOODGATE_NODE_{}", i + 1), format!("127.0.0.1:{}", node.port));
        }
        let haproxy = Proc::spawn("haproxy", &mut haproxy);
        let cluster = Cluster {
            dir,
            redis,
            pg,
            nodes,
            lb_port,
            http: reqwest::Client::new(),
            _mock: mock,
            _haproxy: haproxy,
        };
        if tokio::time::timeout(Duration::from_secs(10), wait_for_port(lb_port, "haproxy"))
            .await
            .is_err()
        {
            panic!("haproxy does not listen: {}", cluster._haproxy.log());
        }
        // Every node is in the pool (two good checks each).
        cluster
            .eventually("haproxy serves", Duration::from_secs(10), || async {
                cluster.get(&cluster.lb(), "/health/ready", None).await.0 == 200
            })
            .await;
        // Warm, as nodes in service are: pools, Redis connections, the
        // token counter's tables, through the limiter and the ledger.
        let (_, warm) = cluster.create_key(json!({"name": "warm-up", "rpm": 1_000_000})).await;
        let report =
            cluster.bench("warm-up", &warm, &["--rate", "100", "--duration", "2s"]).report().await;
        let (sent, ok, _) = totals(&report);
        assert_eq!(ok, sent, "the warm-up is served: {report}\n{}", cluster.logs());
        cluster
    }

    /// The last lines of HAProxy's and every node's output, for a failure.
    pub fn logs(&self) -> String {
        let mut text = format!("--- haproxy\n{}\n", self._haproxy.log());
        for node in &self.nodes {
            if let Some(proc) = &node.proc {
                text.push_str(&format!("--- {}\n{}\n", proc.name, proc.log()));
            }
        }
        text
    }

    pub fn lb(&self) -> String {
        format!("http://127.0.0.1:{}", self.lb_port)
    }

    pub async fn get(&self, base: &str, path: &str, key: Option<&str>) -> (u16, Value) {
        let mut request = self.http.get(format!("{base}{path}")).timeout(Duration::from_secs(5));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                (status, response.json().await.unwrap_or(Value::Null))
            }
            Err(_) => (0, Value::Null),
        }
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        base: &str,
        path: &str,
        key: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{base}{path}"))
            .bearer_auth(key)
            .timeout(Duration::from_secs(10));
        if let Some(body) = body {
            request = request.json(&body);
        }
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                (status, response.json().await.unwrap_or(Value::Null))
            }
            Err(_) => (0, Value::Null),
        }
    }

    /// A node's `/metrics` text.
    pub async fn metrics(&self, node: &Node) -> String {
        let response = self.http.get(format!("{}/metrics", node.url())).send().await;
        response.expect("metrics answer").text().await.expect("metrics text")
    }

    /// A virtual key made through the load balancer: `(id, key)`.
    pub async fn create_key(&self, body: Value) -> (String, String) {
        let (status, created) =
            self.send(reqwest::Method::POST, &self.lb(), "/admin/keys", MASTER, Some(body)).await;
        assert_eq!(status, 201, "{created}");
        let id = created["id"].as_str().unwrap().to_string();
        let key = created["key"].as_str().unwrap().to_string();
        // Every node knows it (each syncs keys from the database); asked on
        // a route that counts against no limit.
        for node in &self.nodes {
            self.eventually("the new key reaches every node", Duration::from_secs(5), || async {
                self.get(&node.url(), "/v1/models", Some(&key)).await.0 == 200
            })
            .await;
        }
        (id, key)
    }

    pub async fn chat(&self, base: &str, key: &str) -> u16 {
        let body = json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}]});
        self.send(reqwest::Method::POST, base, "/v1/chat/completions", key, Some(body)).await.0
    }

    /// The ledger's totals for one key (on any node that answers).
    pub async fn usage(&self, key_id: &str) -> Value {
        let (status, body) =
            self.get(&self.lb(), &format!("/admin/usage?key_id={key_id}"), Some(MASTER)).await;
        assert_eq!(status, 200, "{body}");
        body["totals"].clone()
    }

    /// Asks `check` until it gives a value, at most `limit`.
    pub async fn until<T, F, Fut>(&self, what: &str, limit: Duration, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(value) = check().await {
                return value;
            }
            assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn eventually<F, Fut>(&self, what: &str, limit: Duration, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = Instant::now() + limit;
        while !check().await {
            assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts `floodgate bench` against the load balancer.
    pub fn bench(&self, name: &str, key: &str, args: &[&str]) -> Bench {
        let json = self.dir.path().join(format!("{name}.json"));
        let mut command = Command::new(bin());
        command
            .args(["bench", "--url", &format!("{}/v1/chat/completions", self.lb())])
            .args(["--model", "chat", "--key", key, "--quiet", "--timeout", "30s", "--json"])
            .arg(&json)
            .args(args);
        Bench { proc: Proc::spawn(&format!("bench:{name}"), &mut command), json }
    }
}

fn node_config(port: u16, redis: &str, pg: &str, mock_port: u16, options: &NodeOptions) -> String {
    format!(
        r#"listen = "127.0.0.1:{port}"
master_key = "{MASTER}"

[server]
workers = 1
shutdown_grace = "{grace}"
# HAProxy takes a node out after three failed checks a second apart.
drain_delay = "4s"

[log]
format = "json"
level = "warn"

[state]
backend = "redis"
redis_url = "{redis}"
redis_prefix = "fg:"

[database]
url = "{pg}"
max_connections = 4
acquire_timeout = "1s"
ledger_spill_path = "ledger.spill"

[queue]
workers = 2
lease = "3s"
poll_interval = "100ms"
retry_base = "200ms"
retry_max = "1s"

[cache]
enabled = false

[realtime]
enabled = false

[routing]
retries = 1
backoff_base = "5ms"
backoff_max = "20ms"

[[providers]]
name = "mock"
kind = "openai-compatible"
base_url = "http://127.0.0.1:{mock_port}/v1"
{keys}

[[models]]
name = "chat"
targets = ["mock/gpt-4o-mini"]
"#,
        grace = options.shutdown_grace,
        keys = match options.key_rpm {
            None => r#"keys = ["mock-key-cluster-0", "mock-key-cluster-1"]"#.to_string(),
            Some(rpm) => format!("keys = [\"mock-key-cluster-0\"]\nrpm = {rpm}"),
        },
    )
}

/// A running `floodgate bench`.
pub struct Bench {
    pub proc: Proc,
    json: PathBuf,
}

impl Bench {
    /// Waits for it to finish and returns its JSON report.
    pub async fn report(mut self) -> Value {
        let code = self.proc.wait(Duration::from_secs(120)).await;
        assert_eq!(code, Some(0), "bench failed: {}", self.proc.log());
        serde_json::from_slice(&std::fs::read(&self.json).unwrap()).unwrap()
    }
}

/// `(sent, ok, errors)` of a bench report.
pub fn totals(report: &Value) -> (u64, u64, u64) {
    let t = &report["totals"];
    let n = |k: &str| t[k].as_u64().unwrap_or_else(|| panic!("totals.{k} in {t}"));
    (n("sent"), n("ok"), n("errors"))
}
