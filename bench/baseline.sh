#!/usr/bin/env bash
# Build the gateway of an earlier commit, for A/B runs in the same session as the
# current one, and print the path of its binary. Usage: bench/baseline.sh [REV]
# REV defaults to the first line of bench/baseline.rev (the commit before the work
# being measured). The binary is cached in target/baseline/patchbay-<sha>.
#
# It is built in a temporary git worktree with this tree's target directory: the
# dependencies are shared, the workspace crates of the two trees do not collide (their
# paths differ), and only the uplifted binary is copied aside.
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${1:-$(head -n1 bench/baseline.rev)}
sha=$(git rev-parse --short=12 "$rev^{commit}")
out="target/baseline/patchbay-$sha"
if [ ! -x "$out" ]; then
    tree=$(mktemp -d)
    git worktree add --detach -q "$tree" "$sha"
    trap 'git worktree remove --force "$tree"' EXIT
    (cd "$tree" && CARGO_TARGET_DIR="$OLDPWD/target" cargo build --release --locked -q --bin patchbay -p patchbay-gateway)
    mkdir -p target/baseline
    cp target/release/patchbay "$out.tmp"
    mv "$out.tmp" "$out"
    # The current tree's binary is rebuilt (relinked) by whoever runs it next.
    rm -f target/release/patchbay
fi
echo "$PWD/$out"
