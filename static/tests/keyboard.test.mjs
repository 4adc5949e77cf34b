// Keyboard layouts: the page's real "type text" types for the VM's keyboard layout, and
// the characters arrive as typed in a guest that uses that layout. One guest (the demo
// VM) switches its console keymap between rounds (busybox loadkmap of a keymap compiled
// from the same X keyboard database, see vmm-backend/guest); what arrived is read back
// from the serial log, where `head -n1 >/dev/ttyS0` on tty1 copies the typed line.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startGateway, launchBrowser, newPage, shot, createLink, admin, waitForScreen, waitForSerial, serial, sleep,
} from './helpers.mjs';

let gw;
let browser;

before(async () => {
  [gw, browser] = await Promise.all([startGateway(), launchBrowser()]);
});

after(async () => {
  await browser?.close();
  await gw?.stop();
});

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

test('type text arrives as typed for the guest keyboard layout (en-us, de, fr, en-gb, ja)', { timeout: 600_000 }, async () => {
  const vm = gw.info.vm;
  // The API checks the layout name and keeps the setting.
  let r = await admin(gw, 'PATCH', `/api/v1/vms/${vm}`, { keyboard_layout: 'klingon' });
  assert.equal(r.status, 400, JSON.stringify(r.body));
  r = await admin(gw, 'PATCH', `/api/v1/vms/${vm}`, { keyboard_layout: 'de', vcpus: 4 });
  assert.equal(r.status, 400, 'unknown fields are refused');
  r = await admin(gw, 'GET', `/api/v1/vms/${vm}`);
  assert.equal(r.body.spec.keyboard_layout, null);

  const link = await createLink(gw, { ttl_seconds: 1800, note: 'browser test: keyboard layouts' });
  const page = await newPage(browser);
  await page.goto(link.url);
  await page.locator('#console[data-connected="true"]').waitFor({ timeout: 60_000 });
  await waitForSerial(gw, 'VMGW-GUEST-READY', 120_000);
  await waitForScreen(page);
  await sleep(1000);

  for (const { layout, missing } of ROUNDS) {
    // Switch the guest first, typing with the layout it has now (the page's too).
    await typeText(page, `loadkmap </etc/vmgw/keymaps/${layout}.bmap && echo KBD-LOADED-${layout} >/dev/ttyS0\n`);
    await waitForSerial(gw, `KBD-LOADED-${layout}`, 60_000);
    r = await admin(gw, 'PATCH', `/api/v1/vms/${vm}`, { keyboard_layout: layout });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.spec.keyboard_layout, layout);
    // The page learns the layout when it opens the session.
    await page.reload();
    await page.locator('#console[data-connected="true"]').waitFor({ timeout: 60_000 });
    await page.click('#btn-type');
    assert.match(await page.locator('#type-layout').textContent(), new RegExp(`\\(${layout}\\)$`));
    await page.click('#type-cancel');

    // `head` reads the next line typed on tty1 and copies it to the serial port.
    await typeText(page, `echo KBD-WAIT-${layout} >/dev/ttyS0; head -n1 >/dev/ttyS0\n`);
    await waitForSerial(gw, `KBD-WAIT-${layout}`, 60_000);
    await sleep(500);
    const note = await typeText(page, `KBD-${layout}:${TEXT}:END\n`, { missing });
    // The page named exactly the characters it could not type.
    const named = [...note.matchAll(/“(.)” \(U\+/gu)].map((m) => m[1]).join('');
    assert.equal(named, missing, `${layout}: the page reported ${JSON.stringify(note)}`);

    await waitForSerial(gw, `KBD-${layout}:`, 60_000);
    const want = `KBD-${layout}:${[...TEXT].filter((c) => !missing.includes(c)).join('')}:END`;
    let lines = [];
    for (let i = 0; i < 20; i++) {
      lines = await serialLines(`KBD-${layout}:`);
      if (lines.some((l) => l.includes(':END'))) break;
      await sleep(300);
    }
    console.log(`${layout}: arrived ${JSON.stringify(lines)}`);
    assert.deepEqual(lines, [want], `${layout}: what arrived in the guest`);
  }
  await shot(page, 'keyboard-layouts');
  assert.deepEqual(page.errors, []);
  await page.context().close();
});
