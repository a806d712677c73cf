#!/usr/bin/env bash
# Holds 100,000 concurrent idle connections through one tcplb on loopback
# (200,000 sockets on the proxy) and reports what they cost: RSS, CPU while
# idle, the time to open them all, and whether /metrics and a new
# connection are still served promptly meanwhile.
#
# The clients and backends are split over several processes (each holds at
# most $PER_PROCESS connections, within its own descriptor limit); each
# client process connects from its own loopback address (127.0.0.2,
# 127.0.0.3, ...: one ephemeral port range each) and tcplb spreads the
# connections over one echo backend port per backend process (the same on
# its side). Everything is bounded in time, loopback only, and every
# process started here is stopped by PID on exit; kernel settings raised
# here are put back.
#
# The proxy needs 2 x CONNS + ~100 descriptors. When the hard limit of
# `ulimit -n` is lower and cannot be raised (no CAP_SYS_RESOURCE), the
# script says so and holds as many as fit instead.
#
# Usage: scripts/hold-100k.sh
# Env:   CONNS=100000 PER_PROCESS=12500 IDLE_SECONDS=10 TCPLB_BIN=path/to/tcplb
#        TCPLB_ARGS="..." SKIP_APT=1
set -euo pipefail
cd "$(dirname "$0")/.."

CONNS=${CONNS:-100000}
PER_PROCESS=${PER_PROCESS:-12500}
IDLE_SECONDS=${IDLE_SECONDS:-10}
TCPLB_ARGS=${TCPLB_ARGS:-}
TICK=$(getconf CLK_TCK)

if ! command -v curl >/dev/null || ! command -v ss >/dev/null; then
    if [ -z "${SKIP_APT:-}" ]; then
        SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq curl iproute2 >/dev/null
    fi
fi
command -v curl >/dev/null || { echo "curl is required" >&2; exit 1; }

echo "building tcplb, backend and loadgen (release)..." >&2
cargo build --release -q --bin tcplb --bin backend --example loadgen
BIN=${CARGO_TARGET_DIR:-target}/release
TCPLB=${TCPLB_BIN:-$BIN/tcplb} BACKEND=$BIN/backend LOADGEN=$BIN/examples/loadgen

# ----------------------------------------------------------------- limits
# Kernel settings raised here, as "path old" lines, put back on exit.
RESTORE=()
set_sysctl() { # path value
    local now
    now=$(cat "$1")
    if echo "$2" >"$1" 2>/dev/null; then
        RESTORE+=("$1" "$now")
        echo "set $1: $now -> $2 (put back on exit)" >&2
    else
        echo "cannot set $1 to $2 (it is $now)" >&2
    fi
}
raise_sysctl() { # path minimum
    [ "$(cat "$1")" -ge "$2" ] || set_sysctl "$1" "$2"
}

need=$((2 * CONNS + 200))
raise_sysctl /proc/sys/fs/nr_open "$need"
if ! ulimit -n "$need" 2>/dev/null; then
    hard=$(ulimit -Hn)
    ulimit -n "$hard"
    fit=$(((hard - 200) / 2))
    echo "cannot raise the descriptor limit to $need (hard limit $hard, raising it needs" \
        "CAP_SYS_RESOURCE): holding $fit connections instead of $CONNS" >&2
    CONNS=$fit
fi
limit=$(ulimit -n)
[ "$PER_PROCESS" -le $((limit - 100)) ] || PER_PROCESS=$((limit - 100))
[ "$PER_PROCESS" -le "$CONNS" ] || PER_PROCESS=$CONNS
PROCS=$(((CONNS + PER_PROCESS - 1) / PER_PROCESS))
# Each client address and each backend port takes PER_PROCESS ports from
# the ephemeral range.
read -r low high </proc/sys/net/ipv4/ip_local_port_range
if [ $((high - low)) -lt $((PER_PROCESS + 1000)) ]; then
    set_sysctl /proc/sys/net/ipv4/ip_local_port_range "$low $((low + PER_PROCESS + 1000))"
fi
raise_sysctl /proc/sys/net/core/somaxconn 4096

# -------------------------------------------------------------- processes
# shellcheck source=scripts/processes.sh
source scripts/processes.sh tcplb-hold
HOLDERS=()
cleanup_more() {
    local i
    for ((i = 0; i < ${#RESTORE[@]}; i += 2)); do
        echo "${RESTORE[i + 1]}" >"${RESTORE[i]}" || true
    done
}

BASE=$((20000 + (RANDOM % 100) * 100))
ports_free "$BASE" $((BASE + PROCS + 3))
FRONT=$BASE ADMIN=$((BASE + 1))
backends=()
for i in $(seq "$PROCS"); do
    port=$((BASE + 2 + i))
    spawn_to "backend-$i.log" "$BACKEND" --echo "$port"
    backends+=("127.0.0.1:$port")
done
for b in "${backends[@]}"; do wait_listening "${b##*:}"; done
# shellcheck disable=SC2086
RUST_LOG=warn spawn_to tcplb.log "$TCPLB" --listen "127.0.0.1:$FRONT" --admin "127.0.0.1:$ADMIN" \
    --backend "$(IFS=,; echo "${backends[*]}")" --backlog 4096 --health-interval 60s \
    --on-failure close $TCPLB_ARGS
TCPLB_PID=$LAST_PID
wait_listening "$FRONT"
wait_listening "$ADMIN"

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$TCPLB_PID/status"; }
ticks() { awk '{ print $14 + $15 }' "/proc/$TCPLB_PID/stat"; }
active() {
    curl -s --max-time 5 "http://127.0.0.1:$ADMIN/metrics" \
        | awk '/^tcplb_listener_active_connections/ { print $2 }'
}
sleep 0.5
rss_before=$(rss_kb)

# ------------------------------------------------------------------- hold
# Long enough for everything below; the script stops them when done.
hold_seconds=$((IDLE_SECONDS + 200))
echo "opening $CONNS connections from $PROCS client processes..." >&2
began=$(date +%s.%N)
remaining=$CONNS
for i in $(seq "$PROCS"); do
    n=$((remaining < PER_PROCESS ? remaining : PER_PROCESS))
    remaining=$((remaining - n))
    spawn_to "hold-$i.out" "$LOADGEN" hold "127.0.0.1:$FRONT" --workers "$n" --size 0 \
        --seconds "$hold_seconds" --sources "127.0.0.$((1 + i))" --concurrency 256 --threads 1
    HOLDERS+=("$LAST_PID")
done
# All open once every holder says so; tcplb's own count is read after.
deadline=$(($(date +%s) + 180))
while [ "$(cat "$TMP"/hold-*.out 2>/dev/null | grep -c held=)" -lt "$PROCS" ]; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "connections not open within 180 s" >&2; break; }
    sleep 0.1
done
opened=$(awk -v b="$began" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - b }')
held=$(cat "$TMP"/hold-*.out | sed -n 's/.*held=\([0-9]*\).*/\1/p' | awk '{ s += $1 } END { print s + 0 }')
errors=$(cat "$TMP"/hold-*.out | sed -n 's/.*errors=\([0-9]*\).*/\1/p' | awk '{ s += $1 } END { print s + 0 }')
sleep 2
proxied=$(active)
rss_after=$(rss_kb)
fds=$(find "/proc/$TCPLB_PID/fd" -mindepth 1 -maxdepth 1 | wc -l)

# CPU while idle: every connection open, nothing moving.
t0=$(ticks)
sleep "$IDLE_SECONDS"
idle_ticks=$(($(ticks) - t0))

# Still served: one /metrics request and new connections, timed.
metrics_s=$(curl -s -o /dev/null --max-time 10 -w '%{time_total}' "http://127.0.0.1:$ADMIN/metrics")
conn_line=$("$LOADGEN" conn "127.0.0.1:$FRONT" --workers 1 --seconds 1 --warmup 0.2 --threads 1)
sockstat=$(awk '/^TCP:/ { print }' /proc/net/sockstat)

# Release them and see the proxy come back down.
for pid in "${HOLDERS[@]}"; do kill "$pid" 2>/dev/null || true; done
for pid in "${HOLDERS[@]}"; do wait "$pid" 2>/dev/null || true; done
released=$(date +%s.%N)
deadline=$(($(date +%s) + 60))
while [ "$(active)" != 0 ] && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.2; done
drained=$(awk -v b="$released" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - b }')
left=$(active)

# ----------------------------------------------------------------- report
per=$(awk -v a="$rss_after" -v b="$rss_before" -v n="$held" \
    'BEGIN { if (n > 0) printf "%.0f", (a - b) * 1024 / n; else print "-" }')
echo
echo "$held connections held through one tcplb ($errors failed to open; tcplb counted $proxied;" \
    "$fds descriptors open in tcplb)"
echo "$(uname -sr); $("$TCPLB" --version); $(nproc) cores; ulimit -n $(ulimit -n)"
[ -z "$TCPLB_ARGS" ] || echo "tcplb flags: $TCPLB_ARGS"
printf '  %-34s %s\n' \
    "time to open them all" "${opened} s" \
    "tcplb RSS before / held" "$((rss_before / 1024)) MiB / $((rss_after / 1024)) MiB" \
    "tcplb RSS per connection" "$per bytes" \
    "tcplb CPU while idle (${IDLE_SECONDS} s)" \
    "$(awk -v t="$idle_ticks" -v hz="$TICK" -v s="$IDLE_SECONDS" \
        'BEGIN { printf "%.2f s (%.2f%% of a core)", t / hz, t * 100 / hz / s }')" \
    "one /metrics request" "$(awk -v s="$metrics_s" 'BEGIN { printf "%.1f ms", s * 1000 }')" \
    "new connections meanwhile (1 s)" "$conn_line" \
    "kernel TCP (/proc/net/sockstat)" "$sockstat" \
    "after release: active 0 within" "${drained} s (active now: ${left:-?})"
