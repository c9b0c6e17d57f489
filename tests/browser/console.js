// The web console's acceptance run, as a person would do it, in headless Chromium:
// sign in (a wrong password first), create a session and two participants, join as one
// from the console (fake microphone), hand the other's token to the test (which calls
// in with sipp), watch the patch bay, switch the phone's audio off and on for the
// browser (mouse, then keyboard), read the quality rows, check accessibility with
// axe-core and the page at phone width. Screenshots of each step go to `artifacts`.
//
// Usage: node console.js config.json → one JSON line on stdout.
// config: {base, account, user, password, artifacts, tokenFile, deadlineMs}
'use strict';

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { chromium } = require('playwright-core');

const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const out = { steps: [], screenshots: [], axe: {}, logs: [] };

function step(name) {
  out.steps.push({ name, atMs: Date.now() });
}

async function shot(page, name) {
  const file = path.join(config.artifacts, `${String(out.screenshots.length + 1).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  out.screenshots.push(file);
}

/** Serious and critical axe-core violations on the page now. */
async function axe(page, name) {
  await page.addScriptTag({ path: require.resolve('axe-core/axe.min.js') });
  const result = await page.evaluate(async () => {
    // eslint-disable-next-line no-undef
    const r = await axe.run(document, { resultTypes: ['violations'] });
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.length, help: v.help }));
  });
  out.axe[name] = result.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  out.axe[`${name}All`] = result;
}

/** Wait until `fn` (in the page) returns something truthy; returns it. */
async function until(page, what, fn, arg, timeoutMs = 20000) {
  try {
    const handle = await page.waitForFunction(fn, arg, { timeout: timeoutMs, polling: 100 });
    return await handle.jsonValue();
  } catch (e) {
    throw new Error(`waiting for ${what}: ${e.message.split('\n')[0]}`);
  }
}

const level = (page) => page.$eval('#hearing', (el) => Number(el.dataset.level));

/** The level of what the page hears, folded by `fold` over 1.5 s of readings. */
async function sustained(page, fold) {
  let acc = await level(page);
  for (let i = 0; i < 6; i++) {
    await new Promise((r) => setTimeout(r, 250));
    acc = fold(acc, await level(page));
  }
  return acc;
}

async function run(page) {
  step('open');
  await page.goto(config.base + '/');
  await page.waitForSelector('#password');
  out.url = page.url();
  await axe(page, 'signin');
  await shot(page, 'sign-in');

  step('wrong password');
  await page.fill('#account', config.account);
  await page.fill('#user', config.user);
  await page.fill('#password', 'not-the-password');
  await page.click('button[type=submit]');
  await until(page, 'the sign-in error', () => document.getElementById('signin-error')?.textContent);
  out.wrongPassword = await page.textContent('#signin-error');

  step('sign in');
  await page.fill('#password', config.password);
  await page.click('button[type=submit]');
  await page.waitForSelector('#new-tag');
  out.emptySessions = await page.textContent('#session-list');

  step('create session');
  await page.fill('#new-tag', 'acceptance');
  await page.click('text=Create session');
  await page.waitForSelector('#p-tag');
  out.sessionId = page.url().split('/').pop();

  step('create participants');
  for (const [tag, video] of [['agent-browser', true], ['caller-phone', false]]) {
    await page.fill('#p-tag', tag);
    await page.setChecked('#p-video', video);
    await page.click('text=Add participant');
    await page.waitForSelector(`#members li:has-text("${tag}")`);
  }
  const ids = await page.$$eval('#members li', (lis) =>
    Object.fromEntries(lis.map((li) => [li.querySelector('.name').textContent, li.dataset.participant])),
  );
  out.participants = ids;
  await shot(page, 'participants');

  step('copy the phone token');
  await page.click('button[aria-label="Copy the token of caller-phone"]');
  const token = await page.evaluate(() => navigator.clipboard.readText());
  await page.click('button[aria-label="Copy a BXML Transfer for caller-phone"]');
  out.bxml = await page.evaluate(() => navigator.clipboard.readText());
  fs.writeFileSync(config.tokenFile, token);

  step('join from the console');
  await page.selectOption('#join-as', ids['agent-browser']);
  await page.click('#join-button');
  await until(page, 'publishing', () => document.getElementById('join-log')?.textContent.includes('publishing'));

  step('the phone calls in (sipp, started by the test)');
  const phoneCol = `${ids['caller-phone']}/phone`;
  const browserCol = `${ids['agent-browser']}/console`;
  await page.waitForSelector(`th[data-col="${phoneCol}"]`, { timeout: 30000 });
  await page.waitForSelector(`th[data-col="${browserCol}"]`, { timeout: 30000 });
  // Both speak at some moment (the fake microphone beeps; sipp plays a tone).
  out.speaking = await until(
    page,
    'both streams speaking',
    ([a, b]) => {
      window.__seen = window.__seen || {};
      for (const k of [a, b]) {
        if (document.querySelector(`th[data-col="${k}"]`)?.dataset.speaking === 'true') window.__seen[k] = true;
      }
      return window.__seen[a] && window.__seen[b] ? window.__seen : null;
    },
    [phoneCol, browserCol],
  );
  const cell = `button.cell[data-listener="${ids['agent-browser']}"][data-col="${phoneCol}"]`;
  out.cellBefore = await until(
    page,
    'the phone mixed... forwarded to the browser',
    (sel) => {
      const b = document.querySelector(sel);
      return b && b.dataset.delivery === 'forwarding' ? { pressed: b.getAttribute('aria-pressed'), delivery: b.dataset.delivery, text: b.textContent } : null;
    },
    cell,
  );
  const phoneHearsBrowser = `button.cell[data-listener="${ids['caller-phone']}"][data-col="${browserCol}"]`;
  out.phoneCell = await until(page, 'the browser mixed into the call', (sel) => document.querySelector(sel)?.dataset.delivery === 'mixing' && document.querySelector(sel).textContent, phoneHearsBrowser);
  out.levelBefore = await until(page, 'the phone heard in the browser', () => Number(document.getElementById('hearing').dataset.level) > 0.01 && Number(document.getElementById('hearing').dataset.level));
  await shot(page, 'patch-bay');

  step('switch the phone off for the browser (mouse)');
  const available = () => page.$$eval('#join-log li', (lis) => lis.filter((l) => l.textContent.includes('stream available') && l.textContent.includes('caller-phone')).length);
  const availableBefore = await available();
  await page.click(cell);
  out.cellOff = await until(page, 'the cell off and idle', (sel) => {
    const b = document.querySelector(sel);
    return b.getAttribute('aria-pressed') === 'false' && b.dataset.delivery === 'none' ? b.textContent : null;
  }, cell);
  out.unavailable = await until(page, 'onStreamUnavailable', () =>
    [...document.querySelectorAll('#join-log li')].map((l) => l.textContent).find((t) => t.includes('stream unavailable') && t.includes('caller-phone')),
  );
  out.levelOff = await until(page, 'silence', () => {
    const v = Number(document.getElementById('hearing').dataset.level);
    return v < 0.003 ? String(v) : null;
  }).then(Number);
  // And it stays silent (what a listener hears for the next 1.5 s).
  out.levelOffMax = await sustained(page, Math.max);
  await shot(page, 'phone-off');

  step('switch it on again (keyboard)');
  await page.focus(cell);
  await page.keyboard.press('Enter');
  out.cellOn = await until(page, 'the cell forwarding again', (sel) => document.querySelector(sel).dataset.delivery === 'forwarding' && document.querySelector(sel).textContent, cell);
  await until(page, 'onStreamAvailable again', (n) =>
    [...document.querySelectorAll('#join-log li')].filter((l) => l.textContent.includes('stream available') && l.textContent.includes('caller-phone')).length > n,
  availableBefore);
  out.levelOn = await until(page, 'the phone heard again', () => Number(document.getElementById('hearing').dataset.level) > 0.01 && Number(document.getElementById('hearing').dataset.level));
  out.availableAgain = (await available()) - availableBefore;
  out.levelOnMin = await sustained(page, Math.min);

  step('quality rows');
  out.quality = await until(page, 'quality of the phone leg and the browser track', ([p, b]) => {
    const row = (k) => {
      const r = document.querySelector(`tr[data-quality="${k}"][data-media="AUDIO"]`);
      if (!r) return null;
      const f = (n) => r.querySelector(`[data-field="${n}"]`).textContent;
      return { codec: f('codec'), loss: f('loss'), mos: f('mos'), rtt: f('rtt'), text: r.textContent };
    };
    const phone = row(p);
    const browser = row(b);
    return phone && browser && Number.parseFloat(phone.loss) > 0 && browser.rtt !== '—' ? { phone, browser } : null;
  }, [phoneCol, browserCol]);
  await page.$eval('#quality-card', (el) => el.scrollIntoView());
  await shot(page, 'quality');
  // Per-stream series with the operator's credentials only.
  out.metrics = await page
    .evaluate(async () => (await fetch('/metrics', { headers: { Authorization: `Basic ${btoa('ops:ops-secret')}` } })).text())
    .then((t) => t.split('\n').filter((l) => l.startsWith('patchbay_stream_')));
  out.anonymousMetrics = await page.evaluate(async () => (await fetch('/metrics')).text()).then((t) =>
    t.split('\n').filter((l) => l.startsWith('patchbay_stream')),
  );

  step('record the session from the console');
  await page.$eval('#recordings-card', (el) => el.scrollIntoView());
  await page.selectOption('#rec-mode', 'mixed');
  await page.selectOption('#rec-format', 'wav');
  await page.click('#recordings-card button[type=submit]');
  await until(page, 'a running recording', () => document.querySelector('#recordings-list td.status-recording'));
  await page.waitForTimeout(3000);
  await page.click('#recordings-list button.danger');
  out.recording = await until(page, 'the recording complete', () => {
    const row = document.querySelector('#recordings-list tr[data-recording]');
    return row && row.querySelector('td.status-complete') ? row.textContent : null;
  });
  await page.click('#recordings-list button[aria-label^="Play"]');
  out.recordingPlayer = await until(page, 'the recording in a player', () => {
    const a = document.querySelector('#recordings-list audio');
    return a && Number.isFinite(a.duration) && a.duration > 0 ? { duration: a.duration, src: a.src.slice(0, 5) } : null;
  });
  await shot(page, 'recordings');

  step('accessibility and phone width');
  await axe(page, 'session');
  await page.setViewportSize({ width: 390, height: 844 });
  out.overflowAtPhoneWidth = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  await shot(page, 'phone-width');

  step('operations');
  await page.setViewportSize({ width: 1280, height: 900 });
  await page.click('text=Operations');
  await until(page, 'the ops figures', () => document.querySelector('#ops .tiles'));
  out.ops = await page.textContent('#ops');
  await axe(page, 'ops');
  await shot(page, 'operations');
}

(async () => {
  const deadline = setTimeout(() => {
    console.error(`console.js: no result after ${config.deadlineMs} ms; last step ${JSON.stringify(out.steps.at(-1))}`);
    process.exit(2);
  }, config.deadlineMs);
  deadline.unref();
  fs.mkdirSync(config.artifacts, { recursive: true });
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pb-console-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: process.env.PATCHBAY_CHROMIUM || '/usr/bin/chromium',
    headless: true,
    viewport: { width: 1280, height: 900 },
    // axe-core is injected into the page, which the console's CSP would refuse.
    bypassCSP: true,
    permissions: ['clipboard-read', 'clipboard-write', 'microphone', 'camera'],
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
      '--autoplay-policy=no-user-gesture-required',
    ],
  });
  const page = await context.newPage();
  page.on('console', (m) => out.logs.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => out.logs.push(`pageerror: ${e.message}`));
  page.on('dialog', (d) => d.accept());
  try {
    await run(page);
    out.ok = true;
  } catch (e) {
    out.ok = false;
    out.error = String(e && e.message);
    await shot(page, 'failure').catch(() => {});
  }
  await context.close();
  fs.rmSync(userDataDir, { recursive: true, force: true });
  process.stdout.write(JSON.stringify(out) + '\n');
  process.exit(0);
})();
