#!/usr/bin/env bash
# The Idempotency-Key gateway against nginx, in one run: wrk at 64
# connections against a trivial upstream (an nginx returning a fixed JSON
# body), five ways:
#   direct          wrk -> upstream
#   nginx           wrk -> nginx proxy_pass (keep-alive to the upstream) -> upstream
#   gateway-keyless wrk -> idem gateway -> upstream, no key: the proxy hop alone
#   gateway-unique  wrk -> idem gateway -> upstream, a new Idempotency-Key per
#                   request (two durable writes each: BEGIN and COMMIT, fsync on)
#   gateway-replay  wrk -> idem gateway, 64 keys committed beforehand: every
#                   request is a replay and the upstream is not touched
#   gateway-unique-shm  as gateway-unique, with the data directory on a RAM
#                   file system (/dev/shm), where fdatasync returns at once:
#                   the same code path without the disk's cost, so that the
#                   difference from gateway-unique is what the syncs cost here.
#                   A reference only: a RAM file system is not durable.
# Each round runs the five in turn; the summary gives the median of each
# figure over the rounds and the ratios against nginx. It also gives the
# proxy's CPU time per request (user + system, from /proc): the gateway
# process, or nginx's proxy workers (the upstream worker for `direct`).
# Unlike rps, it hardly depends on what else the machine runs. Each run
# also gives the share of the machine's CPU left idle (all cores, from
# /proc/stat: 0 means the run was CPU bound, not latency bound) and, where
# `perf` may count syscall tracepoints (root), the proxy's fdatasync calls
# per request: 2 per request would be one sync per record, and the inverse
# of (calls per request / 2) is the records each group commit covers. A
# second table then gives the proxy's system calls, eventfd writes (loop
# wake-ups from another thread), epoll_waits, futex calls and context
# switches per request.
#
#   bench/gateway.sh                      # 3 rounds of 10 s each
#   ROUNDS=5 DURATION=20 bench/gateway.sh
#   IDEM_BIN=/path/to/idem bench/gateway.sh   # skip the release build
#   IDEM_EVENT_LOOPS=1 bench/gateway.sh       # the gateway's event loops (default: one per core)
#
# Installs wrk and nginx (Debian packages) when missing; builds idem in
# release mode. Uses loopback ports only and a temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-10}"
CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-2}"

if ! command -v wrk >/dev/null || ! command -v nginx >/dev/null; then
    log "installing wrk and nginx"
    apt-get install -y wrk nginx >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y wrk nginx >/dev/null; }
fi
# IDEM_BIN names a release binary already built; otherwise build one.
IDEM="${IDEM_BIN:-}"
if [ -z "$IDEM" ]; then
    cargo build --release -p idem >/dev/null 2>&1 || cargo build --release -p idem
    IDEM=target/release/idem
fi

work="$(mktemp -d /tmp/idem-gateway-bench.XXXXXX)"
pids=()
shm_data=""
cleanup() { stop_pids "${pids[@]}"; rm -rf "$work" ${shm_data:+"$shm_data"}; }
trap cleanup EXIT

up_port="$(free_port)"
proxy_port="$(free_port)"
gw_port="$(free_port)"

nginx_conf() { # name workers body-of-http-block
    local dir="$work/$1"
    mkdir -p "$dir"
    cat >"$dir/nginx.conf" <<CONF
worker_processes $2;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    keepalive_requests 1000000;
    $3
}
CONF
    echo "$dir"
}

# The trivial upstream: a fixed 201 JSON answer, one worker.
up_dir="$(nginx_conf upstream 1 "server { listen 127.0.0.1:$up_port; location / { default_type application/json; return 201 '{\"id\":1,\"status\":\"created\"}'; } }")"
nginx -p "$up_dir" -c "$up_dir/nginx.conf" -g 'daemon off;' &
pids+=($!)

# nginx as users put it in front of apps: proxy_pass with upstream keep-alive.
proxy_dir="$(nginx_conf proxy auto "upstream app { server 127.0.0.1:$up_port; keepalive 128; }
    server { listen 127.0.0.1:$proxy_port; location / {
        proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection \"\";
        proxy_set_header Host \$host; proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto \$scheme; } }")"
nginx -p "$proxy_dir" -c "$proxy_dir/nginx.conf" -g 'daemon off;' &
pids+=($!)

cat >"$work/unique.lua" <<'LUA'
-- A new Idempotency-Key per request: run id, thread number, counter.
local made = 0
function setup(thread) made = made + 1; thread:set("tid", made) end
function init(args) run = args[1] or "r"; counter = 0 end
function request()
    counter = counter + 1
    return wrk.format("POST", "/orders", {["Content-Type"] = "application/json",
        ["Idempotency-Key"] = run .. "-" .. tid .. "-" .. counter}, '{"item":"tea","qty":2}')
end
LUA
cat >"$work/keyless.lua" <<'LUA'
-- No key: the gateway passes the request through (the proxy hop alone).
function request()
    return wrk.format("POST", "/orders", {["Content-Type"] = "application/json"}, '{"item":"tea","qty":2}')
end
LUA
cat >"$work/replay.lua" <<'LUA'
-- 64 keys, all committed before the run: every request is a replay.
function init(args) counter = 0 end
function request()
    counter = counter + 1
    return wrk.format("POST", "/orders", {["Content-Type"] = "application/json",
        ["Idempotency-Key"] = "replay-" .. (counter % 64)}, '{"item":"tea","qty":2}')
end
LUA

wait_port() { for _ in $(seq 200); do (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; log "port $1 never opened"; exit 1; }
wait_port "$up_port"
wait_port "$proxy_port"

# CPU clock ticks (user + system) of the given processes and their threads.
cpu_ticks() {
    local sum=0 p
    for p in "$@"; do sum=$((sum + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
    echo "$sum"
}
hz="$(getconf CLK_TCK)"
nginx_workers() { pgrep -P "$(cat "$1/nginx.pid")" | tr '\n' ' '; }

# Idle and total jiffies of the whole machine (all cores), from /proc/stat.
machine_jiffies() { awk '/^cpu / { t = 0; for (i = 2; i <= NF; i++) t += $i; print $5 + $6, t }' /proc/stat; }

# Whether perf can count syscall tracepoints here (root, or a permissive
# perf_event_paranoid); then each run also counts the proxy's fdatasync calls.
count_syncs=0
perf_events=syscalls:sys_enter_fdatasync,raw_syscalls:sys_enter,syscalls:sys_enter_write,syscalls:sys_enter_epoll_wait
perf_events=$perf_events,syscalls:sys_enter_futex,context-switches
if command -v perf >/dev/null && perf stat -e syscalls:sys_enter_fdatasync -o /dev/null -- true >/dev/null 2>&1; then
    count_syncs=1
fi

# wrk output -> "rps p50_ms p99_ms errors cpu_us_per_request idle_pct fdatasyncs_per_request"
# (the last is -1 when perf cannot count it).
measure() { # "pids" url script [args]
    local pids="$1" url="$2" script="$3"
    shift 3
    local out before after jiffies perf_pid="" syncs=-1
    # shellcheck disable=SC2086 # a list of pids
    before="$(cpu_ticks $pids)"
    jiffies="$(machine_jiffies)"
    if [ "$count_syncs" = 1 ]; then
        perf stat -x, -e "$perf_events" -p "$(echo $pids | tr ' ' ',')" -o "$work/perf.csv" &
        perf_pid=$!
    fi
    out="$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$script" "$url" -- "$@")"
    # shellcheck disable=SC2086
    after="$(cpu_ticks $pids)"
    if [ -n "$perf_pid" ]; then
        kill -INT "$perf_pid" 2>/dev/null || true
        wait "$perf_pid" 2>/dev/null || true
        syncs="$(awk -F, '/fdatasync/ { print ($1 ~ /^[0-9]+$/) ? $1 : -1 }' "$work/perf.csv")"
        # Wake-ups per request: `write` is the eventfd write that wakes a
        # sleeping event loop (sockets are written with sendto/writev).
        n="$(echo "$out" | awk '/requests in/ { print $1 }')"
        awk -F, -v n="${n:-0}" '$1 ~ /^[0-9]+$/ && n > 0 { e = $3; sub(/^syscalls:sys_enter_/, "", e)
            sub(/^raw_syscalls:sys_enter$/, "syscalls", e); printf "%s=%.3f ", e, $1 / n }' "$work/perf.csv" >"$work/last-wakes"
    fi
    # shellcheck disable=SC2086 # two numbers
    set -- $jiffies $(machine_jiffies)
    echo "$out" | awk -v ticks="$((after - before))" -v hz="$hz" -v idle="$(($3 - $1))" -v total="$(($4 - $2))" -v syncs="${syncs:--1}" '
        function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
        /Requests\/sec/ { rps = $2 }
        /^ +50%/ { p50 = ms($2) }
        /^ +99%/ { p99 = ms($2) }
        /Non-2xx or 3xx/ { err += $NF }
        /Socket errors/ { err += $4 + $6 + $8 + $10 }
        /requests in/ { n = $1 }
        END { printf "%.0f %.3f %.3f %d %.1f %.1f %.4f\n", rps, p50, p99, err + 0, (n > 0 ? ticks / hz * 1e6 / n : 0),
                  (total > 0 ? 100 * idle / total : 0), (syncs >= 0 && n > 0 ? syncs / n : -1) }'
}

# Starts the gateway on its data directory $1 and waits for its port; sets gw_pid.
start_gateway() {
    RUST_LOG=warn "$IDEM" gateway --listen "127.0.0.1:$gw_port" --upstream "http://127.0.0.1:$up_port" --data "$1" &
    gw_pid=$!
    pids+=($gw_pid)
    wait_port "$gw_port"
}

results="$work/results.txt"
: >"$results"
for round in $(seq "$ROUNDS"); do
    data="$work/data-$round"
    start_gateway "$data"
    for i in $(seq 0 63); do
        curl -s -o /dev/null -X POST -H 'Content-Type: application/json' -H "Idempotency-Key: replay-$i" \
            --data '{"item":"tea","qty":2}' "http://127.0.0.1:$gw_port/orders"
    done
    for mode in direct nginx gateway-keyless gateway-unique gateway-replay; do
        case "$mode" in
            direct) r="$(measure "$(nginx_workers "$up_dir")" "http://127.0.0.1:$up_port" "$work/unique.lua" "d$round")" ;;
            nginx) r="$(measure "$(nginx_workers "$proxy_dir")" "http://127.0.0.1:$proxy_port" "$work/unique.lua" "n$round")" ;;
            gateway-unique) r="$(measure "$gw_pid" "http://127.0.0.1:$gw_port" "$work/unique.lua" "g$round")" ;;
            gateway-keyless) r="$(measure "$gw_pid" "http://127.0.0.1:$gw_port" "$work/keyless.lua")" ;;
            gateway-replay) r="$(measure "$gw_pid" "http://127.0.0.1:$gw_port" "$work/replay.lua")" ;;
        esac
        echo "$round $mode $r" | tee -a "$results" >&2
        if [ -s "$work/last-wakes" ]; then echo "$round $mode $(cat "$work/last-wakes")" >>"$work/wakes.txt"; rm -f "$work/last-wakes"; fi
    done
    stop_pids "$gw_pid"
    # The same gateway with its log on a RAM file system (not durable): the
    # disk's share of the unique-key cost. Skipped where /dev/shm is not tmpfs.
    if [ "$(stat -f -c %T /dev/shm 2>/dev/null)" = tmpfs ]; then
        shm_data="$(mktemp -d /dev/shm/idem-gateway-bench.XXXXXX)"
        start_gateway "$shm_data"
        r="$(measure "$gw_pid" "http://127.0.0.1:$gw_port" "$work/unique.lua" "s$round")"
        echo "$round gateway-unique-shm $r" | tee -a "$results" >&2
        if [ -s "$work/last-wakes" ]; then echo "$round gateway-unique-shm $(cat "$work/last-wakes")" >>"$work/wakes.txt"; rm -f "$work/last-wakes"; fi
        stop_pids "$gw_pid"
        rm -rf "$shm_data"
    fi
done

echo
echo "rounds=$ROUNDS duration=${DURATION}s connections=$CONNECTIONS wrk_threads=$THREADS cores=$(nproc) gateway_event_loops=${IDEM_EVENT_LOOPS:-default} load_after=$(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| mode | rps | p50 ms | p99 ms | errors | rps vs nginx | p50 vs nginx | p99 vs nginx | CPU µs/request | CPU vs nginx | idle % | fdatasync/request |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
python3 - "$results" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
med = {}
for mode in ["direct", "nginx", "gateway-keyless", "gateway-unique", "gateway-replay", "gateway-unique-shm"]:
    rs = [r for r in rows if r[1] == mode]
    if not rs:
        continue
    med[mode] = tuple(statistics.median(float(r[i]) for r in rs) for i in (2, 3, 4, 6, 7, 8)) + (sum(int(r[5]) for r in rs),)
n = med["nginx"]
for mode, (rps, p50, p99, cpu, idle, syncs, err) in med.items():
    per = f"{syncs:.3f}" if syncs >= 0 else "-"
    print(f"| {mode} | {rps:.0f} | {p50:.2f} | {p99:.2f} | {err} | {rps / n[0]:.2f}x | {p50 / n[1]:.2f}x | {p99 / n[2]:.2f}x | {cpu:.1f} | {cpu / n[3]:.2f}x | {idle:.0f} | {per} |")
PY
if [ -s "$work/wakes.txt" ]; then
    echo
    echo "Per request, median over rounds (perf stat on the proxy process):"
    echo
    python3 - "$work/wakes.txt" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
names = ["syscalls", "write", "epoll_wait", "futex", "context-switches", "fdatasync"]
print("| mode | " + " | ".join(names) + " |")
print("|---|" + "---|" * len(names))
for mode in dict.fromkeys(r[1] for r in rows):
    vals = {}
    for r in (r for r in rows if r[1] == mode):
        for kv in r[2:]:
            k, v = kv.split("=")
            vals.setdefault(k, []).append(float(v))
    print(f"| {mode} | " + " | ".join(f"{statistics.median(vals[k]):.3f}" if k in vals else "-" for k in names) + " |")
PY
fi
