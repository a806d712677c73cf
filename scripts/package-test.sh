#!/usr/bin/env bash
# Builds the .deb with cargo-deb, installs it on this machine with dpkg,
# checks what it installed (binary, units, man page, completions, docs, the
# example configs passing `tcplb check`, the units passing systemd-analyze
# when present),
# and removes the package again. Slow (a release build): not part of CI.
#
#   scripts/package-test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo deb --version >/dev/null 2>&1; then
    echo "== installing cargo-deb from crates.io"
    cargo install cargo-deb --locked
fi

echo "== building the package"
deb=$(cargo deb 2>&1 | tee /dev/stderr | grep -E '\.deb$' | tail -1)
test -f "$deb" || { echo "no .deb built" >&2; exit 1; }
echo "== built $deb"
dpkg-deb --info "$deb"
dpkg-deb --contents "$deb"

if dpkg -s tcplb >/dev/null 2>&1; then
    echo "tcplb is already installed; not touching it" >&2
    exit 1
fi
workdir=$(mktemp -d)
cleanup() {
    echo "== removing the package"
    dpkg --purge tcplb >/dev/null || true
    rm -rf "$workdir"
}
trap cleanup EXIT

echo "== installing"
dpkg -i "$deb"
test -x /usr/bin/tcplb
test -f /lib/systemd/system/tcplb.service
test -f /lib/systemd/system/tcplb.socket
test -f /usr/share/man/man1/tcplb.1.gz   # cargo-deb compresses man pages
man -w tcplb >/dev/null
test -f /usr/share/bash-completion/completions/tcplb
test -f /usr/share/zsh/vendor-completions/_tcplb
test -f /usr/share/fish/vendor_completions.d/tcplb.fish
test -f /usr/share/doc/tcplb/docs/configuration.md
ls /usr/share/doc/tcplb/examples/*.toml >/dev/null
grep -q '^/etc/tcplb/tcplb.toml$' /var/lib/dpkg/info/tcplb.conffiles
/usr/bin/tcplb --version
/usr/bin/tcplb --help >/dev/null

echo "== tcplb check on the shipped configuration and examples"
/usr/bin/tcplb check --config /etc/tcplb/tcplb.toml
# Relative paths in the examples (a state file, an admin socket, the TLS
# quick start's tcplb.pem and tcplb.key, made as the README makes them)
# land in a directory of this script's own.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost \
    -keyout "$workdir/tcplb.key" -out "$workdir/tcplb.pem" 2>/dev/null
for example in /usr/share/doc/tcplb/examples/*.toml; do
    (cd "$workdir" && /usr/bin/tcplb check --config "$example" >/dev/null)
done

if command -v systemd-analyze >/dev/null; then
    echo "== systemd-analyze verify"
    systemd-analyze verify /lib/systemd/system/tcplb.service /lib/systemd/system/tcplb.socket
fi
echo "== package test passed"
