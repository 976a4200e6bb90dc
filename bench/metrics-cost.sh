#!/usr/bin/env bash
# What the per-command metrics cost on the hot path, in instructions, which
# do not depend on the machine's load: `idem serve` under callgrind with
# metrics on (the default) and off (--no-metrics), one redis-benchmark
# client sending CMD N_SMALL then N_BIG times. The difference between the
# two runs of a mode, divided by N_BIG - N_SMALL, is the instructions per
# command without startup and shutdown. RUNS rounds, each measuring both
# modes (the order alternates with the round), so each mode's spread between
# runs shows the noise the on/off difference is compared with. Prints every
# run, each mode's median and range, and the on/off ratio of the medians.
#
# Usage: bench/metrics-cost.sh [IDEM_BIN]   (default target/release/idem)
# Environment: RUNS=5 N_SMALL=2000 N_BIG=12000 CMD="IDEM.BEGIN k:__rand_int__ LEASE 3600000"
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${1:-${CARGO_TARGET_DIR:-$ROOT/target}/release/idem}
N_SMALL=${N_SMALL:-2000}
N_BIG=${N_BIG:-12000}
RUNS=${RUNS:-5}
CMD=${CMD:-"IDEM.BEGIN k:__rand_int__ LEASE 3600000"}
WORK=$(mktemp -d /tmp/idem-metrics-cost.XXXXXX)
PID=
cleanup() {
    [[ -n $PID ]] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
. "$(dirname "$0")/lib.sh"
need_redis
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 1; }

instructions() { # mode n -> total instructions of one server run
    local mode=$1 n=$2 port flags=()
    [[ $mode == off ]] && flags=(--no-metrics)
    port=$(free_port)
    rm -rf "$WORK/data"
    valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.out" \
        "$BIN" serve --port "$port" --http-port 0 --data "$WORK/data" --log warn "${flags[@]}" \
        >"$WORK/server.log" 2>&1 &
    PID=$!
    for _ in $(seq 600); do redis-cli -p "$port" PING 2>/dev/null | grep -q PONG && break; sleep 0.1; done
    # shellcheck disable=SC2086
    redis-benchmark -p "$port" -c 1 -P 1 -n "$n" -r 1000000 -q $CMD >/dev/null
    kill -TERM "$PID"
    wait "$PID" 2>/dev/null || true
    PID=
    awk '/^(summary|totals):/ { print $2; exit }' "$WORK/cg.out"
}

: >"$WORK/runs.tsv"
for r in $(seq "$RUNS"); do
    if ((r % 2)); then order="on off"; else order="off on"; fi
    for mode in $order; do
        small=$(instructions "$mode" "$N_SMALL")
        big=$(instructions "$mode" "$N_BIG")
        per=$(( (big - small) / (N_BIG - N_SMALL) ))
        echo "run $r metrics $mode: $small instructions at N=$N_SMALL, $big at N=$N_BIG: $per per command"
        printf '%s\t%s\n' "$mode" "$per" >>"$WORK/runs.tsv"
    done
done
python3 - "$WORK/runs.tsv" <<'PY'
import sys, statistics
runs = {"on": [], "off": []}
for line in open(sys.argv[1]):
    mode, n = line.split()
    runs[mode].append(int(n))
med = {m: statistics.median(v) for m, v in runs.items()}
for m, v in runs.items():
    print(f"metrics {m}: median {med[m]:.0f} per command, range {min(v)}-{max(v)} ({max(v) / min(v):.3f} max/min)")
print(f"on/off (medians): {med['on'] / med['off']:.3f} ({med['on'] - med['off']:+.0f} instructions per command)")
PY
