#!/usr/bin/env bash
# The seeded-bug proof (docs/reliability.md, "Seeded bugs"): builds idem with
# the test-only `seeded-bugs` feature into its own target directory, runs the
# fault harness once per deliberately broken variant with the nemesis that
# exposes it, and fails unless the harness reports an anomaly for every one.
# Then it runs the real build (no feature) on the same seeds and fails unless
# each of those runs passes with no anomaly.
#
# Not part of the default test suite: it builds idem twice more in its own
# target directory (about ten minutes cold on the 2-core VM) and runs the
# harness for 6 x SECONDS_PER_RUN seconds.
#
#   scripts/seeded-bugs.sh                 # 15 s per run
#   SECONDS_PER_RUN=30 scripts/seeded-bugs.sh
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${SECONDS_PER_RUN:-15}"
out=target/seeded/harness
# bug, nemeses, seed: each bug with the fault that exposes it.
runs=(
  "fence-reissue kill 9101"
  "ack-before-sync kill 9102"
  "early-regrant pause 9103"
)

# Both builds share target/seeded (the dependencies are built once); the
# real one is copied aside before the seeded one takes its place.
cargo build --quiet --target-dir target/seeded -p idem -p idem-harness
cp target/seeded/debug/idem target/seeded/idem-real
cargo build --quiet --target-dir target/seeded -p idem --features idem/seeded-bugs
cp target/seeded/debug/idem target/seeded/idem-seeded
harness=target/seeded/debug/idem-harness
seeded=target/seeded/idem-seeded
real=target/seeded/idem-real

summary() {
  # One line per run from its report.json: ops, faults, and what was caught.
  python3 - "$1/report.json" <<'EOF'
import collections, json, sys
r = json.load(open(sys.argv[1]))
lin = [p for p in r["linearizability"]["problems"] if p.get("verdict") == "fail"]
prims = collections.Counter(p.get("primitive", "?") for p in lin)
side = collections.Counter(a["kind"] for a in r["side"]["anomalies"])
res = len(r["resource_anomalies"])
inj = r["injected"]
print(f"ops {r['ops']}, kills {inj.get('kills', 0)}, pauses {inj.get('pauses', 0)}, "
      f"client pauses {r['client_pauses']}; non-linearizable keys {len(lin)} {dict(prims)}, "
      f"side {dict(side)}, fenced-set {res}; verdict {r['verdict']}")
EOF
}

failed=0
for run in "${runs[@]}"; do
  read -r bug nemeses seed <<<"$run"
  dir="$out/$bug-$seed"
  rc=0
  "$harness" --store embedded --nemesis "$nemeses" --time "${seconds}s" --seed "$seed" \
    --idem-bin "$seeded" --idem-env "IDEM_SEEDED_BUG=$bug" --out "$dir" >/dev/null || rc=$?
  echo "seeded $bug ($nemeses, seed $seed): exit $rc; $(summary "$dir")"
  if [ "$rc" -ne 1 ]; then
    echo "  FAIL: the harness did not report the seeded bug $bug" >&2
    failed=1
  fi
done

for run in "${runs[@]}"; do
  read -r bug nemeses seed <<<"$run"
  dir="$out/real-$seed"
  rc=0
  "$harness" --store embedded --nemesis "$nemeses" --time "${seconds}s" --seed "$seed" \
    --idem-bin "$real" --out "$dir" >/dev/null || rc=$?
  echo "real build ($nemeses, seed $seed): exit $rc; $(summary "$dir")"
  if [ "$rc" -ne 0 ]; then
    echo "  FAIL: the real build did not pass on seed $seed" >&2
    failed=1
  fi
done

exit "$failed"
