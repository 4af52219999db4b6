#!/usr/bin/env bash
# The job queue's engine against BullMQ, on the same Redis, side by side:
# jobs/s through the queue alone (a no-op handler), submit and process, at
# the same job count and concurrency. Each repeat runs, in turn:
#   1. ours: `cargo bench -p floodgate-core --bench queue` (its binary),
#      SQLite at BATCH and EXTRA_BATCH, then Redis at EXTRA_BATCH, at BATCH
#      with FETCH_NEXT=0 (complete, then lease), and at BATCH (workers
#      finish a job with complete_and_lease, as BullMQ's fetch their next
#      job when they finish one), each a separate process, the Redis ones
#      on a fresh key prefix;
#   2. BullMQ (bench/bullmq/bench.mjs): `add` from CONCURRENCY producers,
#      then `addBulk`, each with a Worker of `concurrency: CONCURRENCY`,
#      completed jobs kept (as ours keeps results); REMOVE=1 adds runs with
#      `removeOnComplete: true`.
# ours, BullMQ, ours, BullMQ, … so drifts of the machine hit both alike.
# The ratio ours/BullMQ is taken within each repeat: Floodgate on Redis at
# BATCH against BullMQ's `add` run.
# Results: bench/out/queue-<UTC time>/ (raw output, env.txt, summary.md).
# Traffic stays on the given Redis, which must be on 127.0.0.0/8; every run
# is bounded (JOBS jobs, and a timeout per process).
#
#   bench/queue.sh               full run: JOBS=10000, REPEATS=3
#   QUICK=1 bench/queue.sh       a short smoke run: JOBS=2000, REPEATS=1 (its ratios
#                                mean nothing: BullMQ, node's JIT, needs ~10,000 jobs
#                                to reach its pace)
#   JOBS, CONCURRENCY (16), BATCH (1), EXTRA_BATCH (16, 0 for none), REPEATS,
#   REMOVE=1, FLOODGATE_BENCH_REDIS_URL (redis://127.0.0.1:6379)
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then JOBS=${JOBS:-2000}; REPEATS=${REPEATS:-1}; else JOBS=${JOBS:-10000}; REPEATS=${REPEATS:-3}; fi
CONCURRENCY=${CONCURRENCY:-16}
BATCH=${BATCH:-1}
EXTRA_BATCH=${EXTRA_BATCH:-16}
REMOVE=${REMOVE:-0}
REDIS_URL=${FLOODGATE_BENCH_REDIS_URL:-redis://127.0.0.1:6379}
export JOBS CONCURRENCY REMOVE FLOODGATE_BENCH_REDIS_URL=$REDIS_URL
RUN=queue-$(date -u +%Y%m%dT%H%M%SZ)
OUT=bench/out/$RUN
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
# shellcheck source=bench/lib.sh
. bench/lib.sh   # the script runs from the repository root (cd above)
STARTED=$(date +%s)

host=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.urlparse(sys.argv[1]).hostname or "")' "$REDIS_URL")
case "$host" in
  127.*|localhost) ;;
  *) log "refusing $REDIS_URL: the bench only talks to a Redis on 127.0.0.0/8"; exit 1 ;;
esac
port=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.urlparse(sys.argv[1]).port or 6379)' "$REDIS_URL")
if ! redis-cli -h "$host" -p "$port" ping >/dev/null 2>&1; then
  log "no Redis answers at $REDIS_URL (start one: redis-server --daemonize yes)"; exit 1
fi

log "building (cargo bench -p floodgate-core --bench queue --no-run)"
BIN=$(cargo bench -q -p floodgate-core --bench queue --no-run --message-format=json 2>>"$OUT/build.log" \
  | python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "queue" and m.get("executable"):
        print(m["executable"])')
[ -x "$BIN" ] || { log "no bench binary (see $OUT/build.log)"; exit 1; }
if [ ! -d bench/bullmq/node_modules ]; then
  log "npm ci (bench/bullmq)"
  (cd bench/bullmq && npm ci --no-audit --no-fund >>"$OUT/build.log" 2>&1)
fi

{
  echo "commit	$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates bench || echo ' (with uncommitted changes)')"
  echo "jobs	$JOBS"; echo "concurrency	$CONCURRENCY"; echo "batch	$BATCH (and $EXTRA_BATCH)"; echo "repeats	$REPEATS"
  echo "redis	$(redis-cli -h "$host" -p "$port" info server | tr -d '\r' | awk -F: '/^redis_version/ {print $2}') at $REDIS_URL"
  echo "bullmq	$(node -p 'require("./bench/bullmq/node_modules/bullmq/package.json").version')"
  echo "ioredis	$(node -p 'require("./bench/bullmq/node_modules/ioredis/package.json").version')"
  echo "node	$(node --version)"
  echo "rustc	$(rustc --version)"
  echo "cpus	$(nproc)"
  echo "ours	$BIN" | sed "s#$PWD/##"
} >"$OUT/env.txt"

ours() { # repeat name env...
  local i=$1 name=$2; shift 2
  settle
  log "repeat $i: floodgate $name"
  echo "$i-floodgate-$name	env $* JOBS=$JOBS CONCURRENCY=$CONCURRENCY $(basename "$BIN")" >>"$OUT/commands.tsv"
  env "$@" timeout 600 "$BIN" >"$OUT/$i-floodgate-$name.txt" 2>&1 || log "  (exited with $?)"
  grep -v '^JSON ' "$OUT/$i-floodgate-$name.txt" | sed 's/^/  /' | tee -a "$OUT/run.log"
}
bullmq() { # repeat mode
  local i=$1 mode=$2
  settle
  log "repeat $i: bullmq $mode"
  echo "$i-bullmq-$mode	MODES=$mode REMOVE=$REMOVE JOBS=$JOBS CONCURRENCY=$CONCURRENCY node bench/bullmq/bench.mjs" >>"$OUT/commands.tsv"
  MODES=$mode timeout 600 node bench/bullmq/bench.mjs >"$OUT/$i-bullmq-$mode.txt" 2>&1 || log "  (exited with $?)"
  grep -v '^JSON ' "$OUT/$i-bullmq-$mode.txt" | sed 's/^/  /' | tee -a "$OUT/run.log"
}

for i in $(seq "$REPEATS"); do
  ours "$i" sqlite BACKENDS=sqlite BATCH="$BATCH" EXTRA_BATCH="$EXTRA_BATCH"
  if [ "$EXTRA_BATCH" -gt 0 ] && [ "$EXTRA_BATCH" != "$BATCH" ]; then
    ours "$i" redis-b"$EXTRA_BATCH" BACKENDS=redis BATCH="$EXTRA_BATCH" EXTRA_BATCH=0
  fi
  ours "$i" redis-b"$BATCH"-nofetch BACKENDS=redis BATCH="$BATCH" EXTRA_BATCH=0 FETCH_NEXT=0
  # The two the ratio compares, one right after the other: a machine that
  # gets busier for a while slows both.
  ours "$i" redis-b"$BATCH" BACKENDS=redis BATCH="$BATCH" EXTRA_BATCH=0
  bullmq "$i" add
  bullmq "$i" bulk
done

# --- summary ------------------------------------------------------------------
python3 - "$OUT" "$(( $(date +%s) - STARTED ))" "$BATCH" >"$OUT/summary.md" <<'PY'
import glob, json, os, re, statistics, sys
out, elapsed, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
env = dict(line.rstrip("\n").split("\t", 1) for line in open(f"{out}/env.txt"))
print(f"# queue bench {os.path.basename(out)} (commit {env['commit']}, {elapsed} s)\n")
print(f"Redis {env['redis']}; BullMQ {env['bullmq']} (ioredis {env['ioredis']}, node {env['node']}); "
      f"{env['rustc']}; {env['cpus']} CPUs. Jobs/s through the queue alone, a no-op handler; "
      "process is timed from the first completion to the last; "
      "e2e is submit → complete, mostly the wait in the queue (all jobs are submitted before the workers start). "
      "Redis columns: its work during the process phase (INFO commandstats and cpu), per job; "
      "client CPU: the bench process's own during the process phase, per job.\n")
rows = []
for path in sorted(glob.glob(f"{out}/*-*.txt")):
    m = re.match(r"(\d+)-", os.path.basename(path))
    if not m: continue
    for line in open(path):
        if line.startswith("JSON "):
            r = json.loads(line[5:]); r["repeat"] = int(m.group(1)); rows.append(r)
def label(r):
    if r["engine"] == "bullmq":
        return "BullMQ " + ("addBulk" if r["mode"] == "bulk" else "add") + (", removeOnComplete" if r["remove_on_complete"] else "")
    busy = f" ({r['busy_retries']} calls retried: database is locked)" if r.get("busy_retries") else ""
    return "Floodgate " + r["backend"] + ("" if r.get("fetch_next", True) else " (complete, then lease)") + busy
def is_ours(r): return r["engine"] == "floodgate" and r["backend"] == "redis" and r["batch"] == batch and r.get("fetch_next", True)
def is_ref(r): return r["engine"] == "bullmq" and r["mode"] == "add" and not r["remove_on_complete"]
print("| repeat | backend | jobs | concurrency | batch | submit jobs/s | process jobs/s | whole jobs/s | e2e p50 ms | e2e p99 ms | Redis scripts/job | Redis commands/job | Redis CPU µs/job | Redis busy | client CPU µs/job | ratio ours/BullMQ: submit | process |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
ratios = []
order = lambda r: (r["repeat"], r["engine"] != "floodgate", r["backend"], r["batch"], not r.get("fetch_next", True), r.get("mode", ""), r.get("remove_on_complete", False))
for r in sorted(rows, key=order):
    ref = next((x for x in rows if is_ref(x) and x["repeat"] == r["repeat"]), None)
    w = (r.get("redis") or {}).get("process")
    cells = [r["repeat"], label(r), r["jobs"], r["concurrency"], r["batch"],
             f"{r['submit_per_s']:,.0f}", f"{r['process_per_s']:,.0f}", f"{r['whole_per_s']:,.0f}",
             f"{r['e2e_p50_ms']:.0f}", f"{r['e2e_p99_ms']:.0f}"]
    cells += [f"{w['scripts_per_job']:.2f}", f"{w['commands_per_job']:.1f}", f"{w['cpu_us_per_job']:.1f}", f"{100 * w['busy']:.0f} %"] if w else ["–"] * 4
    c = r.get("client_cpu_us_per_job")
    cells += [f"{c['process']:.1f}" if c else "–"]
    if r["engine"] == "floodgate" and r["backend"] == "redis" and ref:
        s, p = r["submit_per_s"] / ref["submit_per_s"], r["process_per_s"] / ref["process_per_s"]
        cells += [f"{s:.2f}×", f"**{p:.2f}×**" if is_ours(r) else f"{p:.2f}×"]
        if is_ours(r): ratios.append((s, p))
    else:
        cells += ["", ""]
    print("| " + " | ".join(str(c) for c in cells) + " |")
print()
if ratios:
    med = lambda xs: statistics.median(xs)
    ps = [p for _, p in ratios]
    print(f"Floodgate on Redis (batch {batch}, complete_and_lease) against BullMQ `add`, same repeat: process "
          f"{', '.join(f'{p:.2f}×' for p in ps)} (median {med(ps):.2f}×, min {min(ps):.2f}×); submit "
          f"{', '.join(f'{s:.2f}×' for s, _ in ratios)} (median {med([s for s, _ in ratios]):.2f}×). Target: process ≥ 2×.")
    if rows and min(r["jobs"] for r in rows) < 10000:
        print("\nFewer than 10,000 jobs: BullMQ (node's JIT) has not reached its pace, so these ratios overstate ours.")
else:
    print("No ratio: a run is missing (see run.log).")
PY
log "summary: $OUT/summary.md"
cat "$OUT/summary.md"
