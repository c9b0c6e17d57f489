#!/usr/bin/env bash
# WebRTC SFU benchmark: sessions of 20 str0m clients, all subscribed to all, each
# publishing Opus, against the release binary, then the same load against the
# baseline binary (bench/baseline.sh: the commit in bench/baseline.rev), so every
# figure is also an A/B ratio measured in the same run.
# Usage: bench/webrtc.sh [SESSIONS] [SECONDS] [BASELINE_REV|none]
set -euo pipefail
cd "$(dirname "$0")/.."
sessions=${1:-1}
seconds=${2:-10}
baseline_rev=${3:-$(head -n1 bench/baseline.rev)}
baseline=""
if [ "$baseline_rev" != none ]; then
    baseline=$(bench/baseline.sh "$baseline_rev")
fi
cargo build --release --locked -q --bin patchbay -p patchbay-gateway
cargo build --release --locked -q --bin webrtc-load -p patchbay-bench
gw_pid=""
trap '[ -n "$gw_pid" ] && kill "$gw_pid" 2>/dev/null; true' EXIT
echo "machine: $(nproc) cores, $(uname -m), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"

# run BINARY LABEL: one measurement; its JSON line goes to target/bench-webrtc-LABEL.json.
run() {
    local bin=$1 label=$2 data port rtc
    data=$(mktemp -d)
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    rtc=$(python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    PATCHBAY_LOG=warn "$bin" --http-listen "127.0.0.1:$port" --data-dir "$data" \
      --webrtc-listen "127.0.0.1:$rtc" --sip-listen 127.0.0.1:0 &
    gw_pid=$!
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.05; done
    echo "== $label: $bin"
    ./target/release/webrtc-load --base "http://127.0.0.1:$port" sfu --sessions "$sessions" --pid "$gw_pid" \
      --seconds "$seconds" | tee "target/bench-webrtc-$label.out"
    kill "$gw_pid" 2>/dev/null || true
    wait "$gw_pid" 2>/dev/null || true
    gw_pid=""
    rm -rf "$data"
    tail -n1 "target/bench-webrtc-$label.out" > "target/bench-webrtc-$label.json"
}

run ./target/release/patchbay current
if [ -n "$baseline" ]; then
    run "$baseline" baseline
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
