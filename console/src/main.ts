// Patchbay's web console: sign in with an account's API credentials, then sessions,
// one session's participants / patch bay / quality / dialogs / callbacks, joining from
// this browser, and the node's operations figures.

import "./style.css";
import { Api, ApiError, save, saved, type SessionBody } from "./api";
import { fill, h, live, say, short } from "./dom";
import { SessionPage } from "./session";
import { OpsPage } from "./ops";

interface Page {
  close(): void;
}

let api: Api | null = null;
let page: Page | null = null;
let events: AbortController | null = null;
let sessions: SessionBody[] = [];
const main = document.getElementById("main") as HTMLElement;

function route(): string {
  return location.pathname.replace(/^\/console\/?/, "");
}

/** Go to a view of the console (its path under /console/). */
export function go(path: string): void {
  history.pushState(null, "", `/console/${path}`);
  show();
}

window.addEventListener("popstate", () => show());

function nav(): void {
  const n = document.getElementById("nav") as HTMLElement;
  const who = document.getElementById("who") as HTMLElement;
  if (!api) {
    fill(n);
    fill(who);
    return;
  }
  const link = (path: string, text: string) =>
    h(
      "a",
      {
        href: `/console/${path}`,
        "aria-current": route().split("/")[0] === path ? "page" : undefined,
        onclick: (e: Event) => {
          e.preventDefault();
          go(path);
        },
      },
      text,
    );
  fill(n, link("", "Sessions"), link("ops", "Operations"));
  fill(
    who,
    h("span", { class: "muted" }, `account ${api.creds.account}`),
    h("button", { class: "link", onclick: signOut }, "Sign out"),
  );
}

function signOut(): void {
  save(null);
  api = null;
  events?.abort();
  page?.close();
  page = null;
  show();
}

function signIn(): void {
  const error = h("p", { class: "error", role: "alert", id: "signin-error" });
  const account = h("input", { id: "account", name: "account", autocomplete: "username", required: true, value: "dev" });
  const user = h("input", { id: "user", name: "user", autocomplete: "username", required: true });
  const password = h("input", { id: "password", name: "password", type: "password", autocomplete: "current-password", required: true });
  const form = h(
    "form",
    {
      class: "card signin",
      "aria-labelledby": "signin-title",
      onsubmit: async (e: Event) => {
        e.preventDefault();
        const candidate = new Api({ account: account.value.trim(), user: user.value, password: password.value });
        error.textContent = "";
        try {
          await candidate.get("/sessions");
          save(candidate.creds);
          api = candidate;
          show();
        } catch (err) {
          error.textContent = err instanceof ApiError ? err.message : String(err);
        }
      },
    },
    h("h2", { id: "signin-title" }, "Sign in"),
    h("p", { class: "muted" }, "Use an account's API credentials (the ones your application's server SDK uses). They stay in this tab only."),
    h("label", { for: "account" }, "Account id"),
    account,
    h("label", { for: "user" }, "API user"),
    user,
    h("label", { for: "password" }, "Password"),
    password,
    h("button", { type: "submit", class: "primary" }, "Sign in"),
    error,
  );
  fill(main, form);
  user.focus();
}

async function loadSessions(list: HTMLElement): Promise<void> {
  if (!api) return;
  try {
    sessions = await api.get<SessionBody[]>("/sessions");
  } catch (e) {
    say((e as Error).message, "error");
    return;
  }
  if (sessions.length === 0) {
    fill(list, h("p", { class: "empty" }, "No sessions yet. Create one above, then add participants to it."));
    return;
  }
  fill(
    list,
    h(
      "ul",
      { class: "sessions" },
      sessions.map((s) =>
        h(
          "li",
          {},
          h(
            "a",
            {
              href: `/console/sessions/${s.id}`,
              onclick: (e: Event) => {
                e.preventDefault();
                go(`sessions/${s.id}`);
              },
            },
            s.tag ? h("strong", {}, s.tag) : h("em", {}, "untagged"),
            " ",
            h("code", {}, short(s.id)),
          ),
          h(
            "button",
            {
              class: "danger small",
              "aria-label": `Delete session ${s.tag ?? short(s.id)}`,
              onclick: async () => {
                if (!api || !confirm(`Delete session ${s.tag ?? s.id}? Its calls and devices are ended.`)) return;
                try {
                  await api.call("DELETE", `/sessions/${s.id}`);
                } catch (e) {
                  say((e as Error).message, "error");
                }
              },
            },
            "Delete",
          ),
        ),
      ),
    ),
  );
}

function sessionsPage(): Page {
  const list = h("div", { id: "session-list", "aria-live": "polite" });
  const tag = h("input", { id: "new-tag", name: "tag", maxLength: 50, placeholder: "e.g. support-call-42" });
  const form = h(
    "form",
    {
      class: "row",
      onsubmit: async (e: Event) => {
        e.preventDefault();
        if (!api) return;
        try {
          const s = await api.call<SessionBody>("POST", "/sessions", tag.value ? { tag: tag.value } : {});
          tag.value = "";
          say(`Session ${s.tag ?? short(s.id)} created`);
          go(`sessions/${s.id}`);
        } catch (err) {
          say((err as Error).message, "error");
        }
      },
    },
    h("label", { for: "new-tag" }, "Tag"),
    tag,
    h("button", { type: "submit", class: "primary" }, "Create session"),
  );
  fill(main, h("section", { class: "card", "aria-labelledby": "sessions-title" }, h("h2", { id: "sessions-title" }, "Sessions"), form, list));
  void loadSessions(list);
  const stop = new AbortController();
  void api?.events(
    null,
    (name, data) => {
      const d = data as { kind?: string };
      if (name === "resync" || (name === "change" && d.kind === "session")) void loadSessions(list);
    },
    (up) => live(up),
    stop.signal,
  );
  return { close: () => stop.abort() };
}

function show(): void {
  page?.close();
  page = null;
  if (!api) {
    const c = saved();
    if (c) api = new Api(c);
  }
  nav();
  if (!api) {
    signIn();
    return;
  }
  const r = route();
  const m = r.match(/^sessions\/([0-9a-f-]{36})$/);
  if (m) page = new SessionPage(api, m[1], main, () => go(""));
  else if (r === "ops") page = new OpsPage(api, main);
  else page = sessionsPage();
  main.focus({ preventScroll: true });
}

show();
