//! The queue of a cluster: every node's workers share one queue in Redis,
//! under one key prefix. Keys, all under `{prefix}q:` (in a Redis Cluster
//! under `{<prefix>q}:`, a hash tag, so that every queue key is in one slot):
//!
//! - `job:{id}`: a hash per job, a field per [`Job`] field (absent when
//!   `None`; request and result as JSON text), plus `seq` (from `INCR seq`)
//!   and `rank`, `(10 - priority) · 2^40 + seq`;
//! - `ready`: a sorted set of the jobs a lease takes next, scored by rank,
//!   so strict priority, then FIFO;
//! - `timers`: a sorted set of what a lease must act on when its time
//!   comes, the score that time: `w:{id}` a queued job whose `run_after_ms`
//!   has not come (a retry's backoff), `d:{id}` a queued job's
//!   `deadline_ms`, `r:{id}` a leased job's `lease_until_ms` (so a lease
//!   finds all that came due with one read);
//! - `queued`: every queued job by `run_after_ms` (for `oldest_wait_ms`);
//! - `dead`: dead letters by `finished_at_ms`; `finished`: the other final
//!   jobs by `finished_at_ms` (what `purge` deletes);
//! - `idem`: a hash from owner and idempotency key to the job's id;
//! - `counts`: a hash of counters for `stats` (`pending:{priority}`,
//!   `running`, `completed`, `failed`, `dead`, `cancelled`).
//!
//! Every change is one Lua script, so one round trip and atomic: a job is in
//! exactly the sets its status says and the counters agree with them, and
//! two nodes never lease the same job. A script runs by its hash; when
//! Redis lost it (a restart, `SCRIPT FLUSH`) the body is sent once more.
//!
//! A lease first fails queued jobs past their deadline and dead-letters
//! expired leases on their last attempt, then moves due delayed jobs and
//! the other expired leases into `ready` (an expired lease stays `running`,
//! as in SQLite, until it is leased again or its worker heartbeats). A
//! worker done with a job completes it and leases its next in one script
//! ([`Queue::complete_and_lease`]).
//!
//! The scripts build job keys from the prefix (ARGV), keys they are not
//! given in KEYS: that is sound in a Redis Cluster only because every job
//! key shares the fixed keys' hash tag, so the slot the client routes the
//! script to by its first key holds them all.

use std::collections::HashMap;

use ::redis::{FromRedisValue, RedisError};
use async_trait::async_trait;
use serde_json::Value;

use super::{Failed, Job, JobStatus, MAX_PRIORITY, NewJob, Queue, QueueError, QueueStats};
use crate::state::redis::{Lua, RedisConnection, RedisConnections, is_noscript};

/// Purge deletes this many jobs per script, so no script blocks Redis long.
const PURGE_BATCH: usize = 1000;

/// The names every script starts with. KEYS are always [`RedisQueue::keys`];
/// ARGV[1] is the prefix of job keys. The helpers a script calls follow it
/// (each is a closure Redis makes at every call, so a script takes only
/// those it needs).
macro_rules! prelude {
    () => {
        r"
local ready, timers, queued, dead = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local finished, idem, counts, seq = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local base = ARGV[1]
local function jobkey(id) return base .. id end
local function count(field, by) redis.call('HINCRBY', counts, field, by) end
"
    };
}

macro_rules! idem_fn {
    () => {
        r"
local function idem_field(owner, key) return string.len(owner) .. ':' .. owner .. key end
"
    };
}

macro_rules! unqueue_fn {
    () => {
        r"
-- Takes a queued job out of the queued sets.
local function unqueue(id, key)
  redis.call('ZREM', ready, id)
  redis.call('ZREM', timers, 'w:' .. id, 'd:' .. id)
  redis.call('ZREM', queued, id)
  count('pending:' .. redis.call('HGET', key, 'priority'), -1)
end
"
    };
}

macro_rules! enqueue_fn {
    () => {
        r"
-- Puts a job (status queued already) into the queued sets.
local function enqueue(id, key, run_after, now)
  local j = redis.call('HMGET', key, 'priority', 'rank', 'deadline_ms')
  redis.call('ZADD', queued, run_after, id)
  if tonumber(run_after) <= tonumber(now) then
    redis.call('ZADD', ready, j[2], id)
  else
    redis.call('ZADD', timers, run_after, 'w:' .. id)
  end
  if j[3] then redis.call('ZADD', timers, j[3], 'd:' .. id) end
  count('pending:' .. j[1], 1)
end
"
    };
}

macro_rules! unlease_fn {
    () => {
        r"
-- Takes a running job out of the running sets.
local function unlease(id, key)
  redis.call('ZREM', timers, 'r:' .. id)
  redis.call('ZREM', ready, id)
  redis.call('HDEL', key, 'lease_owner', 'lease_until_ms')
  count('running', -1)
end
"
    };
}

macro_rules! forget_fn {
    () => {
        r"
-- Forgets a final job.
local function forget(id, key)
  local j = redis.call('HMGET', key, 'owner', 'idempotency_key')
  if j[2] then
    local field = idem_field(j[1] or '', j[2])
    if redis.call('HGET', idem, field) == id then redis.call('HDEL', idem, field) end
  end
  redis.call('DEL', key)
end
"
    };
}

/// ARGV: base, id, route, request, priority, max_attempts, now, then pairs
/// of optional field and value (owner, idempotency_key, deadline_ms,
/// webhook_url). Returns `{'created' | 'existing' | 'duplicate', fields}`,
/// the fields only of an existing job (the caller knows a new job's).
const SUBMIT: &str = concat!(
    prelude!(),
    idem_fn!(),
    r"
local id, priority, now = ARGV[2], ARGV[5], ARGV[7]
local optional = {}
for i = 8, #ARGV, 2 do optional[ARGV[i]] = ARGV[i + 1] end
local ikey = optional['idempotency_key']
if ikey then
  local existing = redis.call('HGET', idem, idem_field(optional['owner'] or '', ikey))
  if existing then
    local fields = redis.call('HGETALL', jobkey(existing))
    if #fields > 0 then return {'existing', fields} end
  end
end
local key = jobkey(id)
-- Creates the hash unless the job exists: the duplicate check and the first field at once.
if redis.call('HSETNX', key, 'id', id) == 0 then return {'duplicate', {}} end
local n = redis.call('INCR', seq)
local rank = string.format('%d', (10 - tonumber(priority)) * 1099511627776 + n)
local fields = {'route', ARGV[3], 'request', ARGV[4], 'priority', priority, 'status', 'queued',
  'dead', '0', 'attempts', '0', 'max_attempts', ARGV[6], 'run_after_ms', now, 'created_at_ms', now,
  'seq', n, 'rank', rank}
for i = 8, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', key, unpack(fields))
if ikey then redis.call('HSET', idem, idem_field(optional['owner'] or '', ikey), id) end
-- What enqueue does, from what is known here (the job runs from now).
redis.call('ZADD', queued, now, id)
redis.call('ZADD', ready, rank, id)
if optional['deadline_ms'] then redis.call('ZADD', timers, optional['deadline_ms'], 'd:' .. id) end
count('pending:' .. priority, 1)
return {'created', {}}
"
);

/// The body of a lease, shared by [`LEASE`] and [`COMPLETE_AND_LEASE`]:
/// `lease(worker, limit, now, until_ms, delta)` leases up to `limit` jobs
/// and returns them in rank order, each as the values of
/// [`LEASED_FIELDS`] (read with the one `HMGET` the lease needs anyway,
/// not a second `HGETALL`: a reply that Lua takes in and gives back out
/// costs Redis more than the command); `delta` is the change of the
/// `running` count the script made already, written with the lease's own
/// in one `HINCRBY` (none when they cancel out).
macro_rules! lease_fn {
    () => {
        r"
local function lease(worker, limit, now, until_ms, delta)
  -- What came due, in one read: deadlines and leases that passed (before
  -- now), delayed jobs whose time came (now included).
  local due = redis.call('ZRANGEBYSCORE', timers, '-inf', now, 'WITHSCORES')
  if #due > 0 then
    local t = tonumber(now)
    local deadlines, expired, delayed = {}, {}, {}
    for i = 1, #due, 2 do
      local kind, id = string.sub(due[i], 1, 1), string.sub(due[i], 3)
      if kind == 'w' then
        delayed[#delayed + 1] = id
      elseif tonumber(due[i + 1]) < t then
        if kind == 'd' then deadlines[#deadlines + 1] = id else expired[#expired + 1] = id end
      end
    end
    for _, id in ipairs(deadlines) do
      local key = jobkey(id)
      unqueue(id, key)
      redis.call('HSET', key, 'status', 'failed', 'finished_at_ms', now,
        'error', 'the deadline passed before the job could start')
      redis.call('ZADD', finished, now, id)
      count('failed', 1)
    end
    for _, id in ipairs(expired) do
      local key = jobkey(id)
      local j = redis.call('HMGET', key, 'attempts', 'max_attempts', 'error', 'rank')
      redis.call('ZREM', timers, 'r:' .. id)
      if tonumber(j[1]) >= tonumber(j[2]) then
        local message = 'the lease of the last attempt expired (its worker stopped)'
        if j[3] then message = j[3] .. '; ' .. message end
        unlease(id, key)
        redis.call('HSET', key, 'status', 'failed', 'dead', '1', 'finished_at_ms', now, 'error', message)
        redis.call('ZADD', dead, now, id)
        count('failed', 1)
        count('dead', 1)
      else
        redis.call('ZADD', ready, j[4], id)
      end
    end
    for _, id in ipairs(delayed) do
      -- Unless its deadline failed it just now.
      if redis.call('ZREM', timers, 'w:' .. id) == 1 then
        redis.call('ZADD', ready, redis.call('HGET', jobkey(id), 'rank'), id)
      end
    end
  end
  local out = {}
  while #out < limit do
    -- Taken out of ready at once; a job there is queued, or running with
    -- its lease expired.
    local taken = redis.call('ZPOPMIN', ready, limit - #out)
    if #taken == 0 then break end
    for i = 1, #taken, 2 do
      local id = taken[i]
      local key = jobkey(id)
      -- Every field of a Job, in the order of LEASED_FIELDS.
      local j = redis.call('HMGET', key, 'id', 'owner', 'route', 'request', 'priority', 'status',
        'dead', 'attempts', 'max_attempts', 'run_after_ms', 'lease_owner', 'lease_until_ms',
        'deadline_ms', 'webhook_url', 'idempotency_key', 'result', 'error', 'webhook',
        'created_at_ms', 'started_at_ms', 'finished_at_ms', 'seq')
      local status = j[6]
      if status == 'queued' then
        -- unqueue, but for ready (done) and the delay (a job in ready has none).
        redis.call('ZREM', queued, id)
        if j[13] then redis.call('ZREM', timers, 'd:' .. id) end
        count('pending:' .. j[5], -1)
        delta = delta + 1
      end
      if status == 'queued' or status == 'running' then
        local attempts, started = tostring(tonumber(j[8]) + 1), j[20] or now
        redis.call('HSET', key, 'status', 'running', 'lease_owner', worker,
          'lease_until_ms', until_ms, 'attempts', attempts, 'started_at_ms', started)
        redis.call('ZADD', timers, until_ms, 'r:' .. id)
        j[6], j[8], j[11], j[12], j[20] = 'running', attempts, worker, until_ms, started
        out[#out + 1] = j
      end
    end
  end
  if delta ~= 0 then count('running', delta) end
  return out
end
"
    };
}

/// The body of a completion, shared by [`COMPLETE`] and
/// [`COMPLETE_AND_LEASE`]: `complete(id, worker, result, now)` returns 1
/// when it took effect (the caller takes one from the `running` count).
macro_rules! complete_fn {
    () => {
        r"
local function complete(id, worker, result, now)
  local key = jobkey(id)
  local j = redis.call('HMGET', key, 'status', 'lease_owner')
  if j[1] ~= 'running' or j[2] ~= worker then return 0 end
  -- unlease, but for the count.
  redis.call('ZREM', timers, 'r:' .. id)
  redis.call('ZREM', ready, id)
  redis.call('HDEL', key, 'lease_owner', 'lease_until_ms', 'error')
  redis.call('HSET', key, 'status', 'completed', 'result', result, 'finished_at_ms', now)
  redis.call('ZADD', finished, now, id)
  count('completed', 1)
  return 1
end
"
    };
}

/// The fields of a leased job in the lease script's answer, in its order.
const LEASED_FIELDS: [&str; 22] = [
    "id",
    "owner",
    "route",
    "request",
    "priority",
    "status",
    "dead",
    "attempts",
    "max_attempts",
    "run_after_ms",
    "lease_owner",
    "lease_until_ms",
    "deadline_ms",
    "webhook_url",
    "idempotency_key",
    "result",
    "error",
    "webhook",
    "created_at_ms",
    "started_at_ms",
    "finished_at_ms",
    "seq",
];

/// ARGV: base, worker, limit, now, lease until. Returns the leased jobs
/// (values of [`LEASED_FIELDS`]), in rank order.
const LEASE: &str = concat!(
    prelude!(),
    unqueue_fn!(),
    unlease_fn!(),
    lease_fn!(),
    r"
return lease(ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5], 0)
"
);

/// ARGV: base, id, status JSON. Returns 1 when the job exists.
const SET_WEBHOOK: &str = concat!(
    prelude!(),
    r"
local key = jobkey(ARGV[2])
if redis.call('EXISTS', key) == 0 then return 0 end
redis.call('HSET', key, 'webhook', ARGV[3])
return 1
"
);

/// ARGV: base, id, worker, lease until. Returns 1 when extended.
const HEARTBEAT: &str = concat!(
    prelude!(),
    r"
local id, worker, until_ms = ARGV[2], ARGV[3], ARGV[4]
local key = jobkey(id)
local j = redis.call('HMGET', key, 'status', 'lease_owner')
if j[1] ~= 'running' or j[2] ~= worker then return 0 end
redis.call('HSET', key, 'lease_until_ms', until_ms)
redis.call('ZREM', ready, id)
redis.call('ZADD', timers, until_ms, 'r:' .. id)
return 1
"
);

/// ARGV: base, id, worker, result, now. Returns 1 when completed.
const COMPLETE: &str = concat!(
    prelude!(),
    complete_fn!(),
    r"
if complete(ARGV[2], ARGV[3], ARGV[4], ARGV[5]) == 0 then return 0 end
count('running', -1)
return 1
"
);

/// ARGV: base, id, worker, result, now, limit, lease until. Completes as
/// [`COMPLETE`], then leases as [`LEASE`], whether or not the completion
/// took effect. Returns `{1 | 0, the leased jobs as LEASE answers them}`.
const COMPLETE_AND_LEASE: &str = concat!(
    prelude!(),
    unqueue_fn!(),
    unlease_fn!(),
    complete_fn!(),
    lease_fn!(),
    r"
local worker, now = ARGV[3], ARGV[5]
local done = complete(ARGV[2], worker, ARGV[4], now)
return {done, lease(worker, tonumber(ARGV[6]), now, ARGV[7], -done)}
"
);

/// ARGV: base, id, worker, error, now, retry at (`''` for none). Returns
/// `not_leased`, `retrying` or `dead`.
const FAIL: &str = concat!(
    prelude!(),
    enqueue_fn!(),
    unlease_fn!(),
    r"
local id, worker, message, now, retry_at = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local key = jobkey(id)
local j = redis.call('HMGET', key, 'status', 'lease_owner', 'attempts', 'max_attempts')
if j[1] ~= 'running' or j[2] ~= worker then return 'not_leased' end
unlease(id, key)
if retry_at ~= '' and tonumber(j[3]) < tonumber(j[4]) then
  redis.call('HSET', key, 'status', 'queued', 'run_after_ms', retry_at, 'error', message)
  enqueue(id, key, retry_at, now)
  return 'retrying'
end
redis.call('HSET', key, 'status', 'failed', 'dead', '1', 'error', message, 'finished_at_ms', now)
redis.call('ZADD', dead, now, id)
count('failed', 1)
count('dead', 1)
return 'dead'
"
);

/// ARGV: base, id, worker, now, run after. Returns 1 when released.
const RELEASE: &str = concat!(
    prelude!(),
    enqueue_fn!(),
    unlease_fn!(),
    r"
local id, worker, now, run_after = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local key = jobkey(id)
local j = redis.call('HMGET', key, 'status', 'lease_owner', 'attempts')
if j[1] ~= 'running' or j[2] ~= worker then return 0 end
unlease(id, key)
redis.call('HSET', key, 'status', 'queued', 'run_after_ms', run_after,
  'attempts', math.max(tonumber(j[3]) - 1, 0))
enqueue(id, key, run_after, now)
return 1
"
);

/// ARGV: base, id, now. Returns the job's fields (none: no such job).
const CANCEL: &str = concat!(
    prelude!(),
    unqueue_fn!(),
    unlease_fn!(),
    r"
local id, now = ARGV[2], ARGV[3]
local key = jobkey(id)
local status = redis.call('HGET', key, 'status')
if status == 'queued' then
  unqueue(id, key)
elseif status == 'running' then
  unlease(id, key)
else
  return redis.call('HGETALL', key)
end
redis.call('HSET', key, 'status', 'cancelled', 'finished_at_ms', now)
redis.call('ZADD', finished, now, id)
count('cancelled', 1)
return redis.call('HGETALL', key)
"
);

/// ARGV: base, id, now. Returns the job's fields (none: no such dead letter).
const RETRY_DEAD: &str = concat!(
    prelude!(),
    enqueue_fn!(),
    r"
local id, now = ARGV[2], ARGV[3]
local key = jobkey(id)
if redis.call('HGET', key, 'dead') ~= '1' then return {} end
redis.call('ZREM', dead, id)
count('failed', -1)
count('dead', -1)
redis.call('HSET', key, 'status', 'queued', 'dead', '0', 'attempts', '0', 'run_after_ms', now)
redis.call('HDEL', key, 'finished_at_ms')
enqueue(id, key, now, now)
return redis.call('HGETALL', key)
"
);

/// ARGV: base, id. Returns 1 when a dead letter was deleted.
const DELETE_DEAD: &str = concat!(
    prelude!(),
    idem_fn!(),
    forget_fn!(),
    r"
local id = ARGV[2]
local key = jobkey(id)
if redis.call('HGET', key, 'dead') ~= '1' then return 0 end
redis.call('ZREM', dead, id)
count('failed', -1)
count('dead', -1)
forget(id, key)
return 1
"
);

/// ARGV: base, before, batch. Returns how many it deleted.
const PURGE: &str = concat!(
    prelude!(),
    idem_fn!(),
    forget_fn!(),
    r"
local ids = redis.call('ZRANGEBYSCORE', finished, '-inf', '(' .. ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  local key = jobkey(id)
  local status = redis.call('HGET', key, 'status')
  if status then count(status, -1) end
  redis.call('ZREM', finished, id)
  forget(id, key)
end
return #ids
"
);

/// ARGV: base, limit. Returns the oldest `limit` dead letters' fields, and
/// any more that failed at the same time as the last (the caller orders
/// ties by `seq`).
const DEAD_LETTERS: &str = concat!(
    prelude!(),
    r"
local limit = tonumber(ARGV[2])
local ids = redis.call('ZRANGE', dead, 0, limit - 1, 'WITHSCORES')
local out, seen = {}, {}
for i = 1, #ids, 2 do
  seen[ids[i]] = true
  out[#out + 1] = redis.call('HGETALL', jobkey(ids[i]))
end
if #ids == 2 * limit then
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', dead, ids[#ids], ids[#ids])) do
    if not seen[id] then out[#out + 1] = redis.call('HGETALL', jobkey(id)) end
  end
end
return out
"
);

struct Scripts {
    submit: Lua,
    lease: Lua,
    heartbeat: Lua,
    complete: Lua,
    complete_and_lease: Lua,
    fail: Lua,
    cancel: Lua,
    retry_dead: Lua,
    delete_dead: Lua,
    purge: Lua,
    dead_letters: Lua,
    set_webhook: Lua,
    release: Lua,
}

pub struct RedisQueue {
    connections: RedisConnections,
    prefix: String,
    /// The fixed keys, in the order the scripts' prelude names them.
    keys: Vec<String>,
    scripts: Scripts,
}

impl std::fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQueue").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

fn invalid(message: impl std::fmt::Display) -> QueueError {
    QueueError::Backend { backend: "redis", message: message.to_string() }
}

fn failed(error: RedisError) -> QueueError {
    invalid(error)
}

impl RedisQueue {
    /// Connects to `url`; every key is put under `{prefix}q:`. Fails within
    /// about two seconds when Redis does not answer.
    pub async fn connect(url: &str, prefix: &str) -> Result<RedisQueue, QueueError> {
        let connections =
            RedisConnections::connect(url, 0).await.map_err(|e| invalid(format!("{url}: {e}")))?;
        Ok(RedisQueue::with_connections(connections, prefix))
    }

    /// As [`RedisQueue::connect`], on connections made already. The scripts
    /// are loaded by their first use.
    pub fn with_connections(connections: RedisConnections, prefix: &str) -> RedisQueue {
        let prefix = format!("{}:", connections.group(&format!("{prefix}q")));
        let keys = ["ready", "timers", "queued", "dead", "finished", "idem", "counts", "seq"]
            .iter()
            .map(|name| format!("{prefix}{name}"))
            .collect();
        RedisQueue {
            connections,
            prefix,
            keys,
            scripts: Scripts {
                submit: Lua::new(SUBMIT),
                lease: Lua::new(LEASE),
                heartbeat: Lua::new(HEARTBEAT),
                complete: Lua::new(COMPLETE),
                complete_and_lease: Lua::new(COMPLETE_AND_LEASE),
                fail: Lua::new(FAIL),
                cancel: Lua::new(CANCEL),
                retry_dead: Lua::new(RETRY_DEAD),
                delete_dead: Lua::new(DELETE_DEAD),
                purge: Lua::new(PURGE),
                dead_letters: Lua::new(DEAD_LETTERS),
                set_webhook: Lua::new(SET_WEBHOOK),
                release: Lua::new(RELEASE),
            },
        }
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn job_key(&self, id: &str) -> String {
        format!("{}job:{id}", self.prefix)
    }

    async fn connection(&self) -> Result<RedisConnection, QueueError> {
        self.connections.get().await.map_err(failed)
    }

    /// Runs a script by its hash; only if Redis lost it a second round trip
    /// sends the body, which Redis caches again. `args` follow the job key
    /// prefix (ARGV[1]).
    async fn eval<T: FromRedisValue>(&self, lua: &Lua, args: &[&str]) -> Result<T, QueueError> {
        let base = self.job_key("");
        let call = |body: bool| {
            let mut command = lua.command(body);
            command.arg(self.keys.len()).arg(&self.keys).arg(&base).arg(args);
            command
        };
        let mut connection = self.connection().await?;
        match call(false).query_async(&mut connection).await {
            Err(error) if is_noscript(&error) => {
                call(true).query_async(&mut connection).await.map_err(failed)
            }
            answer => answer.map_err(failed),
        }
    }
}

/// A job from its hash's fields (HGETALL's flat list); `None` when empty.
fn job_from_fields(fields: Vec<String>) -> Result<Option<(i64, Job)>, QueueError> {
    if fields.is_empty() {
        return Ok(None);
    }
    let mut map: HashMap<String, String> = HashMap::with_capacity(fields.len() / 2);
    let mut iter = fields.into_iter();
    while let (Some(field), Some(value)) = (iter.next(), iter.next()) {
        map.insert(field, value);
    }
    let text = |field: &str| map.get(field).cloned();
    let required = |field: &str| {
        map.get(field).cloned().ok_or_else(|| invalid(format!("a job without {field}")))
    };
    let number = |field: &str| -> Result<Option<i64>, QueueError> {
        map.get(field)
            .map(|v| v.parse::<i64>().map_err(|_| invalid(format!("{field} {v:?} is no number"))))
            .transpose()
    };
    let required_number =
        |field: &str| number(field)?.ok_or_else(|| invalid(format!("a job without {field}")));
    let count = |field: &str| -> Result<u32, QueueError> {
        let v = required_number(field)?;
        u32::try_from(v).map_err(|_| invalid(format!("{field} {v} is out of range")))
    };
    let json = |field: &str| -> Result<Option<Value>, QueueError> {
        map.get(field).map(|t| serde_json::from_str(t).map_err(invalid)).transpose()
    };
    let status = required("status")?;
    let priority = required_number("priority")?;
    let job = Job {
        id: required("id")?,
        owner: text("owner"),
        route: required("route")?,
        request: json("request")?.unwrap_or(Value::Null),
        priority: u8::try_from(priority).unwrap_or(MAX_PRIORITY).min(MAX_PRIORITY),
        status: JobStatus::parse(&status)
            .ok_or_else(|| invalid(format!("unknown job status {status:?}")))?,
        dead: map.get("dead").is_some_and(|d| d == "1"),
        attempts: count("attempts")?,
        max_attempts: count("max_attempts")?,
        run_after_ms: required_number("run_after_ms")?,
        lease_owner: text("lease_owner"),
        lease_until_ms: number("lease_until_ms")?,
        deadline_ms: number("deadline_ms")?,
        webhook_url: text("webhook_url"),
        idempotency_key: text("idempotency_key"),
        result: json("result")?,
        error: text("error"),
        webhook: json("webhook")?,
        created_at_ms: required_number("created_at_ms")?,
        started_at_ms: number("started_at_ms")?,
        finished_at_ms: number("finished_at_ms")?,
    };
    Ok(Some((required_number("seq")?, job)))
}

/// A job the lease script answered: the values of [`LEASED_FIELDS`].
fn leased(values: Vec<Option<String>>) -> Result<Job, QueueError> {
    if values.len() != LEASED_FIELDS.len() {
        return Err(invalid(format!("a leased job of {} fields", values.len())));
    }
    let mut fields = Vec::with_capacity(2 * values.len());
    for (field, value) in LEASED_FIELDS.iter().zip(values) {
        if let Some(value) = value {
            fields.extend([(*field).to_owned(), value]);
        }
    }
    existing(fields)
}

fn job(fields: Vec<String>) -> Result<Option<Job>, QueueError> {
    Ok(job_from_fields(fields)?.map(|(_, job)| job))
}

fn existing(fields: Vec<String>) -> Result<Job, QueueError> {
    job(fields)?.ok_or_else(|| invalid("a script answered no job"))
}

/// The job that the submit script created from `job` at `now_ms`: its
/// fields as the script wrote them, so no reply has to carry them.
fn queued(job: NewJob, now_ms: i64) -> Job {
    Job {
        id: job.id,
        owner: job.owner,
        route: job.route,
        request: job.request,
        priority: job.priority.min(MAX_PRIORITY),
        status: JobStatus::Queued,
        dead: false,
        attempts: 0,
        max_attempts: job.max_attempts.max(1),
        run_after_ms: now_ms,
        lease_owner: None,
        lease_until_ms: None,
        deadline_ms: job.deadline_ms,
        webhook_url: job.webhook_url,
        idempotency_key: job.idempotency_key,
        result: None,
        error: None,
        webhook: None,
        created_at_ms: now_ms,
        started_at_ms: None,
        finished_at_ms: None,
    }
}

/// A score or number as Redis writes it.
fn parse_ms(text: &str) -> Option<i64> {
    text.parse::<i64>().ok().or_else(|| {
        let v = text.parse::<f64>().ok()?;
        // Scores are whole milliseconds, well inside a double's exact range.
        format!("{v:.0}").parse().ok()
    })
}

#[async_trait]
impl Queue for RedisQueue {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn submit(&self, job: NewJob, now_ms: i64) -> Result<(Job, bool), QueueError> {
        let request = job.request.to_string();
        let priority = job.priority.min(MAX_PRIORITY).to_string();
        let max_attempts = job.max_attempts.max(1).to_string();
        let now = now_ms.to_string();
        let deadline = job.deadline_ms.map(|d| d.to_string());
        let mut args = vec![
            job.id.as_str(),
            job.route.as_str(),
            request.as_str(),
            priority.as_str(),
            max_attempts.as_str(),
            now.as_str(),
        ];
        for (field, value) in [
            ("owner", job.owner.as_deref()),
            ("idempotency_key", job.idempotency_key.as_deref()),
            ("deadline_ms", deadline.as_deref()),
            ("webhook_url", job.webhook_url.as_deref()),
        ] {
            if let Some(value) = value {
                args.extend([field, value]);
            }
        }
        let (outcome, fields): (String, Vec<String>) =
            self.eval(&self.scripts.submit, &args).await?;
        match outcome.as_str() {
            "created" => Ok((queued(job, now_ms), true)),
            "existing" => Ok((existing(fields)?, false)),
            "duplicate" => Err(QueueError::Duplicate(job.id)),
            other => Err(invalid(format!("the submit script answered {other:?}"))),
        }
    }

    async fn get(&self, id: &str) -> Result<Option<Job>, QueueError> {
        let fields: Vec<String> = ::redis::cmd("HGETALL")
            .arg(self.job_key(id))
            .query_async(&mut self.connection().await?)
            .await
            .map_err(failed)?;
        job(fields)
    }

    async fn lease(
        &self,
        worker: &str,
        limit: usize,
        lease_ms: i64,
        now_ms: i64,
    ) -> Result<Vec<Job>, QueueError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let args = [
            worker.to_owned(),
            limit.to_string(),
            now_ms.to_string(),
            now_ms.saturating_add(lease_ms).to_string(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let answer: Vec<Vec<Option<String>>> = self.eval(&self.scripts.lease, &args).await?;
        answer.into_iter().map(leased).collect()
    }

    async fn heartbeat(
        &self,
        id: &str,
        worker: &str,
        lease_ms: i64,
        now_ms: i64,
    ) -> Result<bool, QueueError> {
        let until = now_ms.saturating_add(lease_ms).to_string();
        let done: i64 = self.eval(&self.scripts.heartbeat, &[id, worker, &until]).await?;
        Ok(done == 1)
    }

    async fn complete(
        &self,
        id: &str,
        worker: &str,
        result: &Value,
        now_ms: i64,
    ) -> Result<bool, QueueError> {
        let (result, now) = (result.to_string(), now_ms.to_string());
        let done: i64 = self.eval(&self.scripts.complete, &[id, worker, &result, &now]).await?;
        Ok(done == 1)
    }

    async fn complete_and_lease(
        &self,
        id: &str,
        worker: &str,
        result: &Value,
        limit: usize,
        lease_ms: i64,
        now_ms: i64,
    ) -> Result<(bool, Vec<Job>), QueueError> {
        if limit == 0 {
            return Ok((self.complete(id, worker, result, now_ms).await?, Vec::new()));
        }
        let args = [
            result.to_string(),
            now_ms.to_string(),
            limit.to_string(),
            now_ms.saturating_add(lease_ms).to_string(),
        ];
        let (done, answer): (i64, Vec<Vec<Option<String>>>) = self
            .eval(
                &self.scripts.complete_and_lease,
                &[id, worker, &args[0], &args[1], &args[2], &args[3]],
            )
            .await?;
        Ok((done == 1, answer.into_iter().map(leased).collect::<Result<_, _>>()?))
    }

    async fn fail(
        &self,
        id: &str,
        worker: &str,
        error: &str,
        retry_at_ms: Option<i64>,
        now_ms: i64,
    ) -> Result<Failed, QueueError> {
        let now = now_ms.to_string();
        let retry = retry_at_ms.map(|t| t.to_string()).unwrap_or_default();
        let outcome: String =
            self.eval(&self.scripts.fail, &[id, worker, error, &now, &retry]).await?;
        match (outcome.as_str(), retry_at_ms) {
            ("retrying", Some(run_after_ms)) => Ok(Failed::Retrying { run_after_ms }),
            ("dead", _) => Ok(Failed::Dead),
            ("not_leased", _) => Ok(Failed::NotLeased),
            (other, _) => Err(invalid(format!("the fail script answered {other:?}"))),
        }
    }

    async fn release(
        &self,
        id: &str,
        worker: &str,
        run_after_ms: i64,
        now_ms: i64,
    ) -> Result<bool, QueueError> {
        let (now, run_after) = (now_ms.to_string(), run_after_ms.to_string());
        let done: i64 = self.eval(&self.scripts.release, &[id, worker, &now, &run_after]).await?;
        Ok(done == 1)
    }

    async fn cancel(&self, id: &str, now_ms: i64) -> Result<Option<Job>, QueueError> {
        let fields: Vec<String> =
            self.eval(&self.scripts.cancel, &[id, &now_ms.to_string()]).await?;
        job(fields)
    }

    async fn stats(&self, now_ms: i64) -> Result<QueueStats, QueueError> {
        let mut pipeline = ::redis::pipe();
        pipeline.cmd("HGETALL").arg(self.key("counts"));
        pipeline
            .cmd("ZRANGEBYSCORE")
            .arg(self.key("queued"))
            .arg("-inf")
            .arg(now_ms)
            .arg("WITHSCORES")
            .arg("LIMIT")
            .arg(0)
            .arg(1);
        let (counts, oldest): (HashMap<String, i64>, Vec<String>) =
            pipeline.query_async(&mut self.connection().await?).await.map_err(failed)?;
        let get = |field: &str| u64::try_from(counts.get(field).copied().unwrap_or(0)).unwrap_or(0);
        let mut stats = QueueStats {
            running: get("running"),
            completed: get("completed"),
            failed: get("failed"),
            dead: get("dead"),
            cancelled: get("cancelled"),
            ..QueueStats::default()
        };
        for (priority, slot) in stats.pending.iter_mut().enumerate() {
            *slot = get(&format!("pending:{priority}"));
        }
        stats.oldest_wait_ms =
            oldest.get(1).and_then(|score| parse_ms(score)).map(|t| now_ms.saturating_sub(t));
        Ok(stats)
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<Job>, QueueError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let answer: Vec<Vec<String>> =
            self.eval(&self.scripts.dead_letters, &[&limit.to_string()]).await?;
        let mut jobs = Vec::with_capacity(answer.len());
        for fields in answer {
            jobs.extend(job_from_fields(fields)?);
        }
        jobs.sort_by_key(|(seq, job)| (job.finished_at_ms, *seq));
        jobs.truncate(limit);
        Ok(jobs.into_iter().map(|(_, job)| job).collect())
    }

    async fn retry_dead(&self, id: &str, now_ms: i64) -> Result<Option<Job>, QueueError> {
        let fields: Vec<String> =
            self.eval(&self.scripts.retry_dead, &[id, &now_ms.to_string()]).await?;
        job(fields)
    }

    async fn delete_dead(&self, id: &str) -> Result<bool, QueueError> {
        let done: i64 = self.eval(&self.scripts.delete_dead, &[id]).await?;
        Ok(done == 1)
    }

    async fn set_webhook(&self, id: &str, status: &Value) -> Result<bool, QueueError> {
        let done: i64 = self.eval(&self.scripts.set_webhook, &[id, &status.to_string()]).await?;
        Ok(done == 1)
    }

    async fn purge(&self, before_ms: i64) -> Result<u64, QueueError> {
        let (before, batch) = (before_ms.to_string(), PURGE_BATCH.to_string());
        let mut total = 0u64;
        loop {
            let deleted: u64 = self.eval(&self.scripts.purge, &[&before, &batch]).await?;
            total += deleted;
            if deleted < PURGE_BATCH as u64 {
                return Ok(total);
            }
        }
    }
}
