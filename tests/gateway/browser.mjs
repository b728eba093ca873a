// The web app in a real browser: Debian's Chromium driven by playwright-core
// (npm), against the real stack tests/gateway/test_browser.py started. It
// speaks to that harness on stdin/stdout: it prints "DO stop-gateway" or
// "DO start-gateway" and waits for the line "done". Every check prints
// "ok: ..." or "FAIL: ..."; exit 1 when any failed. Screenshots go to
// $MSRS_ARTIFACTS.
import { createRequire } from 'node:module';
import { createInterface } from 'node:readline';
import path from 'node:path';

const require = createRequire(path.join(process.env.MSRS_WEB_ROOT, 'package.json'));
const { chromium } = require('playwright-core');

const base = process.env.GATEWAY_URL;
const tokens = JSON.parse(process.env.GATEWAY_TOKENS);
const shots = process.env.MSRS_ARTIFACTS;
const devices = Number(process.env.GATEWAY_DEVICES || 4);
let failures = 0;

function check(cond, what) {
  console.log(`${cond ? 'ok' : 'FAIL'}: ${what}`);
  if (!cond) failures += 1;
  return cond;
}

const lines = createInterface({ input: process.stdin });
const pending = [];
lines.on('line', (l) => { const w = pending.shift(); if (w) w(l); });
function harness(what) {
  console.log(`DO ${what}`);
  return new Promise((resolve) => pending.push(resolve));
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });
}

async function login(context, token) {
  const page = await context.newPage();
  page.on('pageerror', (e) => check(false, `no script error in the page: ${e.message}`));
  await page.goto(base + '/');
  await page.getByLabel('Operator token').fill(token);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.locator('#devices-body tr').first().waitFor({ timeout: 20000 });
  return page;
}

// Every input, select and button has a name a screen reader says.
async function labelled(page, where) {
  const unnamed = await page.evaluate(() => [...document.querySelectorAll('input, button, select')]
    .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim())
    .map((e) => e.outerHTML.slice(0, 80)));
  check(unnamed.length === 0, `${where}: every control has a label ${JSON.stringify(unnamed)}`);
}

async function samplesShown(page) {
  return page.$$eval('#streams-body tr td:nth-child(2)', (tds) => tds.reduce((n, td) => n + Number(td.textContent), 0));
}

async function main() {
  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'] });
  const desktop = { ignoreHTTPSErrors: true, viewport: { width: 1280, height: 900 } };

  // the pool, as an operator
  const op = await browser.newContext(desktop);
  const page = await login(op, tokens.operator);
  await page.waitForFunction((n) => document.querySelectorAll('#devices-body tr').length === n &&
    [...document.querySelectorAll('#devices-body tr td:nth-child(5)')].every((td) => td.textContent.endsWith('µs')), devices, { timeout: 30000 });
  check(true, `the pool shows ${devices} devices, each with its clock uncertainty`);
  const who = await page.textContent('#who');
  check(who.includes('olga') && who.includes('operator'), `logged in as ${who}`);
  check(await page.locator('#uncertainty-plot .u-over').count() === 1, 'the clock uncertainty plot is drawn');
  await labelled(page, 'pool');
  await shot(page, 'pool');

  // a session from the page: whole pool, BIDS names, until stopped
  await page.getByRole('link', { name: 'New session' }).click();
  await page.getByLabel('Subject').fill('05');
  await page.getByLabel('Task', { exact: true }).fill('demo');
  await page.getByLabel('Run').fill('1');
  await page.getByLabel('Duration (s)').fill('0');
  await labelled(page, 'new session');
  await page.getByRole('button', { name: 'Start recording' }).click();
  await page.waitForURL(/#\/sessions\/ses-/, { timeout: 10000 });
  const sid = decodeURIComponent(page.url().split('#/sessions/')[1]);
  check(sid.startsWith('ses-'), `the page went to the new session ${sid}`);
  await page.locator('.session-head .badge-recording').waitFor({ timeout: 40000 });
  await page.waitForFunction(() => document.querySelectorAll('#streams-body tr').length >= 12, null, { timeout: 20000 });
  const n1 = await samplesShown(page);
  await page.waitForTimeout(2500);
  const n2 = await samplesShown(page);
  check(n2 > n1 && n1 > 0, `counts rise while it records: ${n1} then ${n2}`);
  check(await page.locator('#streams-body td.spark .u-over').count() >= 8, 'sparklines of the streams');
  await shot(page, 'session-recording');
  await page.getByRole('button', { name: 'Stop recording' }).click();
  await page.locator('.session-head .badge-stopped').waitFor({ timeout: 40000 });
  await page.locator('#completeness').getByText('Complete').waitFor({ timeout: 10000 });
  check(true, 'stopped from the page; complete');
  const steps = await page.$$eval('.timeline li.done', (lis) => lis.map((l) => l.dataset.step));
  check(['requested', 'synchronized', 'recording', 'stopped'].every((s) => steps.includes(s)), `the state timeline: ${steps}`);
  await page.locator('#archive-files li').nth(4).waitFor({ timeout: 60000 });
  const href = await page.locator('#archive a[download]').first().getAttribute('href');
  const got = await page.evaluate(async (h) => { const r = await fetch(h); return [r.status, (await r.arrayBuffer()).byteLength]; }, href);
  check(got[0] === 200 && got[1] > 0, `its archive entry: ${href} downloads (${got})`);
  await shot(page, 'session-stopped');
  await page.getByRole('link', { name: 'Sessions' }).click();
  await page.locator(`#sessions-body tr[data-session="${sid}"]`).waitFor();
  check((await page.textContent(`#sessions-body tr[data-session="${sid}"]`)).includes('stopped'), 'listed in past sessions as stopped');
  await labelled(page, 'sessions');
  await shot(page, 'sessions');

  // a viewer sees and cannot start
  const vc = await browser.newContext(desktop);
  const vp = await login(vc, tokens.viewer);
  await vp.getByRole('link', { name: 'New session' }).click();
  check(await vp.getByRole('button', { name: 'Start recording' }).isDisabled(), 'a viewer: Start is disabled');
  const status = await vp.evaluate(async () => (await fetch('/api/v1/sessions', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' })).status);
  check(status === 403, `a viewer's POST /sessions from the page: ${status}`);
  await shot(vp, 'viewer');
  await vc.close();

  // the feed recovers after the gateway restarts
  await page.getByRole('link', { name: 'Sessions' }).click();
  await harness('stop-gateway');
  await page.waitForFunction(() => document.querySelector('#feed-status').textContent.startsWith('reconnecting'), null, { timeout: 15000 });
  check(true, 'the page says the feed is reconnecting');
  await harness('start-gateway');
  await page.waitForFunction(() => document.querySelector('#feed-status').textContent === 'live', null, { timeout: 20000 });
  const after = await harness('start-session');
  await page.locator(`#sessions-body tr[data-session="${after}"]`).waitFor({ timeout: 20000 });
  check(true, `after the restart the feed brings a new session (${after}) to the page`);

  // phone width
  const phone = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 390, height: 844 }, isMobile: true });
  const pp = await login(phone, tokens.operator);
  const width = await pp.evaluate(() => document.documentElement.scrollWidth);
  check(width <= 390, `at phone width nothing overflows the page (${width} px)`);
  await shot(pp, 'phone-pool');
  await pp.getByRole('link', { name: 'New session' }).click();
  await shot(pp, 'phone-new-session');
  await browser.close();
  console.log(`${failures ? 'FAILED' : 'passed'}: ${failures} failed`);
  process.exit(failures ? 1 : 0);
}

main().catch((e) => { console.log(`FAIL: ${e.stack}`); process.exit(1); });
