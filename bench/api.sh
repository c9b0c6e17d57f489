#!/usr/bin/env bash
# Control-API benchmark: durable participant creation + add-to-session against
# the release binary with the SQLite store (fresh data dir), driven over real
# HTTP by bench/src/api_load.rs. Usage: bench/api.sh [CONCURRENCY] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
concurrency=${1:-64}
seconds=${2:-10}
cargo build --release --locked -q --bin patchbay -p patchbay-gateway
cargo build --release --locked -q --bin api-load -p patchbay-bench
data=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
PATCHBAY_LOG=warn ./target/release/patchbay --http-listen "127.0.0.1:$port" --data-dir "$data" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.05; done
echo "machine: $(nproc) cores, $(uname -m), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
./target/release/api-load --base "http://127.0.0.1:$port" --concurrency "$concurrency" --seconds "$seconds"
echo "database: $(du -sh "$data" | cut -f1)"
