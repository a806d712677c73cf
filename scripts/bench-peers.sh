#!/usr/bin/env bash
# Compares tcplb with HAProxy and nginx (stream) on loopback, against the
# same demo backends, and prints one table.
#
# Workloads (each bounded to a few seconds, warmed up, median of $RUNS runs):
#   bulk-1     one connection, iperf3, Gbit/s
#   bulk-32    32 parallel connections, iperf3 -P 32, Gbit/s
#   conn/s     a new TCP connection per 64-byte request/response
#              (examples/loadgen.rs, $CONN_WORKERS workers), connections/s
#   http-close a new connection per HTTP request with `Connection: close`
#              (examples/loadgen.rs close, $CONN_WORKERS workers): the
#              backend closes first; connections/s, p50/p99 latency
#   http-ka    keep-alive HTTP requests/s with wrk -c64, p50/p99 latency
#   tls-hs     full TLS handshakes/s passed through without looking
#              (examples/loadgen.rs tls, $TLS_WORKERS concurrent), p50/p99
#   tls-sni    the same handshakes routed by SNI over a 16-name table: the
#              cost of peeking at the ClientHello (see "TLS" below)
#   tls-term   the same full TLS 1.3 handshakes terminated by the proxy
#              (tcplb --tls-cert, HAProxy `bind ... ssl crt`, nginx `listen
#              ssl`, the backend's ECDSA P-256 certificate), the plaintext
#              "hit" from a plain port of the backend nginx; direct: the
#              backend nginx terminating itself
#   tls-resume the same, each handshake resuming the session its client
#              worker had before (rustls client, a session cache per worker,
#              TLS 1.3 tickets; every proxy with its default tickets on):
#              the share that did resume is shown (resumed%)
#   tls-term-rsa  tls-term with an RSA 2048 certificate instead
#   tls-bulk   one terminated TLS connection streaming to the plain echo
#              backend and reading it back (examples/loadgen.rs tls-bulk):
#              echoed Gbit/s, the proxy's (and client's) CPU per echoed GB
#   udp-64     UDP datagram echo, 64 bytes: $UDP_WORKERS sessions each
#   udp-1400   sending one datagram and waiting for it back (loadgen udp),
#              round trips/s (two datagrams through the proxy each); the
#              backend is `backend --echo --udp`. nginx: `listen ... udp`,
#              sessions kept (no proxy_responses), as tcplb's
#   dns        dnsperf (one socket, $DNS_CLIENTS in flight per client) against a
#              real dnsmasq answering from its configuration; tcplb
#              --responses 1, nginx proxy_responses 1: a session per query
#   (HAProxy has no UDP: its rows are left out of the UDP workloads.)
# Systems: direct (no proxy), tcplb (release build), haproxy, nginx, and
# tcplb-b: a second tcplb for A/B runs, taking turns with the first
# (TCPLB_B_BIN, TCPLB_B_ARGS and TCPLB_B_ENV, environment assignments such
# as "RUST_LOG=info", say how it differs; on tcplb's ports).
# Rounds are interleaved: run 1 of every system, then run 2, ..., so a
# machine that gets busier mid-way weighs on every system alike.
# Besides each rate: the proxy's CPU per unit of work (proxy-cpu; the
# steadier measure on a shared machine), tcplb's CPU time and peak RSS.
# Proxies use the same backends, round-robin, no logging, workers = cores.
#
# TLS. The backend is one nginx (`stream`, `ssl`, `return "hit"`), worker
# processes = cores, with an ECDSA P-256 certificate `openssl req` makes at
# start in the temp folder; no session cache, no tickets. It is the same
# process for every system, it scales over the cores like the proxies do
# (`openssl s_server` is single-threaded and would cap every system at the
# same rate), it does the least work a TLS server can (no HTTP), and its
# reply proves each handshake completed end to end. The client is
# examples/loadgen.rs `tls`: rustls (aws-lc-rs, its default post-quantum
# key share, so ClientHellos are browser-sized), session resumption off, so
# every connection is a full handshake; it pins the backend's certificate
# (cheaper than a chain walk) but checks the handshake signature, reads the
# reply to the server's close and counts only a handshake that got "hit".
# The route table is the same for every system: 14 exact names and one
# wildcard lead to a third backend port that answers "miss", and $TLS_SNI
# (a.test, 9th of 16; x.wild.test exercises the wildcard) leads to the two
# "hit" ports. No default route takes a hit: a misrouted handshake counts
# as an error. tcplb routes with [[listener.route]] in a --config file,
# HAProxy with `tcp-request inspect-delay 5s` and `use_backend ... if
# { req.ssl_sni -i NAME }` rules, nginx with `ssl_preread on` and a `map
# $ssl_preread_server_name` (hostnames). A tcplb without routes support
# is reported as such and left out of tls-sni. After the table, the CPU
# per handshake of client, backend and proxy shows where the cores went:
# on a 2-core machine all three share them, so the rate is the machine's,
# and proxy-cpu is the figure that compares proxies.
# TLS_KX=x25519 makes the client offer only X25519: rustls (tcplb, and the
# client) prefers X25519MLKEM768, which OpenSSL 3.0 (HAProxy, nginx) does
# not have, so by default tcplb's handshakes do more key exchange work
# than the peers'; x25519 compares them on the same work.
# TLS_PROXY_ONLY=1, for the TLS workloads, runs the TLS client, the TLS
# backend and the echo backends on the last core and the proxy under test
# on the others (taskset): the rate is then the proxy's,
# not the machine's, as long as the client keeps up (its CPU per handshake
# is shown; on 2 cores the proxy gets 1).
#
# At equal offered load (after the memory part; FIXED=none skips it): for
# each of $FIXED (http-close conn/s http-ka), every system of
# $FIXED_SYSTEMS is first driven flat out $FIXED_PROBES times (closed
# loop, the loadgen as above; http-ka with loadgen http, 64 connections),
# each system's best run counts and the slowest system's is the maximum.
# Then all of them are driven open-loop at $FIXED_LOADS percent of it
# (examples/loadgen.rs --rate: arrivals on a fixed schedule, see its doc
# for how latency is timed), $FIXED_RUNS rounds, the systems taking turns
# and the first of each round rotating. Per system: the rate achieved,
# arrivals missed (all 256 in flight), the proxy's CPU per connection or
# request split into user and kernel (utime and stime of all its
# processes and threads from /proc, over the whole run divided by the
# units done in it), and p50/p99 latency, each the median of the rounds;
# spread is that of the total CPU per unit.
#
# Usage: scripts/bench-peers.sh            (installs missing tools with apt)
# Env:   RUNS=3 SECONDS_PER_RUN=3 CONN_WORKERS=32 TCPLB_ARGS="..." SKIP_APT=1
#        SYSTEMS="direct tcplb" WORKLOADS="conn/s http-ka" TCPLB_BIN=path/to/tcplb
#        TLS_WORKERS=32 TLS_SNI=a.test TLS_KX=default|x25519 TLS_PROXY_ONLY=1
#        WORKLOADS=none (only the memory part)
#        IDLE_CONNS=9000 (0 skips the memory-per-idle-connection part)
#        MEM_RUNS=$RUNS MEM_SYSTEMS="tcplb haproxy nginx" (memory part: rounds, systems)
#        MEM_KINDS="0 64 tls" (memory part: silent, after a 64-byte echo,
#          terminated TLS after a 64-byte echo over it)
#        FIXED="http-close conn/s http-ka" (none: skip) FIXED_RUNS=5 FIXED_PROBES=2
#        FIXED_LOADS="50 80" FIXED_SYSTEMS="tcplb haproxy nginx"
#        FIXED_MAX="http-close=9000 conn/s=9000 http-ka=40000" (skip probing)
#        TCPLB_B_BIN=path TCPLB_B_ARGS="..." TCPLB_B_ENV="VAR=value ..." (tcplb-b)
#        FIXED_RAW=file (append each round's row: workload load system and the columns)
#        CARGO_TARGET_DIR is honoured (the binaries are looked up there).
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
DUR=${SECONDS_PER_RUN:-3}
CONN_WORKERS=${CONN_WORKERS:-32}
TLS_WORKERS=${TLS_WORKERS:-32}
TLS_SNI=${TLS_SNI:-a.test}
TLS_KX=${TLS_KX:-default}
TLS_PROXY_ONLY=${TLS_PROXY_ONLY:-}
UDP_WORKERS=${UDP_WORKERS:-32}
DNS_CLIENTS=${DNS_CLIENTS:-32}
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
command -v openssl >/dev/null || need+=(openssl)
command -v dnsperf >/dev/null || need+=(dnsperf)
command -v dnsmasq >/dev/null || need+=(dnsmasq-base)
if [ ${#need[@]} -gt 0 ] && [ -z "${SKIP_APT:-}" ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    echo "installing: ${need[*]}" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)" >&2; exit 1; }

echo "building tcplb, backend and loadgen (release)..." >&2
cargo build --release -q --bin tcplb --bin backend --example loadgen
# Where cargo put them: CARGO_TARGET_DIR, a config's target-dir, or target/.
BIN=$(cargo metadata --format-version 1 --no-deps \
    | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release
TCPLB=${TCPLB_BIN:-$BIN/tcplb} BACKEND=$BIN/backend LOADGEN=$BIN/examples/loadgen
TCPLB_B=${TCPLB_B_BIN:-$TCPLB} TCPLB_B_ARGS=${TCPLB_B_ARGS:-$TCPLB_ARGS} TCPLB_B_ENV=${TCPLB_B_ENV:-}

# ------------------------------------------------------------ processes
# shellcheck source=scripts/processes.sh
source scripts/processes.sh tcplb-bench

wait_udp() {
    for _ in $(seq 100); do
        [ -n "$(ss -Hlun "sport = :$1")" ] && return 0
        sleep 0.05
    done
    echo "nothing listens on UDP port $1; log:" >&2
    tail -20 "$TMP/log" >&2
    exit 1
}

# Free loopback ports below the ephemeral range.
BASE=$((20000 + (RANDOM % 100) * 100))
port() { echo $((BASE + $1)); }
ECHO1=$(port 1) ECHO2=$(port 2) HTTP1=$(port 3) HTTP2=$(port 4) IPERF=$(port 5)
TLS1=$(port 6) TLS2=$(port 7) TLS_MISS=$(port 8) TLS_PLAIN=$(port 9)
UECHO1=$(port 41) UECHO2=$(port 42) DNS=$(port 43)
ports_free "$BASE" $((BASE + 50))
for p in $(seq "$BASE" $((BASE + 50))); do
    [ -z "$(ss -Hlun "sport = :$p")" ] || { echo "UDP port $p is busy; run again" >&2; exit 1; }
done

# TLS_PROXY_ONLY: everything but the proxy under test on the last core.
PEER_CPUS="" PROXY_CPUS=""
if [ -n "$TLS_PROXY_ONLY" ]; then
    PEER_CPUS="taskset -c $((CORES - 1))"
    PROXY_CPUS="taskset -c 0-$((CORES > 1 ? CORES - 2 : 0))"
fi
# shellcheck disable=SC2086
spawn $PEER_CPUS "$BACKEND" --echo "$ECHO1"
# shellcheck disable=SC2086
spawn $PEER_CPUS "$BACKEND" --echo "$ECHO2"
spawn "$BACKEND" "$HTTP1"
spawn "$BACKEND" "$HTTP2"
spawn iperf3 -s -B 127.0.0.1 -p "$IPERF"
for p in $ECHO1 $ECHO2 $HTTP1 $HTTP2 $IPERF; do wait_listening "$p"; done

read -r -a WORKLOADS <<<"${WORKLOADS:-bulk-1 bulk-32 conn/s http-close http-ka tls-hs tls-sni tls-term tls-resume tls-term-rsa tls-bulk udp-64 udp-1400 dns}"
[ "${WORKLOADS[*]}" != none ] || WORKLOADS=()
read -r -a SYSTEMS <<<"${SYSTEMS:-direct tcplb haproxy nginx}"

# The certificates every terminating proxy serves (made even when no TLS
# workload runs: HAProxy's configuration names them): ECDSA P-256 (cert.pem,
# also the TLS backend's) and RSA 2048 (rsa-cert.pem).
mkdir -p "$TMP/tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -keyout "$TMP/tls/key.pem" -out "$TMP/tls/cert.pem" -subj /CN=a.test \
    -addext "subjectAltName=DNS:a.test,DNS:*.wild.test" 2>>"$TMP/log"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 \
    -keyout "$TMP/tls/rsa-key.pem" -out "$TMP/tls/rsa-cert.pem" -subj /CN=a.test \
    -addext "subjectAltName=DNS:a.test,DNS:*.wild.test" 2>>"$TMP/log"
# HAProxy's `crt` takes the chain and key in one file.
cat "$TMP/tls/cert.pem" "$TMP/tls/key.pem" >"$TMP/tls/combined.pem"
cat "$TMP/tls/rsa-cert.pem" "$TMP/tls/rsa-key.pem" >"$TMP/tls/combined-rsa.pem"

# The TLS backend (see "TLS" above): one nginx, its own temp prefix, not
# counted as any proxy's CPU.
TLS_BACKEND_PIDS=()
if [[ " ${WORKLOADS[*]} " == *" tls-"* ]]; then
    cat >"$TMP/tls/nginx.conf" <<EOF
$(nginx_head "$TMP/tls")
stream {
    ssl_certificate $TMP/tls/cert.pem;
    ssl_certificate_key $TMP/tls/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache off;
    ssl_session_tickets off;
    server { listen 127.0.0.1:$TLS1 ssl; return "hit"; }
    server { listen 127.0.0.1:$TLS2 ssl; return "hit"; }
    server { listen 127.0.0.1:$TLS_MISS ssl; return "miss"; }
    # tls-term's backend: the same answer in the clear.
    server { listen 127.0.0.1:$TLS_PLAIN; return "hit"; }
}
EOF
    # shellcheck disable=SC2086
    spawn $PEER_CPUS nginx -p "$TMP/tls" -e "$TMP/tls/nginx-error.log" -c "$TMP/tls/nginx.conf"
    TLS_BACKEND_PIDS=("$LAST_PID")
    for p in $TLS1 $TLS2 $TLS_MISS $TLS_PLAIN; do wait_listening "$p"; done
fi

# The UDP backends: two datagram echoes, and a real DNS server answering
# every query for bench.test from its configuration (no upstream).
if [[ " ${WORKLOADS[*]} " == *" udp-"* || " ${WORKLOADS[*]} " == *" dns "* ]]; then
    spawn "$BACKEND" --echo --udp "$UECHO1"
    spawn "$BACKEND" --echo --udp "$UECHO2"
    spawn dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts \
        --bind-interfaces --listen-address=127.0.0.1 --port="$DNS" --pid-file= --user=nobody --group=nogroup \
        --address=/bench.test/192.0.2.1 --cache-size=0 --dns-forward-max=10000
    UDP_BACKEND_PIDS=("$LAST_PID")
    for p in $UECHO1 $UECHO2 $DNS; do wait_udp "$p"; done
    for _ in $(seq 2000); do echo "bench.test A"; done >"$TMP/queries"
fi

# The route table, the same for every system: "name target", target "hit"
# (the two hit ports) or "miss" (the third). Exact names before the
# wildcard, so HAProxy's rules, evaluated in order, keep their meaning.
ROUTES="api.test miss
auth.test miss
billing.test miss
cdn.test miss
db.test miss
docs.test miss
git.test miss
grafana.test miss
a.test hit
kube.test miss
mail.test miss
mqtt.test miss
search.test miss
shop.test miss
vault.test miss
*.wild.test hit"

# Frontend ports per system: echo, http, iperf, tls (no routes), tls-sni,
# tls-term, tls-term-rsa, tls-echo (terminated TLS to the echo backends;
# tls-bulk and the memory part), udp echo, dns. "-": none.
declare -A FRONT=(
    [direct]="$ECHO1 $HTTP1 $IPERF $TLS1 $TLS1 $TLS1 - - $UECHO1 $DNS"
    [tcplb]="$(port 11) $(port 12) $(port 13) $(port 14) $(port 15) $(port 16) $(port 17) $(port 18) $(port 19) $(port 20)"
    [haproxy]="$(port 21) $(port 22) $(port 23) $(port 24) $(port 25) $(port 26) $(port 27) $(port 28) - -"
    [nginx]="$(port 31) $(port 32) $(port 33) $(port 34) $(port 35) $(port 36) $(port 37) $(port 38) $(port 39) $(port 40)"
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
listen tls
    bind 127.0.0.1:$(port 24)
    server t1 127.0.0.1:$TLS1
    server t2 127.0.0.1:$TLS2
frontend tls_sni
    bind 127.0.0.1:$(port 25)
    tcp-request inspect-delay 5s
    tcp-request content accept if { req.ssl_hello_type 1 }
$(while read -r name target; do
    case $name in
        \*.*) echo "    use_backend tls_$target if { req.ssl_sni -m end -i ${name#\*} }" ;;
        *) echo "    use_backend tls_$target if { req.ssl_sni -i $name }" ;;
    esac
done <<<"$ROUTES")
    default_backend tls_miss
backend tls_hit
    server t1 127.0.0.1:$TLS1
    server t2 127.0.0.1:$TLS2
backend tls_miss
    server t3 127.0.0.1:$TLS_MISS
listen tls_term
    bind 127.0.0.1:$(port 26) ssl crt $TMP/tls/combined.pem
    server p1 127.0.0.1:$TLS_PLAIN
listen tls_term_rsa
    bind 127.0.0.1:$(port 27) ssl crt $TMP/tls/combined-rsa.pem
    server p1 127.0.0.1:$TLS_PLAIN
listen tls_echo
    bind 127.0.0.1:$(port 28) ssl crt $TMP/tls/combined.pem
    server e1 127.0.0.1:$ECHO1
    server e2 127.0.0.1:$ECHO2
EOF

cat >"$TMP/nginx.conf" <<EOF
$(nginx_head "$TMP")
stream {
    access_log off;
    # nginx 1.22's default is TLSv1 to TLSv1.2: the workloads compare
    # TLS 1.3 handshakes, as HAProxy and tcplb offer by default.
    ssl_protocols TLSv1.2 TLSv1.3;
    upstream echo { server 127.0.0.1:$ECHO1; server 127.0.0.1:$ECHO2; }
    upstream http { server 127.0.0.1:$HTTP1; server 127.0.0.1:$HTTP2; }
    upstream iperf { server 127.0.0.1:$IPERF; }
    upstream tls_hit { server 127.0.0.1:$TLS1; server 127.0.0.1:$TLS2; }
    upstream tls_miss { server 127.0.0.1:$TLS_MISS; }
    map \$ssl_preread_server_name \$tls_upstream {
        hostnames;
        default tls_miss;
$(while read -r name target; do echo "        $name tls_$target;"; done <<<"$ROUTES")
    }
    server { listen 127.0.0.1:$(port 31); proxy_pass echo; }
    server { listen 127.0.0.1:$(port 32); proxy_pass http; }
    server { listen 127.0.0.1:$(port 33); proxy_pass iperf; }
    server { listen 127.0.0.1:$(port 34); proxy_pass tls_hit; }
    server { listen 127.0.0.1:$(port 35); ssl_preread on; proxy_pass \$tls_upstream; }
    upstream uecho { server 127.0.0.1:$UECHO1; server 127.0.0.1:$UECHO2; }
    server { listen 127.0.0.1:$(port 39) udp reuseport; proxy_pass uecho; }
    server { listen 127.0.0.1:$(port 40) udp reuseport; proxy_responses 1; proxy_pass 127.0.0.1:$DNS; }
    server {
        listen 127.0.0.1:$(port 36) ssl;
        ssl_certificate $TMP/tls/cert.pem;
        ssl_certificate_key $TMP/tls/key.pem;
        proxy_pass 127.0.0.1:$TLS_PLAIN;
    }
    server {
        listen 127.0.0.1:$(port 37) ssl;
        ssl_certificate $TMP/tls/rsa-cert.pem;
        ssl_certificate_key $TMP/tls/rsa-key.pem;
        proxy_pass 127.0.0.1:$TLS_PLAIN;
    }
    server {
        listen 127.0.0.1:$(port 38) ssl;
        ssl_certificate $TMP/tls/cert.pem;
        ssl_certificate_key $TMP/tls/key.pem;
        proxy_pass echo;
    }
}
EOF

# tcplb's route table: one route (and pool) per name; the listener's own
# pool, the default route, is the "miss" port.
{
    cat <<EOF
[defaults]
on_failure = "close"
health = { interval = "60s" }

[[listener]]
name = "tls-sni"
listen = "127.0.0.1:$(port 15)"
backends = ["127.0.0.1:$TLS_MISS"]
EOF
    i=0
    while read -r name target; do
        i=$((i + 1))
        backends="\"127.0.0.1:$TLS_MISS\""
        [ "$target" = hit ] && backends="\"127.0.0.1:$TLS1\", \"127.0.0.1:$TLS2\""
        printf '\n[[listener.route]]\nname = "r%02d"\nserver_names = ["%s"]\nbackends = [%s]\n' \
            "$i" "$name" "$backends"
    done <<<"$ROUTES"
} >"$TMP/tcplb-sni.toml"

# Whether this tcplb routes by SNI: an older build (TCPLB_BIN) rejects the
# route tables and exits; tls-sni then leaves tcplb out.
TCPLB_ROUTES=0
if [[ " ${WORKLOADS[*]} " == *" tls-sni "* && " ${SYSTEMS[*]} " == *" tcplb "* ]]; then
    # shellcheck disable=SC2086
    RUST_LOG=warn "$TCPLB" --config "$TMP/tcplb-sni.toml" $TCPLB_ARGS 2>"$TMP/probe.err" &
    probe=$!
    PIDS+=("$probe")
    for _ in $(seq 100); do
        if [ -n "$(ss -Hltn "sport = :$(port 15)")" ]; then TCPLB_ROUTES=1; break; fi
        kill -0 "$probe" 2>/dev/null || break
        sleep 0.05
    done
    stop "$probe"
    if [ "$TCPLB_ROUTES" = 0 ]; then
        echo "tcplb does not take the route table, so tls-sni leaves it out:" >&2
        head -3 "$TMP/probe.err" >&2
    fi
fi
[ "$TCPLB_ROUTES" = 1 ] || FRONT[tcplb]="$(port 11) $(port 12) $(port 13) $(port 14) - $(port 16) \
$(port 17) $(port 18) $(port 19) $(port 20)"
FRONT[tcplb-b]=${FRONT[tcplb]}

# tcplb serves one listener per process: one process per frontend. The
# binary, flags and environment: tcplb's or tcplb-b's (start_system).
start_tcplb() {
    TCPLB_PIDS=()
    local i=0 backends
    for backends in "127.0.0.1:$ECHO1,127.0.0.1:$ECHO2" "127.0.0.1:$HTTP1,127.0.0.1:$HTTP2" \
        "127.0.0.1:$IPERF" "127.0.0.1:$TLS1,127.0.0.1:$TLS2"; do
        i=$((i + 1))
        # shellcheck disable=SC2086
        RUST_LOG=warn spawn $PROXY_CPUS env $RUN_ENV "$RUN_TCPLB" --listen "127.0.0.1:$(port $((10 + i)))" \
            --backend "$backends" --health-interval 60s --on-failure close $RUN_ARGS
        TCPLB_PIDS+=("$LAST_PID")
    done
    # tls-term, tls-term-rsa, tls-echo: terminating with the backend's
    # certificate (ECDSA), with the RSA one, and in front of the echoes.
    local cert backends
    for i in 6 7 8; do
        cert=cert backends=127.0.0.1:$TLS_PLAIN
        [ "$i" = 7 ] && cert=rsa-cert
        [ "$i" = 8 ] && backends=127.0.0.1:$ECHO1,127.0.0.1:$ECHO2
        # shellcheck disable=SC2086
        RUST_LOG=warn spawn $PROXY_CPUS env $RUN_ENV "$RUN_TCPLB" --listen "127.0.0.1:$(port $((10 + i)))" \
            --backend "$backends" --tls-cert "$TMP/tls/$cert.pem" \
            --tls-key "$TMP/tls/${cert%cert}key.pem" --health-interval 60s --on-failure close \
            $RUN_ARGS
        TCPLB_PIDS+=("$LAST_PID")
    done
    if [ "$TCPLB_ROUTES" = 1 ]; then
        # shellcheck disable=SC2086
        RUST_LOG=warn spawn $PROXY_CPUS env $RUN_ENV "$RUN_TCPLB" --config "$TMP/tcplb-sni.toml" $RUN_ARGS
        TCPLB_PIDS+=("$LAST_PID")
    fi
    # udp-*: the datagram echoes; dns: dnsmasq, a session per query.
    # shellcheck disable=SC2086
    RUST_LOG=warn spawn env $RUN_ENV "$RUN_TCPLB" --protocol udp --listen "127.0.0.1:$(port 19)" \
        --backend "127.0.0.1:$UECHO1,127.0.0.1:$UECHO2" --health-interval 60s $RUN_ARGS
    TCPLB_PIDS+=("$LAST_PID")
    # shellcheck disable=SC2086
    RUST_LOG=warn spawn env $RUN_ENV "$RUN_TCPLB" --protocol udp --listen "127.0.0.1:$(port 20)" \
        --backend "127.0.0.1:$DNS" --responses 1 --health-interval 60s $RUN_ARGS
    TCPLB_PIDS+=("$LAST_PID")
}

start_system() {
    SYSTEM_PIDS=()
    case $1 in
        direct) return ;; # its ports are the backends', waited for at their start
        tcplb) RUN_TCPLB=$TCPLB RUN_ARGS=$TCPLB_ARGS RUN_ENV=""
            start_tcplb; SYSTEM_PIDS=("${TCPLB_PIDS[@]}") ;;
        tcplb-b) RUN_TCPLB=$TCPLB_B RUN_ARGS=$TCPLB_B_ARGS RUN_ENV=$TCPLB_B_ENV
            start_tcplb; SYSTEM_PIDS=("${TCPLB_PIDS[@]}") ;;
        # shellcheck disable=SC2086
        haproxy) spawn $PROXY_CPUS haproxy -db -f "$TMP/haproxy.cfg"; SYSTEM_PIDS=("$LAST_PID") ;;
        # shellcheck disable=SC2086
        nginx) spawn $PROXY_CPUS nginx -p "$TMP" -e "$TMP/nginx-error.log" -c "$TMP/nginx.conf"
            SYSTEM_PIDS=("$LAST_PID") ;;
    esac
    local front i=0
    read -r -a front <<<"${FRONT[$1]}"
    for p in "${front[@]}"; do
        i=$((i + 1))
        [ "$p" = - ] && continue
        if [ "$i" -le 8 ]; then wait_listening "$p"; else wait_udp "$p"; fi
    done
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

run_conn() { # port [mode]: "conn/s p50_us p99_us"
    "$LOADGEN" "${2:-conn}" "127.0.0.1:$1" --workers "$CONN_WORKERS" --seconds "$DUR" --warmup 1 \
        | sed -n 's/.*conn_per_s=\([0-9]*\) p50_us=\([0-9]*\) p99_us=\([0-9]*\).*/\1 \2 \3/p'
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

# TLS handshakes through the given port, presenting the given certificate
# (extra loadgen flags after it: --resume); prints "hs/s p50_us p99_us" and
# leaves the client's CPU per handshake in $TMP/client-cpu, the share of
# resumed handshakes in $TMP/resumed.
run_tls() { # port cert [flags]
    local out port=$1 cert=$2
    shift 2
    # shellcheck disable=SC2086
    out=$($PEER_CPUS "$LOADGEN" tls "127.0.0.1:$port" --workers "$TLS_WORKERS" --seconds "$DUR" \
        --warmup 1 --sni "$TLS_SNI" --pin "$TMP/tls/$cert.pem" --expect hit --kx "$TLS_KX" "$@" \
        2>"$TMP/tls.err")
    field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p" <<<"$out"; }
    field client_cpu_us_per_hs >"$TMP/client-cpu"
    field resumed_pct >"$TMP/resumed"
    field tls13_pct >"$TMP/tls13"
    local errors
    errors=$(field errors)
    [ "${errors:-0}" = 0 ] || echo "    $errors failed handshakes; $(cat "$TMP/tls.err")" >&2
    echo "$(field hs_per_s) $(field p50_us) $(field p99_us)"
}

# One terminated TLS connection to the echo backends; prints Gbit/s and
# leaves the client's CPU per echoed GB in $TMP/client-cpu.
run_tls_bulk() { # port
    local out
    # shellcheck disable=SC2086
    out=$($PEER_CPUS "$LOADGEN" tls-bulk "127.0.0.1:$1" --workers 1 --seconds "$DUR" --warmup 1 \
        --sni "$TLS_SNI" --pin "$TMP/tls/cert.pem" --kx "$TLS_KX" 2>"$TMP/tls.err")
    field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p" <<<"$out"; }
    field client_cpu_ms_per_gb >"$TMP/client-cpu"
    echo - >"$TMP/resumed"
    echo - >"$TMP/tls13"
    local errors
    errors=$(field errors)
    [ "${errors:-0}" = 0 ] || echo "    $errors errors; $(cat "$TMP/tls.err")" >&2
    field gbit_per_s
}

run_udp() { # port size
    "$LOADGEN" udp "127.0.0.1:$1" --workers "$UDP_WORKERS" --size "$2" --seconds "$DUR" \
        --warmup 1 | sed -n 's/.*rtt_per_s=\([0-9]*\) p50_us=\([0-9]*\) p99_us=\([0-9]*\).*/\1 \2 \3/p'
}

run_dns() { # port
    dnsperf -s 127.0.0.1 -p "$1" -d "$TMP/queries" -l 1 -c 1 -q "$DNS_CLIENTS" \
        >/dev/null 2>&1 || true # warm-up
    dnsperf -s 127.0.0.1 -p "$1" -d "$TMP/queries" -l "$DUR" -c 1 -q "$DNS_CLIENTS" \
        2>>"$TMP/log" | awk '/Queries per second:/ { printf "%.0f", $4 }'
}

run_workload() { # workload system
    local front
    read -r -a front <<<"${FRONT[$2]}"
    case $1 in
        bulk-1) run_bulk "${front[2]}" 1 ;;
        bulk-32) run_bulk "${front[2]}" 32 ;;
        conn/s) run_conn "${front[0]}" ;;
        http-close) run_conn "${front[1]}" close ;;
        http-ka) run_http "${front[1]}" ;;
        tls-hs) run_tls "${front[3]}" cert ;;
        tls-sni) run_tls "${front[4]}" cert ;;
        tls-term) run_tls "${front[5]}" cert ;;
        tls-resume) run_tls "${front[5]}" cert --resume ;;
        tls-term-rsa) run_tls "${front[6]}" rsa-cert ;;
        tls-bulk) run_tls_bulk "${front[7]}" ;;
        udp-64) run_udp "${front[8]}" 64 ;;
        udp-1400) run_udp "${front[8]}" 1400 ;;
        dns) run_dns "${front[9]}" ;;
    esac
}

# A system that cannot run a workload: a tcplb without routes (tls-sni);
# direct where the backend does not terminate like the proxies do (it has
# no tickets, no RSA certificate, no TLS echo); HAProxy for UDP (it has none).
unsupported() {
    { [ "$1" = tls-sni ] && [ "$2" = tcplb ] && [ "$TCPLB_ROUTES" = 0 ]; } \
        || { [ "$2" = direct ] && [[ " tls-resume tls-term-rsa tls-bulk " == *" $1 "* ]]; } \
        || { [[ $1 == udp-* || $1 == dns ]] && [ "$2" = haproxy ]; }
}

# The tcplb process serving a workload, for its CPU time and peak RSS.
tcplb_pid_for() {
    case $1 in bulk-*) echo "${TCPLB_PIDS[2]}" ;; conn/s) echo "${TCPLB_PIDS[0]}" ;;
        http-*) echo "${TCPLB_PIDS[1]}" ;; tls-hs) echo "${TCPLB_PIDS[3]}" ;;
        tls-term | tls-resume) echo "${TCPLB_PIDS[4]}" ;; tls-term-rsa) echo "${TCPLB_PIDS[5]}" ;;
        tls-bulk) echo "${TCPLB_PIDS[6]}" ;; tls-sni) echo "${TCPLB_PIDS[7]}" ;;
        udp-*) echo "${TCPLB_PIDS[-2]}" ;; dns) echo "${TCPLB_PIDS[-1]}" ;; esac
}
cpu_seconds() { awk -v t="$TICK" '{ printf "%.2f", ($14 + $15) / t }' "/proc/$1/stat"; }
peak_rss_kb() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }

median() { sort -g | awk '{ v[NR] = $0 } END { print v[int((NR + 1) / 2)] }'; }

# CPU ticks so far of the given processes and their children (nginx's
# workers).
tree_ticks() {
    local total=0 pid
    for pid in "$@" $(for p in "$@"; do pgrep -P "$p"; done); do
        total=$((total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || echo 0)))
    done
    echo "$total"
}
# The system under test's.
system_ticks() { tree_ticks "${SYSTEM_PIDS[@]}"; }

# The proxy's CPU per unit of work: ms per GB, us per connection, request
# or handshake. Work = rate x wall time of the run, warm-up included (it
# runs at about the same rate), so the figure is approximate but the same
# for every system.
cpu_per_unit() { # workload value ticks seconds
    awk -v w="$1" -v v="$2" -v t="$3" -v s="$4" -v hz="$TICK" 'BEGIN {
        work = v * s; if (w ~ /bulk/) work /= 8
        if (work <= 0) { print "-"; exit }
        cpu = t / hz
        if (w ~ /bulk/) printf "%.0f", cpu * 1000 / work; else printf "%.1f", cpu * 1e6 / work }'
}

# Runs: per workload, round after round, each round every system in turn.
# VALUES etc. hold one line per run.
declare -A VALUES=() CPUS=() RSSS=() COSTS=() CLIENT=() BACKEND=() RESUMED=() TLS13=()
declare -A RESULT CPU RSS SPREAD COST
for workload in "${WORKLOADS[@]}"; do
    for run in $(seq "$RUNS"); do
        for system in "${SYSTEMS[@]}"; do
            unsupported "$workload" "$system" && continue
            # A fresh proxy per run: CPU and peak RSS belong to this run alone.
            start_system "$system"
            echo "  $workload run $run $system..." >&2
            ticks=$(system_ticks) backend=$(tree_ticks "${TLS_BACKEND_PIDS[@]}")
            began=$(date +%s.%N)
            v=$(run_workload "$workload" "$system")
            ticks=$(($(system_ticks) - ticks))
            backend=$(($(tree_ticks "${TLS_BACKEND_PIDS[@]}") - backend))
            took=$(awk -v b="$began" -v e="$(date +%s.%N)" 'BEGIN { print e - b }')
            key=$workload,$system
            [ "$system" = direct ] \
                || COSTS[$key]+="$(cpu_per_unit "$workload" "${v%% *}" "$ticks" "$took")"$'\n'
            if [[ $workload == tls-* ]]; then
                CLIENT[$key]+="$(cat "$TMP/client-cpu")"$'\n'
                RESUMED[$key]+="$(cat "$TMP/resumed")"$'\n'
                TLS13[$key]+="$(cat "$TMP/tls13")"$'\n'
                BACKEND[$key]+="$(cpu_per_unit "$workload" "${v%% *}" "$backend" "$took")"$'\n'
            fi
            if [ "$system" = tcplb ]; then
                pid=$(tcplb_pid_for "$workload")
                CPUS[$workload]+="$(cpu_seconds "$pid")"$'\n'
                RSSS[$workload]+="$(peak_rss_kb "$pid")"$'\n'
            fi
            stop_system
            VALUES[$key]+="$v"$'\n'
        done
    done
done

for key in "${!VALUES[@]}"; do
    values=${VALUES[$key]%$'\n'}
    # Median by the first field; keep that run's latency fields.
    RESULT[$key]=$(sort -g -k1,1 <<<"$values" | awk '{ v[NR] = $0 } END { print v[int((NR + 1) / 2)] }')
    SPREAD[$key]=$(awk '
        { x = $1 + 0; if (NR == 1 || x < lo) lo = x; if (NR == 1 || x > hi) hi = x }
        END { if (hi > 0) printf "%.0f%%", (hi - lo) * 100 / hi }' <<<"$values")
    [ -z "${COSTS[$key]:-}" ] || COST[$key]=$(median <<<"${COSTS[$key]%$'\n'}")
    [ -z "${CLIENT[$key]:-}" ] || CLIENT[$key]=$(median <<<"${CLIENT[$key]%$'\n'}")
    [ -z "${BACKEND[$key]:-}" ] || BACKEND[$key]=$(median <<<"${BACKEND[$key]%$'\n'}")
    [ -z "${RESUMED[$key]:-}" ] || RESUMED[$key]=$(median <<<"${RESUMED[$key]%$'\n'}")
    [ -z "${TLS13[$key]:-}" ] || TLS13[$key]=$(median <<<"${TLS13[$key]%$'\n'}")
done
for workload in "${!CPUS[@]}"; do
    CPU[$workload]=$(median <<<"${CPUS[$workload]%$'\n'}")
    RSS[$workload]=$(median <<<"${RSSS[$workload]%$'\n'}")
done

# ---------------------------------------------------------------- table
echo
if [ ${#WORKLOADS[@]} -gt 0 ]; then
    echo "tcplb vs peers on loopback: $CORES cores, median of $RUNS runs of ${DUR}s (after warm-up)"
fi
echo "$(uname -sr); $("$TCPLB" --version); $(haproxy -v | head -1 | cut -d' ' -f1-3);" \
    "$(nginx -v 2>&1 | sed 's/.*: //'); $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2);" \
    "$(iperf3 -v | head -1 | cut -d' ' -f1-2); $(openssl version | cut -d' ' -f1-2)"
if [ -n "$TCPLB_ARGS" ]; then echo "tcplb flags: $TCPLB_ARGS"; fi
if [[ " ${WORKLOADS[*]} " == *" tls-"* ]]; then
    echo "tls: $TLS_WORKERS concurrent handshakes (rustls client, key exchange $TLS_KX," \
        "resumption only in tls-resume), SNI $TLS_SNI; backend: nginx stream ssl, ECDSA P-256;" \
        "tls-sni: $(wc -l <<<"$ROUTES")-name route table${TLS_PROXY_ONLY:+; proxy on cores $PROXY_CPUS}"
fi
[ ${#WORKLOADS[@]} -eq 0 ] || printf '%-12s %-8s %12s %-8s %7s %9s %9s %11s %11s %9s %10s\n' \
    workload system value unit spread "/direct" "/bestpeer" "p50/p99us" "proxy-cpu" "tcplb-cpu" \
    "tcplb-rss"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0 && b > 0) printf "%.2f", a / b; else print "-" }'; }
for workload in "${WORKLOADS[@]}"; do
    case $workload in bulk-* | tls-bulk) unit=Gbit/s per=ms/GB ;; conn/s | http-close) unit=conn/s per=us/conn ;;
        http-ka) unit=req/s per=us/req ;; tls-*) unit=hs/s per=us/hs ;;
        udp-*) unit=rtt/s per=us/rtt ;; dns) unit=q/s per=us/q ;; esac
    direct=$(cut -d' ' -f1 <<<"${RESULT[$workload,direct]:-0}")
    ha=${RESULT[$workload,haproxy]:-0} ng=${RESULT[$workload,nginx]:-0}
    best=$(printf '%s\n' "${ha%% *}" "${ng%% *}" | sort -g | tail -1)
    for system in "${SYSTEMS[@]}"; do
        read -r v p50 p99 <<<"${RESULT[$workload,$system]:--}"
        lat="-"; [ -n "${p50:-}" ] && lat="$p50/$p99"
        cpu="-" rss="-"
        if [ "$system" = tcplb ] && [ -n "${CPU[$workload]:-}" ]; then
            cpu="${CPU[$workload]}s" rss="$((RSS[$workload] / 1024))MiB"
        fi
        cost=${COST[$workload,$system]:--}; [ "$cost" = - ] || cost="$cost$per"
        printf '%-12s %-8s %12s %-8s %7s %9s %9s %11s %11s %9s %10s\n' "$workload" "$system" "$v" \
            "$unit" "${SPREAD[$workload,$system]:--}" "$(ratio "$v" "$direct")" \
            "$(ratio "$v" "$best")" "$lat" "$cost" "$cpu" "$rss"
    done
done

# Where the cores went in the TLS workloads: on a machine where client,
# backend and proxy share the cores, the rate is bounded by their sum.
if [ ${#CLIENT[@]} -gt 0 ]; then
    echo
    echo "TLS: CPU per handshake (us, median; tls-bulk: ms per echoed GB), the share of" \
        "$CORES cores it kept busy, resumed and TLS 1.3 handshakes"
    printf '%-12s %-8s %8s %8s %8s %8s %6s %8s %8s\n' workload system client backend proxy total \
        busy resumed% tls1.3%
    for workload in "${WORKLOADS[@]}"; do
        [[ $workload == tls-* ]] || continue
        for system in "${SYSTEMS[@]}"; do
            key=$workload,$system
            [ -n "${CLIENT[$key]:-}" ] || continue
            if [ "$(ratio "${RESULT[$key]%% *}" 1)" = - ]; then # no handshakes: nothing per one
                printf '%-12s %-8s %8s %8s %8s %8s %6s %8s %8s\n' "$workload" "$system" - - - - - - -
                continue
            fi
            awk -v w="$workload" -v s="$system" -v c="${CLIENT[$key]}" -v b="${BACKEND[$key]}" \
                -v p="${COST[$key]:-0}" -v r="${RESULT[$key]%% *}" -v n="$CORES" \
                -v x="${RESUMED[$key]:--}" -v v="${TLS13[$key]:--}" 'BEGIN {
                t = c + b + p
                # Gbit/s x ms/GB, or hs/s x us/hs: busy core-seconds per second.
                busy = (w ~ /bulk/) ? t * r / 8 / 1e3 : t * r / 1e6
                printf "%-12s %-8s %8.1f %8.1f %8s %8.1f %5.0f%% %8s %8s\n", w, s, c, b,
                    (s == "direct" ? "-" : sprintf("%.1f", p)), t, busy / n * 100, x, v }'
        done
    done
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

# ---------------------------------------------- memory per idle UDP session
# RSS of the proxy with N idle UDP sessions (each answered once, then
# silent: loadgen udp-hold) minus RSS before, divided by N, once per system.
IDLE_SESSIONS=${IDLE_SESSIONS:-5000}
if [ "$IDLE_SESSIONS" -gt 0 ] && [[ " ${WORKLOADS[*]} " == *" udp-"* ]]; then
    echo
    echo "memory per idle UDP session: $IDLE_SESSIONS sessions held through each proxy (RSS delta / N)"
    for system in tcplb nginx; do
        [[ " ${SYSTEMS[*]} " == *" $system "* ]] || continue
        start_system "$system"
        sleep 0.3
        read -r -a front <<<"${FRONT[$system]}"
        pids=("${SYSTEM_PIDS[@]}")
        [ "$system" = tcplb ] && pids=("${TCPLB_PIDS[-2]}")
        before=$(rss_kb "${pids[@]}")
        "$LOADGEN" udp-hold "127.0.0.1:${front[8]}" --workers "$IDLE_SESSIONS" --size 64 \
            --seconds 3 >"$TMP/udp-hold.out" 2>>"$TMP/log" &
        holder=$!
        PIDS+=("$holder")
        for _ in $(seq 600); do grep -q held= "$TMP/udp-hold.out" && break; sleep 0.1; done
        sleep 1
        after=$(rss_kb "${pids[@]}")
        held=$(sed -n 's/.*held=\([0-9]*\).*/\1/p' "$TMP/udp-hold.out")
        wait "$holder" 2>/dev/null || true
        stop_system
        awk -v s="$system" -v a="$after" -v b="$before" -v n="${held:-0}" 'BEGIN {
            if (n > 0) printf "%-8s %8.0f bytes per session (%d held)\n", s, (a - b) * 1024 / n, n
            else printf "%-8s -\n", s }'
    done
fi

# ------------------------------------------- memory per idle connection
# RSS of the proxy's processes with N idle connections held through it,
# minus RSS before, divided by N; the median of $MEM_RUNS rounds, systems
# interleaved within each round. Kinds ($MEM_KINDS): 0, silent plain
# connections; 64, after a 64-byte echo; tls, terminated by the proxy
# (ECDSA, the tls-echo frontend), after a 64-byte echo over TLS. N is
# bounded by the fd limit (the proxy needs two descriptors per connection)
# and by HAProxy's maxconn (9900).
IDLE_CONNS=${IDLE_CONNS:-9000}
memory_part() {
MEM_RUNS=${MEM_RUNS:-$RUNS}
read -r -a MEM_SYSTEMS <<<"${MEM_SYSTEMS:-tcplb haproxy nginx}"
read -r -a MEM_KINDS <<<"${MEM_KINDS:-0 64 tls}"
limit=$(ulimit -n)
if [ $((IDLE_CONNS * 2 + 100)) -gt "$limit" ]; then
    IDLE_CONNS=$(((limit - 100) / 2))
fi
[ "$IDLE_CONNS" -le 9900 ] || IDLE_CONNS=9900
hold_bytes() { # system kind: bytes of proxy RSS per idle connection, or "-"
    start_system "$1"
    sleep 0.3
    local before after held front target flags
    read -r -a front <<<"${FRONT[$1]}"
    case $2 in
        tls) target=${front[7]} flags=(--size 64 --tls --sni "$TLS_SNI" --pin "$TMP/tls/cert.pem") ;;
        *) target=${front[0]} flags=(--size "$2") ;;
    esac
    before=$(rss_kb "${SYSTEM_PIDS[@]}")
    "$LOADGEN" hold "127.0.0.1:$target" --workers "$IDLE_CONNS" "${flags[@]}" --seconds 3 \
        >"$TMP/hold.out" 2>>"$TMP/log" &
    local holder=$!
    PIDS+=("$holder")
    for _ in $(seq 1200); do grep -q held= "$TMP/hold.out" && break; sleep 0.1; done
    sleep 1
    after=$(rss_kb "${SYSTEM_PIDS[@]}")
    held=$(sed -n 's/.*held=\([0-9]*\).*/\1/p' "$TMP/hold.out")
    wait "$holder" 2>/dev/null || true
    stop_system
    [ "${held:-0}" = "$IDLE_CONNS" ] || echo "  ($1: only ${held:-0} of $IDLE_CONNS connections opened)" >&2
    awk -v a="$after" -v b="$before" -v n="${held:-0}" \
        'BEGIN { if (n > 0) printf "%.0f", (a - b) * 1024 / n; else print "-" }'
}
declare -A MEM=()
for round in $(seq "$MEM_RUNS"); do
    for system in "${MEM_SYSTEMS[@]}"; do
        for kind in "${MEM_KINDS[@]}"; do
            echo "  memory: $system $kind round $round..." >&2
            MEM[$system,$kind]="${MEM[$system,$kind]:-} $(hold_bytes "$system" "$kind")"
        done
    done
done
echo
echo "memory per idle connection: $IDLE_CONNS connections held through each proxy" \
    "(RSS delta / N in bytes, median of $MEM_RUNS; 0: silent, 64: after a 64-byte echo," \
    "tls: terminated, after a 64-byte echo over TLS)"
printf '%-8s' system
for kind in "${MEM_KINDS[@]}"; do printf ' %10s' "$kind"; done
printf '   rounds\n'
for system in "${MEM_SYSTEMS[@]}"; do
    printf '%-8s' "$system"
    rounds=""
    for kind in "${MEM_KINDS[@]}"; do
        printf ' %10s' "$(tr ' ' '\n' <<<"${MEM[$system,$kind]}" | grep -v -e '^$' -e '^-$' | median)"
        rounds+=" $kind:${MEM[$system,$kind]# }"
    done
    printf '  %s\n' "$rounds"
done
}
[ "$IDLE_CONNS" -le 0 ] || memory_part

# ------------------------------------------------ at equal offered load
read -r -a FIXED <<<"${FIXED:-http-close conn/s http-ka}"
[ "${FIXED[*]}" != none ] || exit 0
FIXED_RUNS=${FIXED_RUNS:-5}
FIXED_PROBES=${FIXED_PROBES:-2}
read -r -a FIXED_LOADS <<<"${FIXED_LOADS:-50 80}"
read -r -a FIXED_SYSTEMS <<<"${FIXED_SYSTEMS:-tcplb haproxy nginx}"
declare -A FIXED_MAXES=()
for given in ${FIXED_MAX:-}; do FIXED_MAXES[${given%%=*}]=${given#*=}; done

# user and system ticks so far of the given processes and their children
tree_ticks_split() {
    local u=0 s=0 pid line
    for pid in "$@" $(for p in "$@"; do pgrep -P "$p"; done); do
        line=$(awk '{ print $14, $15 }' "/proc/$pid/stat" 2>/dev/null || echo "0 0")
        u=$((u + ${line% *})) s=$((s + ${line#* }))
    done
    echo "$u $s"
}

# One loadgen run at `rate` (0: flat out) through the system's frontend
# for `workload`; prints "achieved p50 p99 missed errors all".
fixed_loadgen() { # workload system rate
    local front mode port workers=256
    read -r -a front <<<"${FRONT[$2]}"
    case $1 in
        conn/s) mode=conn port=${front[0]} ;;
        http-close) mode=close port=${front[1]} ;;
        http-ka) mode=http port=${front[1]} workers=64 ;;
    esac
    [ "$3" != 0 ] || [ "$mode" = http ] || workers=$CONN_WORKERS
    "$LOADGEN" "$mode" "127.0.0.1:$port" --workers "$workers" --rate "$3" --seconds "$DUR" \
        --warmup 1 2>>"$TMP/log" | awk '{
        for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
        r = (f["conn_per_s"] != "") ? f["conn_per_s"] : f["req_per_s"]
        print r, f["p50_us"], f["p99_us"], f["missed"], f["errors"], f["all"] }'
}

declare -A FIXED_ROWS=() RATES=()
echo
echo "at equal offered load: open loop at ${FIXED_LOADS[*]} % of the slowest system's maximum," \
    "$FIXED_RUNS rounds of ${DUR}s (after 1 s of warm-up), medians; CPU = the proxy's utime" \
    "+ stime per unit"
for workload in "${FIXED[@]}"; do
    max=${FIXED_MAXES[$workload]:-}
    if [ -z "$max" ]; then
        probes=""
        for system in "${FIXED_SYSTEMS[@]}"; do
            best=0
            for _ in $(seq "$FIXED_PROBES"); do
                start_system "$system"
                echo "  fixed $workload: $system flat out..." >&2
                r=$(fixed_loadgen "$workload" "$system" 0)
                stop_system
                [ "${r%% *}" -le "$best" ] || best=${r%% *}
            done
            probes+="$system=$best "
            if [ -z "$max" ] || [ "$best" -lt "$max" ]; then max=$best; fi
        done
        echo "$workload flat out (best of $FIXED_PROBES each): $probes-> maximum $max/s"
    fi
    for load in "${FIXED_LOADS[@]}"; do
        rate=$((max * load / 100))
        RATES[$workload,$load]=$rate
        for round in $(seq "$FIXED_RUNS"); do
            # The first system of a round rotates, so none always goes first.
            order=("${FIXED_SYSTEMS[@]:$(((round - 1) % ${#FIXED_SYSTEMS[@]}))}"
                "${FIXED_SYSTEMS[@]:0:$(((round - 1) % ${#FIXED_SYSTEMS[@]}))}")
            for system in "${order[@]}"; do
                start_system "$system"
                echo "  fixed $workload $load% ($rate/s) round $round $system..." >&2
                before=$(tree_ticks_split "${SYSTEM_PIDS[@]}")
                r=$(fixed_loadgen "$workload" "$system" "$rate")
                after=$(tree_ticks_split "${SYSTEM_PIDS[@]}")
                stop_system
                FIXED_ROWS[$workload,$load,$system]+=$(awk -v b="$before" -v a="$after" \
                    -v r="$r" -v hz="$TICK" 'BEGIN {
                    split(b, bb, " "); split(a, aa, " "); split(r, f, " ")
                    n = f[6] > 0 ? f[6] : 1
                    u = (aa[1] - bb[1]) / hz * 1e6 / n; k = (aa[2] - bb[2]) / hz * 1e6 / n
                    printf "%s %.1f %.1f %.1f %s %s %s %s\n", f[1], u, k, u + k, f[2], f[3], f[4], f[5] }')$'\n'
            done
        done
    done
done
printf '%-10s %5s %7s %-8s %8s %8s %8s %8s %6s %8s %8s %7s\n' workload load rate system achieved \
    user-us kernel-us cpu-us spread p50-us p99-us missed
col() { awk -v c="$1" '{ print $c }' | median; }
for workload in "${FIXED[@]}"; do
    for load in "${FIXED_LOADS[@]}"; do
        for system in "${FIXED_SYSTEMS[@]}"; do
            rows=${FIXED_ROWS[$workload,$load,$system]:-}
            [ -n "$rows" ] || continue
            rows=${rows%$'\n'}
            [ -z "${FIXED_RAW:-}" ] || sed "s|^|$workload $load $system |" <<<"$rows" >>"$FIXED_RAW"
            spread=$(awk '{ x = $4 + 0; if (NR == 1 || x < lo) lo = x; if (NR == 1 || x > hi) hi = x }
                END { if (hi > 0) printf "%.0f%%", (hi - lo) * 100 / hi }' <<<"$rows")
            printf '%-10s %4s%% %7s %-8s %8s %8s %8s %8s %6s %8s %8s %7s\n' "$workload" "$load" \
                "${RATES[$workload,$load]}" "$system" "$(col 1 <<<"$rows")" \
                "$(col 2 <<<"$rows")" "$(col 3 <<<"$rows")" "$(col 4 <<<"$rows")" "$spread" \
                "$(col 5 <<<"$rows")" "$(col 6 <<<"$rows")" "$(col 7 <<<"$rows")"
        done
    done
done
