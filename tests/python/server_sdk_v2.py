"""Bandwidth's Python server SDK (PyPI `bandwidth-sdk` 13.x, the last with WebRTC) against
Patchbay, used with its defaults: its `Participant` model sends `deviceApiVersion: "V2"`
unless told otherwise. Creates a session and two participants in it, subscribed to the
whole session, and prints one JSON line: the ids, the tokens, and what the SDK sent.

Usage: PATCHBAY_BASE=http://127.0.0.1:PORT python server_sdk_v2.py
"""
import json
import os

from bandwidth.bandwidth_client import BandwidthClient
from bandwidth.configuration import Environment
from bandwidth.webrtc.models.participant import Participant
from bandwidth.webrtc.models.session import Session
from bandwidth.webrtc.models.subscriptions import Subscriptions

ACCOUNT = "dev"

client = BandwidthClient(
    web_rtc_basic_auth_user_name="dev",
    web_rtc_basic_auth_password="dev",
    environment=Environment.CUSTOM,
    base_url=os.environ["PATCHBAY_BASE"] + "/v1",
)
webrtc = client.web_rtc_client.client

session = webrtc.create_session(ACCOUNT, Session(tag="python-sdk")).body
out = {"sessionId": session.id, "participants": []}
for tag in ("python-a", "python-b"):
    # Defaults, as an application would write it: permissions and a tag only.
    body = Participant(publish_permissions=["AUDIO", "VIDEO"], tag=tag)
    sent = body.device_api_version
    created = webrtc.create_participant(ACCOUNT, body).body
    webrtc.add_participant_to_session(
        ACCOUNT, session.id, created.participant.id, Subscriptions(session_id=session.id)
    )
    out["participants"].append(
        {
            "id": created.participant.id,
            "token": created.token,
            "sentDeviceApiVersion": sent,
            "deviceApiVersion": created.participant.device_api_version,
        }
    )
print(json.dumps(out))
