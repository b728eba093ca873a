// A browser as a device (web/device.html) in Debian's Chromium with its fake
// camera (--use-fake-device-for-media-stream) and synthetic motion and
// orientation events, driven by playwright-core for
// tests/gateway/test_browser_device.py. Lines on stdin are commands from the
// harness; lines on stdout are answers (JSON) and checks ("ok: ...",
// "FAIL: ...").
//   open URL       open the enrollment link, join with every stream
//   state          {"registered", "resumes", "probes", "sent", "errors", "isolated"}
//   quit
import { createRequire } from 'node:module';
import { createInterface } from 'node:readline';
import path from 'node:path';

const require = createRequire(path.join(process.env.MSRS_WEB_ROOT, 'package.json'));
const { chromium } = require('playwright-core');
const shots = process.env.MSRS_ARTIFACTS;

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--no-sandbox', '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream'],
});
const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 390, height: 844 }, isMobile: true });
await context.grantPermissions(['camera']);
const page = await context.newPage();
page.on('pageerror', (e) => console.log(`FAIL: script error in the device page: ${e.message}`));

async function open(url) {
  await page.goto(url);
  await page.getByRole('button', { name: 'Join the pool' }).click();
  // motion and orientation at 50 Hz, as a phone's sensors would fire them
  await page.evaluate(() => {
    let i = 0;
    setInterval(() => {
      i += 1;
      window.dispatchEvent(new DeviceMotionEvent('devicemotion', {
        acceleration: { x: Math.sin(i / 10), y: Math.cos(i / 10), z: 9.81 },
        rotationRate: { alpha: i % 360, beta: 1, gamma: 2 },
        interval: 20,
      }));
      window.dispatchEvent(new DeviceOrientationEvent('deviceorientation', { alpha: i % 360, beta: 10, gamma: -5 }));
    }, 20);
  });
  await page.screenshot({ path: path.join(shots, 'device-joined.png'), fullPage: true });
  return { opened: true };
}

async function state() {
  return page.evaluate(() => {
    const d = window.msrsDevice;
    const sent = {};
    for (const [id, st] of Object.entries(d.streams)) sent[id] = { sent: st.sent, inSessions: st.inSessions, dropped: st.dropped };
    return { registered: d.registered, resumes: d.resumes, probes: d.probes, sent, errors: d.errors, isolated: window.crossOriginIsolated };
  });
}

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  const [cmd, arg] = line.split(' ');
  try {
    if (cmd === 'open') console.log(JSON.stringify(await open(arg)));
    else if (cmd === 'state') console.log(JSON.stringify(await state()));
    else if (cmd === 'shot') { await page.screenshot({ path: path.join(shots, `${arg}.png`), fullPage: true }); console.log('{}'); }
    else if (cmd === 'quit') break;
  } catch (e) {
    console.log(JSON.stringify({ error: e.message }));
  }
}
await browser.close();
