#!/usr/bin/env bash
# The benchmark suite: in one run on this machine, the same load through
#   direct    the mock upstream itself (the floor),
#   nginx     a plain reverse proxy (the do-nothing baseline),
#   floodgate production settings: master key required, metrics, JSON logs, ledger,
#   litellm   LiteLLM proxy (pinned below), on the same mocks,
# measured with `floodgate bench`. Results: bench/out/<run>/ (JSON and HTML per
# step, summary.md). Every process it starts is stopped by PID at the end; all
# traffic stays on 127.0.0.0/8; every load is bounded in time.
#
#   bench/run.sh                 full run (about 20 minutes)
#   QUICK=1 bench/run.sh         a short smoke run of every step
#   STEPS="1 3" bench/run.sh     only some sections (1 plain, 2 streams, 3 many streams)
set -euo pipefail
cd "$(dirname "$0")/.."

LITELLM_VERSION=1.106.2
QUICK=${QUICK:-0}
STEPS=${STEPS:-1 2 3}
step() { case " $STEPS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
if [ "$QUICK" = 1 ]; then D=3s; SLOW_D=20s; SLOW_N=500; else D=15s; SLOW_D=75s; SLOW_N=10000; fi
RUN=$(date -u +%Y%m%dT%H%M%SZ)
OUT=bench/out/$RUN
mkdir -p "$OUT/nginx-tmp"
OUT=$(cd "$OUT" && pwd)
log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$OUT/run.log"; }

# Ports, all on loopback.
MOCK_FAST=19101 MOCK_STREAM=19102 MOCK_SLOW=19103
NGINX_FAST=19201 NGINX_STREAM=19202 NGINX_SLOW=19203
FG=19301 LL=19401
FG_KEY=bench-floodgate-master-key-0123456789
LL_KEY=sk-bench-litellm-master-key

# --- prerequisites ---------------------------------------------------------
ulimit -n "$(ulimit -Hn)"
log "open files limit: $(ulimit -n) (a process can hold at most this many sockets)"
if ! command -v nginx >/dev/null; then
  log "installing nginx"
  apt-get install -y -qq nginx >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq nginx >/dev/null; }
fi
VENV=target/bench-venv
installed_litellm() {
  "$VENV/bin/python" -c 'import importlib.metadata as m, sys; sys.exit(m.version("litellm") != sys.argv[1])' "$LITELLM_VERSION" 2>/dev/null
}
if [ ! -x "$VENV/bin/litellm" ] || ! installed_litellm; then
  log "installing litellm[proxy]==$LITELLM_VERSION"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q "litellm[proxy]==$LITELLM_VERSION"
fi
cargo build --release --quiet
BIN=target/release/floodgate

PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

wait_http() { # url
  for _ in $(seq 300); do curl -s -o /dev/null "$1" && return 0; sleep 0.2; done
  log "not answering: $1"; return 1
}

# --- the processes under test ----------------------------------------------
"$BIN" mock-upstream --port $MOCK_FAST >"$OUT/mock-fast.log" 2>&1 & PIDS+=($!)
"$BIN" mock-upstream --port $MOCK_STREAM --chunks 20 --chunk-delay-ms 5 >"$OUT/mock-stream.log" 2>&1 & PIDS+=($!)
"$BIN" mock-upstream --port $MOCK_SLOW --chunks 60 --chunk-delay-ms 1000 >"$OUT/mock-slow.log" 2>&1 & PIDS+=($!)
MOCK_PID=${PIDS[0]}

sed -e "s#@OUT@#$OUT#g; s/@MOCK_FAST@/$MOCK_FAST/; s/@MOCK_STREAM@/$MOCK_STREAM/; s/@MOCK_SLOW@/$MOCK_SLOW/; \
        s/@NGINX_FAST@/$NGINX_FAST/; s/@NGINX_STREAM@/$NGINX_STREAM/; s/@NGINX_SLOW@/$NGINX_SLOW/" \
    bench/nginx.conf.template >"$OUT/nginx.conf"
nginx -c "$OUT/nginx.conf" -p "$OUT" >"$OUT/nginx.log" 2>&1 & PIDS+=($!)
NGINX_PID=$!

cat >"$OUT/floodgate.toml" <<TOML
master_key = "\${FG_KEY}"

[log]
format = "json"

[database]
url = "sqlite://$OUT/floodgate.db"

[[providers]]
name = "fast"
kind = "openai-compatible"
base_url = "http://127.0.0.1:$MOCK_FAST/v1"
keys = ["bench-upstream-key"]

[[providers]]
name = "stream"
kind = "openai-compatible"
base_url = "http://127.0.0.1:$MOCK_STREAM/v1"
keys = ["bench-upstream-key"]

# Thousands of concurrent streams share HTTP/2 connections upstream, as they
# do with the real providers (which all speak HTTP/2).
[[providers]]
name = "slow"
kind = "openai-compatible"
base_url = "http://127.0.0.1:$MOCK_SLOW/v1"
keys = ["bench-upstream-key"]
http2_prior_knowledge = true

[[models]]
name = "gpt-4o-mini"
targets = ["fast/gpt-4o-mini"]

[[models]]
name = "stream-model"
targets = ["stream/stream-model"]

[[models]]
name = "slow-model"
targets = ["slow/slow-model"]
TOML
start_floodgate() { # config
  FG_KEY=$FG_KEY "$BIN" serve --config "$1" --listen 127.0.0.1:$FG >>"$OUT/floodgate.log" 2>&1 &
  FG_PID=$!
  PIDS+=($FG_PID)
}
start_floodgate "$OUT/floodgate.toml"

sed -e "s/@MOCK_FAST@/$MOCK_FAST/; s/@MOCK_STREAM@/$MOCK_STREAM/" bench/litellm.yaml.template >"$OUT/litellm.yaml"
(cd "$OUT" && LITELLM_LOCAL_MODEL_COST_MAP=True exec "$OLDPWD/$VENV/bin/litellm" --config "$OUT/litellm.yaml" \
   --host 127.0.0.1 --port $LL --num_workers 2 >"$OUT/litellm.log" 2>&1) & PIDS+=($!)
LL_PID=$!

wait_http "http://127.0.0.1:$MOCK_FAST/health"
wait_http "http://127.0.0.1:$NGINX_FAST/health"
wait_http "http://127.0.0.1:$FG/health"
wait_http "http://127.0.0.1:$LL/health/liveliness"
log "all up: mock $MOCK_PID, nginx $NGINX_PID, floodgate $FG_PID, litellm $LL_PID"

# The sum over a process and all its descendants (nginx and LiteLLM fork
# workers) of what an awk program prints from each one's /proc/PID/FILE.
tree_sum() { # pid file awk-program
  local total=0 pid
  for pid in $(descendants "$1"); do
    total=$((total + $(awk "$3" "/proc/$pid/$2" 2>/dev/null || echo 0)))
  done
  echo $total
}
# RSS in KiB.
rss_tree() { tree_sum "$1" status '/VmRSS/ {print $2}'; }
descendants() {
  echo "$1"
  local child
  for child in $(pgrep -P "$1" || true); do descendants "$child"; done
}
rss_line() { echo "{\"step\":\"$1\",\"floodgate_kib\":$(rss_tree $FG_PID),\"nginx_kib\":$(rss_tree $NGINX_PID),\"litellm_kib\":$(rss_tree $LL_PID),\"mock_kib\":$(rss_tree $MOCK_PID)}" >>"$OUT/rss.jsonl"; }
# Samples RSS every second while a step runs and records the peak.
peak_rss() { # step
  local step=$1; shift
  local best_fg=0 best_ng=0 best_ll=0
  settle
  # RSS at the start of the step: allocators keep memory from earlier steps.
  local base_fg base_ng base_ll
  base_fg=$(rss_tree $FG_PID); base_ng=$(rss_tree $NGINX_PID); base_ll=$(rss_tree $LL_PID)
  "$@" &
  local job=$!
  while kill -0 $job 2>/dev/null; do
    local fg ng ll
    fg=$(rss_tree $FG_PID); ng=$(rss_tree $NGINX_PID); ll=$(rss_tree $LL_PID)
    [ "$fg" -gt "$best_fg" ] && best_fg=$fg
    [ "$ng" -gt "$best_ng" ] && best_ng=$ng
    [ "$ll" -gt "$best_ll" ] && best_ll=$ll
    sleep 1
  done
  wait $job || true
  echo "{\"step\":\"$step\",\"floodgate_kib\":$best_fg,\"nginx_kib\":$best_ng,\"litellm_kib\":$best_ll,\"floodgate_base_kib\":$base_fg,\"nginx_base_kib\":$base_ng,\"litellm_base_kib\":$base_ll}" >>"$OUT/rss-peak.jsonl"
}

sleep 2
rss_line idle

target_url() { # target kind(fast|stream|slow)
  local t=$1 k=$2 port
  case "$t/$k" in
    direct/fast) port=$MOCK_FAST ;; direct/stream) port=$MOCK_STREAM ;; direct/slow) port=$MOCK_SLOW ;;
    nginx/fast) port=$NGINX_FAST ;; nginx/stream) port=$NGINX_STREAM ;; nginx/slow) port=$NGINX_SLOW ;;
    floodgate/*) port=$FG ;;
    litellm/*) port=$LL ;;
  esac
  echo "http://127.0.0.1:$port/v1/chat/completions"
}
target_key() {
  case "$1" in floodgate) echo $FG_KEY ;; litellm) echo $LL_KEY ;; *) echo bench-upstream-key ;; esac
}
# CPU ticks used so far.
cpu_ticks() { tree_sum "$1" stat '{print $14 + $15}'; }
# Waits until no process under test is still working off an earlier step
# (LiteLLM keeps serving a backlog long after its client gave up), so no step
# shares the CPU with the previous one. At most 180 s.
settle() {
  local pids="$FG_PID $NGINX_PID $LL_PID $MOCK_PID" before after quiet=0
  for _ in $(seq 180); do
    before=0; for p in $pids; do before=$((before + $(cpu_ticks "$p"))); done
    sleep 1
    after=0; for p in $pids; do after=$((after + $(cpu_ticks "$p"))); done
    # Under 5 % of one core for two seconds in a row.
    if [ $((after - before)) -le $(( $(getconf CLK_TCK) / 20 )) ]; then
      quiet=$((quiet + 1)); [ $quiet -ge 2 ] && return 0
    else
      quiet=0
    fi
  done
  log "  (processes still busy after 180 s; going on)"
}
bench() { # name target kind args...
  local name=$1 target=$2 kind=$3; shift 3
  local model=gpt-4o-mini
  [ "$kind" = stream ] && model=stream-model
  [ "$kind" = slow ] && model=slow-model
  settle
  log "bench $name ($target)"
  "$BIN" bench --quiet --url "$(target_url "$target" "$kind")" --key "$(target_key "$target")" --model "$model" \
    --label "$name $target" --json "$OUT/$name-$target.json" --html "$OUT/$name-$target.html" "$@" \
    >"$OUT/$name-$target.txt" 2>&1 || log "  (bench exited with $?)"
}

TARGETS="direct nginx floodgate litellm"

# --- 1. small non-streaming completions ------------------------------------
if step 1; then
for c in 16 64 256; do
  for t in $TARGETS; do
    # RSS under load: the proxies at c=64.
    if [ "$c" = 64 ] && [ "$t" != direct ]; then
      peak_rss "load-c64-$t" bench "s1-c$c" "$t" fast --concurrency $c --duration $D
    else
      bench "s1-c$c" "$t" fast --concurrency $c --duration $D
    fi
  done
done

# The highest fixed rate floodgate sustains: an open-loop client costs more CPU
# than a closed loop on these shared cores, so start at 60 % of floodgate's
# best closed-loop throughput and step down 20 % until a run has no errors
# and no drops (at most 6 tries).
best=$(python3 bench/summarize.py --max-throughput "$OUT" floodgate)
rate=$(( best * 6 / 10 )); sustained=""
for _ in 1 2 3 4 5 6; do
  bench "s1-probe-r$rate" floodgate fast --rate $rate --duration $D
  if python3 bench/summarize.py --clean "$OUT/s1-probe-r$rate-floodgate.json"; then sustained=$rate; break; fi
  rate=$(( rate * 8 / 10 ))
done
if [ -n "$sustained" ]; then
  echo "$sustained" >"$OUT/floodgate-max-rate.txt"
  log "highest fixed rate floodgate sustains: $sustained req/s"
else
  log "no fixed rate without errors found down to $rate req/s"
fi
for r in 500 2000 $sustained; do
  for t in $TARGETS; do bench "s1-r$r" "$t" fast --rate $r --duration $D; done
done
fi

# --- 2. streaming completions (20 chunks, 5 ms apart) -----------------------
if step 2; then
for r in 200 1000; do
  for t in $TARGETS; do bench "s2-r$r" "$t" stream --stream --rate $r --duration $D; done
done
fi

# --- 3. many concurrent slow streams (a chunk a second for 60 s) ------------
if step 3; then
# A node meant to hold many long streams over HTTP/2 upstreams (one socket
# per stream, not two) is configured for it: the defaults of max_in_flight
# and max_connections, half the open-files limit, assume two sockets per
# request.
sed -e 's/^\[log\]/[server]\nmax_in_flight = 15000\nmax_connections = 15000\n\n[log]/' "$OUT/floodgate.toml" >"$OUT/floodgate-streams.toml"
kill "$FG_PID"; wait "$FG_PID" 2>/dev/null || true
start_floodgate "$OUT/floodgate-streams.toml"
wait_http "http://127.0.0.1:$FG/health"
for t in floodgate nginx; do
  peak_rss "streams-$SLOW_N-$t" bench "s3-streams" "$t" slow --stream --concurrency $SLOW_N \
    --duration $SLOW_D --timeout 120s --source-ips 127.0.0.1-127.0.0.4
done
fi

rss_line after
python3 bench/summarize.py "$OUT" >"$OUT/summary.md"
log "done: $OUT/summary.md"
cat "$OUT/summary.md"
