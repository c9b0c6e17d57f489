// A tiny element builder: h("button", {onclick, class: "x"}, "text", child).

type Attrs = Record<string, unknown>;
type Child = Node | string | number | null | undefined | false | Child[];

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") {
      el.addEventListener(k.slice(2), v as EventListener);
    } else if (k === "class") {
      el.className = String(v);
    } else if (k in el && !k.startsWith("aria") && k !== "role" && !k.startsWith("data")) {
      (el as unknown as Record<string, unknown>)[k] = v;
    } else {
      el.setAttribute(k, v === true ? "" : String(v));
    }
  }
  append(el, children);
  return el;
}

function append(el: Node, children: Child[]): void {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.appendChild(typeof c === "object" ? c : document.createTextNode(String(c)));
  }
}

/** Replace an element's children. */
export function fill(el: Element, ...children: Child[]): void {
  el.replaceChildren();
  append(el, children);
}

/** Copy text, and say so in the status line. */
export async function copy(text: string, what: string): Promise<void> {
  try {
    await navigator.clipboard.writeText(text);
    say(`${what} copied`);
  } catch {
    // No clipboard permission (an http page on another host): show it to copy by hand.
    window.prompt(`Copy the ${what}:`, text);
  }
}

let sayTimer: number | undefined;
/** A short message in the status banner (read by screen readers). */
export function say(text: string, kind: "info" | "error" = "info"): void {
  const b = document.getElementById("banner");
  if (!b) return;
  b.className = kind;
  b.textContent = text;
  window.clearTimeout(sayTimer);
  if (kind === "info") sayTimer = window.setTimeout(() => (b.textContent = ""), 4000);
}

export function short(id: string): string {
  return id.slice(0, 8);
}

/** Say whether the live updates are connected. */
export function live(up: boolean): void {
  const b = document.getElementById("banner");
  if (!b) return;
  if (!up) {
    b.className = "error";
    b.textContent = "Live updates lost: the gateway is not reachable (restarting?). Reconnecting…";
  } else if (b.textContent?.startsWith("Live updates lost")) {
    b.className = "info";
    b.textContent = "Live updates connected again.";
  }
}

