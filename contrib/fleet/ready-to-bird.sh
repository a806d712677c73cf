#!/bin/sh
# Announces the VIP while tcplb is ready: every INTERVAL seconds asks
# tcplb's /ready, and enables BIRD's `vip` static protocol on a 200 (BIRD
# then announces the route over BGP) or disables it otherwise (BIRD
# withdraws it at once). Told every round, so a restarted BIRD is put
# right too. Run one beside each tcplb and its BIRD:
#   ready-to-bird.sh http://127.0.0.1:9090/ready /run/bird/bird.ctl [INTERVAL]
# tests/fleet_netns.rs and scripts/fleet-demo.sh run this script.
set -u
ready_url=$1
bird_socket=$2
interval=${3:-0.5}
last=""
while :; do
    if curl -fsS -o /dev/null -m 1 "$ready_url" 2>/dev/null; then
        want=enable
    else
        want=disable
    fi
    if birdc -s "$bird_socket" "$want" vip >/dev/null && [ "$want" != "$last" ]; then
        echo "ready-to-bird: $want vip"
        last=$want
    fi
    sleep "$interval"
done
