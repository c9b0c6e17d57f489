"""An independent Bandwidth v3 device client (aiortc, not the Bandwidth SDK), behaving
like Bandwidth's Android and iOS SDKs: it opens the negotiated `__heartbeat__` and
`__diagnostics__` data channels on both connections and never answers `PING`.

It speaks the v3 JSON-RPC the SDKs speak (setMediaPreferences, offerSdp with
mediaMetadata, answerSdp to the server's sdpOffer), publishes a 440 Hz tone under the
alias given, and receives whatever the server offers. Every second it prints one JSON
line of what it observed: audio frames received, their level, WebSocket pings from the
server (answered, as every WebSocket stack does), whether the socket is open.

Usage: v3_client.py WS_URL TOKEN UNIQUE_ID ALIAS SECONDS
"""

import array
import asyncio
import faulthandler
import gc
import fractions
import json
import logging
import math
import signal
import sys
import time

import aiohttp
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack
from av import AudioFrame

# aiortc's own account of the transport (DTLS states, SRTP or RTP that failed to
# unprotect, parse or route) on stderr, which a failing test shows; not its lines per
# packet.
class _NotPerPacket(logging.Filter):
    def filter(self, record):
        text = record.getMessage()
        return "RtpPacket(" not in text and "Rtcp" not in text


_handler = logging.StreamHandler(sys.stderr)
_handler.addFilter(_NotPerPacket())
_handler.setFormatter(logging.Formatter("%(relativeCreated)d %(name)s %(message)s"))
for _name in ("aiortc.rtcdtlstransport", "aiortc.rtcrtpreceiver"):
    logging.getLogger(_name).setLevel(logging.DEBUG)
    logging.getLogger(_name).addHandler(_handler)


def _trace_rtp():
    """The first RTP packets of each SSRC and every 100th after, on stderr."""
    from aiortc.rtcrtpreceiver import RTCRtpReceiver

    original = RTCRtpReceiver._handle_rtp_packet
    seen = {}

    async def traced(self, packet, arrival_time_ms):
        n = seen.get(packet.ssrc, 0)
        seen[packet.ssrc] = n + 1
        if n < 12 or n % 100 == 0:
            print(f"rtp ssrc={packet.ssrc} n={n} pt={packet.payload_type} seq={packet.sequence_number} "
                  f"ts={packet.timestamp} len={len(packet.payload)} mid={packet.extensions.mid}",
                  file=sys.stderr, flush=True)
        return await original(self, packet, arrival_time_ms)

    RTCRtpReceiver._handle_rtp_packet = traced


_trace_rtp()

def rebundle(pc):
    """Every m-line on the data channel's transport, as the offer's BUNDLE says.

    aiortc (1.16) gets a first offer with two audio m-lines behind the data channel's
    wrong: it creates the second transceiver on the first one's own transport (its
    "balanced" policy), marks it bundled, then moves only the first onto the data
    channel's transport and stops the old one; the second never starts receiving and its
    packets reach the first one's jitter buffer, which then decodes nothing. Browsers and
    Bandwidth's native SDKs (libwebrtc) bundle every m-line.
    """
    if pc.sctp is None:
        return
    primary = pc.sctp.transport
    for t in pc.getTransceivers():
        if t.receiver.transport is not primary:
            t.receiver.setTransport(primary)
            t.sender.setTransport(primary)

RATE = 48000
SAMPLES = 960  # 20 ms


class Tone(MediaStreamTrack):
    """A 440 Hz tone, in 20 ms frames paced by the clock."""

    kind = "audio"

    def __init__(self):
        super().__init__()
        self.pts = 0
        self.start = None

    async def recv(self):
        if self.start is None:
            self.start = time.monotonic()
        due = self.start + self.pts / RATE
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        frame = AudioFrame(format="s16", layout="mono", samples=SAMPLES)
        samples = bytearray()
        for i in range(SAMPLES):
            v = int(8000 * math.sin(2 * math.pi * 440 * (self.pts + i) / RATE))
            samples += v.to_bytes(2, "little", signed=True)
        frame.planes[0].update(bytes(samples))
        frame.sample_rate = RATE
        frame.pts = self.pts
        frame.time_base = fractions.Fraction(1, RATE)
        self.pts += SAMPLES
        return frame


def sdk_channels(pc):
    """The SDKs' negotiated channels; like the native SDKs, no handler answers PING."""
    return [
        pc.createDataChannel("__heartbeat__", negotiated=True, id=0, protocol="udp"),
        pc.createDataChannel("__diagnostics__", negotiated=True, id=1, protocol="udp"),
    ]


class Client:
    def __init__(self, ws):
        self.ws = ws
        self.next_id = 1
        self.replies = {}
        self.frames = 0
        # Frames per received track (a stalled one stands out).
        self.track_frames = {}
        self.level = 0.0
        self.pings = 0
        self.pings_on_heartbeat = 0
        self.revision = 0
        self.subscribe = None
        self.closed = None
        self.keep = []

    async def rpc(self, method, params):
        rid = self.next_id
        self.next_id += 1
        fut = asyncio.get_running_loop().create_future()
        self.replies[rid] = fut
        await self.ws.send_str(json.dumps({"jsonrpc": "2.0", "method": method, "params": params, "id": rid}))
        return await asyncio.wait_for(fut, 10)

    async def read(self):
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.PING:
                self.pings += 1
                await self.ws.pong(msg.data)
            elif msg.type == aiohttp.WSMsgType.TEXT:
                m = json.loads(msg.data)
                if "id" in m and m["id"] in self.replies:
                    self.replies.pop(m["id"]).set_result(m)
                elif m.get("method") == "sdpOffer":
                    asyncio.create_task(self.answer(m["params"]))
            elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                break
        self.closed = {"code": self.ws.close_code}

    async def answer(self, params):
        if params["sdpRevision"] <= self.revision:
            return
        self.revision = params["sdpRevision"]
        if self.subscribe is None:
            self.subscribe = RTCPeerConnection()
            self.keep += sdk_channels(self.subscribe)
            self.subscribe.on("track", lambda track: asyncio.create_task(self.listen(track)))
        await self.subscribe.setRemoteDescription(RTCSessionDescription(params["sdpOffer"], "offer"))
        rebundle(self.subscribe)
        answer = await self.subscribe.createAnswer()
        await self.subscribe.setLocalDescription(answer)
        await self.rpc("answerSdp", {"sdpAnswer": self.subscribe.localDescription.sdp})

    async def listen(self, track):
        if track.kind != "audio":
            return
        while True:
            try:
                frame = await track.recv()
            except Exception:
                return
            self.frames += 1
            self.track_frames[track.id] = self.track_frames.get(track.id, 0) + 1
            # Decoded s16 samples (numpy is not needed: the standard array module).
            samples = array.array("h", bytes(frame.planes[0]))[::8]
            if len(samples):
                self.level = math.sqrt(sum(x * x for x in samples) / len(samples))


def _dump_tasks():
    """SIGUSR1 (sent by a test whose wait failed): every task's and thread's stack, and
    the exceptions of tasks nobody awaited (reported when they are collected)."""
    gc.collect()
    for task in asyncio.all_tasks():
        print(f"task {task.get_name()}:", file=sys.stderr)
        task.print_stack(file=sys.stderr)
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    sys.stderr.flush()


async def main():
    url, token, unique_id, alias, seconds = sys.argv[1:6]
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, _dump_tasks)
    sep = "&" if "?" in url else "?"
    full = f"{url}/v3/{sep}token={token}&client=android&sdkVersion=aiortc&uniqueId={unique_id}"
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(full, autoping=False, heartbeat=None) as ws:
            c = Client(ws)
            reader = asyncio.create_task(c.read())
            r = await c.rpc("setMediaPreferences", {"protocol": "WEBRTC"})
            assert "result" in r, r
            publish = RTCPeerConnection()
            c.keep += sdk_channels(publish)
            publish.addTransceiver(Tone(), direction="sendonly")
            offer = await publish.createOffer()
            await publish.setLocalDescription(offer)
            sdp = publish.localDescription.sdp
            msid = next(
                (line.split(":", 1)[1].split()[0] for line in sdp.splitlines() if line.startswith("a=msid:")),
                None,
            )
            streams = {msid: {"alias": alias}} if msid else {}
            r = await c.rpc(
                "offerSdp",
                {"sdpOffer": sdp, "mediaMetadata": {"mediaStreams": streams, "dataChannels": {}}},
            )
            assert "result" in r, r
            answer = r["result"]["sdpAnswer"]
            await publish.setRemoteDescription(RTCSessionDescription(answer, "answer"))
            # Where the server's answer tells it to send (its candidates and c= lines).
            print(
                json.dumps(
                    {
                        "answer": [
                            line
                            for line in answer.splitlines()
                            if line.startswith("a=candidate") or line.startswith("c=")
                        ]
                    }
                ),
                flush=True,
            )
            start = time.monotonic()
            while time.monotonic() - start < float(seconds) and c.closed is None:
                await asyncio.sleep(1)
                # What arrived on the subscribing connection, per SSRC and in all (for a
                # failure's report: packets that stop, or arrive and are not decoded).
                inbound = {}
                if c.subscribe is not None:
                    for s in (await c.subscribe.getStats()).values():
                        if s.type == "inbound-rtp":
                            inbound[str(s.ssrc)] = s.packetsReceived
                        elif s.type == "transport":
                            inbound["transport"] = s.packetsReceived
                print(
                    json.dumps(
                        {
                            "t": round(time.monotonic() - start, 1),
                            "inbound": inbound,
                            "tracks": c.track_frames,
                            "frames": c.frames,
                            "level": round(c.level, 1),
                            "pings": c.pings,
                            "open": c.closed is None,
                            "publishing": publish.connectionState,
                        }
                    ),
                    flush=True,
                )
            print(json.dumps({"done": True, "closed": c.closed, "frames": c.frames, "pings": c.pings}), flush=True)
            reader.cancel()
            await publish.close()
            if c.subscribe:
                await c.subscribe.close()


if __name__ == "__main__":
    asyncio.run(main())
