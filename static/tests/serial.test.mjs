// Serial consoles in the browser against a real gateway and QEMU guest (`gateway demo`):
// the guest's shell on ttyS0 through a `serial` link in xterm.js, under the pages' strict
// CSP (any violation fails the test, see newPage); view-only typing has no effect;
// revoking the link ends the session; a `raw` link to an external byte stream opens in
// the same terminal.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { startGateway, launchBrowser, newPage, shot, createLink, admin, waitForSerial, serial, sleep } from './helpers.mjs';

let gw;
let browser;

before(async () => {
  [gw, browser] = await Promise.all([startGateway(), launchBrowser()]);
  await waitForSerial(gw, 'VMGW-GUEST-READY', 120_000);
});

after(async () => {
  await browser?.close();
  await gw?.stop();
});

/** The terminal's text (xterm's active buffer), one string per line. */
async function terminalText(page) {
  return page.evaluate(() => {
    const term = document.getElementById('screen').terminal;
    if (!term) return '';
    const b = term.buffer.active;
    const lines = [];
    for (let i = 0; i < b.length; i++) lines.push(b.getLine(i)?.translateToString(true) ?? '');
    return lines.join('\n');
  });
}

async function waitForText(page, needle, timeout = 30_000) {
  const until = Date.now() + timeout;
  let text = '';
  while (Date.now() < until) {
    text = await terminalText(page);
    if (text.includes(needle)) return text;
    await sleep(200);
  }
  throw new Error(`"${needle}" did not appear in the terminal within ${timeout} ms:\n${text}`);
}

async function openSerial(page, link) {
  await page.goto(link.url);
  await page.locator('#console[data-connected="true"]').waitFor({ timeout: 60_000 });
  await page.locator('#screen .xterm').waitFor();
}

test('a serial link: recent output on connect, a command and its output, copy, screen reader, revoke', { timeout: 180_000 }, async () => {
  const link = await createLink(gw, { console: 'serial', note: 'browser test: serial' });
  const page = await newPage(browser);
  await openSerial(page, link);
  // A terminal, not a screen: no scaling, no Ctrl+Alt+Del; a screen-reader toggle.
  assert.equal(await page.locator('#btn-keys').isVisible(), false);
  assert.equal(await page.locator('#btn-sr').isVisible(), true);
  // Recent output on connect: what the guest printed before anyone was connected.
  await waitForText(page, 'VMGW-GUEST-READY');

  // Log in on the serial console (the guest's ttyS0 runs a root shell) and run a command.
  await page.locator('#screen .xterm').click();
  await page.keyboard.type('echo "serial says $((6*7))" && uname -s', { delay: 20 });
  await page.keyboard.press('Enter');
  const text = await waitForText(page, 'serial says 42');
  await waitForText(page, 'Linux');
  assert.match(text, /vmgw-guest/, 'the shell prompt is shown');
  await waitForSerial(gw, 'serial says 42', 10_000); // and the serial log still has it
  await shot(page, 'serial-1-command');

  // Native copy: xterm's selection holds the text.
  const selected = await page.evaluate(() => {
    const term = document.getElementById('screen').terminal;
    term.selectAll();
    const s = term.getSelection();
    term.clearSelection();
    return s;
  });
  assert.match(selected, /serial says 42/);

  // Screen-reader mode: xterm's accessibility tree carries the terminal's text.
  await page.click('#btn-sr');
  assert.equal(await page.locator('#btn-sr').getAttribute('aria-pressed'), 'true');
  await page.locator('#screen .xterm-accessibility-tree').waitFor({ state: 'attached' });
  const tree = await page.locator('#screen .xterm-accessibility-tree').textContent();
  assert.match(tree, /serial says 42/);
  await page.click('#btn-sr');

  // A resize refits the terminal.
  const cols = await page.evaluate(() => document.getElementById('screen').terminal.cols);
  await page.setViewportSize({ width: 800, height: 600 });
  let newCols = cols;
  for (let i = 0; i < 20 && newCols === cols; i++) {
    await sleep(100);
    newCols = await page.evaluate(() => document.getElementById('screen').terminal.cols);
  }
  assert.ok(newCols < cols, `the terminal did not refit: ${cols} -> ${newCols}`);

  // Revoke: the session ends and the page says so.
  const r = await admin(gw, 'DELETE', `/api/v1/links/${link.id}`);
  assert.equal(r.status, 200);
  await page.locator('#overlay[data-kind="revoked"]').waitFor({ timeout: 5_000 });
  await shot(page, 'serial-2-revoked');
  assert.deepEqual(page.errors, []);
});

test('a view-only serial link shows the output, and typing has no effect', { timeout: 120_000 }, async () => {
  const writer = await createLink(gw, { console: 'serial', note: 'browser test: serial writer' });
  const viewer = await createLink(gw, { console: 'serial', view_only: true, note: 'browser test: serial view only' });
  const wp = await newPage(browser);
  const vp = await newPage(browser);
  await openSerial(wp, writer);
  await openSerial(vp, viewer);
  assert.equal(await vp.locator('#view-only-badge').isVisible(), true);

  await vp.locator('#screen .xterm').click();
  await vp.keyboard.type('echo "viewonly $((5*5))"', { delay: 20 });
  await vp.keyboard.press('Enter');
  // The writer runs a command after it: both see its output, and nothing of the
  // view-only visitor's typing reached the guest.
  await wp.locator('#screen .xterm').click();
  await wp.keyboard.type('echo "writer $((3*3))"', { delay: 20 });
  await wp.keyboard.press('Enter');
  await waitForText(wp, 'writer 9');
  await waitForText(vp, 'writer 9');
  assert.doesNotMatch(await terminalText(wp), /viewonly/);
  assert.doesNotMatch(await serial(gw), /viewonly/);
  await shot(vp, 'serial-3-view-only');
  assert.deepEqual(wp.errors, []);
  assert.deepEqual(vp.errors, []);
});

test('a raw link to an external byte stream opens in the same terminal', { timeout: 60_000 }, async () => {
  // The external target: greets, then answers each line it gets in upper case.
  const server = createServer((sock) => {
    sock.write('raw target says hello\r\n');
    sock.on('data', (d) => sock.write(d.toString('utf8').toUpperCase().replace(/\r/g, '\r\n')));
    sock.on('error', () => {});
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  try {
    const { port } = server.address();
    const t = await admin(gw, 'POST', '/api/v1/targets', { name: 'rawtarget', kind: 'raw', address: `127.0.0.1:${port}` });
    assert.equal(t.status, 201, JSON.stringify(t.body));
    const link = await createLink(gw, { vm: 'rawtarget', console: 'raw', note: 'browser test: raw' });
    const page = await newPage(browser);
    await openSerial(page, link);
    await waitForText(page, 'raw target says hello');
    await page.locator('#screen .xterm').click();
    await page.keyboard.type('ping', { delay: 20 });
    await page.keyboard.press('Enter');
    await waitForText(page, 'PING');
    await shot(page, 'serial-4-raw');
    assert.deepEqual(page.errors, []);
    await page.close();
  } finally {
    server.close();
  }
});

test('the admin console opens a VM\'s serial console and creates serial links', { timeout: 90_000 }, async () => {
  const page = await newPage(browser);
  await page.goto(`${gw.info.admin_url}/`);
  await page.fill('#login-token', gw.info.admin_token);
  await page.click('#login-submit');
  const vm = page.locator(`.vm-card[data-vm="${gw.info.vm}"]`);
  await vm.locator('[data-role="state"]', { hasText: 'running' }).waitFor({ timeout: 30_000 });
  const [tab] = await Promise.all([
    page.context().waitForEvent('page'),
    vm.getByRole('button', { name: `Open the serial console of ${gw.info.vm}` }).click(),
  ]);
  await tab.locator('#console[data-connected="true"]').waitFor({ timeout: 60_000 });
  await tab.locator('#screen .xterm').click();
  await tab.keyboard.type('echo "from admin $((2*21))"', { delay: 20 });
  await tab.keyboard.press('Enter');
  await waitForText(tab, 'from admin 42');
  // The link form offers serial links.
  await page.selectOption('#lf-console', 'serial');
  assert.equal(await page.locator('#lf-console').inputValue(), 'serial');
  await tab.close();
});
