#!/usr/bin/env bash
# Installs what idem's tests, examples and benchmarks need beyond the Rust
# toolchain: redis-tools (redis-cli, redis-benchmark) and redis-server (the
# Redis Cluster conformance tests start their own), and a Python venv with the
# client libraries the examples use. Idempotent; quick when all is there.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v redis-cli >/dev/null 2>&1 || need_apt+=(redis-tools)
command -v redis-benchmark >/dev/null 2>&1 || need_apt+=(redis-tools)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3 python3-venv)
# The idem binary links jemalloc, which tikv-jemalloc-sys builds with make.
command -v make >/dev/null 2>&1 || need_apt+=(make)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ -f examples/python/requirements.txt ]; then
  venv=target/py
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
  fi
  stamp="$venv/.requirements.sha"
  sum=$(sha256sum examples/python/requirements.txt | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$sum" ]; then
    "$venv/bin/pip" install -q -r examples/python/requirements.txt
    echo "$sum" > "$stamp"
  fi
fi
