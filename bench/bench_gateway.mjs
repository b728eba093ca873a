// The browser half of bench/bench_gateway.py: Debian's Chromium with
// playwright-core logs in to the gateway, times the pool view and collects
// the page's own figures (store.delays, store.applyMs), then prints one
// JSON line.
import { createRequire } from 'node:module';
import path from 'node:path';

const require = createRequire(path.join(process.env.MSRS_WEB_ROOT, 'package.json'));
const { chromium } = require('playwright-core');
const n = Number(process.env.GATEWAY_DEVICES);
const seconds = Number(process.env.BENCH_SECONDS);
const renders = Number(process.env.BENCH_RENDERS);

function pct(v, p) {
  const s = [...v].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor(p * s.length))] : NaN;
}

const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'] });
const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 900 } });
const page = await context.newPage();
await page.goto(process.env.GATEWAY_URL + '/');
await page.getByLabel('Operator token').fill(process.env.GATEWAY_TOKEN);
const t0 = Date.now();
await page.getByRole('button', { name: 'Log in' }).click();
// the pool view: the first page of rows (100) and the pager saying how many
const shown = (k) => document.querySelectorAll('#devices-body tr').length >= Math.min(k, 100) &&
  (k <= 100 || document.querySelector('#devices-page').textContent.endsWith(`of ${k}`));
await page.waitForFunction(shown, n, { timeout: 60000 });
const firstLoad = Date.now() - t0;
const times = [];
for (let i = 0; i < renders; i++) {
  times.push(await page.evaluate(async (k) => {
    location.hash = '#/sessions';
    await new Promise((r) => setTimeout(r, 200));
    const start = performance.now();
    location.hash = '#/pool';
    const ready = () => document.querySelectorAll('#devices-body tr').length >= Math.min(k, 100) &&
      (k <= 100 || document.querySelector('#devices-page').textContent.endsWith(`of ${k}`));
    await new Promise((r) => { const f = () => (ready() ? r() : requestAnimationFrame(f)); f(); });
    const js = performance.now() - start;
    await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
    return [performance.now() - start, js];
  }, n));
}
await page.evaluate(() => { for (const k of ['delays', 'oldestDelays', 'applyMs']) window.msrsStore[k].length = 0; });
await page.waitForTimeout(seconds * 1000);
const { delays, oldestDelays, applyMs } = await page.evaluate(() => window.msrsStore);
await browser.close();
console.log(JSON.stringify({
  renders: times.map((t) => t[0]), render_median: pct(times.map((t) => t[0]), 0.5),
  render_max: Math.max(...times.map((t) => t[0])), render_js_median: pct(times.map((t) => t[1]), 0.5), first_load: firstLoad,
  messages: applyMs.length, apply_p50: pct(applyMs, 0.5), apply_p99: pct(applyMs, 0.99),
  changes: delays.length, delay_p50: pct(delays, 0.5), delay_p99: pct(delays, 0.99), delay_max: Math.max(...delays),
  oldest_p50: pct(oldestDelays, 0.5), oldest_p99: pct(oldestDelays, 0.99), oldest_max: Math.max(...oldestDelays),
}));
