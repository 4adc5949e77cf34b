// The clipboard panel against a real gateway and QEMU guest (`gateway demo`; the test
// guest runs the clipboard agent `vmgw-clip`): copy in the guest → visible on the page;
// paste on the page → present in the guest; and the link's policy refusing a direction,
// seen from the page. The gateway's enforcement against clients that ignore the page is
// proven by gateway/tests/clipboard.rs.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  newPage, shot, createLink, waitForSerial, typeKeys, openShare, sleep, serial,
  compareWithScreenshot, startGatewayAndBrowser, stopGatewayAndBrowser,
} from './helpers.mjs';

let gw;
let browser;
before(async () => ({ gw, browser } = await startGatewayAndBrowser()));
after(() => stopGatewayAndBrowser(gw, browser));

/** Runs a shell command on the guest's VGA console by typing into the page's canvas. */
async function run(page, command) {
  await page.click('#screen canvas');
  await typeKeys(page, `${command}\n`, 30);
}

test('copy in the guest shows on the page; paste on the page reaches the guest; a to_guest link keeps the guest\'s text in', { timeout: 240_000 }, async () => {
  const both = await createLink(gw, { clipboard: 'both' });
  const toGuest = await createLink(gw, {}); // the default policy
  assert.equal(toGuest.clipboard, 'to_guest');
  const fromGuest = await createLink(gw, { clipboard: 'from_guest' });

  const page = await newPage(browser);
  await openShare(page, both.url);
  const other = await newPage(browser);
  await openShare(other, toGuest.url);
  const third = await newPage(browser);
  await openShare(third, fromGuest.url);
  await waitForSerial(gw, 'VMGW-GUEST-READY', 120_000);
  await sleep(1000);

  // The panel offers what the link allows.
  assert.equal(await page.locator('#btn-clip').isVisible(), true, 'both: the clipboard button');
  await page.click('#btn-clip');
  assert.equal(await page.locator('#clip-from').isVisible(), true, 'both: from');
  assert.equal(await page.locator('#clip-to').isVisible(), true, 'both: to');
  await page.click('#clip-close');
  await other.click('#btn-clip');
  assert.equal(await other.locator('#clip-from').isVisible(), false, 'to_guest: nothing comes out');
  assert.equal(await other.locator('#clip-to').isVisible(), true, 'to_guest: to');
  await other.click('#clip-close');
  await third.click('#btn-clip');
  assert.equal(await third.locator('#clip-from').isVisible(), true, 'from_guest: from');
  assert.equal(await third.locator('#clip-to').isVisible(), false, 'from_guest: no pasting in');
  await third.click('#clip-close');

  // Copy in the guest → the page shows it (both and from_guest links).
  const copied = `guest-copy-${Date.now()}`;
  await run(page, `vmgw-clip set ${copied}`);
  for (const p of [page, third]) {
    await p.waitForFunction((t) => document.getElementById('clip-guest').value === t, copied, { timeout: 30_000 });
  }
  await page.click('#btn-clip');
  await shot(page, 'clipboard-from-guest');
  await page.click('#clip-close');

  // Paste on the page → the guest has it.
  const pasted = `page-paste-${Date.now()}`;
  await page.click('#btn-clip');
  await page.fill('#clip-send', pasted);
  await page.click('#clip-go');
  await page.locator('#clip-note', { hasText: 'Sent' }).waitFor();
  await page.click('#clip-close');
  await run(page, 'for i in 1 2 3 4 5 6 7 8 9 10; do vmgw-clip get | grep -q page-paste && break; sleep 1; done; vmgw-clip get > /dev/ttyS0; echo > /dev/ttyS0');
  await waitForSerial(gw, pasted, 60_000);

  // The to_guest page's screen is right although the gateway parses QEMU's stream for
  // it (and so let it negotiate only the encodings it follows: ZRLE, not Tight).
  let cmp;
  for (let i = 0; i < 10; i++) {
    cmp = await compareWithScreenshot(other, gw);
    if (cmp.width === cmp.shotWidth && cmp.badBlocks <= cmp.blocks * 0.01) break;
    await sleep(500);
  }
  console.log(`to_guest page, canvas vs screendump: ${JSON.stringify(cmp)}`);
  assert.equal(cmp.width, cmp.shotWidth, 'widths');
  assert.equal(cmp.height, cmp.shotHeight, 'heights');
  assert.ok(cmp.badBlocks <= cmp.blocks * 0.01, `blocks differing: ${cmp.badBlocks} of ${cmp.blocks}`);
  assert.ok(cmp.blackBadBlocks > 20 * Math.max(cmp.badBlocks, 1), `a blank canvas would score close: ${JSON.stringify(cmp)}`);

  // Refused, seen from the page: the to_guest link's page never got the guest's text
  // (the gateway removed it; the other pages got theirs long ago).
  assert.equal(await other.locator('#clip-guest').inputValue(), '', 'the to_guest page got the guest\'s text');
  // And a from_guest page that pastes anyway (a script calling noVNC directly) does not
  // reach the guest: the guest's clipboard still holds what the both page pasted.
  await third.evaluate(() => {
    // The hidden panel's own code path, as a modified page would use it.
    const btn = document.getElementById('clip-go');
    const area = document.getElementById('clip-send');
    area.value = 'refused-paste';
    btn.click();
  });
  await sleep(3000);
  await run(page, 'vmgw-clip get > /dev/ttyS0; echo clip-check-done > /dev/ttyS0');
  await waitForSerial(gw, 'clip-check-done', 30_000);
  const log = await serial(gw);
  assert.ok(!log.includes('refused-paste'), `a from_guest link pasted into the guest:\n${log}`);
  await Promise.all([page.close(), other.close(), third.close()]);
});
