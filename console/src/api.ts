// The gateway's REST API with the signed-in account's credentials (kept in
// sessionStorage for this tab only; never in a URL), and its live event stream.

export interface Creds {
  account: string;
  user: string;
  password: string;
}

const KEY = "patchbay.console.creds";

export function saved(): Creds | null {
  try {
    const v = sessionStorage.getItem(KEY);
    return v ? (JSON.parse(v) as Creds) : null;
  } catch {
    return null;
  }
}

export function save(c: Creds | null): void {
  if (c) sessionStorage.setItem(KEY, JSON.stringify(c));
  else sessionStorage.removeItem(KEY);
}

export class ApiError extends Error {
  constructor(
    public status: number,
    message: string,
  ) {
    super(message);
  }
}

function auth(c: Creds): string {
  const bytes = new TextEncoder().encode(`${c.user}:${c.password}`);
  return "Basic " + btoa(String.fromCharCode(...bytes));
}

/** What an error means to the person at the console. */
export function explain(status: number, body: string): string {
  let text = body;
  try {
    const j = JSON.parse(body);
    text = j.error || j.message || body;
  } catch {
    /* plain text */
  }
  if (status === 401) return "Wrong API user or password.";
  if (status === 403) return "These credentials belong to another account: check the account id.";
  if (status === 503 && !text) return "The gateway is not ready (restarting, or its store is down). Try again in a moment.";
  return text || `The gateway answered ${status}.`;
}

export class Api {
  constructor(public creds: Creds) {}

  get base(): string {
    return `/v1/accounts/${encodeURIComponent(this.creds.account)}`;
  }

  async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    let r: Response;
    try {
      r = await fetch(this.base + path, {
        method,
        headers: {
          authorization: auth(this.creds),
          "x-requested-with": "XMLHttpRequest",
          ...(body === undefined ? {} : { "content-type": "application/json" }),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
      });
    } catch {
      throw new ApiError(0, "The gateway cannot be reached: is it running (restarting)?");
    }
    const text = await r.text();
    if (!r.ok) throw new ApiError(r.status, explain(r.status, text));
    return (text ? JSON.parse(text) : undefined) as T;
  }

  get<T>(path: string): Promise<T> {
    return this.call<T>("GET", path);
  }

  /** A file of this API (a recording's) as a Blob, with the credentials in a header. */
  async blob(path: string): Promise<Blob> {
    const r = await fetch(path.startsWith("/v1/") ? path : this.base + path, {
      headers: { authorization: auth(this.creds), "x-requested-with": "XMLHttpRequest" },
      cache: "no-store",
    }).catch(() => {
      throw new ApiError(0, "The gateway cannot be reached: is it running (restarting)?");
    });
    if (!r.ok) throw new ApiError(r.status, explain(r.status, await r.text()));
    return r.blob();
  }

  /**
   * Read the account's event stream (server-sent events over fetch, so that the
   * credentials go in a header) until `signal` aborts; reconnects by itself and calls
   * `onState` with whether it is connected.
   */
  async events(
    sessionId: string | null,
    onEvent: (name: string, data: unknown) => void,
    onState: (up: boolean) => void,
    signal: AbortSignal,
  ): Promise<void> {
    let delay = 500;
    while (!signal.aborted) {
      try {
        const q = sessionId ? `?sessionId=${encodeURIComponent(sessionId)}` : "";
        const r = await fetch(`${this.base}/events${q}`, {
          headers: { authorization: auth(this.creds), "x-requested-with": "XMLHttpRequest" },
          signal,
          cache: "no-store",
        });
        if (!r.ok || !r.body) throw new Error(String(r.status));
        onState(true);
        delay = 500;
        const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += value;
          let at: number;
          while ((at = buf.indexOf("\n\n")) >= 0) {
            const block = buf.slice(0, at);
            buf = buf.slice(at + 2);
            let name = "message";
            let data = "";
            for (const line of block.split("\n")) {
              if (line.startsWith("event: ")) name = line.slice(7);
              else if (line.startsWith("data: ")) data += line.slice(6);
            }
            if (data) onEvent(name, JSON.parse(data));
          }
        }
      } catch {
        if (signal.aborted) return;
      }
      onState(false);
      await new Promise((ok) => setTimeout(ok, delay));
      delay = Math.min(delay * 2, 5000);
    }
  }
}

// ---- wire types (the Bandwidth API and Patchbay's documented additions) ----

export interface SessionBody {
  id: string;
  tag?: string;
}

export interface Participant {
  id: string;
  publishPermissions: string[];
  tag?: string;
  callbackUrl?: string;
  deviceApiVersion?: string;
  sessions?: string[];
}

export interface ParticipantSubscription {
  participantId: string;
  streamAliases?: string[];
}

export interface Subscriptions {
  sessionId?: string;
  participants?: ParticipantSubscription[];
}

export interface Quality {
  codec: string;
  packets: number;
  lossPercent: number;
  jitterMs: number;
  rttMs: number | null;
  mos: number;
}

/** A SIP call, a browser device, or a stream participant's bot. */
export type Origin = "phone" | "browser" | "bot";

export interface Source {
  participantId: string;
  alias: string | null;
  origin: Origin;
  mediaType: "AUDIO" | "VIDEO";
  levelDbov: number | null;
  speaking: boolean;
  quality: Quality | null;
}

export interface Listener {
  participantId: string;
  origin: Origin;
  device: string;
  hears: { participantId: string; alias: string | null; mediaType: string; delivery: "mixing" | "forwarding" }[];
  /** A bot's WebSocket: open or being connected again, and its audio waiting to play. */
  stream?: { connected: boolean; bufferedMs: number };
}

export interface MediaView {
  sessionId: string;
  running: boolean;
  atMs?: number;
  sources: Source[];
  listeners: Listener[];
}

export interface Dialog {
  id: string;
  state: string;
  sipDialogData?: { to?: string; from?: string };
  eventData?: { reason?: string; details?: string };
  [k: string]: unknown;
}

export interface LogEntry {
  eventId: string;
  participantId: string;
  event: string;
  url: string;
  status: "pending" | "retrying" | "delivered" | "failed";
  attempts: number;
  nextAttemptMs: number | null;
  lastError: string | null;
  createdMs: number;
  updatedMs: number;
}

/** A recording of a session (Patchbay addition). */
export interface RecordingFile {
  id: string;
  name: string;
  participantId?: string;
  streamAlias?: string;
  contentType: string;
  channels: number;
  sampleRate: number;
  offsetMs: number;
  durationMs: number;
  bytes: number;
  complete: boolean;
  uploaded: boolean;
  mediaUrl: string;
}

export interface Recording {
  id: string;
  sessionId: string;
  mode: string;
  format: string;
  status: "recording" | "stopping" | "complete" | "failed";
  startTime: string;
  endTime?: string;
  reason?: string;
  damaged: boolean;
  files: RecordingFile[];
}
