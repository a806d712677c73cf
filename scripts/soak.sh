#!/usr/bin/env bash
# Soak test for tcplb: a bounded mixed load (long checked transfers and
# many short connections) through a release build, against three echo
# backends, while one backend is restarted every few seconds.
#
# Usage: scripts/soak.sh [--duration SECONDS] [--restart-every SECONDS]
#                        [--upgrade-every SECONDS]
#
# --upgrade-every N (default 0: off) also upgrades tcplb with SIGUSR2 every
# N seconds (the established connections move to the new process, issue
# 26), follows the serving process through its pid file, fails if an old
# process is still there 5 s after its successor took over, and prints the
# serving process's descriptors and RSS after each upgrade.
#
# Prints connections tried / succeeded / answered 502/503 / cut by a backend
# restart / broken, bytes sent / received / verified, and tcplb's descriptor
# count and RSS before and after. Exits non-zero if any stream was broken
# (cut when no backend was restarting, or hung) or corrupted, or if tcplb's
# descriptors did not return to their idle baseline. Kernel pipes are
# counted apart: each worker keeps up to 16 empty splice pipes for its next
# bulk direction (two descriptors each, the pool HAProxy also keeps), so
# pipes may grow up to that bound; every other descriptor must return.
#
# Everything runs on 127.0.0.1 and everything started here is stopped by PID
# on exit, interrupt or termination.

set -euo pipefail

DURATION=60
RESTART_EVERY=4
UPGRADE_EVERY=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --duration) DURATION="$2"; shift 2 ;;
        --restart-every) RESTART_EVERY="$2"; shift 2 ;;
        --upgrade-every) UPGRADE_EVERY="$2"; shift 2 ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
[[ "$DURATION" =~ ^[0-9]+$ && "$DURATION" -ge 5 && "$DURATION" -le 3600 ]] \
    || { echo "--duration must be 5-3600 seconds" >&2; exit 2; }
[[ "$UPGRADE_EVERY" =~ ^[0-9]+$ ]] \
    || { echo "--upgrade-every must be a number of seconds (0: off)" >&2; exit 2; }

cd "$(dirname "$0")/.."
WORK="$(mktemp -d /tmp/tcplb-soak.XXXXXX)"
PIDS_DIR="$WORK/pids"
mkdir -p "$PIDS_DIR"

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    # Stop the restart loop first so it cannot start a new backend.
    for file in "$PIDS_DIR"/restarter "$PIDS_DIR"/upgrader "$PIDS_DIR"/loadgen "$PIDS_DIR"/tcplb* "$PIDS_DIR"/backend.*; do
        [[ -f "$file" ]] || continue
        pid="$(cat "$file")"
        kill "$pid" 2>/dev/null || true
    done
    for file in "$PIDS_DIR"/*; do
        [[ -f "$file" ]] || continue
        pid="$(cat "$file")"
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "building release binaries..."
cargo build --release --quiet --bin tcplb --bin backend
TCPLB=target/release/tcplb
BACKEND=target/release/backend

# Free ports on 127.0.0.1, chosen by the kernel.
read -r -a PORTS <<<"$(python3 -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks: s.close()
')"

start_backend() { # index
    local i="$1"
    "$BACKEND" --echo "${PORTS[$i]}" 2>>"$WORK/backend.$i.log" &
    echo $! >"$PIDS_DIR/backend.$i"
}

wait_port() { # port
    for _ in $(seq 1 100); do
        if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $1), 0.2).close()" 2>/dev/null; then
            return 0
        fi
        sleep 0.05
    done
    echo "nothing listening on 127.0.0.1:$1" >&2
    return 1
}

for i in 0 1 2; do start_backend "$i"; done
for i in 0 1 2; do wait_port "${PORTS[$i]}"; done

BACKENDS="127.0.0.1:${PORTS[0]},127.0.0.1:${PORTS[1]},127.0.0.1:${PORTS[2]}"
"$TCPLB" --listen 127.0.0.1:0 --backend "$BACKENDS" --health-interval 200ms \
    --pid-file "$WORK/tcplb.pid" 2>"$WORK/tcplb.log" &
LB_PID=$!
echo "$LB_PID" >"$PIDS_DIR/tcplb"
LB_ADDR=""
for _ in $(seq 1 100); do
    LB_ADDR="$(sed -n 's/.*listening on \([0-9.]*:[0-9]*\) ->.*/\1/p' "$WORK/tcplb.log" | head -1)"
    [[ -n "$LB_ADDR" ]] && break
    kill -0 "$LB_PID" 2>/dev/null || { cat "$WORK/tcplb.log" >&2; exit 1; }
    sleep 0.05
done
[[ -n "$LB_ADDR" ]] || { echo "tcplb did not start" >&2; cat "$WORK/tcplb.log" >&2; exit 1; }
echo "tcplb (pid $LB_PID) on $LB_ADDR -> $BACKENDS; soaking for ${DURATION}s"

# The serving process: the first one, then each upgrade's successor.
serving() { cat "$WORK/tcplb.pid" 2>/dev/null || echo "$LB_PID"; }
fd_count() { ls "/proc/$(serving)/fd" 2>/dev/null | wc -l; }
# Descriptors other than kernel pipes, and kernel pipes (the splice pool).
fd_kinds() { ls -l "/proc/$(serving)/fd" 2>/dev/null | awk 'NR > 1 { if ($NF ~ /^pipe:/) p++; else o++ } END { print o + 0, p + 0 }'; }
# The splice pool's bound: 16 spare pipes per worker (tcplb's default
# worker count is the CPU count), two descriptors each.
PIPES_MAX=$((16 * 2 * $(nproc)))
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$(serving)/status" 2>/dev/null || echo 0; }
gone() { ! kill -0 "$1" 2>/dev/null || [[ "$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null)" == Z ]]; }

sleep 1
read -r OTHER_BEFORE PIPES_BEFORE <<<"$(fd_kinds)"
FD_BEFORE=$((OTHER_BEFORE + PIPES_BEFORE))
RSS_BEFORE="$(rss_kib)"

# Restart one backend at a time, in turn, logging when each was down.
(
    i=0
    while [[ ! -e "$WORK/stop" ]]; do
        sleep "$RESTART_EVERY"
        [[ -e "$WORK/stop" ]] && break
        pid="$(cat "$PIDS_DIR/backend.$i")"
        echo "down $(date +%s.%N) $i" >>"$WORK/restarts"
        kill "$pid" 2>/dev/null || true
        while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
        sleep 0.5
        start_backend "$i"
        echo "up $(date +%s.%N) $i" >>"$WORK/restarts"
        i=$(( (i + 1) % 3 ))
    done
) &
echo $! >"$PIDS_DIR/restarter"

# Upgrade every UPGRADE_EVERY seconds; one line per upgrade in
# $WORK/upgrades: old pid, new pid, seconds until the old one exited (or
# "stayed"), and the serving process's descriptors and RSS (KiB) then.
if [[ "$UPGRADE_EVERY" -gt 0 ]]; then
    (
        n=0
        while [[ ! -e "$WORK/stop" ]]; do
            sleep "$UPGRADE_EVERY"
            [[ -e "$WORK/stop" ]] && break
            old="$(serving)"
            kill -USR2 "$old" 2>/dev/null || break
            for _ in $(seq 1 300); do
                [[ "$(serving)" != "$old" ]] && break
                sleep 0.1
            done
            new="$(serving)"
            [[ "$new" != "$old" ]] || { echo "$old - failed" >>"$WORK/upgrades"; continue; }
            n=$((n + 1))
            echo "$new" >"$PIDS_DIR/tcplb.$n"
            began=$(date +%s.%N)
            exited=stayed
            for _ in $(seq 1 50); do
                gone "$old" && { exited=$(awk -v b="$began" -v e="$(date +%s.%N)" 'BEGIN { printf "%.2f", e - b }'); break; }
                sleep 0.1
            done
            echo "$old $new $exited $(fd_count) $(rss_kib)" >>"$WORK/upgrades"
        done
    ) &
    echo $! >"$PIDS_DIR/upgrader"
fi

cat >"$WORK/loadgen.py" <<'PY'
"""Mixed load through an echo path; every byte is checked."""
import random, socket, sys, threading, time

host, port = sys.argv[1].rsplit(":", 1)
addr = (host, int(port))
duration = float(sys.argv[2])
restarts_file = sys.argv[3]
deadline = time.monotonic() + duration
STALL = 15.0  # a stream with no progress for this long is hung (broken)

lock = threading.Lock()
stats = dict(tried=0, ok=0, f502=0, f503=0, cut=0, corrupted=0, hung=0, noconnect=0,
             sent=0, received=0, verified=0)
cuts = []  # wall-clock times of streams that ended early

def add(**kw):
    with lock:
        for k, v in kw.items():
            stats[k] += v

def classify_failure(got):
    if got.startswith(b"HTTP/1.1 502"):
        return "f502"
    if got.startswith(b"HTTP/1.1 503"):
        return "f503"
    return None

def one_stream(payload):
    """Sends payload while reading the echo; returns (outcome, received)."""
    try:
        s = socket.create_connection(addr, timeout=STALL)
    except OSError:
        add(tried=1, noconnect=1)  # tcplb itself did not take the connection
        return
    s.settimeout(STALL)
    send_error = []
    def send():
        try:
            view = memoryview(payload)
            while view:
                n = s.send(view[:256 * 1024])
                add(sent=n)
                view = view[n:]
            s.shutdown(socket.SHUT_WR)
        except OSError as e:
            send_error.append(e)
    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    got = bytearray()
    outcome = None
    try:
        while True:
            chunk = s.recv(256 * 1024)
            if not chunk:
                break
            got += chunk
            add(received=len(chunk))
            if len(got) > len(payload):
                break
    except socket.timeout:
        outcome = "hung"
    except OSError:
        pass  # reset: judged below by what arrived
    s.close()
    sender.join(STALL)
    if outcome is None:
        failure = classify_failure(bytes(got[:16]))
        if got == payload:
            outcome = "ok"
            add(verified=len(got))
        elif failure and not payload.startswith(b"HTTP/1.1 5"):
            outcome = failure
        elif payload.startswith(bytes(got)):
            outcome = "cut"
            add(verified=len(got))
            with lock:
                cuts.append(time.time())
        else:
            outcome = "corrupted"
    add(**{outcome: 1, "tried": 1})

def long_worker(seed):
    rng = random.Random(seed)
    while time.monotonic() < deadline:
        size = rng.randrange(1 << 20, 16 << 20)
        one_stream(rng.randbytes(size))

def short_worker(seed):
    rng = random.Random(seed)
    while time.monotonic() < deadline:
        one_stream(rng.randbytes(rng.randrange(1, 4096)))
        time.sleep(0.02)  # bounded rate: spares ephemeral ports and CPU

threads = [threading.Thread(target=long_worker, args=(i,)) for i in range(2)]
threads += [threading.Thread(target=short_worker, args=(100 + i,)) for i in range(3)]
for t in threads:
    t.start()
for t in threads:
    t.join()

# A cut within a second of a backend going down is that restart's doing.
downs = []
try:
    for line in open(restarts_file):
        kind, when, _ = line.split()
        if kind == "down":
            downs.append(float(when))
except FileNotFoundError:
    pass
explained = sum(1 for c in cuts if any(d - 0.5 <= c <= d + 2.0 for d in downs))
broken = len(cuts) - explained + stats["hung"] + stats["noconnect"]

print(f"connections tried        {stats['tried']}")
print(f"  succeeded              {stats['ok']}")
print(f"  answered 502 / 503     {stats['f502']} / {stats['f503']}")
print(f"  cut by backend restart {explained}")
print(f"  broken (cut otherwise) {len(cuts) - explained}")
print(f"  hung                   {stats['hung']}")
print(f"  not accepted by tcplb  {stats['noconnect']}")
print(f"  corrupted              {stats['corrupted']}")
print(f"backend restarts         {len(downs)}")
print(f"bytes sent               {stats['sent']}")
print(f"bytes received           {stats['received']}")
print(f"bytes verified           {stats['verified']}")
sys.exit(1 if broken or stats["corrupted"] or stats["ok"] == 0 else 0)
PY

set +e
python3 "$WORK/loadgen.py" "$LB_ADDR" "$DURATION" "$WORK/restarts" &
echo $! >"$PIDS_DIR/loadgen"
wait "$(cat "$PIDS_DIR/loadgen")"
LOAD_STATUS=$?
set -e
rm -f "$PIDS_DIR/loadgen"

# Stop restarting and make sure every backend is up before judging fds.
touch "$WORK/stop"
wait "$(cat "$PIDS_DIR/restarter")" 2>/dev/null || true
rm -f "$PIDS_DIR/restarter"
if [[ -f "$PIDS_DIR/upgrader" ]]; then
    wait "$(cat "$PIDS_DIR/upgrader")" 2>/dev/null || true
    rm -f "$PIDS_DIR/upgrader"
fi
for i in 0 1 2; do
    kill -0 "$(cat "$PIDS_DIR/backend.$i")" 2>/dev/null || start_backend "$i"
done

for _ in $(seq 1 100); do
    read -r OTHER_AFTER PIPES_AFTER <<<"$(fd_kinds)"
    [[ "$OTHER_AFTER" -le "$OTHER_BEFORE" ]] && break
    sleep 0.1
done
FD_AFTER=$((OTHER_AFTER + PIPES_AFTER))
RSS_AFTER="$(rss_kib)"
ALIVE=yes
kill -0 "$(serving)" 2>/dev/null || ALIVE=no

echo "tcplb alive              $ALIVE"
echo "tcplb fds before/after   $FD_BEFORE / $FD_AFTER ($OTHER_BEFORE / $OTHER_AFTER besides kernel pipes; pipes $PIPES_BEFORE / $PIPES_AFTER, the splice pool's bound $PIPES_MAX)"
echo "tcplb RSS before/after   ${RSS_BEFORE} KiB / ${RSS_AFTER} KiB"
LINGERED=0
if [[ "$UPGRADE_EVERY" -gt 0 ]]; then
    echo "upgrades                 $(grep -vc ' failed$' "$WORK/upgrades" 2>/dev/null || echo 0) (serving process after each: old pid, new pid, old gone after s, fds, RSS KiB)"
    sed 's/^/  /' "$WORK/upgrades" 2>/dev/null || true
    echo "moved per upgrade        $(grep -o 'upgrade: moved [0-9]*' "$WORK/tcplb.log" | awk '{ printf "%s ", $3 }')"
    LINGERED=$(grep -c ' stayed \| failed$' "$WORK/upgrades" 2>/dev/null || true)
    # Every old process says what moved, however soon it exits.
    UPGRADED=$(grep -vc ' failed$' "$WORK/upgrades" 2>/dev/null || true)
    MOVE_LINES=$(grep -c 'upgrade: moved [0-9]*' "$WORK/tcplb.log" 2>/dev/null || true)
    UNLOGGED=$(( ${UPGRADED:-0} - ${MOVE_LINES:-0} ))
fi
echo "tcplb log lines          $(wc -l <"$WORK/tcplb.log") ($(grep -c 'is DOWN' "$WORK/tcplb.log" || true) DOWN, $(grep -c 'is UP' "$WORK/tcplb.log" || true) UP)"

FAILED=0
[[ "$LOAD_STATUS" -eq 0 ]] || { echo "FAIL: broken, hung or corrupted streams"; FAILED=1; }
if [[ "$OTHER_AFTER" -gt "$OTHER_BEFORE" || "$PIPES_AFTER" -gt $((PIPES_BEFORE + PIPES_MAX)) ]]; then
    echo "FAIL: descriptors leaked; the serving process $(serving) holds:"
    ls -l "/proc/$(serving)/fd" 2>/dev/null | awk 'NR > 1 { sub(/[0-9]+/, "", $NF); print $NF }' | sort | uniq -c
    ss -Htnp 2>/dev/null | grep "pid=$(serving)," | awk '{ print "  " $1, $4, $5 }' | head -20
    FAILED=1
fi
[[ "$ALIVE" == yes ]] || { echo "FAIL: tcplb died"; FAILED=1; }
[[ "${UNLOGGED:-0}" -eq 0 ]] || { echo "FAIL: $UNLOGGED upgrades wrote no move line"; FAILED=1; }
[[ "${LINGERED:-0}" -eq 0 ]] || { echo "FAIL: $LINGERED upgrades failed or left the old process running past 5 s"; FAILED=1; }
[[ "$FAILED" -eq 0 ]] && echo "PASS"
exit "$FAILED"
