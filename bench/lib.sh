# Helpers shared by the bench/ scripts. Sourced, not run:
#   . "$(dirname "$0")/lib.sh"

log() { printf '%s\n' "$*" >&2; }

# A free loopback port (the kernel picks it; nothing holds it afterwards).
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# CPU ticks (user + system) a process has used so far; CLK_TCK per second.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# redis-server, redis-cli and redis-benchmark, from Debian's packages when missing.
need_redis() {
    if ! command -v redis-benchmark >/dev/null || ! command -v redis-server >/dev/null; then
        log "installing redis-tools and redis-server"
        apt-get install -y redis-tools redis-server >/dev/null 2>&1 ||
            { apt-get update >/dev/null && apt-get install -y redis-tools redis-server >/dev/null; }
    fi
}

# Stops processes this shell started: SIGTERM to all, then for each a
# bounded wait of 10 s before SIGKILL.
stop_pids() {
    local pid
    for pid in "$@"; do kill "$pid" 2>/dev/null || true; done
    for pid in "$@"; do
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}
