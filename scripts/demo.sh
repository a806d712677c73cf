#!/usr/bin/env bash
# Shows tcplb balancing: three demo backends on 8081-8083, tcplb on 8080.
# Requests rotate across the backends; 8082 is stopped and skipped once the
# prober notices, then restarted and back in rotation. Everything this
# script starts is stopped again by PID, on success, error or Ctrl+C.
set -euo pipefail
cd "$(dirname "$0")/.."

LB_PORT=8080
BACKEND_PORTS=(8081 8082 8083)
declare -A BACKEND_PIDS=()
LB_PID=""
LOG_DIR="$(mktemp -d)"

cleanup() {
    local pid
    for pid in "${BACKEND_PIDS[@]}" $LB_PID; do
        kill "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    rm -rf "$LOG_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# One HTTP request through the balancer; curl if present, else bash's /dev/tcp.
request() {
    if command -v curl >/dev/null; then
        curl -s --max-time 5 "http://127.0.0.1:$LB_PORT/" || echo "(request failed)"
    else
        exec 3<>"/dev/tcp/127.0.0.1/$LB_PORT"
        printf 'GET / HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n' >&3
        sed -n '/^\r$/,$p' <&3 | tail -n +2
        exec 3<&-
    fi
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for_port() {
    local i
    for i in $(seq 1 100); do
        port_busy "$1" && return 0
        sleep 0.05
    done
    echo "port $1 did not open; logs in $LOG_DIR" >&2
    return 1
}

# Waits (up to 5 s) for tcplb to log a line matching $1, then shows it.
wait_for_log() {
    local i
    for i in $(seq 1 100); do
        if grep -q "$1" "$LOG_DIR/tcplb.log"; then
            [ -z "${2:-}" ] || grep "$1" "$LOG_DIR/tcplb.log" | sed 's/^/tcplb: /'
            return 0
        fi
        sleep 0.05
    done
    echo "tcplb never logged \"$1\"; logs in $LOG_DIR" >&2
    return 1
}

start_backend() {
    ./target/release/backend "$1" >"$LOG_DIR/backend-$1.log" 2>&1 &
    BACKEND_PIDS[$1]=$!
    wait_for_port "$1"
}

for port in "$LB_PORT" "${BACKEND_PORTS[@]}"; do
    if port_busy "$port"; then
        echo "error: port $port is already in use; stop whatever listens there and retry" >&2
        exit 1
    fi
done

say "Building (release)"
cargo build --release --quiet --bins

say "Starting demo backends on ${BACKEND_PORTS[*]} and tcplb on $LB_PORT"
for port in "${BACKEND_PORTS[@]}"; do start_backend "$port"; done
RUST_LOG=info ./target/release/tcplb --listen "127.0.0.1:$LB_PORT" \
    --backend 127.0.0.1:8081,127.0.0.1:8082,127.0.0.1:8083 \
    --health-interval 1s --health-timeout 500ms >"$LOG_DIR/tcplb.log" 2>&1 &
LB_PID=$!
# Wait for tcplb's own "listening" line: a test connection would take a turn in the rotation.
wait_for_log "listening on"

say "Six requests: round-robin across all three"
for _ in 1 2 3 4 5 6; do request; done

say "Stopping the backend on 8082 and waiting for the prober to notice"
kill "${BACKEND_PIDS[8082]}"
wait "${BACKEND_PIDS[8082]}" 2>/dev/null || true
unset 'BACKEND_PIDS[8082]'
wait_for_log "8082 is DOWN" show
say "Six requests: only 8081 and 8083 answer"
for _ in 1 2 3 4 5 6; do request; done

say "Restarting 8082"
start_backend 8082
wait_for_log "8082 is UP" show
say "Six requests: 8082 is back in rotation"
for _ in 1 2 3 4 5 6; do request; done

say "Done; stopping everything this script started"
