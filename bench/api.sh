#!/usr/bin/env bash
# Control-API benchmark: durable participant creation + add-to-session against the
# release binary, driven over real HTTP by bench/src/api_load.rs.
# Usage: bench/api.sh [CONCURRENCY] [SECONDS] [sqlite|postgres|both]
#   sqlite (default): the embedded store on a fresh data directory;
#   postgres: a private PostgreSQL server (scripts/postgres) on a fresh directory;
#   both: SQLite then PostgreSQL in one run, and the ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
concurrency=${1:-64}
seconds=${2:-10}
stores=${3:-sqlite}
[ "$stores" = both ] && stores="sqlite postgres"
scripts/patch-crates
cargo build --release --locked -q --bin patchbay -p patchbay-gateway
cargo build --release --locked -q --bin api-load -p patchbay-bench
echo "machine: $(nproc) cores, $(uname -m), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
pid="" pgdir=""
cleanup() {
    [ -n "$pid" ] && { kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; }
    [ -n "$pgdir" ] && { scripts/postgres stop "$pgdir"; rm -rf "$pgdir"; }
    true
}
trap cleanup EXIT
for store in $stores; do
    data=$(mktemp -d)
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    extra=()
    if [ "$store" = postgres ]; then
        pgdir=$(mktemp -d "${TMPDIR:-/tmp}/patchbay-pg.XXXXXX")
        url=$(scripts/postgres start "$pgdir")
        psql "$url/postgres" -qc "CREATE DATABASE bench"
        extra=(--database-url "$url/bench")
    fi
    PATCHBAY_LOG=warn ./target/release/patchbay --http-listen "127.0.0.1:$port" --data-dir "$data" "${extra[@]}" &
    pid=$!
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.05; done
    echo "== store: $store"
    ./target/release/api-load --base "http://127.0.0.1:$port" --concurrency "$concurrency" --seconds "$seconds" \
        | tee "target/bench-api-$store.out"
    if [ "$store" = postgres ]; then
        echo "database: $(du -sh "$pgdir" | cut -f1) (the whole server)"
    else
        echo "database: $(du -sh "$data" | cut -f1)"
    fi
    kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
    pid=""
    rm -rf "$data"
    if [ -n "$pgdir" ]; then scripts/postgres stop "$pgdir"; rm -rf "$pgdir"; pgdir=""; fi
done
