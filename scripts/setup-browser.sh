#!/usr/bin/env bash
# Installs what the dashboard's browser test needs: Debian's chromium and
# playwright-core (npm) under target/browser. Idempotent; safe to re-run.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
if ! command -v chromium >/dev/null 2>&1; then
    sudo_cmd=""
    if [ "$(id -u)" != 0 ]; then sudo_cmd="sudo"; fi
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq chromium >/dev/null
fi
dir="${CARGO_TARGET_DIR:-$root/target}/browser"
if [ ! -d "$dir/node_modules/playwright-core" ]; then
    mkdir -p "$dir"
    (cd "$dir" && npm install --silent --no-audit --no-fund playwright-core@1 >/dev/null)
fi
echo "chromium: $(command -v chromium)"
echo "playwright-core: $dir/node_modules/playwright-core"
