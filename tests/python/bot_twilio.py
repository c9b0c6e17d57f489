"""A voice bot speaking Twilio Media Streams, written from Twilio's published message
examples (not from Patchbay's code), for the stream participant tests.

    bot_twilio.py PORT REPORT_DIR [--say HZ:SECONDS:MARK ...] [--clear-after S]

Listens on 127.0.0.1:PORT (path /bot). For each stream: after `start`, sends each
`--say` utterance as base64 μ-law in 100 ms chunks, as fast as it can (faster than real
time, as bots do), each followed by a `mark` named MARK; with `--clear-after S`, sends
`clear` S seconds after the last utterance was sent. Keeps what it hears (the inbound
μ-law, decoded to 16-bit PCM) and every event. When the stream stops or closes it
writes REPORT_DIR/stream-N.json (events with their arrival times) and stream-N.pcm.
Prints "listening" once it accepts connections.
"""

import argparse
import asyncio
import base64
import json
import math
import os
import sys
import time

from aiohttp import web


def ulaw_encode(sample):
    """G.711 μ-law of one 16-bit sample (the ITU-T reference, as Twilio's audio is)."""
    bias, clip = 0x84, 32635
    sign = 0x80 if sample < 0 else 0
    if sample < 0:
        sample = -sample
    sample = min(sample, clip) + bias
    exponent = 7
    mask = 0x4000
    while exponent > 0 and not sample & mask:
        exponent -= 1
        mask >>= 1
    mantissa = (sample >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def ulaw_decode(byte):
    byte = ~byte & 0xFF
    sign = byte & 0x80
    exponent = (byte >> 4) & 0x07
    mantissa = byte & 0x0F
    sample = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return -sample if sign else sample


def tone(hz, seconds):
    n = int(8000 * seconds)
    return bytes(ulaw_encode(int(8000 * math.sin(2 * math.pi * hz * i / 8000))) for i in range(n))


class Bot:
    def __init__(self, args):
        self.args = args
        self.count = 0

    async def handle(self, request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.count += 1
        n = self.count
        t0 = time.time()
        events = []
        heard = bytearray()
        sid = None
        speaking = None

        async def speak():
            for say in self.args.say:
                hz, seconds, mark = say.split(":")
                audio = tone(float(hz), float(seconds))
                for i in range(0, len(audio), 800):
                    chunk = base64.b64encode(audio[i:i + 800]).decode()
                    await ws.send_str(json.dumps(
                        {"event": "media", "streamSid": sid, "media": {"payload": chunk}}))
                await ws.send_str(json.dumps(
                    {"event": "mark", "streamSid": sid, "mark": {"name": mark}}))
                events.append({"sent": "mark", "name": mark, "at": time.time()})
            if self.args.clear_after is not None:
                await asyncio.sleep(self.args.clear_after)
                await ws.send_str(json.dumps({"event": "clear", "streamSid": sid}))
                events.append({"sent": "clear", "at": time.time()})

        async for msg in ws:
            if msg.type != web.WSMsgType.TEXT:
                continue
            m = json.loads(msg.data)
            event = m.get("event")
            entry = {"event": event, "at": time.time()}
            if event == "start":
                sid = m["start"]["streamSid"]
                entry["start"] = m["start"]
                entry["streamSid"] = m.get("streamSid")
                speaking = asyncio.ensure_future(speak())
            elif event == "media":
                heard.extend(base64.b64decode(m["media"]["payload"]))
                if len(events) and events[-1].get("event") == "media":
                    events[-1]["count"] += 1
                    events[-1]["last"] = time.time()
                    continue
                entry["count"] = 1
                entry["track"] = m["media"]["track"]
            elif event == "mark":
                entry["name"] = m["mark"]["name"]
            elif event == "dtmf":
                entry["digit"] = m["dtmf"]["digit"]
            elif event == "stop":
                entry["stop"] = m["stop"]
            events.append(entry)
            if event == "stop":
                break
        if speaking:
            speaking.cancel()
        pcm = b"".join(int.to_bytes(ulaw_decode(b) & 0xFFFF, 2, "little") for b in heard)
        with open(os.path.join(self.args.report_dir, f"stream-{n}.pcm"), "wb") as f:
            f.write(pcm)
        with open(os.path.join(self.args.report_dir, f"stream-{n}.json"), "w") as f:
            json.dump({"t0": t0, "events": events, "heardSeconds": len(heard) / 8000}, f)
        return ws


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("port", type=int)
    p.add_argument("report_dir")
    p.add_argument("--say", action="append", default=[])
    p.add_argument("--clear-after", type=float)
    args = p.parse_args()
    app = web.Application()
    bot = Bot(args)
    app.router.add_get("/bot", bot.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", args.port).start()
    print("listening", flush=True)
    while True:
        await asyncio.sleep(3600)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
