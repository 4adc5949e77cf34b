// The visitor's console against a real gateway and QEMU guest (`gateway demo`):
// password and refusals, typing into the VM, view-only links, revoke while connected,
// and the SPICE console.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  newPage, shot, keepForReadme, createLink, admin, waitForScreen, waitForSerial, serial, typeKeys,
  openShare, sleep, compareWithScreenshot, startGatewayAndBrowser, stopGatewayAndBrowser,
} from './helpers.mjs';

let gw;
let browser;
before(async () => ({ gw, browser } = await startGatewayAndBrowser()));
after(() => stopGatewayAndBrowser(gw, browser));

test('password link: wrong password is refused, right one opens the console, typing reaches the VM', { timeout: 150_000 }, async () => {
  const page = await newPage(browser);
  await page.goto(gw.info.share_url);
  const pw = page.locator('#pw-input');
  await pw.waitFor({ state: 'visible' });
  assert.match(await page.locator('#gate-title').textContent(), /protected/i);

  await pw.fill('not-the-password');
  await page.click('#pw-submit');
  await page.locator('#pw-error', { hasText: 'Wrong password' }).waitFor();
  assert.equal(await pw.getAttribute('aria-invalid'), 'true');
  await shot(page, '1-wrong-password');

  await pw.fill(gw.info.password);
  await page.click('#pw-submit');
  await page.locator('#console[data-connected="true"]').waitFor({ timeout: 60_000 });
  assert.equal(await page.locator('#vm-name').textContent(), gw.info.vm);
  assert.match(await page.locator('#countdown').textContent(), /left/);

  // The guest prints this on its serial port once its shell runs on the VGA console.
  await waitForSerial(gw, 'VMGW-GUEST-READY', 90_000);
  await sleep(1000);
  const stats = await waitForScreen(page);
  assert.ok(stats.width >= 640, `canvas ${stats.width}x${stats.height}`);

  await page.click('#screen canvas');
  await typeKeys(page, 'echo hello from the browser > /dev/ttyS0\n');
  await waitForSerial(gw, 'hello from the browser', 20_000);
  await sleep(500);
  const path = await shot(page, '1-console-typed');
  await keepForReadme(path);

  // What the visitor sees is the VM's screen: the canvas matches QEMU's own screendump
  // (block by block; a blinking cursor may differ), and a blank canvas would not.
  let cmp;
  for (let i = 0; i < 10; i++) {
    cmp = await compareWithScreenshot(page, gw);
    if (cmp.width === cmp.shotWidth && cmp.height === cmp.shotHeight && cmp.badBlocks <= cmp.blocks * 0.01) break;
    await sleep(500);
  }
  console.log(`canvas vs screendump: ${JSON.stringify(cmp)}`);
  assert.equal(cmp.width, cmp.shotWidth, 'canvas and screendump widths');
  assert.equal(cmp.height, cmp.shotHeight, 'canvas and screendump heights');
  assert.ok(cmp.badBlocks <= cmp.blocks * 0.01, `blocks differing: ${cmp.badBlocks} of ${cmp.blocks}`);
  assert.ok(cmp.meanDiff < 2, `mean block difference ${cmp.meanDiff}`);
  assert.ok(cmp.blackBadBlocks > 20 * Math.max(cmp.badBlocks, 1), `a blank canvas would score close: ${JSON.stringify(cmp)}`);
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('a dropped connection reconnects by itself, without asking for the password again', { timeout: 90_000 }, async () => {
  const page = await newPage(browser);
  // Test-only hook: remember the page's WebSockets so the test can break one.
  await page.addInitScript(() => {
    // (A plain function returning the native socket: noVNC checks the socket's own
    // prototype, so a subclass would not do.)
    const Native = window.WebSocket;
    window.__sockets = [];
    function Tracked(...args) {
      const ws = new Native(...args);
      window.__sockets.push(ws);
      return ws;
    }
    Tracked.prototype = Native.prototype;
    for (const k of ['CONNECTING', 'OPEN', 'CLOSING', 'CLOSED']) Tracked[k] = Native[k];
    window.WebSocket = Tracked;
  });
  await openShare(page, gw.info.share_url, gw.info.password);
  await waitForScreen(page);

  // A blip: the socket dies under the page.
  await page.evaluate(() => window.__sockets.at(-1).close());
  await page.locator('#console[data-connected="false"]').waitFor();
  await page.locator('#console[data-connected="true"]').waitFor({ timeout: 20_000 });

  // The session cookie is gone as well: the page opens a new session with the token
  // still in the address and the password it kept in memory.
  await page.context().clearCookies();
  await page.evaluate(() => window.__sockets.at(-1).close());
  await page.locator('#console[data-connected="false"]').waitFor();
  await page.locator('#console[data-connected="true"]').waitFor({ timeout: 20_000 });
  assert.equal(await page.locator('#pw-form').isVisible(), false);
  assert.equal(await page.evaluate(() => window.__sockets.length), 3);
  await waitForScreen(page);
  await shot(page, '1-reconnected');
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('view-only link shows the screen but typing changes nothing', { timeout: 90_000 }, async () => {
  const link = await createLink(gw, { view_only: true, note: 'browser test: view only' });
  const page = await newPage(browser);
  await openShare(page, link.url);
  assert.equal(await page.locator('#view-only-badge').isVisible(), true);
  assert.equal(await page.locator('#btn-type').isDisabled(), true);
  await waitForScreen(page);

  await page.click('#screen canvas');
  await typeKeys(page, 'echo viewonly-typed > /dev/ttyS0\n');
  await sleep(4000);
  assert.ok(!(await serial(gw)).includes('viewonly-typed'), 'a view-only visitor typed into the VM');
  await shot(page, '2-view-only');
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('revoking the link on the admin page ends the visitor session with a clear message', { timeout: 90_000 }, async () => {
  const note = `browser test: revoke ${Date.now()}`;
  const link = await createLink(gw, { note });
  const visitor = await newPage(browser);
  await openShare(visitor, link.url);
  await waitForScreen(visitor);

  const adminPage = await newPage(browser);
  await adminPage.goto(`${gw.info.admin_url}/`);
  await adminPage.fill('#login-token', gw.info.admin_token);
  await adminPage.click('#login-submit');
  const row = adminPage.locator('#links-body tr', { hasText: note });
  await row.waitFor();
  adminPage.once('dialog', (d) => d.accept());
  await row.getByRole('button', { name: /revoke/i }).click();
  await row.locator('.badge', { hasText: /revoked/i }).waitFor();
  await shot(adminPage, '3-admin-revoked');

  await visitor.locator('#overlay[data-kind="revoked"]').waitFor({ timeout: 10_000 });
  assert.match(await visitor.locator('#overlay-title').textContent(), /revoked/i);
  await shot(visitor, '3-visitor-revoked');
  // No reconnect attempts after a revoke.
  await sleep(2500);
  assert.equal(await visitor.locator('#overlay').getAttribute('data-kind'), 'revoked');
  const r = await admin(gw, 'GET', `/api/v1/links/${link.id}`);
  assert.equal(r.body.revoked, true);
  assert.deepEqual(visitor.errors, []);
  assert.deepEqual(adminPage.errors, []);
  await visitor.context().close();
  await adminPage.context().close();
});

test('SPICE link connects and draws the screen', { timeout: 90_000 }, async () => {
  const link = await createLink(gw, { console: 'spice', note: 'browser test: spice' });
  const page = await newPage(browser);
  await openShare(page, link.url);
  const stats = await waitForScreen(page, '#screen .spice-screen canvas');
  assert.ok(stats.width >= 640, `canvas ${stats.width}x${stats.height}`);
  await shot(page, '4-spice');
  // The demo VM has both consoles: its clipboard agent is on VNC, and the panel says so.
  await page.click('#btn-clip');
  assert.match(await page.locator('#clip-note').textContent(), /No clipboard agent answers on this SPICE console/);
  await page.click('#clip-close');
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('a link that is not open yet says from when', { timeout: 30_000 }, async () => {
  const opens = new Date(Date.now() + 3 * 3600 * 1000);
  const link = await createLink(gw, { not_before: opens.toISOString().replace(/\.\d+Z$/, 'Z'), ttl_seconds: 6 * 3600, note: 'browser test: later' });
  const page = await newPage(browser);
  await page.goto(link.url);
  await page.locator('#gate[data-kind="not-yet-valid"]').waitFor();
  assert.match(await page.locator('#gate-text').textContent(), /opens on .*\(in 2 h 5\d min\)/);
  await shot(page, '5-not-yet-valid');
  assert.deepEqual(page.errors, []);
  await page.context().close();
});
