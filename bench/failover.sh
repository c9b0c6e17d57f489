#!/usr/bin/env bash
# Failover benchmark: kill -9 of the node that runs a session under a real browser
# (tests/tests/cluster_failover.rs: the unmodified SDK in headless Chromium, sipp
# callers, three nodes on a private PostgreSQL), with the default lease (10 s) and the
# test suite's (3 s). Prints, per run, the time from the kill to the takeover, to the
# new owner's media heard in the browser, and to the browser's audio reaching the new
# owner, each also as a ratio of the lease (the floor: nothing may take a session
# before its lease runs out).
# Usage: bench/failover.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
echo "machine: $(nproc) cores, $(uname -m), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
pgdir=$(mktemp -d "${TMPDIR:-/tmp}/patchbay-pg.XXXXXX")
trap 'scripts/postgres stop "$pgdir" || true; rm -rf "$pgdir"' EXIT
PATCHBAY_TEST_POSTGRES=$(scripts/postgres start "$pgdir")
export PATCHBAY_TEST_POSTGRES
scripts/patch-crates
cargo build --locked -q -p patchbay-gateway -p patchbay-tests --tests
for lease in 10 3; do
    for _ in $(seq "$runs"); do
        PATCHBAY_FAILOVER_LEASE="${lease}s" cargo test --locked -q -p patchbay-tests --test cluster_failover \
            a_browser_gets_its_media_back -- --nocapture 2>&1 |
            grep -o 'failover (lease.*' |
            python3 -c "
import re, sys
line = sys.stdin.read().strip()
n = [int(x) for x in re.findall(r'(\d+) ms', line)]
lease = $lease * 1000
print(f'lease {lease} ms: takeover {n[0]} ms ({n[0]/lease:.2f}x lease), browser hears the new owner {n[1]} ms ({n[1]/lease:.2f}x), browser audio at the new owner {n[2]} ms ({n[2]/lease:.2f}x)')
"
    done
done
