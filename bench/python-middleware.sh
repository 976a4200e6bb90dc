#!/usr/bin/env bash
# The same FastAPI app (uvicorn, one worker) behind idem_client's
# IdempotencyMiddleware on an idem server, and behind asgi-idempotency-header
# (PyPI) on a private redis-server, driven by one load generator:
#   1. 2,000 pairs of concurrent duplicates: duplicate effects, pair outcomes;
#   2. an endpoint that raises on its first call, retried with the same key;
#   3. throughput with unique keys, then with replays (32 in flight).
# Prints one JSON line per implementation and a table of ratios.
#   bash bench/python-middleware.sh            # IDEM_BIN: default target/release/idem
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

bash scripts/setup.sh >/dev/null
need_redis
py=target/py/bin/python
# The peer is installed here only, never by the project's own requirements.
"$py" -c "import idempotency_header_middleware" 2>/dev/null ||
    target/py/bin/pip install -q asgi-idempotency-header
idem_bin=${IDEM_BIN:-target/release/idem}
[ -x "$idem_bin" ] || cargo build --release -p idem

tmp=$(mktemp -d)
pids=()
cleanup() { stop_pids "${pids[@]}"; rm -rf "$tmp"; }
trap cleanup EXIT

wait_port() {
    for _ in $(seq 300); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    log "nothing listens on port $1"; return 1
}

idem_port=$(free_port)
env -u IDEM_BIN "$idem_bin" serve --port "$idem_port" --http-port 0 --data "$tmp/idem" --log warn &
pids+=($!)
redis_port=$(free_port)
redis-server --port "$redis_port" --save "" --appendonly no --dir "$tmp" >/dev/null &
pids+=($!)
wait_port "$idem_port"; wait_port "$redis_port"

app_idem=$(free_port)
"$py" bench/python-middleware.py serve --impl idem --port "$app_idem" --store "redis://127.0.0.1:$idem_port" &
pids+=($!)
app_peer=$(free_port)
"$py" bench/python-middleware.py serve --impl peer --port "$app_peer" --store "redis://127.0.0.1:$redis_port" &
pids+=($!)
wait_port "$app_idem"; wait_port "$app_peer"

log "driving idem_client.asgi (idem, durable) ..."
ours=$("$py" bench/python-middleware.py drive --url "http://127.0.0.1:$app_idem" --impl idem_client)
log "driving asgi-idempotency-header (redis-server, no persistence) ..."
peer=$("$py" bench/python-middleware.py drive --url "http://127.0.0.1:$app_peer" --impl asgi-idempotency-header)
echo "$ours"
echo "$peer"
"$py" - "$ours" "$peer" <<'PY'
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"| | {a['impl']} | {b['impl']} |")
print("|---|---|---|")
for k in ("duplicate_effects", "pairs_not_run", "identical_pairs", "pair_statuses", "fail_once_statuses", "fail_once_runs",
          "unique_ok", "replay_ok"):
    print(f"| {k} | {a[k]} | {b[k]} |")
for k in ("unique_rps", "replay_rps"):
    print(f"| {k} | {a[k]:.0f} ({a[k] / b[k]:.2f}x) | {b[k]:.0f} (1.00x) |")
PY
