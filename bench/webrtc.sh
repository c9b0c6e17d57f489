#!/usr/bin/env bash
# WebRTC SFU benchmark: sessions of 20 str0m clients, all subscribed to all, each
# publishing Opus, against the release binary. Usage: bench/webrtc.sh [SESSIONS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
sessions=${1:-1}
seconds=${2:-10}
cargo build --release --locked -q --bin patchbay -p patchbay-gateway
cargo build --release --locked -q --bin webrtc-load -p patchbay-bench
data=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
rtc=$(python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
PATCHBAY_LOG=warn ./target/release/patchbay --http-listen "127.0.0.1:$port" --data-dir "$data" \
  --webrtc-listen "127.0.0.1:$rtc" --sip-listen 127.0.0.1:0 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.05; done
echo "machine: $(nproc) cores, $(uname -m), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
./target/release/webrtc-load --base "http://127.0.0.1:$port" sfu --sessions "$sessions" --pid "$pid" --seconds "$seconds"
