// Drives headless Chromium (Debian's, via playwright-core) through a scenario and
// prints one JSON line with what the pages observed. Usage:
//   node drive.js SCENARIO.json
// SCENARIO: {"websocketUrl": "ws://127.0.0.1:PORT", "pages": [{"token": "...", "connectTimeoutMs": 5000}]}
// A page may set "uniqueId" to make the SDK's sockets carry it instead of its own, and
// "sdk": "0.9.2" to run @bandwidth/webrtc-browser 0.9.2-beta.1 instead of 0.12.0-beta.1.
'use strict';
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');
const { chromium } = require('playwright-core');

function serve(dir) {
  const server = http.createServer((req, res) => {
    const url = req.url.split('?')[0];
    const file = path.join(dir, url === '/' ? 'index.html' : path.normalize(url).replace(/^(\.\.[/\\])+/, ''));
    fs.readFile(file, (err, data) => {
      if (err) {
        res.writeHead(404);
        return res.end();
      }
      res.writeHead(200, { 'content-type': file.endsWith('.html') ? 'text/html' : 'text/javascript' });
      res.end(data);
    });
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

async function main() {
  const scenario = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
  // Never outlive the test: a page stuck on a gateway that was killed under it (or
  // anything else) ends the driver with an error instead of hanging the suite.
  const deadline = scenario.deadlineMs || 120000;
  setTimeout(() => {
    console.error(`drive.js: no result after ${deadline} ms`);
    process.exit(2);
  }, deadline).unref();
  const server = await serve(path.join(__dirname, 'page'));
  const pageUrl = `http://127.0.0.1:${server.address().port}/`;
  const userDataDir = fs.mkdtempSync(path.join(require('node:os').tmpdir(), 'pb-chromium-'));
  // "caFile": Chromium trusts this CA, as a user who installed it would (Chromium on
  // Linux reads $HOME/.pki/nssdb: a HOME of its own with the CA in its NSS database).
  let env = process.env;
  if (scenario.caFile) {
    const home = path.join(userDataDir, 'home');
    const db = `sql:${path.join(home, '.pki', 'nssdb')}`;
    fs.mkdirSync(path.join(home, '.pki', 'nssdb'), { recursive: true });
    const { execFileSync } = require('node:child_process');
    execFileSync('certutil', ['-d', db, '-N', '--empty-password']);
    execFileSync('certutil', ['-d', db, '-A', '-t', 'C,,', '-n', 'patchbay-test-ca', '-i', scenario.caFile]);
    env = { ...process.env, HOME: home };
  }
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: process.env.PATCHBAY_CHROMIUM || '/usr/bin/chromium',
    env,
    headless: true,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
      '--autoplay-policy=no-user-gesture-required',
      // "fakeAudioFile": every page's microphone plays this WAV (looped) instead of beeps.
      ...(scenario.fakeAudioFile ? [`--use-file-for-fake-audio-capture=${scenario.fakeAudioFile}`] : []),
    ],
  });
  const results = [];
  const pages = [];
  try {
    for (const spec of scenario.pages) {
      const page = await context.newPage();
      pages.push(page);
      const logs = [];
      page.on('console', (m) => logs.push(`${m.type()}: ${m.text()}`));
      page.on('pageerror', (e) => logs.push(`pageerror: ${e.message}`));
      // "sdk": "0.9.2" runs the page built against that SDK version (default 0.12.0-beta.1).
      await page.goto(spec.sdk ? `${pageUrl}?sdk=${encodeURIComponent(spec.sdk)}` : pageUrl);
      await page.waitForFunction(() => window.pb);
      if (spec.logLevel) await page.evaluate((l) => { window.PB_LOG = l; }, spec.logLevel);
      if (spec.uniqueId) await page.evaluate((id) => window.pb.forceUniqueId(id), spec.uniqueId);
      // "captureSent": keep the encoded audio frames the page sends (in `sentAudio`).
      if (spec.captureSent) await page.evaluate(() => window.pb.captureSent());
      const outcome = await page
        .evaluate(([token, url, ms]) => window.pb.connect(token, url, ms), [
          spec.token,
          scenario.websocketUrl,
          spec.connectTimeoutMs || 5000,
        ])
        .catch((e) => `error: ${e.message}`);
      let published = null;
      if (spec.publish && outcome === 'connected') {
        published = await page
          .evaluate(([alias, video, raw]) => window.pb.publish(alias, video, raw), [spec.publish.alias, !!spec.publish.video, !!spec.publish.raw])
          .catch((e) => ({ error: e.message }));
      }
      // Page steps after publishing, in order: {"wait": ms} or {"call": "dtmf", "arg": "5"}.
      for (const step of spec.steps || []) {
        if (step.wait) await page.waitForTimeout(step.wait);
        if (step.call) await page.evaluate(([f, a]) => window.pb[f](a), [step.call, step.arg]);
      }
      // Let media flow, close events and reconnect attempts land.
      await page.waitForTimeout(spec.settleMs || 300);
      const observed = await page.evaluate(() => ({ closes: window.pb.closes, events: window.pb.events }));
      if (spec.captureSent) observed.sentAudio = await page.evaluate(() => window.pb.sentAudio());
      results.push({ outcome, published, ...observed, logs });
    }
    // REST calls while the pages stay connected (e.g. a whisper change), and
    // {"measure": true} looks at every page's received audio energy at that moment.
    const measures = pages.map(() => []);
    const timelines = pages.map(() => []);
    const looks = pages.map(() => []);
    for (const a of scenario.actions || []) {
      await new Promise((r) => setTimeout(r, a.afterMs || 0));
      // {"look": true}: every page's stream events and received tones now, into `looks`.
      if (a.look) {
        for (let i = 0; i < pages.length; i++) {
          looks[i].push({ at: Date.now(), ...(await pages[i].evaluate(async () => ({ events: [...window.pb.events], peaks: await window.pb.peaks() }))) });
        }
        continue;
      }
      // {"page": i, "call": "disconnect"}: a page function now (the SDK leaves).
      if (a.call) {
        await pages[a.page].evaluate(([f, x]) => window.pb[f](x), [a.call, a.arg]);
        continue;
      }
      // {"watch": {"everyMs": 200, "forMs": 30000}}: every page's received audio levels,
      // sampled with the wall clock (ms since the epoch) into its timeline.
      if (a.watch) {
        const end = Date.now() + a.watch.forMs;
        while (Date.now() < end) {
          for (let i = 0; i < pages.length; i++) {
            timelines[i].push({ at: Date.now(), levels: await pages[i].evaluate(() => window.pb.levels()) });
          }
          await new Promise((r) => setTimeout(r, a.watch.everyMs));
        }
        continue;
      }
      if (a.measure) {
        for (let i = 0; i < pages.length; i++) {
          measures[i].push(await pages[i].evaluate(() => window.pb.energy()));
        }
        continue;
      }
      const r = await fetch(a.url, {
        method: a.method,
        headers: { authorization: a.authorization, 'content-type': 'application/json' },
        body: a.body === undefined ? undefined : JSON.stringify(a.body),
      });
      if (!r.ok) throw new Error(`${a.method} ${a.url}: ${r.status} ${await r.text()}`);
    }
    // A final look at every page once all have done their part.
    await new Promise((r) => setTimeout(r, scenario.finalWaitMs || 0));
    for (let i = 0; i < pages.length; i++) {
      const final = await pages[i].evaluate(async () => ({
        events: window.pb.events,
        closes: window.pb.closes,
        energy: await window.pb.energy(),
        peaks: await window.pb.peaks(),
        video: window.pb.videoFrames(),
        socketUrls: window.pb.socketUrls(),
      }));
      results[i].final = final;
      results[i].measures = measures[i];
      results[i].looks = looks[i];
      results[i].timeline = timelines[i];
      results[i].logs = results[i].logs.slice(-(scenario.pages[i].keepLogs || 20));
    }
  } finally {
    await context.close();
    server.close();
    fs.rmSync(userDataDir, { recursive: true, force: true });
  }
  console.log(JSON.stringify({ pages: results }));
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : e);
  process.exit(1);
});
