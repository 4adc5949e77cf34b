// Keyboard layouts: the page's real "type text" types for the VM's keyboard layout, and
// the characters arrive as typed in a guest that uses that layout. One guest (the demo
// VM) switches its console keymap between rounds (busybox loadkmap of a keymap compiled
// from the same X keyboard database, see vmm-backend/guest); what arrived is read back
// from the serial log, where `head -n1 >/dev/ttyS0` on tty1 copies the typed line.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  newPage, shot, createLink, admin, waitForScreen, waitForSerial, serial, sleep,
  startGatewayAndBrowser, stopGatewayAndBrowser,
} from './helpers.mjs';

let gw;
let browser;
before(async () => ({ gw, browser } = await startGatewayAndBrowser()));
after(() => stopGatewayAndBrowser(gw, browser));

// What is typed in each round, and what the layout has no keys for (the page must name
// exactly these and leave them out). `¥` on `ja`: the Japanese layout's ¥ key types
// U+005C (a backslash shown as ¥ by Japanese fonts, as on Windows), so U+00A5 has no key.
const TEXT = '@äéß£¥ ^Ä\\|{~';
const ROUNDS = [
  { layout: 'en-us', missing: 'äéß£¥Ä' },
  { layout: 'de', missing: '' },
  { layout: 'fr', missing: '' },
  { layout: 'en-gb', missing: '' },
  { layout: 'ja', missing: 'äéß£¥Ä' },
];

/** Types through the page's "type text" dialog; returns the note shown, if any. */
async function typeText(page, text, { missing = '' } = {}) {
  await page.click('#btn-type');
  await page.fill('#type-text', text);
  await page.click('#type-go');
  let note = '';
  if (missing) {
    const el = page.locator('#type-note', { hasText: 'has no keys for' });
    await el.waitFor();
    note = await el.textContent();
    await page.click('#type-go');
  }
  await page.locator('#type-dialog').waitFor({ state: 'hidden' });
  await page.locator('#toast', { hasText: 'Typed' }).waitFor({ timeout: 30_000 });
  return note;
}

/** The lines of the serial log that start with a prefix. */
async function serialLines(prefix) {
  return (await serial(gw)).split(/\r?\n/).filter((l) => l.startsWith(prefix));
}

/**
 * One check: `head -n1` waits on tty1 for a line, the line is typed (`type(line)`),
 * and what reached the guest (copied to the serial port) must be the line without the
 * characters the page reported.
 */
async function check(page, tag, missing, type) {
  await typeText(page, `echo KBD-WAIT-${tag} >/dev/ttyS0; head -n1 >/dev/ttyS0\n`);
  await waitForSerial(gw, `KBD-WAIT-${tag}`, 60_000);
  await sleep(500);
  await type(`KBD-${tag}:${TEXT}:END`);
  await waitForSerial(gw, `KBD-${tag}:`, 60_000);
  const want = `KBD-${tag}:${[...TEXT].filter((c) => !missing.includes(c)).join('')}:END`;
  let lines = [];
  for (let i = 0; i < 20; i++) {
    lines = await serialLines(`KBD-${tag}:`);
    if (lines.some((l) => l.includes(':END'))) break;
    await sleep(300);
  }
  console.log(`${tag}: arrived ${JSON.stringify(lines)}`);
  assert.deepEqual(lines, [want], `${tag}: what arrived in the guest`);
}

/** Types a line through the dialog; the page must name exactly `missing`. */
function viaDialog(page, tag, missing) {
  return async (line) => {
    const note = await typeText(page, `${line}\n`, { missing });
    const named = [...note.matchAll(/“(.)” \(U\+/gu)].map((m) => m[1]).join('');
    assert.equal(named, missing, `${tag}: the page reported ${JSON.stringify(note)}`);
  };
}

async function openConsole(page, url) {
  await page.goto(url);
  await page.locator('#console[data-connected="true"]').waitFor({ timeout: 60_000 });
}

/** The layout the page's "type text" dialog names. */
async function dialogLayout(page) {
  await page.click('#btn-type');
  const text = await page.locator('#type-layout').textContent();
  await page.click('#type-cancel');
  return text;
}

test('type text arrives as typed for the guest keyboard layout (en-us, de, fr, en-gb, ja; VNC, SPICE, on-screen keys)', { timeout: 900_000 }, async () => {
  const vm = gw.info.vm;
  let r = await admin(gw, 'GET', `/api/v1/vms/${vm}`);
  assert.equal(r.body.spec.keyboard_layout, null);

  const link = await createLink(gw, { ttl_seconds: 3600, note: 'browser test: keyboard layouts' });
  const page = await newPage(browser);
  await openConsole(page, link.url);
  await waitForSerial(gw, 'VMGW-GUEST-READY', 120_000);
  await waitForScreen(page);
  await sleep(1000);
  assert.match(await dialogLayout(page), /\(en-us\)$/, 'no layout set: US');

  for (const { layout, missing } of ROUNDS) {
    // Switch the guest first, typing with the layout it has now (the page's too).
    await typeText(page, `loadkmap </etc/vmgw/keymaps/${layout}.bmap && echo KBD-LOADED-${layout} >/dev/ttyS0\n`);
    await waitForSerial(gw, `KBD-LOADED-${layout}`, 60_000);
    if (layout === 'fr') {
      // Through the admin console's menu this time.
      const adminPage = await newPage(browser);
      await adminPage.goto(`${gw.info.admin_url}/`);
      await adminPage.fill('#login-token', gw.info.admin_token);
      await adminPage.click('#login-submit');
      const select = adminPage.locator(`.vm-card[data-vm="${vm}"] select[data-role="keyboard-layout"]`);
      await select.selectOption('fr');
      await adminPage.locator('#toast', { hasText: `Keyboard layout of ${vm}: French` }).waitFor();
      await adminPage.waitForFunction((sel) => document.querySelector(sel)?.value === 'fr',
        `.vm-card[data-vm="${vm}"] select[data-role="keyboard-layout"]`);
      assert.deepEqual(adminPage.errors, []);
      await adminPage.context().close();
      r = await admin(gw, 'GET', `/api/v1/vms/${vm}`);
    } else {
      r = await admin(gw, 'PATCH', `/api/v1/vms/${vm}`, { keyboard_layout: layout });
      assert.equal(r.status, 200, JSON.stringify(r.body));
    }
    assert.equal(r.body.spec.keyboard_layout, layout);
    // The page learns the layout when it opens the session.
    await page.reload();
    await page.locator('#console[data-connected="true"]').waitFor({ timeout: 60_000 });
    assert.match(await dialogLayout(page), new RegExp(`\\(${layout}\\)$`));

    await check(page, layout, missing, viaDialog(page, layout, missing));

    if (layout === 'de') {
      // The on-screen keyboard's input types for the layout as well.
      await page.click('#btn-osk');
      await check(page, `${layout}-osk`, missing, async (line) => {
        await page.fill('#osk-input', line);
        await sleep(3000); // typing is paced; then Enter from the key row
        await page.click('#keyrow [data-key="Enter"]');
      });
      await page.click('#btn-osk');
      // And a SPICE console (scancodes) of the same VM.
      const spiceLink = await createLink(gw, { console: 'spice', ttl_seconds: 900, note: 'browser test: keyboard layouts (SPICE)' });
      const spice = await newPage(browser);
      await openConsole(spice, spiceLink.url);
      await sleep(1000);
      assert.match(await dialogLayout(spice), /\(de\)$/);
      await check(spice, `${layout}-spice`, missing, viaDialog(spice, `${layout}-spice`, missing));
      assert.deepEqual(spice.errors, []);
      await spice.context().close();
    }
  }
  await shot(page, 'keyboard-layouts');
  assert.deepEqual(page.errors, []);
  await page.context().close();
});
