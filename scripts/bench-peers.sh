#!/usr/bin/env bash
# Compares tcplb with HAProxy and nginx (stream) on loopback, against the
# same demo backends, and prints one table.
#
# Workloads (each bounded to a few seconds, warmed up, median of $RUNS runs):
#   bulk-1     one connection, iperf3, Gbit/s
#   bulk-32    32 parallel connections, iperf3 -P 32, Gbit/s
#   conn/s     a new TCP connection per 64-byte request/response
#              (examples/loadgen.rs, $CONN_WORKERS workers), connections/s
#   http-ka    keep-alive HTTP requests/s with wrk -c64, p50/p99 latency
# Systems: direct (no proxy), tcplb (release build), haproxy, nginx.
# Besides each rate: the proxy's CPU per unit of work (proxy-cpu; the
# steadier measure on a shared machine), tcplb's CPU time and peak RSS.
# Proxies use the same backends, round-robin, no logging, workers = cores.
#
# Usage: scripts/bench-peers.sh            (installs missing tools with apt)
# Env:   RUNS=3 SECONDS_PER_RUN=3 CONN_WORKERS=32 TCPLB_ARGS="..." SKIP_APT=1
#        SYSTEMS="direct tcplb" WORKLOADS="conn/s http-ka" TCPLB_BIN=path/to/tcplb
#        IDLE_CONNS=9000 (0 skips the memory-per-idle-connection part)
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
DUR=${SECONDS_PER_RUN:-3}
CONN_WORKERS=${CONN_WORKERS:-32}
TCPLB_ARGS=${TCPLB_ARGS:-}
CORES=$(nproc)
TICK=$(getconf CLK_TCK)

# ---------------------------------------------------------------- tools
need=()
command -v haproxy >/dev/null || need+=(haproxy)
command -v nginx >/dev/null || need+=(nginx)
[ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || nginx -V 2>&1 | grep -q -- '--with-stream ' \
    || need+=(libnginx-mod-stream)
command -v wrk >/dev/null || need+=(wrk)
command -v iperf3 >/dev/null || need+=(iperf3)
command -v ss >/dev/null || need+=(iproute2)
if [ ${#need[@]} -gt 0 ] && [ -z "${SKIP_APT:-}" ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    echo "installing: ${need[*]}" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)" >&2; exit 1; }

echo "building tcplb, backend and loadgen (release)..." >&2
cargo build --release -q --bin tcplb --bin backend --example loadgen
BIN=target/release
TCPLB=${TCPLB_BIN:-$BIN/tcplb} BACKEND=$BIN/backend LOADGEN=$BIN/examples/loadgen

# ------------------------------------------------------------ processes
TMP=$(mktemp -d /tmp/tcplb-bench.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Starts a command in the background and records its PID in $LAST_PID.
spawn() {
    "$@" >>"$TMP/log" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

stop() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

wait_listening() {
    for _ in $(seq 100); do
        [ -n "$(ss -Hltn "sport = :$1")" ] && return 0
        sleep 0.05
    done
    echo "nothing listens on port $1; log:" >&2
    tail -20 "$TMP/log" >&2
    exit 1
}

# Free loopback ports below the ephemeral range.
BASE=$((20000 + (RANDOM % 100) * 100))
port() { echo $((BASE + $1)); }
ECHO1=$(port 1) ECHO2=$(port 2) HTTP1=$(port 3) HTTP2=$(port 4) IPERF=$(port 5)
for p in $(seq "$BASE" $((BASE + 40))); do
    [ -z "$(ss -Hltn "sport = :$p")" ] || { echo "port $p is busy; run again" >&2; exit 1; }
done

spawn "$BACKEND" --echo "$ECHO1"
spawn "$BACKEND" --echo "$ECHO2"
spawn "$BACKEND" "$HTTP1"
spawn "$BACKEND" "$HTTP2"
spawn iperf3 -s -B 127.0.0.1 -p "$IPERF"
for p in $ECHO1 $ECHO2 $HTTP1 $HTTP2 $IPERF; do wait_listening "$p"; done

# Frontend ports per system: echo, http, iperf.
declare -A FRONT=(
    [direct]="$ECHO1 $HTTP1 $IPERF"
    [tcplb]="$(port 11) $(port 12) $(port 13)"
    [haproxy]="$(port 21) $(port 22) $(port 23)"
    [nginx]="$(port 31) $(port 32) $(port 33)"
)

cat >"$TMP/haproxy.cfg" <<EOF
global
    nbthread $CORES
    maxconn 9900
defaults
    mode tcp
    balance roundrobin
    timeout connect 3s
    timeout client 60s
    timeout server 60s
listen echo
    bind 127.0.0.1:$(port 21)
    server e1 127.0.0.1:$ECHO1
    server e2 127.0.0.1:$ECHO2
listen http
    bind 127.0.0.1:$(port 22)
    server h1 127.0.0.1:$HTTP1
    server h2 127.0.0.1:$HTTP2
listen iperf
    bind 127.0.0.1:$(port 23)
    server i1 127.0.0.1:$IPERF
EOF

stream_module=""
[ -e /usr/lib/nginx/modules/ngx_stream_module.so ] \
    && stream_module="load_module /usr/lib/nginx/modules/ngx_stream_module.so;"
cat >"$TMP/nginx.conf" <<EOF
$stream_module
worker_processes $CORES;
worker_rlimit_nofile 20000;
daemon off;
pid $TMP/nginx.pid;
error_log $TMP/nginx-error.log error;
events { worker_connections 20000; }
stream {
    access_log off;
    upstream echo { server 127.0.0.1:$ECHO1; server 127.0.0.1:$ECHO2; }
    upstream http { server 127.0.0.1:$HTTP1; server 127.0.0.1:$HTTP2; }
    upstream iperf { server 127.0.0.1:$IPERF; }
    server { listen 127.0.0.1:$(port 31); proxy_pass echo; }
    server { listen 127.0.0.1:$(port 32); proxy_pass http; }
    server { listen 127.0.0.1:$(port 33); proxy_pass iperf; }
}
EOF

# tcplb serves one listener per process: one process per frontend.
start_tcplb() {
    TCPLB_PIDS=()
    local i=0 backends
    for backends in "127.0.0.1:$ECHO1,127.0.0.1:$ECHO2" "127.0.0.1:$HTTP1,127.0.0.1:$HTTP2" \
        "127.0.0.1:$IPERF"; do
        i=$((i + 1))
        # shellcheck disable=SC2086
        RUST_LOG=warn spawn "$TCPLB" --listen "127.0.0.1:$(port $((10 + i)))" \
            --backend "$backends" --health-interval 60s --on-failure close $TCPLB_ARGS
        TCPLB_PIDS+=("$LAST_PID")
    done
}

start_system() {
    SYSTEM_PIDS=()
    case $1 in
        direct) ;;
        tcplb) start_tcplb; SYSTEM_PIDS=("${TCPLB_PIDS[@]}") ;;
        haproxy) spawn haproxy -db -f "$TMP/haproxy.cfg"; SYSTEM_PIDS=("$LAST_PID") ;;
        nginx) spawn nginx -p "$TMP" -e "$TMP/nginx-error.log" -c "$TMP/nginx.conf"
            SYSTEM_PIDS=("$LAST_PID") ;;
    esac
    for p in ${FRONT[$1]}; do wait_listening "$p"; done
}

stop_system() {
    for pid in "${SYSTEM_PIDS[@]}"; do stop "$pid"; done
}

# ------------------------------------------------------------ workloads
# Each prints one number (http-ka: "rps p50_us p99_us").
gbits() { awk '/receiver/ { for (i = 1; i <= NF; i++) if ($i == "Gbits/sec") v = $(i - 1) } END { print v }'; }

run_bulk() { # port parallel
    iperf3 -c 127.0.0.1 -p "$1" -P "$2" -t $((DUR + 1)) -O 1 -f g 2>>"$TMP/log" | gbits
}

run_conn() {
    "$LOADGEN" conn "127.0.0.1:$1" --workers "$CONN_WORKERS" --seconds "$DUR" --warmup 1 \
        | sed -n 's/.*conn_per_s=\([0-9]*\).*/\1/p'
}

to_us() { # wrk latency such as 812.00us, 1.20ms, 1.01s
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) m = 1; else if (v ~ /ms$/) m = 1000; else if (v ~ /s$/) m = 1000000; else m = 1
        sub(/[a-z]+$/, "", v); printf "%.0f", v * m }'
}

run_http() {
    local url="http://127.0.0.1:$1/"
    wrk -t "$CORES" -c 64 -d 1s "$url" >/dev/null 2>&1 || true # warm-up
    local out
    out=$(wrk -t "$CORES" -c 64 -d "${DUR}s" --latency "$url" 2>>"$TMP/log")
    local rps p50 p99
    rps=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' <<<"$out")
    p50=$(to_us "$(awk '$1 == "50%" { print $2 }' <<<"$out")")
    p99=$(to_us "$(awk '$1 == "99%" { print $2 }' <<<"$out")")
    echo "$rps $p50 $p99"
}

read -r -a WORKLOADS <<<"${WORKLOADS:-bulk-1 bulk-32 conn/s http-ka}"
read -r -a SYSTEMS <<<"${SYSTEMS:-direct tcplb haproxy nginx}"

run_workload() { # workload system
    local front=(${FRONT[$2]})
    case $1 in
        bulk-1) run_bulk "${front[2]}" 1 ;;
        bulk-32) run_bulk "${front[2]}" 32 ;;
        conn/s) run_conn "${front[0]}" ;;
        http-ka) run_http "${front[1]}" ;;
    esac
}

# The tcplb process serving a workload, for its CPU time and peak RSS.
tcplb_pid_for() {
    case $1 in bulk-*) echo "${TCPLB_PIDS[2]}" ;; conn/s) echo "${TCPLB_PIDS[0]}" ;;
        http-ka) echo "${TCPLB_PIDS[1]}" ;; esac
}
cpu_seconds() { awk -v t="$TICK" '{ printf "%.2f", ($14 + $15) / t }' "/proc/$1/stat"; }
peak_rss_kb() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }

median() { sort -g | awk '{ v[NR] = $0 } END { print v[int((NR + 1) / 2)] }'; }

# CPU ticks of the system under test so far: its processes and their
# children (nginx's workers).
system_ticks() {
    local total=0 pid
    for pid in "${SYSTEM_PIDS[@]}" $(for p in "${SYSTEM_PIDS[@]}"; do pgrep -P "$p"; done); do
        total=$((total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || echo 0)))
    done
    echo "$total"
}

# The proxy's CPU per unit of work: ms per GB, us per connection or request.
# Work = rate x wall time of the run, warm-up included (it runs at about the
# same rate), so the figure is approximate but the same for every system.
cpu_per_unit() { # workload value ticks seconds
    awk -v w="$1" -v v="$2" -v t="$3" -v s="$4" -v hz="$TICK" 'BEGIN {
        work = v * s; if (w ~ /^bulk/) work /= 8
        if (work <= 0) { print "-"; exit }
        cpu = t / hz
        if (w ~ /^bulk/) printf "%.0f", cpu * 1000 / work; else printf "%.1f", cpu * 1e6 / work }'
}

declare -A RESULT CPU RSS SPREAD COST
for system in "${SYSTEMS[@]}"; do
    for workload in "${WORKLOADS[@]}"; do
        values=() cpus=() rsss=() costs=()
        for run in $(seq "$RUNS"); do
            # A fresh proxy per run: CPU and peak RSS belong to this run alone.
            start_system "$system"
            echo "  $system $workload run $run..." >&2
            ticks=$(system_ticks) began=$(date +%s.%N)
            v=$(run_workload "$workload" "$system")
            ticks=$(($(system_ticks) - ticks)) took=$(awk -v b="$began" -v e="$(date +%s.%N)" 'BEGIN { print e - b }')
            [ "$system" = direct ] || costs+=("$(cpu_per_unit "$workload" "${v%% *}" "$ticks" "$took")")
            if [ "$system" = tcplb ]; then
                pid=$(tcplb_pid_for "$workload")
                cpus+=("$(cpu_seconds "$pid")") rsss+=("$(peak_rss_kb "$pid")")
            fi
            stop_system
            values+=("$v")
        done
        # Median by the first field; keep that run's latency fields.
        RESULT[$workload,$system]=$(printf '%s\n' "${values[@]}" | sort -g -k1,1 \
            | awk '{ v[NR] = $0 } END { print v[int((NR + 1) / 2)] }')
        SPREAD[$workload,$system]=$(printf '%s\n' "${values[@]}" | awk '
            { x = $1 + 0; if (NR == 1 || x < lo) lo = x; if (NR == 1 || x > hi) hi = x }
            END { if (hi > 0) printf "%.0f%%", (hi - lo) * 100 / hi }')
        [ ${#costs[@]} -eq 0 ] || COST[$workload,$system]=$(printf '%s\n' "${costs[@]}" | median)
        if [ "$system" = tcplb ]; then
            CPU[$workload]=$(printf '%s\n' "${cpus[@]}" | median)
            RSS[$workload]=$(printf '%s\n' "${rsss[@]}" | median)
        fi
    done
done

# ---------------------------------------------------------------- table
echo
echo "tcplb vs peers on loopback: $CORES cores, median of $RUNS runs of ${DUR}s (after warm-up)"
echo "$(uname -sr); $("$TCPLB" --version); $(haproxy -v | head -1 | cut -d' ' -f1-3);" \
    "$(nginx -v 2>&1 | sed 's/.*: //'); $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2);" \
    "$(iperf3 -v | head -1 | cut -d' ' -f1-2)"
[ -n "$TCPLB_ARGS" ] && echo "tcplb flags: $TCPLB_ARGS"
printf '%-8s %-8s %12s %-8s %7s %9s %9s %9s %11s %9s %10s\n' workload system value unit spread \
    "/direct" "/bestpeer" "p50/p99us" "proxy-cpu" "tcplb-cpu" "tcplb-rss"
for workload in "${WORKLOADS[@]}"; do
    case $workload in bulk-*) unit=Gbit/s per=ms/GB ;; conn/s) unit=conn/s per=us/conn ;;
        http-ka) unit=req/s per=us/req ;; esac
    direct=$(cut -d' ' -f1 <<<"${RESULT[$workload,direct]:-0}")
    ha=${RESULT[$workload,haproxy]:-0} ng=${RESULT[$workload,nginx]:-0}
    best=$(printf '%s\n' "${ha%% *}" "${ng%% *}" | sort -g | tail -1)
    for system in "${SYSTEMS[@]}"; do
        read -r v p50 p99 <<<"${RESULT[$workload,$system]}"
        lat="-"; [ -n "${p50:-}" ] && lat="$p50/$p99"
        cpu="-" rss="-"
        if [ "$system" = tcplb ]; then cpu="${CPU[$workload]}s" rss="$((RSS[$workload] / 1024))MiB"; fi
        ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
        cost="-"; [ -n "${COST[$workload,$system]:-}" ] && cost="${COST[$workload,$system]}$per"
        printf '%-8s %-8s %12s %-8s %7s %9s %9s %9s %11s %9s %10s\n' "$workload" "$system" "$v" \
            "$unit" "${SPREAD[$workload,$system]}" "$(ratio "$v" "$direct")" "$(ratio "$v" "$best")" \
            "$lat" "$cost" "$cpu" "$rss"
    done
done

# ------------------------------------------- memory per idle connection
# RSS of the proxy's processes with N idle connections held through it,
# minus RSS before, divided by N. N is bounded by the fd limit: the proxy
# needs two descriptors per connection.
IDLE_CONNS=${IDLE_CONNS:-9000}
[ "$IDLE_CONNS" -gt 0 ] || exit 0
limit=$(ulimit -n)
if [ $((IDLE_CONNS * 2 + 100)) -gt "$limit" ]; then
    IDLE_CONNS=$(((limit - 100) / 2))
fi
rss_kb() { # total VmRSS of the given PIDs and their children
    local total=0 pid child
    for pid in "$@"; do
        for child in "$pid" $(pgrep -P "$pid" || true); do
            total=$((total + $(awk '/^VmRSS:/ { print $2 }' "/proc/$child/status" 2>/dev/null || echo 0)))
        done
    done
    echo "$total"
}
echo
echo "memory per idle connection: $IDLE_CONNS connections held through each proxy (RSS delta / N)"
printf '%-8s %16s %24s\n' system "silent (bytes)" "after 64-byte echo (bytes)"
for system in tcplb haproxy nginx; do
    line=""
    for size in 0 64; do
        start_system "$system"
        sleep 0.3
        before=$(rss_kb "${SYSTEM_PIDS[@]}")
        front=(${FRONT[$system]})
        "$LOADGEN" hold "127.0.0.1:${front[0]}" --workers "$IDLE_CONNS" --size "$size" --seconds 3 \
            >"$TMP/hold.out" 2>>"$TMP/log" &
        holder=$!
        PIDS+=("$holder")
        for _ in $(seq 600); do grep -q held= "$TMP/hold.out" && break; sleep 0.1; done
        sleep 1
        after=$(rss_kb "${SYSTEM_PIDS[@]}")
        held=$(sed -n 's/.*held=\([0-9]*\).*/\1/p' "$TMP/hold.out")
        wait "$holder" 2>/dev/null || true
        stop_system
        per=$(awk -v a="$after" -v b="$before" -v n="${held:-0}" 'BEGIN { if (n > 0) printf "%.0f", (a - b) * 1024 / n; else print "-" }')
        line="$line $per"
        [ "${held:-0}" = "$IDLE_CONNS" ] || echo "  ($system: only ${held:-0} of $IDLE_CONNS connections opened)" >&2
    done
    read -r silent echoed <<<"$line"
    printf '%-8s %16s %24s\n' "$system" "$silent" "$echoed"
done
