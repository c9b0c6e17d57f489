// The recordings panel of a session: start (mode, format), stop, the list with each
// file's player and download (fetched with the credentials, played from a blob URL).

import { Api, type Recording, type RecordingFile } from "./api";
import { fill, h, say, short } from "./dom";

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}

export class RecordingsPanel {
  readonly el = h("div", { id: "recordings" });
  private list = h("div", { id: "recordings-list", "aria-live": "polite" });
  private mode = h("select", { id: "rec-mode" }, ["tracks", "mixed", "dual"].map((m) => h("option", { value: m }, m)));
  private format = h("select", { id: "rec-format" }, ["ogg", "wav"].map((f) => h("option", { value: f }, f)));
  private urls: string[] = [];
  private timer: number | undefined;

  constructor(
    private api: Api,
    private sessionId: string,
    private name: (id: string) => string,
  ) {
    const form = h(
      "form",
      {
        class: "row wrap",
        onsubmit: async (e: Event) => {
          e.preventDefault();
          try {
            const r = await this.api.call<Recording>("POST", `/sessions/${this.sessionId}/recordings`, {
              mode: this.mode.value,
              format: this.format.value,
            });
            say(`Recording ${short(r.id)} started (${r.mode}, ${r.format})`);
            await this.load();
          } catch (err) {
            say((err as Error).message, "error");
          }
        },
      },
      h("label", { for: "rec-mode" }, "Mode"),
      this.mode,
      h("label", { for: "rec-format" }, "Format"),
      this.format,
      h("button", { type: "submit", class: "primary" }, "Start recording"),
    );
    fill(this.el, form, this.list);
    void this.load();
  }

  close(): void {
    window.clearTimeout(this.timer);
    this.urls.forEach((u) => URL.revokeObjectURL(u));
  }

  async load(): Promise<void> {
    window.clearTimeout(this.timer);
    let all: Recording[] = [];
    try {
      all = await this.api.get<Recording[]>(`/sessions/${this.sessionId}/recordings`);
    } catch (err) {
      say((err as Error).message, "error");
    }
    this.render(all);
    // While one runs, its files grow: look again.
    if (all.some((r) => r.status === "recording" || r.status === "stopping")) {
      this.timer = window.setTimeout(() => void this.load(), 2000);
    }
  }

  private render(all: Recording[]): void {
    if (all.length === 0) {
      fill(this.list, h("p", { class: "empty" }, "No recordings of this session yet."));
      return;
    }
    fill(
      this.list,
      h(
        "table",
        { class: "recordings" },
        h("thead", {}, h("tr", {}, ["Recording", "Mode", "Status", "Started", "Files", ""].map((t) => h("th", { scope: "col" }, t)))),
        h(
          "tbody",
          {},
          all.map((r) =>
            h(
              "tr",
              { "data-recording": r.id },
              h("td", {}, h("code", {}, short(r.id))),
              h("td", {}, `${r.mode} · ${r.format}`),
              h("td", { class: `status-${r.status}` }, r.status, r.reason ? ` (${r.reason})` : "", r.damaged ? " · damaged" : ""),
              h("td", {}, new Date(r.startTime).toLocaleTimeString()),
              h("td", {}, h("ul", { class: "files" }, r.files.map((f) => this.file(r, f)))),
              h(
                "td",
                {},
                r.status === "recording"
                  ? h("button", { class: "danger", onclick: () => void this.stopOne(r) }, "Stop")
                  : null,
              ),
            ),
          ),
        ),
      ),
    );
  }

  private file(r: Recording, f: RecordingFile): HTMLElement {
    const who = f.participantId ? `${this.name(f.participantId)} · ${f.streamAlias ?? "audio"}` : r.mode;
    const player = h("span", { class: "player" });
    const play = h(
      "button",
      {
        class: "link",
        "aria-label": `Play ${f.name}`,
        onclick: async () => {
          try {
            const url = URL.createObjectURL(await this.api.blob(f.mediaUrl));
            this.urls.push(url);
            fill(
              player,
              h("audio", { controls: true, src: url, autoplay: true, "aria-label": f.name }),
              h("a", { href: url, download: f.name }, "Download"),
            );
          } catch (err) {
            say((err as Error).message, "error");
          }
        },
      },
      "▶ Play",
    );
    return h(
      "li",
      {},
      `${who} — ${seconds(f.durationMs)}, ${Math.round(f.bytes / 1024)} KiB${f.uploaded ? ", uploaded" : ""} `,
      r.status === "recording" ? null : play,
      player,
    );
  }

  private async stopOne(r: Recording): Promise<void> {
    try {
      await this.api.call("DELETE", `/sessions/${this.sessionId}/recordings/${r.id}`);
      say(`Recording ${short(r.id)} stopping`);
      await this.load();
    } catch (err) {
      say((err as Error).message, "error");
    }
  }
}
