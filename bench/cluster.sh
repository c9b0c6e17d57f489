#!/usr/bin/env bash
# Cluster benchmark: two release nodes on a private PostgreSQL; the signaling round
# trip of a device on the session's owner vs one relayed through the other node
# (bench/src/ws_rtt.rs), in one run.
# Usage: bench/cluster.sh [PINGS]
set -euo pipefail
cd "$(dirname "$0")/.."
pings=${1:-5000}
scripts/patch-crates
cargo build --release --locked -q --bin patchbay -p patchbay-gateway
cargo build --release --locked -q --bin ws-rtt -p patchbay-bench
echo "machine: $(nproc) cores, $(uname -m), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
pids=() pgdir=$(mktemp -d "${TMPDIR:-/tmp}/patchbay-pg.XXXXXX") data=$(mktemp -d)
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    scripts/postgres stop "$pgdir" || true
    rm -rf "$pgdir" "$data"
}
trap cleanup EXIT
url=$(scripts/postgres start "$pgdir")
psql "$url/postgres" -qc "CREATE DATABASE bench"
free() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ports=()
for n in 1 2; do
    port=$(free)
    ports+=("$port")
    PATCHBAY_LOG=warn ./target/release/patchbay --http-listen "127.0.0.1:$port" --data-dir "$data/n$n" \
        --sip-listen 127.0.0.1:0 --webrtc-listen "127.0.0.1:$(free)" \
        --database-url "$url/bench" --node-id "n$n" &
    pids+=($!)
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.05; done
done
./target/release/ws-rtt --base "http://127.0.0.1:${ports[0]}" --relay "http://127.0.0.1:${ports[1]}" --pings "$pings"
