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
  // Every WebSocket close as the page sees it: which channel (the SPICE channel type in
  // the link message the page sends first: 1 main, 2 display, 3 inputs, 4 cursor) ended,
  // and why.
  await page.addInitScript(() => {
    window.__wsCloses = [];
    const Native = window.WebSocket;
    window.WebSocket = class extends Native {
      constructor(...args) {
        super(...args);
        this.addEventListener('close', (e) => window.__wsCloses.push({ code: e.code, reason: e.reason, channel: this.channelType }));
      }

      send(data) {
        if (this.channelType === undefined) {
          const bytes = data instanceof ArrayBuffer ? new Uint8Array(data) : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
          this.channelType = bytes[20]; // SpiceLinkHeader (16 bytes), connection_id (4)
        }
        return super.send(data);
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
  // Exactly one close: the inputs channel, refused by the gateway. Every other channel
  // stays up. (A channel closed by QEMU, 4010, was once seen here: spice-html5 sent about
  // one SPICE ticket in 256 one byte short and QEMU refused that channel; the page pads
  // the ticket now, see src/console/spice-fixes.js and spice-fixes.test.mjs.)
  await sleep(500);
  closes = await page.evaluate(() => window.__wsCloses);
  assert.deepEqual(closes, [{ code: 4011, reason: 'view_only', channel: 3 }]);

  // Keys typed into the console do not reach the guest.
  await waitForSerial(gw, 'VMGW-GUEST-READY', 90_000);
  await page.click('#screen .spice-screen canvas');
  await typeKeys(page, 'echo spice-viewonly-typed > /dev/ttyS0\n');
  await sleep(4000);
  assert.ok(!(await serial(gw)).includes('spice-viewonly-typed'), 'a view-only SPICE visitor typed into the VM');

  // Still connected, still drawing, nothing else closed.
  assert.equal(await page.locator('#console').getAttribute('data-connected'), 'true');
  await waitForScreen(page, '#screen .spice-screen canvas', 5_000);
  assert.deepEqual(await page.evaluate(() => window.__wsCloses), [{ code: 4011, reason: 'view_only', channel: 3 }]);
  await shot(page, '6-spice-view-only');
  assert.deepEqual(page.errors, []);
  await page.context().close();
});
