// The patch bay's table and the quality rows: built when the members or streams
// change, updated in place a few times a second (levels, what flows), so that focus
// and the keyboard stay where they are.

import type { MediaView, Participant, Subscriptions } from "./api";
import { fill, h, short } from "./dom";
import { columnKey, columns, delivery, receives, type Column } from "./patchbay";

export interface MatrixModel {
  sessionId: string;
  members: Participant[];
  subs: Map<string, Subscriptions>;
  view: MediaView;
}

export function nameOf(members: Participant[], id: string): string {
  const p = members.find((m) => m.id === id);
  return p?.tag ? p.tag : short(id);
}

function streamName(m: MatrixModel, c: Column): string {
  return `${nameOf(m.members, c.participantId)} · ${c.alias ?? "no alias"}`;
}

export class Matrix {
  private shape = "";
  private cols: Column[] = [];
  private table: HTMLTableElement | null = null;

  constructor(
    private host: HTMLElement,
    private onToggle: (listener: string, col: Column, on: boolean, all: Column[]) => void,
  ) {}

  render(m: MatrixModel): void {
    const ids = m.members.map((p) => p.id);
    this.cols = columns(m.view, ids);
    const shape = JSON.stringify([m.members.map((p) => [p.id, p.tag]), this.cols.map(columnKey), this.cols.map((c) => c.mediaTypes)]);
    if (shape !== this.shape || !this.table) {
      this.shape = shape;
      this.build(m);
    }
    this.update(m);
  }

  private build(m: MatrixModel): void {
    if (m.members.length === 0) {
      this.table = null;
      fill(this.host, h("p", { class: "empty" }, "No members yet: add participants above."));
      return;
    }
    if (this.cols.length === 0) {
      this.table = null;
      fill(
        this.host,
        h("p", { class: "empty" }, "Nobody publishes yet. Join from this browser below, or call in with a participant's token (see its SIP URI)."),
      );
      return;
    }
    const head = h(
      "tr",
      {},
      h("th", { scope: "col" }, h("span", { class: "sr" }, "Listener \\ stream")),
      this.cols.map((c) =>
        h(
          "th",
          { scope: "col", "data-col": columnKey(c) },
          h("span", { class: "who" }, nameOf(m.members, c.participantId)),
          h("span", { class: "alias" }, `${c.origin === "phone" ? "☎ " : c.origin === "bot" ? "bot · " : ""}${c.alias ?? "no alias"}`),
          h("span", { class: "kinds" }, c.mediaTypes.join("+").toLowerCase()),
          h("span", { class: "meter", role: "meter", "aria-label": `${streamName(m, c)} level`, "aria-valuemin": -127, "aria-valuemax": 0, "aria-valuenow": -127 }, h("span", { class: "bar" })),
        ),
      ),
    );
    const rows = m.members.map((p) =>
      h(
        "tr",
        { "data-row": p.id },
        h(
          "th",
          { scope: "row" },
          nameOf(m.members, p.id),
          h("span", { class: "muted" }, " hears"),
          h("span", { class: "bot-state muted", "data-stream": p.id }),
        ),
        this.cols.map((c) => {
          if (c.participantId === p.id) return h("td", { class: "self" }, h("span", { class: "sr" }, "own stream"), "—");
          const b = h("button", {
            class: "cell",
            "data-listener": p.id,
            "data-col": columnKey(c),
            onclick: () => this.onToggle(p.id, c, b.getAttribute("aria-pressed") !== "true", this.cols),
          });
          return h("td", {}, b);
        }),
      ),
    );
    this.table = h("table", { class: "matrix" }, h("caption", { class: "sr" }, "Who hears whom"), h("thead", {}, head), h("tbody", {}, rows));
    fill(this.host, h("div", { class: "scroll" }, this.table));
  }

  private update(m: MatrixModel): void {
    if (!this.table) return;
    for (const c of this.cols) {
      const th = this.table.querySelector<HTMLElement>(`th[data-col="${columnKey(c)}"]`);
      const src = m.view.sources.filter((s) => columnKey(s) === columnKey(c));
      const level = Math.max(-127, ...src.map((s) => s.levelDbov ?? -127));
      const speaking = src.some((s) => s.speaking);
      if (th) {
        th.dataset.speaking = String(speaking);
        th.classList.toggle("speaking", speaking);
        const meter = th.querySelector<HTMLElement>(".meter");
        meter?.setAttribute("aria-valuenow", String(Math.round(level)));
        const bar = th.querySelector<HTMLElement>(".bar");
        if (bar) bar.style.width = `${Math.max(0, Math.min(100, ((level + 60) / 60) * 100))}%`;
      }
    }
    // A bot's connection, under its participant's name.
    for (const span of this.table.querySelectorAll<HTMLElement>("span[data-stream]")) {
      const s = m.view.listeners.find((l) => l.participantId === span.dataset.stream && l.stream)?.stream;
      const text = s ? (s.connected ? ` · bot connected, ${s.bufferedMs} ms of its audio buffered` : " · bot reconnecting") : "";
      if (span.textContent !== text) span.textContent = text;
    }
    for (const b of this.table.querySelectorAll<HTMLButtonElement>("button.cell")) {
      const listener = b.dataset.listener as string;
      const c = this.cols.find((x) => columnKey(x) === b.dataset.col);
      if (!c) continue;
      const stored = receives(listener, m.subs.get(listener) ?? {}, m.sessionId, c);
      const now = delivery(m.view, listener, c);
      b.setAttribute("aria-pressed", String(stored));
      b.dataset.delivery = now ?? "none";
      b.className = `cell ${stored ? "on" : "off"} ${now ?? "idle"}`;
      const text = now ? (now === "mixing" ? "mixing" : "forwarding") : stored ? "subscribed" : "off";
      if (b.textContent !== text) b.textContent = text;
      b.setAttribute(
        "aria-label",
        `${nameOf(m.members, listener)} hears ${streamName(m, c)}: ${stored ? "subscribed" : "not subscribed"}${now ? `, ${now} now` : ""}`,
      );
    }
  }
}

/** The quality of every stream the media plane receives (SIP legs and browser tracks). */
export function quality(host: HTMLElement, m: MatrixModel): void {
  const rows = m.view.sources.filter((s) => s.quality);
  if (!m.view.running) {
    fill(host, h("p", { class: "empty" }, "No media runs for this session on this node yet (nobody joined or called in)."));
    return;
  }
  if (rows.length === 0) {
    fill(host, h("p", { class: "empty" }, "No RTCP figures yet: they arrive about a second after media starts."));
    return;
  }
  const fmt = (v: number | null | undefined, unit: string, digits = 1) => (v === null || v === undefined ? "—" : `${v.toFixed(digits)} ${unit}`);
  const mosClass = (v: number) => (v >= 4 ? "good" : v >= 3.6 ? "fair" : "poor");
  const table = h(
    "table",
    { class: "quality" },
    h("caption", { class: "sr" }, "Quality per leg and track"),
    h(
      "thead",
      {},
      h("tr", {}, ["Stream", "Kind", "Codec", "Packets", "Loss", "Jitter", "RTT", "MOS"].map((t) => h("th", { scope: "col" }, t))),
    ),
    h(
      "tbody",
      {},
      rows.map((s) =>
        h(
          "tr",
          { "data-quality": columnKey(s), "data-media": s.mediaType },
          h("th", { scope: "row" }, `${nameOf(m.members, s.participantId)} · ${s.alias ?? "no alias"}`),
          h("td", {}, `${{ phone: "SIP leg", browser: "browser", bot: "bot" }[s.origin]} ${s.mediaType.toLowerCase()}`),
          h("td", { "data-field": "codec" }, s.quality!.codec),
          h("td", {}, String(s.quality!.packets)),
          h("td", { "data-field": "loss" }, fmt(s.quality!.lossPercent, "%")),
          h("td", {}, fmt(s.quality!.jitterMs, "ms")),
          h("td", { "data-field": "rtt" }, fmt(s.quality!.rttMs, "ms", 0)),
          h("td", { "data-field": "mos", class: mosClass(s.quality!.mos) }, s.quality!.mos.toFixed(2)),
        ),
      ),
    ),
  );
  fill(host, h("div", { class: "scroll" }, table));
}
