"""A voice bot speaking Twilio Media Streams or Bandwidth's bidirectional streams,
written from Twilio's and Bandwidth's published message examples (not from Patchbay's
code), for the stream participant tests.

    bot.py PORT REPORT_DIR [--protocol twilio|bandwidth|raw] [--say HZ:SECONDS:MARK ...]
           [--clear-after S] [--close-after S] [--pipecat]

--pipecat (Twilio only): the stream's messages go through Pipecat's own serializer
(pipecat-ai's `TwilioFrameSerializer`, as a Pipecat bot runs it: 16 kHz in its pipeline):
what the bot hears is what Pipecat decodes from our `media` (16 kHz PCM, the report's
"rate"), digits are what it makes of our `dtmf`, and the bot's speech is what Pipecat
serializes from 16 kHz audio frames (Pipecat's Twilio serializer has no marks: none sent).

Bandwidth: the bot answers with `playAudio` in `audio/pcm;rate=16000` (16-bit little
endian) and has no marks; its events are reported under "event" as Twilio's are.
Raw (Patchbay's own, from its README): binary frames of 16-bit little-endian PCM at the
rate `start` names, both ways; `mark` and `clear` as JSON text. What it heard is written
at that rate (the report's "rate").

Listens on 127.0.0.1:PORT (path /bot). For each stream: after `start`, sends each
`--say` utterance as base64 μ-law in 100 ms chunks, as fast as it can (faster than real
time, as bots do), each followed by a `mark` named MARK; with `--clear-after S`, sends
`clear` S seconds after the last utterance was sent; with `--close-after S`, closes the
WebSocket (a close frame) S seconds after `start`: the bot is done. Keeps what it hears (the inbound
μ-law, decoded to 16-bit PCM) and every event. When the stream stops or closes it
writes REPORT_DIR/stream-N.json (events with their arrival times) and stream-N.pcm.
The report also has the handshake's request headers. Prints "listening" once it accepts
connections.
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


def pcm16_tone(hz, seconds, rate):
    n = int(rate * seconds)
    return b"".join(
        int(8000 * math.sin(2 * math.pi * hz * i / rate)).to_bytes(2, "little", signed=True)
        for i in range(n))


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

        bandwidth = self.args.protocol == "bandwidth"
        raw = self.args.protocol == "raw"
        rate = 8000
        pipecat = None  # Pipecat's serializer, once `start` named the stream

        async def speak():
            for say in self.args.say:
                hz, seconds, mark = say.split(":")
                if raw:
                    audio = pcm16_tone(float(hz), float(seconds), rate)
                    step = rate // 5
                    for i in range(0, len(audio), step):
                        await ws.send_bytes(audio[i:i + step])
                    await ws.send_str(json.dumps({"event": "mark", "name": mark}))
                    events.append({"sent": "mark", "name": mark, "at": time.time()})
                    continue
                if bandwidth:
                    audio = pcm16_tone(float(hz), float(seconds), 16000)
                    for i in range(0, len(audio), 3200):
                        await ws.send_str(json.dumps({"eventType": "playAudio", "media": {
                            "contentType": "audio/pcm;rate=16000",
                            "payload": base64.b64encode(audio[i:i + 3200]).decode()}}))
                    continue
                if pipecat:
                    from pipecat.frames.frames import OutputAudioRawFrame
                    audio = pcm16_tone(float(hz), float(seconds), 16000)
                    for i in range(0, len(audio), 640):
                        frame = OutputAudioRawFrame(audio=audio[i:i + 640], sample_rate=16000, num_channels=1)
                        out = await pipecat.serialize(frame)
                        if out:
                            await ws.send_str(out)
                    continue
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
                clear = {"eventType": "clear"} if bandwidth else {"event": "clear", "streamSid": sid}
                if raw:
                    clear = {"event": "clear"}
                await ws.send_str(json.dumps(clear))
                events.append({"sent": "clear", "at": time.time()})

        pcm_heard = bytearray()
        async for msg in ws:
            if msg.type == web.WSMsgType.BINARY and raw:
                pcm_heard.extend(msg.data)
                continue
            if msg.type != web.WSMsgType.TEXT:
                continue
            m = json.loads(msg.data)
            event = m.get("eventType") if bandwidth else m.get("event")
            entry = {"event": event, "at": time.time()}
            if event == "start" and raw:
                rate = m["sampleRate"]
                sid = m["streamId"]
                entry["startMessage"] = m
                speaking = asyncio.ensure_future(speak())
            elif event == "start" and bandwidth:
                sid = m["metadata"]["streamId"]
                entry["metadata"] = m["metadata"]
                entry["streamParams"] = m.get("streamParams")
                speaking = asyncio.ensure_future(speak())
            elif event == "start":
                sid = m["start"]["streamSid"]
                entry["start"] = m["start"]
                entry["streamSid"] = m.get("streamSid")
                if self.args.pipecat:
                    pipecat = await pipecat_serializer(m)
                    rate = 16000
                speaking = asyncio.ensure_future(speak())
            if event == "start" and self.args.close_after is not None:
                async def close_later():
                    await asyncio.sleep(self.args.close_after)
                    await ws.close()
                asyncio.ensure_future(close_later())
            elif pipecat and event in ("media", "dtmf"):
                from pipecat.frames.frames import InputAudioRawFrame, InputDTMFFrame
                frame = await pipecat.deserialize(msg.data)
                if frame is None:
                    continue  # its resampler's first input gives no audio yet
                if isinstance(frame, InputAudioRawFrame):
                    pcm_heard.extend(frame.audio)
                    if len(events) and events[-1].get("event") == "media":
                        events[-1]["count"] += 1
                        continue
                    entry["count"] = 1
                    entry["sampleRate"] = frame.sample_rate
                elif isinstance(frame, InputDTMFFrame):
                    entry["digit"] = frame.button.value
                else:
                    entry["frame"] = type(frame).__name__
            elif event == "media":
                payload = m["payload"] if bandwidth else m["media"]["payload"]
                heard.extend(base64.b64decode(payload))
                if len(events) and events[-1].get("event") == "media":
                    events[-1]["count"] += 1
                    events[-1]["last"] = time.time()
                    continue
                entry["count"] = 1
                entry["track"] = m["track"] if bandwidth else m["media"]["track"]
            elif event == "mark":
                entry["name"] = m["name"] if raw else m["mark"]["name"]
            elif event == "dtmf":
                entry["digit"] = m["digit"] if raw else m["dtmf"]["digit"]
            elif event == "stop":
                entry["stop"] = m.get("metadata") if bandwidth else m.get("stop")
            events.append(entry)
            if event == "stop":
                break
        if speaking:
            speaking.cancel()
        pcm = b"".join(int.to_bytes(ulaw_decode(b) & 0xFFFF, 2, "little") for b in heard)
        if raw or pipecat:
            pcm = bytes(pcm_heard)
        with open(os.path.join(self.args.report_dir, f"stream-{n}.pcm"), "wb") as f:
            f.write(pcm)
        with open(os.path.join(self.args.report_dir, f"stream-{n}.json"), "w") as f:
            json.dump({"t0": t0, "events": events, "rate": rate,
                       "requestHeaders": dict(request.headers),
                       "heardSeconds": len(pcm) / 2 / rate}, f)
        return ws


async def pipecat_serializer(start):
    """Pipecat's Twilio serializer for the stream `start` names, set up as a Pipecat
    pipeline at 16 kHz sets it up (no hang-up through Twilio's REST API)."""
    from types import SimpleNamespace

    from pipecat.serializers.twilio import TwilioFrameSerializer

    serializer = TwilioFrameSerializer(
        start["start"]["streamSid"], start["start"].get("callSid"),
        params=TwilioFrameSerializer.InputParams(auto_hang_up=False))
    await serializer.setup(SimpleNamespace(audio_in_sample_rate=16000))
    return serializer


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("port", type=int)
    p.add_argument("report_dir")
    p.add_argument("--protocol", default="twilio", choices=["twilio", "bandwidth", "raw"])
    p.add_argument("--say", action="append", default=[])
    p.add_argument("--clear-after", type=float)
    p.add_argument("--close-after", type=float)
    p.add_argument("--pipecat", action="store_true")
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
