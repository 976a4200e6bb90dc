#!/usr/bin/env bash
# Each idem backend against the raw statement it replaces, as ratios:
#   PostgreSQL  CLAIM / IDEM.BEGIN   vs  INSERT … ON CONFLICT DO NOTHING
#   MariaDB     CLAIM / IDEM.BEGIN   vs  INSERT IGNORE
#   Redis       CLAIM                vs  SET k owner NX
#               IDEM.BEGIN           vs  SET k 1 NX PX 30000
# and IDEM.BEGIN also against a "fair raw" side (an insert or script that
# carries a fence and a lease and returns the holder's on a duplicate), on
# fresh random keys and with 50% duplicates, at 16 and 64 concurrent tasks,
# 5 rounds with each side first in turn, in one process (median of the
# rounds), with the engine's CPU and counters per request. See
# crates/idem-bench/src/bin/backends.rs and docs/benchmarks-backends.md.
# Run it on a quiet machine (on a shared one, under its CPU lock).
#
# Usage: bench/backends.sh [backends flags...]   (about 5 minutes per engine with the defaults)
#   e.g. bench/backends.sh --engines pg --seconds 5 --concurrency 16
# Engines (override with the flags or the environment):
#   IDEM_BENCH_PG_URL     postgres://postgres@127.0.0.1:5432/test
#   IDEM_BENCH_MYSQL_URL  mysql://root@127.0.0.1:3306/test
#   IDEM_BENCH_REDIS_URL  redis://127.0.0.1:6379
# The tool writes keys under the prefix "ibb:" (and idem's records for them),
# the tables bench_backends_claim and bench_backends_begin and the sequence
# bench_backends_fence, and deletes them when it ends.
# Per-round lines go to stderr, the tables (markdown) to stdout.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

# The tool needs local PostgreSQL, MariaDB and Redis; start any that is down.
scripts/ensure-services.sh >&2

echo "building the backends benchmark (release)" >&2
cargo build --release -p idem-bench --bin backends 2>&1 | tail -n 1 >&2

echo "machine: $(nproc) cores, $(uname -srm); load: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
exec "$ROOT/target/release/backends" "$@"
