// Joining the session from this browser with the real @bandwidth/webrtc-browser SDK:
// publish the microphone (and camera), play what the subscriptions deliver, and show
// each received stream with its level. Everything the SDK reports goes in a log.

import BandwidthRtcModule from "@bandwidth/webrtc-browser";
import { fill, h, say } from "./dom";

// The SDK is published as CommonJS: its default export may be nested.
const BandwidthRtc = ((BandwidthRtcModule as unknown as { default?: unknown }).default ?? BandwidthRtcModule) as new (
  logLevel?: string,
) => Rtc;

interface RtcStream {
  endpointId: string;
  participantId?: string;
  alias?: string;
  mediaTypes?: string[];
  mediaStream: MediaStream;
}

interface Rtc {
  connect(auth: { deviceToken: string }, options: { websocketUrl: string }): Promise<void>;
  publish(constraints: MediaStreamConstraints, peer?: unknown, alias?: string): Promise<RtcStream>;
  onStreamAvailable(cb: (s: RtcStream) => void): void;
  onStreamUnavailable(cb: (endpointId: string) => void): void;
  disconnect(): void;
}

export class Joined {
  private rtc: Rtc | null = null;
  private context: AudioContext | null = null;
  /** What this browser hears, all streams together. */
  private output: AnalyserNode | null = null;
  private timer: number | undefined;
  private streams = new Map<string, HTMLElement>();

  constructor(
    private host: HTMLElement,
    private log: HTMLElement,
    private label: (participantId?: string) => string,
  ) {}

  get connected(): boolean {
    return this.rtc !== null;
  }

  private note(text: string): void {
    this.log.append(h("li", {}, `${new Date().toLocaleTimeString()} ${text}`));
    while (this.log.children.length > 50) this.log.firstElementChild?.remove();
  }

  async join(token: string, participant: string, video: boolean): Promise<void> {
    this.leave();
    const rtc = new BandwidthRtc("warn");
    this.rtc = rtc;
    this.context = new AudioContext();
    this.output = this.context.createAnalyser();
    this.output.fftSize = 2048;
    rtc.onStreamAvailable((s) => this.available(s));
    rtc.onStreamUnavailable((id) => this.unavailable(id));
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    this.note(`connecting as ${participant}`);
    await rtc.connect({ deviceToken: token }, { websocketUrl: `${scheme}://${location.host}` });
    this.note("connected");
    const mine = await rtc.publish({ audio: true, video }, undefined, "console");
    this.note(`publishing ${(mine.mediaTypes ?? []).join("+").toLowerCase() || "media"} as alias "console"`);
    fill(this.host);
    if (video) {
      const preview = h("video", { muted: true, autoplay: true, playsInline: true, class: "preview", "aria-label": "Your camera" });
      preview.srcObject = mine.mediaStream;
      this.host.append(h("figure", { class: "stream" }, preview, h("figcaption", {}, "You")));
    }
    this.timer = window.setInterval(() => this.meter(), 250);
  }

  private available(s: RtcStream): void {
    this.note(`stream available: ${this.label(s.participantId)} · ${s.alias ?? "no alias"} (${(s.mediaTypes ?? []).join("+").toLowerCase()})`);
    const video = s.mediaStream.getVideoTracks().length > 0;
    const el = video
      ? h("video", { autoplay: true, playsInline: true, "aria-label": `Video of ${this.label(s.participantId)}` })
      : h("audio", { autoplay: true });
    el.srcObject = s.mediaStream;
    if (s.mediaStream.getAudioTracks().length && this.context && this.output) {
      this.context.createMediaStreamSource(s.mediaStream).connect(this.output);
    }
    const card = h(
      "figure",
      { class: "stream", "data-endpoint": s.endpointId, "data-participant": s.participantId ?? "", "data-alias": s.alias ?? "" },
      el,
      h("figcaption", {}, `${this.label(s.participantId)} · ${s.alias ?? "no alias"}`),
    );
    this.streams.set(s.endpointId, card);
    this.host.append(card);
  }

  private unavailable(id: string): void {
    const card = this.streams.get(id);
    this.note(`stream unavailable: ${card?.dataset.participant ? this.label(card.dataset.participant) : id} · ${card?.dataset.alias ?? ""}`);
    card?.remove();
    this.streams.delete(id);
  }

  /** The level of what this browser hears (RMS, 0–1), shown and kept in data-level. */
  private meter(): void {
    if (!this.output) return;
    const buf = new Float32Array(this.output.fftSize);
    this.output.getFloatTimeDomainData(buf);
    const rms = Math.sqrt(buf.reduce((s, v) => s + v * v, 0) / buf.length);
    const out = document.getElementById("hearing");
    if (out) {
      out.dataset.level = rms.toFixed(4);
      out.setAttribute("aria-valuenow", String(Math.round(rms * 100)));
      const bar = out.querySelector<HTMLElement>(".bar");
      if (bar) bar.style.width = `${Math.min(100, rms * 300)}%`;
    }
  }

  leave(): void {
    if (!this.rtc) return;
    try {
      this.rtc.disconnect();
    } catch (e) {
      say(`leaving: ${(e as Error).message}`, "error");
    }
    this.rtc = null;
    window.clearInterval(this.timer);
    void this.context?.close();
    this.context = null;
    this.output = null;
    this.streams.clear();
    fill(this.host);
    this.note("left");
  }
}
