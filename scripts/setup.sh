#!/usr/bin/env bash
# Installs what idem's tests, examples and benchmarks need beyond the Rust
# toolchain: redis-tools (redis-cli, redis-benchmark) and redis-server (the
# Redis Cluster conformance tests start their own), and a Python venv at
# target/py with the Python client package and what its tests, the examples
# and the HTTP conformance suite use. Idempotent; quick when all is there.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v redis-cli >/dev/null 2>&1 || need_apt+=(redis-tools)
command -v redis-benchmark >/dev/null 2>&1 || need_apt+=(redis-tools)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3 python3-venv)
# Debian splits venv support (ensurepip) out of python3.
python3 -c "import ensurepip" >/dev/null 2>&1 || need_apt+=(python3-venv)
# The idem binary links jemalloc, which tikv-jemalloc-sys builds with make.
command -v make >/dev/null 2>&1 || need_apt+=(make)
# The fault harness (crates/idem-harness): wall-clock jumps through
# libfaketime, fsync errors injected with strace.
[ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ] || need_apt+=(faketime)
command -v strace >/dev/null 2>&1 || need_apt+=(strace)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# The Python venv: the idem-client package (editable, with its test extras:
# pytest, mypy, ruff, FastAPI, uvicorn, psycopg, PyMySQL) and every
# requirements file of the examples, the HTTP conformance suite and the
# HTTP API test (schemathesis), all held to the exact versions of
# clients/python/constraints.txt.
venv=target/py
py_inputs=(clients/python/pyproject.toml clients/python/constraints.txt)
for req in examples/python/requirements.txt conformance/http/requirements.txt tests/requirements-api.txt; do
  [ -f "$req" ] && py_inputs+=("$req")
done
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
stamp="$venv/.requirements.sha"
sum=$(cat "${py_inputs[@]}" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$sum" ] || ! "$venv/bin/python" -c "import idem_client" 2>/dev/null; then
  reqs=()
  for req in "${py_inputs[@]:2}"; do reqs+=(-r "$req"); done
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q -e "clients/python[test]" "${reqs[@]}" -c clients/python/constraints.txt
  echo "$sum" > "$stamp"
fi

# The dashboard test drives Debian's chromium through playwright-core.
bash scripts/setup-browser.sh >/dev/null
