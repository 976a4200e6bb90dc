#!/usr/bin/env bash
# What the per-command metrics cost on the hot path, in instructions, which
# do not depend on the machine's load: `idem serve` under callgrind with
# metrics on (the default) and off (--no-metrics), one redis-benchmark
# client sending CMD N_SMALL then N_BIG times. The difference between the
# two runs of a mode, divided by N_BIG - N_SMALL, is the instructions per
# command without startup and shutdown. Prints both and the on/off ratio.
#
# Usage: bench/metrics-cost.sh [IDEM_BIN]   (default target/release/idem)
# Environment: N_SMALL=2000 N_BIG=12000 CMD="IDEM.BEGIN k:__rand_int__ LEASE 3600000"
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${1:-${CARGO_TARGET_DIR:-$ROOT/target}/release/idem}
N_SMALL=${N_SMALL:-2000}
N_BIG=${N_BIG:-12000}
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

declare -A per_cmd
for mode in on off; do
    small=$(instructions "$mode" "$N_SMALL")
    big=$(instructions "$mode" "$N_BIG")
    per_cmd[$mode]=$(( (big - small) / (N_BIG - N_SMALL) ))
    echo "metrics $mode: $small instructions at N=$N_SMALL, $big at N=$N_BIG: ${per_cmd[$mode]} per command"
done
awk -v on="${per_cmd[on]}" -v off="${per_cmd[off]}" 'BEGIN { printf "on/off: %.3f (%+d instructions per command)\n", on / off, on - off }'
