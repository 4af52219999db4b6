#!/usr/bin/env bash
# The benchmarks of the response cache, in one run:
#   1. an L1 hit served end to end against the uncached path of the same run:
#      U = cache off, H = cache on (the alias caches sampled answers, so the
#      bench's identical requests are all hits after the first), D = the
#      mock directly (the load generator's own floor). Open loop at 1,000
#      req/s for latency percentiles, as the client sees them and as
#      Floodgate's access log times each request (start of the request to
#      its last body byte, to the microsecond); then closed loop (64
#      connections) for throughput, with the access log off; interleaved
#      U H U H ... with floodgate restarted.
#   2. an L2 hit: the cache's layers without HTTP (`cargo bench --bench cache`:
#      key hashing, L1 get, Redis GET + decode from 1 and 32 tasks).
#   3. a thundering herd: 1,000 identical requests sent within 10 ms to a
#      mock that answers after 500 ms; the upstream calls they made, from
#      floodgate's own metrics (3 herds, each a new prompt).
# Results: bench/out/cache-<UTC time>/ (reports, scrapes, logs, summary.md).
# Every process it starts is stopped at the end; traffic stays on 127.0.0.0/8;
# every load is bounded in time.
#
#   bench/cache.sh              full run (about 5 minutes after the builds)
#   QUICK=1 bench/cache.sh      a short smoke run of every step
#   STEPS="1 3" bench/cache.sh  only some sections
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=${QUICK:-0}
STEPS=${STEPS:-1 2 3}
step() { case " $STEPS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
if [ "$QUICK" = 1 ]; then D=3s; REPEATS=${REPEATS:-1}; HERDS=1; else D=15s; REPEATS=${REPEATS:-3}; HERDS=3; fi
RUN=cache-$(date -u +%Y%m%dT%H%M%SZ)
OUT=bench/out/$RUN
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
# shellcheck source=bench/lib.sh
. bench/lib.sh   # the script runs from the repository root (cd above)
STARTED=$(date +%s)

MOCK=19131 SLOW_MOCK=19132 FG=19331
FG_KEY=bench-floodgate-master-key-0123456789
FG_URL=http://127.0.0.1:$FG

ulimit -n "$(ulimit -Hn)"
log "building (release binary, cache bench)"
cargo build --release --quiet -p floodgate
if step 2; then cargo bench --quiet -p floodgate-core --bench cache --no-run >/dev/null 2>&1; fi
BIN=target/release/floodgate

PIDS=()
FG_PID=""
cleanup() {
  [ -n "$FG_PID" ] && kill "$FG_PID" 2>/dev/null || true
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT


"$BIN" mock-upstream --port $MOCK >"$OUT/mock.log" 2>&1 & PIDS+=($!)
"$BIN" mock-upstream --port $SLOW_MOCK --latency-ms 500 >"$OUT/slow-mock.log" 2>&1 & PIDS+=($!)
{
  echo "mock	floodgate mock-upstream --port $MOCK"
  echo "slow-mock	floodgate mock-upstream --port $SLOW_MOCK --latency-ms 500"
} >>"$OUT/commands.tsv"
wait_http "http://127.0.0.1:$MOCK/health"
wait_http "http://127.0.0.1:$SLOW_MOCK/health"

config() { # cache(0/1) mock-port
  cat <<TOML
master_key = "\${FG_KEY}"

[log]
format = "json"

[database]
url = "sqlite://$OUT/$1-$2.db"

[[providers]]
name = "fast"
kind = "openai-compatible"
base_url = "http://127.0.0.1:$2/v1"
keys = ["bench-upstream-key"]

[[models]]
name = "gpt-4o-mini"
targets = ["fast/gpt-4o-mini"]
TOML
  if [ "$1" = 1 ]; then
    # The bench sends no temperature: the alias allows caching such answers.
    printf 'cache = { sampled = true }\n\n[cache]\nenabled = true\n'
  fi
}
start_floodgate() { # config log [log filter]
  local filter=${3:-info}
  echo "serve	FG_KEY=\$FG_KEY FLOODGATE_LOG=$filter floodgate serve --config $1 --listen 127.0.0.1:$FG" | sed "s#$OUT#\$OUT#g" >>"$OUT/commands.tsv"
  FG_KEY=$FG_KEY FLOODGATE_LOG=$filter "$BIN" serve --config "$1" --listen 127.0.0.1:$FG >"$2" 2>&1 &
  FG_PID=$!
  wait_http "$FG_URL/health"
}
stop_floodgate() { kill "$FG_PID" 2>/dev/null || true; wait "$FG_PID" 2>/dev/null || true; FG_PID=""; }
bench() { # name args...
  local name=$1; shift
  local url=${URL:-$FG_URL/v1/chat/completions}
  local args=(bench --quiet --url "$url" --key "$FG_KEY" --model gpt-4o-mini --label "$name" --json "$OUT/$name.json" "$@")
  echo "$name	floodgate ${args[*]}" | sed "s#$OUT#\$OUT#g; s#$FG_KEY#\$FG_KEY#g" >>"$OUT/commands.tsv"
  log "bench $name"
  "$BIN" "${args[@]}" >"$OUT/$name.txt" 2>&1 || log "  (bench exited with $?)"
}

# --- 1. L1 hit against the uncached path --------------------------------------
if step 1; then
  config 0 $MOCK >"$OUT/floodgate-u.toml"
  config 1 $MOCK >"$OUT/floodgate-h.toml"
  for f in u h; do FG_KEY=$FG_KEY "$BIN" check-config "$OUT/floodgate-$f.toml" >>"$OUT/check-config.log" 2>&1; done
  for i in $(seq $REPEATS); do
    settle
    URL=http://127.0.0.1:$MOCK/v1/chat/completions bench "open-$i-d" --rate 1000 --duration $D
    for cfg in u h; do
      rm -f "$OUT"/*.db*
      # Open loop with every request's time in the access log.
      start_floodgate "$OUT/floodgate-$cfg.toml" "$OUT/$cfg-$i-access.log" "info,floodgate::access=debug"
      "$BIN" bench --quiet --url "$FG_URL/v1/chat/completions" --key "$FG_KEY" --concurrency 16 --duration 2s >/dev/null 2>&1 || true
      settle
      bench "open-$i-$cfg" --rate 1000 --duration $D
      stop_floodgate
      rm -f "$OUT"/*.db*
      start_floodgate "$OUT/floodgate-$cfg.toml" "$OUT/$cfg-$i.log"
      "$BIN" bench --quiet --url "$FG_URL/v1/chat/completions" --key "$FG_KEY" --concurrency 16 --duration 2s >/dev/null 2>&1 || true
      settle
      bench "closed-$i-$cfg" --concurrency 64 --duration $D
      curl -s "$FG_URL/metrics" >"$OUT/$cfg-$i-metrics.txt" || true
      stop_floodgate
    done
  done
fi

# --- 2. the layers without HTTP (L2 hit) ---------------------------------------
if step 2; then
  log "cargo bench -p floodgate-core --bench cache"
  echo "layers	cargo bench -p floodgate-core --bench cache" >>"$OUT/commands.tsv"
  cargo bench --quiet -p floodgate-core --bench cache >"$OUT/layers.txt" 2>&1 || log "  (cargo bench exited with $?)"
fi

# --- 3. thundering herd -----------------------------------------------------------
if step 3; then
  config 1 $SLOW_MOCK >"$OUT/floodgate-herd.toml"
  start_floodgate "$OUT/floodgate-herd.toml" "$OUT/herd.log"
  for i in $(seq $HERDS); do
    # Each herd a new prompt (a new cache key): 1,000 arrivals in 10 ms.
    bench "herd-$i" --rate 100000 --duration 10ms --connections 1000 --max-in-flight 1000 \
      --prompt-tokens $((20 + 10 * i)) --timeout 30s
    curl -s "$FG_URL/metrics" >"$OUT/herd-$i-metrics.txt"
  done
  stop_floodgate
fi

# --- summary ------------------------------------------------------------------
python3 - "$OUT" "$(( $(date +%s) - STARTED ))" "$(git rev-parse --short HEAD)" "$D" >"$OUT/summary.md" <<'PY'
import glob, json, os, re, statistics, sys
out, elapsed, commit, dur = sys.argv[1:]
print(f"# cache bench {os.path.basename(out)} (commit {commit}, {elapsed} s)\n")
def load(name):
    path = f"{out}/{name}.json"
    return json.load(open(path)) if os.path.exists(path) else None
def metric(path, name, labels=""):
    total = 0.0
    for line in open(path):
        if line.startswith(name) and labels in line:
            total += float(line.rsplit(" ", 1)[1])
    return total
runs = sorted({int(m.group(1)) for p in glob.glob(f"{out}/open-*.json") if (m := re.search(r"open-(\d+)-", p))})
if runs:
    print(f"## 1. L1 hit against the uncached path ({dur} per run)\n")
    print("| run | config | client at 1,000 req/s: p50 ms | p99 ms | p99.9 ms | errors | in Floodgate (access log): p50 µs | p99 µs | p99.9 µs | closed c=64: ok req/s | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    ratios = []
    def served(path, n):
        # The last n requests of the log are the open loop's (the warm-up came first).
        ms = []
        for line in open(path):
            if '"request done"' in line and '"status":200' in line:
                m = re.search(r'"ms":([0-9.]+)', line)
                if m: ms.append(float(m.group(1)) * 1000)
        ms = sorted(ms[-n:])
        q = lambda p: ms[min(len(ms) - 1, int(p * len(ms)))] if ms else float("nan")
        return q(0.5), q(0.99), q(0.999)
    for i in runs:
        row = {}
        for cfg, label in (("d", "D: the mock directly"), ("u", "U: cache off"), ("h", "H: L1 hits")):
            o, c = load(f"open-{i}-{cfg}"), load(f"closed-{i}-{cfg}")
            if not o: continue
            lat = o["latency_ms"]
            cells = f"| {i} | {label} | {lat['p50']:.3f} | {lat['p99']:.3f} | {lat['p999']:.3f} | {o['totals']['errors'] + o['totals']['dropped']} |"
            log = f"{out}/{cfg}-{i}-access.log"
            if os.path.exists(log):
                s50, s99, s999 = served(log, o["totals"]["ok"])
                cells += f" {s50:.0f} | {s99:.0f} | {s999:.0f} |"
            else:
                cells += " – | – | – |"
            if c:
                row[cfg] = c["totals"]["ok_per_s"]
                cells += f" {c['totals']['ok_per_s']:,.0f} | {c['totals']['errors'] + c['totals']['dropped']} |"
            else:
                cells += " – | – |"
            print(cells)
        if "u" in row and "h" in row:
            ratios.append(row["h"] / row["u"])
    print()
    if ratios:
        print(f"Throughput H/U per run: {', '.join(f'{r:.2f}' for r in ratios)}; median **{statistics.median(ratios):.2f}×**\n")
    for i in runs:
        path = f"{out}/h-{i}-metrics.txt"
        if os.path.exists(path):
            hits = metric(path, "floodgate_cache_lookups_total", 'result="hit_l1"')
            misses = metric(path, "floodgate_cache_lookups_total", 'result="miss"')
            print(f"- run {i}, H: {hits:,.0f} L1 hits, {misses:,.0f} misses (from /metrics)")
    print()
if os.path.exists(f"{out}/layers.txt"):
    print("## 2. The layers without HTTP (`cargo bench -p floodgate-core --bench cache`)\n")
    print("```")
    for line in open(f"{out}/layers.txt"):
        if line.strip() and not line.startswith(("Compiling", "Finished", "Running")):
            print(line.rstrip())
    print("```\n")
herds = sorted(glob.glob(f"{out}/herd-*.json"))
if herds:
    print("## 3. Thundering herd: 1,000 identical requests within 10 ms, upstream answers after 500 ms\n")
    print("| herd | sent | ok | errors | p50 ms | max ms | upstream calls (this herd) | coalesced |")
    print("|---|---|---|---|---|---|---|---|")
    prev_calls = prev_coalesced = 0.0
    for path in herds:
        name = os.path.basename(path)[:-5]
        r = json.load(open(path))
        m = f"{out}/{name}-metrics.txt"
        calls = metric(m, "floodgate_upstream_request_duration_seconds_count")
        coalesced = metric(m, "floodgate_cache_lookups_total", 'result="coalesced"')
        t = r["totals"]
        print(f"| {name} | {t['sent']} | {t['ok']} | {t['errors'] + t['dropped']} | {r['latency_ms']['p50']:.1f} | "
              f"{r['latency_ms']['max']:.1f} | {calls - prev_calls:.0f} | {coalesced - prev_coalesced:.0f} |")
        prev_calls, prev_coalesced = calls, coalesced
    print()
print("Commands: `commands.tsv` in the run directory.")
PY
log "summary: $OUT/summary.md"
cat "$OUT/summary.md"
