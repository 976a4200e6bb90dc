#!/usr/bin/env bash
# What the cheapest possible durable server reaches on this machine, next to
# Redis (no persistence, `appendfsync always`) and idem, with the same
# redis-benchmark line in the same run.
#
# The floor servers are `crates/idem-bench/examples/durable_floor.rs`: they
# frame RESP requests, append 64 bytes per request to a preallocated file,
# `fdatasync` it and answer +OK, with nothing else to do. One per sync policy:
#   none            answer at once, no writes (no-persistence ceiling)
#   loop            write + sync after each epoll round (Redis `always`)
#   gather:20:200   poll on until 20 µs pass without a request, at most 200 µs
#                   (idem's fixed gap before commit 9fac322 weighed it)
#   thread          a sync thread syncs while the loop serves, one sync in flight
# Every server gets the line `-c $C -P $P -r 1000000` with SET k 1 NX PX
# (IDEM.BEGIN k LEASE for idem), for every pipeline depth P in PIPELINES and
# every client count C in CLIENTS, interleaved in a rotating order per round.
# Each server's CPU per request (utime + stime of its process over the
# line, from /proc) is reported next to its throughput.
# A floor server's ratio to Redis without persistence bounds what any server
# with its policy can reach here: it does less work per request than any real
# one.
#
# Usage: bench/durable-floor.sh        (about 1 minute per round and line at P=1)
# Environment:
#   ROUNDS=3  N=150000 (requests per line at P=1; N_P16=4*N at P>1)
#   PIPELINES="1 16"  CLIENTS="50 4"  MODES="none loop"
#   (P=1 alone, as before: PIPELINES=1 CLIENTS=50)
#   BENCH_IDEM_BIN=path   use this idem binary (default: build it)
#   BASE_IDEM_BIN=path    also run this idem binary, as `idem-base`, on the same lines
#   IDEM_VARIANTS="name=path ..."  also run each of these idem binaries (or wrapper
#                         scripts that set an environment and exec one), as `idem-NAME`
#   FLOOR_BIN=path        use this durable_floor binary (default: build it)
#   PERF_STAT=1           also count, per request, each server's syscalls, epoll_waits,
#                         eventfd/socket writes, futex calls and context switches
#                         (`perf stat` on syscall tracepoints; needs root or a
#                         permissive perf_event_paranoid), printed after the table
set -euo pipefail

ROUNDS=${ROUNDS:-3}
N=${N:-150000}
N_P16=${N_P16:-$((4 * N))}
PIPELINES=${PIPELINES:-${P:-"1 16"}}
CLIENTS=${CLIENTS:-"50 4"}
MODES=${MODES:-"none loop"}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/idem-floor.XXXXXX)
PIDS=()
. "$ROOT/bench/lib.sh"
cleanup() {
    stop_pids "${PIDS[@]}"
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

need_redis
if [[ -z ${BENCH_IDEM_BIN:-} || -z ${FLOOR_BIN:-} ]]; then
    log "building idem and durable_floor (release)"
    # Two invocations: with `--example`, cargo builds only the example, not idem's binary.
    (cd "$ROOT" && cargo build --release -p idem --bin idem 2>&1 | tail -n 1 >&2)
    (cd "$ROOT" && cargo build --release -p idem-bench --example durable_floor 2>&1 | tail -n 1 >&2)
fi
BENCH_IDEM_BIN=${BENCH_IDEM_BIN:-$ROOT/target/release/idem}
FLOOR_BIN=${FLOOR_BIN:-$ROOT/target/release/examples/durable_floor}

wait_ready() { # port name: any reply to PING (the floor servers answer +OK)
    for _ in $(seq 400); do
        if [[ -n $(redis-cli -p "$1" PING 2>/dev/null) ]]; then return 0; fi
        sleep 0.05
    done
    log "$2 did not answer on port $1"
    return 1
}

declare -A PORT PID
NAMES=()
start() { # name command...
    local name=$1 port
    shift
    port=$(free_port)
    mkdir -p "$WORK/$name"
    "${@//@PORT@/$port}" >"$WORK/$name.log" 2>&1 &
    PIDS+=($!)
    PID[$name]=$!
    PORT[$name]=$port
    NAMES+=("$name")
    wait_ready "$port" "$name"
}
start redis-nopersist redis-server --port @PORT@ --bind 127.0.0.1 --dir "$WORK/redis-nopersist" --save "" --appendonly no
start redis-always redis-server --port @PORT@ --bind 127.0.0.1 --dir "$WORK/redis-always" --save "" \
    --appendonly yes --appendfsync always --auto-aof-rewrite-percentage 0
start idem env IDEM_SNAPSHOT_AFTER_BYTES=$((1 << 40)) "$BENCH_IDEM_BIN" serve --port @PORT@ --http-port 0 \
    --data "$WORK/idem" --log warn
if [[ -n ${BASE_IDEM_BIN:-} ]]; then
    start idem-base env IDEM_SNAPSHOT_AFTER_BYTES=$((1 << 40)) "$BASE_IDEM_BIN" serve --port @PORT@ --http-port 0 \
        --data "$WORK/idem-base" --log warn
fi
for v in ${IDEM_VARIANTS:-}; do
    start "idem-${v%%=*}" env IDEM_SNAPSHOT_AFTER_BYTES=$((1 << 40)) "${v#*=}" serve --port @PORT@ --http-port 0 \
        --data "$WORK/idem-${v%%=*}" --log warn
done
for m in $MODES; do
    start "floor-$m" "$FLOOR_BIN" @PORT@ "$WORK/floor-$m" "$m"
done
log "servers: ${NAMES[*]}"

HZ=$(getconf CLK_TCK)
RESULTS=$WORK/results.tsv
: >"$RESULTS"
PERF_RESULTS=$WORK/perf.tsv
: >"$PERF_RESULTS"
PERF_EVENTS=raw_syscalls:sys_enter,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_epoll_pwait,syscalls:sys_enter_read
PERF_EVENTS=$PERF_EVENTS,syscalls:sys_enter_recvfrom,syscalls:sys_enter_write,syscalls:sys_enter_sendto
PERF_EVENTS=$PERF_EVENTS,syscalls:sys_enter_writev,syscalls:sys_enter_futex,syscalls:sys_enter_fdatasync,context-switches
for round in $(seq "$ROUNDS"); do
    for P in $PIPELINES; do
        for C in $CLIENTS; do
            if ((P > 1)); then n=$N_P16; else n=$N; fi
            count=${#NAMES[@]}
            for i in $(seq 0 $((count - 1))); do
                name=${NAMES[$(((i + round) % count))]}
                k="r${round}p${P}c${C}:__rand_int__"
                if [[ $name == idem* ]]; then cmd=(IDEM.BEGIN "$k" LEASE 3600000); else cmd=(SET "$k" 1 NX PX 3600000); fi
                t0=$(cpu_ticks "${PID[$name]}")
                if [[ ${PERF_STAT:-0} == 1 ]]; then
                    perf stat -x, -e "$PERF_EVENTS" -p "${PID[$name]}" -o "$WORK/perf.csv" &
                    perf_pid=$!
                    sleep 0.2
                fi
                { TIMEFORMAT='%U %S'; time redis-benchmark -p "${PORT[$name]}" -c "$C" -n "$n" -P "$P" -r 1000000 --csv \
                    "${cmd[@]}" >"$WORK/rb.csv" 2>/dev/null; } 2>"$WORK/rb.time"
                rps=$(tail -n 1 "$WORK/rb.csv" | awk -F',' '{gsub(/"/,""); print $(NF-6)}')
                cli=$(awk -v n="$n" '{printf "%.2f", ($1 + $2) * 1e6 / n}' "$WORK/rb.time")
                if [[ ${PERF_STAT:-0} == 1 ]]; then
                    kill -INT "$perf_pid" 2>/dev/null || true
                    wait "$perf_pid" 2>/dev/null || true
                    awk -F, -v line="P=$P c=$C" -v r="$round" -v s="$name" -v n="$n" '$1 ~ /^[0-9]+$/ {
                        e = $3; sub(/^syscalls:sys_enter_/, "", e); sub(/^raw_syscalls:sys_enter$/, "all_syscalls", e)
                        printf "%s\t%s\t%s\t%s\t%.3f\n", line, r, s, e, $1 / n }' "$WORK/perf.csv" >>"$PERF_RESULTS"
                fi
                us=$(awk -v a="$t0" -v b="$(cpu_ticks "${PID[$name]}")" -v hz="$HZ" -v n="$n" 'BEGIN{printf "%.2f", (b - a) / hz * 1e6 / n}')
                printf '%s\t%s\t%s\t%s\t%s\t%s\n' "P=$P c=$C" "$round" "$name" "$rps" "$us" "$cli" >>"$RESULTS"
                log "P=$P c=$C round $round $name: $rps rps, CPU per request: server $us µs, client $cli µs"
            done
        done
    done
done

printf '\n%s rounds, %s requests per line at P=1 (%s at P>1); per round the ratio to\n' "$ROUNDS" "$N" "$N_P16"
printf 'redis-nopersist, to redis-always and to floor-loop, then the median; CPU per request from /proc\n'
printf '%-10s %-18s %12s %11s %9s %11s %14s %14s\n' line server "rps (median)" "x nopersist" "x always" "x floor-loop" \
    "server us/req" "client us/req"
awk -F'\t' '
    { rps[$1, $2, $3] = $4; cpu[$1, $2, $3] = $5; cli[$1, $2, $3] = $6; lines[$1] = 1; names[$3] = 1; rounds[$2] = 1 }
    function median(a, n,   i, j, t) {
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
        return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    function ratio(x, y) { return y > 0 ? x / y : 0 }
    END {
        for (l in lines) for (s in names) {
            n = 0; split("", a); split("", b); split("", c); split("", f); split("", d); split("", e)
            for (r in rounds) {
                n++; a[n] = rps[l, r, s]; b[n] = ratio(rps[l, r, s], rps[l, r, "redis-nopersist"])
                c[n] = ratio(rps[l, r, s], rps[l, r, "redis-always"]); f[n] = ratio(rps[l, r, s], rps[l, r, "floor-loop"])
                d[n] = cpu[l, r, s]; e[n] = cli[l, r, s]
            }
            printf "%-10s %-18s %12.0f %11.2f %9.2f %11.2f %14.2f %14.2f\n", l, s, median(a, n), median(b, n), median(c, n), median(f, n), median(d, n), median(e, n)
        }
    }' "$RESULTS" | sort
if [[ ${PERF_STAT:-0} == 1 ]]; then
    printf '\nPer request (median over rounds; counted on the server process while its line ran):\n'
    printf '%-10s %-18s' line server
    printf ' %12s' all_syscalls epoll_wait epoll_pwait read recvfrom write sendto writev futex fdatasync context-switches
    printf '\n'
    awk -F'\t' '
        { v[$1, $3, $4, ++k[$1, $3, $4]] = $5; key[$1 SUBSEP $3] = 1; ev[$4] = 1 }
        function median(a, n,   i, j, t) {
            for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
            return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
        }
        END {
            split("all_syscalls epoll_wait epoll_pwait read recvfrom write sendto writev futex fdatasync context-switches", order, " ")
            for (kk in key) {
                split(kk, p, SUBSEP)
                printf "%-10s %-18s", p[1], p[2]
                for (i = 1; i in order; i++) {
                    n = k[p[1], p[2], order[i]]; split("", a)
                    for (j = 1; j <= n; j++) a[j] = v[p[1], p[2], order[i], j]
                    printf " %12.3f", n ? median(a, n) : -1
                }
                printf "\n"
            }
        }' "$PERF_RESULTS" | sort
fi
grep -h "records per sync" "$WORK"/floor-*.log 2>/dev/null | tail -n 4 >&2 || true
