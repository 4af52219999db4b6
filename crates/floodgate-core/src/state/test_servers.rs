//! Redis deployments a test starts for itself on loopback ports: a Redis
//! Cluster of three masters, and a primary with a replica and a sentinel.
//! Used by this crate's tests and, through `#[path]`, by the API tests.
//! Without a `redis-server` binary each returns `None` and prints why.
//! (The API tests' `mod` line carries the lint expectations for unwraps
//! and prints, which this crate's test build allows anyway.)

use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `redis-cli -p port args…`'s output; empty when it fails.
pub fn cli(port: u16, args: &[&str]) -> String {
    Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn wait_for(what: &str, done: impl FnMut() -> bool) {
    assert!(within(Duration::from_secs(30), done), "{what} did not happen in 30 s");
}

/// Whether `done` came true within `limit`.
fn within(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

fn available() -> bool {
    let found = Command::new("redis-server").arg("--version").output().is_ok();
    if !found {
        eprintln!("skipped: no redis-server binary");
    }
    found
}

/// Servers killed when dropped, and their directory, removed after them.
#[derive(Debug)]
struct Children(Vec<Child>, Option<tempfile::TempDir>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
        drop(self.1.take());
    }
}

/// Starts `redis-server args…`. With `outlive_guard`, the server runs under
/// a shell that kills it once this process is gone (for servers kept in a
/// static, which is never dropped).
fn server(args: &[String], outlive_guard: bool) -> Child {
    let mut command = if outlive_guard {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(
                "redis-server \"$@\" & pid=$!; \
                 while kill -0 $PPID 2>/dev/null; do sleep 0.5; done; kill $pid",
            )
            .arg("sh");
        c
    } else {
        Command::new("redis-server")
    };
    command.args(args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap()
}

fn base_args(port: u16, dir: &std::path::Path) -> Vec<String> {
    [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        &dir.display().to_string(),
    ]
    .iter()
    .map(|s| (*s).to_string())
    .collect()
}

/// A Redis Cluster of three masters, no replicas.
#[derive(Debug)]
pub struct RedisCluster {
    /// `redis://127.0.0.1:<port>` per master.
    pub nodes: Vec<String>,
    pub ports: Vec<u16>,
    _children: Children,
}

impl RedisCluster {
    /// A whole cluster; a port taken between choosing and binding it (they
    /// are chosen free, then released) fails an attempt, so up to three.
    fn start(outlive_guard: bool) -> RedisCluster {
        for _ in 0..2 {
            if let Some(cluster) = RedisCluster::try_start(outlive_guard) {
                return cluster;
            }
        }
        RedisCluster::try_start(outlive_guard).expect("a Redis Cluster in three attempts")
    }

    fn try_start(outlive_guard: bool) -> Option<RedisCluster> {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let mut children = Vec::new();
        for &port in &ports {
            let mut args = base_args(port, dir.path());
            let bus = free_port().to_string();
            let conf = format!("nodes-{port}.conf");
            for extra in [
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                &bus,
                "--cluster-config-file",
                &conf,
                "--cluster-node-timeout",
                "2000",
            ] {
                args.push(extra.to_string());
            }
            children.push(server(&args, outlive_guard));
        }
        let children = Children(children, None);
        for &port in &ports {
            if !within(Duration::from_secs(10), || cli(port, &["ping"]).trim() == "PONG") {
                eprintln!("a cluster node did not start on {port}; trying again on other ports");
                return None;
            }
        }
        let addresses: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        if !created.success() {
            eprintln!("redis-cli --cluster create failed; trying again on other ports");
            return None;
        }
        for &port in &ports {
            wait_for("the cluster being whole", || {
                let info = cli(port, &["cluster", "info"]);
                info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:3")
            });
        }
        let nodes = ports.iter().map(|p| format!("redis://127.0.0.1:{p}")).collect();
        // Outliving servers clean up nothing: keep the directory.
        let dir = if outlive_guard {
            let _ = dir.keep();
            None
        } else {
            Some(dir)
        };
        let mut children = children;
        children.1 = dir;
        Some(RedisCluster { nodes, ports, _children: children })
    }

    /// A cluster of this test's own, stopped when dropped.
    pub fn own() -> Option<RedisCluster> {
        available().then(|| RedisCluster::start(false))
    }

    /// The cluster this test process shares (each test under a prefix of
    /// its own); its servers stop when the process ends.
    pub fn shared() -> Option<&'static RedisCluster> {
        static SHARED: OnceLock<Option<RedisCluster>> = OnceLock::new();
        SHARED.get_or_init(|| available().then(|| RedisCluster::start(true))).as_ref()
    }

    /// The `[state]` lines of a node on this cluster.
    pub fn state_toml(&self, prefix: &str) -> String {
        let nodes: Vec<String> = self.nodes.iter().map(|n| format!("\"{n}\"")).collect();
        format!(
            "[state]\nbackend = \"redis\"\nredis_mode = \"cluster\"\nredis_nodes = [{}]\nredis_prefix = \"{prefix}\"\n",
            nodes.join(", ")
        )
    }
}

/// A primary, its replica and one sentinel that monitors it as `mymaster`.
#[derive(Debug)]
pub struct RedisSentinel {
    pub sentinel_url: String,
    pub master: &'static str,
    pub sentinel_port: u16,
    _children: Children,
}

impl RedisSentinel {
    pub fn own() -> Option<RedisSentinel> {
        if !available() {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let (primary, replica, sentinel) = (free_port(), free_port(), free_port());
        let mut children = vec![server(&base_args(primary, dir.path()), false)];
        let mut args = base_args(replica, dir.path());
        args.extend(["--replicaof".to_string(), "127.0.0.1".to_string(), primary.to_string()]);
        children.push(server(&args, false));
        wait_for("the replica in sync", || {
            cli(replica, &["info", "replication"]).contains("master_link_status:up")
        });
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {sentinel}\nbind 127.0.0.1\ndir {}\n\
                 sentinel monitor mymaster 127.0.0.1 {primary} 1\n\
                 sentinel down-after-milliseconds mymaster 1000\n\
                 sentinel failover-timeout mymaster 5000\n",
                dir.path().display()
            ),
        )
        .unwrap();
        children.push(
            Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        wait_for("the sentinel knowing the replica", || {
            let replicas = cli(sentinel, &["sentinel", "replicas", "mymaster"]);
            replicas.contains(&replica.to_string()) && !replicas.contains("s_down")
        });
        Some(RedisSentinel {
            sentinel_url: format!("redis://127.0.0.1:{sentinel}"),
            master: "mymaster",
            sentinel_port: sentinel,
            _children: Children(children, Some(dir)),
        })
    }

    /// The port the sentinel names as the primary's.
    pub fn primary_port(&self) -> u16 {
        let reply = cli(self.sentinel_port, &["sentinel", "get-master-addr-by-name", self.master]);
        reply.lines().nth(1).and_then(|p| p.trim().parse().ok()).unwrap_or(0)
    }

    /// `SENTINEL FAILOVER`, then waits until the old replica is the primary
    /// the sentinel names and answers as one. Blocking: run it off the
    /// runtime (`spawn_blocking`).
    pub fn fail_over(&self) -> u16 {
        let before = self.primary_port();
        wait_for("a failover accepted", || {
            cli(self.sentinel_port, &["sentinel", "failover", self.master]).trim() == "OK"
        });
        wait_for("the replica promoted", || {
            let now = self.primary_port();
            now != before && now != 0 && cli(now, &["info", "replication"]).contains("role:master")
        });
        self.primary_port()
    }

    pub fn state_toml(&self, prefix: &str) -> String {
        format!(
            "[state]\nbackend = \"redis\"\nredis_mode = \"sentinel\"\nredis_nodes = [\"{}\"]\nredis_sentinel_master = \"{}\"\nredis_prefix = \"{prefix}\"\n",
            self.sentinel_url, self.master
        )
    }
}
