"""A SIP caller over UDP that plays a tone over plain RTP or SDES-SRTP (pylibsrtp, an
independent SRTP implementation), for the tests of what an attacker can do to a leg.

    rtp_caller.py SIP_HOST:PORT TOKEN HZ SECONDS PAUSE_FROM PAUSE_TO [srtp]

Plays HZ (PCMU) for SECONDS, sending nothing in [PAUSE_FROM, PAUSE_TO) s; starts its
sequence numbers just below the wrap, so that SRTP's rollover counter is 1 for most of
the call. Prints JSON lines: {"leg": "ip:port"} once answered, {"received": n} at the end
(RTP packets from the gateway), then hangs up.
"""

import base64
import json
import math
import os
import random
import re
import socket
import struct
import sys
import time

import pylibsrtp


def ulaw(sample):
    bias, clip = 0x84, 32635
    sign = 0x80 if sample < 0 else 0
    sample = min(abs(sample), clip) + bias
    exponent, mask = 7, 0x4000
    while exponent > 0 and not sample & mask:
        exponent -= 1
        mask >>= 1
    mantissa = (sample >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    token, hz, seconds = sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
    pause = (float(sys.argv[5]), float(sys.argv[6]))
    srtp = len(sys.argv) > 7 and sys.argv[7] == "srtp"
    gw = (host, int(port))

    sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sip.bind(("127.0.0.1", 0))
    sip.settimeout(5)
    rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rtp.bind(("127.0.0.1", 0))
    rtp.setblocking(False)
    sport, mport = sip.getsockname()[1], rtp.getsockname()[1]

    key = os.urandom(30)
    crypto = ""
    proto = "RTP/AVP"
    if srtp:
        proto = "RTP/SAVP"
        crypto = "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:%s\r\n" % base64.b64encode(
            key
        ).decode()
    sdp = (
        "v=0\r\no=py 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        "m=audio %d %s 0\r\na=rtpmap:0 PCMU/8000\r\n%sa=sendrecv\r\n" % (mport, proto, crypto)
    )
    call_id = "py-%x" % random.getrandbits(48)
    via = "SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK%x" % (sport, random.getrandbits(40))
    common = (
        "From: <sip:py@127.0.0.1:%d>;tag=py1\r\nCall-ID: %s\r\nMax-Forwards: 70\r\n"
        % (sport, call_id)
    )
    invite = (
        "INVITE sip:%s SIP/2.0\r\nVia: %s\r\n%sTo: <sip:%s>\r\nCSeq: 1 INVITE\r\n"
        "Contact: <sip:py@127.0.0.1:%d>\r\nUser-To-User: %s;encoding=jwt\r\n"
        "Content-Type: application/sdp\r\nContent-Length: %d\r\n\r\n%s"
        % (sys.argv[1], via, common, sys.argv[1], sport, token, len(sdp), sdp)
    )
    sip.sendto(invite.encode(), gw)
    while True:
        text = sip.recv(65536).decode(errors="replace")
        code = int(text[8:11]) if text.startswith("SIP/2.0 ") else 0
        if code >= 200:
            break
    if code != 200:
        print(json.dumps({"error": text.splitlines()[0]}), flush=True)
        return
    to = re.search(r"^To:.*$", text, re.M | re.I).group(0)
    body = text.split("\r\n\r\n", 1)[1]
    leg_ip = re.search(r"c=IN IP4 (\S+)", body).group(1)
    leg_port = int(re.search(r"m=audio (\d+)", body).group(1))
    leg = (leg_ip, leg_port)
    ack = "ACK sip:%s SIP/2.0\r\nVia: %s\r\n%s%s\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n" % (
        sys.argv[1],
        via,
        common,
        to,
    )
    sip.sendto(ack.encode(), gw)
    print(json.dumps({"leg": "%s:%d" % leg}), flush=True)

    tx = rx = None
    if srtp:
        theirs = re.search(r"a=crypto:\d+ AES_CM_128_HMAC_SHA1_80 inline:([^|\s]+)", body)
        tx = pylibsrtp.Session(
            pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
        )
        rx = pylibsrtp.Session(
            pylibsrtp.Policy(
                key=base64.b64decode(theirs.group(1)),
                ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
            )
        )

    ssrc, seq, ts = random.getrandbits(32), 65500, random.getrandbits(32)
    start, n, received = time.monotonic(), 0, 0
    while True:
        due = start + n * 0.02
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        t = n * 0.02
        if t >= seconds:
            break
        n += 1
        while True:
            try:
                data = rtp.recv(2048)
            except BlockingIOError:
                break
            if rx is not None:
                try:
                    rx.unprotect(data)
                except pylibsrtp.Error:
                    continue
            received += 1
        if pause[0] <= t < pause[1]:
            seq, ts = (seq + 1) & 0xFFFF, (ts + 160) & 0xFFFFFFFF
            continue
        payload = bytes(
            ulaw(int(8000 * math.sin(2 * math.pi * hz * (ts + i) / 8000))) for i in range(160)
        )
        packet = struct.pack("!BBHII", 0x80, 0, seq, ts, ssrc) + payload
        if tx is not None:
            packet = tx.protect(packet)
        rtp.sendto(packet, leg)
        seq, ts = (seq + 1) & 0xFFFF, (ts + 160) & 0xFFFFFFFF

    print(json.dumps({"received": received}), flush=True)
    bye = (
        "BYE sip:%s SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK%x\r\n%s%s\r\n"
        "CSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
        % (sys.argv[1], sport, random.getrandbits(40), common, to)
    )
    sip.sendto(bye.encode(), gw)


if __name__ == "__main__":
    main()
