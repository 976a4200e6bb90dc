#!/usr/bin/env bash
# A/B of two idem builds under the same redis-benchmark line, interleaved:
# for each round, A then B (the order alternates with the round), each on a
# fresh data directory. Prints rps, p50/p99 and server CPU per request of
# each, and the B/A ratios per round and their median.
#
# Usage: bench/ab-idem.sh A_BIN B_BIN   (A_BIN = B_BIN with different
#   A_ARGS/B_ARGS compares two settings of one build, e.g. the cost of
#   metrics: B_ARGS=--no-metrics; the same arguments on both measure the
#   run-to-run noise)
# Environment: ROUNDS=3  P=1  N (default 150000 at P=1, 600000 otherwise)
#   A_ARGS, B_ARGS: extra `idem serve` arguments of each side (default none)
#   CLIENTS=50  CMD="IDEM.BEGIN k:__rand_int__ LEASE 3600000"  KEYSPACE=1000000
#   DATA_ROOT=/tmp (the data directories: keep them on the disk under test)
set -euo pipefail
A=$1
B=$2
read -r -a A_EXTRA <<<"${A_ARGS:-}"
read -r -a B_EXTRA <<<"${B_ARGS:-}"
ROUNDS=${ROUNDS:-3}
P=${P:-1}
if [[ $P == 1 ]]; then N=${N:-150000}; else N=${N:-600000}; fi
CLIENTS=${CLIENTS:-50}
KEYSPACE=${KEYSPACE:-1000000}
CMD=${CMD:-"IDEM.BEGIN k:__rand_int__ LEASE 3600000"}
WORK=$(mktemp -d "${DATA_ROOT:-/tmp}/idem-ab.XXXXXX")
PID=
cleanup() {
    [[ -n $PID ]] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
. "$(dirname "$0")/lib.sh"
need_redis
HZ=$(getconf CLK_TCK)

run_one() { # bin label round extra-args... -> prints "label rps p50 p99 cpu_us_per_req"
    local bin=$1 label=$2 round=$3 port
    shift 3
    port=$(free_port)
    rm -rf "$WORK/data"
    IDEM_SNAPSHOT_AFTER_BYTES=$((1 << 40)) "$bin" serve --port "$port" --http-port 0 --data "$WORK/data" --log warn "$@" \
        >"$WORK/$label.log" 2>&1 &
    PID=$!
    for _ in $(seq 200); do redis-cli -p "$port" PING 2>/dev/null | grep -q PONG && break; sleep 0.05; done
    local t0 t1 out
    t0=$(cpu_ticks "$PID")
    # shellcheck disable=SC2086
    out=$(timeout 900 redis-benchmark -p "$port" -c "$CLIENTS" -n "$N" -P "$P" -r "$KEYSPACE" --csv $CMD | tail -n 1)
    t1=$(cpu_ticks "$PID")
    local info
    info=$(redis-cli -p "$port" INFO | tr -d '\r' | grep -E '^log_(records_per_sync|sync_us_avg|segments_preallocated):' | paste -sd' ' || true)
    kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
    # csv: "test","rps","avg","min","p50","p95","p99","max"
    IFS=, read -r _ rps _ _ p50 _ p99 _ <<<"$(tr -d '"' <<<"$out")"
    awk -v l="$label" -v r="$round" -v rps="$rps" -v p50="$p50" -v p99="$p99" -v dt=$((t1 - t0)) -v hz="$HZ" -v n="$N" -v info="$info" \
        'BEGIN { printf "%s\t%s\t%.0f\t%s\t%s\t%.1f\t%s\n", r, l, rps, p50, p99, dt / hz * 1e6 / n, info }'
}

echo -e "round\tbuild\trps\tp50\tp99\tcpu_us_per_req\tlog" >"$WORK/results.tsv"
for r in $(seq "$ROUNDS"); do
    if ((r % 2)); then order="A B"; else order="B A"; fi
    for which in $order; do
        if [[ $which == A ]]; then
            run_one "$A" A "$r" ${A_EXTRA[@]+"${A_EXTRA[@]}"} | tee -a "$WORK/results.tsv"
        else
            run_one "$B" B "$r" ${B_EXTRA[@]+"${B_EXTRA[@]}"} | tee -a "$WORK/results.tsv"
        fi
    done
done
python3 - "$WORK/results.tsv" <<'PY'
import sys, statistics
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])][1:]
by = {}
for r in rows:
    by.setdefault(r[0], {})[r[1]] = (float(r[2]), float(r[5]))
rps = [v["B"][0] / v["A"][0] for v in by.values()]
cpu = [v["B"][1] / v["A"][1] for v in by.values()]
def line(name, xs):
    print(f"B/A {name} per round:", " ".join(f"{x:.3f}" for x in xs), f" median {statistics.median(xs):.3f}",
          f" range {min(xs):.3f}-{max(xs):.3f}")
line("rps", rps)
line("CPU per request", cpu)
for side in ("A", "B"):
    c = [v[side][1] for v in by.values()]
    print(f"{side} CPU us per request: median {statistics.median(c):.2f}, max/min {max(c) / min(c):.3f}")
PY
