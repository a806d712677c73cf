#!/usr/bin/env bash
# More than one tcplb, for a person to try (see docs/fleet.md):
#
#   sudo scripts/fleet-demo.sh keepalived   # active/passive: a VIP moves
#   sudo scripts/fleet-demo.sh ecmp         # active/active: BGP + ECMP
#
# Builds tcplb, then sets the scenario up in network namespaces of its own
# (tcplb-demo-*), with the configurations in contrib/fleet/ (the ones the
# tests run), shows what happens when an instance is taken out, and waits
# for Enter so you can try things yourself. Everything it started is
# stopped by PID and every namespace deleted on exit, error or Ctrl+C.
# Needs root, iproute2, curl, and keepalived or bird2 (Debian packages).
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-}
case "$mode" in
    keepalived | ecmp) ;;
    *)
        echo "usage: $0 keepalived|ecmp" >&2
        exit 2
        ;;
esac
[ "$(id -u)" -eq 0 ] || { echo "error: run as root (network namespaces)" >&2; exit 1; }
need() {
    command -v "$1" >/dev/null || [ -x "/usr/sbin/$1" ] ||
        { echo "error: $1 is missing: apt-get install $2" >&2; exit 1; }
}
need ip iproute2
need curl curl
if [ "$mode" = keepalived ]; then need keepalived keepalived; else need bird bird2; fi

PREFIX=tcplb-demo
WORK=$(mktemp -d)
PIDS=()
declare -A PID_OF=()
NAMESPACES=()
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
TCPLB=$TARGET/release/tcplb
BACKEND=$TARGET/release/backend

cleanup() {
    local pid ns
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    done
    for ns in "${NAMESPACES[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$WORK"
    echo "cleaned up: processes stopped, namespaces deleted"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
note() { printf '   %s\n' "$*"; }

# A namespace of the demo's own, loopback up.
netns() {
    local ns=$PREFIX-$1
    if ip netns list | grep -qw "$ns"; then
        echo "error: $ns exists (an earlier run killed hard?): ip netns del $ns" >&2
        exit 1
    fi
    ip netns add "$ns"
    NAMESPACES+=("$ns")
    ip -n "$ns" link set lo up
}
# A veth pair: $1 in namespace $PREFIX-$2, $3 in $PREFIX-$4, both up.
veth() {
    ip link add "$1" netns "$PREFIX-$2" type veth peer name "$3" netns "$PREFIX-$4"
    ip -n "$PREFIX-$2" link set "$1" up
    ip -n "$PREFIX-$4" link set "$3" up
}
# Runs $3... in namespace $PREFIX-$1 in the background, named $2 (its log
# is $WORK/$2.log, its PID ${PID_OF[$2]}).
start() {
    local ns=$1 name=$2
    shift 2
    ip netns exec "$PREFIX-$ns" "$@" >"$WORK/$name.log" 2>&1 &
    PIDS+=("$!")
    PID_OF[$name]=$!
    # Stopped by PID in cleanup; no job notices from bash meanwhile.
    disown "$!"
}
# contrib/fleet/$1 with @KEY@=VALUE pairs ($2...) filled in (not in comments).
template() {
    local file=contrib/fleet/$1 script=""
    shift
    for pair in "$@"; do
        script+="/^[[:space:]]*#/!s|@${pair%%=*}@|${pair#*=}|g;"
    done
    sed "$script" "$file"
}
# Waits up to $1 seconds for the command $2... to succeed.
wait_until() {
    local tries=$(($1 * 10))
    shift
    for _ in $(seq 1 "$tries"); do "$@" && return 0; sleep 0.1; done
    return 1
}
ready_of() { ip netns exec "$PREFIX-$1" curl -s -m 1 http://127.0.0.1:9090/ready || echo "(no answer)"; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

say "Building tcplb (release)"
cargo build --release --quiet --bins

keepalived_demo() {
    local vip=10.214.0.100 x host peer prio
    say "A LAN (bridge) with a client at 10.214.0.1 and two demo backends at 10.214.0.2"
    netns lan
    ip -n $PREFIX-lan link add br0 type bridge
    ip -n $PREFIX-lan link set br0 up
    ip -n $PREFIX-lan addr add 10.214.0.1/24 dev br0
    ip -n $PREFIX-lan addr add 10.214.0.2/24 dev br0
    start lan backend-8081 "$BACKEND" --bind 10.214.0.2 --name-peer 8081
    start lan backend-8082 "$BACKEND" --bind 10.214.0.2 --name-peer 8082
    for x in a b; do
        if [ $x = a ]; then host=11 peer=12 prio=150; else host=12 peer=11 prio=100; fi
        say "Instance $x at 10.214.0.$host: tcplb (--shutdown-delay 5s) and keepalived (priority $prio)"
        netns $x
        veth "lb$x" $x "lan$x" lan
        ip -n $PREFIX-lan link set "lan$x" master br0
        ip -n $PREFIX-$x addr add 10.214.0.$host/24 dev "lb$x"
        start $x tcplb-$x "$TCPLB" --listen 0.0.0.0:8080 --admin 127.0.0.1:9090 \
            --admin-socket "$WORK/$x.sock" -b 10.214.0.2:8081,10.214.0.2:8082 \
            --health-interval 1s --shutdown-delay 5s --drain-timeout 10s
        template keepalived.conf INTERFACE="lb$x" PRIORITY=$prio SELF=10.214.0.$host \
            PEER=10.214.0.$peer VIP=$vip/24 ADMIN=127.0.0.1:9090 >"$WORK/keepalived-$x.conf"
        start $x keepalived-$x keepalived --dont-fork --log-console --vrrp \
            --use-file "$WORK/keepalived-$x.conf" --pid "$WORK/ka-$x.pid" \
            --vrrp_pid "$WORK/ka-$x-vrrp.pid" --checkers_pid "$WORK/ka-$x-checkers.pid"
    done
    note "keepalived config of a: $WORK/keepalived-a.conf"
    vip_on() { ip -n "$PREFIX-$1" -4 -o addr show | grep -q " $vip/"; }
    say "Waiting for keepalived to elect a master (a has the higher priority)"
    wait_until 20 vip_on a || { echo "a never took the VIP; see $WORK" >&2; exit 1; }
    note "the VIP $vip is on a; /ready of a: $(ready_of a)"
    say "Five requests from the client to the VIP (the backend names the instance)"
    for _ in 1 2 3 4 5; do note "$(ip netns exec $PREFIX-lan curl -s -m 5 http://$vip:8080/)"; done

    say "SIGTERM to a's tcplb, while the client connects every 50 ms"
    (
        ok=0 failed=0 began=$(now_ms)
        for i in $(seq 1 120); do
            at=$(($(now_ms) - began))
            if out=$(ip netns exec $PREFIX-lan curl -s -m 5 http://$vip:8080/); then
                ok=$((ok + 1))
                [ $((i % 10)) -ne 0 ] || printf '   %5d ms  %s\n' "$at" "$out"
            else
                failed=$((failed + 1))
                printf '   %5d ms  FAILED\n' "$at"
            fi
            sleep 0.05
        done
        echo "   client: $ok requests served, $failed failed"
    ) &
    local client=$!
    PIDS+=("$client")
    sleep 0.5
    local t0
    t0=$(now_ms)
    kill -TERM "${PID_OF[tcplb-a]}"
    note "a's /ready now: $(ready_of a)"
    if wait_until 10 vip_on b; then
        note "the VIP moved to b $(($(now_ms) - t0)) ms after the SIGTERM"
    fi
    wait "$client" || true
    note "a's log: $(grep -E 'still accepting|draining|finished' "$WORK/tcplb-a.log" | sed 's/^.*\] //' | tr '\n' '|')"
}

ecmp_demo() {
    local vip=10.215.0.100 i
    say "A router (BIRD, multipath routes, layer-4 hashing) with clients on its loopback"
    netns router
    ip netns exec $PREFIX-router sysctl -qw net.ipv4.ip_forward=1 net.ipv4.fib_multipath_hash_policy=1
    for i in 10 11 12 13; do ip -n $PREFIX-router addr add 10.215.101.$i/32 dev lo; done
    netns servers
    veth srv servers rsrv router
    ip -n $PREFIX-servers addr add 10.215.200.2/24 dev srv
    ip -n $PREFIX-servers route add default via 10.215.200.1
    ip -n $PREFIX-router addr add 10.215.200.1/24 dev rsrv
    for port in 8081 8082 8083 8084 8085; do
        start servers backend-$port "$BACKEND" --bind 10.215.200.2 --name-peer $port
    done
    local neighbors=""
    for i in 1 2 3; do
        say "Instance $i at 10.215.$i.2: tcplb on the VIP (maglev), BIRD, ready-to-bird.sh"
        netns i$i
        veth lb$i i$i r$i router
        ip -n $PREFIX-i$i addr add 10.215.$i.2/24 dev lb$i
        ip -n $PREFIX-i$i addr add $vip/32 dev lo
        ip -n $PREFIX-i$i route add default via 10.215.$i.1
        ip -n $PREFIX-router addr add 10.215.$i.1/24 dev r$i
        start i$i tcplb-$i "$TCPLB" --listen $vip:8080 --strategy maglev \
            -b 10.215.200.2:8081,10.215.200.2:8082,10.215.200.2:8083,10.215.200.2:8084,10.215.200.2:8085 \
            --admin 127.0.0.1:9090 --admin-socket "$WORK/i$i.sock" --health-interval 1s \
            --shutdown-delay 5s --drain-timeout 10s
        template bird-instance.conf ROUTER_ID=10.215.$i.2 LOCAL=10.215.$i.2 LOCAL_AS=6500$i \
            NEIGHBOR=10.215.$i.1 ROUTER_AS=65000 VIP=$vip/32 >"$WORK/bird-i$i.conf"
        start i$i bird-$i bird -f -c "$WORK/bird-i$i.conf" -s "$WORK/bird-i$i.ctl" -P "$WORK/bird-i$i.pid"
        start i$i ready-to-bird-$i sh contrib/fleet/ready-to-bird.sh \
            http://127.0.0.1:9090/ready "$WORK/bird-i$i.ctl" 0.2
        neighbors+="protocol bgp tcplb$i from tcplb { neighbor 10.215.$i.2 as 6500$i; }\n"
    done
    template bird-router.conf ROUTER_ID=10.215.200.1 ROUTER_AS=65000 NEIGHBORS="$neighbors" \
        >"$WORK/bird-router.conf"
    start router bird-router bird -f -c "$WORK/bird-router.conf" -s "$WORK/bird-router.ctl" \
        -P "$WORK/bird-router.pid"
    note "BIRD configs: $WORK/bird-router.conf, $WORK/bird-i1.conf"
    route() { ip -n $PREFIX-router route show $vip/32 | sed 's/^/   /'; }
    hops() { [ "$(ip -n $PREFIX-router route show $vip/32 | grep -c nexthop)" -eq "$1" ]; }
    say "Waiting for the three BGP sessions and announcements"
    wait_until 30 hops 3 || { echo "no multipath route; see $WORK" >&2; exit 1; }
    route
    # Three flows from each of four clients, from ports $1+1..$1+3 (new
    # ports each round: curl cannot take a port its last connection left
    # in TIME_WAIT).
    flows() {
        local ip port
        for ip in 10 11 12 13; do
            for port in $(($1 + 1)) $(($1 + 2)) $(($1 + 3)); do
                printf '   client 10.215.101.%s:%s  ->  %s\n' $ip $port \
                    "$(ip netns exec $PREFIX-router curl -sS -m 5 --interface 10.215.101.$ip \
                        --local-port $port http://$vip:8080/ 2>&1)"
            done
        done
    }
    say "Twelve flows from four clients: each client on one backend, whichever instance"
    flows 40000
    say "tcplb ctl ready off on instance 2: /ready turns 503, BIRD withdraws"
    "$TCPLB" ctl --admin "unix:$WORK/i1.sock" --admin "unix:$WORK/i2.sock" \
        --admin "unix:$WORK/i3.sock" ready
    "$TCPLB" ctl --admin "unix:$WORK/i2.sock" ready off
    wait_until 10 hops 2 && route
    say "Twelve new flows: none reaches instance 2, every client still reaches its backend"
    flows 40010
    "$TCPLB" ctl --admin "unix:$WORK/i2.sock" ready on
    wait_until 10 hops 3 && note "instance 2 is back in the route"
    say "SIGTERM to instance 3: withdrawn within its shutdown delay, then it drains"
    kill -TERM "${PID_OF[tcplb-3]}"
    wait_until 10 hops 2 && route
    sleep 6
    note "instance 3's log: $(grep -E 'still accepting|draining|finished' "$WORK/tcplb-3.log" | sed 's/^.*\] //' | tr '\n' '|')"
}

"${mode}_demo"

say "Try it yourself; press Enter to stop everything and clean up"
note "namespaces: ${NAMESPACES[*]}"
note "e.g.  ip netns exec ${NAMESPACES[0]} curl http://$( [ "$mode" = ecmp ] && echo 10.215.0.100 || echo 10.214.0.100 ):8080/"
note "      $TCPLB ctl --admin unix:$WORK/$( [ "$mode" = ecmp ] && echo i1 || echo b ).sock ready off"
note "logs: $WORK"
read -r _ || true
