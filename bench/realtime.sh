#!/usr/bin/env bash
# The gateway's realtime side under load, through `floodgate serve` and
# `floodgate bench --realtime`:
#   conn       for each transport (ws, socketio): one node (in-memory state),
#              CONNS (19,000) connections from the source addresses
#              127.0.0.1-127.0.0.4, each subscribed to one room, held HOLD (20 s);
#              the node's resident memory per connection, connect latency,
#              refusals. The node is started afresh for each transport.
#   broadcast  three nodes on one Redis (a fresh redis_prefix per run), SUBS
#              (10,000) plain WebSocket subscribers spread over them, and a
#              publisher posting to the first node at each of RATES (20 100 500)
#              messages/s for HOLD s (new connections for each rate); delivered
#              per second, loss and publish-to-receipt latency (p50/p99/max).
# Results: bench/out/realtime-<UTC time>/ (node configs and logs, one JSON and
# one text report per run, results.jsonl, summary.md). Every process it starts
# is stopped by PID at the end; traffic stays on 127.0.0.0/8; every wait and
# every load is bounded in time. Any step that does not work stops the script
# with a message (a bench run where no connection subscribed counts as not
# working).
#
#   bench/realtime.sh                     both scenarios (about 6 minutes after the build)
#   QUICK=1 bench/realtime.sh             a short smoke run (2,000 connections, 5 s)
#   SCENARIOS=conn bench/realtime.sh      one scenario (conn or broadcast)
#   TRANSPORTS=ws RATES="100" CONNS=5000 SUBS=3000 HOLD=10 bench/realtime.sh
#   FLOODGATE_BENCH_REDIS_URL=redis://127.0.0.1:6380 bench/realtime.sh
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=${QUICK:-0}
SCENARIOS=${SCENARIOS:-conn broadcast}
TRANSPORTS=${TRANSPORTS:-ws socketio}
if [ "$QUICK" = 1 ]; then
  CONNS=${CONNS:-2000} SUBS=${SUBS:-1000} HOLD=${HOLD:-5} RATES=${RATES:-20 100}
else
  CONNS=${CONNS:-19000} SUBS=${SUBS:-10000} HOLD=${HOLD:-20} RATES=${RATES:-20 100 500}
fi
SOURCE_IPS=${SOURCE_IPS:-127.0.0.1-127.0.0.4}
CONNECT_RATE=${CONNECT_RATE:-2000}
MESSAGE_BYTES=${MESSAGE_BYTES:-100}
scenario() { case " $SCENARIOS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

RUN=realtime-$(date -u +%Y%m%dT%H%M%SZ)
OUT=bench/out/$RUN
mkdir -p "$OUT/db"
OUT=$(cd "$OUT" && pwd)
# shellcheck source=bench/lib.sh
. bench/lib.sh   # the script runs from the repository root (cd above)

die() { log "FAILED: $*"; exit 1; }

PORTS=(19441 19442 19443)
MASTER_KEY=bench-master-key-0123456789
REDIS_URL=${FLOODGATE_BENCH_REDIS_URL:-redis://127.0.0.1:6379}
REDIS_PREFIX="fgbench-rt$(date +%s)-$$:"
RESULTS=$OUT/results.jsonl
: >"$RESULTS"

# --- prerequisites ---------------------------------------------------------
command -v python3 >/dev/null || die "python3 is needed for the summary"
command -v curl >/dev/null || die "curl is needed to wait for the nodes"
# The bench and every node hold one descriptor per connection.
ulimit -n "$(ulimit -Hn)" || die "cannot raise the open-file limit to $(ulimit -Hn)"
need=$(( (CONNS > SUBS ? CONNS : SUBS) + 200 ))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$need" ]; then
  die "the open-file limit is $(ulimit -n) but $need are needed; use CONNS=... and SUBS=... below it"
fi
log "open files limit: $(ulimit -n)"
for port in "${PORTS[@]}"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "something already listens on 127.0.0.1:$port"
  fi
done
if scenario broadcast; then
  command -v redis-cli >/dev/null || die "redis-cli is needed for the broadcast scenario"
  [ "$(redis-cli -u "$REDIS_URL" ping 2>&1)" = PONG ] \
    || die "no Redis answers at $REDIS_URL (start redis-server, or set FLOODGATE_BENCH_REDIS_URL)"
fi

log "building (release binary)"
cargo build --release --quiet -p floodgate
BIN=${CARGO_TARGET_DIR:-target}/release/floodgate
[ -x "$BIN" ] || die "no binary at $BIN"
echo "commit $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (with uncommitted changes)')" >"$OUT/commit.txt"

declare -A NODE_PIDS=()
cleanup() {
  for pid in "${NODE_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${NODE_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if scenario broadcast; then
    redis-cli -u "$REDIS_URL" --scan --pattern "${REDIS_PREFIX}*" 2>/dev/null \
      | xargs -r redis-cli -u "$REDIS_URL" del >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

config() { # port backend(memory|redis) name
  cat <<TOML
listen = "127.0.0.1:$1"
master_key = "$MASTER_KEY"

[log]
level = "warn"

[database]
url = "sqlite://$OUT/db/$3.db"

[server]
max_connections = 20000
TOML
  if [ "$2" = redis ]; then
    printf '\n[state]\nbackend = "redis"\nredis_url = "%s"\nredis_prefix = "%s"\n' "$REDIS_URL" "$REDIS_PREFIX"
  fi
  cat <<TOML

[realtime]
max_connections = 19500
max_connections_per_key = 0   # 0 = no per-key cap (the bench uses one key)
TOML
}

start_node() { # name port backend
  local name=$1 port=$2 toml=$OUT/$1.toml check
  config "$port" "$3" "$name" >"$toml"
  check=$("$BIN" check-config "$toml" 2>&1) || die "floodgate check-config refuses $toml:
$check"
  echo "$name	floodgate serve --config \$OUT/$name.toml" >>"$OUT/commands.tsv"
  "$BIN" serve --config "$toml" >>"$OUT/$name.log" 2>&1 &
  NODE_PIDS[$name]=$!
  wait_http "http://127.0.0.1:$port/health" || die "node $name did not start (see $OUT/$name.log)"
  kill -0 "${NODE_PIDS[$name]}" 2>/dev/null || die "node $name exited (see $OUT/$name.log)"
}

stop_node() { # name
  local pid=${NODE_PIDS[$1]:-}
  [ -z "$pid" ] && return 0
  kill "$pid" 2>/dev/null || true
  # A node drains its connections within its shutdown grace; a stuck one is killed.
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  unset "NODE_PIDS[$1]"
}

bench() { # name bench-arguments...
  local name=$1; shift
  echo "$name	floodgate bench --quiet --key \$MASTER_KEY $* --json \$OUT/$name.json" >>"$OUT/commands.tsv"
  # The bench bounds its own phases: connect (connections / rate + 30 s), hold, drain (5 s).
  if ! "$BIN" bench --quiet --key "$MASTER_KEY" "$@" --json "$OUT/$name.json" \
      >"$OUT/$name.txt" 2>"$OUT/$name.err"; then
    cat "$OUT/$name.err" >&2
    die "bench $name failed (see $OUT/$name.err)"
  fi
  cat "$OUT/$name.txt" >>"$OUT/run.log"
  python3 - "$OUT/$name.json" <<'PY' || die "bench $name: no connection subscribed (see $OUT/$name.txt)"
import json, sys
report = json.load(open(sys.argv[1]))
sys.exit(0 if report["connections"]["subscribed"] > 0 else 1)
PY
}

record() { # name scenario json-report [extra json fields]
  python3 - "$@" >>"$RESULTS" <<'PY'
import json, sys
name, scenario, path = sys.argv[1:4]
extra = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
r = json.load(open(path))
c, lat = r["connections"], r["connect_ms"] or {}
row = {"name": name, "scenario": scenario, "mode": r["mode"], "urls": len(r["urls"]),
       "requested": c["requested"], "subscribed": c["subscribed"], "failed": c["failed"],
       "failures": c["failures"], "open_at_end": c["open_at_end"],
       "closed": c["closed"], "connect_phase_s": c["connect_phase_s"],
       "connect_p50_ms": lat.get("p50"), "connect_p99_ms": lat.get("p99"),
       "connect_max_ms": lat.get("max"), "servers": r["servers"],
       "servers_total": r["servers_total"], "client": r["client"], "warnings": r["warnings"]}
if r["publish"]:
    p, d = r["publish"], r["delivery"]
    dl = d["latency_ms"] or {}
    row.update({"rate": p["rate"], "sent": p["sent"], "published_ok": p["ok"],
                "publish_failures": p["failures"], "achieved_per_s": p["achieved_per_s"],
                "expected": d["expected"], "received": d["received"], "lost": d["lost"],
                "duplicates": d["duplicates"], "received_per_s": d["received_per_s"],
                "latency_p50_ms": dl.get("p50"), "latency_p99_ms": dl.get("p99"),
                "latency_max_ms": dl.get("max")})
row.update(extra)
print(json.dumps(row))
PY
  log "$1: $(tail -n 1 "$RESULTS")"
}

# --- 1. conn: connections held by one node, its memory per connection -------
if scenario conn; then
  for transport in $TRANSPORTS; do
    name=conn-$transport
    log "[conn] $transport: $CONNS connections from $SOURCE_IPS, held ${HOLD}s"
    settle
    start_node "node-$name" "${PORTS[0]}" memory
    bench "$name" --realtime "$transport" --url "http://127.0.0.1:${PORTS[0]}" \
      --connections "$CONNS" --connect-rate "$CONNECT_RATE" --source-ips "$SOURCE_IPS" \
      --room "conn-$transport" --duration "${HOLD}s" --server-pid "${NODE_PIDS[node-$name]}"
    record "$name" conn "$OUT/$name.json"
    stop_node "node-$name"
  done
fi

# --- 2. broadcast: three nodes on one Redis, one publisher -----------------
if scenario broadcast; then
  log "[broadcast] three nodes on Redis $REDIS_URL, prefix $REDIS_PREFIX"
  urls="" pids=""
  for i in 0 1 2; do
    start_node "node-b$i" "${PORTS[$i]}" redis
    urls="${urls:+$urls,}http://127.0.0.1:${PORTS[$i]}"
    pids="${pids:+$pids,}${NODE_PIDS[node-b$i]}"
  done
  for rate in $RATES; do
    name=broadcast-$rate
    log "[broadcast] $SUBS ws subscribers over 3 nodes, $rate msg/s to the first for ${HOLD}s"
    settle
    bench "$name" --realtime ws --url "$urls" --connections "$SUBS" \
      --connect-rate "$CONNECT_RATE" --source-ips "$SOURCE_IPS" --room "broadcast-$rate" \
      --duration "${HOLD}s" --publish-rate "$rate" --message-bytes "$MESSAGE_BYTES" \
      --server-pid "$pids"
    record "$name" broadcast "$OUT/$name.json" "{\"target_rate\": $rate}"
  done
  for i in 0 1 2; do stop_node "node-b$i"; done
fi

python3 - "$RESULTS" "$OUT/summary.md" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
def ms(v): return "-" if v is None else f"{v:.1f}"
def mib(v): return "-" if v is None else f"{v / 2**20:.1f}"
def num(v, digits): return "-" if v is None else f"{v:.{digits}f}"
out = []
conn = [r for r in rows if r["scenario"] == "conn"]
if conn:
    out += ["## conn: one node, connections held", "",
            "| transport | requested | subscribed | failed | connect p50 / p99 / max ms | connect phase s | node RSS before / connected / end MiB | node bytes per connection | node cores (hold) | bench bytes per connection | bench cores (hold) | open at end |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in conn:
        t, b = r["servers_total"] or {}, r["client"]
        out.append(f"| {r['mode']} | {r['requested']} | {r['subscribed']} | {r['failed']} | "
                   f"{ms(r['connect_p50_ms'])} / {ms(r['connect_p99_ms'])} / {ms(r['connect_max_ms'])} | "
                   f"{r['connect_phase_s']:.1f} | {mib(t.get('rss_before_bytes'))} / {mib(t.get('rss_after_connect_bytes'))} / {mib(t.get('rss_end_bytes'))} | "
                   f"{num(t.get('rss_per_connection_bytes'), 0)} | {num(t.get('hold_cpu_cores'), 2)} | "
                   f"{num(b.get('rss_per_connection_bytes'), 0)} | {num(b.get('hold_cpu_cores'), 2)} | {r['open_at_end']} |")
    for r in conn:
        if r["failures"] or r["closed"]:
            out.append(f"\n{r['mode']}: failures {r['failures']}, closed during the run {r['closed']}")
bcast = [r for r in rows if r["scenario"] == "broadcast"]
if bcast:
    out += ["", "## broadcast: three nodes on Redis, ws subscribers", "",
            "| msg/s asked | achieved | subscribers | expected | received | lost | received/s | latency p50 / p99 / max ms | closed during run | node cores (hold) | bench cores (hold) |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in bcast:
        lost = f"{r['lost']} ({100 * r['lost'] / r['expected']:.2f} %)" if r["expected"] else str(r["lost"])
        out.append(f"| {r['target_rate']} | {r['achieved_per_s']:.1f} | {r['subscribed']} | {r['expected']} | "
                   f"{r['received']} | {lost} | {r['received_per_s']:.0f} | "
                   f"{ms(r['latency_p50_ms'])} / {ms(r['latency_p99_ms'])} / {ms(r['latency_max_ms'])} | "
                   f"{sum(r['closed'].values())} | "
                   f"{' / '.join(num(s.get('hold_cpu_cores'), 2) for s in r['servers'])} | "
                   f"{num(r['client'].get('hold_cpu_cores'), 2)} |")
warnings = sorted({w for r in rows for w in r["warnings"]})
if warnings:
    out += ["", "warnings:"] + [f"- {w}" for w in warnings]
open(sys.argv[2], "w").write("\n".join(out) + "\n")
print("\n".join(out))
PY
log "results in $OUT"
