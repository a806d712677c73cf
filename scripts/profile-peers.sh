#!/usr/bin/env bash
# Where tcplb and nginx spend a short connection, at the same fixed rate:
# per connection, each system call (perf stat on the syscalls:sys_enter_*
# tracepoints: exact counts), wake-ups and context switches, and a
# call-graph profile (perf record -g, cpu-clock: this machine has no
# hardware counters) whose kernel symbols are then compared (perf diff).
#
# The workload is bench-peers' http-close: loadgen close (a new connection
# per HTTP request with `Connection: close`, the backend closes first)
# against two demo HTTP backends, round-robin; nginx is the stream module,
# workers = cores, no access log, as in bench-peers.sh.
#
# Usage: scripts/profile-peers.sh [out-dir]   (perf from linux-perf)
# Env:   RATE=3000 (connections/s) SECONDS_PER_RUN=4 SYSTEMS="tcplb nginx"
#        MODE=close (or conn: echo, the client closes first) TCPLB_ARGS="..."
#        TCPLB_BIN=path (default: the release build)
set -euo pipefail
cd "$(dirname "$0")/.."

RATE=${RATE:-3000}
DUR=${SECONDS_PER_RUN:-4}
MODE=${MODE:-close}
TCPLB_ARGS=${TCPLB_ARGS:-}
read -r -a SYSTEMS <<<"${SYSTEMS:-tcplb nginx}"
OUT=${1:-$(mktemp -d /tmp/tcplb-profile.XXXXXX)}
mkdir -p "$OUT"
command -v perf >/dev/null || { echo "perf is required (apt-get install linux-perf)" >&2; exit 1; }

cargo build --release -q --bin tcplb --bin backend --example loadgen
BIN=$(cargo metadata --format-version 1 --no-deps \
    | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release
TCPLB=${TCPLB_BIN:-$BIN/tcplb}

# shellcheck source=scripts/processes.sh
source scripts/processes.sh tcplb-profile-run

# Free loopback ports below the ephemeral range (32768 and up).
BASE=$((20000 + (RANDOM % 100) * 100))
B1=$((BASE + 1)) B2=$((BASE + 2)) FRONT=$((BASE + 10))
ports_free "$BASE" "$FRONT"
flag=""; [ "$MODE" = conn ] && flag=--echo
spawn "$BIN/backend" $flag "$B1"
spawn "$BIN/backend" $flag "$B2"
wait_listening "$B1"; wait_listening "$B2"

cat >"$TMP/nginx.conf" <<EOF
$(nginx_head "$TMP")
stream {
    access_log off;
    upstream b { server 127.0.0.1:$B1; server 127.0.0.1:$B2; }
    server { listen 127.0.0.1:$FRONT; proxy_pass b; }
}
EOF

# The PIDs of a system's processes and threads' leaders (nginx: its
# workers too), comma-separated for perf -p.
pids_of() { echo "$1" $(pgrep -P "$1" || true) | tr ' ' ','; }

for system in "${SYSTEMS[@]}"; do
    case $system in
        tcplb)
            # shellcheck disable=SC2086
            RUST_LOG=warn spawn "$TCPLB" --listen "127.0.0.1:$FRONT" \
                --backend "127.0.0.1:$B1,127.0.0.1:$B2" --health-interval 60s \
                --on-failure close $TCPLB_ARGS ;;
        nginx) spawn nginx -p "$TMP" -e "$TMP/nginx-error.log" -c "$TMP/nginx.conf" ;;
    esac
    main=$LAST_PID
    wait_listening "$FRONT"
    sleep 0.3
    pids=$(pids_of "$main")
    load() { # seconds: the fixed-rate load, its output in $OUT
        "$BIN/examples/loadgen" "$MODE" "127.0.0.1:$FRONT" --rate "$RATE" --workers 256 \
            --warmup 0.5 --seconds "$1"
    }
    echo "  $system: counting system calls at $RATE/s..." >&2
    load $((DUR + 2)) >"$OUT/$system.stat.load" &
    loader=$!
    sleep 1
    perf stat -x, -e 'syscalls:sys_enter_*' -e sched:sched_wakeup -e sched:sched_switch \
        -e context-switches -p "$pids" -o "$OUT/$system.stat" -- sleep "$DUR" 2>/dev/null
    wait "$loader"
    echo "  $system: recording a profile at $RATE/s..." >&2
    load $((DUR + 2)) >"$OUT/$system.record.load" &
    loader=$!
    sleep 1
    perf record -q -g -e cpu-clock -F 4000 -p "$pids" -o "$OUT/$system.data" -- sleep "$DUR" \
        2>/dev/null
    wait "$loader"
    stop "$main"
done

# Per connection: counts / (rate x seconds counted).
conns=$((RATE * DUR))
echo "per connection at $RATE/s ($MODE, $DUR s counted: $conns connections each)"
printf '%-28s' event; for s in "${SYSTEMS[@]}"; do printf ' %9s' "$s"; done; echo
events=$(for s in "${SYSTEMS[@]}"; do awk -F, '$1 > 0 { print $3 }' "$OUT/$s.stat"; done | sort -u)
for e in $events; do
    printf '%-28s' "${e#syscalls:sys_enter_}"
    for s in "${SYSTEMS[@]}"; do
        awk -F, -v e="$e" -v n="$conns" '$3 == e { v = $1 } END { printf " %9.2f", v / n }' \
            "$OUT/$s.stat"
    done
    echo
done
printf '%-28s' "syscalls (total)"
for s in "${SYSTEMS[@]}"; do
    awk -F, -v n="$conns" '$3 ~ /^syscalls:/ { t += $1 } END { printf " %9.2f", t / n }' "$OUT/$s.stat"
done
echo

# The profile: microseconds per connection in user space and in the
# kernel, and the kernel symbols, side by side (4000 samples a second per
# busy CPU: each sample is 250 us of CPU).
echo
echo "profile (cpu-clock): us of CPU per connection, user / kernel, top kernel symbols"
for s in "${SYSTEMS[@]}"; do
    perf report -i "$OUT/$s.data" --no-children --sort sym --stdio -F sample,sym 2>/dev/null \
        | awk -v n="$conns" -v s="$s" '
            /^ +[0-9]+ +\[k\]/ { k += $1 } /^ +[0-9]+ +\[\.\]/ { u += $1 }
            END { printf "%-8s user %.1f us, kernel %.1f us per connection\n", s, u * 250 / n, k * 250 / n }'
done
for s in "${SYSTEMS[@]}"; do
    perf report -i "$OUT/$s.data" --no-children --sort sym --stdio -F sample,sym 2>/dev/null \
        | awk '/^ +[0-9]+ +\[k\]/ { print $3, $1 }' | sort >"$OUT/$s.ksyms"
done
if [ ${#SYSTEMS[@]} -ge 2 ]; then
    a=${SYSTEMS[0]} b=${SYSTEMS[1]}
    printf '%-40s %9s %9s %9s\n' "kernel symbol (us/conn)" "$a" "$b" "$a-$b"
    join -a1 -a2 -e0 -o 0,1.2,2.2 "$OUT/$a.ksyms" "$OUT/$b.ksyms" \
        | awk -v n="$conns" '{ x = $2 * 250 / n; y = $3 * 250 / n; printf "%-40s %9.2f %9.2f %9.2f\n", $1, x, y, x - y }' \
        | sort -k4,4 -g -r | head -25
    echo
    echo "perf diff (baseline $b, then $a), kernel DSO, top 30:"
    perf diff "$OUT/$b.data" "$OUT/$a.data" --dsos '[kernel.kallsyms]' --sort sym 2>/dev/null \
        | grep -v '^#' | grep -v '^$' | head -30
fi
echo "data in $OUT"
