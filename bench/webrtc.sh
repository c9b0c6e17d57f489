#!/usr/bin/env bash
# WebRTC SFU benchmark: sessions of 20 str0m clients, all subscribed to all, each
# publishing Opus, against the release binary, then the same load against the
# baseline binary (bench/baseline.sh: the commit in bench/baseline.rev), so every
# figure is also an A/B ratio measured in the same run.
# Usage: bench/webrtc.sh [SESSIONS] [SECONDS] [BASELINE_REV|none] [v3|v2|v2-vs-v3]
# The fourth argument picks the clients' device protocol (default v3); v2-vs-v3 runs
# the current binary with v3 clients, then with v2 clients (a connection per stream),
# and prints what a v2 device costs per forwarded packet against a v3 one.
set -euo pipefail
cd "$(dirname "$0")/.."
sessions=${1:-1}
seconds=${2:-10}
baseline_rev=${3:-$(head -n1 bench/baseline.rev)}
protocol=${4:-v3}
baseline=""
if [ "$baseline_rev" != none ] && [ "$protocol" = v3 ]; then
    baseline=$(bench/baseline.sh "$baseline_rev")
fi
cargo build --release --locked -q --bin patchbay -p patchbay-gateway
cargo build --release --locked -q --bin webrtc-load -p patchbay-bench
gw_pid=""
trap '[ -n "$gw_pid" ] && kill "$gw_pid" 2>/dev/null; true' EXIT
echo "machine: $(nproc) cores, $(uname -m), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"

# run BINARY LABEL [PROTOCOL]: one measurement; its JSON line goes to
# target/bench-webrtc-LABEL.json.
run() {
    local bin=$1 label=$2 proto=${3:-v3} data port rtc
    data=$(mktemp -d)
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    rtc=$(python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    PATCHBAY_LOG=warn "$bin" --http-listen "127.0.0.1:$port" --data-dir "$data" \
      --webrtc-listen "127.0.0.1:$rtc" --sip-listen 127.0.0.1:0 &
    gw_pid=$!
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.05; done
    echo "== $label: $bin"
    ./target/release/webrtc-load --base "http://127.0.0.1:$port" sfu --sessions "$sessions" --pid "$gw_pid" \
      --seconds "$seconds" --protocol "$proto" | tee "target/bench-webrtc-$label.out"
    kill "$gw_pid" 2>/dev/null || true
    wait "$gw_pid" 2>/dev/null || true
    gw_pid=""
    rm -rf "$data"
    tail -n1 "target/bench-webrtc-$label.out" > "target/bench-webrtc-$label.json"
}

if [ "$protocol" = v2-vs-v3 ]; then
    run ./target/release/patchbay v3 v3
    run ./target/release/patchbay v2 v2
    python3 - <<'PY'
import json
v3 = json.load(open("target/bench-webrtc-v3.json"))
v2 = json.load(open("target/bench-webrtc-v2.json"))
ratio = v2["us_per_forwarded_packet"] / v3["us_per_forwarded_packet"]
print(f"v2 vs v3 (same binary, same run): forwarded per core {v2['forwarded_pps_per_core']:.0f} vs "
      f"{v3['forwarded_pps_per_core']:.0f}; per packet {v2['us_per_forwarded_packet']:.2f} vs "
      f"{v3['us_per_forwarded_packet']:.2f} us = {ratio:.2f}x")
print(json.dumps({"v2_per_packet_ratio": round(ratio, 3), "v3": v3, "v2": v2}))
PY
    exit 0
fi
run ./target/release/patchbay current "$protocol"
if [ -n "$baseline" ]; then
    run "$baseline" baseline "$protocol"
    python3 - <<'PY'
import json
cur = json.load(open("target/bench-webrtc-current.json"))
base = json.load(open("target/bench-webrtc-baseline.json"))
ratio = cur["forwarded_pps_per_core"] / base["forwarded_pps_per_core"]
print(f"A/B: forwarded per core {cur['forwarded_pps_per_core']:.0f} vs {base['forwarded_pps_per_core']:.0f} "
      f"(baseline binary) = {ratio:.2f}x; per packet {cur['us_per_forwarded_packet']:.2f} vs "
      f"{base['us_per_forwarded_packet']:.2f} us; bare sendmmsg {cur['baseline_us_per_packet']:.2f} us "
      f"= {cur['us_per_forwarded_packet'] / cur['baseline_us_per_packet']:.2f}x")
print(json.dumps({"ab_forwarded_per_core_ratio": round(ratio, 3), "current": cur, "baseline": base}))
PY
fi
