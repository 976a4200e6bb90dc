#!/usr/bin/env bash
# A long differential conformance run (crates/idem-conformance/src/diff.rs):
# random command sequences with time steps through every backend and the core
# Machine, replies compared. The test suite runs a few sequences from a fixed
# seed; this draws a fresh seed and runs many (printed on failure with the
# command to repeat it).
#
#   scripts/diff-conformance.sh [SEQUENCES] [STEPS]      (default 2000 60)
#
# Needs the engines of scripts/ensure-services.sh, redis-server and cc.
# Includes the Redis and Redis Cluster tests (private servers; docs/backends.md).
set -euo pipefail
cd "$(dirname "$0")/.."
export IDEM_DIFF_SEQUENCES="${1:-2000}" IDEM_DIFF_STEPS="${2:-60}" IDEM_DIFF_SEED="${IDEM_DIFF_SEED:-random}"
exec cargo nextest run -p idem-conformance --test differential --run-ignored all --no-fail-fast --success-output final
