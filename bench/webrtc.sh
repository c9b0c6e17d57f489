#!/usr/bin/env bash
# WebRTC SFU benchmark: sessions of 20 str0m clients, all subscribed to all, each
# publishing Opus, against the release binary, then the same load against the
# baseline binary (bench/baseline.sh: the commit in bench/baseline.rev), so every
# figure is also an A/B ratio measured in the same run (A, B, B, A: see below).
# Usage: bench/webrtc.sh [SESSIONS] [SECONDS] [BASELINE_REV|none] [v3|v2|v2-vs-v3]
# The fourth argument picks the clients' device protocol (default v3); v2-vs-v3 runs
# the current binary with v3 clients, then with v2 clients (a connection per stream),
# and prints what a v2 device costs per forwarded packet against a v3 one.
# BENCH_CURRENT=PATH measures that binary in place of the release build (to bisect
# between two earlier commits, each built by bench/baseline.sh).
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
scripts/patch-crates
cargo build --release --locked -q --bin patchbay -p patchbay-gateway
cargo build --release --locked -q --bin webrtc-load -p patchbay-bench
current=${BENCH_CURRENT:-./target/release/patchbay}
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
if [ -z "$baseline" ]; then
    run "$current" current "$protocol"
    exit 0
fi
# A, B, B, A: whichever binary runs first on this machine measures up to 10 % slower
# (an A/A run of one binary against itself gave 0.90x and 0.96x in that order), so
# each binary runs once first and once last, and the ratio is of the two means.
run "$current" current "$protocol"
run "$baseline" baseline "$protocol"
run "$baseline" baseline2 "$protocol"
run "$current" current2 "$protocol"
python3 - <<'PY'
import json
def load(label):
    return json.load(open(f"target/bench-webrtc-{label}.json"))
def mean(runs, key):
    return sum(r[key] for r in runs) / len(runs)
cur, base = [load("current"), load("current2")], [load("baseline"), load("baseline2")]
ratio = mean(cur, "forwarded_pps_per_core") / mean(base, "forwarded_pps_per_core")
each = lambda runs: " / ".join(f"{r['forwarded_pps_per_core']:.0f}" for r in runs)
print(f"A/B (A,B,B,A): forwarded per core {mean(cur, 'forwarded_pps_per_core'):.0f} ({each(cur)}) vs "
      f"{mean(base, 'forwarded_pps_per_core'):.0f} ({each(base)}) (baseline binary) = {ratio:.2f}x; "
      f"per packet {mean(cur, 'us_per_forwarded_packet'):.2f} vs {mean(base, 'us_per_forwarded_packet'):.2f} us; "
      f"bare sendmmsg {mean(cur, 'baseline_us_per_packet'):.2f} us = "
      f"{mean(cur, 'us_per_forwarded_packet') / mean(cur, 'baseline_us_per_packet'):.2f}x")
print(json.dumps({"ab_forwarded_per_core_ratio": round(ratio, 3), "current": cur, "baseline": base}))
PY
