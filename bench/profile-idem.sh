#!/usr/bin/env bash
# Profiles durable idem under the IDEM.BEGIN load of bench/vs-redis.sh
# (50 clients, random keys, P=1 then P=16), one redis-benchmark line at a time:
#   - perf record (DWARF call graphs) of the idem process -> perf-p<P>.data,
#     flat and caller reports in perf-p<P>.txt / perf-p<P>-children.txt;
#   - syscall counts of idem (perf stat on syscall tracepoints) -> syscalls-p<P>.txt;
#   - CPU seconds used by idem, by each of its threads, and by redis-benchmark
#     (from /proc) -> cpu-p<P>.txt.
# Starts idem (`idem serve --port P --http-port 0 --data <tmpdir>`) on a free
# port and stops it on exit.
#
# Usage: bench/profile-idem.sh   Environment: N_P1, N_P16, CLIENTS, BENCH_IDEM_BIN, OUT
set -euo pipefail

N_P1=${N_P1:-150000}
N_P16=${N_P16:-600000}
CLIENTS=${CLIENTS:-50}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/idem-profile.XXXXXX)
OUT=${OUT:-$WORK/out}
mkdir -p "$OUT"
PIDS=()

. "$ROOT/bench/lib.sh"
cleanup() {
    stop_pids "${PIDS[@]}"
    rm -rf "$WORK/idem-data"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

command -v perf >/dev/null || apt-get install -y linux-perf >/dev/null
need_redis
if [[ -z "${BENCH_IDEM_BIN:-}" ]]; then
    (cd "$ROOT" && cargo build --release -p idem 2>&1 | tail -n 1 >&2)
    BENCH_IDEM_BIN=$ROOT/target/release/idem
fi

PORT=$(free_port)
IDEM_SNAPSHOT_AFTER_BYTES=$((1 << 40)) "$BENCH_IDEM_BIN" serve --port "$PORT" --http-port 0 \
    --data "$WORK/idem-data" --log warn >"$OUT/idem.log" 2>&1 &
IDEM_PID=$!
PIDS+=("$IDEM_PID")
for _ in $(seq 200); do redis-cli -p "$PORT" PING 2>/dev/null | grep -q PONG && break; sleep 0.05; done

# CPU ticks (user+system) of a process or thread, from its stat file.
ticks() { awk '{print $14 + $15}' "$1" 2>/dev/null || echo 0; }
HZ=$(getconf CLK_TCK)

SYSCALLS=fdatasync,pwrite64,write,writev,sendto,read,recvfrom,epoll_wait,futex,sched_yield,clock_gettime
EVENTS=$(tr ',' '\n' <<<"$SYSCALLS" | sed 's/^/syscalls:sys_enter_/' | paste -sd,)
EVENTS="$EVENTS,context-switches,cpu-migrations"

for p in 1 16; do
    n=$N_P1
    [[ $p -gt 1 ]] && n=$N_P16
    cmd=(IDEM.BEGIN "prof$p:__rand_int__" LEASE 3600000)
    declare -A before=()
    for t in /proc/"$IDEM_PID"/task/*; do before[$t]=$(ticks "$t/stat"); done
    total_before=$(ticks /proc/"$IDEM_PID"/stat)
    perf record -F 499 --call-graph dwarf,16384 -p "$IDEM_PID" -o "$OUT/perf-p$p.data" \
        >"$OUT/perf-record-p$p.log" 2>&1 &
    perf_rec=$!
    perf stat -e "$EVENTS" -p "$IDEM_PID" -o "$OUT/syscalls-p$p.txt" &
    perf_stat=$!
    sleep 0.5
    started=$(date +%s.%N)
    redis-benchmark -p "$PORT" -c "$CLIENTS" -n "$n" -P "$p" -r 1000000 --csv "${cmd[@]}" \
        2>/dev/null >"$OUT/rb-p$p.csv" &
    rb=$!
    rb_ticks=0
    while kill -0 "$rb" 2>/dev/null; do
        t=$(ticks /proc/"$rb"/stat)
        [[ $t -gt 0 ]] && rb_ticks=$t
        sleep 0.1
    done
    wait "$rb"
    elapsed=$(echo "$(date +%s.%N) - $started" | bc)
    total_after=$(ticks /proc/"$IDEM_PID"/stat)
    kill -INT "$perf_rec" "$perf_stat" 2>/dev/null || true
    wait "$perf_rec" "$perf_stat" 2>/dev/null || true
    {
        echo "P=$p requests=$n wall_s=$elapsed (includes ~0.1 s of redis-benchmark start-up)"
        tail -n 1 "$OUT/rb-p$p.csv"
        echo "idem CPU s: $(echo "scale=2; ($total_after - $total_before) / $HZ" | bc)" \
            " = $(echo "scale=2; ($total_after - $total_before) * 1000000 / $HZ / $n" | bc) us/request"
        echo "redis-benchmark CPU s (last sample): $(echo "scale=2; $rb_ticks / $HZ" | bc)" \
            " = $(echo "scale=2; $rb_ticks * 1000000 / $HZ / $n" | bc) us/request"
        echo "idem threads (CPU s during the line):"
        for t in /proc/"$IDEM_PID"/task/*; do
            d=$(($(ticks "$t/stat") - ${before[$t]:-0}))
            [[ $d -gt 0 ]] && printf '  %-20s %s\n' "$(cat "$t/comm")" "$(echo "scale=2; $d / $HZ" | bc)"
        done
    } >"$OUT/cpu-p$p.txt"
    perf report -i "$OUT/perf-p$p.data" --no-children --sort symbol --stdio --percent-limit 0.7 \
        -g none 2>/dev/null >"$OUT/perf-p$p.txt" || true
    perf report -i "$OUT/perf-p$p.data" --children --sort symbol --stdio --percent-limit 3 \
        -g none 2>/dev/null >"$OUT/perf-p$p-children.txt" || true
    cat "$OUT/cpu-p$p.txt" >&2
    grep -E "syscalls|context-switches|migrations" "$OUT/syscalls-p$p.txt" >&2 || true
done
log "profiles in $OUT"
