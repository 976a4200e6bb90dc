#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ (not part of scripts/test.sh: it is
# long and needs the nightly toolchain). Usage:
#   scripts/fuzz.sh [RUNS [SECONDS]]   # per target; defaults 10000000 runs, 3600 s
# Each target stops at RUNS executions or SECONDS, whichever comes first,
# and prints libFuzzer's final stats (docs/security.md records them). A
# crash leaves its input in fuzz/artifacts/<target>/ and stops the script.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-10000000}"
seconds="${2:-3600}"
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
targets=(resp_framer command_parser wal_record wal_recovery http_json gateway_extract)
(cd fuzz && cargo +nightly fuzz build)
for t in "${targets[@]}"; do
  echo "== $t"
  (cd fuzz && nice -n 15 cargo +nightly fuzz run "$t" -- \
    -runs="$runs" -max_total_time="$seconds" -print_final_stats=1 2>&1) | grep -E '^(Done|stat::|==|INFO: Seed|.*(ERROR|panicked|crash))' || true
  test -z "$(ls -A "fuzz/artifacts/$t" 2>/dev/null)" || { echo "$t: crash inputs in fuzz/artifacts/$t" >&2; exit 1; }
done
