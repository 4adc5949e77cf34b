// A view-only SPICE link in Chromium with the real spice-html5 against QEMU's SPICE
// server (`gateway demo`): the main and display channels link and authenticate through
// the gateway's view-only filter and the screen is drawn; the inputs channel is refused
// by the gateway (close 4011 view_only) and typing does not reach the VM.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  newPage, shot, createLink, waitForScreen, waitForSerial, serial, typeKeys, openShare, sleep,
  startGatewayAndBrowser, stopGatewayAndBrowser,
} from './helpers.mjs';

let gw;
let browser;
before(async () => ({ gw, browser } = await startGatewayAndBrowser()));
after(() => stopGatewayAndBrowser(gw, browser));

test('view-only SPICE link connects and draws; the inputs channel is refused and typing changes nothing', { timeout: 150_000 }, async () => {
  const link = await createLink(gw, { console: 'spice', view_only: true, note: 'browser test: spice view only' });
  const page = await newPage(browser);
  // Every WebSocket close as the page sees it: which channel the gateway refused, and why.
  await page.addInitScript(() => {
    window.__wsCloses = [];
    const Native = window.WebSocket;
    window.WebSocket = class extends Native {
      constructor(...args) {
        super(...args);
        this.addEventListener('close', (e) => window.__wsCloses.push({ code: e.code, reason: e.reason }));
      }
    };
  });
  await openShare(page, link.url);
  assert.equal(await page.locator('#view-only-badge').isVisible(), true);

  // The display channel authenticated and draws the VM's screen.
  const stats = await waitForScreen(page, '#screen .spice-screen canvas');
  assert.ok(stats.width >= 640, `canvas ${stats.width}x${stats.height}`);

  // spice-html5 opens the inputs channel too; the gateway refuses it, and only it.
  let closes = [];
  for (let i = 0; i < 40 && closes.length === 0; i++) {
    closes = await page.evaluate(() => window.__wsCloses);
    if (closes.length === 0) await sleep(250);
  }
  // Exactly one refusal, the inputs channel's. (Once in CI a second channel also ended
  // with 4010 console_closed, i.e. closed by QEMU, not refused by the gateway; that is
  // noted on issue 13 to be found, and not a view-only refusal.)
  await sleep(500);
  closes = await page.evaluate(() => window.__wsCloses);
  assert.deepEqual(closes.filter((c) => c.code !== 4010), [{ code: 4011, reason: 'view_only' }]);
  assert.ok(closes.every((c) => c.code === 4011 || c.reason === 'console_closed'), JSON.stringify(closes));

  // Keys typed into the console do not reach the guest.
  await waitForSerial(gw, 'VMGW-GUEST-READY', 90_000);
  await page.click('#screen .spice-screen canvas');
  await typeKeys(page, 'echo spice-viewonly-typed > /dev/ttyS0\n');
  await sleep(4000);
  assert.ok(!(await serial(gw)).includes('spice-viewonly-typed'), 'a view-only SPICE visitor typed into the VM');

  // Still connected, still drawing, nothing else closed.
  assert.equal(await page.locator('#console').getAttribute('data-connected'), 'true');
  await waitForScreen(page, '#screen .spice-screen canvas', 5_000);
  assert.deepEqual(await page.evaluate(() => window.__wsCloses), [{ code: 4011, reason: 'view_only' }]);
  await shot(page, '6-spice-view-only');
  assert.deepEqual(page.errors, []);
  await page.context().close();
});
