# Shell helpers the bench scripts share; source after setting OUT (run.log goes there).

log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$OUT/run.log"; }
wait_http() { for _ in $(seq 300); do curl -s -o /dev/null "$1" && return 0; sleep 0.2; done; log "not answering: $1"; return 1; }
sys_busy() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
settle() { # the machine idle (< 10 % of a core) for two seconds, at most 60 s
  local before after quiet=0 tck; tck=$(getconf CLK_TCK)
  for _ in $(seq 60); do
    before=$(sys_busy); sleep 1; after=$(sys_busy)
    if [ $((after - before)) -le $((tck / 10)) ]; then quiet=$((quiet + 1)); [ $quiet -ge 2 ] && return 0; else quiet=0; fi
  done
}
# A virtual key with every limit, none binding at a bench's load (master key: $FG_KEY).
make_key() { # base-url -> key
  curl -s -H "Authorization: Bearer $FG_KEY" -H 'content-type: application/json' "$1/admin/keys" \
    -d '{"name": "bench", "rpm": 1000000000, "tpm": 2000000000, "max_concurrent": 100000, "max_budget_usd": 1000000000, "budget_period": "month"}' \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])'
}
