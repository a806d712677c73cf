#!/usr/bin/env bash
# Writes the files generated from the flags' definitions: the man page
# (contrib/tcplb.1) and the shell completions (contrib/completions/). Run it
# after changing a flag, its help or its default; tests/generated.rs fails
# while a checked-in file differs from what the binary prints.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --bin tcplb
bin="${CARGO_TARGET_DIR:-target}/debug/tcplb"
mkdir -p contrib/completions
"$bin" man > contrib/tcplb.1
"$bin" completions bash > contrib/completions/tcplb.bash
"$bin" completions zsh > contrib/completions/_tcplb
"$bin" completions fish > contrib/completions/tcplb.fish
echo "wrote contrib/tcplb.1 and contrib/completions/{tcplb.bash,_tcplb,tcplb.fish}"
