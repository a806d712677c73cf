#!/usr/bin/env bash
# Fuzzes what tcplb parses from the network (fuzz/fuzz_targets/*) with
# cargo-fuzz and libFuzzer, each target for a bounded time.
#
#   scripts/fuzz.sh                  every target, 60 s each
#   scripts/fuzz.sh -t 300 proxy_parse
#
# Installs cargo-fuzz from crates.io if it is missing. libFuzzer needs the
# nightly-only `-Z` flags; on a stable toolchain RUSTC_BOOTSTRAP=1 lets the
# compiler accept them. A crash leaves its input in fuzz/artifacts/TARGET/
# and makes this script exit non-zero.
set -euo pipefail

usage() {
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
    echo "Options: -t, --time SECONDS   time per target (default 60)"
}

seconds=60
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        -t|--time) seconds="${2:?--time needs a number of seconds}"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        -*) echo "unknown option $1" >&2; usage >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done
case "$seconds" in
    ''|*[!0-9]*) echo "--time takes a whole number of seconds" >&2; exit 2 ;;
esac

cd "$(dirname "$0")/.."

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "installing cargo-fuzz from crates.io"
    cargo install cargo-fuzz --locked
fi
if ! rustc --version | grep -q nightly; then
    export RUSTC_BOOTSTRAP=1
fi

if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
fi

status=0
for target in "${targets[@]}"; do
    corpus="fuzz/corpus/$target"
    mkdir -p "$corpus"
    dirs=("$corpus")
    if [ -d "fuzz/seeds/$target" ]; then
        dirs+=("fuzz/seeds/$target")
    fi
    echo "== $target: ${seconds}s"
    # The first directory collects new inputs; seeds are only read.
    if ! cargo fuzz run "$target" "${dirs[@]}" -- \
        -max_total_time="$seconds" -print_final_stats=1; then
        echo "== $target: FAILED (see fuzz/artifacts/$target/)" >&2
        status=1
    fi
done
exit $status
