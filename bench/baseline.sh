#!/usr/bin/env bash
# Build the gateway of an earlier commit, for A/B runs in the same session as the
# current one, and print the path of its binary. Usage: bench/baseline.sh [REV]
# REV defaults to the first line of bench/baseline.rev (the commit before the work
# being measured). The binary is cached in target/baseline/patchbay-<sha>.
#
# It is built in a temporary git worktree with this tree's target directory: the
# dependencies are shared; the binary is copied aside and the worktree's workspace
# crates are cleaned out again (they would otherwise pass for the current tree's).
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${1:-$(head -n1 bench/baseline.rev)}
sha=$(git rev-parse --short=12 "$rev^{commit}")
out="target/baseline/patchbay-$sha"
if [ ! -x "$out" ]; then
    tree=$(mktemp -d)
    git worktree add --detach -q "$tree" "$sha"
    trap 'git worktree remove --force "$tree"' EXIT
    # A commit with patched registry crates prepares them in its own tree.
    (cd "$tree" && { [ ! -x scripts/patch-crates ] || scripts/patch-crates; } &&
        CARGO_TARGET_DIR="$OLDPWD/target" cargo build --release --locked -q --bin patchbay -p patchbay-gateway)
    mkdir -p target/baseline
    cp target/release/patchbay "$out.tmp"
    mv "$out.tmp" "$out"
    # The workspace crates of the two trees share names and metadata hashes in the
    # release directory (cargo hashes path packages by their path inside the workspace),
    # so the baseline's build outputs would pass for the current tree's: remove them, and
    # whoever runs next rebuilds the current workspace crates (not the dependencies).
    # The same holds for the registry crates patched into .patched/ (path packages too,
    # with the other tree's patches).
    cargo clean --release -q -p patchbay-config -p patchbay-conference -p patchbay-api \
        -p patchbay-sip -p patchbay-gateway -p patchbay-tls -p str0m
    rm -f target/release/patchbay
fi
echo "$PWD/$out"
