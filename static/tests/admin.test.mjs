// The admin web console against a real gateway: sign in, create a link (with its QR
// code), power the VM off and on while a visitor watches, and kill the visitor's session.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  newPage, shot, admin, waitForScreen, sleep, startGatewayAndBrowser, stopGatewayAndBrowser,
} from './helpers.mjs';

let gw;
let browser;
before(async () => ({ gw, browser } = await startGatewayAndBrowser()));
after(() => stopGatewayAndBrowser(gw, browser));

test('admin page: sign in, create a link, power the VM off and on, kill a session', { timeout: 180_000 }, async () => {
  const page = await newPage(browser, { viewport: { width: 1280, height: 900 } });
  page.on('dialog', (d) => d.accept());
  await page.goto(`${gw.info.admin_url}/`);

  // A wrong token is refused in words.
  await page.fill('#login-token', 'vmgw_not-a-real-token');
  await page.click('#login-submit');
  await page.locator('#login-error', { hasText: 'not valid' }).waitFor();
  await page.fill('#login-token', gw.info.admin_token);
  await page.click('#login-submit');

  const vm = page.locator(`.vm-card[data-vm="${gw.info.vm}"]`);
  await vm.waitFor();
  await vm.locator('[data-role="state"]', { hasText: 'running' }).waitFor({ timeout: 30_000 });
  // A thumbnail of the VM's screen (the screenshot API, fetched with the token).
  // (The cards are re-rendered every few seconds: look the image up each time.)
  const thumbSel = `.vm-card[data-vm="${gw.info.vm}"] img[data-role="screen"]`;
  await page.waitForFunction((sel) => {
    const el = document.querySelector(sel);
    return el && el.complete && el.naturalWidth > 0;
  }, thumbSel, { timeout: 30_000 });
  const size = await page.evaluate((sel) => {
    const el = document.querySelector(sel);
    return [el.naturalWidth, el.naturalHeight];
  }, thumbSel);
  assert.ok(size[0] >= 640 && size[1] >= 400, `thumbnail ${size}`);

  // Create a link: 2 hours, power allowed, a note.
  const note = `admin page test ${Date.now()}`;
  await page.selectOption('#lf-vm', gw.info.vm);
  await page.selectOption('#lf-console', 'vnc');
  await page.fill('#lf-ttl', '2');
  await page.selectOption('#lf-ttl-unit', '3600');
  await page.check('#lf-power');
  await page.fill('#lf-note', note);
  await page.click('#lf-submit');
  await page.locator('#created').waitFor();
  const url = await page.inputValue('#created-url');
  assert.ok(url.startsWith(`${gw.info.public_url}/s/#`), url);
  await page.click('#created-qr-btn');
  const qr = page.locator('#created-qr canvas');
  await qr.waitFor();
  assert.ok((await qr.evaluate((c) => c.width)) >= 100);
  const row = page.locator('#links-body tr', { hasText: note });
  await row.waitFor();
  await shot(page, '5-admin-link-created');

  // A visitor opens it.
  const visitor = await newPage(browser);
  await visitor.goto(url);
  await visitor.locator('#console[data-connected="true"]').waitFor({ timeout: 60_000 });
  assert.equal(await visitor.locator('#power-wrap').isVisible(), true);

  // Power off from the admin page: the visitor is told the VM is off.
  await vm.getByRole('button', { name: `Power off ${gw.info.vm}` }).click();
  await vm.locator('[data-role="state"]', { hasText: 'stopped' }).waitFor({ timeout: 30_000 });
  await visitor.locator('#overlay[data-kind="vm-off"]').waitFor({ timeout: 20_000 });
  assert.equal(await visitor.locator('#power-on').isVisible(), true, 'the link allows power: a power-on button is offered');
  await shot(visitor, '5-visitor-vm-off');

  // Power on from the admin page: the visitor reconnects by itself.
  await vm.getByRole('button', { name: `Start ${gw.info.vm}` }).click();
  await vm.locator('[data-role="state"]', { hasText: 'running' }).waitFor({ timeout: 30_000 });
  await visitor.locator('#console[data-connected="true"]').waitFor({ timeout: 60_000 });
  await waitForScreen(visitor);

  // The session shows up on the admin page; kill it.
  await page.click('#btn-refresh');
  const linkId = await row.getAttribute('data-link-id');
  const sessionRow = page.locator(`#sessions-body tr[data-link-id="${linkId}"]`);
  await sessionRow.first().waitFor({ timeout: 15_000 });
  await shot(page, '5-admin-session');
  await sessionRow.first().getByRole('button', { name: /kill/i }).click();
  await visitor.locator('#overlay[data-kind="killed"]').waitFor({ timeout: 10_000 });
  await shot(visitor, '5-visitor-killed');
  await page.click('#btn-refresh');
  await sessionRow.first().waitFor({ state: 'detached', timeout: 15_000 });
  const sessions = await admin(gw, 'GET', '/api/v1/sessions');
  assert.equal(sessions.body.filter((s) => s.link_id === linkId).length, 0);

  // A phone-width screenshot of the admin page.
  await page.setViewportSize({ width: 390, height: 844 });
  await sleep(300);
  await shot(page, '5-admin-phone');
  assert.deepEqual(page.errors, []);
  assert.deepEqual(visitor.errors, []);
  await page.context().close();
  await visitor.context().close();
});
