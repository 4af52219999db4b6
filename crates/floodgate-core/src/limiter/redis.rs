//! The limiter of a cluster: every counter lives in Redis, under one key
//! prefix, so all nodes share them.
//!
//! A whole admission is one Lua script, so one round trip and atomic: it
//! takes the time from Redis (`TIME`; Redis 7 replicates a script's effects,
//! so this is safe), computes every GCRA check, the slot and the budget, and
//! writes only if all pass. Counters are written with `PX` set to the time
//! until their bucket is whole again, so idle keys vanish by themselves; a
//! slot is a sorted set of lease ids scored by their expiry, so the slot of
//! a node that died frees itself. Times inside Redis are whole microseconds
//! (a double holds those exactly), lease and TTLs milliseconds.
//!
//! Every other call (`adjust`, `spend`, `seed_spend`, `release`, `ping`) is
//! also one round trip. [`RedisLimiter::round_trips`] counts them, so tests
//! and metrics can hold the limiter to that.
//!
//! The script names keys of several counters, and one admission takes
//! counters of different owners together (the client IP's, the key's, the
//! end user's, the key's slot and budget), while a counter such as an IP's
//! is shared by every key: no tag of one owner fits every admission. So in
//! a Redis Cluster every limiter key is under one hash tag,
//! `{<prefix>limits}:` (one slot, one master); a single Redis keeps the
//! plain `<prefix>` names.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::state::redis::{Lua, RedisConnection, RedisConnections, is_noscript};
use ::redis::{Cmd, FromRedisValue, Pipeline, RedisError, Value};
use async_trait::async_trait;

use super::{
    BudgetCheck, Check, LimitState, Limiter, LimiterError, Rate, Refusal, Settlement, Slot, Verdict,
};

/// One admission. KEYS: the checks' counters, then the slot's set and the
/// budget's counter when there are. ARGV: the number of checks, whether
/// there is a slot (`1`/`0`), whether there is a budget; then per check its
/// limit, period (µs) and cost; then the slot's max, lease id and lease
/// (ms); then the budget's max and estimate.
///
/// Returns `{status, index, retry_after µs, running, spent, reset µs per
/// check…}`; status 0 allowed, 1 limit, 2 cost above the limit, 3
/// concurrency, 4 budget; `index` is 0-based; -1 where it does not apply.
/// `spent` is a string: Redis would truncate a number to an integer.
const ADMIT: &str = r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local n = tonumber(ARGV[1])
local status, index, retry, running, spent = 0, -1, -1, -1, 0
local before, after, current = {}, {}, {}
for i = 1, n do
  local key = KEYS[i]
  local a = 3 + (i - 1) * 3
  local limit, period, cost = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local tat = math.max(tonumber(redis.call('GET', key) or 0), now)
  before[i] = tat
  -- A key checked twice: the later check comes after the earlier's cost.
  local from = current[key] or tat
  local step = 0
  if limit > 0 then step = math.floor(cost * period / limit) end
  after[i] = from + step
  current[key] = after[i]
  if status == 0 then
    if cost > limit then
      status, index = 2, i - 1
    elseif after[i] - now > period then
      status, index, retry = 1, i - 1, after[i] - now - period
    end
  end
end
local k, a = n, 3 + n * 3
local now_ms = math.floor(now / 1000)
local slot, lease_id, lease_ms
if ARGV[2] == '1' then
  k = k + 1
  slot, lease_id, lease_ms = KEYS[k], ARGV[a + 2], tonumber(ARGV[a + 3])
  local max = tonumber(ARGV[a + 1])
  a = a + 3
  redis.call('ZREMRANGEBYSCORE', slot, '-inf', now_ms)
  local count = redis.call('ZCARD', slot)
  if status == 0 and count >= max then status, running = 3, count end
end
if ARGV[3] == '1' then
  local max, estimate = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  spent = tonumber(redis.call('GET', KEYS[k + 1]) or 0)
  if status == 0 and (spent >= max or spent + estimate > max) then status = 4 end
end
if status == 0 then
  -- In order, so a key checked twice ends with its last (cumulative) tat.
  for i = 1, n do
    local wait = after[i] - now
    if wait > 0 then
      redis.call('SET', KEYS[i], string.format('%d', after[i]), 'PX', math.ceil(wait / 1000))
    end
  end
  if slot then
    redis.call('ZADD', slot, now_ms + lease_ms, lease_id)
    if redis.call('PTTL', slot) < lease_ms then redis.call('PEXPIRE', slot, lease_ms) end
  end
end
local out = {status, index, retry, running, string.format('%.17g', spent)}
for i = 1, n do
  if status == 0 then out[5 + i] = after[i] - now else out[5 + i] = before[i] - now end
end
return out
";

/// Moves a counter's tat by `delta · T`: up without bound, down no further
/// than now (a refund never fills the bucket past full). ARGV: limit,
/// period (µs), delta.
const ADJUST: &str = r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local limit, period, delta = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if limit <= 0 then return 0 end
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or 0), now)
local moved = math.floor(math.abs(delta) * period / limit)
if delta >= 0 then tat = tat + moved else tat = math.max(tat - moved, now) end
if tat > now then
  redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000))
else
  redis.call('DEL', KEYS[1])
end
return 0
";

pub struct RedisLimiter {
    connections: RedisConnections,
    prefix: String,
    admit: Lua,
    adjust: Lua,
    round_trips: AtomicU64,
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("prefix", &self.prefix)
            .field("round_trips", &self.round_trips())
            .finish_non_exhaustive()
    }
}

fn failed(error: RedisError) -> LimiterError {
    LimiterError { backend: "redis", message: error.to_string() }
}

fn invalid(message: impl Into<String>) -> LimiterError {
    LimiterError { backend: "redis", message: message.into() }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// A dollar amount as Lua's `tonumber` reads it (Rust never writes an
/// exponent; infinities become the largest double).
fn usd(value: f64) -> String {
    if value.is_finite() { value.to_string() } else { value.clamp(f64::MIN, f64::MAX).to_string() }
}

impl RedisLimiter {
    /// Connects to `url` and loads the scripts; every key is put under
    /// `prefix`. Fails within about two seconds when Redis does not answer.
    pub async fn connect(url: &str, prefix: &str) -> Result<RedisLimiter, LimiterError> {
        RedisLimiter::connect_for_workers(url, prefix, 0).await
    }

    /// As [`RedisLimiter::connect`], with a connection of its own for each
    /// of `workers` serving workers.
    pub async fn connect_for_workers(
        url: &str,
        prefix: &str,
        workers: usize,
    ) -> Result<RedisLimiter, LimiterError> {
        let connections = RedisConnections::connect(url, workers)
            .await
            .map_err(|e| invalid(format!("{url}: {e}")))?;
        RedisLimiter::with_connections(connections, prefix).await
    }

    /// As [`RedisLimiter::connect`], on connections made already.
    pub async fn with_connections(
        connections: RedisConnections,
        prefix: &str,
    ) -> Result<RedisLimiter, LimiterError> {
        let prefix = if connections.is_cluster() {
            format!("{}:", connections.group(&format!("{prefix}limits")))
        } else {
            prefix.to_owned()
        };
        let limiter = RedisLimiter {
            connections,
            prefix,
            admit: Lua::new(ADMIT),
            adjust: Lua::new(ADJUST),
            round_trips: AtomicU64::new(0),
        };
        let mut load = ::redis::pipe();
        for lua in [&limiter.admit, &limiter.adjust] {
            load.cmd("SCRIPT").arg("LOAD").arg(lua.code()).ignore();
        }
        limiter.pipeline::<()>(&load).await?;
        Ok(limiter)
    }

    /// Requests sent to Redis since the limiter was made (a pipeline is one).
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    fn key(&self, key: &str) -> String {
        let mut prefixed = String::with_capacity(self.prefix.len() + key.len());
        prefixed.push_str(&self.prefix);
        prefixed.push_str(key);
        prefixed
    }

    /// This thread's connection: its worker's, else the shared one.
    async fn connection(&self) -> Result<RedisConnection, RedisError> {
        self.connections.get().await
    }

    /// One command, one round trip.
    async fn command<T: FromRedisValue>(&self, command: &Cmd) -> Result<T, RedisError> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        command.query_async(&mut self.connection().await?).await
    }

    /// One pipeline, one round trip.
    async fn pipeline<T: FromRedisValue>(&self, pipeline: &Pipeline) -> Result<T, LimiterError> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        pipeline.query_async(&mut self.connection().await.map_err(failed)?).await.map_err(failed)
    }

    /// Runs a script by its hash; only if Redis lost it (a restart, `SCRIPT
    /// FLUSH`) a second round trip sends the body, which Redis caches again.
    async fn eval<T: FromRedisValue>(
        &self,
        lua: &Lua,
        keys: &[String],
        args: &[String],
    ) -> Result<T, LimiterError> {
        let call = |body: bool| {
            let mut command = lua.command(body);
            command.arg(keys.len()).arg(keys).arg(args);
            command
        };
        match self.command(&call(false)).await {
            Err(error) if is_noscript(&error) => self.command(&call(true)).await.map_err(failed),
            answer => answer.map_err(failed),
        }
    }
}

/// An integer of the admit script's answer.
fn int(value: &Value) -> Result<i64, LimiterError> {
    match value {
        Value::Int(n) => Ok(*n),
        other => Err(invalid(format!("admit script answered {other:?} where a number belongs"))),
    }
}

fn non_negative_micros(value: &Value) -> Result<Duration, LimiterError> {
    Ok(Duration::from_micros(u64::try_from(int(value)?).unwrap_or(0)))
}

/// Reads the admit script's answer (see [`ADMIT`]).
fn verdict(answer: &[Value], checks: &[Check]) -> Result<Verdict, LimiterError> {
    let [status, index, retry, running, spent, resets @ ..] = answer else {
        return Err(invalid(format!("admit script answered {} values", answer.len())));
    };
    if resets.len() != checks.len() {
        return Err(invalid(format!(
            "admit script answered {} states for {} checks",
            resets.len(),
            checks.len()
        )));
    }
    let index = || usize::try_from(int(index)?).map_err(|_| invalid("admit script: no index"));
    let refusal = match int(status)? {
        0 => None,
        1 => {
            Some(Refusal::Limit { index: index()?, retry_after: Some(non_negative_micros(retry)?) })
        }
        2 => Some(Refusal::Limit { index: index()?, retry_after: None }),
        3 => {
            Some(Refusal::Concurrency { running: u32::try_from(int(running)?).unwrap_or(u32::MAX) })
        }
        4 => {
            let spent = match spent {
                Value::BulkString(bytes) => {
                    std::str::from_utf8(bytes).ok().and_then(|s| s.parse().ok())
                }
                _ => None,
            };
            let spent_usd =
                spent.ok_or_else(|| invalid(format!("admit script: spend {spent:?}")))?;
            Some(Refusal::Budget { spent_usd })
        }
        other => return Err(invalid(format!("admit script: status {other}"))),
    };
    let states = checks
        .iter()
        .zip(resets)
        .map(|(check, reset)| Ok(LimitState::at(check.rate, non_negative_micros(reset)?)))
        .collect::<Result<_, LimiterError>>()?;
    Ok(Verdict { states, refusal })
}

#[async_trait]
impl Limiter for RedisLimiter {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn admit(
        &self,
        checks: &[Check],
        slot: Option<&Slot>,
        budget: Option<&BudgetCheck>,
    ) -> Result<Verdict, LimiterError> {
        let flag = |present: bool| if present { "1" } else { "0" }.to_owned();
        let mut keys = Vec::with_capacity(checks.len() + 2);
        let mut args = Vec::with_capacity(3 + 3 * checks.len() + 5);
        args.extend([checks.len().to_string(), flag(slot.is_some()), flag(budget.is_some())]);
        for check in checks {
            keys.push(self.key(&check.key));
            args.extend([
                check.rate.limit.to_string(),
                micros(check.rate.period).to_string(),
                check.cost.to_string(),
            ]);
        }
        if let Some(slot) = slot {
            keys.push(self.key(&slot.key));
            args.extend([
                slot.max.to_string(),
                slot.lease_id.clone(),
                // A lease of 0 ms would expire the set as it is written.
                millis(slot.lease).max(1).to_string(),
            ]);
        }
        if let Some(budget) = budget {
            keys.push(self.key(&budget.key));
            args.extend([usd(budget.max_usd), usd(budget.estimate_usd)]);
        }
        let answer: Vec<Value> = self.eval(&self.admit, &keys, &args).await?;
        verdict(&answer, checks)
    }

    async fn adjust(&self, key: &str, rate: Rate, delta: i64) -> Result<(), LimiterError> {
        let args = [rate.limit.to_string(), micros(rate.period).to_string(), delta.to_string()];
        self.eval::<()>(&self.adjust, &[self.key(key)], &args).await
    }

    async fn release(&self, slot: &Slot) -> Result<(), LimiterError> {
        let mut command = ::redis::cmd("ZREM");
        command.arg(self.key(&slot.key)).arg(&slot.lease_id);
        self.command::<()>(&command).await.map_err(failed)
    }

    async fn spend(
        &self,
        budget_key: &str,
        usd: f64,
        ttl: Option<Duration>,
    ) -> Result<(), LimiterError> {
        let key = self.key(budget_key);
        let mut pipeline = ::redis::pipe();
        pipeline.atomic().cmd("INCRBYFLOAT").arg(&key).arg(self::usd(usd)).ignore();
        if let Some(ttl) = ttl {
            pipeline.cmd("PEXPIRE").arg(&key).arg(millis(ttl).max(1)).ignore();
        }
        self.pipeline(&pipeline).await
    }

    async fn seed_spend(
        &self,
        budget_key: &str,
        usd: f64,
        ttl: Option<Duration>,
    ) -> Result<f64, LimiterError> {
        let key = self.key(budget_key);
        let mut pipeline = ::redis::pipe();
        let set = pipeline.atomic().cmd("SET").arg(&key).arg(self::usd(usd)).arg("NX");
        if let Some(ttl) = ttl {
            set.arg("PX").arg(millis(ttl).max(1));
        }
        set.ignore().cmd("GET").arg(&key);
        let (spent,): (f64,) = self.pipeline(&pipeline).await?;
        Ok(spent)
    }

    /// One pipeline: the adjust script per token counter, INCRBYFLOAT (and
    /// PEXPIRE) for the spend, ZREM per slot. If Redis lost the script, the
    /// pipeline fails as a whole and the parts are sent one by one.
    async fn settle(&self, settlement: &Settlement) -> Result<(), LimiterError> {
        if settlement.is_empty() {
            return Ok(());
        }
        let mut pipeline = ::redis::pipe();
        for (key, rate, delta) in &settlement.adjust {
            pipeline
                .cmd("EVALSHA")
                .arg(self.adjust.hash())
                .arg(1)
                .arg(self.key(key))
                .arg(rate.limit)
                .arg(micros(rate.period))
                .arg(*delta)
                .ignore();
        }
        if let Some((key, usd, ttl)) = &settlement.spend {
            let key = self.key(key);
            pipeline.cmd("INCRBYFLOAT").arg(&key).arg(self::usd(*usd)).ignore();
            if let Some(ttl) = ttl {
                pipeline.cmd("PEXPIRE").arg(&key).arg(millis(*ttl).max(1)).ignore();
            }
        }
        for slot in &settlement.release {
            pipeline.cmd("ZREM").arg(self.key(&slot.key)).arg(&slot.lease_id).ignore();
        }
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let mut connection = self.connection().await.map_err(failed)?;
        match pipeline.query_async::<()>(&mut connection).await {
            Err(error) if is_noscript(&error) => {
                for (key, rate, delta) in &settlement.adjust {
                    self.adjust(key, *rate, *delta).await?;
                }
                Ok(())
            }
            answer => answer.map_err(failed),
        }
    }

    async fn ping(&self) -> Result<(), LimiterError> {
        self.command::<()>(&::redis::cmd("PING")).await.map_err(failed)
    }
}

#[cfg(test)]
mod tests {
    use std::process::{Child, Command, Stdio};
    use std::time::Instant;

    use super::*;
    use crate::limiter::tests::check;

    /// A `redis-server` of this test's own, killed when dropped.
    struct Server {
        child: Child,
        url: String,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    impl Server {
        /// `None` (with a visible line) when there is no `redis-server` binary.
        fn start() -> Option<Server> {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .unwrap()
                .port();
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            match child {
                Ok(child) => Some(Server { child, url: format!("redis://127.0.0.1:{port}") }),
                Err(error) => {
                    eprintln!("skipped: redis-server could not start ({error})");
                    None
                }
            }
        }

        async fn limiter(&self, prefix: &str) -> RedisLimiter {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match RedisLimiter::connect(&self.url, prefix).await {
                    Ok(limiter) => return limiter,
                    Err(error) if Instant::now() > deadline => panic!("{error}"),
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        }

        async fn raw(&self) -> ::redis::aio::MultiplexedConnection {
            let client = ::redis::Client::open(self.url.as_str()).unwrap();
            client.get_multiplexed_async_connection().await.unwrap()
        }
    }

    /// `calls` of `cmdstat_<command>` in `INFO commandstats`, 0 if absent.
    fn calls(info: &str, command: &str) -> u64 {
        let prefix = format!("cmdstat_{command}:calls=");
        info.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |n| n.parse().unwrap())
    }

    #[tokio::test]
    async fn an_admission_is_one_script_call_and_one_round_trip() {
        let Some(server) = Server::start() else { return };
        let limiter = server.limiter("rt:").await;
        let mut raw = server.raw().await;
        let _: () = ::redis::cmd("CONFIG").arg("RESETSTAT").query_async(&mut raw).await.unwrap();
        let start = limiter.round_trips();

        let rpm = Rate { limit: 100, period: Duration::from_secs(60) };
        let rate = Rate { limit: 100_000, period: Duration::from_secs(60) };
        let checks =
            [check("k:a:rpm", rpm, 1), check("k:a:tpm", rate, 500), check("ip:10.0.0.1", rpm, 1)];
        let budget = BudgetCheck {
            key: "b:a".into(),
            max_usd: 100.0,
            estimate_usd: 0.01,
            ttl: Some(Duration::from_secs(60)),
        };
        const N: u64 = 50;
        for n in 0..N {
            let slot = Slot {
                key: "c:a".into(),
                max: 1000,
                lease_id: format!("lease-{n}"),
                lease: Duration::from_secs(30),
            };
            let slot = (n % 2 == 0).then_some(&slot);
            let verdict = limiter.admit(&checks, slot, Some(&budget)).await.unwrap();
            assert!(verdict.allowed(), "{verdict:?}");
        }

        let info: String =
            ::redis::cmd("INFO").arg("commandstats").query_async(&mut raw).await.unwrap();
        assert_eq!(calls(&info, "evalsha"), N, "{info}");
        assert_eq!(calls(&info, "eval"), 0, "{info}");
        assert_eq!(calls(&info, "script|load"), 0, "{info}");
        assert_eq!(limiter.round_trips() - start, N);

        // Every key under the prefix, and every key expires by itself.
        let keys: Vec<String> = ::redis::cmd("KEYS").arg("*").query_async(&mut raw).await.unwrap();
        let mut keys = keys;
        keys.sort();
        assert_eq!(keys, ["rt:c:a", "rt:ip:10.0.0.1", "rt:k:a:rpm", "rt:k:a:tpm"]);
        for key in &keys {
            let ttl: i64 = ::redis::cmd("PTTL").arg(key).query_async(&mut raw).await.unwrap();
            assert!(ttl > 10_000 && ttl <= 30_000, "{key}: {ttl} ms");
        }

        // The other calls are one round trip each.
        let before = limiter.round_trips();
        limiter.adjust("k:a:tpm", rate, -100).await.unwrap();
        limiter.spend("b:a", 0.5, Some(Duration::from_secs(60))).await.unwrap();
        assert_eq!(limiter.seed_spend("b:a", 9.0, None).await.unwrap(), 0.5);
        let slot = Slot {
            key: "c:a".into(),
            max: 1000,
            lease_id: "lease-0".into(),
            lease: Duration::from_secs(30),
        };
        limiter.release(&slot).await.unwrap();
        limiter.ping().await.unwrap();
        assert_eq!(limiter.round_trips() - before, 5);
        let held: u64 = ::redis::cmd("ZCARD").arg("rt:c:a").query_async(&mut raw).await.unwrap();
        assert_eq!(held, N / 2 - 1);

        // A request's whole settlement is one round trip too.
        let before = limiter.round_trips();
        let settlement = Settlement {
            adjust: vec![("k:a:tpm".into(), rate, 200), ("k:a:rpm".into(), rpm, -1)],
            spend: Some(("b:a".into(), 0.25, Some(Duration::from_secs(60)))),
            release: vec![Slot { lease_id: "lease-2".into(), ..slot.clone() }],
        };
        limiter.settle(&settlement).await.unwrap();
        assert_eq!(limiter.round_trips() - before, 1);
        let spent: f64 = ::redis::cmd("GET").arg("rt:b:a").query_async(&mut raw).await.unwrap();
        assert!((spent - 0.75).abs() < 1e-9, "{spent}");
        let held: u64 = ::redis::cmd("ZCARD").arg("rt:c:a").query_async(&mut raw).await.unwrap();
        assert_eq!(held, N / 2 - 2);

        // Redis forgot the scripts: the next call sends the body once.
        let _: () = ::redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut raw).await.unwrap();
        let before = limiter.round_trips();
        assert!(limiter.admit(&checks, None, None).await.unwrap().allowed());
        assert!(limiter.admit(&checks, None, None).await.unwrap().allowed());
        assert_eq!(limiter.round_trips() - before, 3);

        // Redis gone: an error soon, not a hang.
        drop(raw);
        let url = server.url.clone();
        drop(server);
        let started = Instant::now();
        assert!(limiter.admit(&checks, None, None).await.is_err());
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
        let started = Instant::now();
        assert!(RedisLimiter::connect(&url, "rt:").await.is_err());
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn an_unreachable_redis_is_an_error_at_once() {
        let started = Instant::now();
        let error = RedisLimiter::connect("redis://127.0.0.1:1", "x:").await.unwrap_err();
        assert_eq!(error.backend, "redis");
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_bad_url_is_an_error() {
        assert!(RedisLimiter::connect("not a url", "x:").await.is_err());
    }
}
