#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ (needs the nightly toolchain and
# cargo-fuzz; installs them if missing). Usage:
#   scripts/fuzz.sh [RUNS [SECONDS]]  # per target; defaults 10000000 runs, 3600 s
#   scripts/fuzz.sh smoke             # 20,000 runs per target with AddressSanitizer
# A long run stops each target at RUNS executions or SECONDS, whichever comes
# first, one target at a time at `nice -n 15`, growing fuzz/corpus/<target>/
# (only the committed seed-* files are tracked). The smoke writes what it
# finds to a temporary directory and leaves the corpus alone.
# FUZZ_SANITIZER (address or none) overrides the sanitizer: the long run uses
# none by default, because AddressSanitizer costs several times the
# executions per second (docs/security.md has both rates); FUZZ_TARGETS
# chooses targets. Each target's full libFuzzer output is in
# fuzz/target/logs/<target>.log; the script prints its final stats and
# corpus size, and a long run appends a Markdown row per target to
# fuzz/target/logs/summary.md. A crash leaves its input in
# fuzz/artifacts/<target>/ and stops the script with status 1.
set -euo pipefail
cd "$(dirname "$0")/.."
smoke=false
if [ "${1:-}" = smoke ]; then
  smoke=true
  runs=20000
  seconds=60
  san="${FUZZ_SANITIZER:-address}"
else
  runs="${1:-10000000}"
  seconds="${2:-3600}"
  san="${FUZZ_SANITIZER:-none}"
fi
read -r -a targets <<<"${FUZZ_TARGETS:-resp_framer command_parser wal_record wal_recovery http_json gateway_extract}"
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
cd fuzz
# One target directory per sanitizer, so that switching does not rebuild.
# Built once; the binaries then run directly (`cargo fuzz run` would
# rebuild before each target whenever the tree changed in between).
nice -n 10 cargo +nightly fuzz build -s "$san" --target-dir "target/$san"
bin="target/$san/$(rustc -vV | sed -n 's/^host: //p')/release"
mkdir -p target/logs
# The environment `cargo fuzz run` gives a target: backtraces on a crash,
# and ASan's ODR-violation check off.
export RUST_BACKTRACE=1
if [ "$san" = address ]; then export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_odr_violation=0"; fi
scratch=""
trap '[ -z "$scratch" ] || rm -rf "$scratch"' EXIT
for t in "${targets[@]}"; do
  log="target/logs/$t.log"
  if $smoke; then
    scratch="$(mktemp -d)"
    dirs=("$scratch" "corpus/$t")
  else
    dirs=("corpus/$t")
  fi
  echo "== $t (sanitizer $san, $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD), load $(cut -d' ' -f1-3 /proc/loadavg))"
  rc=0
  mkdir -p "artifacts/$t"
  nice -n 15 "$bin/$t" -artifact_prefix="artifacts/$t/" -runs="$runs" -max_total_time="$seconds" \
    -timeout=30 -print_final_stats=1 "${dirs[@]}" >"$log" 2>&1 || rc=$?
  grep -E '^(Done|stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb))' "$log" || true
  if ! $smoke; then
    files="$(find "corpus/$t" -type f | wc -l)"
    echo "corpus: $files files, $(du -sb "corpus/$t" | cut -f1) bytes"
    # One Markdown row per finished target, for docs/security.md.
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")"
    rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")"
    crashes="$(find "artifacts/$t" -type f 2>/dev/null | wc -l)"
    echo "| \`$t\` | $execs | $rate | $files | $crashes | $san | $(date -u +%F) | $(git rev-parse --short HEAD) |" >>target/logs/summary.md
  fi
  if $smoke; then rm -rf "$scratch"; scratch=""; fi
  if [ "$rc" -ne 0 ] || [ -n "$(ls -A "artifacts/$t" 2>/dev/null)" ]; then
    tail -n 40 "$log" >&2
    echo "$t: libFuzzer exited with $rc; crash inputs in fuzz/artifacts/$t, full output in fuzz/$log" >&2
    exit 1
  fi
done
