#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine: installs the Debian
# packages the tests drive (only those missing, listed in
# scripts/test-packages.txt), then runs `cargo test` with any arguments
# given here (`scripts/test.sh --test tls_terminate`). .ci/run calls this.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
while read -r command package; do
    case "$command" in '' | '#'*) continue ;; esac
    # Debian keeps PostgreSQL's server programs off the PATH, by version.
    if ! command -v "$command" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$command" ] \
        && ! compgen -G "/usr/lib/postgresql/*/bin/$command" >/dev/null; then
        case " ${missing[*]-} " in *" $package "*) ;; *) missing+=("$package") ;; esac
    fi
done < scripts/test-packages.txt

if [ ${#missing[@]} -gt 0 ]; then
    echo "scripts/test.sh: installing ${missing[*]}" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

exec cargo test "$@"
