// One session: its members (create, copy token / BXML / SIP URI, delete), the patch
// bay and presets, quality per leg and track, joining from this browser, dialogs and
// the webhook log, recordings. Live: the account's event stream says what changed and carries the
// session's media view a few times a second.

import { Api, type Dialog, type LogEntry, type MediaView, type Participant, type Subscriptions } from "./api";
import { copy, fill, h, live, say, short } from "./dom";
import { Joined } from "./join";
import { Matrix, nameOf, quality, type MatrixModel } from "./matrix";
import { preset, toggled, type Preset } from "./patchbay";
import { RecordingsPanel } from "./recordings";

const TOKENS = "patchbay.console.tokens";

/** Tokens of the participants created in this tab (the API returns them only then). */
function tokens(): Record<string, string> {
  try {
    return JSON.parse(sessionStorage.getItem(TOKENS) ?? "{}");
  } catch {
    return {};
  }
}

function keepToken(id: string, token: string): void {
  sessionStorage.setItem(TOKENS, JSON.stringify({ ...tokens(), [id]: token }));
}

function section(id: string, title: string, ...body: (Node | string)[]): HTMLElement {
  return h("section", { class: "card", "aria-labelledby": `${id}-title`, id }, h("h2", { id: `${id}-title` }, title), ...body);
}

export class SessionPage {
  private stop = new AbortController();
  private model: MatrixModel;
  private matrix: Matrix;
  private sipUri = "sip:127.0.0.1:5060";
  private els = {
    title: h("h2", { id: "session-title" }),
    members: h("div", { id: "members" }),
    matrix: h("div", { id: "matrix" }),
    quality: h("div", { id: "quality" }),
    dialogs: h("div", { id: "dialogs" }),
    log: h("div", { id: "webhooks" }),
    joinSelect: h("select", { id: "join-as" }),
    dialSelect: h("select", { id: "dial-as" }),
    roles: [h("select", { id: "role-supervisor" }), h("select", { id: "role-agent" }), h("select", { id: "role-caller" })],
  };
  private joined: Joined;
  private logTimer: number;
  private recordings: RecordingsPanel;

  constructor(
    private api: Api,
    private id: string,
    main: HTMLElement,
    back: () => void,
  ) {
    this.model = { sessionId: id, members: [], subs: new Map(), view: { sessionId: id, running: false, sources: [], listeners: [] } };
    this.matrix = new Matrix(this.els.matrix, (l, c, on, all) => void this.toggle(l, c, on, all));
    const streams = h("div", { id: "received", class: "streams", "aria-live": "polite" });
    const joinLog = h("ol", { id: "join-log", class: "log" });
    this.joined = new Joined(streams, joinLog, (p) => (p ? nameOf(this.model.members, p) : "someone"));
    this.recordings = new RecordingsPanel(api, id, (p) => nameOf(this.model.members, p));
    fill(
      main,
      h(
        "div",
        { class: "card head" },
        h("button", { class: "link", onclick: back }, "← Sessions"),
        this.els.title,
        h("button", { class: "danger", onclick: () => void this.remove(back) }, "Delete session"),
      ),
      section("participants", "Participants", this.addForm(), this.els.members),
      section("patchbay", "Patch bay", this.presetForm(), h("p", { class: "muted" }, "Rows listen, columns publish. A pressed cell is subscribed; its text is what the media plane does now."), this.els.matrix),
      section("quality-card", "Quality", this.els.quality),
      section(
        "join",
        "Join from this browser",
        this.joinForm(),
        h("div", { id: "hearing", class: "meter wide", role: "meter", "aria-label": "What this browser hears", "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": 0, "data-level": "0" }, h("span", { class: "bar" })),
        streams,
        h("h3", {}, "What the SDK reported"),
        joinLog,
      ),
      section("recordings-card", "Recordings", this.recordings.el),
      section("dialogs-card", "Dialogs (outbound calls)", this.dialForm(), this.els.dialogs),
      section("webhooks-card", "Webhook log", this.els.log),
    );
    void this.loadAll();
    void this.api.get<{ nodes: { self: boolean; sipUri?: string }[] }>("/ops").then((o) => {
      this.sipUri = o.nodes.find((n) => n.self)?.sipUri ?? this.sipUri;
      this.renderMembers();
    });
    void this.api.events(id, (name, data) => this.event(name, data), live, this.stop.signal);
    this.logTimer = window.setInterval(() => void this.loadLog(), 5000);
  }

  close(): void {
    this.stop.abort();
    window.clearInterval(this.logTimer);
    this.recordings.close();
    this.joined.leave();
  }

  private event(name: string, data: unknown): void {
    if (name === "media") {
      this.model.view = data as MediaView;
      this.matrix.render(this.model);
      quality(this.els.quality, this.model);
      return;
    }
    const c = data as { kind?: string; id?: string; sessionId?: string };
    if (name === "resync") void this.loadAll();
    else if (name === "change" && c.kind === "dialog") void this.loadDialogs();
    else if (name === "change" && c.kind === "session" && c.id === this.id) void this.loadAll();
    else if (name === "change" && c.kind === "participant" && (c.sessionId === this.id || this.model.members.some((m) => m.id === c.id))) {
      void this.loadMembers();
    }
  }

  private async loadAll(): Promise<void> {
    try {
      const s = await this.api.get<{ id: string; tag?: string }>(`/sessions/${this.id}`);
      fill(this.els.title, "Session ", s.tag ? h("strong", {}, s.tag) : h("em", {}, "untagged"), " ", h("code", {}, short(s.id)));
    } catch (e) {
      fill(this.els.title, "Session not found");
      say((e as Error).message, "error");
      return;
    }
    await this.loadMembers();
    this.model.view = await this.api.get<MediaView>(`/sessions/${this.id}/media`).catch(() => this.model.view);
    this.matrix.render(this.model);
    quality(this.els.quality, this.model);
    void this.loadDialogs();
    void this.loadLog();
  }

  private async loadMembers(): Promise<void> {
    try {
      this.model.members = await this.api.get<Participant[]>(`/sessions/${this.id}/participants`);
      const subs = await Promise.all(
        this.model.members.map((m) => this.api.get<Subscriptions>(`/sessions/${this.id}/participants/${m.id}/subscriptions`).catch(() => ({}))),
      );
      this.model.subs = new Map(this.model.members.map((m, i) => [m.id, subs[i] ?? {}]));
    } catch (e) {
      say((e as Error).message, "error");
    }
    this.renderMembers();
    this.matrix.render(this.model);
  }

  private addForm(): HTMLElement {
    const tag = h("input", { id: "p-tag", maxLength: 50, placeholder: "e.g. agent" });
    const audio = h("input", { id: "p-audio", type: "checkbox", checked: true });
    const video = h("input", { id: "p-video", type: "checkbox", checked: true });
    const cb = h("input", { id: "p-callback", type: "url", placeholder: "https://your-app.example/callbacks" });
    return h(
      "form",
      {
        class: "row wrap",
        onsubmit: async (e: Event) => {
          e.preventDefault();
          const perms = [audio.checked && "AUDIO", video.checked && "VIDEO"].filter(Boolean);
          try {
            const r = await this.api.call<{ participant: Participant; token: string }>("POST", "/participants", {
              publishPermissions: perms,
              ...(tag.value ? { tag: tag.value } : {}),
              ...(cb.value ? { callbackUrl: cb.value } : {}),
            });
            keepToken(r.participant.id, r.token);
            await this.api.call("PUT", `/sessions/${this.id}/participants/${r.participant.id}`, { sessionId: this.id });
            say(`Participant ${r.participant.tag ?? short(r.participant.id)} added: it hears everyone`);
            tag.value = "";
            await this.loadMembers();
          } catch (err) {
            say((err as Error).message, "error");
          }
        },
      },
      h("label", { for: "p-tag" }, "Tag"),
      tag,
      h("label", { class: "check" }, audio, "AUDIO"),
      h("label", { class: "check" }, video, "VIDEO"),
      h("label", { for: "p-callback" }, "callbackUrl"),
      cb,
      h("button", { type: "submit", class: "primary" }, "Add participant"),
    );
  }

  private renderMembers(): void {
    const t = tokens();
    const members = this.model.members;
    const options = (sel: HTMLSelectElement, only?: (p: Participant) => boolean) => {
      const keep = sel.value;
      fill(sel, members.filter(only ?? (() => true)).map((p) => h("option", { value: p.id }, nameOf(members, p.id))));
      if ([...sel.options].some((o) => o.value === keep)) sel.value = keep;
    };
    options(this.els.joinSelect, (p) => Boolean(t[p.id]));
    options(this.els.dialSelect);
    this.els.roles.forEach((sel, i) => {
      options(sel);
      if (!sel.dataset.touched && members[i]) sel.value = members[i].id;
    });
    if (members.length === 0) {
      fill(this.els.members, h("p", { class: "empty" }, "No participants in this session. Add one: it gets a token for a browser or a phone."));
      return;
    }
    fill(
      this.els.members,
      h(
        "ul",
        { class: "members" },
        members.map((p) => {
          const token = t[p.id];
          const bxml = token ? `<Transfer><SipUri uui="${token};encoding=jwt">${this.sipUri}</SipUri></Transfer>` : "";
          const name = nameOf(members, p.id);
          return h(
            "li",
            { "data-participant": p.id },
            h("span", { class: "name" }, name),
            h("code", {}, short(p.id)),
            h("span", { class: "muted" }, p.publishPermissions.join("+").toLowerCase() || "listen only"),
            token
              ? [
                  h("button", { class: "small", "aria-label": `Copy the token of ${name}`, onclick: () => void copy(token, "token") }, "Token"),
                  h("button", { class: "small", "aria-label": `Copy a BXML Transfer for ${name}`, onclick: () => void copy(bxml, "BXML <Transfer>") }, "BXML"),
                  h("button", { class: "small", "aria-label": `Copy the SIP URI for ${name}`, onclick: () => void copy(`${this.sipUri} with header User-to-User: ${token};encoding=jwt`, "SIP URI") }, "SIP URI"),
                ]
              : h("span", { class: "muted" }, "token shown only in the tab that created it"),
            h("button", { class: "danger small", "aria-label": `Delete ${name}`, onclick: () => void this.deleteParticipant(p) }, "Delete"),
          );
        }),
      ),
    );
  }

  private async deleteParticipant(p: Participant): Promise<void> {
    if (!confirm(`Delete participant ${p.tag ?? p.id}? Its devices and calls are ended.`)) return;
    try {
      await this.api.call("DELETE", `/participants/${p.id}`);
      await this.loadMembers();
    } catch (e) {
      say((e as Error).message, "error");
    }
  }

  private async toggle(listener: string, col: Parameters<typeof toggled>[4], on: boolean, all: Parameters<typeof toggled>[3]): Promise<void> {
    const subs = toggled(listener, this.model.subs.get(listener) ?? {}, this.model.members.map((m) => m.id), all, col, on);
    await this.setSubs(listener, subs);
  }

  private async setSubs(listener: string, subs: Subscriptions): Promise<void> {
    try {
      await this.api.call("PUT", `/sessions/${this.id}/participants/${listener}/subscriptions`, subs);
      this.model.subs.set(listener, subs);
      this.matrix.render(this.model);
    } catch (e) {
      say((e as Error).message, "error");
    }
  }

  private presetForm(): HTMLElement {
    const [s, a, c] = this.els.roles;
    for (const sel of this.els.roles) sel.addEventListener("change", () => (sel.dataset.touched = "1"));
    const apply = async (kind: Preset) => {
      const ids = new Set([s.value, a.value, c.value]);
      if (ids.size !== 3) {
        say("Pick three different members for supervisor, agent and caller.", "error");
        return;
      }
      for (const [who, subs] of preset(kind, s.value, a.value, c.value)) await this.setSubs(who, subs);
      say(`${kind} applied`);
    };
    return h(
      "div",
      { class: "row wrap presets", role: "group", "aria-label": "Presets" },
      h("label", { for: "role-supervisor" }, "Supervisor"),
      s,
      h("label", { for: "role-agent" }, "Agent"),
      a,
      h("label", { for: "role-caller" }, "Caller"),
      c,
      h("button", { onclick: () => void apply("monitor"), title: "The supervisor hears both; nobody hears the supervisor" }, "Monitor"),
      h("button", { onclick: () => void apply("coach"), title: "The agent hears the supervisor; the caller does not" }, "Coach (whisper)"),
      h("button", { onclick: () => void apply("barge"), title: "Everyone hears everyone" }, "Barge"),
    );
  }

  private joinForm(): HTMLElement {
    const video = h("input", { id: "join-video", type: "checkbox" });
    const leave = h("button", { id: "leave", onclick: () => this.joined.leave() }, "Leave");
    return h(
      "form",
      {
        class: "row wrap",
        onsubmit: async (e: Event) => {
          e.preventDefault();
          const pid = this.els.joinSelect.value;
          const token = tokens()[pid];
          if (!token) {
            say("Add a participant in this tab first: its token is needed to join.", "error");
            return;
          }
          try {
            await this.joined.join(token, nameOf(this.model.members, pid), video.checked);
          } catch (err) {
            say(`Could not join: ${(err as Error).message}`, "error");
          }
        },
      },
      h("label", { for: "join-as" }, "As"),
      this.els.joinSelect,
      h("label", { class: "check" }, video, "camera"),
      h("button", { type: "submit", class: "primary", id: "join-button" }, "Join with microphone"),
      leave,
    );
  }

  private dialForm(): HTMLElement {
    const to = h("input", { id: "dial-to", placeholder: "+15551234567", required: true });
    const from = h("input", { id: "dial-from", placeholder: "+15557654321", required: true });
    return h(
      "form",
      {
        class: "row wrap",
        onsubmit: async (e: Event) => {
          e.preventDefault();
          const pid = this.els.dialSelect.value;
          try {
            await this.api.call("POST", `/sessions/${this.id}/participants/${pid}/dialogs`, { type: "SIP", data: { to: to.value, from: from.value } });
            await this.loadDialogs();
          } catch (err) {
            say((err as Error).message, "error");
          }
        },
      },
      h("label", { for: "dial-as" }, "For"),
      this.els.dialSelect,
      h("label", { for: "dial-to" }, "To"),
      to,
      h("label", { for: "dial-from" }, "From"),
      from,
      h("button", { type: "submit", class: "primary" }, "Call"),
    );
  }

  private async loadDialogs(): Promise<void> {
    const lists = await Promise.all(
      this.model.members.map((m) => this.api.get<Dialog[]>(`/participants/${m.id}/dialogs`).then((l) => l.map((d) => ({ d, m: m.id }))).catch(() => [])),
    );
    const all = lists.flat();
    if (all.length === 0) {
      fill(this.els.dialogs, h("p", { class: "empty" }, "No dialogs. Calling out needs a SIP trunk (sip_trunk in the gateway's configuration)."));
      return;
    }
    fill(
      this.els.dialogs,
      h(
        "ul",
        { class: "members" },
        all.map(({ d, m }) =>
          h(
            "li",
            { "data-dialog": d.id },
            h("span", { class: "name" }, nameOf(this.model.members, m)),
            h("span", {}, `→ ${(d as { data?: { to?: string } }).data?.to ?? ""}`),
            h("strong", { class: `state ${d.state.toLowerCase()}` }, d.state),
            d.eventData?.reason ? h("span", { class: "muted" }, d.eventData.reason) : null,
            d.state !== "TERMINATED"
              ? h("button", { class: "danger small", onclick: () => void this.api.call("DELETE", `/participants/${m}/dialogs/${d.id}`).catch((e) => say(e.message, "error")) }, "Hang up")
              : null,
          ),
        ),
      ),
    );
  }

  private async loadLog(): Promise<void> {
    let list: LogEntry[];
    try {
      list = await this.api.get<LogEntry[]>(`/sessions/${this.id}/webhooks`);
    } catch {
      return;
    }
    if (list.length === 0) {
      fill(this.els.log, h("p", { class: "empty" }, "No callbacks yet. Participants with a callbackUrl get onConnect, onLeave, onDisconnect and dialog events here."));
      return;
    }
    const when = (ms: number | null) => (ms ? new Date(ms).toLocaleTimeString() : "—");
    fill(
      this.els.log,
      h(
        "div",
        { class: "scroll" },
        h(
          "table",
          { class: "quality" },
          h("thead", {}, h("tr", {}, ["When", "Participant", "Event", "Status", "Attempts", "Next retry", "Last error"].map((t) => h("th", { scope: "col" }, t)))),
          h(
            "tbody",
            {},
            list.map((e) =>
              h(
                "tr",
                {},
                h("td", {}, when(e.createdMs)),
                h("td", {}, nameOf(this.model.members, e.participantId)),
                h("td", {}, e.event),
                h("td", { class: `state ${e.status}` }, e.status),
                h("td", {}, String(e.attempts)),
                h("td", {}, when(e.nextAttemptMs)),
                h("td", {}, e.lastError ?? ""),
              ),
            ),
          ),
        ),
      ),
    );
  }

  private async remove(back: () => void): Promise<void> {
    if (!confirm("Delete this session? Its calls and devices are ended.")) return;
    try {
      await this.api.call("DELETE", `/sessions/${this.id}`);
      back();
    } catch (e) {
      say((e as Error).message, "error");
    }
  }
}
