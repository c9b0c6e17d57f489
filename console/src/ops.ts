// The node's operations figures (refreshed every 2 s while shown): calls, devices and
// bots up, packets per second, CPU, refused inputs, store health, SIP registrations
// (when configured), the cluster's nodes.

import type { Api } from "./api";
import { fill, h, say } from "./dom";

interface Ops {
  node: string;
  calls: number;
  devices: number;
  bots: number;
  mediaSessions: number;
  sessions: number;
  participants: number;
  packetsPerSecond: number | null;
  cpuPercent: number | null;
  refused: Record<string, number>;
  store: string;
  draining: boolean;
  sipRegistrations: { registered: number; configured: number };
  nodes: { id: string; self: boolean; heartbeatAgeMs: number; ownedSessions?: number; mediaSessions?: number; draining?: boolean; httpUrl?: string }[];
}

export class OpsPage {
  private timer: number;
  private body = h("div", { id: "ops", "aria-live": "off" });

  constructor(
    private api: Api,
    main: HTMLElement,
  ) {
    fill(main, h("section", { class: "card", "aria-labelledby": "ops-title" }, h("h2", { id: "ops-title" }, "Operations"), this.body));
    void this.load();
    this.timer = window.setInterval(() => void this.load(), 2000);
  }

  close(): void {
    window.clearInterval(this.timer);
  }

  private async load(): Promise<void> {
    let o: Ops;
    try {
      o = await this.api.get<Ops>("/ops");
    } catch (e) {
      say((e as Error).message, "error");
      return;
    }
    const tile = (label: string, value: string, warn = false) =>
      h("div", { class: `tile${warn ? " warn" : ""}` }, h("span", { class: "value" }, value), h("span", { class: "label" }, label));
    const refused = Object.entries(o.refused).filter(([, v]) => v > 0);
    fill(
      this.body,
      h(
        "div",
        { class: "tiles" },
        tile("calls up", String(o.calls)),
        tile("browser devices", String(o.devices)),
        tile("bots connected", String(o.bots)),
        tile("sessions with media", String(o.mediaSessions)),
        tile("sessions", String(o.sessions)),
        tile("packets / s", o.packetsPerSecond === null ? "…" : String(o.packetsPerSecond)),
        tile("CPU", o.cpuPercent === null ? "…" : `${o.cpuPercent}%`),
        tile("store", o.store, o.store !== "ok"),
        tile("node", `${o.node}${o.draining ? " (stopping)" : ""}`, o.draining),
        o.sipRegistrations.configured > 0
          ? tile(
              "SIP registrations up",
              `${o.sipRegistrations.registered} of ${o.sipRegistrations.configured}`,
              o.sipRegistrations.registered < o.sipRegistrations.configured,
            )
          : null,
      ),
      h("h3", {}, "Refused or dropped inputs"),
      refused.length === 0
        ? h("p", { class: "empty" }, "None since the gateway started.")
        : h("ul", {}, refused.map(([k, v]) => h("li", {}, h("code", {}, k), `: ${v}`))),
      o.nodes.length > 1
        ? [
            h("h3", {}, "Cluster nodes"),
            h(
              "table",
              { class: "quality" },
              h("thead", {}, h("tr", {}, ["Node", "Heartbeat age", "Sessions owned", "State"].map((t) => h("th", { scope: "col" }, t)))),
              h(
                "tbody",
                {},
                o.nodes.map((n) =>
                  h(
                    "tr",
                    {},
                    h("th", { scope: "row" }, `${n.id}${n.self ? " (this one)" : ""}`),
                    h("td", {}, `${n.heartbeatAgeMs} ms`),
                    h("td", {}, String(n.ownedSessions ?? "—")),
                    h("td", {}, n.draining ? "stopping" : "up"),
                  ),
                ),
              ),
            ),
          ]
        : h("p", { class: "muted" }, "One node (no cluster)."),
    );
  }
}
