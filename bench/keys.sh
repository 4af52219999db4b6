#!/usr/bin/env bash
# The benchmarks of virtual keys, client limits and the ledger, in one run:
#   1. throughput with auth + limits + ledger on, against the suite's config
#      (master key only, SQLite ledger): A = master key; B = a virtual key
#      with rpm, tpm, max_concurrent and a budget, plus per-IP limits
#      (`ip`, `ip_ai`), all far above what two cores can send, so every check
#      runs and none refuses; C = B with the limits in Redis
#      (`state.backend = "redis"`); P = B with the keys and ledger in
#      PostgreSQL. Closed loop, interleaved A B C P, A B C P, ... with
#      floodgate restarted between runs.
#   2. the ledger under that load: its buffer (`floodgate_ledger_pending_records`,
#      sampled every 0.5 s), records spilled, and rows written against
#      requests answered, for SQLite (B) and PostgreSQL (P).
#   3. Redis commands per request in C, from Redis's own `INFO commandstats`.
#   4. how long a key created or revoked on one node takes to work (or stop
#      working) on another node sharing the database, 10 times each.
#   5. the limiter's check cost in memory (criterion).
# Results: bench/out/keys-<UTC time>/ (reports, scrapes, logs, summary.md).
# Every process it starts is stopped at the end; traffic stays on 127.0.0.0/8;
# every load is bounded in time.
#
#   bench/keys.sh               full run (about 10 minutes after the builds)
#   QUICK=1 bench/keys.sh       a short smoke run of every step
#   STEPS="1 5" bench/keys.sh   only some sections
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=${QUICK:-0}
STEPS=${STEPS:-1 2 3 4 5}
step() { case " $STEPS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
CONCURRENCY=64
CONFIGS=${CONFIGS:-a b c p}
if [ "$QUICK" = 1 ]; then D=3s; REPEATS=${REPEATS:-1}; TRIALS=2; else D=15s; REPEATS=${REPEATS:-4}; TRIALS=10; fi
RUN=keys-$(date -u +%Y%m%dT%H%M%SZ)
OUT=bench/out/$RUN
mkdir -p "$OUT/db"
OUT=$(cd "$OUT" && pwd)
# shellcheck source=bench/lib.sh
. bench/lib.sh   # the script runs from the repository root (cd above)
STARTED=$(date +%s)

MOCK=19121 FG=19321 FG2=19322
FG_KEY=bench-floodgate-master-key-0123456789
FG_URL=http://127.0.0.1:$FG
PG_ADMIN=${FLOODGATE_BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
PG_BASE=${PG_ADMIN%/*}
REDIS_URL=${FLOODGATE_BENCH_REDIS_URL:-redis://127.0.0.1:6379}
REDIS_HOSTPORT=${REDIS_URL#redis://}; REDIS_HOSTPORT=${REDIS_HOSTPORT%%/*}
REDIS_PREFIX="fgbench$(date +%s):"

ulimit -n "$(ulimit -Hn)"
log "building (release binary, limiter criterion bench)"
cargo build --release --quiet -p floodgate
if step 5; then cargo bench --quiet -p floodgate-core --bench limiter --no-run >/dev/null 2>&1; fi
BIN=target/release/floodgate

PIDS=()
FG_PID=""
DBS=()
cleanup() {
  [ -n "$FG_PID" ] && kill "$FG_PID" 2>/dev/null || true
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for db in "${DBS[@]}"; do psql "$PG_ADMIN" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true; done
  redis-cli -h "${REDIS_HOSTPORT%:*}" -p "${REDIS_HOSTPORT#*:}" --scan --pattern "$REDIS_PREFIX*" 2>/dev/null \
    | xargs -r redis-cli -h "${REDIS_HOSTPORT%:*}" -p "${REDIS_HOSTPORT#*:}" del >/dev/null 2>&1 || true
}
trap cleanup EXIT

# CPU ticks of every process named $1 (postgres, redis-server).
proc_ticks() { local t=0 p; for p in $(pgrep -x "$1" || true); do t=$((t + $(awk '{print $14 + $15}' /proc/$p/stat 2>/dev/null || echo 0))); done; echo $t; }
fresh_db() { # name -> URL of a new PostgreSQL database
  local db=fgbench_$1_$(date +%s%N | tail -c 9)
  psql "$PG_ADMIN" -qc "CREATE DATABASE $db" >/dev/null
  DBS+=("$db")
  echo "$PG_BASE/$db"
}
redis_stats() { redis-cli -h "${REDIS_HOSTPORT%:*}" -p "${REDIS_HOSTPORT#*:}" info commandstats | tr -d '\r'; }

"$BIN" mock-upstream --port $MOCK >"$OUT/mock.log" 2>&1 & PIDS+=($!)
echo "mock	floodgate mock-upstream --port $MOCK" >>"$OUT/commands.tsv"
wait_http "http://127.0.0.1:$MOCK/health"

# --- configs ---------------------------------------------------------------
config() { # name database-url with-limits(0/1) redis(0/1)
  cat <<TOML
master_key = "\${FG_KEY}"

[log]
format = "json"

[database]
url = "$2"

[[providers]]
name = "fast"
kind = "openai-compatible"
base_url = "http://127.0.0.1:$MOCK/v1"
keys = ["bench-upstream-key"]

[[models]]
name = "gpt-4o-mini"
targets = ["fast/gpt-4o-mini"]
TOML
  if [ "$3" = 1 ]; then
    printf '\n[limits]\nip = { requests = 1000000000, per = "15m" }\nip_ai = { requests = 1000000000, per = "5m" }\n'
  fi
  if [ "$4" = 1 ]; then
    printf '\n[state]\nbackend = "redis"\nredis_url = "%s"\nredis_prefix = "%s"\n' "$REDIS_URL" "$REDIS_PREFIX"
  fi
}
url_for() { # config name -> database URL
  case $1 in p) fresh_db p ;; *) echo "sqlite://$OUT/db/$1.db" ;; esac
}
write_config() { # cfg
  case $1 in
    a) config a "$(url_for a)" 0 0 ;;
    b) config b "$(url_for b)" 1 0 ;;
    c) config c "$(url_for c)" 1 1 ;;
    p) config p "$(url_for p)" 1 0 ;;
  esac >"$OUT/floodgate-$1.toml"
  FG_KEY=$FG_KEY "$BIN" check-config "$OUT/floodgate-$1.toml" >>"$OUT/check-config.log" 2>&1
}
start_floodgate() { # config log [port]
  local port=${3:-$FG}
  echo "serve	FG_KEY=\$FG_KEY floodgate serve --config $1 --listen 127.0.0.1:$port" | sed "s#$OUT#\$OUT#g" >>"$OUT/commands.tsv"
  FG_KEY=$FG_KEY "$BIN" serve --config "$1" --listen 127.0.0.1:$port >"$2" 2>&1 &
  FG_PID=$!
  wait_http "http://127.0.0.1:$port/health"
}
stop_floodgate() { kill "$FG_PID" 2>/dev/null || true; wait "$FG_PID" 2>/dev/null || true; FG_PID=""; }
sample_ledger() { # file: every 0.5 s, "pending spilled written" from /metrics, until killed
  while true; do
    curl -s "$FG_URL/metrics" | awk '
      /^floodgate_ledger_pending_records/ {p=$2}
      /^floodgate_ledger_records_spilled_total/ {s=$2}
      /^floodgate_ledger_records_written_total/ {w=$2}
      END {print (p==""?0:p), (s==""?0:s), (w==""?0:w)}' >>"$1"
    sleep 0.5
  done
}

# --- 1-3. throughput, ledger, Redis commands ---------------------------------
if step 1 || step 2 || step 3; then
for i in $(seq $REPEATS); do
  for cfg in $CONFIGS; do
    name=tp-$i-$cfg
    rm -f "$OUT/db/$cfg.db"*
    write_config "$cfg"
    start_floodgate "$OUT/floodgate-$cfg.toml" "$OUT/$name.log"
    key=$FG_KEY
    [ "$cfg" != a ] && key=$(make_key "$FG_URL")
    "$BIN" bench --quiet --url "$FG_URL/v1/chat/completions" --key "$key" --model gpt-4o-mini \
      --concurrency $CONCURRENCY --duration 2s >/dev/null 2>&1 || true
    settle
    [ "$cfg" = c ] && redis_stats >"$OUT/$name-redis-before.txt"
    curl -s -H "Authorization: Bearer $FG_KEY" "$FG_URL/admin/usage?group_by=" >"$OUT/$name-usage-before.json" || true
    sample_ledger "$OUT/$name-ledger.txt" & SAMPLER=$!
    log "bench $name"
    PG0=$(proc_ticks postgres); RD0=$(proc_ticks redis-server); FG0=$(awk '{print $14 + $15}' /proc/$FG_PID/stat); SYS0=$(sys_busy)
    args=(bench --quiet --url "$FG_URL/v1/chat/completions" --key KEY --model gpt-4o-mini --concurrency $CONCURRENCY --duration $D --label "$name" --json "$OUT/$name.json")
    echo "$name	floodgate ${args[*]}" | sed "s#$OUT#\$OUT#g" >>"$OUT/commands.tsv"
    args[5]=$key
    "$BIN" "${args[@]}" >"$OUT/$name.txt" 2>&1 || log "  (bench exited with $?)"
    echo "{\"name\":\"$name\",\"floodgate\":$(( $(awk '{print $14 + $15}' /proc/$FG_PID/stat) - FG0 )),\"postgres\":$(( $(proc_ticks postgres) - PG0 )),\"redis\":$(( $(proc_ticks redis-server) - RD0 )),\"machine\":$(( $(sys_busy) - SYS0 ))}" >>"$OUT/cpu.jsonl"
    sleep 1.5   # the last batches reach the database
    kill $SAMPLER 2>/dev/null; wait $SAMPLER 2>/dev/null || true
    [ "$cfg" = c ] && redis_stats >"$OUT/$name-redis-after.txt"
    curl -s "$FG_URL/metrics" >"$OUT/$name-metrics.txt" || true
    curl -s -H "Authorization: Bearer $FG_KEY" "$FG_URL/admin/usage?group_by=" >"$OUT/$name-usage.json" || true
    stop_floodgate
  done
done
fi

# --- 4. a key's changes reach another node ----------------------------------
if step 4; then
  url=$(fresh_db prop)
  config b "$url" 0 0 >"$OUT/floodgate-prop.toml"
  start_floodgate "$OUT/floodgate-prop.toml" "$OUT/prop-a.log" $FG; PROP_A=$FG_PID
  start_floodgate "$OUT/floodgate-prop.toml" "$OUT/prop-b.log" $FG2; PROP_B=$FG_PID; FG_PID=""
  PIDS+=($PROP_A $PROP_B)
  code_on_b() { curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $1" "http://127.0.0.1:$FG2/v1/models"; }
  ms() { echo $(( $(date +%s%N) / 1000000 )); }
  for t in $(seq $TRIALS); do
    created=$(curl -s -H "Authorization: Bearer $FG_KEY" -H 'content-type: application/json' "$FG_URL/admin/keys" -d '{"name": "prop"}')
    t0=$(ms)
    key=$(echo "$created" | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
    id=$(echo "$created" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
    until [ "$(code_on_b "$key")" = 200 ]; do sleep 0.005; done
    t1=$(ms)
    curl -s -o /dev/null -X DELETE -H "Authorization: Bearer $FG_KEY" "$FG_URL/admin/keys/$id"
    t2=$(ms)
    until [ "$(code_on_b "$key")" = 401 ]; do sleep 0.005; done
    t3=$(ms)
    echo "{\"created_ms\": $((t1 - t0)), \"revoked_ms\": $((t3 - t2))}" >>"$OUT/propagation.jsonl"
  done
  kill $PROP_A $PROP_B 2>/dev/null || true
  log "propagation: $(cat "$OUT/propagation.jsonl" | tr '\n' ' ')"
fi

# --- 5. the limiter's check (criterion) -------------------------------------
if step 5; then
  log "cargo bench -p floodgate-core --bench limiter"
  echo "criterion	cargo bench -p floodgate-core --bench limiter" >>"$OUT/commands.tsv"
  cargo bench --quiet -p floodgate-core --bench limiter >"$OUT/criterion.txt" 2>&1 || log "  (cargo bench exited with $?)"
fi

# --- summary ----------------------------------------------------------------
python3 - "$OUT" "$(( $(date +%s) - STARTED ))" "$(git rev-parse --short HEAD)" "$CONCURRENCY" "$D" >"$OUT/summary.md" <<'PY'
import glob, json, os, re, statistics, sys
out, elapsed, commit, conc, dur = sys.argv[1:]
names = {"a": "A: master key (the suite's config)", "b": "B: virtual key + key/IP limits + budget, SQLite",
         "c": "C: as B, limits in Redis", "p": "P: as B, keys and ledger in PostgreSQL"}
print(f"# keys bench {os.path.basename(out)} (commit {commit}, {elapsed} s)\n")
runs = {}
for path in sorted(glob.glob(f"{out}/tp-*.json")):
    cfg = path.rsplit("-", 1)[1][:-5]
    r = json.load(open(path))
    runs.setdefault(cfg, []).append((path, r))
def rps(r): return r["totals"]["ok_per_s"]
if runs:
    print(f"## 1. Throughput, closed loop, {conc} connections, {dur} per run\n")
    print("| config | runs | ok req/s (median) | each run | errors | ratio to A |")
    print("|---|---|---|---|---|---|")
    base = None
    for cfg in ["a", "b", "c", "p"]:
        if cfg not in runs: continue
        vals = [rps(r) for _, r in runs[cfg]]
        errs = sum(r["totals"]["errors"] + r["totals"]["dropped"] for _, r in runs[cfg])
        med = statistics.median(vals)
        if cfg == "a": base = med
        ratio = f"{med / base:.3f}" if base else "-"
        print(f"| {names[cfg]} | {len(vals)} | {med:,.0f} | {', '.join(f'{v:,.0f}' for v in vals)} | {errs} | {ratio} |")
    print()
    cpu = {}
    if os.path.exists(f"{out}/cpu.jsonl"):
        for line in open(f"{out}/cpu.jsonl"):
            row = json.loads(line); cpu[row["name"]] = row
    if cpu:
        print("CPU during each run (ticks of 10 ms; the machine has 2 cores):\n")
        print("| run | floodgate | postgres | redis-server | whole machine |")
        print("|---|---|---|---|---|")
        for name, row in sorted(cpu.items()):
            print(f"| {name} | {row['floodgate']} | {row['postgres']} | {row['redis']} | {row['machine']} |")
        print()
    print("## 2. The ledger under that load\n")
    print("| run | requests answered | rows written meanwhile | spilled | buffer max (records) | buffer at end |")
    print("|---|---|---|---|---|---|")
    for cfg in ["a", "b", "p"]:
        for path, r in runs.get(cfg, []):
            name = os.path.basename(path)[:-5]
            samples = [l.split() for l in open(f"{out}/{name}-ledger.txt")] if os.path.exists(f"{out}/{name}-ledger.txt") else []
            pend = [float(s[0]) for s in samples if len(s) == 3]
            spilled = max([float(s[1]) for s in samples if len(s) == 3] or [0])
            try:
                written = (json.load(open(f"{out}/{name}-usage.json"))["totals"]["requests"]
                           - json.load(open(f"{out}/{name}-usage-before.json"))["totals"]["requests"])
            except Exception: written = "?"
            answered = r["totals"]["ok"] + r["totals"]["errors"]
            print(f"| {name} | {answered} | {written} | {spilled:.0f} | {max(pend or [0]):.0f} | {pend[-1] if pend else 0:.0f} |")
    print()
    print("## 3. Redis commands per request (config C, from INFO commandstats)\n")
    def stats(path):
        d = {}
        for line in open(path):
            m = re.match(r"cmdstat_(\w+):calls=(\d+)", line)
            if m: d[m.group(1)] = int(m.group(2))
        return d
    for path, r in runs.get("c", []):
        name = os.path.basename(path)[:-5]
        if not os.path.exists(f"{out}/{name}-redis-after.txt"): continue
        b, a = stats(f"{out}/{name}-redis-before.txt"), stats(f"{out}/{name}-redis-after.txt")
        n = r["totals"]["ok"] + r["totals"]["errors"]
        delta = {k: a.get(k, 0) - b.get(k, 0) for k in a if a.get(k, 0) - b.get(k, 0) > 0}
        print(f"- {name}: {n} requests; " + ", ".join(f"{k} {v} ({v / n:.2f}/request)" for k, v in sorted(delta.items())))
    print()
prop = f"{out}/propagation.jsonl"
if os.path.exists(prop):
    rows = [json.loads(l) for l in open(prop)]
    c = sorted(x["created_ms"] for x in rows); v = sorted(x["revoked_ms"] for x in rows)
    print("## 4. A key's changes on another node (two nodes, one PostgreSQL)\n")
    print(f"- created on A → accepted on B: median {statistics.median(c)} ms, max {max(c)} ms ({len(c)} trials)")
    print(f"- revoked on A → refused on B: median {statistics.median(v)} ms, max {max(v)} ms\n")
crit = f"{out}/criterion.txt"
if os.path.exists(crit):
    print("## 5. The limiter's check in memory (criterion)\n")
    for line in open(crit):
        if "time:" in line or re.match(r"^\S.*", line) and "Benchmarking" not in line and "Found" not in line and "outlier" not in line.lower():
            print("    " + line.rstrip())
PY
log "summary: $OUT/summary.md"
cat "$OUT/summary.md"
