#!/usr/bin/env python3
"""SIP benchmarks against the release binary, with real sipp (stdlib only).

  bench/sip_load.py legs N [--seconds S]   N concurrent PCMU calls (20 ms, a real
      tone via rtp_stream) in sessions of 10, everyone hearing everyone. Reports
      the gateway's CPU, legs per core at 50 % CPU, packet loss in and out, and
      the mixer's added latency (arrival -> send, from /metrics) p50/p99.
  bench/sip_load.py record N [--per-session 4] [--seconds S] [--s3]   N PCMU legs
      in sessions of 4, measured unrecorded, then with every session recorded as
      `tracks` WAV, `mixed` WAV and `mixed` Ogg, then unrecorded again (one gateway, one
      load, one run): extra CPU against unrecorded, the recordings' cost in cores,
      disk write rate, and (--s3, a local moto server) upload throughput.
  bench/sip_load.py cps RATE [--seconds S] [--transports udp,tls,tls-per-call]
      call setup rate: INVITE with a token, 200, ACK, BYE, at RATE calls/s;
      reports completed and failed calls for each transport in the same run.
      TLS goes through stunnel (Debian's sipp has no TLS): sipp speaks TCP to a
      local stunnel client that speaks TLS to the gateway's `sip_tls_listen`,
      over one connection (`tls`) or a new TLS connection per call
      (`tls-per-call`, a full handshake each). The baseline commit is measured on
      UDP only.

Baseline printed with each run: the same machine's sipp CPU for the same load,
so the gateway's share can be read against the load generator's own cost. With
--baseline REV (default: the commit in bench/baseline.rev; `none` to skip) the same
measurement runs again against that commit's binary (bench/baseline.sh builds it)
and the A/B ratios are printed (`legs`: current, baseline, baseline, current; ratios
of the means).
"""

import argparse
import base64
import json
import math
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Gateway:
    binary = os.path.join(ROOT, "target/release/patchbay")

    def __init__(self, workdir, rtp_ports="20000-39999", extra=()):
        self.http = free_port()
        self.sip = free_port()
        self.data = os.path.join(workdir, "data")
        self.log = open(os.path.join(workdir, "patchbay.log"), "w")
        env = dict(os.environ, PATCHBAY_LOG="warn")
        self.proc = subprocess.Popen(
            [Gateway.binary, "--http-listen", f"127.0.0.1:{self.http}",
             "--sip-listen", f"127.0.0.1:{self.sip}", "--data-dir", self.data, "--rtp-ports", rtp_ports,
             "--webrtc-listen", "127.0.0.1:19999", *extra],
            stdout=subprocess.DEVNULL, stderr=self.log, env=env)
        for _ in range(200):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.http}/health", timeout=1)
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("gateway did not start")

    def api(self, method, path, body=None):
        req = urllib.request.Request(f"http://127.0.0.1:{self.http}/v1/accounts/dev{path}", method=method,
                                     data=None if body is None else json.dumps(body).encode())
        req.add_header("Authorization", "Basic " + base64.b64encode(b"dev:dev").decode())
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=10) as r:
            text = r.read()
            return json.loads(text) if text else None

    def metrics(self):
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.http}/metrics", timeout=5).read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                try:
                    out[name] = float(value)
                except ValueError:
                    pass
        return out

    def cpu_seconds(self):
        return proc_cpu(self.proc.pid)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def proc_cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def participants(gw, n, per_session, sessions=None):
    tokens = []
    session = None
    for i in range(n):
        if i % per_session == 0:
            session = gw.api("POST", "/sessions", {"tag": "bench"})["id"]
            if sessions is not None:
                sessions.append(session)
        r = gw.api("POST", "/participants", {"publishPermissions": ["AUDIO"]})
        gw.api("PUT", f"/sessions/{session}/participants/{r['participant']['id']}", {"sessionId": session})
        tokens.append(r["token"])
    return tokens


def ulaw(s):
    sign = 0x80 if s < 0 else 0
    s = min(abs(s), 32635) + 0x84
    exp = 7
    while exp > 0 and not s & (1 << (exp + 7)):
        exp -= 1
    return ~(sign | (exp << 4) | ((s >> (exp + 3)) & 0x0F)) & 0xFF


def tone_wav(path, hz=440, seconds=2):
    n = 8000 * seconds
    data = bytes(ulaw(int(8000 * math.sin(2 * math.pi * hz * i / 8000))) for i in range(n))
    fmt = struct.pack("<HHIIHHH", 7, 1, 8000, 8000, 1, 8, 0)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"fact" + struct.pack("<II", 4, n) + \
        b"data" + struct.pack("<I", len(data)) + data
    with open(path, "wb") as f:
        f.write(b"RIFF" + struct.pack("<I", len(body)) + body)


def render(src, dst, **vars):
    text = open(os.path.join(ROOT, "tests/sipp", src)).read()
    for k, v in vars.items():
        text = text.replace(f"@{k}@", str(v))
    with open(dst, "w") as f:
        f.write(text)


def quantile(buckets, q):
    total = buckets[-1][1]
    if total <= 0:
        return None
    want = q * total
    for bound, count in buckets:
        if count >= want:
            return bound
    return float("inf")


def latency_buckets(before, after):
    out = []
    for k, v in after.items():
        m = re.match(r'patchbay_mix_latency_seconds_bucket\{le="([^"]+)"\}', k)
        if m:
            bound = float("inf") if m.group(1) == "+Inf" else float(m.group(1))
            out.append((bound, v - before.get(k, 0.0)))
    return sorted(out)


def machine():
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores, {model}"


def run_legs(args):
    work = tempfile.mkdtemp(prefix="pb-sipload-")
    gw = Gateway(work)
    try:
        n = args.n
        sessions = []
        tokens = participants(gw, n, 10, sessions)
        with open(os.path.join(work, "tokens.csv"), "w") as f:
            f.write("SEQUENTIAL\n" + "".join(f"{t};\n" for t in tokens))
        tone_wav(os.path.join(work, "tone.wav"))
        hold = int((args.seconds + 15) * 1000)
        render("uac_tone.xml", os.path.join(work, "load.xml"), WAV="tone.wav", PT=0, CODEC="PCMU", HOLD_MS=hold)
        sipp = subprocess.Popen(
            ["sipp", f"127.0.0.1:{gw.sip}", "-sf", "load.xml", "-inf", "tokens.csv", "-m", str(n), "-l", str(n),
             "-r", "100", "-i", "127.0.0.1", "-p", str(free_port()), "-mp", "40000", "-nostdin", "-bg",
             "-trace_err", "-rtp_threadtasks", "50"],
            cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        sipp.wait()
        deadline = time.time() + 60
        while gw.metrics().get("patchbay_sip_calls_active", 0) < n:
            if time.time() > deadline:
                raise RuntimeError(f"only {gw.metrics().get('patchbay_sip_calls_active')} of {n} calls up")
            time.sleep(0.2)
        listeners = None
        opus_us = None
        if args.browsers:
            # Bare libopus, same machine, same run: the baseline of the phone->browser path.
            out = subprocess.run([os.path.join(ROOT, "target/release/webrtc-load"), "opus-baseline", "--rate", "8000"],
                                 capture_output=True, text=True, check=True).stdout
            opus_us = json.loads(out.strip().splitlines()[-1])["us_per_frame"]
            with open(os.path.join(work, "sessions.txt"), "w") as f:
                f.write("\n".join(sessions))
            listeners = subprocess.Popen(
                [os.path.join(ROOT, "target/release/webrtc-load"), "--base", f"http://127.0.0.1:{gw.http}", "listen",
                 "--sessions-file", "sessions.txt"], cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            want = n * 50 * 0.9
            deadline = time.time() + 60
            while True:
                a = gw.metrics().get("patchbay_webrtc_media_out_total", 0)
                time.sleep(1)
                if gw.metrics().get("patchbay_webrtc_media_out_total", 0) - a >= want:
                    break
                if time.time() > deadline:
                    raise RuntimeError("browsers did not start receiving every leg")
        time.sleep(3)  # steady state
        sipp_pids = [int(p) for p in subprocess.run(["pgrep", "-f", "sipp 127.0.0.1"], capture_output=True,
                                                    text=True).stdout.split()]
        m0, c0, t0 = gw.metrics(), gw.cpu_seconds(), time.time()
        s0 = sum(proc_cpu(p) for p in sipp_pids)
        time.sleep(args.seconds)
        m1, c1, t1 = gw.metrics(), gw.cpu_seconds(), time.time()
        s1 = sum(proc_cpu(p) for p in sipp_pids)
        for p in sipp_pids:
            try:
                os.kill(p, 15)
            except ProcessLookupError:
                pass
        web = m1.get("patchbay_webrtc_media_out_total", 0) - m0.get("patchbay_webrtc_media_out_total", 0)
        if listeners:
            listeners.terminate()
        wall = t1 - t0
        cpu = (c1 - c0) / wall
        sipp_cpu = (s1 - s0) / wall
        expected = n * 50 * wall
        rx = m1.get("patchbay_rtp_received_total", 0) - m0.get("patchbay_rtp_received_total", 0)
        tx = m1.get("patchbay_rtp_sent_total", 0) - m0.get("patchbay_rtp_sent_total", 0)
        dropped = m1.get("patchbay_rtp_send_dropped_total", 0) - m0.get("patchbay_rtp_send_dropped_total", 0)
        concealed = m1.get("patchbay_media_concealed_total", 0) - m0.get("patchbay_media_concealed_total", 0)
        underruns = m1.get("patchbay_media_jitter_underruns_total", 0) - m0.get("patchbay_media_jitter_underruns_total", 0)
        shrinks = m1.get("patchbay_media_jitter_shrinks_total", 0) - m0.get("patchbay_media_jitter_shrinks_total", 0)
        buckets = latency_buckets(m0, m1)
        p50, p99 = quantile(buckets, 0.5), quantile(buckets, 0.99)
        legs_per_core = n * 0.5 / cpu if cpu > 0 else float("inf")
        print(f"machine: {machine()}")
        print(f"{n} PCMU legs, sessions of 10, all hearing all, {wall:.1f} s measured")
        print(f"gateway CPU      {cpu * 100:6.1f} % of one core  ({cpu / n * 1e6:.0f} µs of CPU per leg per second)")
        print(f"sipp CPU         {sipp_cpu * 100:6.1f} % of one core  (the load generator, same machine)")
        print(f"legs per core at 50 % CPU: {legs_per_core:.0f}")
        print(f"RTP in           {rx / wall:8.0f} pkt/s of {expected / wall:.0f} expected "
              f"(loss {max(0.0, 1 - rx / expected) * 100:.3f} %)")
        print(f"RTP out          {tx / wall:8.0f} pkt/s (send drops {dropped:.0f}, concealed in {concealed:.0f})")
        print(f"jitter buffers   {underruns:.0f} underruns, {shrinks:.0f} shrinks in {wall:.1f} s")
        if args.browsers:
            per_leg_us = cpu / n * 1e6
            bare_us = opus_us * 50
            print(f"browsers         {len(sessions)} (one per session, hearing every leg): "
                  f"{web / wall:.0f} Opus pkt/s of {n * 50} expected")
            print(f"phone->browser   {per_leg_us:.0f} µs of gateway CPU per leg per second, everything included; "
                  f"bare libopus encode of the same audio (8 kHz, complexity 5) {bare_us:.0f} µs = "
                  f"{per_leg_us / bare_us:.2f}x; legs per core {1e6 / per_leg_us:.0f}")
        print(f"mix latency      p50 <= {p50 * 1000:.1f} ms, p99 <= {p99 * 1000:.1f} ms (arrival -> send, bucket bounds)")
        total = buckets[-1][1] or 1
        prev = 0
        shares = []
        for bound, count in buckets:
            shares.append(f"<={bound * 1000:g}ms:{(count - prev) / total * 100:.1f}%")
            prev = count
        print("  distribution   " + " ".join(shares))
        result = {"legs": n, "cpu_core_fraction": round(cpu, 4), "legs_per_core_at_50pct": round(legs_per_core),
                  "loss_in": max(0.0, 1 - rx / expected), "send_drops": dropped, "concealed": concealed,
                  "latency_p50_ms": p50 * 1000, "latency_p99_ms": p99 * 1000,
                  "sipp_cpu_core_fraction": round(sipp_cpu, 4), "cpu_us_per_leg_s": round(cpu / n * 1e6),
                  "jitter_underruns": underruns, "jitter_shrinks": shrinks,
                  "browser_pps": round(web / wall), "opus_baseline_us_per_frame": opus_us}
        if args.browsers:
            result["opus_ratio"] = round(cpu / n * 1e6 / (opus_us * 50), 3)
        print(json.dumps(result))
        return result
    finally:
        subprocess.run(["pkill", "-f", "sipp 127.0.0.1"], stderr=subprocess.DEVNULL)
        subprocess.run(["pkill", "-f", "webrtc-load --base"], stderr=subprocess.DEVNULL)
        gw.stop()
        shutil.rmtree(work, ignore_errors=True)


RECORD_PHASES = [("unrecorded", None), ("tracks wav", ("tracks", "wav")), ("mixed wav", ("mixed", "wav")),
                 ("mixed ogg", ("mixed", "ogg")), ("unrecorded (again)", None)]


def run_record(args):
    """N PCMU legs in sessions of --per-session; the same load measured unrecorded and
    with every session recorded in each mode, in one run (the ratios need no other
    machine or binary)."""
    work = tempfile.mkdtemp(prefix="pb-record-")
    moto = None
    extra = []
    moto_bin = os.path.join(ROOT, "target/test-venv/bin/moto_server")
    if args.s3 and os.path.exists(moto_bin):
        port = free_port()
        moto = subprocess.Popen([moto_bin, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        for _ in range(200):
            try:
                urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/bench", method="PUT"),
                                       timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        extra = ["--recordings-s3-bucket", "bench", "--recordings-s3-endpoint", f"http://127.0.0.1:{port}",
                 "--recordings-s3-region", "us-east-1"]
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench-secret")
    gw = Gateway(work, extra=extra)
    try:
        n = args.n
        sessions = []
        tokens = participants(gw, n, args.per_session, sessions)
        with open(os.path.join(work, "tokens.csv"), "w") as f:
            f.write("SEQUENTIAL\n" + "".join(f"{t};\n" for t in tokens))
        tone_wav(os.path.join(work, "tone.wav"))
        hold = int((args.seconds * len(RECORD_PHASES) * 2 + 60) * 1000)
        render("uac_tone.xml", os.path.join(work, "load.xml"), WAV="tone.wav", PT=0, CODEC="PCMU", HOLD_MS=hold)
        subprocess.Popen(
            ["sipp", f"127.0.0.1:{gw.sip}", "-sf", "load.xml", "-inf", "tokens.csv", "-m", str(n), "-l", str(n),
             "-r", "100", "-i", "127.0.0.1", "-p", str(free_port()), "-mp", "40000", "-nostdin", "-bg",
             "-trace_err", "-rtp_threadtasks", "50"],
            cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).wait()
        deadline = time.time() + 60
        while gw.metrics().get("patchbay_sip_calls_active", 0) < n:
            if time.time() > deadline:
                raise RuntimeError(f"only {gw.metrics().get('patchbay_sip_calls_active')} of {n} calls up")
            time.sleep(0.2)
        time.sleep(3)
        # Bare libopus, same machine, same run: what one mixed Ogg encode costs at least.
        bare = {}
        for rate in (8000, 16000):
            out = subprocess.run([os.path.join(ROOT, "target/release/webrtc-load"), "opus-baseline", "--rate",
                                  str(rate)], capture_output=True, text=True, check=True).stdout
            bare[rate] = json.loads(out.strip().splitlines()[-1])["us_per_frame"]
        print(f"machine: {machine()}")
        print(f"{n} PCMU legs in {len(sessions)} sessions of {args.per_session}, {args.seconds:.0f} s per phase")
        print(f"bare libopus encode (complexity 5, 20 ms): {bare[8000]:.1f} µs at 8 kHz, {bare[16000]:.1f} µs at 16 kHz")
        results = {}
        for name, spec in RECORD_PHASES:
            ids = []
            if spec:
                for s in sessions:
                    r = gw.api("POST", f"/sessions/{s}/recordings", {"mode": spec[0], "format": spec[1]})
                    ids.append((s, r["id"]))
                time.sleep(1)
            m0, c0, t0 = gw.metrics(), gw.cpu_seconds(), time.time()
            time.sleep(args.seconds)
            m1, c1, t1 = gw.metrics(), gw.cpu_seconds(), time.time()
            wall = t1 - t0
            cpu = (c1 - c0) / wall
            written = m1.get("patchbay_recording_bytes_written_total", 0) - m0.get(
                "patchbay_recording_bytes_written_total", 0)
            rx = m1.get("patchbay_rtp_received_total", 0) - m0.get("patchbay_rtp_received_total", 0)
            phase = {"cpu_core_fraction": round(cpu, 4), "disk_bytes_per_s": round(written / wall),
                     "loss_in": max(0.0, 1 - rx / (n * 50 * wall))}
            for s, rid in ids:
                gw.api("DELETE", f"/sessions/{s}/recordings/{rid}")
            if ids and moto:
                u0, t_up = gw.metrics().get("patchbay_recording_bytes_uploaded_total", 0), time.time()
                time.sleep(0.5)
                deadline = time.time() + 300
                while gw.metrics().get("patchbay_recording_uploads_pending", 0) > 0 and time.time() < deadline:
                    time.sleep(0.2)
                up = gw.metrics().get("patchbay_recording_bytes_uploaded_total", 0) - u0
                phase["upload_bytes_per_s"] = round(up / max(1e-3, time.time() - t_up))
            elif ids:
                time.sleep(2)
            results[name] = phase
        base = (results["unrecorded"]["cpu_core_fraction"] + results["unrecorded (again)"]["cpu_core_fraction"]) / 2
        for name, _ in RECORD_PHASES:
            r = results[name]
            r["extra_cpu_vs_unrecorded"] = round(r["cpu_core_fraction"] / base - 1, 4) if base else None
            r["recording_cores"] = round(r["cpu_core_fraction"] - base, 4)
            line = (f"{name:20s} gateway CPU {r['cpu_core_fraction'] * 100:6.1f} % of a core"
                    f"  ({r['extra_cpu_vs_unrecorded'] * 100:+5.1f} % vs unrecorded; recording costs"
                    f" {r['recording_cores']:.3f} cores)  disk {r['disk_bytes_per_s'] / 1e6:6.2f} MB/s"
                    f"  loss in {r['loss_in'] * 100:.3f} %")
            if "upload_bytes_per_s" in r:
                line += f"  upload {r['upload_bytes_per_s'] / 1e6:.2f} MB/s"
            print(line)
        # The G.711-only sessions mix at 8 kHz: one Opus encode per session per 20 ms.
        floor = len(sessions) * 50 * bare[8000] / 1e6
        ogg = results["mixed ogg"]["recording_cores"]
        results["mixed ogg"]["vs_bare_libopus"] = round(ogg / floor, 3) if floor else None
        print(f"mixed ogg against bare libopus ({len(sessions)} encodes at 8 kHz every 20 ms = {floor:.3f} cores): "
              f"{results['mixed ogg']['vs_bare_libopus']}x")
        print(json.dumps({"legs": n, "per_session": args.per_session, "phases": results}))
        return results
    finally:
        subprocess.run(["pkill", "-f", "sipp 127.0.0.1"], stderr=subprocess.DEVNULL)
        gw.stop()
        if moto:
            moto.terminate()
        shutil.rmtree(work, ignore_errors=True)


def tls_files():
    d = os.path.join(ROOT, "tests/data/tls")
    return os.path.join(d, "server.pem"), os.path.join(d, "server.key"), os.path.join(d, "ca.pem")


def start_stunnel_client(work, accept, connect):
    """stunnel accepting TCP on `accept`, speaking TLS (checked against the test CA) to `connect`."""
    _, _, ca = tls_files()
    conf = os.path.join(work, "stunnel.conf")
    with open(conf, "w") as f:
        f.write(f"foreground = yes\npid =\noutput = {work}/stunnel.log\n[sip]\nclient = yes\n"
                f"accept = 127.0.0.1:{accept}\nconnect = 127.0.0.1:{connect}\nCAfile = {ca}\n"
                "verifyChain = yes\ncheckIP = 127.0.0.1\n")
    proc = subprocess.Popen(["stunnel4", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", accept), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("stunnel did not start")


def run_cps_over(args, transport):
    work = tempfile.mkdtemp(prefix="pb-sipcps-")
    # One sipp is one source address: lift the per-source transaction cap (each call
    # holds two UDP server transactions for 32 s).
    extra, stunnel = ("--sip-max-transactions-per-source", "1000000"), None
    if transport != "udp":
        cert, key, _ = tls_files()
        tls_port = free_port()
        extra += ("--sip-tls-listen", f"127.0.0.1:{tls_port}", "--sip-tls-cert", cert, "--sip-tls-key", key,
                 "--sip-tcp-max-per-source", "100000", "--sip-tcp-max-connections", "100000")
    gw = Gateway(work, extra=extra)
    try:
        target, sipp_transport = f"127.0.0.1:{gw.sip}", "u1"
        if transport != "udp":
            local = free_port()
            stunnel = start_stunnel_client(work, local, tls_port)
            target = f"127.0.0.1:{local}"
            sipp_transport = "t1" if transport == "tls" else "tn"
        tokens = participants(gw, args.participants, 20)
        with open(os.path.join(work, "tokens.csv"), "w") as f:
            f.write("SEQUENTIAL\n" + "".join(f"{t};\n" for t in tokens))
        shutil.copy(os.path.join(ROOT, "tests/sipp/uac_cps.xml"), work)
        total = args.rate * args.seconds
        c0 = gw.cpu_seconds()
        t0 = time.time()
        r = subprocess.run(
            ["sipp", target, "-sf", "uac_cps.xml", "-inf", "tokens.csv", "-m", str(total),
             "-r", str(args.rate), "-l", str(args.rate * 2), "-i", "127.0.0.1", "-p", str(free_port()),
             "-t", sipp_transport,
             "-mp", "45000", "-nostdin", "-trace_stat", "-stf", "stats.csv", "-timeout", str(args.seconds + 30),
             "-timeout_error", "-max_socket", "2000"],
            cwd=work, capture_output=True, text=True)
        wall = time.time() - t0
        cpu = (gw.cpu_seconds() - c0) / wall
        stats = open(os.path.join(work, "stats.csv")).read().strip().splitlines()
        header, last = stats[0].split(";"), stats[-1].split(";")
        row = dict(zip(header, last))
        ok = int(row.get("SuccessfulCall(C)", 0))
        failed = int(row.get("FailedCall(C)", 0))
        m = gw.metrics()
        print(f"machine: {machine()}")
        print(f"[{transport}] target {args.rate} calls/s for {args.seconds} s: {ok} completed, {failed} failed, "
              f"{ok / wall:.0f} calls/s achieved over {wall:.1f} s (sipp exit {r.returncode})")
        print(f"[{transport}] gateway CPU {cpu * 100:.1f} % of one core; answered "
              f"{m.get('patchbay_sip_calls_accepted_total', 0):.0f}, "
              f"refused {m.get('patchbay_sip_calls_rejected_total', 0):.0f}, "
              f"TLS handshake failures {m.get('patchbay_sip_tls_handshake_failures_total', 0):.0f}")
        result = {"transport": transport, "rate": args.rate, "completed": ok, "failed": failed,
                  "achieved_cps": round(ok / wall), "gateway_cpu_core_fraction": round(cpu, 3)}
        print(json.dumps(result))
        return result
    finally:
        if stunnel:
            stunnel.kill()
        gw.stop()
        shutil.rmtree(work, ignore_errors=True)


def run_cps(args):
    """Every transport asked for, in this run; the first one's result is the A/B figure."""
    results = [run_cps_over(args, t) for t in args.transports.split(",")]
    first = dict(results[0])
    if len(results) > 1:
        udp = next((r for r in results if r["transport"] == "udp"), None)
        for r in results:
            if udp and r is not udp and udp["gateway_cpu_core_fraction"]:
                ratio = (r["gateway_cpu_core_fraction"] / max(r["achieved_cps"], 1)) / \
                    (udp["gateway_cpu_core_fraction"] / max(udp["achieved_cps"], 1))
                print(f"[{r['transport']}] gateway CPU per call: {ratio:.2f}x UDP's (same run)")
    return first


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    legs = sub.add_parser("legs")
    legs.add_argument("n", type=int)
    legs.add_argument("--seconds", type=float, default=10)
    legs.add_argument("--browsers", action="store_true",
                      help="one browser (webrtc-load listen) per session hearing every leg: the phone->browser path")
    record = sub.add_parser("record", help="the same load unrecorded and recorded (tracks wav, mixed wav, mixed ogg)")
    record.add_argument("n", type=int)
    record.add_argument("--per-session", type=int, default=4)
    record.add_argument("--seconds", type=float, default=10)
    record.add_argument("--s3", action="store_true", help="upload to a local moto server and report its throughput")
    cps = sub.add_parser("cps")
    cps.add_argument("rate", type=int)
    cps.add_argument("--seconds", type=int, default=10)
    cps.add_argument("--participants", type=int, default=2000)
    cps.add_argument("--transports", default="udp",
                     help="comma-separated: udp, tls (one TLS connection), tls-per-call (a handshake per call)")
    for sp in (legs, cps):
        sp.add_argument("--baseline", default=None,
                        help="a commit to measure the same way for A/B ratios (default: bench/baseline.rev; none: skip)")
    args = p.parse_args()
    subprocess.run([os.path.join(ROOT, "scripts/patch-crates")], check=True)
    if args.cmd == "record":
        subprocess.run(["cargo", "build", "--release", "-q", "--bin", "patchbay", "--bin", "webrtc-load"], cwd=ROOT,
                       check=True)
        run_record(args)
        return
    rev = args.baseline or open(os.path.join(ROOT, "bench/baseline.rev")).readline().strip()
    baseline = None
    if rev != "none":
        baseline = subprocess.run([os.path.join(ROOT, "bench/baseline.sh"), rev], cwd=ROOT, check=True,
                                  capture_output=True, text=True).stdout.strip().splitlines()[-1]
    subprocess.run(["cargo", "build", "--release", "-q", "--bin", "patchbay", "--bin", "webrtc-load"], cwd=ROOT,
                   check=True)
    run = {"legs": run_legs, "cps": run_cps}[args.cmd]
    current_binary = Gateway.binary
    print(f"== current: {Gateway.binary}")
    current = run(args)
    if baseline is None:
        return
    Gateway.binary = baseline
    if args.cmd == "cps":
        args.transports = "udp"  # the baseline commit may not speak TLS
    print(f"== baseline: {baseline}")
    base = run(args)
    if args.cmd == "legs":
        # A, B, B, A: whichever binary runs first on this machine can measure several
        # per cent slower, so each runs once first and once last; the ratios are of means.
        print(f"== baseline (again): {baseline}")
        base = mean_of(base, run(args))
        Gateway.binary = current_binary
        print(f"== current (again): {current_binary}")
        current = mean_of(current, run(args))
    ab = {}
    for key in ("cpu_us_per_leg_s", "legs_per_core_at_50pct", "latency_p99_ms", "opus_ratio", "achieved_cps",
                "gateway_cpu_core_fraction"):
        if current.get(key) and base.get(key):
            ab[key] = round(current[key] / base[key], 3)
    print("A/B (current / baseline): " + ", ".join(f"{k} {v}x" for k, v in ab.items()))
    print(json.dumps({"ab": ab, "current": current, "baseline": base}))


def mean_of(a, b):
    """Two runs' results as one: numbers averaged (both runs are kept under `runs`)."""
    out = {k: (a[k] + b[k]) / 2 if isinstance(a.get(k), (int, float)) and isinstance(b.get(k), (int, float))
           else a.get(k) for k in a}
    out["runs"] = [a, b]
    return out


if __name__ == "__main__":
    sys.exit(main())
