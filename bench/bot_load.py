"""The delay probe of `bench/bots.py` (needs aiohttp: run with target/test-venv/bin/python).

  bot_load.py probe SIP_PORT TOKEN BOT_PORT SECONDS     one SIP caller (UDP, PCMU) and one
      bot in a session of their own, both in this process (one clock): every second
      the caller speaks 100 ms of tone after silence and the bot notes when it hears it;
      half a second later the bot does the same towards the caller. Prints the delays
      (caller -> bot, bot -> caller) in ms as one JSON line.

The bots that make the load are `bot-load` (bench/src/bot_load.rs).
"""

import asyncio
import base64
import json
import math
import os
import random
import socket
import sys
import time

from aiohttp import web

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sip_load import ulaw as ulaw_encode  # noqa: E402

FRAME_S = 0.02


def ulaw_decode(byte):
    byte = ~byte & 0xFF
    sample = ((((byte & 0x0F) << 3) + 0x84) << ((byte >> 4) & 0x07)) - 0x84
    return -sample if byte & 0x80 else sample


def tone_ulaw(hz, n, amplitude=8000):
    return bytes(ulaw_encode(int(amplitude * math.sin(2 * math.pi * hz * i / 8000))) for i in range(n))


SILENCE = bytes([0xFF]) * 160
LOUD = tone_ulaw(880, 800)  # 100 ms


async def paced(period, step):
    """Call `step(i)` every `period` seconds, on the clock (no drift)."""
    start = time.monotonic()
    i = 0
    while True:
        await step(i)
        i += 1
        await asyncio.sleep(max(0.0, start + i * period - time.monotonic()))


def loud(ulaw):
    return max(abs(ulaw_decode(b)) for b in ulaw[::4]) > 3000


class Caller(asyncio.DatagramProtocol):
    """A bare SIP caller over UDP: INVITE with the token in User-To-User, ACK, RTP, BYE."""

    def __init__(self):
        self.responses = asyncio.Queue()
        self.rtp = None
        self.heard_loud = []
        self.quiet = True

    def datagram_received(self, data, addr):
        self.responses.put_nowait(data.decode(errors="replace"))


class Rtp(asyncio.DatagramProtocol):
    def __init__(self, caller):
        self.caller = caller

    def datagram_received(self, data, addr):
        if len(data) < 12 + 160 or data[1] & 0x7F != 0:
            return
        is_loud = loud(data[12:])
        if is_loud and self.caller.quiet:
            self.caller.heard_loud.append(time.time())
        self.caller.quiet = not is_loud


async def probe(sip_port, token, bot_port, seconds):
    loop = asyncio.get_running_loop()
    caller = Caller()
    sip, _ = await loop.create_datagram_endpoint(lambda: caller, local_addr=("127.0.0.1", 0))
    rtp, _ = await loop.create_datagram_endpoint(lambda: Rtp(caller), local_addr=("127.0.0.1", 0))
    sip_local = sip.get_extra_info("sockname")[1]
    rtp_local = rtp.get_extra_info("sockname")[1]
    # The bot side: one stream, which speaks and listens on the same clock.
    bot = {"loud_at": [], "quiet": True, "ws": None, "sid": None}

    async def handle(request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        bot["ws"] = ws
        async for msg in ws:
            if msg.type != web.WSMsgType.TEXT:
                continue
            m = json.loads(msg.data)
            if m.get("event") == "start":
                bot["sid"] = m["start"]["streamSid"]
            elif m.get("event") == "media":
                is_loud = loud(base64.b64decode(m["media"]["payload"]))
                if is_loud and bot["quiet"]:
                    bot["loud_at"].append(time.time())
                bot["quiet"] = not is_loud
            elif m.get("event") == "stop":
                break
        return ws

    app = web.Application()
    app.router.add_get("/bot", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", bot_port).start()
    print("listening", flush=True)

    call_id = f"probe-{random.getrandbits(32)}@127.0.0.1"
    sdp = ("v=0\r\no=probe 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
           f"m=audio {rtp_local} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\n")
    target = ("127.0.0.1", sip_port)

    def request(method, cseq, to_tag="", body=""):
        return (f"{method} sip:127.0.0.1:{sip_port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{sip_local};branch=z9hG4bK{random.getrandbits(48):x}\r\n"
                f"From: <sip:probe@127.0.0.1:{sip_local}>;tag=probe\r\n"
                f"To: <sip:127.0.0.1:{sip_port}>{to_tag}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n"
                f"Contact: <sip:probe@127.0.0.1:{sip_local}>\r\nMax-Forwards: 70\r\n"
                f"User-To-User: {token};encoding=jwt\r\n"
                + ("Content-Type: application/sdp\r\n" if body else "")
                + f"Content-Length: {len(body)}\r\n\r\n{body}").encode()

    sip.sendto(request("INVITE", 1, body=sdp), target)
    while True:
        r = await asyncio.wait_for(caller.responses.get(), 10)
        code = int(r.split(" ", 2)[1])
        if code >= 200:
            break
    if code != 200:
        raise RuntimeError(f"the probe call was refused: {r.splitlines()[0]}")
    to_tag = next(line.split(">", 1)[1] for line in r.splitlines() if line.lower().startswith("to:"))
    media_port = next(int(line.split()[1]) for line in r.splitlines() if line.startswith("m=audio"))
    sip.sendto(request("ACK", 1, to_tag), target)
    remote = ("127.0.0.1", media_port)

    caller_loud_at, bot_loud_sent = [], []
    seq, ts, ssrc = random.getrandbits(16), random.getrandbits(32), random.getrandbits(32)

    async def caller_step(i):
        nonlocal seq, ts
        phase = i % 50  # a cycle of one second
        payload = LOUD[(phase - 10) * 160:(phase - 9) * 160] if 10 <= phase < 15 else SILENCE
        if phase == 10:
            caller_loud_at.append(time.time())
        header = bytes([0x80, 0]) + seq.to_bytes(2, "big") + ts.to_bytes(4, "big") + ssrc.to_bytes(4, "big")
        rtp.sendto(header + payload, remote)
        seq, ts = (seq + 1) & 0xFFFF, (ts + 160) & 0xFFFFFFFF

    async def bot_step(i):
        if bot["ws"] is None or bot["sid"] is None:
            return
        phase = i % 50
        payload = LOUD[(phase - 35) * 160:(phase - 34) * 160] if 35 <= phase < 40 else SILENCE
        if phase == 35:
            bot_loud_sent.append(time.time())
        await bot["ws"].send_str(json.dumps({"event": "media", "streamSid": bot["sid"],
                                             "media": {"payload": base64.b64encode(payload).decode()}}))

    tasks = [asyncio.ensure_future(paced(FRAME_S, caller_step)), asyncio.ensure_future(paced(FRAME_S, bot_step))]
    await asyncio.sleep(seconds)
    for t in tasks:
        t.cancel()
    sip.sendto(request("BYE", 2, to_tag), target)
    await asyncio.sleep(0.3)

    def delays(sent, heard):
        out = []
        for s in sent:
            after = [h - s for h in heard if 0 <= h - s < 0.5]
            if after:
                out.append(round(min(after) * 1000, 2))
        return out

    print(json.dumps({"caller_to_bot_ms": delays(caller_loud_at, bot["loud_at"]),
                      "bot_to_caller_ms": delays(bot_loud_sent, caller.heard_loud),
                      "probes": len(caller_loud_at)}), flush=True)


def main():
    if len(sys.argv) != 6 or sys.argv[1] != "probe":
        sys.exit(__doc__)
    asyncio.run(probe(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), float(sys.argv[5])))


if __name__ == "__main__":
    main()
