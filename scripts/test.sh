#!/usr/bin/env bash
# The whole test suite: installs prerequisites, makes sure the real engines
# are up, then runs every test of the workspace (unit, property, server,
# conformance on every backend, durability crash loop, scenarios).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
bash scripts/ensure-services.sh

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
  cargo test --workspace --doc
else
  cargo test --workspace --no-fail-fast
fi
