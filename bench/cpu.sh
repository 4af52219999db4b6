#!/usr/bin/env bash
# Prints CPU milliseconds used by each process named on the command line
# (summed over all PIDs matching the pattern) during a command run.
#   bench/cpu.sh "pattern1,pattern2" -- command...
set -euo pipefail
IFS=, read -ra PATS <<< "$1"; shift; [ "$1" = "--" ] && shift
ticks() { local sum=0; for p in $(pgrep -f "$1" || true); do set -- $(cut -d' ' -f14,15 /proc/$p/stat 2>/dev/null || echo "0 0"); sum=$((sum + $1 + $2)); done; echo $sum; }
declare -A before
for p in "${PATS[@]}"; do before[$p]=$(ticks "$p"); done
"$@"
hz=$(getconf CLK_TCK)
for p in "${PATS[@]}"; do echo "cpu_ms[$p]=$(( ($(ticks "$p") - ${before[$p]}) * 1000 / hz ))"; done
