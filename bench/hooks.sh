#!/usr/bin/env bash
# Webhook and dialog benchmarks against the release binary (see docs/benchmarks.md).
#   bench/hooks.sh webhooks [SECONDS] [CONCURRENCY] [RATE]  device connect/leave loops -> callbacks
#   bench/hooks.sh dialogs [RATE] [COUNT]             dialogs through a sipp trunk that answers
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-webhooks}
scripts/patch-crates
cargo build --release --locked -q --bin patchbay -p patchbay-gateway
cargo build --release --locked -q --bin hooks-load -p patchbay-bench
work=$(mktemp -d)
free() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free); sip=$(free); rtc=$(free); trunk=$(free)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
extra=()
if [ "$mode" = dialogs ]; then
  sipp -sf bench/uas_bench.xml -i 127.0.0.1 -p "$trunk" -mp "$(free)" -m "${3:-2000}" -nostdin \
    -trace_err -error_file "$work/sipp-errors.log" >/dev/null 2>&1 &
  pids+=($!)
  extra=(--sip-trunk "sip:127.0.0.1:$trunk;transport=udp")
fi
PATCHBAY_LOG=warn PATCHBAY_WEBHOOK_ALLOW=127.0.0.1 ./target/release/patchbay --http-listen "127.0.0.1:$port" --data-dir "$work/data" \
  --sip-listen "127.0.0.1:$sip" --webrtc-listen "127.0.0.1:$rtc" "${extra[@]}" &
pids+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.05; done
echo "machine: $(nproc) cores, $(uname -m), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
case "$mode" in
  webhooks) ./target/release/hooks-load --base "http://127.0.0.1:$port" webhooks --seconds "${2:-10}" --concurrency "${3:-32}" --rate "${4:-0}"; [ -n "${PB_DUMP:-}" ] && curl -s "http://127.0.0.1:$port/metrics" | grep webhook ;;
  dialogs) ./target/release/hooks-load --base "http://127.0.0.1:$port" dialogs --rate "${2:-200}" --count "${3:-2000}" ;;
  *) echo "usage: $0 webhooks|dialogs ..." >&2; exit 2 ;;
esac
