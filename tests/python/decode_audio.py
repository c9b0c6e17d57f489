"""Decode an audio file with an independent decoder (PyAV: FFmpeg's libavformat and
libavcodec, installed with aiortc) and write its samples as 16-bit little-endian PCM,
interleaved, at the file's own rate. Prints one JSON line: what the container says and
what was decoded, and each packet's bytes (hex) when asked.

    python decode_audio.py IN.(ogg|wav) OUT.raw [--packets]
"""
import json
import sys

import av


def main():
    src, out = sys.argv[1], sys.argv[2]
    want_packets = "--packets" in sys.argv[3:]
    container = av.open(src)
    stream = container.streams.audio[0]
    codec = stream.codec_context.name
    rate = stream.codec_context.sample_rate or stream.rate
    channels = stream.codec_context.channels
    layout = "stereo" if channels == 2 else "mono"
    # Ogg Opus always decodes at 48 kHz; everything is kept at the decoder's rate.
    resampler = None
    samples = 0
    packets = []
    with open(out, "wb") as f:
        for packet in container.demux(stream):
            if packet.size and want_packets:
                packets.append(bytes(packet).hex())
            for frame in packet.decode():
                if resampler is None:
                    rate = frame.sample_rate
                    resampler = av.AudioResampler(format="s16", layout=layout, rate=rate)
                for r in resampler.resample(frame):
                    data = bytes(r.planes[0])[: r.samples * channels * 2]
                    f.write(data)
                    samples += r.samples
        if resampler is not None:
            for r in resampler.resample(None):
                f.write(bytes(r.planes[0])[: r.samples * channels * 2])
                samples += r.samples
    print(json.dumps({
        "codec": codec,
        "rate": rate,
        "channels": channels,
        "samples": samples,
        "seconds": samples / rate if rate else 0,
        "packets": packets,
    }))


if __name__ == "__main__":
    main()
