#!/usr/bin/env bash
# Measures an upgrade that moves established connections (issue 26): opens
# CONNS idle connections through one tcplb to an echo backend, sends SIGUSR2,
# and reports the old process's "moved N connections in T" line, the time
# from SIGUSR2 to the old process's exit, and the pause a connection saw
# while it moved (p50/p99, from the new process's
# tcplb_upgrade_move_pause_seconds buckets: an upper bound at the bucket).
# Everything is on loopback, bounded in time, and every process started here
# is stopped by PID on exit. Run it under the benchmark lock:
#
#   flock /tmp/tcplb-bench.lock scripts/bench-move.sh
#
# Env: CONNS=1000 (up to the descriptor limit / 2) TCPLB_BIN=path SKIP_BUILD=1
set -euo pipefail
cd "$(dirname "$0")/.."

CONNS=${CONNS:-1000}
if [ -z "${SKIP_BUILD:-}" ]; then
    cargo build --release -q --bin tcplb --bin backend --example loadgen
fi
BIN=${CARGO_TARGET_DIR:-target}/release
TCPLB=${TCPLB_BIN:-$BIN/tcplb} BACKEND=$BIN/backend LOADGEN=$BIN/examples/loadgen
ulimit -n $((2 * CONNS + 1000)) 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# The temp folder, the processes started here (stopped by PID on exit) and
# wait_listening: the benchmark scripts' shared part.
source scripts/processes.sh tcplb-move
# The upgraded process is the old one's child: stopped by the PID it logged.
cleanup_more() { [ -z "${NEW_PID:-}" ] || kill "$NEW_PID" 2>/dev/null || true; }

BASE=$((30000 + (RANDOM % 100) * 10))
FRONT=$BASE ADMIN=$((BASE + 1)) ECHO=$((BASE + 2))
"$BACKEND" --echo "$ECHO" >"$TMP/backend.log" 2>&1 &
PIDS+=($!)
wait_listening "$ECHO"
RUST_LOG=info "$TCPLB" --listen "127.0.0.1:$FRONT" --admin "127.0.0.1:$ADMIN" \
    --backend "127.0.0.1:$ECHO" --backlog 4096 --health-interval 60s >"$TMP/tcplb.log" 2>&1 &
OLD_PID=$!
PIDS+=("$OLD_PID")
wait_listening "$FRONT"

"$LOADGEN" hold "127.0.0.1:$FRONT" --workers "$CONNS" --size 0 --seconds 120 \
    --concurrency 256 --threads 1 >"$TMP/hold.out" 2>&1 &
PIDS+=($!)
active() {
    curl -s --max-time 5 "http://127.0.0.1:$ADMIN/metrics" \
        | awk '/^tcplb_listener_active_connections/ { s += $2 } END { print s + 0 }'
}
deadline=$(($(date +%s) + 30))
while [ "$(active)" -lt "$CONNS" ]; do
    # A few may fail to open (backlog overflow under the burst): measure what opened.
    [ "$(date +%s)" -lt "$deadline" ] || { echo "only $(active) of $CONNS open" >&2; break; }
    sleep 0.2
done
sleep 1
open=$(active)

began=$(date +%s.%N)
kill -USR2 "$OLD_PID"
deadline=$(($(date +%s) + 60))
while kill -0 "$OLD_PID" 2>/dev/null && [ "$(awk '{ print $3 }' "/proc/$OLD_PID/stat" 2>/dev/null)" != Z ]; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "the old process did not exit" >&2; break; }
    sleep 0.01
done
gone=$(awk -v b="$began" -v e="$(date +%s.%N)" 'BEGIN { printf "%.2f", e - b }')
NEW_PID=$(sed -n 's/.*upgrade: process \([0-9]*\) serves now.*/\1/p' "$TMP/tcplb.log" | head -1)
moved=$(grep -o 'upgrade: moved .*' "$TMP/tcplb.log" || echo "no move line")
# No move: say why (the log goes with $TMP).
[ "$moved" != "no move line" ] || grep -E 'WARN|ERROR|upgrade' "$TMP/tcplb.log" | tail -8 >&2
sleep 0.5
metrics=$(curl -s --max-time 5 "http://127.0.0.1:$ADMIN/metrics")
quantile() { # q
    echo "$metrics" | awk -v q="$1" '
        /^tcplb_upgrade_move_pause_seconds_bucket/ {
            split($0, a, "le=\""); split(a[2], b, "\""); le[n] = b[1]; c[n++] = $2 }
        END { total = c[n - 1]; for (i = 0; i < n; i++) if (c[i] >= q * total) { print le[i] "s"; exit } }'
}
taken=$(echo "$metrics" | awk '/^tcplb_upgrade_connections_taken_over_total/ { print $2 }')
echo "$CONNS idle connections asked for, $open open; $(uname -sr); $(nproc) cores; $("$TCPLB" --version)"
echo "  $moved"
echo "  SIGUSR2 to the old process's exit: ${gone}s"
echo "  taken over by the new process: $taken; pause p50 <= $(quantile 0.5), p99 <= $(quantile 0.99)"
echo "  still open through the new process: $(active)"
