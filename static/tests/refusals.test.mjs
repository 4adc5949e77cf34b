// Every refusal the share page explains, with the gateway's answers played by
// Playwright's request routing (no gateway or VM needed): the built pages from dist/
// are served at https://vmgw.test/s/ and POST /s/session, GET /s/status answer as the
// contract says.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join, extname } from 'node:path';
import { launchBrowser, newPage, shot, STATIC_DIR } from './helpers.mjs';

const ORIGIN = 'https://vmgw.test';
const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css', '.svg': 'image/svg+xml', '.map': 'application/json' };
const CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

let browser;
before(async () => {
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});

const SESSION = {
  link_id: 'L1', vm: 'web', console: 'vnc', view_only: false, allow_power: true,
  expires_at: new Date(Date.now() + 3600e3).toISOString(), ws_path: '/s/ws/L1',
};

/**
 * A page whose gateway answers `/s/session` with `exchange(body)` and `/s/status`
 * with `status()`: each returns `[status, json]`.
 */
async function pageWith({ exchange, status = () => [200, { vm_state: 'running', expires_at: SESSION.expires_at, allow_power: true, view_only: false, console: 'vnc' }], power }) {
  const page = await newPage(browser, { viewport: { width: 800, height: 700 } });
  page.calls = [];
  await page.route(`${ORIGIN}/**`, async (route) => {
    const req = route.request();
    const path = new URL(req.url()).pathname;
    const json = ([code, body], headers = {}) => route.fulfill({ status: code, contentType: 'application/json', body: JSON.stringify(body), headers });
    if (path === '/s/session' && req.method() === 'POST') {
      const body = JSON.parse(req.postData() ?? '{}');
      page.calls.push(body);
      return json(exchange(body));
    }
    if (path.startsWith('/s/status/')) return json(status());
    if (path.startsWith('/s/power/')) {
      page.powered = JSON.parse(req.postData() ?? '{}').action;
      return json(power ? power() : [200, { vm_state: 'running' }]);
    }
    if (path.startsWith('/s/ws/')) return route.fulfill({ status: 403, body: '' });
    const file = path === '/s/' ? 'share.html' : path.replace(/^\/s\//, '');
    try {
      const body = await readFile(join(STATIC_DIR, 'dist', file));
      return route.fulfill({ status: 200, body, contentType: TYPES[extname(file)] ?? 'application/octet-stream', headers: { 'Content-Security-Policy': CSP } });
    } catch {
      return route.fulfill({ status: 404, body: '' });
    }
  });
  // Consoles are not part of these tests: every WebSocket is closed at once, as if
  // the network dropped it.
  await page.routeWebSocket(/\/s\/ws\//, (ws) => ws.close({ code: 1011, reason: 'test' }));
  return page;
}

const open = (page, token = 'tok') => page.goto(`${ORIGIN}/s/#${token}`);

async function expectGate(page, kind, titleRe, textRe) {
  await page.locator(`#gate[data-kind="${kind}"]`).waitFor({ timeout: 10_000 });
  assert.match(await page.locator('#gate-title').textContent(), titleRe);
  if (textRe) assert.match(await page.locator('#gate-text').textContent(), textRe);
}

test('no token in the address', async () => {
  const page = await pageWith({ exchange: () => [500, {}] });
  await open(page, '');
  await expectGate(page, 'no-token', /incomplete/i);
  assert.equal(page.calls.length, 0);
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

for (const [reason, kind, title, text] of [
  ['expired', 'expired', /expired/i, /no longer valid/],
  ['revoked', 'revoked', /revoked/i, /withdrawn/],
  ['exhausted', 'exhausted', /used up/i, /limited number of times/],
]) {
  test(`refusal: ${reason}`, async () => {
    const page = await pageWith({ exchange: () => [403, { error: 'refused', reason }] });
    await open(page);
    await expectGate(page, kind, title, text);
    await shot(page, `refusal-${reason}`);
    assert.deepEqual(page.errors, []);
    await page.context().close();
  });
}

test('refusal: invalid token', async () => {
  const page = await pageWith({ exchange: () => [401, { error: 'unauthorized', reason: 'invalid_token' }] });
  await open(page);
  await expectGate(page, 'invalid', /not valid/i, /incomplete or mistyped/);
  await page.context().close();
});

test('refusal: no viewer slot free, with a retry that works', async () => {
  let full = true;
  const page = await pageWith({ exchange: () => (full ? [403, { error: 'refused', reason: 'viewers_full' }] : [200, SESSION]) });
  await open(page);
  await expectGate(page, 'viewers-full', /no viewer slot/i, /at the same time/);
  full = false;
  await page.getByRole('button', { name: 'Try again' }).click();
  // Accepted now: the console opens (its WebSocket is refused here, which the page
  // reports as a lost connection and retries).
  await page.locator('#console').waitFor();
  assert.equal(page.calls.length, 2);
  await page.context().close();
});

test('refusal: not valid yet, says from when', async () => {
  const opensAt = new Date(Date.now() + 90 * 60e3).toISOString();
  const page = await pageWith({ exchange: () => [403, { error: 'refused', reason: 'not_yet_valid', opens_at: opensAt }] });
  await open(page);
  await expectGate(page, 'not-yet-valid', /not open yet/i, /opens on .*\(in 1 h (29|30) min\)/);
  await page.context().close();
});

test('password: required, wrong, then locked out until a time', async () => {
  let n = 0;
  const page = await pageWith({
    exchange: (b) => {
      n++;
      if (b.password === undefined) return [401, { error: 'unauthorized', reason: 'password_required' }];
      if (n === 2) return [401, { error: 'unauthorized', reason: 'wrong_password' }];
      return [429, { error: 'too_many_requests', reason: 'locked_out', retry_after: 300 }];
    },
  });
  await open(page);
  await expectGate(page, 'password', /protected/i);
  assert.equal(await page.locator('#pw-input').evaluate((el) => el === document.activeElement), true, 'the password field has the focus');
  await page.fill('#pw-input', 'guess-1');
  await page.press('#pw-input', 'Enter');
  await page.locator('#pw-error', { hasText: 'Wrong password' }).waitFor();
  await page.fill('#pw-input', 'guess-2');
  await page.click('#pw-submit');
  await expectGate(page, 'locked-out', /too many wrong passwords/i, /try again at .*\(in (4 min 5\d s|5 min 00 s)\)/);
  assert.equal(await page.locator('#pw-submit').isDisabled(), true);
  await shot(page, 'refusal-locked-out');
  assert.deepEqual(page.calls.map((c) => c.password), [undefined, 'guess-1', 'guess-2']);
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('the VM is off: the page says so and offers power-on when the link allows it', async () => {
  let vm = 'stopped';
  const page = await pageWith({
    exchange: () => [200, SESSION],
    status: () => [200, { vm_state: vm, expires_at: SESSION.expires_at, allow_power: true, view_only: false, console: 'vnc' }],
    power: () => {
      vm = 'running';
      return [200, { vm_state: 'running' }];
    },
  });
  await open(page);
  await page.locator('#overlay[data-kind="vm-off"]').waitFor();
  assert.match(await page.locator('#overlay-text').textContent(), /switched off/);
  await shot(page, 'refusal-vm-off');
  await page.click('#power-on');
  await page.locator('#overlay[data-kind="powering-on"]').waitFor();
  assert.equal(page.powered, 'start');
  await page.context().close();
});

test('status says revoked after a lost connection: final message, no retries', async () => {
  let revoked = false;
  const page = await pageWith({
    exchange: () => [200, SESSION],
    status: () => (revoked ? [403, { reason: 'revoked' }] : [200, { vm_state: 'running', expires_at: SESSION.expires_at }]),
  });
  revoked = false;
  await open(page);
  await page.locator('#overlay[data-kind="reconnecting"]').waitFor({ timeout: 10_000 });
  revoked = true;
  await page.getByRole('button', { name: 'Reconnect now' }).click();
  await page.locator('#overlay[data-kind="revoked"]').waitFor();
  assert.match(await page.locator('#overlay-title').textContent(), /revoked/i);
  await page.context().close();
});
