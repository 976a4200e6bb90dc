#!/usr/bin/env bash
# idem (durable, default mode) against Redis `SET ... NX PX`, driven by the
# same redis-benchmark lines, interleaved server by server.
#
# Starts, on free loopback ports, each with its own temp dir:
#   redis-nopersist  redis-server --save "" --appendonly no
#   redis-always     redis-server --save "" --appendonly yes --appendfsync always
#                    (FSYNC=every-second: redis-everysec, --appendfsync everysec)
#   idem             idem serve --port P --http-port 0 --data <tmpdir>   (fsync always)
# and stops all three on exit (trap), whatever happens.
#
# Background compaction is off on both durable servers by default (Redis
# `auto-aof-rewrite-percentage 0`, idem `IDEM_SNAPSHOT_AFTER_BYTES=1 TiB`):
# an AOF rewrite (a forked child) or a snapshot (a thread) lands on whichever
# line runs at that moment on this 2-core machine and skews that one ratio.
# COMPACTION=default keeps both servers' defaults instead.
#
# TTLs are 3600000 ms (1 h), not a typical 30 s: a run lasts several minutes,
# and keys expiring under a later line would make each server's expiry work
# land on other lines (and spoil the DBSIZE-based "effect" column).
#
# Lines (each at 50 clients, at P=1 and at P=16, random keys -r 1000000):
#   begin    IDEM.BEGIN k LEASE 3600000        vs  SET k 1 NX PX 3600000
#   claim    CLAIM k owner1                    vs  SET k owner1 NX
#   lock     LOCK k owner1 LEASE 3600000       vs  SET k owner1 NX PX 3600000
#   unlock   UNLOCK k owner1                   vs  EVAL <owner-checked DEL> 1 k owner1
#   counter  COUNTER.ADD k 1                   vs  INCRBY k 1
# redis-benchmark draws a new random number for every request, so LOCK and
# UNLOCK cannot share a key inside one invocation: they are two lines. Before
# each UNLOCK line (unmeasured), every key of its keyspace is locked by owner1
# (`redis-cli --pipe`, LEASE/PX 3600000), so most UNLOCKs find their lock and
# delete it (the ones drawing an already unlocked key are no-ops). The share of
# requests that changed state ("effect": keys added, or removed for unlock,
# per request, from DBSIZE before/after) is printed for every line.
#
# Every round uses fresh key prefixes, so each line starts on keys no earlier
# line touched. Within a round the three servers run back to back for each
# line, in an order that rotates with the round, so slow drift of the shared
# 2-core machine falls on all three alike. Only ratios from one run count.
#
# Usage: bench/vs-redis.sh            (about 3-4 minutes)
# Environment:
#   ROUNDS=1          rounds of the whole set (ratios are per round, then the median)
#   N_P1=150000       requests per line at P=1
#   N_P16=600000      requests per line at P=16
#   CLIENTS=50        redis-benchmark -c
#   LINES="begin claim lock unlock counter"
#   PIPELINES="1 16"
#   BENCH_IDEM_BIN=path  skip the build and use this binary (not IDEM_*: `idem serve`
#                        refuses to start when an unknown IDEM_* variable is set)
#   OUT=dir           where results.tsv and the logs go (default: a temp dir, kept)
#   COMPACTION=off    off: no AOF rewrite / snapshot during the run; default: servers' defaults
#   FSYNC=always      every-second: idem `--fsync every-second` against Redis `appendfsync
#                     everysec` (both lose up to about a second of writes on power loss)
#   PERF=1            also `perf record -g` idem during the `begin` lines (perf-*.data in OUT);
#                     this slows idem, so its ratios then mean nothing: prefer bench/profile-idem.sh
set -euo pipefail

ROUNDS=${ROUNDS:-1}
N_P1=${N_P1:-150000}
N_P16=${N_P16:-600000}
CLIENTS=${CLIENTS:-50}
KEYSPACE=${KEYSPACE:-1000000}
LINES=${LINES:-"begin claim lock unlock counter"}
PIPELINES=${PIPELINES:-"1 16"}
PERF=${PERF:-0}
COMPACTION=${COMPACTION:-off}
FSYNC=${FSYNC:-always}
case $FSYNC in
always) DURABLE=redis-always REDIS_FSYNC=always ;;
every-second) DURABLE=redis-everysec REDIS_FSYNC=everysec ;;
*) echo "FSYNC must be always or every-second" >&2; exit 2 ;;
esac
TTL_MS=3600000

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/idem-vs-redis.XXXXXX)
OUT=${OUT:-$WORK/out}
mkdir -p "$OUT"
PIDS=()

. "$ROOT/bench/lib.sh"
cleanup() {
    stop_pids "${PIDS[@]}"
    rm -rf "$WORK/redis-nopersist" "$WORK/$DURABLE" "$WORK/idem-data" "$WORK"/prefill-*
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- tools --------------------------------------------------------------
need_redis

if [[ -z "${BENCH_IDEM_BIN:-}" ]]; then
    log "building idem (release)"
    (cd "$ROOT" && cargo build --release -p idem 2>&1 | tail -n 1 >&2)
    BENCH_IDEM_BIN=$ROOT/target/release/idem
fi

# fdatasync latency of the disk the servers write to (8 KiB appends), in ms:
# the floor of every durable figure, and on a shared machine it moves.
fsync_probe() {
    python3 - "$WORK/fsync-probe" <<'PY'
import os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
lat = []
for _ in range(200):
    os.write(fd, b"x" * 8192)
    t = time.perf_counter(); os.fdatasync(fd); lat.append((time.perf_counter() - t) * 1e3)
os.close(fd); os.unlink(sys.argv[1])
lat.sort()
print(f"fdatasync p50 {lat[100]:.3f} ms, p90 {lat[180]:.3f} ms, p99 {lat[198]:.3f} ms")
PY
}

wait_ready() { # port name
    for _ in $(seq 200); do
        if redis-cli -p "$1" PING 2>/dev/null | grep -q PONG; then return 0; fi
        sleep 0.05
    done
    log "$2 did not answer PING on port $1"
    return 1
}

# --- servers ------------------------------------------------------------
declare -A PORT PID
start_redis() { # name extra-args...
    local name=$1; shift
    local dir=$WORK/$name port
    mkdir -p "$dir"
    port=$(free_port)
    redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --save "" --daemonize no \
        --logfile "$OUT/$name.log" "$@" &
    PIDS+=($!)
    PID[$name]=$!
    PORT[$name]=$port
    wait_ready "$port" "$name"
}
start_idem() {
    local port env=()
    port=$(free_port)
    [[ $COMPACTION == off ]] && env=(IDEM_SNAPSHOT_AFTER_BYTES=$((1 << 40)))
    env "${env[@]}" "$BENCH_IDEM_BIN" serve --port "$port" --http-port 0 --data "$WORK/idem-data" --fsync "$FSYNC" --log warn \
        >"$OUT/idem.log" 2>&1 &
    PIDS+=($!)
    PID[idem]=$!
    PORT[idem]=$port
    wait_ready "$port" idem
}

start_redis redis-nopersist --appendonly no
if [[ $COMPACTION == off ]]; then
    start_redis "$DURABLE" --appendonly yes --appendfsync "$REDIS_FSYNC" --auto-aof-rewrite-percentage 0
else
    start_redis "$DURABLE" --appendonly yes --appendfsync "$REDIS_FSYNC"
fi
start_idem
SERVERS=(redis-nopersist "$DURABLE" idem)
log "ports: ${PORT[redis-nopersist]} (redis-nopersist) ${PORT[$DURABLE]} ($DURABLE) ${PORT[idem]} (idem, fsync $FSYNC); out: $OUT"

# --- lines --------------------------------------------------------------
UNLOCK_LUA="if redis.call('get',KEYS[1])==ARGV[1] then return redis.call('del',KEYS[1]) else return 0 end"

# Sets CMD (an array) for a line on a server, with key prefix $1.
line_cmd() { # prefix line server
    local k="$1:__rand_int__"
    if [[ $3 == idem ]]; then
        case $2 in
        begin) CMD=(IDEM.BEGIN "$k" LEASE "$TTL_MS") ;;
        claim) CMD=(CLAIM "$k" owner1) ;;
        lock) CMD=(LOCK "$k" owner1 LEASE "$TTL_MS") ;;
        unlock) CMD=(UNLOCK "$k" owner1) ;;
        counter) CMD=(COUNTER.ADD "$k" 1) ;;
        esac
    else
        case $2 in
        begin) CMD=(SET "$k" 1 NX PX "$TTL_MS") ;;
        claim) CMD=(SET "$k" owner1 NX) ;;
        lock) CMD=(SET "$k" owner1 NX PX "$TTL_MS") ;;
        unlock) CMD=(EVAL "$UNLOCK_LUA" 1 "$k" owner1) ;;
        counter) CMD=(INCRBY "$k" 1) ;;
        esac
    fi
}

# The line's key prefix: new for every round, line and pipeline depth.
prefix_of() { # round line P
    echo "r$1${2:0:3}p$3"
}

# Locks every key of the keyspace under `prefix` for owner1 (unmeasured), as
# redis-benchmark spells them: prefix:%012d.
prefill_locks() { # server prefix
    local s=$1 prefix=$2 kind=redis file out
    [[ $s == idem ]] && kind=idem
    file=$WORK/prefill-$kind-$prefix.resp
    if [[ ! -f $file ]]; then
        awk -v n="$KEYSPACE" -v pre="$prefix" -v kind="$kind" 'BEGIN {
            for (i = 0; i < n; i++) {
                k = sprintf("%s:%012d", pre, i)
                if (kind == "idem")
                    printf "*5\r\n$4\r\nLOCK\r\n$%d\r\n%s\r\n$6\r\nowner1\r\n$5\r\nLEASE\r\n$7\r\n3600000\r\n", length(k), k
                else
                    printf "*6\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$6\r\nowner1\r\n$2\r\nNX\r\n$2\r\nPX\r\n$7\r\n3600000\r\n", length(k), k
            }
        }' >"$file"
    fi
    out=$(redis-cli -p "${PORT[$s]}" --pipe <"$file" 2>&1 | tail -n 1)
    if ! grep -q "errors: 0," <<<"$out"; then
        log "prefill of $prefix on $s failed: $out"
        exit 1
    fi
}

dbsize() { redis-cli -p "$1" DBSIZE 2>/dev/null | tr -dc 0-9; }

# One request of every line must not be an error, or redis-benchmark would
# happily measure error replies.
sanity() {
    local s line out
    for s in "${SERVERS[@]}"; do
        for line in $LINES; do
            line_cmd sanity "$line" "$s"
            CMD=("${CMD[@]//__rand_int__/000000000001}")
            out=$(redis-cli -p "${PORT[$s]}" "${CMD[@]}" 2>&1)
            if grep -qE '^(\(error\)|ERR|LIMIT|MISMATCH|STALE|READONLY|BUSY)' <<<"$out"; then
                log "sanity check failed on $s for $line: $out"
                exit 1
            fi
        done
    done
}
sanity

RESULTS=$OUT/results.tsv
printf 'round\tline\tP\tserver\trps\tp50_ms\tp99_ms\teffect\tserver_us_per_req\tclient_us_per_req\n' >"$RESULTS"

HZ=$(getconf CLK_TCK)

run_one() { # round line P server
    local round=$1 line=$2 p=$3 s=$4 n prefix csv before after effect="" perfpid=""
    n=$N_P1
    [[ $p -gt 1 ]] && n=$N_P16
    prefix=$(prefix_of "$round" "$line" "$p")
    line_cmd "$prefix" "$line" "$s"
    [[ $line == unlock ]] && prefill_locks "$s" "$prefix"
    before=$(dbsize "${PORT[$s]}")
    local srv0 srv1 cli_s
    srv0=$(cpu_ticks "${PID[$s]}")
    if [[ $PERF == 1 && $s == idem && $line == begin ]]; then
        perf record -F 999 -g -p "${PID[idem]}" -o "$OUT/perf-begin-p$p-r$round.data" \
            >"$OUT/perf-begin-p$p-r$round.log" 2>&1 &
        perfpid=$!
        sleep 0.3
    fi
    # The client's CPU time (user + sys) comes from bash's `time`.
    { TIMEFORMAT='%U %S'; time redis-benchmark -p "${PORT[$s]}" -c "$CLIENTS" -n "$n" -P "$p" -r "$KEYSPACE" \
        --csv "${CMD[@]}" >"$OUT/rb.csv" 2>"$OUT/rb-$round-$line-p$p-$s.err"; } 2>"$OUT/rb.time"
    csv=$(tail -n 1 "$OUT/rb.csv")
    srv1=$(cpu_ticks "${PID[$s]}")
    cli_s=$(awk '{print $1 + $2}' "$OUT/rb.time")
    if [[ -n $perfpid ]]; then
        kill -INT "$perfpid" 2>/dev/null || true
        wait "$perfpid" 2>/dev/null || true
    fi
    after=$(dbsize "${PORT[$s]}")
    # What share of requests changed state (records added or, for unlock, removed).
    case $line in
    unlock) effect=$(awk -v b="$before" -v a="$after" -v n="$n" 'BEGIN{printf "%.2f", (b-a)/n}') ;;
    *) effect=$(awk -v b="$before" -v a="$after" -v n="$n" 'BEGIN{printf "%.2f", (a-b)/n}') ;;
    esac
    # "test","rps","avg","min","p50","p95","p99","max"; the test name may
    # hold commas (the EVAL script), so fields are counted from the end.
    if [[ $csv != *'"'*'"'* ]]; then
        log "redis-benchmark gave no result for $line P=$p on $s (see $OUT/rb-$round-$line-p$p-$s.err)"
        exit 1
    fi
    awk -F',' -v r="$round" -v l="$line" -v p="$p" -v s="$s" -v e="$effect" -v n="$n" \
        -v srv=$(((srv1 - srv0))) -v hz="$HZ" -v cli="$cli_s" \
        '{gsub(/"/,""); printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.1f\t%.1f\n", r, l, p, s,
          $(NF-6), $(NF-3), $(NF-1), e, srv / hz * 1e6 / n, cli * 1e6 / n}' \
        <<<"$csv" >>"$RESULTS"
    tail -n 1 "$RESULTS" >&2
}

log "before: $(fsync_probe); load average $(cut -d' ' -f1-3 /proc/loadavg)"
started=$(date +%s)
for round in $(seq "$ROUNDS"); do
    for line in $LINES; do
        for p in $PIPELINES; do
            # Rotate the order of the servers with the round and the line.
            i=0
            for line_i in $LINES; do [[ $line_i == "$line" ]] && break; i=$((i + 1)); done
            shift_by=$(((round - 1 + i) % 3))
            order=("${SERVERS[@]:shift_by}" "${SERVERS[@]:0:shift_by}")
            for s in "${order[@]}"; do
                run_one "$round" "$line" "$p" "$s"
            done
        done
    done
done
log "ran in $(($(date +%s) - started)) s"
log "after: $(fsync_probe); load average $(cut -d' ' -f1-3 /proc/loadavg)"

# --- table --------------------------------------------------------------
# Ratios are taken within each round, then the median over rounds is shown.
python3 - "$RESULTS" "$DURABLE" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
dur = sys.argv[2]  # redis-always or redis-everysec
short = dur.removeprefix("redis-")
by = {}
for r in rows:
    by.setdefault((r["line"], r["P"]), {}).setdefault(r["server"], []).append(r)
names = {"begin": "IDEM.BEGIN vs SET NX PX", "claim": "CLAIM vs SET NX",
         "lock": "LOCK vs SET NX PX", "unlock": "UNLOCK vs EVAL owner-checked DEL",
         "counter": "COUNTER.ADD vs INCRBY"}
med = lambda xs: statistics.median(xs)
print(f"| line | P | idem rps | p50/p99 ms | {dur} rps | p50/p99 ms | redis-nopersist rps | p50/p99 ms | idem/{short} | idem/nopersist | effect idem/{short}/nopersist | server CPU µs/req idem/{short}/nopersist | client CPU µs/req |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|")
seen = []
for r in rows:
    k = (r["line"], r["P"])
    if k not in seen:
        seen.append(k)
for line, p in seen:
    d = by[(line, p)]
    if not all(s in d for s in ("idem", dur, "redis-nopersist")):
        continue
    rounds = len(d["idem"])
    ra = [float(d["idem"][i]["rps"]) / float(d[dur][i]["rps"]) for i in range(rounds)]
    rn = [float(d["idem"][i]["rps"]) / float(d["redis-nopersist"][i]["rps"]) for i in range(rounds)]
    cell = lambda s: (f'{med([float(x["rps"]) for x in d[s]]):,.0f}',
                      f'{med([float(x["p50_ms"]) for x in d[s]]):.3f}/{med([float(x["p99_ms"]) for x in d[s]]):.3f}')
    i, a, n = cell("idem"), cell(dur), cell("redis-nopersist")
    eff = "/".join(d[s][0]["effect"] for s in ("idem", dur, "redis-nopersist"))
    srv = "/".join(f'{med([float(x["server_us_per_req"]) for x in d[s]]):.1f}' for s in ("idem", dur, "redis-nopersist"))
    cli = "/".join(f'{med([float(x["client_us_per_req"]) for x in d[s]]):.1f}' for s in ("idem", dur, "redis-nopersist"))
    print(f"| {names.get(line, line)} | {p} | {i[0]} | {i[1]} | {a[0]} | {a[1]} | {n[0]} | {n[1]} | "
          f"**{med(ra):.2f}** | **{med(rn):.2f}** | {eff} | {srv} | {cli} |")
EOF
log "raw results: $RESULTS"
