#!/usr/bin/env bash
# Messages per second through the idem-broker adapter against the raw
# consumer (manual ack, no records), on the same broker, the same durable
# queue settings (JetStream file storage; RabbitMQ durable quorum queue with
# persistent messages), the same concurrency and prefetch, rounds
# interleaved. The adapter's records are on the embedded durable store in the
# consumer's process (fsync before each reply), reached in one of two ways
# (IDEMS): "server", an idem server in the process over loopback RESP
# through idem_client (the path of a shared idem server); "embedded", the
# store called directly (Adapter::over). Also reported: the consumer
# process's CPU time per message (user + system; for the adapter it includes
# the store and any idem server; the broker's own CPU is in neither).
# Usage: bench/brokers.sh [rounds] [messages]
# Results: docs/benchmarks-brokers.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
MESSAGES=${2:-20000}
CONCURRENCY=${CONCURRENCY:-64}
# HANDLERS: which handlers to run, "empty" (does nothing) and/or "pg" (a
# PostgreSQL insert); both by default.
HANDLERS=${HANDLERS:-empty pg}
# BROKERS: jetstream and/or rabbitmq; both by default.
BROKERS=${BROKERS:-jetstream rabbitmq}
# IDEMS: how the adapter reaches its records, "server" and/or "embedded";
# both by default, each round running the raw consumer then each of them.
IDEMS=${IDEMS:-server embedded}
# ADAPTER_ARGS: extra arguments of the adapter's runs, e.g.
# "--pipelines 4 --pipeline-commands 64" (how its idem calls are coalesced).
ADAPTER_ARGS=${ADAPTER_ARGS:-}
# BIN: a prebuilt binary (skips the build).
if [ -z "${BIN:-}" ]; then
  cargo build --release -p idem-broker --bin idem-broker-s2 >&2
  BIN=target/release/idem-broker-s2
fi
echo "# $(date -u +%FT%TZ) $(git rev-parse --short HEAD) rounds=$ROUNDS messages=$MESSAGES concurrency=$CONCURRENCY handlers='$HANDLERS' brokers='$BROKERS' idems='$IDEMS' adapter_args='$ADAPTER_ARGS' loadavg=$(cut -d' ' -f1-3 /proc/loadavg)"
for handler in $HANDLERS; do
  case $handler in
    empty) effect="" ;;
    pg) effect="--pg-effect" ;;
    *) echo "unknown handler '$handler' (empty, pg)" >&2; exit 2 ;;
  esac
  for broker in $BROKERS; do
    for round in $(seq "$ROUNDS"); do
      for run in naive $IDEMS; do
        case $run in
          naive) extra="--variant naive" ;;
          server | embedded) extra="--variant adapter --idem $run $ADAPTER_ARGS" ;;
          *) echo "unknown idem '$run' (server, embedded)" >&2; exit 2 ;;
        esac
        # shellcheck disable=SC2086 # $effect and $extra are word lists
        line=$("$BIN" bench --broker "$broker" --messages "$MESSAGES" \
          --concurrency "$CONCURRENCY" $effect $extra 2>/dev/null | grep '^bench')
        echo "round=$round $line"
      done
    done
  done
done | tee /dev/stderr | awk '
  { for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
    k = f["broker"] " pg_effect=" f["pg_effect"]; var = f["variant"] == "naive" ? "naive" : f["idem"]
    j = ++n[k, var]; v[k, var, j] = f["msgs_per_s"]; c[k, var, j] = f["cpu_us_per_msg"]; keys[k] = 1; idems[var] = 1 }
  function median(arr, k, var,    m, i, j, t, a) {
    m = n[k, var]; for (i = 1; i <= m; i++) a[i] = arr[k, var, i]
    for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    return (m % 2) ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2 }
  END { for (k in keys) for (var in idems) if (var != "naive" && n[k, var]) {
    r = median(v, k, "naive"); a = median(v, k, var); rc = median(c, k, "naive"); ac = median(c, k, var)
    printf "median %s idem=%s raw_msgs_per_s=%d adapter_msgs_per_s=%d ratio=%.2f raw_cpu_us_per_msg=%.1f adapter_cpu_us_per_msg=%.1f\n", k, var, r, a, a / r, rc, ac } }'
echo "# loadavg after: $(cut -d' ' -f1-3 /proc/loadavg)"
