#!/usr/bin/env bash
# The routing benchmarks, in one run on this machine:
#   1. throughput with many keys and targets against one key: config A (one
#      provider, one key, no limits) against config B (three providers on the
#      same mock, 10 keys each with rpm/tpm limits that never bind, so the
#      windows and reservations run), strategies least-latency and fallback;
#      closed loop, interleaved A, B, B', A, B, B', ... with floodgate
#      restarted between runs; floodgate's CPU time per request;
#   2. chaos: a mock failing 5 % of requests with 500, one target hard down
#      (a closed loopback port), default routing settings; open loop at a
#      fixed rate; client success rate, and upstream calls per client request
#      from floodgate's /metrics, for strategies fallback (down target first)
#      and least-latency;
#   3. the routing decision microbenchmark (criterion, 100 keys x 20 targets).
# Results: bench/out/routing-<UTC time>/ (every `floodgate bench --json`
# report, /metrics and /admin/providers scrapes, logs, summary.md). Every
# process it starts is stopped by PID at the end; all traffic stays on
# 127.0.0.0/8; every load is bounded in time.
#
#   bench/routing.sh             full run (about 12 minutes after the builds)
#   QUICK=1 bench/routing.sh     a short smoke run of every step
#   STEPS="1 3" bench/routing.sh only some sections (1 throughput, 2 chaos, 3 criterion)
#   REPEATS=8 TP_CONFIGS="a b-fallback" STEPS=1 bench/routing.sh
#                                more repeats of some throughput configs
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=${QUICK:-0}
STEPS=${STEPS:-1 2 3}
step() { case " $STEPS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
CONCURRENCY=64
# Section 1's configs, in the order each repeat runs them (see below).
# c-least-latency, a control (3 targets, 1 key each, no limits), is left out
# by default.
TP_CONFIGS=${TP_CONFIGS:-a b-least-latency b-fallback}
CHAOS_RATE=300
# Eight repeats, not three: on these shared cores one 15 s run of a config
# differs from the next run of the same config by up to ±15 %, so the medians
# of three runs cannot resolve the 5 % target.
if [ "$QUICK" = 1 ]; then D=3s; REPEATS=${REPEATS:-1}; CHAOS_D=10s; else D=15s; REPEATS=${REPEATS:-8}; CHAOS_D=60s; fi
RUN=routing-$(date -u +%Y%m%dT%H%M%SZ)
OUT=bench/out/$RUN
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$OUT/run.log"; }
STARTED=$(date +%s)

# Ports, all on loopback (apart from bench/run.sh's, so both can coexist).
MOCK_FAST=19111 MOCK_FLAKY=19112 FG=19311
# The "hard down" target: a loopback port nothing listens on (checked below).
DOWN_PORT=19119
FG_KEY=bench-floodgate-master-key-0123456789
FG_URL=http://127.0.0.1:$FG

# --- prerequisites ---------------------------------------------------------
ulimit -n "$(ulimit -Hn)"
log "open files limit: $(ulimit -n)"
log "building (release binary, routing criterion bench)"
cargo build --release --quiet -p floodgate
if step 3; then cargo bench --quiet -p floodgate-core --bench routing --no-run >/dev/null 2>&1; fi
BIN=target/release/floodgate
CLK_TCK=$(getconf CLK_TCK)

PIDS=()
FG_PID=""
cleanup() {
  [ -n "$FG_PID" ] && kill "$FG_PID" 2>/dev/null || true
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

wait_http() { # url
  for _ in $(seq 300); do curl -s -o /dev/null "$1" && return 0; sleep 0.2; done
  log "not answering: $1"; return 1
}
port_closed() { # port: true when nothing accepts on 127.0.0.1:port
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# CPU ticks (user + system) a process and its descendants have used so far.
descendants() {
  echo "$1"
  local child
  for child in $(pgrep -P "$1" || true); do descendants "$child"; done
}
tree_sum() { # pid file awk-program
  local total=0 pid
  for pid in $(descendants "$1"); do
    total=$((total + $(awk "$3" "/proc/$pid/$2" 2>/dev/null || echo 0)))
  done
  echo $total
}
cpu_ticks() { tree_sum "$1" stat '{print $14 + $15}'; }
# Per thread of a process: "tid name ticks".
thread_ticks() {
  local t
  for t in /proc/"$1"/task/*; do
    echo "${t##*/} $(tr ' ' _ <"$t/comm" 2>/dev/null || echo gone) $(awk '{print $14 + $15}' "$t/stat" 2>/dev/null || echo 0)"
  done
}
# Busy ticks of the whole machine, and of this script's finished children
# (the bench client once it has exited): what else ran during a measurement.
sys_busy() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
children_ticks() { awk '{print $16 + $17}' /proc/$$/stat; }
# Around one measured bench: CPU of floodgate (with its threads), the mocks,
# the client and the machine, into cpu.jsonl.
measure_start() { # name
  M_FG=$(cpu_ticks "$FG_PID"); M_MOCK=$(cpu_ticks "${PIDS[0]}"); M_MOCK2=$(cpu_ticks "${PIDS[1]}")
  M_SYS=$(sys_busy); M_CLIENT=$(children_ticks)
  thread_ticks "$FG_PID" >"$OUT/$1-threads-before.txt"
}
measure_end() { # name config
  local fg mock mock2 sys client
  fg=$(( $(cpu_ticks "$FG_PID") - M_FG )); mock=$(( $(cpu_ticks "${PIDS[0]}") - M_MOCK ))
  mock2=$(( $(cpu_ticks "${PIDS[1]}") - M_MOCK2 ))
  sys=$(( $(sys_busy) - M_SYS )); client=$(( $(children_ticks) - M_CLIENT ))
  thread_ticks "$FG_PID" >"$OUT/$1-threads-after.txt"
  echo "{\"name\":\"$1\",\"config\":\"$2\",\"ticks\":$fg,\"mock_ticks\":$mock,\"flaky_mock_ticks\":$mock2,\"client_ticks\":$client,\"machine_ticks\":$sys,\"cpus\":$(nproc),\"clk_tck\":$CLK_TCK}" >>"$OUT/cpu.jsonl"
}
# Waits until the whole machine is idle (under 10 % of a core for two seconds
# in a row): floodgate and the mocks done with the previous run, and nothing
# else (another build) competing for the two cores. At most 60 s; the summary's
# "other CPU" column shows what still ran during each measurement.
settle() {
  local before after quiet=0
  for _ in $(seq 60); do
    before=$(sys_busy); sleep 1; after=$(sys_busy)
    if [ $((after - before)) -le $((CLK_TCK / 10)) ]; then
      quiet=$((quiet + 1)); [ $quiet -ge 2 ] && return 0
    else
      quiet=0
    fi
  done
  log "  (machine still busy after 60 s; going on)"
}

# --- mocks -----------------------------------------------------------------
"$BIN" mock-upstream --port $MOCK_FAST >"$OUT/mock-fast.log" 2>&1 & PIDS+=($!)
"$BIN" mock-upstream --port $MOCK_FLAKY --error-rate 0.05 --error-kind 500 >"$OUT/mock-flaky.log" 2>&1 & PIDS+=($!)
printf 'mock\tfloodgate mock-upstream --port %s\nmock\tfloodgate mock-upstream --port %s --error-rate 0.05 --error-kind 500\n' \
  $MOCK_FAST $MOCK_FLAKY >>"$OUT/commands.tsv"
wait_http "http://127.0.0.1:$MOCK_FAST/health"
wait_http "http://127.0.0.1:$MOCK_FLAKY/health"
if ! port_closed $DOWN_PORT; then log "port $DOWN_PORT is in use; the down target needs a closed port"; exit 1; fi
log "mocks up: fast ${PIDS[0]} on $MOCK_FAST, flaky (5 % 500s) ${PIDS[1]} on $MOCK_FLAKY; $DOWN_PORT closed"

# --- floodgate configs -----------------------------------------------------
# Production settings as in bench/run.sh: master key, JSON logs at info,
# metrics (always on), the SQLite usage ledger.
config_head() { # name
  cat <<TOML
master_key = "\${FG_KEY}"

[log]
format = "json"

[database]
url = "sqlite://$OUT/db/$1.db"
TOML
}
provider() { # name port nkeys(0: one plain key)
  printf '\n[[providers]]\nname = "%s"\nkind = "openai-compatible"\nbase_url = "http://127.0.0.1:%s/v1"\n' "$1" "$2"
  if [ "$3" = 0 ]; then
    echo 'keys = ["bench-upstream-key"]'
  else
    # Limits far above what two cores can send: the per-key windows and
    # token reservations run on every request but never refuse one.
    echo "keys = ["
    for k in $(seq "$3"); do
      printf '  { key = "bench-%s-key-%02d", rpm = 10000000, tpm = 2000000000 },\n' "$1" "$k"
    done
    echo "]"
  fi
}
config_a() {
  config_head "$1"
  provider fast $MOCK_FAST 0
  printf '\n[[models]]\nname = "gpt-4o-mini"\ntargets = ["fast/gpt-4o-mini"]\n'
}
config_b() { # name strategy
  config_head "$1"
  for p in p1 p2 p3; do provider $p $MOCK_FAST 10; done
  printf '\n[[models]]\nname = "gpt-4o-mini"\nstrategy = "%s"\ntargets = ["p1/gpt-4o-mini", "p2/gpt-4o-mini", "p3/gpt-4o-mini"]\n' "$2"
}
# Default [routing] settings: nothing about retries, breakers or budgets.
# The control: 3 targets as in B, one plain key each and no limits (what
# spreading over three targets costs without the key windows).
config_c() { # name strategy
  config_head "$1"
  for p in q1 q2 q3; do provider $p $MOCK_FAST 0; done
  printf '\n[[models]]\nname = "gpt-4o-mini"\nstrategy = "%s"\ntargets = ["q1/gpt-4o-mini", "q2/gpt-4o-mini", "q3/gpt-4o-mini"]\n' "$2"
}
config_chaos() { # name strategy
  config_head "$1"
  provider down $DOWN_PORT 0
  provider flaky1 $MOCK_FLAKY 0
  provider flaky2 $MOCK_FLAKY 0
  printf '\n[[models]]\nname = "gpt-4o-mini"\nstrategy = "%s"\ntargets = ["down/gpt-4o-mini", "flaky1/gpt-4o-mini", "flaky2/gpt-4o-mini"]\n' "$2"
}
mkdir -p "$OUT/db"
config_a a >"$OUT/floodgate-a.toml"
config_b b-least-latency least-latency >"$OUT/floodgate-b-least-latency.toml"
config_b b-fallback fallback >"$OUT/floodgate-b-fallback.toml"
config_c c-least-latency least-latency >"$OUT/floodgate-c-least-latency.toml"
config_chaos chaos-fallback fallback >"$OUT/floodgate-chaos-fallback.toml"
config_chaos chaos-least-latency least-latency >"$OUT/floodgate-chaos-least-latency.toml"
for f in "$OUT"/floodgate-*.toml; do
  FG_KEY=$FG_KEY "$BIN" check-config "$f" >>"$OUT/check-config.log" 2>&1 || { log "config refused: $f"; cat "$OUT/check-config.log"; exit 1; }
done

start_floodgate() { # config log
  echo "serve	FG_KEY=\$FG_KEY floodgate serve --config $1 --listen 127.0.0.1:$FG" | sed "s#$OUT#\$OUT#g" >>"$OUT/commands.tsv"
  FG_KEY=$FG_KEY "$BIN" serve --config "$1" --listen 127.0.0.1:$FG >"$2" 2>&1 &
  FG_PID=$!
  wait_http "$FG_URL/health"
  sleep 2   # let it settle after start
}
stop_floodgate() {
  kill "$FG_PID" 2>/dev/null || true
  wait "$FG_PID" 2>/dev/null || true
  FG_PID=""
}
scrape() { # prefix
  curl -s "$FG_URL/metrics" >"$1-metrics.txt" || true
  curl -s -H "Authorization: Bearer $FG_KEY" "$FG_URL/admin/providers" >"$1-admin-providers.json" || true
}
# `floodgate bench` against floodgate, its command line recorded (key as $FG_KEY).
fg_bench() { # name args...
  local name=$1; shift
  local args=(bench --quiet --url "$FG_URL/v1/chat/completions" --key "$FG_KEY" --model gpt-4o-mini "$@")
  echo "$name	floodgate ${args[*]}" | sed "s/$FG_KEY/\$FG_KEY/; s#$OUT#\$OUT#g" >>"$OUT/commands.tsv"
  "$BIN" "${args[@]}" >"$OUT/$name.txt" 2>&1 || log "  (bench exited with $?)"
}

# --- 1. throughput: many keys and targets against one key ------------------
if step 1; then
for i in $(seq $REPEATS); do
  for cfg in $TP_CONFIGS; do
    name=tp-$i-$cfg
    start_floodgate "$OUT/floodgate-$cfg.toml" "$OUT/$name.log"
    # Warm-up, not recorded: connections, allocator, caches.
    echo "warmup	floodgate bench --quiet --url $FG_URL/v1/chat/completions --key \$FG_KEY --model gpt-4o-mini --concurrency $CONCURRENCY --duration 2s" >>"$OUT/commands.tsv"
    "$BIN" bench --quiet --url "$FG_URL/v1/chat/completions" --key "$FG_KEY" --model gpt-4o-mini \
      --concurrency $CONCURRENCY --duration 2s >/dev/null 2>&1 || true
    settle
    log "bench $name"
    measure_start "$name"
    fg_bench "$name" --concurrency $CONCURRENCY --duration $D --label "$name" \
      --json "$OUT/$name.json" --html "$OUT/$name.html"
    measure_end "$name" "$cfg"
    scrape "$OUT/$name"
    stop_floodgate
    rm -f "$OUT/db/$cfg.db"*   # a fresh ledger for every run
  done
done
fi

# --- 2. chaos: 5 % 500s and a target hard down, default routing ------------
if step 2; then
for strategy in fallback least-latency; do
  name=chaos-$strategy
  port_closed $DOWN_PORT || { log "port $DOWN_PORT opened meanwhile"; exit 1; }
  start_floodgate "$OUT/floodgate-$name.toml" "$OUT/$name.log"
  settle
  log "bench $name (open loop $CHAOS_RATE/s for $CHAOS_D)"
  measure_start "$name"
  fg_bench "$name" --rate $CHAOS_RATE --duration $CHAOS_D --label "$name" \
    --json "$OUT/$name.json" --html "$OUT/$name.html"
  measure_end "$name" "$name"
  settle   # retries still in flight finish before the scrape
  scrape "$OUT/$name"
  stop_floodgate
done
fi

# --- 3. the routing decision (criterion) ------------------------------------
if step 3; then
  log "cargo bench -p floodgate-core --bench routing"
  echo "criterion	cargo bench -p floodgate-core --bench routing" >>"$OUT/commands.tsv"
  cargo bench --quiet -p floodgate-core --bench routing >"$OUT/criterion.txt" 2>&1 || log "  (cargo bench exited with $?)"
fi

# --- summary ----------------------------------------------------------------
ELAPSED=$(( $(date +%s) - STARTED ))
python3 - "$OUT" "$ELAPSED" "$(git rev-parse --short HEAD)" "$CONCURRENCY" "$D" "$CHAOS_RATE" "$CHAOS_D" >"$OUT/summary.md" <<'PY'
import glob, json, os, re, statistics, sys

out, elapsed, commit, conc, dur, chaos_rate, chaos_d = sys.argv[1:]
run = os.path.basename(out)

def load(path):
    with open(path) as f:
        return json.load(f)

LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
def metrics(path):
    """[(name, {labels}, value)] from a Prometheus text scrape."""
    rows = []
    if not os.path.exists(path):
        return rows
    for line in open(path):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r'([a-zA-Z_:][\w:]*)(\{.*\})?\s+(\S+)$', line)
        if not m:
            continue
        labels = dict(LABEL.findall(m.group(2) or ""))
        try:
            rows.append((m.group(1), labels, float(m.group(3))))
        except ValueError:
            pass
    return rows

def msum(rows, name, **want):
    return sum(v for n, l, v in rows if n == name and all(l.get(k) == x for k, x in want.items()))

def by(rows, name, keys):
    acc = {}
    for n, l, v in rows:
        if n == name:
            k = tuple(l.get(x, "") for x in keys)
            acc[k] = acc.get(k, 0) + v
    return acc

def errors(r):
    parts = [f"{s}: {n}" for s, n in r["errors_by_status"].items()]
    parts += [f"{k}: {n}" for k, n in r["errors_by_kind"].items()]
    if r["totals"]["dropped"]:
        parts.append(f"dropped: {r['totals']['dropped']}")
    return ", ".join(parts) if parts else "0"

commands = []
if os.path.exists(f"{out}/commands.tsv"):
    for line in open(f"{out}/commands.tsv"):
        name, cmd = line.rstrip("\n").split("\t", 1)
        commands.append(cmd)

def cpu_model():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"

L = []
L += [f"# Routing benchmarks, run `{run}`", "",
      f"Commit `{commit}`, `bench/routing.sh`, {int(elapsed) // 60} min {int(elapsed) % 60} s. "
      f"{os.cpu_count()} CPUs ({cpu_model()}, Linux {os.uname().release}) shared by the load generator, "
      "the mocks and floodgate; all traffic on 127.0.0.1.", ""]

# 1. throughput
cpu = {}
if os.path.exists(f"{out}/cpu.jsonl"):
    for line in open(f"{out}/cpu.jsonl"):
        c = json.loads(line)
        cpu[c["name"]] = c

def threads(path):
    rows = {}
    if os.path.exists(path):
        for line in open(path):
            parts = line.split()
            if len(parts) == 3:
                rows[parts[0]] = (parts[1], int(parts[2]))
    return rows

def worker_split(name):
    """The serving workers' shares of their CPU time over the run, busiest first."""
    before, after = threads(f"{out}/{name}-threads-before.txt"), threads(f"{out}/{name}-threads-after.txt")
    used = [t - before.get(tid, (n, 0))[1] for tid, (n, t) in after.items() if n.startswith("floodgate-work")]
    total = sum(used)
    if len(used) < 2 or not total:
        return None
    return sorted((100 * u / total for u in used), reverse=True)

def other_cpu(c, elapsed_s):
    """CPU the machine spent on anything but floodgate, the mocks and the client, % of all cores."""
    if not c or "machine_ticks" not in c or not elapsed_s:
        return None
    ours = c["ticks"] + c["mock_ticks"] + c.get("flaky_mock_ticks", 0) + c["client_ticks"]
    return max(0.0, 100 * (c["machine_ticks"] - ours) / (elapsed_s * c["cpus"] * c["clk_tck"]))

TP_CONFIGS = ["a", "b-least-latency", "b-fallback", "c-least-latency"]
tp = sorted((p for p in glob.glob(f"{out}/tp-*.json")
             if re.fullmatch(r"tp-\d+-(" + "|".join(TP_CONFIGS) + r")\.json", os.path.basename(p))),
            key=os.path.getmtime)
if tp:
    CONFIGS = {
        "a": "A: 1 provider, 1 key, no limits",
        "b-least-latency": "B: 3 providers x 10 keys with rpm/tpm, least-latency",
        "b-fallback": "B': 3 providers x 10 keys with rpm/tpm, fallback",
        "c-least-latency": "C (control): 3 providers x 1 key, no limits, least-latency",
    }
    L += ["## 1. Throughput: 30 keys with limits on 3 targets against 1 key", "",
          f"Closed loop, {conc} workers, {dur} measured after a 2 s unrecorded warm-up, non-streamed, "
          "all on one fast `mock-upstream`; floodgate restarted before every run, runs in the order shown. "
          "CPU: user + system time over the measured run / requests answered (floodgate; the mock). "
          "Worker split: how floodgate's two serving threads shared its serving CPU time in the run "
          "(each client connection stays on the thread that accepted it). Other CPU: what the machine "
          "spent on anything but floodgate, the mocks and the client during the run, in % of both cores "
          "(another process competing for the cores shows here).", "",
          "| # | config | ok req/s | p50 ms | p99 ms | errors | floodgate CPU µs/req | mock CPU µs/req | worker split % | other CPU % | upstream calls by provider |",
          "|---:|---|---:|---:|---:|---|---:|---:|---|---:|---|"]
    per, paired = {}, {}
    base_of_repeat = {}
    for path in tp:
        name = os.path.basename(path)[:-5]
        _, i, cfg = name.split("-", 2)
        r = load(path)
        t = r["totals"]
        c = cpu.get(name)
        answered = t["ok"] + t["errors"]
        us = c["ticks"] / c["clk_tck"] * 1e6 / answered if c and answered else None
        mock_us = c["mock_ticks"] / c["clk_tck"] * 1e6 / answered if c and "mock_ticks" in c and answered else None
        split = worker_split(name)
        other = other_cpu(c, t["elapsed_s"])
        m = metrics(f"{out}/{name}-metrics.txt")
        calls = by(m, "floodgate_upstream_request_duration_seconds_count", ["provider"])
        spread = ", ".join(f"{p}: {int(v):,}" for (p,), v in sorted(calls.items()))
        lat = r["latency_ms"] or {}
        per.setdefault(cfg, []).append((t["ok_per_s"], lat.get("p50"), lat.get("p99"), us, mock_us))
        if cfg == "a":
            base_of_repeat[i] = t["ok_per_s"]
        elif base_of_repeat.get(i):
            paired.setdefault(cfg, []).append(t["ok_per_s"] / base_of_repeat[i])
        fmt = lambda v: "–" if v is None else f"{v:.1f}"
        L.append(f"| {i} | {cfg} | {t['ok_per_s']:,.0f} | {lat.get('p50', 0):.2f} | {lat.get('p99', 0):.2f} | "
                 f"{errors(r)} | {fmt(us)} | {fmt(mock_us)} | {'–' if not split else '/'.join(f'{x:.0f}' for x in split)} | {fmt(other)} | {spread} |")
    L += ["", "(Upstream calls include the warm-up.) Keys in use at the end of each B run "
          "(`GET /admin/providers`, each key's 60 s rpm window):", "",
          "| run | p1: keys used, requests per key in its rpm window (min–max) | p2: same | p3: same | tokens per key in its tpm window (min–max, keys used) |",
          "|---|---|---|---|---|"]
    for path in tp:
        name = os.path.basename(path)[:-5]
        if "-b-" not in name or not os.path.exists(f"{out}/{name}-admin-providers.json"):
            continue
        try:
            admin = load(f"{out}/{name}-admin-providers.json")
        except ValueError:
            continue
        cells, tokens = [], []
        for prov in admin.get("providers", []):
            used = [k["limits"]["rpm"]["used"] for k in prov["keys"] if k["limits"].get("rpm")]
            tokens += [k["limits"]["tpm"]["used"] for k in prov["keys"] if k["limits"].get("tpm") and k["limits"]["tpm"]["used"]]
            if used:
                cells.append(f"{sum(1 for u in used if u)}/{len(used)} keys, {min(used):,}–{max(used):,}")
        if cells:
            L.append(f"| {name} | " + " | ".join(cells) + f" | {min(tokens, default=0):,}–{max(tokens, default=0):,} |")
    L += ["",
          "| config | runs | median ok req/s | range ok req/s | median p50 ms | median p99 ms | median floodgate CPU µs/req | median mock CPU µs/req | ratio of medians to A | median of per-repeat ratios to A | target ≥ 0.95 |",
          "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    def med(xs):
        xs = [x for x in xs if x is not None]
        return statistics.median(xs) if xs else None
    base = med([x[0] for x in per.get("a", [])])
    for cfg in TP_CONFIGS:
        rows = per.get(cfg)
        if not rows:
            continue
        rps, p50, p99, us, mock_us = (med([x[k] for x in rows]) for k in range(5))
        ratio = rps / base if base else None
        pr = med(paired.get(cfg, []))
        target = cfg.startswith("b-")
        verdict = "–" if not target or ratio is None else ("met" if ratio >= 0.95 else "missed")
        f1 = lambda v: "–" if v is None else f"{v:.1f}"
        f3 = lambda v: "–" if v is None or cfg == "a" else f"{v:.3f}"
        lo, hi = min(x[0] for x in rows), max(x[0] for x in rows)
        L.append(f"| {CONFIGS[cfg]} | {len(rows)} | {rps:,.0f} | {lo:,.0f}–{hi:,.0f} | {p50:.2f} | {p99:.2f} | {f1(us)} | {f1(mock_us)} | "
                 f"{f3(ratio)} | {f3(pr)} | {verdict} |")
    L += [""]

# 2. chaos
chaos = [s for s in ["fallback", "least-latency"] if os.path.exists(f"{out}/chaos-{s}.json")]
if chaos:
    L += ["## 2. Chaos: one target down, the other two answering 5 % of requests with 500", "",
          f"Open loop at {chaos_rate} req/s for {chaos_d}, non-streamed. Targets in this order: "
          "`down/gpt-4o-mini` (base_url a closed loopback port), `flaky1/gpt-4o-mini`, `flaky2/gpt-4o-mini` "
          "(both on one `mock-upstream --error-rate 0.05 --error-kind 500`). Default routing settings "
          "(retries 2, retry budget 20 % + 1/s over 10 s, breaker 5 consecutive failures or > 50 % of "
          "≥ 20 calls in 30 s, 30 s cooldown, 1 half-open probe). "
          "Client success = 2xx / (sent + dropped) from the bench JSON; client requests (floodgate) = "
          "`floodgate_http_requests_total{route=\"/v1/chat/completions\"}`; upstream calls = "
          "`floodgate_upstream_request_duration_seconds_count` summed over providers, models and outcomes, "
          "both from /metrics after the run.", "",
          "| strategy | sent | 2xx | client success | target ≥ 99.9 % | errors | p50 ms | p99 ms | client requests (floodgate) | upstream calls | upstream / client | target ≤ 1.2 | floodgate CPU µs/req | other CPU % |",
          "|---|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---|---:|---:|"]
    details = []
    for s in chaos:
        r = load(f"{out}/chaos-{s}.json")
        t = r["totals"]
        total = t["sent"] + t["dropped"]
        success = t["ok"] / total if total else 0
        m = metrics(f"{out}/chaos-{s}-metrics.txt")
        client = sum(v for n, l, v in m if n == "floodgate_http_requests_total" and l.get("route", "").endswith("/chat/completions"))
        upstream = msum(m, "floodgate_upstream_request_duration_seconds_count")
        ratio = upstream / client if client else None
        lat = r["latency_ms"] or {}
        c = cpu.get(f"chaos-{s}")
        oc = other_cpu(c, t["elapsed_s"])
        fg_us = c["ticks"] / c["clk_tck"] * 1e6 / client if c and client else None
        L.append(f"| {s} | {t['sent']:,} | {t['ok']:,} | {100 * success:.3f} % | {'met' if success >= 0.999 else 'missed'} | "
                 f"{errors(r)} | {lat.get('p50', 0):.2f} | {lat.get('p99', 0):.2f} | {int(client):,} | {int(upstream):,} | "
                 f"{'–' if ratio is None else f'{ratio:.3f}'} | {'–' if ratio is None else ('met' if ratio <= 1.2 else 'missed')} | "
                 f"{'–' if fg_us is None else f'{fg_us:.1f}'} | "
                 f"{'–' if oc is None else f'{oc:.1f}'} |")
        d = [f"### Chaos, {s}: what /metrics said at the end", ""]
        d += ["| provider | outcome | upstream calls |", "|---|---|---:|"]
        for (p, o), v in sorted(by(m, "floodgate_upstream_request_duration_seconds_count", ["provider", "outcome"]).items()):
            d.append(f"| {p} | {o} | {int(v):,} |")
        d += ["", "| client status (floodgate) | provider | requests |", "|---|---|---:|"]
        for (st, p), v in sorted(by([x for x in m if x[1].get("route", "").endswith("/chat/completions")],
                                    "floodgate_http_requests_total", ["status", "provider"]).items()):
            d.append(f"| {st} | {p} | {int(v):,} |")
        tr = by(m, "floodgate_circuit_transitions_total", ["scope", "provider", "key", "to"])
        d += ["", "| breaker scope | provider | key | to | transitions |", "|---|---|---|---|---:|"]
        d += [f"| {a} | {b} | {c or '–'} | {e} | {int(v):,} |" for (a, b, c, e), v in sorted(tr.items())] or ["| – | – | – | – | 0 |"]
        op = by(m, "floodgate_circuit_open", ["scope", "provider", "key"])
        opened = [f"{a} {b}{' key ' + c if c else ''}" for (a, b, c), v in sorted(op.items()) if v]
        d += ["", f"Breakers open or half-open at the end: {', '.join(opened) or 'none'}.", ""]
        rt = by(m, "floodgate_upstream_retries_total", ["provider", "reason"])
        d += ["| retries: provider | reason | count |", "|---|---|---:|"]
        d += [f"| {p} | {why} | {int(v):,} |" for (p, why), v in sorted(rt.items())] or ["| – | – | 0 |"]
        try:
            admin = load(f"{out}/chaos-{s}-admin-providers.json")
        except (OSError, ValueError):
            admin = {}
        d += ["", "`GET /admin/providers` at the end, per target:", "",
              "| target | breaker | opened | window calls / failures | key breakers | calls / errors (stats) | EWMA ms |",
              "|---|---|---:|---:|---|---:|---:|"]
        for prov in admin.get("providers", []):
            for tg in prov.get("targets", []):
                b = tg["breaker"]; st = tg["stats"]
                kb = ", ".join(f"key {k['key']}: {k['state']} (opened {k['opened_total']})" for k in tg.get("key_breakers", []))
                ew = "–" if st.get("ewma_ms") is None else f"{st['ewma_ms']:.3f}"
                d.append(f"| {tg['target']} | {b['state']}" + (f", retry in {b['retry_in_ms']} ms" if b.get("retry_in_ms") else "")
                         + f" | {b['opened_total']} | {b['window_calls']:,} / {b['window_failures']:,} | {kb} | "
                         f"{st['calls']:,} / {st['errors']:,} | {ew} |")
        for mo in admin.get("models", []):
            rb = mo.get("retry_budget", {})
            d += ["", f"Alias `{mo['name']}` retry budget: {json.dumps(rb)}."]
        d += ["", f"Retry budget exhausted (`floodgate_retry_budget_exhausted_total`): "
              f"{int(msum(m, 'floodgate_retry_budget_exhausted_total')):,}. "
              f"Upstream errors by provider and kind: "
              + (", ".join(f"{p} {k}: {int(v):,}" for (p, k), v in sorted(by(m, 'floodgate_upstream_errors_total', ['provider', 'kind']).items())) or "none")
              + f". `GET /admin/providers` at the end: `chaos-{s}-admin-providers.json`.", ""]
        details += d
    L += [""] + details

# 3. criterion
crit = f"{out}/criterion.txt"
if os.path.exists(crit):
    text = open(crit).read()
    found = re.findall(r'^(decide/\S+(?: \S+)*?)\s*\n?\s*time:\s+\[([^\]]+)\]', text, re.M)
    L += ["## 3. The routing decision (criterion)", "",
          "`Router::decide`: rules, strategy order, breakers, key pick and reservation, 100 keys on each of "
          "4 providers, 20 targets.", "",
          "| benchmark | low | estimate | high |", "|---|---:|---:|---:|"]
    for name, times in found:
        parts = times.split()
        vals = [" ".join(parts[i:i + 2]) for i in range(0, len(parts), 2)]
        L.append(f"| `{name.strip()}` | " + " | ".join(vals) + " |")
    if not found:
        L.append("| (no figures in criterion.txt) | | | |")
    L += [""]

if commands:
    L += ["## Commands", "", "```sh", "bench/routing.sh   # this run; in it, in this order (N: the repeat):",
          f"OUT=bench/out/{run}"]
    seen = set()
    for cmd in commands:
        generic = re.sub(r"tp-\d+-", "tp-N-", cmd)
        if generic in seen:
            continue
        seen.add(generic)
        L.append(generic)
    L += ["```", ""]
print("\n".join(L))
PY
log "done: $OUT/summary.md"
cat "$OUT/summary.md"
