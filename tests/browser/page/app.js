// Test page: the unmodified Bandwidth browser SDK (bundled by esbuild at test time),
// plus what a user would observe — WebSocket closes, streams that became available,
// audio energy and tone peaks, decoded video frames. Driven by ../drive.js.
import BandwidthRtcModule from "@bandwidth/webrtc-browser";

const BandwidthRtc = BandwidthRtcModule.default || BandwidthRtcModule;

// Record every close of every WebSocket the SDK opens (code and reason are what the
// server sent: the SDK itself only reconnects).
const closes = [];
const sockets = [];
// When set, the SDK's sockets carry this uniqueId instead of its own (an attacker
// posing as another participant's device).
let forcedUniqueId = null;
const NativeWebSocket = window.WebSocket;
window.WebSocket = class extends NativeWebSocket {
  constructor(...args) {
    if (forcedUniqueId !== null && typeof args[0] === "string") {
      args[0] = args[0].replace(/uniqueId=[^&]*/, `uniqueId=${encodeURIComponent(forcedUniqueId)}`);
    }
    super(...args);
    sockets.push(this);
    this.addEventListener("close", (e) => closes.push({ code: e.code, reason: e.reason }));
  }
};

// When set, the page's data channels swallow the SDK's heartbeat answers.
let muteHeartbeat = false;
const nativeSend = RTCDataChannel.prototype.send;
RTCDataChannel.prototype.send = function (data) {
  if (muteHeartbeat && data === "PONG") return;
  return nativeSend.call(this, data);
};

// When set (before connect), every peer connection the SDK makes runs its encoded
// frames through the page (encoded insertable streams): the Opus frames the microphone's
// sender sends are kept (hex), untouched, to compare with what a recording holds.
let captureSent = false;
const sentAudio = [];
const NativePeerConnection = window.RTCPeerConnection;
function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
function passThrough(endpoint) {
  try {
    const { readable, writable } = endpoint.createEncodedStreams();
    readable.pipeTo(writable).catch(() => {});
  } catch {
    /* already piped */
  }
}
function tapSender(sender, kind) {
  try {
    const { readable, writable } = sender.createEncodedStreams();
    readable
      .pipeThrough(
        new TransformStream({
          transform(frame, out) {
            if (kind === "audio" && sentAudio.length < 10000) sentAudio.push(hex(new Uint8Array(frame.data)));
            out.enqueue(frame);
          },
        }),
      )
      .pipeTo(writable)
      .catch(() => {});
  } catch {
    /* already piped */
  }
}
window.RTCPeerConnection = class extends NativePeerConnection {
  constructor(config, ...rest) {
    super(captureSent ? { ...(config || {}), encodedInsertableStreams: true } : config, ...rest);
    if (captureSent) this.addEventListener("track", (e) => passThrough(e.receiver));
  }
  addTrack(track, ...streams) {
    const sender = super.addTrack(track, ...streams);
    if (captureSent) tapSender(sender, track.kind);
    return sender;
  }
  addTransceiver(trackOrKind, init) {
    const t = super.addTransceiver(trackOrKind, init);
    if (captureSent) {
      tapSender(t.sender, typeof trackOrKind === "string" ? trackOrKind : trackOrKind.kind);
      passThrough(t.receiver);
    }
    return t;
  }
};

const events = [];
const analysers = {};
const videos = {};
let rtc = null;
let audioContext = null;

/** Play a received stream on a muted element and tap its audio with an analyser. */
function listen(stream) {
  const el = document.createElement(stream.mediaStream.getVideoTracks().length ? "video" : "audio");
  el.muted = true;
  el.autoplay = true;
  el.srcObject = stream.mediaStream;
  document.getElementById("media").appendChild(el);
  if (stream.mediaStream.getVideoTracks().length) {
    videos[stream.endpointId] = el;
  }
  if (stream.mediaStream.getAudioTracks().length) {
    audioContext = audioContext || new AudioContext();
    const source = audioContext.createMediaStreamSource(stream.mediaStream);
    const analyser = audioContext.createAnalyser();
    analyser.fftSize = 2048;
    source.connect(analyser);
    analysers[stream.endpointId] = analyser;
  }
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

window.pb = {
  closes,
  events,

  /** Keep the encoded audio frames this page sends (call before connect). */
  captureSent() {
    captureSent = true;
  },

  /** The encoded audio frames sent so far (hex), in order. */
  sentAudio() {
    return sentAudio;
  },

  /** Make the SDK's sockets use this uniqueId. */
  forceUniqueId(id) {
    forcedUniqueId = id;
  },

  /** The URLs of every WebSocket the SDK opened (they carry its uniqueId). */
  socketUrls() {
    return sockets.map((ws) => ws.url);
  },

  /** Connect with a bound: the SDK's connect() never rejects, it retries forever. */
  async connect(token, websocketUrl, timeoutMs) {
    rtc = new BandwidthRtc(window.PB_LOG || "warn");
    rtc.onStreamAvailable((s) => {
      events.push({
        type: "available",
        endpointId: s.endpointId,
        participantId: s.participantId,
        alias: s.alias,
        mediaTypes: s.mediaTypes,
      });
      events[events.length - 1].videoTracks = s.mediaStream.getVideoTracks().length;
      listen(s);
    });
    rtc.onStreamUnavailable((id) => events.push({ type: "unavailable", endpointId: id }));
    const outcome = await Promise.race([
      rtc.connect({ deviceToken: token }, { websocketUrl }).then(() => "connected"),
      sleep(timeoutMs).then(() => "timeout"),
    ]);
    return outcome;
  },

  /**
   * Publish the fake microphone (and camera when asked); resolves with what the SDK returned.
   * With `raw`, the microphone skips Chromium's audio processing (echo cancellation, noise
   * suppression and gain control play a steady test tone about 20 dB down).
   */
  async publish(alias, video, raw) {
    const audio = raw ? { echoCancellation: false, noiseSuppression: false, autoGainControl: false } : true;
    const stream = await rtc.publish({ audio, video: !!video }, undefined, alias);
    return { endpointId: stream.endpointId, mediaTypes: stream.mediaTypes, alias: stream.alias };
  },

  /** RMS (0..1) of each received audio stream, over ~1 s of samples. */
  async energy() {
    const out = {};
    for (const [id, analyser] of Object.entries(analysers)) {
      const buf = new Float32Array(analyser.fftSize);
      let sum = 0;
      let n = 0;
      for (let i = 0; i < 20; i++) {
        analyser.getFloatTimeDomainData(buf);
        for (const v of buf) {
          sum += v * v;
          n += 1;
        }
        await sleep(50);
      }
      out[id] = Math.sqrt(sum / n);
    }
    return out;
  },

  /** RMS (0..1) of each received audio stream now (one analyser window, ~43 ms). */
  levels() {
    const out = {};
    for (const [id, analyser] of Object.entries(analysers)) {
      const buf = new Float32Array(analyser.fftSize);
      analyser.getFloatTimeDomainData(buf);
      out[id] = Math.sqrt(buf.reduce((s, v) => s + v * v, 0) / buf.length);
    }
    return out;
  },

  /** Frequency (Hz) of the strongest spectral peak of each received audio stream. */
  async peaks() {
    const out = {};
    for (const [id, analyser] of Object.entries(analysers)) {
      const bins = new Float32Array(analyser.frequencyBinCount);
      const sums = new Float32Array(analyser.frequencyBinCount);
      for (let i = 0; i < 10; i++) {
        analyser.getFloatFrequencyData(bins);
        for (let b = 0; b < bins.length; b++) sums[b] += Math.pow(10, bins[b] / 10);
        await sleep(50);
      }
      let best = 1;
      for (let b = 2; b < sums.length; b++) if (sums[b] > sums[best]) best = b;
      out[id] = (best * audioContext.sampleRate) / analyser.fftSize;
    }
    return out;
  },

  /** Video frames decoded so far for each received video stream. */
  videoFrames() {
    const out = {};
    for (const [id, el] of Object.entries(videos)) {
      const q = el.getVideoPlaybackQuality ? el.getVideoPlaybackQuality() : null;
      out[id] = { frames: q ? q.totalVideoFrames : 0, width: el.videoWidth };
    }
    return out;
  },

  /** DTMF through the SDK (RFC 4733 on the published audio). */
  dtmf(tones) {
    rtc.sendDtmf(tones);
  },

  /** Stop answering the server's heartbeat PINGs (a peer that went away). */
  silenceHeartbeat() {
    muteHeartbeat = true;
  },

  /** Drop the signaling socket as a network failure would (the SDK reconnects). */
  dropSocket() {
    for (const ws of sockets) {
      if (ws.readyState === NativeWebSocket.OPEN) ws.close(4000, "network went away");
    }
  },

  async disconnect() {
    if (rtc) {
      rtc.disconnect();
    }
  },
};
