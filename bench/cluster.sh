#!/usr/bin/env bash
# Cluster sizing figures, in one run (docs/deployment.md, "Capacity planning"):
#   1. the ledger journal's cost on one node: a virtual key with limits,
#      SQLite ledger, closed loop, journal on and off interleaved.
#   2. three nodes on one Redis and one PostgreSQL behind HAProxy
#      (deploy/haproxy/haproxy.cfg), open loop at fixed rates, a virtual key
#      with limits and a budget on every request: per 1,000 requests, Redis
#      commands and CPU, PostgreSQL transactions, rows and CPU, the nodes'
#      and HAProxy's CPU; each node's memory.
# Everything runs on this machine's two cores (load generator included), so
# CPU per request is the figure to carry to other machines, not req/s.
# Results: bench/out/cluster-<UTC time>/ (reports, logs, summary.md).
# Every process it starts is stopped at the end; traffic stays on 127.0.0.0/8;
# every load is bounded in time.
#
#   bench/cluster.sh                 full run (about 4 minutes after the build)
#   QUICK=1 bench/cluster.sh         a short smoke run
#   RATES="500 1000" bench/cluster.sh
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then D=3s; REPEATS=1; RATES=${RATES:-500}; else D=15s; REPEATS=${REPEATS:-3}; RATES=${RATES:-1000 2000 3000}; fi
RUN=cluster-$(date -u +%Y%m%dT%H%M%SZ)
OUT=bench/out/$RUN
mkdir -p "$OUT/db"
OUT=$(cd "$OUT" && pwd)
# shellcheck source=bench/lib.sh
. bench/lib.sh
STARTED=$(date +%s)

MOCK=19131 FG=19331 LB=19330 REDIS_PORT=19379
FG_KEY=bench-floodgate-master-key-0123456789
PG_ADMIN=${FLOODGATE_BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
PG_BASE=${PG_ADMIN%/*}
TCK=$(getconf CLK_TCK)

ulimit -n "$(ulimit -Hn)"
log "building (release binary)"
cargo build --release --quiet -p floodgate
BIN=target/release/floodgate

PIDS=()
DBS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for db in "${DBS[@]}"; do psql "$PG_ADMIN" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true; done
}
trap cleanup EXIT

ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
pg_ticks() { local t=0 p; for p in $(pgrep -x postgres || true); do t=$((t + $(ticks "$p"))); done; echo $t; }
node_config() { # port database-url journal(true/false) [redis]
  cat <<TOML
listen = "127.0.0.1:$1"
master_key = "$FG_KEY"

[server]
workers = 1

[log]
format = "json"
level = "warn"

[database]
url = "$2"
ledger_journal = $3
ledger_spill_path = "$OUT/db/ledger-$1.spill"

[[providers]]
name = "fast"
kind = "openai-compatible"
base_url = "http://127.0.0.1:$MOCK/v1"
keys = ["bench-upstream-key"]

[[models]]
name = "gpt-4o-mini"
targets = ["fast/gpt-4o-mini"]

[limits]
ip = { requests = 1000000000, per = "15m" }
ip_ai = { requests = 1000000000, per = "5m" }
TOML
  if [ -n "${4:-}" ]; then
    printf '\n[state]\nbackend = "redis"\nredis_url = "%s"\nredis_prefix = "fgbench:"\n' "$4"
  fi
}

"$BIN" mock-upstream --port $MOCK >"$OUT/mock.log" 2>&1 & PIDS+=($!)
wait_http "http://127.0.0.1:$MOCK/health"

# --- 1. the journal's cost ---------------------------------------------------
log "1. journal on/off, one node, closed loop 64 connections, $D x $REPEATS each"
printf 'journal\trun\tok_per_s\tcpu_us_per_request\n' >"$OUT/journal.tsv"
for r in $(seq "$REPEATS"); do
  for journal in true false; do
    rm -f "$OUT"/db/j.db*
    node_config $FG "sqlite://$OUT/db/j.db" $journal >"$OUT/journal-$journal.toml"
    "$BIN" serve --config "$OUT/journal-$journal.toml" >"$OUT/journal-$journal-$r.log" 2>&1 &
    pid=$!
    wait_http "http://127.0.0.1:$FG/health"
    key=$(make_key "http://127.0.0.1:$FG")
    settle
    before=$(ticks $pid)
    "$BIN" bench --url "http://127.0.0.1:$FG/v1/chat/completions" --key "$key" --concurrency 64 \
      --duration "$D" --warmup 2s --quiet --json "$OUT/journal-$journal-$r.json" >/dev/null
    after=$(ticks $pid)
    kill $pid; wait $pid 2>/dev/null || true
    python3 - "$OUT/journal-$journal-$r.json" "$journal" "$r" "$before" "$after" "$TCK" >>"$OUT/journal.tsv" <<'PY'
import json, sys
report, journal, run, before, after, tck = sys.argv[1:]
t = json.load(open(report))["totals"]
answered = t["ok"] + t["errors"]
# ticks cover the warm-up too: count its requests at the measured rate
cpu_us = (int(after) - int(before)) / int(tck) * 1e6
warm = 2.0 * t["ok_per_s"]
print(f"{journal}\t{run}\t{t['ok_per_s']:.0f}\t{cpu_us / (answered + warm):.1f}")
PY
    log "   journal=$journal run $r: $(tail -1 "$OUT/journal.tsv" | cut -f3) req/s"
  done
done

# --- 2. three nodes behind HAProxy --------------------------------------------
log "2. three nodes, Redis + PostgreSQL, HAProxy; open loop at $RATES req/s, $D each"
redis-server --port $REDIS_PORT --bind 127.0.0.1 --save "" --appendonly yes --appendfsync everysec \
  --dir "$OUT/db" >"$OUT/redis.log" 2>&1 & PIDS+=($!)
REDIS_PID=$!
for _ in $(seq 50); do redis-cli -p $REDIS_PORT ping >/dev/null 2>&1 && break; sleep 0.1; done
db=fgbench_cluster_$(date +%s%N | tail -c 9)
psql "$PG_ADMIN" -qc "CREATE DATABASE $db" >/dev/null
DBS+=("$db")
NODE_PIDS=()
for i in 1 2 3; do
  port=$((FG + i))
  node_config $port "$PG_BASE/$db" true "redis://127.0.0.1:$REDIS_PORT" >"$OUT/node$i.toml"
  "$BIN" serve --config "$OUT/node$i.toml" >"$OUT/node$i.log" 2>&1 & PIDS+=($!)
  NODE_PIDS+=($!)
  wait_http "http://127.0.0.1:$port/health"
done
FLOODGATE_LB_BIND=127.0.0.1:$LB FLOODGATE_NODE_1=127.0.0.1:$((FG + 1)) FLOODGATE_NODE_2=127.0.0.1:$((FG + 2)) \
  FLOODGATE_NODE_3=127.0.0.1:$((FG + 3)) haproxy -db -f deploy/haproxy/haproxy.cfg >"$OUT/haproxy.log" 2>&1 & PIDS+=($!)
HAPROXY_PID=$!
wait_http "http://127.0.0.1:$LB/health"
sleep 3
key=$(make_key "http://127.0.0.1:$LB")
"$BIN" bench --url "http://127.0.0.1:$LB/v1/chat/completions" --key "$key" --rate 500 --duration 3s \
  --quiet --json "$OUT/cluster-warmup.json" >/dev/null

redis_calls() { redis-cli -p $REDIS_PORT info commandstats | tr -d '\r' | awk -F'[=,:]' '/^cmdstat_/ {s += $3} END {print s}'; }
redis_cpu() { redis-cli -p $REDIS_PORT info cpu | tr -d '\r' | awk -F: '/^used_cpu_(sys|user):/ {s += $2} END {print s}'; }
pg_counts() { psql "$PG_ADMIN" -tAc "SELECT xact_commit, tup_inserted FROM pg_stat_database WHERE datname = '$db'"; }
nodes_ticks() { local t=0 p; for p in "${NODE_PIDS[@]}"; do t=$((t + $(ticks "$p"))); done; echo $t; }

printf 'rate\tok_per_s\terrors\tp50_ms\tp99_ms\tredis_cmds_per_1k\tredis_cpu_ms_per_1k\tpg_xact_per_1k\tpg_rows_per_1k\tpg_cpu_ms_per_1k\tnodes_cpu_ms_per_1k\thaproxy_cpu_ms_per_1k\tnode_rss_mib\n' >"$OUT/cluster.tsv"
for rate in $RATES; do
  settle
  rc0=$(redis_calls); rcpu0=$(redis_cpu); pg0=$(pg_counts); pgt0=$(pg_ticks); n0=$(nodes_ticks); h0=$(ticks $HAPROXY_PID)
  "$BIN" bench --url "http://127.0.0.1:$LB/v1/chat/completions" --key "$key" --rate "$rate" --duration "$D" \
    --quiet --json "$OUT/cluster-$rate.json" >/dev/null
  sleep 1   # the ledger's last batch
  rc1=$(redis_calls); rcpu1=$(redis_cpu); pg1=$(pg_counts); pgt1=$(pg_ticks); n1=$(nodes_ticks); h1=$(ticks $HAPROXY_PID)
  rss=0; for p in "${NODE_PIDS[@]}"; do rss=$((rss + $(rss_kib "$p"))); done
  python3 - "$OUT/cluster-$rate.json" "$rate" "$rc0" "$rc1" "$rcpu0" "$rcpu1" "$pg0" "$pg1" "$pgt0" "$pgt1" \
    "$n0" "$n1" "$h0" "$h1" "$TCK" "$rss" >>"$OUT/cluster.tsv" <<'PY'
import json, sys
(report, rate, rc0, rc1, rcpu0, rcpu1, pg0, pg1, pgt0, pgt1, n0, n1, h0, h1, tck, rss) = sys.argv[1:]
r = json.load(open(report))
t = r["totals"]
n = (t["ok"] + t["errors"]) / 1000.0
x0, i0 = map(int, pg0.split("|")); x1, i1 = map(int, pg1.split("|"))
tck = int(tck)
ms = lambda a, b: (int(b) - int(a)) / tck * 1000 / n
lat = r["latency_ms"]
print("\t".join([rate, f"{t['ok_per_s']:.0f}", str(t["errors"] + t["dropped"]), f"{lat['p50']:.2f}", f"{lat['p99']:.2f}",
    f"{(int(rc1) - int(rc0)) / n:.0f}", f"{(float(rcpu1) - float(rcpu0)) * 1000 / n:.1f}",
    f"{(x1 - x0) / n:.1f}", f"{(i1 - i0) / n:.0f}", f"{ms(pgt0, pgt1):.1f}", f"{ms(n0, n1):.1f}", f"{ms(h0, h1):.1f}",
    f"{int(rss) / 3 / 1024:.0f}"]))
PY
  log "   $rate req/s: $(tail -1 "$OUT/cluster.tsv" | cut -f2-5)"
done

{
  echo "# Cluster sizing run $RUN"
  echo
  echo "commit $(git rev-parse --short HEAD), $(nproc) cores, $(($(date +%s) - STARTED)) s"
  echo
  echo "## 1. Journal on/off (one node, 64 connections, $D)"
  echo
  column -t -s $'\t' "$OUT/journal.tsv"
  echo
  echo "## 2. Three nodes behind HAProxy, per 1,000 requests"
  echo
  column -t -s $'\t' "$OUT/cluster.tsv"
} >"$OUT/summary.md"
cat "$OUT/summary.md"
