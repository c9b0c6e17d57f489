#!/usr/bin/env python3
"""Voice bots (stream participants) against SIP legs, one gateway and one load, one run.

  bench/bots.py N [--seconds S] [--rounds R] [--perf DIR]

N sessions, each with one PCMU caller (sipp, a real tone) throughout. Measured phases,
S seconds each, each endpoint's between two of the callers alone (the base):
  base, + one Twilio bot per session (base64 mu-law JSON at 8 kHz, 20 ms frames), base,
  + one raw bot per session instead (binary 16-bit PCM at 16 kHz, 20 ms frames), base,
  + a second PCMU caller per session instead, base;
  and the kernel's floor for a bot (bot-load floor): N bare WebSocket connections to the
  same bots, one recv and one send of a ready-made media frame per 20 ms each, its own
  CPU per connection (what a bot costs the gateway less the gateway's own code).
The bots (bot-load, bench/src/bot_load.rs) speak at real time and hear their session's
caller; with the second callers the two callers hear each other. The cost of one
endpoint is the gateway's CPU above the mean of the two base phases around it, divided
by N; a bot's is printed against a SIP leg's, measured the same way in the same run;
the whole is repeated R times (3) and the median taken.
With --perf DIR each endpoint's phase and the first base are also profiled, and the
costs are printed again without the kernel's loopback delivery to the peers.

Then a probe in a session of its own (a bare SIP caller and a bot in one process, one
clock) measures the delay Patchbay adds caller -> bot and bot -> caller (jitter buffer,
mixer tick, playout queue, both directions' sockets), with the load still running.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sip_load import ROOT, Gateway, free_port, machine, participants, proc_cpu, render, tone_wav  # noqa: E402

# The gateway refuses PATCHBAY_* variables it does not know: this one is the tests'.
PYTHON = os.environ.pop("PATCHBAY_PYTHON", None) or os.path.join(ROOT, "target/test-venv/bin/python")
LOAD = os.path.join(ROOT, "bench/bot_load.py")
BOT_LOAD = os.path.join(ROOT, "target/release/bot-load")


def percentile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else None


def start_callers(gw, work, name, tokens, hold_s):
    with open(os.path.join(work, f"{name}.csv"), "w") as f:
        f.write("SEQUENTIAL\n" + "".join(f"{t};\n" for t in tokens))
    render("uac_tone.xml", os.path.join(work, f"{name}.xml"), WAV="tone.wav", PT=0, CODEC="PCMU",
           HOLD_MS=int(hold_s * 1000))
    subprocess.Popen(
        ["sipp", f"127.0.0.1:{gw.sip}", "-sf", f"{name}.xml", "-inf", f"{name}.csv", "-m", str(len(tokens)),
         "-l", str(len(tokens)), "-r", "100", "-i", "127.0.0.1", "-p", str(free_port()),
         "-mp", str(40000 if name == "first" else 50000), "-nostdin", "-bg", "-trace_err",
         "-rtp_threadtasks", "50", "-timeout", f"{int(hold_s + 120)}s"],
        cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).wait()


def wait_metric(gw, name, value, timeout=60):
    deadline = time.time() + timeout
    while gw.metrics().get(name, 0) != value:
        if time.time() > deadline:
            raise RuntimeError(f"{name} is {gw.metrics().get(name, 0)}, wanted {value}")
        time.sleep(0.2)


PERF_DIR = None


def measure(gw, seconds, phase=""):
    time.sleep(2)  # steady state
    perf = None
    if PERF_DIR and phase:
        # The profile of this phase (perf report -i DIR/PHASE.data), recorded beside the
        # CPU reading: perf's own cost is not the gateway's.
        perf = subprocess.Popen(["perf", "record", "-g", "-q", "-o", os.path.join(PERF_DIR, f"{phase}.data"),
                                 "-p", str(gw.proc.pid), "--", "sleep", str(seconds)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    c0, t0 = gw.cpu_seconds(), time.time()
    time.sleep(seconds)
    cpu = (gw.cpu_seconds() - c0) / (time.time() - t0)
    if perf:
        perf.wait()
    return cpu


def loopback_share(path):
    """The share of a profile's samples in the kernel's receive softirq (net_rx_action)."""
    out = subprocess.run(["perf", "report", "-i", path, "--children", "--sort", "sym", "--stdio"],
                         capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.rstrip().endswith("[k] net_rx_action"):
            return float(line.split()[0].rstrip("%")) / 100
    return 0.0


def run(args):
    os.environ["PATCHBAY_WEBHOOK_ALLOW"] = "127.0.0.1"
    work = tempfile.mkdtemp(prefix="pb-bots-")
    gw = Gateway(work)
    load = None
    try:
        n = args.n
        sessions = []
        first = participants(gw, n, 1, sessions)
        tone_wav(os.path.join(work, "tone.wav"))
        port = free_port()
        load = subprocess.Popen([BOT_LOAD, str(port)], stdout=subprocess.PIPE, text=True)
        if load.stdout.readline().strip() != "listening":
            raise RuntimeError("the bot server did not start")
        url = f"ws://127.0.0.1:{port}/bot"
        bots = {"twilio": [], "raw": []}
        for protocol, rate in (("twilio", 8000), ("raw", 16000)):
            for _ in sessions:
                r = gw.api("POST", "/participants", {"publishPermissions": ["AUDIO"], "mediaStream": {
                    "url": url, "protocol": protocol, "sampleRate": rate}})
                bots[protocol].append(r["participant"]["id"])
        second = []
        for s in sessions:
            r = gw.api("POST", "/participants", {"publishPermissions": ["AUDIO"]})
            gw.api("PUT", f"/sessions/{s}/participants/{r['participant']['id']}", {"sessionId": s})
            second.append(r["token"])
        phase_s = args.seconds + 2
        start_callers(gw, work, "first", first, phase_s * 7 * args.rounds + 120)
        wait_metric(gw, "patchbay_sip_calls_active", n)
        print(f"machine: {machine()}")
        print(f"{n} sessions, one PCMU caller each throughout; {args.seconds:.0f} s per phase, "
              f"{args.rounds} rounds")
        # Each endpoint's phase between two base phases, each judged against the two
        # around it (the base drifts over a run); the whole repeated, the median taken.
        # Profiles (--perf) of the first round.
        before = measure(gw, args.seconds, "base")
        rounds = []
        for r in range(args.rounds):
            name = (lambda k: k) if r == 0 else (lambda k: "")
            cpu, around, bases = {}, {}, [before]
            for protocol in ("twilio", "raw"):
                for s, b in zip(sessions, bots[protocol]):
                    gw.api("PUT", f"/sessions/{s}/participants/{b}", {"sessionId": s})
                wait_metric(gw, "patchbay_streams_connected", n)
                cpu[protocol] = measure(gw, args.seconds, name(protocol))
                for s, b in zip(sessions, bots[protocol]):
                    gw.api("DELETE", f"/sessions/{s}/participants/{b}")
                wait_metric(gw, "patchbay_streams_connected", 0)
                bases.append(measure(gw, args.seconds))
                around[protocol] = (bases[-2] + bases[-1]) / 2
            start_callers(gw, work, f"second{r}", second, args.seconds + 6)
            wait_metric(gw, "patchbay_sip_calls_active", 2 * n)
            cpu["legs"] = measure(gw, args.seconds, name("legs"))
            wait_metric(gw, "patchbay_sip_calls_active", n, timeout=30)
            bases.append(measure(gw, args.seconds))
            around["legs"] = (bases[-2] + bases[-1]) / 2
            before = bases[-1]
            out = subprocess.run([BOT_LOAD, "floor", str(port), str(n), str(args.seconds)],
                                 capture_output=True, text=True, check=True).stdout
            floor = json.loads(out.strip().splitlines()[-1])["us_per_connection_s"]
            rounds.append({"cpu": cpu, "around": around, "bases": bases, "floor": floor})
            cost = {k: (cpu[k] - around[k]) / n * 1e6 for k in cpu}
            print(f"round {r + 1}: base " + ", ".join(f"{b * 100:.1f}" for b in bases) + " % of a core; "
                  + ", ".join(f"{k} {cpu[k] * 100:.1f} % -> {cost[k]:.0f} µs" for k in cpu)
                  + f"; a bare bot connection {floor:.0f} µs", flush=True)

        # The delay probe, with the N callers still talking and N Twilio bots back on.
        for s, b in zip(sessions, bots["twilio"]):
            gw.api("PUT", f"/sessions/{s}/participants/{b}", {"sessionId": s})
        wait_metric(gw, "patchbay_streams_connected", n)
        probe_session = gw.api("POST", "/sessions", {"tag": "probe"})["id"]
        r = gw.api("POST", "/participants", {"publishPermissions": ["AUDIO"]})
        gw.api("PUT", f"/sessions/{probe_session}/participants/{r['participant']['id']}",
               {"sessionId": probe_session})
        probe_port = free_port()
        probe = subprocess.Popen([PYTHON, LOAD, "probe", str(gw.sip), r["token"], str(probe_port),
                                  str(args.seconds)], stdout=subprocess.PIPE, text=True)
        if probe.stdout.readline().strip() != "listening":
            raise RuntimeError("the probe did not start")
        b = gw.api("POST", "/participants", {"publishPermissions": ["AUDIO"], "mediaStream": {
            "url": f"ws://127.0.0.1:{probe_port}/bot", "protocol": "twilio"}})
        time.sleep(1)
        gw.api("PUT", f"/sessions/{probe_session}/participants/{b['participant']['id']}",
               {"sessionId": probe_session})
        delays = json.loads(probe.communicate(timeout=args.seconds + 60)[0].strip().splitlines()[-1])

        kinds = ("legs", "twilio", "raw")
        labels = {"legs": "a PCMU SIP leg", "twilio": "a Twilio bot (mu-law 8 kHz)",
                  "raw": "a raw bot (L16 16 kHz)"}

        def median_cost(share=None):
            out = {}
            for k in kinds:
                xs = []
                for rd in rounds:
                    if share:
                        xs.append((rd["cpu"][k] * (1 - share[k]) - rd["around"][k] * (1 - share["base"])) / n * 1e6)
                    else:
                        xs.append((rd["cpu"][k] - rd["around"][k]) / n * 1e6)
                out[k] = sorted(xs)[len(xs) // 2]
            return out

        cost = median_cost()
        print(f"median of {len(rounds)} rounds:")
        for k in kinds:
            print(f"  {labels[k]:28s} {cost[k]:7.0f} µs of gateway CPU per second  ({cost[k] / cost['legs']:.2f}x a SIP leg)")
        floor = sorted(rd["floor"] for rd in rounds)[len(rounds) // 2]
        print(f"  {'the kernel floor for a bot':28s} {floor:7.0f} µs per connection-second  "
              f"({floor / cost['legs']:.2f}x a SIP leg; a Twilio bot is {cost['twilio'] / floor:.2f}x it)")
        result = {"sessions": n, "bot_floor_us": round(floor), "rounds": rounds, "us_per_endpoint_s": {k: round(v) for k, v in cost.items()},
                  "twilio_vs_leg": round(cost["twilio"] / cost["legs"], 3),
                  "raw_vs_leg": round(cost["raw"] / cost["legs"], 3)}
        if PERF_DIR:
            # On loopback the kernel delivers what the gateway sends to its peers (sipp's
            # UDP, the bots' TCP) in the gateway's own system calls: work a real network
            # leaves to the peers' machines. Without it (its share from the profiles):
            share = {k: loopback_share(os.path.join(PERF_DIR, f"{k}.data")) for k in ("base",) + kinds}
            net = median_cost(share)
            print("without the kernel's loopback delivery to the peers (perf, first round: net_rx_action " +
                  ", ".join(f"{k} {v * 100:.1f} %" for k, v in share.items()) + "):")
            for k in kinds:
                print(f"  {labels[k]:28s} {net[k]:7.0f} µs of gateway CPU per second  ({net[k] / net['legs']:.2f}x a SIP leg)")
            result["without_loopback_delivery"] = {k: round(v) for k, v in net.items()}
        for k in ("caller_to_bot_ms", "bot_to_caller_ms"):
            xs = delays[k]
            print(f"{k:18s} p50 {percentile(xs, 0.5)} ms, p99 {percentile(xs, 0.99)} ms, max {max(xs or [0])} ms "
                  f"({len(xs)} of {delays['probes']} probes heard)")
        result["delays"] = delays
        print(json.dumps(result))
        return result
    finally:
        subprocess.run(["pkill", "-f", "sipp 127.0.0.1"], stderr=subprocess.DEVNULL)
        if load:
            load.terminate()
            out = load.communicate(timeout=10)[0]
            if out.strip():
                print("bot load:", out.strip().splitlines()[-1])
        gw.stop()
        shutil.rmtree(work, ignore_errors=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("n", type=int)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--perf", metavar="DIR", help="also record each phase with perf record -g into DIR")
    args = p.parse_args()
    global PERF_DIR
    PERF_DIR = args.perf
    subprocess.run([os.path.join(ROOT, "scripts/patch-crates")], check=True)
    subprocess.run(["cargo", "build", "--release", "-q", "--bin", "patchbay", "--bin", "bot-load"], cwd=ROOT, check=True)
    run(args)


if __name__ == "__main__":
    sys.exit(main())
