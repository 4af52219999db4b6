#!/usr/bin/env bash
# The job queue end to end, through `floodgate serve` and the mock upstream
# (each job a real chat completion: admission, router, provider adapter,
# ledger, result stored), on the embedded SQLite queue and on Redis:
#   1. throughput: N jobs submitted over HTTP (32 client threads) to one
#      node running W workers; submit rate, and completions per second from
#      the first submission to the N-th completion. Then the same N queued
#      with no worker running and drained by a node of W workers (the
#      queue's processing rate alone, the submission off the clock).
#   2. kill -9: N jobs (10,000 in the full run) submitted against an upstream
#      that answers in 100 ms; when about a third are done, and jobs are
#      running on it, the node running them is killed with SIGKILL. SQLite: the
#      node is started again on its files. Redis: two worker nodes share the
#      queue and the survivor picks up the dead node's leases when they
#      expire (lease = 3 s here). Then every submitted job is read back:
#      the target is 0 lost (every one completed, none missing).
# Results: bench/out/jobs-<UTC time>/ (logs, JSON lines, summary.md).
# Every process it starts is stopped at the end; traffic stays on 127.0.0.0/8;
# every wait is bounded in time.
#
#   bench/jobs.sh               full run (about 5 minutes after the build)
#   QUICK=1 bench/jobs.sh       a short smoke run of every step
#   STEPS="2" bench/jobs.sh     only some sections
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=${QUICK:-0}
STEPS=${STEPS:-1 2}
BACKENDS=${BACKENDS:-sqlite redis}
step() { case " $STEPS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
if [ "$QUICK" = 1 ]; then N=${N:-1000}; KILL_N=${KILL_N:-2000}; else N=${N:-5000}; KILL_N=${KILL_N:-10000}; fi
WORKERS=${WORKERS:-64}
RUN=jobs-$(date -u +%Y%m%dT%H%M%SZ)
OUT=bench/out/$RUN
mkdir -p "$OUT/db"
OUT=$(cd "$OUT" && pwd)
# shellcheck source=bench/lib.sh
. bench/lib.sh   # the script runs from the repository root (cd above)

MOCK=19141 SLOW_MOCK=19142 FG=19341 FG2=19342
FG_KEY=bench-floodgate-master-key-0123456789
REDIS_URL=${FLOODGATE_BENCH_REDIS_URL:-redis://127.0.0.1:6379}
REDIS_HOSTPORT=${REDIS_URL#redis://}; REDIS_HOSTPORT=${REDIS_HOSTPORT%%/*}
REDIS_PREFIX="fgbenchjobs$(date +%s):"
CLIENT="python3 bench/jobs.py"

ulimit -n "$(ulimit -Hn)"
log "building (release binary)"
cargo build --release --quiet -p floodgate
BIN=target/release/floodgate
echo "commit $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (with uncommitted changes)')" >"$OUT/commit.txt"

declare -A NODE_PIDS=()
MOCK_PID="" SLOW_PID=""
cleanup() {
  for pid in "${NODE_PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  [ -n "$MOCK_PID" ] && kill "$MOCK_PID" 2>/dev/null || true
  [ -n "$SLOW_PID" ] && kill "$SLOW_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  redis-cli -h "${REDIS_HOSTPORT%:*}" -p "${REDIS_HOSTPORT#*:}" --scan --pattern "$REDIS_PREFIX*" 2>/dev/null \
    | xargs -r redis-cli -h "${REDIS_HOSTPORT%:*}" -p "${REDIS_HOSTPORT#*:}" del >/dev/null 2>&1 || true
}
trap cleanup EXIT

"$BIN" mock-upstream --port $MOCK >"$OUT/mock.log" 2>&1 & MOCK_PID=$!
wait_http "http://127.0.0.1:$MOCK/health"
# Step 2's upstream answers after 100 ms, so the killed node has jobs in flight.
"$BIN" mock-upstream --port $SLOW_MOCK --latency-ms 100 >"$OUT/slow-mock.log" 2>&1 & SLOW_PID=$!
wait_http "http://127.0.0.1:$SLOW_MOCK/health"
echo "mocks	floodgate mock-upstream --port $MOCK; floodgate mock-upstream --port $SLOW_MOCK --latency-ms 100" >>"$OUT/commands.tsv"

config() { # backend db-name workers prefix [mock-port]
  cat <<TOML
master_key = "\${FG_KEY}"

[log]
level = "warn"

[database]
url = "sqlite://$OUT/db/$2.db"
ledger_spill_path = "$OUT/db/$2.spill"

[[providers]]
name = "fast"
kind = "openai-compatible"
base_url = "http://127.0.0.1:${5:-$MOCK}/v1"
keys = ["bench-upstream-key"]

[[models]]
name = "gpt"
targets = ["fast/gpt-4o-mini"]

[queue]
workers = $3
lease = "3s"
poll_interval = "50ms"
TOML
  if [ "$1" = redis ]; then
    printf '\n[state]\nbackend = "redis"\nredis_url = "%s"\nredis_prefix = "%s"\n' "$REDIS_URL" "$4"
  fi
}
start_node() { # name backend db workers port prefix [mock-port]
  config "$2" "$3" "$4" "$6" "${7:-$MOCK}" >"$OUT/$1.toml"
  echo "$1	FG_KEY=\$FG_KEY floodgate serve --config \$OUT/$1.toml --listen 127.0.0.1:$5" >>"$OUT/commands.tsv"
  FG_KEY=$FG_KEY "$BIN" serve --config "$OUT/$1.toml" --listen "127.0.0.1:$5" >>"$OUT/$1.log" 2>&1 &
  NODE_PIDS[$1]=$!
  wait_http "http://127.0.0.1:$5/health"
}
stop_node() { # name [signal]
  local pid=${NODE_PIDS[$1]:-}
  [ -z "$pid" ] && return 0
  kill "-${2:-TERM}" "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  unset "NODE_PIDS[$1]"
}
url() { echo "http://127.0.0.1:$1"; }
queue_of() { # port -> "completed busy"
  curl -s -H "Authorization: Bearer $FG_KEY" "$(url "$1")/admin/queue" \
    | python3 -c 'import json,sys; q=json.load(sys.stdin); print(q["completed"], q["node"]["busy"])'
}

RESULTS=$OUT/results.jsonl
record() { # json-fields...
  echo "{$*}" >>"$RESULTS"
  log "$*"
}

for backend in $BACKENDS; do
  if step 1; then
    prefix="${REDIS_PREFIX}t1$backend:"
    log "[$backend] 1a: $N jobs submitted to a node running $WORKERS workers"
    settle
    start_node t1 "$backend" "t1-$backend" "$WORKERS" $FG "$prefix"
    since=$(date +%s.%N)
    sub=$($CLIENT submit --url "$(url $FG)" --key "$FG_KEY" --count "$N" --concurrency 32 --ids "$OUT/t1-$backend.ids")
    done_=$($CLIENT wait --url "$(url $FG)" --key "$FG_KEY" --completed "$N" --since "$since" --timeout 300)
    secs=$(echo "$done_" | python3 -c 'import json,sys; print(json.load(sys.stdin)["seconds"])')
    record "\"step\":\"e2e\",\"backend\":\"$backend\",\"jobs\":$N,\"workers\":$WORKERS,\"submit\":$sub,\"done\":$done_,\"jobs_per_s\":$(python3 -c "print(round($N/$secs,1))")"
    stop_node t1

    log "[$backend] 1b: $N jobs queued with no worker, then drained by $WORKERS workers"
    prefix="${REDIS_PREFIX}t2$backend:"
    settle
    start_node t2 "$backend" "t2-$backend" 0 $FG "$prefix"
    sub=$($CLIENT submit --url "$(url $FG)" --key "$FG_KEY" --count "$N" --concurrency 32 --ids "$OUT/t2-$backend.ids")
    if [ "$backend" = sqlite ]; then stop_node t2; fi
    settle
    since=$(date +%s.%N)
    start_node t2w "$backend" "t2-$backend" "$WORKERS" $FG2 "$prefix"
    done_=$($CLIENT wait --url "$(url $FG2)" --key "$FG_KEY" --completed "$N" --since "$since" --timeout 300)
    secs=$(echo "$done_" | python3 -c 'import json,sys; print(json.load(sys.stdin)["seconds"])')
    record "\"step\":\"drain\",\"backend\":\"$backend\",\"jobs\":$N,\"workers\":$WORKERS,\"submit\":$sub,\"done\":$done_,\"jobs_per_s\":$(python3 -c "print(round($N/$secs,1))")"
    stop_node t2w; stop_node t2
  fi

  if step 2; then
    prefix="${REDIS_PREFIX}k$backend:"
    ids=$OUT/kill-$backend.ids
    log "[$backend] 2: $KILL_N jobs, kill -9 of a worker node at about a third done"
    settle
    # The node that is killed, and on Redis a second worker node that survives.
    start_node victim "$backend" "k-$backend" "$((WORKERS / 2))" $FG "$prefix" $SLOW_MOCK
    if [ "$backend" = redis ]; then start_node survivor redis "k2-$backend" "$((WORKERS / 2))" $FG2 "$prefix" $SLOW_MOCK; fi
    $CLIENT submit --url "$(url $FG)" --key "$FG_KEY" --count "$KILL_N" --concurrency 32 --ids "$ids" >"$OUT/kill-$backend.submit.json" &
    submitter=$!
    c=0 busy=0
    for _ in $(seq 1200); do
      read -r c busy < <(queue_of $FG 2>/dev/null || echo "0 0")
      [ "$c" -ge $((KILL_N / 3)) ] && [ "$busy" -gt 0 ] && break
      sleep 0.05
    done
    log "[$backend] killing the node with SIGKILL at $c completed, $busy of its jobs running"
    stop_node victim KILL
    wait "$submitter" || true
    submitted=$(wc -l <"$ids")
    if [ "$backend" = sqlite ]; then
      start_node victim sqlite "k-$backend" "$WORKERS" $FG "$prefix" $SLOW_MOCK
      check=$FG
    else
      check=$FG2
    fi
    done_=$($CLIENT wait --url "$(url $check)" --key "$FG_KEY" --completed "$submitted" --timeout 300 || true)
    verify=$($CLIENT verify --url "$(url $check)" --key "$FG_KEY" --ids "$ids")
    record "\"step\":\"kill\",\"backend\":\"$backend\",\"submitted\":$submitted,\"killed_at_completed\":$c,\"running_on_killed_node\":$busy,\"submit\":$(cat "$OUT/kill-$backend.submit.json"),\"done\":$done_,\"verify\":$verify"
    stop_node victim; stop_node survivor
  fi
done

python3 - "$RESULTS" "$OUT/summary.md" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
out = ["| step | backend | jobs | workers | submit jobs/s | completed jobs/s |", "|---|---|---|---|---|---|"]
for r in rows:
    if r["step"] in ("e2e", "drain"):
        out.append(f"| {r['step']} | {r['backend']} | {r['jobs']} | {r['workers']} | {r['submit']['rate']} | {r['jobs_per_s']} |")
out += ["", "| kill -9 | submitted | killed at (completed) | running on the killed node | completed after | missing | not completed | re-run (attempts > 1) |", "|---|---|---|---|---|---|---|---|"]
for r in rows:
    if r["step"] == "kill":
        v = r["verify"]
        completed = v["by_status"].get("completed", 0)
        out.append(f"| {r['backend']} | {r['submitted']} | {r['killed_at_completed']} | {r['running_on_killed_node']} | {completed} | {v['missing']} | {v['jobs'] - completed - v['missing']} | {v['attempts_over_1']} |")
open(sys.argv[2], "w").write("\n".join(out) + "\n")
print("\n".join(out))
PY
log "results in $OUT"
