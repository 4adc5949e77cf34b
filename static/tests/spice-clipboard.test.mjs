// The clipboard panel on SPICE links, against a real gateway and a SPICE-only QEMU
// guest (`gateway demo --vm-console spice`; the test guest runs the clipboard agent
// `vmgw-clip` on the SPICE server's agent channel): copy in the guest → visible in the
// panel; paste in the panel → present in the guest; a to_guest link keeps the guest's
// text in. The gateway's enforcement against clients that ignore the page is proven by
// gateway/tests/clipboard.rs (the_clipboard_policy_holds_both_ways_on_spice_links).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  newPage, shot, createLink, waitForSerial, typeKeys, openShare, sleep,
  startGatewayAndBrowser, stopGatewayAndBrowser,
} from './helpers.mjs';

let gw;
let browser;
before(async () => ({ gw, browser } = await startGatewayAndBrowser({ demoArgs: ['--vm-console', 'spice'] })));
after(() => stopGatewayAndBrowser(gw, browser));

const CANVAS = '#screen .spice-screen canvas';

/** Runs a shell command on the guest's console by typing into the SPICE canvas. */
async function run(page, command) {
  await page.locator(CANVAS).waitFor();
  await page.click(CANVAS);
  await typeKeys(page, `${command}\n`, 40);
}

test('SPICE: copy in the guest shows in the panel; paste in the panel reaches the guest; to_guest keeps the guest\'s text in', { timeout: 300_000 }, async () => {
  const both = await createLink(gw, { console: 'spice', clipboard: 'both', note: 'browser test: spice clipboard' });
  const page = await newPage(browser);
  await openShare(page, both.url);
  await waitForSerial(gw, 'VMGW-GUEST-READY', 150_000);
  await sleep(1000);

  // The same panel as on VNC links, offering what the link allows.
  assert.equal(await page.locator('#btn-clip').isVisible(), true, 'both: the clipboard button');
  await page.click('#btn-clip');
  assert.equal(await page.locator('#clip-from').isVisible(), true, 'both: from');
  assert.equal(await page.locator('#clip-to').isVisible(), true, 'both: to');
  await page.click('#clip-close');

  // Copy in the guest → the panel shows it.
  const copied = `spice-guest-copy-${Date.now()}`;
  await run(page, `vmgw-clip set ${copied}`);
  await page.waitForFunction((t) => document.getElementById('clip-guest').value === t, copied, { timeout: 60_000 });
  await page.click('#btn-clip');
  assert.equal(await page.locator('#clip-note').textContent(), '', 'the agent answered on this SPICE-only VM');
  await shot(page, 'spice-clipboard-from-guest');

  // Paste in the panel → the guest has it (read back through the guest's serial line).
  const pasted = `spice-page-paste-${Date.now()}`;
  await page.fill('#clip-send', pasted);
  await page.click('#clip-go');
  await page.locator('#clip-note', { hasText: 'Sent' }).waitFor();
  await page.click('#clip-close');
  await run(page, 'for i in 1 2 3 4 5 6 7 8 9 10; do vmgw-clip get | grep -q spice-page-paste && break; sleep 1; done; vmgw-clip get > /dev/ttyS0; echo > /dev/ttyS0');
  await waitForSerial(gw, pasted, 60_000);
  assert.deepEqual(page.errors, []);
  await page.context().close();

  // A to_guest link (the default), one visitor at a time (a SPICE server serves one
  // client): the guest's copy never reaches the page, pasting still works.
  const toGuest = await createLink(gw, { console: 'spice', note: 'browser test: spice clipboard to_guest' });
  assert.equal(toGuest.clipboard, 'to_guest');
  const other = await newPage(browser);
  await openShare(other, toGuest.url);
  await other.click('#btn-clip');
  assert.equal(await other.locator('#clip-from').isVisible(), false, 'to_guest: nothing comes out');
  assert.equal(await other.locator('#clip-to').isVisible(), true, 'to_guest: to');
  await other.click('#clip-close');
  const kept = `spice-kept-in-${Date.now()}`;
  await run(other, `vmgw-clip set ${kept}; echo set-done > /dev/ttyS0`);
  await waitForSerial(gw, 'set-done', 60_000);
  const pasted2 = `spice-second-paste-${Date.now()}`;
  await other.click('#btn-clip');
  await other.fill('#clip-send', pasted2);
  await other.click('#clip-go');
  await other.click('#clip-close');
  await run(other, 'for i in 1 2 3 4 5 6 7 8 9 10; do vmgw-clip get | grep -q spice-second && break; sleep 1; done; vmgw-clip get > /dev/ttyS0; echo > /dev/ttyS0');
  await waitForSerial(gw, pasted2, 60_000);
  // The guest's grab came and went long ago (the paste after it went through).
  assert.equal(await other.locator('#clip-guest').inputValue(), '', 'the to_guest page got the guest\'s text');
  assert.deepEqual(other.errors, []);
  await other.context().close();
});
