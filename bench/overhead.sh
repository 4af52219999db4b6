#!/usr/bin/env bash
# A quick A/B check of gateway overhead with wrk (the full comparison with nginx
# and LiteLLM is bench/run.sh): the mock upstream directly, then floodgate
# (auth on, metrics on, JSON logs, ledger) in front of it, at several
# concurrency levels, with each process's CPU time per request.
#
#   bench/overhead.sh [duration-seconds]        (default 10)
#
# Needs wrk (apt-get install wrk). Builds the release binary first.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-10}"
MOCK_PORT=18181
FG_PORT=18182
OUT=bench/out
mkdir -p "$OUT"

cargo build --release --quiet
BIN=target/release/floodgate

cleanup() { kill "${MOCK_PID:-}" "${FG_PID:-}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT

"$BIN" mock-upstream --port "$MOCK_PORT" >"$OUT/mock.log" 2>&1 &
MOCK_PID=$!

cat >"$OUT/floodgate.toml" <<TOML
master_key = "\${BENCH_MASTER_KEY}"

[log]
format = "json"

[database]
url = "sqlite://$OUT/bench.db"

[[providers]]
name = "mock"
kind = "openai-compatible"
base_url = "http://127.0.0.1:$MOCK_PORT/v1"
keys = ["bench-upstream-key"]

[[models]]
name = "gpt-4o-mini"
targets = ["mock/gpt-4o-mini"]
TOML
rm -f "$OUT"/bench.db*
export BENCH_MASTER_KEY="bench-master-key-0123456789"
"$BIN" serve --config "$OUT/floodgate.toml" --listen "127.0.0.1:$FG_PORT" >"$OUT/floodgate.log" 2>&1 &
FG_PID=$!

for port in $MOCK_PORT $FG_PORT; do
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done
done

# CPU time (user + system, clock ticks) a process has used so far.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

run() { # name url concurrency key [script]
  local threads=2 script="${5:-bench/chat.lua}" pid
  [ "$3" -lt 2 ] && threads=1
  case "$1" in floodgate*) pid=$FG_PID ;; *) pid=$MOCK_PID ;; esac
  local before; before=$(ticks "$pid")
  BENCH_KEY="$4" wrk -t"$threads" -c"$3" -d"${DURATION}s" --latency -s "$script" "$2" >"$OUT/$1-c$3.txt"
  local used=$(( $(ticks "$pid") - before )) n
  n=$(awk '/requests in/ {print $1}' "$OUT/$1-c$3.txt")
  local rps p50 p99
  rps=$(awk '/Requests\/sec/ {print $2}' "$OUT/$1-c$3.txt")
  p50=$(awk '$1=="50%" {print $2}' "$OUT/$1-c$3.txt")
  p99=$(awk '$1=="99%" {print $2}' "$OUT/$1-c$3.txt")
  errs=$(grep -E "Non-2xx|Socket errors" "$OUT/$1-c$3.txt" | tr "\n" " " || true)
  # CPU microseconds per request of the process measured (the mock for
  # "mock-direct" rows, floodgate for "floodgate" rows).
  local us=$(( used * 1000000 / $(getconf CLK_TCK) / (n > 0 ? n : 1) ))
  printf "| %-22s | %5s | %10s | %8s | %8s | %6s | %s\n" "$1" "$3" "$rps" "$p50" "$p99" "$us" "${errs:-0 errors}"
}

echo "| target                 |  conc |      req/s |      p50 |      p99 | µs CPU/req | errors"
echo "|------------------------|-------|------------|----------|----------|------------|-------"
for c in 16 64 256; do
  run mock-direct "http://127.0.0.1:$MOCK_PORT/v1/chat/completions" "$c" bench-upstream-key
  run floodgate "http://127.0.0.1:$FG_PORT/v1/chat/completions" "$c" "$BENCH_MASTER_KEY"
done
run mock-direct-stream "http://127.0.0.1:$MOCK_PORT/v1/chat/completions" 64 bench-upstream-key bench/chat-stream.lua
run floodgate-stream "http://127.0.0.1:$FG_PORT/v1/chat/completions" 64 "$BENCH_MASTER_KEY" bench/chat-stream.lua
rss=$(ps -o rss= -p "$FG_PID" | tr -d ' ')
echo
echo "floodgate RSS after the run: $((rss / 1024)) MiB"
echo "ledger rows written: $(sqlite3 "$OUT/bench.db" 'select count(*) from usage' 2>/dev/null || echo n/a)"
