// Bandwidth's sample applications' server side, as their call flows drive the WebRTC
// API: the same REST requests, in the same order and with the same concurrency, with
// only what a migrating user changes (the REST base URL, the browsers' websocketUrl,
// the SIP URI of the transfer). Written for Patchbay's suite from reading the samples
// (their code is not here); each route names the sample's file and handler it follows.
// Where a sample talks to Bandwidth Voice (createCall, the answer callback's BXML), the
// test stands in for Voice: it asks for the BXML the sample would return and places the
// SIP call it describes.
//
// Usage: node samples.js transfer|conference|courtroom   (prints {"port": N} once up)
// Env: PATCHBAY_BASE (http(s)://host:port), PATCHBAY_WS (the browsers' websocketUrl),
//      PATCHBAY_SIP_URI (the transfer target), PATCHBAY_ACCOUNT/USER/PASSWORD.
'use strict';
const http = require('node:http');
const crypto = require('node:crypto');
const { Client, ApiController, Environment } = require('@bandwidth/webrtc');

const sample = process.argv[2];
const base = process.env.PATCHBAY_BASE;
const accountId = process.env.PATCHBAY_ACCOUNT || 'dev';
const user = process.env.PATCHBAY_USER || 'dev';
const password = process.env.PATCHBAY_PASSWORD || 'dev';
const sipUri = process.env.PATCHBAY_SIP_URI;
const websocketUrl = process.env.PATCHBAY_WS;
// The migration's first change: the SDK's environment points at Patchbay.
const api = new ApiController(
  new Client({ environment: Environment.Custom, baseUrl: `${base}/v1`, basicAuthUserName: user, basicAuthPassword: password, timeout: 10000 }),
);
const auth = 'Basic ' + Buffer.from(`${user}:${password}`).toString('base64');
let appBase = '';

/** A raw REST call, as the samples that use axios make it (webrtc-sample-conference-node). */
async function rest(method, path, body) {
  const r = await fetch(`${base}/v1/accounts/${accountId}${path}`, {
    method,
    headers: { authorization: auth, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  if (!r.ok) throw Object.assign(new Error(`${method} ${path}: ${r.status} ${text}`), { status: r.status });
  return text ? JSON.parse(text) : null;
}

/** A Voice call id as Bandwidth Voice gives them (`c-` and a UUID-like body). */
function voiceCallId() {
  return `c-${crypto.randomBytes(4).toString('hex')}-${crypto.randomUUID()}`;
}

const routes = {};
const log = [];

// ---- Bandwidth-Samples/webrtc-transfer-nodejs, server.js -------------------------
if (sample === 'transfer') {
  const sessionMap = new Map();
  const calls = new Map();
  // getSessionId(tag): createSession once per agent's tag.
  async function getSessionId(tag) {
    if (sessionMap.has(tag)) return sessionMap.get(tag);
    const r = await api.createSession(accountId, { tag });
    sessionMap.set(tag, r.result.id);
    return r.result.id;
  }
  // createParticipant(tag): AUDIO, deviceApiVersion V3.
  async function createParticipant(tag) {
    const r = await api.createParticipant(accountId, { tag, publishPermissions: ['AUDIO'], deviceApiVersion: 'V3' });
    return [r.result.participant, r.result.token];
  }
  // addParticipantToSession(participantId, sessionId): body {sessionId}.
  async function addParticipantToSession(participantId, sessionId) {
    await api.addParticipantToSession(accountId, sessionId, participantId, { sessionId });
  }
  // GET /startBrowserCall: session for the agent, a participant, added, token back.
  routes['GET /startBrowserCall'] = async (q) => {
    const sessionId = await getSessionId('session#' + q.agent_id);
    const [participant, token] = await createParticipant(crypto.randomUUID());
    await addParticipantToSession(participant.id, sessionId);
    return { message: 'created participant and setup session', token, participantId: participant.id, sessionId };
  };
  // GET /startPSTNCall: (Voice createCall), then the phone's participant in the agent's
  // session, kept by the call id.
  routes['GET /startPSTNCall'] = async (q) => {
    const callId = voiceCallId();
    const sessionId = await getSessionId('session#' + q.agent_id);
    const [participant, token] = await createParticipant(crypto.randomUUID());
    await addParticipantToSession(participant.id, sessionId);
    participant.token = token;
    participant.session_id = sessionId;
    calls.set(callId, participant);
    return { status: 'ringing', callId, participantId: participant.id };
  };
  // POST /callAnswered: the transfer BXML (the migration's third change: our SIP URI).
  routes['POST /callAnswered'] = async (_q, body) => {
    const participant = calls.get(body.callId);
    return ApiController.generateTransferBxml(participant.token, body.callId, sipUri);
  };
  // GET /transferPSTNCall: updateParticipantSession = remove from the old session, then
  // add to the new one (each awaited, in that order).
  routes['GET /transferPSTNCall'] = async (q) => {
    const fromSessionId = await getSessionId(`session#${q.from_agent_id}`);
    const [callId, participant] = [...calls.entries()].find(([, p]) => p.session_id === fromSessionId);
    const toSessionId = await getSessionId(`session#${q.to_agent_id}`);
    await api.removeParticipantFromSession(accountId, fromSessionId, participant.id);
    await addParticipantToSession(participant.id, toSessionId);
    participant.session_id = toSessionId;
    calls.set(callId, participant);
    return { status: 'transferred' };
  };
}

// ---- Bandwidth/webrtc-sample-conference-node, server.ts --------------------------
if (sample === 'conference') {
  const slugsToIds = new Map();
  const codeToIds = new Map();
  const idsToCodes = new Map();
  const participantToSession = new Map();
  const sessionParticipants = new Map();
  // createConference(slug): POST sessions {tag: slug}, a 3-digit conference code.
  async function createConference(slug) {
    const s = await rest('POST', '/sessions', { tag: slug });
    slugsToIds.set(slug, s.id);
    let code;
    while (!code || codeToIds.has(code)) code = Math.random().toString().slice(2, 5);
    codeToIds.set(code, s.id);
    idsToCodes.set(s.id, code);
    sessionParticipants.set(s.id, new Set());
    return s.id;
  }
  // createParticipant(slug, version, publishPermissions): with the callback URL.
  async function createParticipant(slug, version, publishPermissions) {
    const r = await rest('POST', '/participants', {
      callbackUrl: `${appBase}/callback/webrtc`,
      publishPermissions,
      tag: slug,
      deviceApiVersion: version,
    });
    return { participant: r.participant, deviceToken: r.token };
  }
  async function addParticipantToSession(participantId, sessionId) {
    await rest('PUT', `/sessions/${sessionId}/participants/${participantId}`, { sessionId });
    participantToSession.set(participantId, sessionId);
    sessionParticipants.get(sessionId)?.add(participantId);
  }
  // cleanupParticipant: remove from its session, delete it, delete the emptied session.
  async function cleanupParticipant(participantId) {
    const sessionId = participantToSession.get(participantId);
    participantToSession.delete(participantId);
    if (sessionId) {
      await rest('DELETE', `/sessions/${sessionId}/participants/${participantId}`).catch((e) => log.push(e.message));
    }
    await rest('DELETE', `/participants/${participantId}`).catch((e) => log.push(e.message));
    if (sessionId) {
      const left = sessionParticipants.get(sessionId);
      left?.delete(participantId);
      if (!left || left.size === 0) {
        sessionParticipants.delete(sessionId);
        await rest('DELETE', `/sessions/${sessionId}`).catch((e) => log.push(e.message));
      }
    }
  }
  // POST /callback/webrtc: onLeave cleans the participant up.
  routes['POST /callback/webrtc'] = async (_q, payload) => {
    log.push(payload);
    if (payload.event === 'onLeave') await cleanupParticipant(payload.participantId);
    return '';
  };
  // POST /conferences {name}: the session of its slug (checked with GET) or a new one.
  routes['POST /conferences'] = async (_q, body) => {
    const slug = body.name.toLowerCase().replace(/[^a-z0-9]+/g, '-');
    if (slugsToIds.has(slug)) {
      const id = slugsToIds.get(slug);
      try {
        await rest('GET', `/sessions/${id}`);
        return { id, slug };
      } catch (e) {
        slugsToIds.delete(slug);
      }
    }
    return { id: await createConference(slug), slug };
  };
  // POST /conferences/:slug/participants?version=v3: a browser's participant (lowercase
  // "v3", AUDIO+VIDEO), added with a session-level subscription; websocketUrl back.
  routes['POST /conferences/participants'] = async (q) => {
    const version = q.version || 'v3';
    let id = slugsToIds.get(q.slug);
    if (id) {
      try {
        await rest('GET', `/sessions/${id}`);
      } catch (e) {
        id = undefined;
        slugsToIds.delete(q.slug);
      }
    }
    if (!id) id = await createConference(q.slug);
    const { participant, deviceToken } = await createParticipant(q.slug, version, ['AUDIO', 'VIDEO']);
    await addParticipantToSession(participant.id, id);
    return { websocketUrl, conferenceCode: idsToCodes.get(id), conferenceId: id, participantId: participant.id, deviceToken };
  };
  // POST /callback/joinConference {digits, callId}: a phone's participant ("v3",
  // AUDIO), added, and BXML that speaks then transfers with generateTransferBxmlVerb.
  routes['POST /callback/joinConference'] = async (_q, body) => {
    const sessionId = codeToIds.get(body.digits);
    const slug = [...slugsToIds.entries()].find(([, v]) => v === sessionId)[0];
    const { participant, deviceToken } = await createParticipant(slug, 'v3', ['AUDIO']);
    await addParticipantToSession(participant.id, sessionId);
    return `<?xml version="1.0" encoding="UTF-8" ?>
  <Response>
      <SpeakSentence voice="julie">Thank you. Connecting you to your conference now.</SpeakSentence>
      ${ApiController.generateTransferBxmlVerb(deviceToken, body.callId, sipUri)}
  </Response>`;
  };
  routes['GET /state'] = async () => ({
    sessions: [...sessionParticipants.keys()],
    participants: [...participantToSession.keys()],
    log,
  });
}

// ---- Bandwidth-Samples/webrtc-courtroom-demo-js, server.js and roomstate.js --------
if (sample === 'courtroom') {
  const listenTo = {
    inPrep: { judge: ['translator', 'LEP'], LEP: [], translator: ['judge'] },
    inSession: { judge: ['translator', 'LEP'], LEP: ['translator', 'judge'], translator: ['LEP', 'judge'] },
    inTervention: { judge: [], LEP: [], translator: [] },
  };
  const roleMap = { judge: [], translator: [], LEP: [] };
  const users = new Map();
  const calls = new Map();
  let sessionId = null;
  let currentRoomState = 'inPrep';
  const pending = [];
  async function getSessionId() {
    if (sessionId) return sessionId;
    const r = await api.createSession(accountId, { tag: 'session-test' });
    sessionId = r.result.id;
    return sessionId;
  }
  // createParticipant(tag): AUDIO, no deviceApiVersion.
  async function createParticipant(tag) {
    const r = await api.createParticipant(accountId, { tag, publishPermissions: ['AUDIO'] });
    return [r.result.participant, r.result.token];
  }
  function addUserToList(participantId, role) {
    if (!users.has(participantId)) {
      roleMap[role].push(participantId);
      users.set(participantId, { role, participant_id: participantId, new: true });
    }
  }
  // determineSubscriptions: the participants of the roles this role listens to now.
  function determineSubscriptions(u) {
    const ids = listenTo[currentRoomState][u.role].flatMap((r) => roleMap[r]).filter((p) => p !== u.participant_id);
    return { participants: ids.map((participantId) => ({ participantId })) };
  }
  // updateSubscriptions: every user's subscriptions, all at once (forEach with an async
  // callback: not awaited): the new user is added with its body, the others updated
  // with theirs, which may name it before its add has landed. An empty list is sent as
  // an empty body.
  function updateSubscriptions(participantId, role, isNew) {
    if (isNew) addUserToList(participantId, role);
    users.forEach(async (u) => {
      let body = determineSubscriptions(u);
      if (body.participants.length === 0) body = {};
      const p = (async () => {
        if (u.new) {
          users.set(u.participant_id, { ...u, new: false });
          await api.addParticipantToSession(accountId, sessionId, u.participant_id, body);
        } else {
          await api.updateParticipantSubscriptions(accountId, sessionId, u.participant_id, body);
        }
      })().catch((e) => log.push(`${e.statusCode || ''} ${e.body || e.message}`));
      pending.push(p);
    });
  }
  // POST /startBrowserCall?role: a participant, its subscriptions (not awaited), the
  // token back at once.
  routes['POST /startBrowserCall'] = async (q) => {
    const session = await getSessionId();
    const [participant, token] = await createParticipant(crypto.randomUUID());
    updateSubscriptions(participant.id, q.role, true);
    return { message: 'created particpant and setup session', token, session_id: session, participant_id: participant.id, role: q.role };
  };
  // GET /roomTopology?participant&state: the judge changes the room's state.
  routes['GET /roomTopology'] = async (q) => {
    currentRoomState = q.state;
    updateSubscriptions(q.participant, 'judge', false);
    return '';
  };
  // GET /startPSTNCall?participant&destinationTn: (Voice createCall) a participant for
  // the phone, with the role of whoever called it.
  routes['GET /startPSTNCall'] = async (q) => {
    await getSessionId();
    const [participant, token] = await createParticipant('+1' + q.destinationTn);
    const callId = voiceCallId();
    participant.token = token;
    calls.set(callId, { participant, sponsorRole: users.get(q.participant).role });
    return { status: 'ringing', callId, participantId: participant.id };
  };
  // POST /callAnswered {callId}: the phone joins the role map (its add and the others'
  // updates in flight) and the transfer BXML goes back at once.
  routes['POST /callAnswered'] = async (_q, body) => {
    const { participant, sponsorRole } = calls.get(body.callId);
    updateSubscriptions(participant.id, sponsorRole, true);
    return ApiController.generateTransferBxml(participant.token, body.callId, sipUri);
  };
  // For the test: whatever the concurrent requests said (none should fail).
  routes['GET /settled'] = async () => {
    await Promise.all(pending);
    return { errors: log, roles: roleMap };
  };
}

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, 'http://localhost');
  let route = `${req.method} ${url.pathname}`;
  const q = Object.fromEntries(url.searchParams);
  const conf = url.pathname.match(/^\/conferences\/([^/]+)\/participants$/);
  if (conf) {
    route = `${req.method} /conferences/participants`;
    q.slug = conf[1];
  }
  let raw = '';
  for await (const chunk of req) raw += chunk;
  const handler = routes[route];
  if (!handler) {
    res.writeHead(404);
    return res.end();
  }
  try {
    const out = await handler(q, raw ? JSON.parse(raw) : {});
    const text = typeof out === 'string' ? out : JSON.stringify(out);
    res.writeHead(200, { 'content-type': typeof out === 'string' ? 'application/xml' : 'application/json' });
    res.end(text);
  } catch (e) {
    log.push(e.message);
    res.writeHead(500, { 'content-type': 'text/plain' });
    res.end(e.body || e.message);
  }
});
server.listen(0, '127.0.0.1', () => {
  appBase = `http://127.0.0.1:${server.address().port}`;
  console.log(JSON.stringify({ port: server.address().port }));
});
