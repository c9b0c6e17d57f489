#!/usr/bin/env python3
"""Soak test of the release binary (stdlib only): many sessions with phone callers
(real sipp, PCMU tone) and browser-like clients (webrtc-load: str0m with ICE, DTLS,
SRTP, the v3 signaling) joining and leaving for minutes, while the gateway's memory
and file descriptors are sampled.

  bench/soak.py [--sessions 20] [--per-session 20] [--legs 6] [--browsers 4]
                [--minutes 10] [--hold 60] [--cycle 60]

Each session has --per-session participants (all subscribed to the whole session,
each with a callbackUrl to a receiver in this script). At any time --legs of them
per session are on a sipp call (each call lasts --hold s, then the next participant
of the session calls: every phone participant calls in turn) and --browsers are
connected clients publishing Opus (each leaves and joins again every --cycle s).

Pass criteria, printed at the end:
- RSS and open file descriptors flat: every sample after the first round of churn
  within ±10 % of its median;
- no loss on loopback: RTP concealed by the jitter buffers and send drops at 0 (or
  a stated fraction), browser packets sent vs received by the gateway;
- every device and call ended cleanly: 0 calls and 0 devices at the end, and for
  every participant as many onLeave as onConnect callbacks.
"""

import argparse
import http.server
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sip_load import ROOT, Gateway, free_port, machine, render, tone_wav  # noqa: E402


class Hooks:
    """A callback receiver counting events per (participantId, deviceId)."""

    def __init__(self):
        self.events = []
        self.lock = threading.Lock()
        hooks = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    with hooks.lock:
                        hooks.events.append(json.loads(body))
                except ValueError:
                    pass
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/cb"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def unbalanced(self):
        """(participant, device) pairs whose onConnect and onLeave counts differ."""
        counts = {}
        with self.lock:
            for e in self.events:
                key = (e.get("participantId"), e.get("deviceId"))
                c = counts.setdefault(key, [0, 0])
                if e.get("event") == "onConnect":
                    c[0] += 1
                elif e.get("event") == "onLeave":
                    c[1] += 1
        return {k: v for k, v in counts.items() if v[0] != v[1]}

    def count(self, name):
        with self.lock:
            return sum(1 for e in self.events if e.get("event") == name)


def sample(pid):
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss, fds


def devices_open(m):
    """Browser devices connected now: created (connects that were not resumes) minus ended."""
    return m.get("patchbay_signaling_connects_total", 0) - m.get("patchbay_signaling_resumed_total", 0) \
        - m.get("patchbay_devices_ended_total", 0)


def flat(values, tolerance=0.10):
    med = statistics.median(values)
    worst = max(abs(v - med) / med for v in values) if med else 0.0
    return worst <= tolerance, worst


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sessions", type=int, default=20)
    p.add_argument("--per-session", type=int, default=20)
    p.add_argument("--legs", type=int, default=6, help="phone calls up at once per session")
    p.add_argument("--browsers", type=int, default=4, help="browser clients per session")
    p.add_argument("--minutes", type=float, default=10)
    p.add_argument("--hold", type=int, default=60, help="seconds per phone call")
    p.add_argument("--cycle", type=int, default=60, help="seconds between a browser's leave and join")
    args = p.parse_args()
    if args.legs + args.browsers > args.per_session:
        sys.exit("--legs + --browsers must not exceed --per-session")
    subprocess.run([os.path.join(ROOT, "scripts/patch-crates")], check=True)
    subprocess.run(["cargo", "build", "--release", "-q", "--locked", "--bin", "patchbay", "--bin", "webrtc-load"],
                   cwd=ROOT, check=True)
    seconds = int(args.minutes * 60)
    work = tempfile.mkdtemp(prefix="pb-soak-")
    hooks = Hooks()
    os.environ["PATCHBAY_WEBHOOK_ALLOW"] = "127.0.0.1"
    gw = Gateway(work)
    sipp = clients = None
    try:
        phone_tokens = [[] for _ in range(args.sessions)]
        browser_tokens = []
        for s in range(args.sessions):
            sid = gw.api("POST", "/sessions", {"tag": f"soak-{s}"})["id"]
            for i in range(args.per_session):
                r = gw.api("POST", "/participants", {"publishPermissions": ["AUDIO"], "callbackUrl": hooks.url,
                                                     "tag": f"soak-{s}-{i}"})
                gw.api("PUT", f"/sessions/{sid}/participants/{r['participant']['id']}", {"sessionId": sid})
                (browser_tokens if i < args.browsers else phone_tokens[s]).append(r["token"])
        # Interleaved by session: the first calls put --legs callers in every session,
        # the next ones take the next participant of each session.
        per = max(len(t) for t in phone_tokens)
        order = [phone_tokens[s][k] for k in range(per) for s in range(args.sessions) if k < len(phone_tokens[s])]
        with open(os.path.join(work, "phones.csv"), "w") as f:
            f.write("SEQUENTIAL\n" + "".join(f"{t};\n" for t in order))
        with open(os.path.join(work, "browsers.txt"), "w") as f:
            f.write("\n".join(browser_tokens))
        tone_wav(os.path.join(work, "tone.wav"))
        render("uac_tone.xml", os.path.join(work, "soak.xml"), WAV="tone.wav", PT=0, CODEC="PCMU",
               HOLD_MS=args.hold * 1000)
        concurrent = args.legs * args.sessions
        total_calls = concurrent * max(1, seconds // args.hold)

        t0 = time.time()
        clients = subprocess.Popen(
            [os.path.join(ROOT, "target/release/webrtc-load"), "--base", f"http://127.0.0.1:{gw.http}", "clients",
             "--tokens-file", "browsers.txt", "--seconds", str(seconds), "--cycle", str(args.cycle)],
            cwd=work, stdout=subprocess.PIPE, stderr=open(os.path.join(work, "clients.err"), "w"), text=True)
        sipp = subprocess.Popen(
            ["sipp", f"127.0.0.1:{gw.sip}", "-sf", "soak.xml", "-inf", "phones.csv", "-m", str(total_calls),
             "-l", str(concurrent), "-r", "20", "-i", "127.0.0.1", "-p", str(free_port()), "-mp", "40000",
             "-nostdin", "-trace_stat", "-stf", "sipp.csv", "-fd", "10", "-rtp_threadtasks", "50",
             "-timeout", str(seconds + args.hold + 120), "-timeout_error"],
            cwd=work, stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "sipp.err"), "w"))

        samples = []
        while time.time() - t0 < seconds:
            time.sleep(10)
            m = gw.metrics()
            rss, fds = sample(gw.proc.pid)
            row = (round(time.time() - t0), rss, fds, m.get("patchbay_sip_calls_active", 0), devices_open(m))
            samples.append(row)
            print(f"t={row[0]:4d}s rss={rss / 1024:7.1f} MiB fds={fds:5d} calls={row[3]:4.0f} devices={row[4]:4.0f}",
                  flush=True)

        out, _ = clients.communicate(timeout=120)
        summary = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
        sipp.wait(timeout=args.hold + 180)
        # Everything ends: calls hung up by sipp, devices left; callbacks delivered.
        deadline = time.time() + 60
        while time.time() < deadline:
            m = gw.metrics()
            if m.get("patchbay_sip_calls_active", 0) == 0 and devices_open(m) == 0 \
                    and m.get("patchbay_webhooks_pending", 0) == 0 and not hooks.unbalanced():
                break
            time.sleep(1)
        m = gw.metrics()
        stats = open(os.path.join(work, "sipp.csv")).read().strip().splitlines()
        row = dict(zip(stats[0].split(";"), stats[-1].split(";")))
        calls_ok, calls_failed = int(row.get("SuccessfulCall(C)", 0)), int(row.get("FailedCall(C)", 0))

        # Flatness: from the end of the first round of churn on.
        settle = max(args.hold, args.cycle) + 30
        steady = [s for s in samples if settle <= s[0] <= seconds - 15] or samples
        rss_ok, rss_dev = flat([s[1] for s in steady])
        fds_ok, fds_dev = flat([s[2] for s in steady])
        rx = m.get("patchbay_rtp_received_total", 0)
        concealed = m.get("patchbay_media_concealed_total", 0)
        drops = m.get("patchbay_rtp_send_dropped_total", 0)
        web_in = m.get("patchbay_webrtc_media_in_total", 0)
        sent = summary.get("sent", 0)
        unbalanced = hooks.unbalanced()
        print(f"machine: {machine()}")
        print(f"{args.sessions} sessions x {args.per_session} participants for {seconds} s: {concurrent} phone calls "
              f"up at once ({args.hold} s each), {len(browser_tokens)} browser clients (rejoining every ~{args.cycle} s)")
        print(f"calls     {calls_ok} completed, {calls_failed} failed; active at the end "
              f"{m.get('patchbay_sip_calls_active', 0):.0f}; devices open at the end {devices_open(m):.0f}")
        print(f"browsers  {summary.get('connections', 0)} connections, {summary.get('errors', '?')} errors; "
              f"packets sent {sent}, received by the gateway {web_in:.0f}")
        print(f"RSS       {min(s[1] for s in steady) / 1024:.1f}..{max(s[1] for s in steady) / 1024:.1f} MiB, "
              f"max deviation from the median {rss_dev * 100:.1f} % ({'flat' if rss_ok else 'NOT flat'})")
        print(f"fds       {min(s[2] for s in steady)}..{max(s[2] for s in steady)}, "
              f"max deviation {fds_dev * 100:.1f} % ({'flat' if fds_ok else 'NOT flat'})")
        print(f"RTP       {rx:.0f} received from phones, {concealed:.0f} concealed "
              f"({concealed / max(rx, 1) * 100:.3f} %), {drops:.0f} send drops")
        print(f"callbacks {hooks.count('onConnect')} onConnect, {hooks.count('onLeave')} onLeave, "
              f"{len(unbalanced)} devices/calls without their onLeave")
        passed = rss_ok and fds_ok and calls_failed == 0 and not unbalanced and devices_open(m) == 0 and \
            m.get("patchbay_sip_calls_active", 0) == 0 and summary.get("errors", 1) == 0
        result = {"sessions": args.sessions, "per_session": args.per_session, "seconds": seconds,
                  "calls_ok": calls_ok, "calls_failed": calls_failed, "browser_connections": summary.get("connections"),
                  "browser_errors": summary.get("errors"), "browser_sent": sent, "gateway_browser_in": web_in,
                  "rss_kib": [s[1] for s in samples], "fds": [s[2] for s in samples],
                  "rss_max_dev": round(rss_dev, 4), "fds_max_dev": round(fds_dev, 4),
                  "rtp_received": rx, "concealed": concealed, "send_drops": drops,
                  "unbalanced": len(unbalanced), "passed": passed}
        print(json.dumps(result))
        return 0 if passed else 1
    finally:
        for proc in (sipp, clients):
            if proc and proc.poll() is None:
                proc.kill()
        gw.stop()
        hooks.server.shutdown()


if __name__ == "__main__":
    sys.exit(main())
