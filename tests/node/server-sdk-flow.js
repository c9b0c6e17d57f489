// Drives Patchbay with Bandwidth's own server SDK (@bandwidth/webrtc 1.x), changing
// only the base URL. Every call must succeed and every response must pass the SDK's
// own schema validation. Prints one JSON line with what it created, for the Rust
// test to check against the server.
'use strict';
const assert = require('node:assert/strict');
const { Client, ApiController, Environment } = require('@bandwidth/webrtc');

const base = process.env.PATCHBAY_BASE;
const accountId = process.env.PATCHBAY_ACCOUNT || 'dev';

async function main() {
  const client = new Client({
    environment: Environment.Custom,
    baseUrl: `${base}/v1`,
    basicAuthUserName: process.env.PATCHBAY_USER || 'dev',
    basicAuthPassword: process.env.PATCHBAY_PASSWORD || 'dev',
    timeout: 10000,
  });
  const api = new ApiController(client);

  const created = await api.createParticipant(accountId, {
    publishPermissions: ['AUDIO', 'VIDEO'],
    tag: 'sdk-agent',
    deviceApiVersion: 'V3',
  });
  assert.equal(created.statusCode, 200);
  const agent = created.result.participant;
  assert.match(agent.id, /^[0-9a-f-]{36}$/);
  assert.deepEqual(agent.publishPermissions, ['AUDIO', 'VIDEO']);
  assert.deepEqual(agent.sessions, []);
  assert.equal(agent.tag, 'sdk-agent');
  assert.equal(agent.deviceApiVersion, 'V3');
  assert.ok(created.result.token.length < 180);

  const caller = (await api.createParticipant(accountId, { publishPermissions: ['AUDIO'] })).result.participant;
  const noBody = (await api.createParticipant(accountId)).result.participant;

  const session = await api.createSession(accountId, { tag: 'sdk-session' });
  assert.equal(session.statusCode, 200);
  const sessionId = session.result.id;
  assert.equal(session.result.tag, 'sdk-session');
  assert.equal((await api.getSession(accountId, sessionId)).result.id, sessionId);

  assert.equal((await api.addParticipantToSession(accountId, sessionId, agent.id, { sessionId })).statusCode, 204);
  assert.equal((await api.addParticipantToSession(accountId, sessionId, caller.id)).statusCode, 204);

  const got = await api.getParticipant(accountId, agent.id);
  assert.deepEqual(got.result.sessions, [sessionId]);
  assert.deepEqual(got.result.subscriptions, { sessionId });

  const list = await api.listSessionParticipants(accountId, sessionId);
  assert.deepEqual(list.result.map((p) => p.id), [agent.id, caller.id]);

  const whisper = { sessionId, participants: [{ participantId: agent.id, streamAliases: ['microphone'] }] };
  assert.equal((await api.updateParticipantSubscriptions(accountId, sessionId, caller.id, whisper)).statusCode, 204);
  const subs = await api.getParticipantSubscriptions(accountId, sessionId, caller.id);
  assert.deepEqual(subs.result, whisper);

  // Errors surface as the SDK's API error with the status code and our error body.
  await assert.rejects(api.getParticipant(accountId, '00000000-0000-4000-8000-000000000000'), (e) => {
    assert.equal(e.statusCode, 404);
    const body = JSON.parse(e.body);
    assert.match(body.error, /not found/);
    assert.match(body.requestId, /^[0-9a-f-]{36}$/);
    return true;
  });

  assert.equal((await api.removeParticipantFromSession(accountId, sessionId, caller.id)).statusCode, 204);
  assert.deepEqual((await api.listSessionParticipants(accountId, sessionId)).result.map((p) => p.id), [agent.id]);
  assert.equal((await api.deleteParticipant(accountId, noBody.id)).statusCode, 204);
  const deletedSession = (await api.createSession(accountId)).result.id;
  assert.equal((await api.deleteSession(accountId, deletedSession)).statusCode, 204);

  console.log(JSON.stringify({ sessionId, agent: agent.id, caller: caller.id, deletedParticipant: noBody.id, deletedSession }));
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : e);
  if (e && e.body) console.error('body:', e.body);
  process.exit(1);
});
