#!/usr/bin/env bash
# The same FastAPI app (uvicorn, one worker) behind idem_client's
# IdempotencyMiddleware on an idem server, and behind asgi-idempotency-header
# (PyPI) on a private redis-server, driven by one load generator:
#   1. 2,000 pairs of concurrent duplicates: duplicate effects, pair outcomes;
#   2. an endpoint that raises on its first call, retried with the same key;
#   3. throughput with unique keys, then with replays (32 in flight).
# Prints one JSON line per run and a table of ratios.
#   bash bench/python-middleware.sh      # IDEM_BIN: default target/release/idem; ROUNDS: default 2
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

# Alternating rounds, so that a change of load on a shared machine hits both alike.
rounds=${ROUNDS:-2}
results=()
for r in $(seq "$rounds"); do
    log "round $r: idem_client.asgi (idem, durable) ..."
    results+=("$("$py" bench/python-middleware.py drive --url "http://127.0.0.1:$app_idem" --impl idem_client)")
    log "round $r: asgi-idempotency-header (redis-server, no persistence) ..."
    results+=("$("$py" bench/python-middleware.py drive --url "http://127.0.0.1:$app_peer" --impl asgi-idempotency-header)")
done
printf '%s\n' "${results[@]}"
"$py" - "${results[@]}" <<'PY'
import json, statistics, sys
runs = [json.loads(a) for a in sys.argv[1:]]
impls = ["idem_client", "asgi-idempotency-header"]
by = {i: [r for r in runs if r["impl"] == i] for i in impls}
def total(i, k): return sum(r[k] for r in by[i])
def each(i, k): return [r[k] for r in by[i]]
def med(i, k): return statistics.median(each(i, k))
print(f"| per round, {len(by[impls[0]])} rounds | {impls[0]} | {impls[1]} |")
print("|---|---|---|")
for k in ("duplicate_effects", "pairs_not_run", "identical_pairs"):
    print(f"| {k} (sum) | {total(impls[0], k)} | {total(impls[1], k)} |")
for k in ("pair_statuses", "fail_once_statuses", "fail_once_runs"):
    print(f"| {k} | {each(impls[0], k)} | {each(impls[1], k)} |")
for k in ("unique_rps", "replay_rps"):
    a, b = med(impls[0], k), med(impls[1], k)
    print(f"| {k} (median) | {a:.0f} ({a / b:.2f}x) | {b:.0f} (1.00x) |")
PY
