// The patch bay: who hears whom. Rows are the session's members (listeners), columns
// their published streams by alias (phone legs included). A cell is pressed when the
// stored subscriptions say the listener receives that stream, and shows what the
// media plane does now (forwarding into a browser, mixing into a call). The rules
// mirror the gateway's resolver (Bandwidth semantics):
// - a non-empty `participants` list names exactly whose streams are received (an
//   entry's non-empty `streamAliases` narrows it to those aliases) and overrides
// - `sessionId`: every other member's streams;
// - nobody receives their own streams.

import type { MediaView, Origin, ParticipantSubscription, Subscriptions } from "./api";

export interface Column {
  participantId: string;
  alias: string | null;
  mediaTypes: string[];
  origin: Origin;
}

export function columnKey(c: { participantId: string; alias: string | null }): string {
  return `${c.participantId}/${c.alias ?? ""}`;
}

/** The published streams of the session's members, one column per (participant, alias). */
export function columns(view: MediaView, members: string[]): Column[] {
  const out = new Map<string, Column>();
  for (const s of view.sources) {
    if (!members.includes(s.participantId)) continue;
    const key = columnKey(s);
    const c = out.get(key) ?? { participantId: s.participantId, alias: s.alias, mediaTypes: [], origin: s.origin };
    if (!c.mediaTypes.includes(s.mediaType)) c.mediaTypes.push(s.mediaType);
    out.set(key, c);
  }
  return [...out.values()].sort(
    (a, b) => members.indexOf(a.participantId) - members.indexOf(b.participantId) || columnKey(a).localeCompare(columnKey(b)),
  );
}

/** Whether `listener` with `subs` receives the stream of `col` (stored state). */
export function receives(listener: string, subs: Subscriptions, sessionId: string, col: Column): boolean {
  if (col.participantId === listener) return false;
  const list = subs.participants ?? [];
  if (list.length > 0) {
    return list.some(
      (p) =>
        p.participantId === col.participantId &&
        (!p.streamAliases || p.streamAliases.length === 0 || (col.alias !== null && p.streamAliases.includes(col.alias))),
    );
  }
  return subs.sessionId === sessionId;
}

/** What the media plane delivers to `listener` of `col` now, if anything. */
export function delivery(view: MediaView, listener: string, col: Column): "mixing" | "forwarding" | null {
  for (const l of view.listeners) {
    if (l.participantId !== listener) continue;
    const h = l.hears.find((x) => x.participantId === col.participantId && (x.alias ?? null) === col.alias);
    if (h) return h.delivery;
  }
  return null;
}

/**
 * The subscriptions of `listener` with the stream of `col` switched on or off, as an
 * explicit participant list (a session-level subscription is expanded into the other
 * members first, so that the rest of what the listener hears does not change).
 */
export function toggled(
  listener: string,
  subs: Subscriptions,
  members: string[],
  allColumns: Column[],
  col: Column,
  on: boolean,
): Subscriptions {
  let list: ParticipantSubscription[] = (subs.participants ?? []).map((p) => ({ ...p, streamAliases: p.streamAliases && [...p.streamAliases] }));
  if (list.length === 0 && subs.sessionId) {
    list = members.filter((m) => m !== listener).map((participantId) => ({ participantId }));
  }
  const aliasesOf = (pid: string): string[] =>
    allColumns.filter((c) => c.participantId === pid && c.alias !== null).map((c) => c.alias as string);
  const at = list.findIndex((p) => p.participantId === col.participantId);
  const entry = at >= 0 ? list[at] : null;
  const whole = (e: ParticipantSubscription) => !e.streamAliases || e.streamAliases.length === 0;
  if (on) {
    if (!entry) list.push(col.alias === null ? { participantId: col.participantId } : { participantId: col.participantId, streamAliases: [col.alias] });
    else if (!whole(entry)) {
      if (col.alias === null) delete entry.streamAliases;
      else if (!entry.streamAliases!.includes(col.alias)) entry.streamAliases!.push(col.alias);
    }
  } else if (entry) {
    const remaining = (whole(entry) ? aliasesOf(col.participantId) : entry.streamAliases!).filter((a) => a !== col.alias);
    if (remaining.length === 0 || col.alias === null) list.splice(at, 1);
    else entry.streamAliases = remaining;
  }
  for (const e of list) if (e.streamAliases === undefined) delete e.streamAliases;
  return { participants: list };
}

export type Preset = "monitor" | "coach" | "barge";

/**
 * Contact-center presets over three members: the supervisor always hears agent and
 * caller; the agent always hears the caller and the caller the agent.
 * - monitor: nobody hears the supervisor;
 * - coach (whisper): the agent hears the supervisor, the caller does not;
 * - barge: everyone hears everyone.
 */
export function preset(kind: Preset, supervisor: string, agent: string, caller: string): Map<string, Subscriptions> {
  const list = (...ids: string[]): Subscriptions => ({ participants: ids.map((participantId) => ({ participantId })) });
  return new Map([
    [supervisor, list(agent, caller)],
    [agent, kind === "monitor" ? list(caller) : list(caller, supervisor)],
    [caller, kind === "barge" ? list(agent, supervisor) : list(agent)],
  ]);
}
