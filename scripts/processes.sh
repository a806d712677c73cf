# Sourced by the benchmark scripts (bench-peers.sh, profile-peers.sh,
# hold-100k.sh, bench-move.sh): a temp folder and the background processes a script
# starts, all stopped by PID and the folder removed when it exits, however
# it exits. `$1` is the temp folder's name prefix. A script that has more
# to undo defines `cleanup_more`.
TMP=$(mktemp -d "/tmp/$1.XXXXXX")
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if declare -F cleanup_more >/dev/null; then cleanup_more; fi
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Starts a command in the background, its output appended to $TMP/log
# (spawn_to: to $TMP/NAME), and records its PID in $LAST_PID.
spawn() { spawn_to log "$@"; }
spawn_to() { # name command...
    local log=$1
    shift
    "$@" >>"$TMP/$log" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

stop() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# Exits unless nothing listens on ports $1 to $2 (a random range was
# taken: the next run picks another).
ports_free() {
    local p
    for p in $(seq "$1" "$2"); do
        [ -z "$(ss -Hltn "sport = :$p")" ] || { echo "port $p is busy; run again" >&2; exit 1; }
    done
}

# Waits up to 5 s for a listener on 127.0.0.1's port $1, else exits.
wait_listening() {
    for _ in $(seq 100); do
        [ -n "$(ss -Hltn "sport = :$1")" ] && return 0
        sleep 0.05
    done
    echo "nothing listens on port $1; log:" >&2
    tail -20 "$TMP/log" >&2 2>/dev/null || true
    exit 1
}

# The top of an nginx configuration run in the foreground from folder $1:
# the stream module (when Debian ships it apart), workers = cores, its pid
# and error log in $1.
nginx_head() {
    [ ! -e /usr/lib/nginx/modules/ngx_stream_module.so ] \
        || echo "load_module /usr/lib/nginx/modules/ngx_stream_module.so;"
    cat <<EOF2
worker_processes $(nproc);
worker_rlimit_nofile 20000;
daemon off;
pid $1/nginx.pid;
error_log $1/nginx-error.log error;
events { worker_connections 20000; }
EOF2
}
