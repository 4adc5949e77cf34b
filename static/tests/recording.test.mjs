// Session recording end to end, against a real gateway and QEMU guest (`gateway demo`):
// a visitor of a recorded link is told so, types a command into the real guest through
// the console page; the recording plays back in the admin console, and its final frame
// matches the guest's screen as QEMU reported it at the end of the session (the
// screendump comparison of console.test.mjs); seeking into the middle and back to the
// end; the audit view lists the session and links to its recording; a raw console's
// recording replays as text, seeking back to a key point. The VNC recording has key
// points (every 2 s here): seeks backward and forward start from the nearest one, so
// they feed the decoder far less than the whole stream, and the frame they end on still
// matches the guest's screen.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { copyFile, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  ARTIFACTS, newPage, shot, createLink, admin, waitForScreen, waitForSerial, typeKeys, openShare, sleep,
  compareWithScreenshot, screendump, canvasStats, startGatewayAndBrowser, stopGatewayAndBrowser,
} from './helpers.mjs';
import { KIND, parseRecording } from '../src/recording.js';

let gw;
let browser;
before(async () => {
  const config = join(await mkdtemp(join(tmpdir(), 'vmgw-reccfg-')), 'gateway.toml');
  await writeFile(config, '[recording]\nkey_point_interval_secs = 2\n');
  ({ gw, browser } = await startGatewayAndBrowser({ config }));
});
after(() => stopGatewayAndBrowser(gw, browser));

async function seek(page, ms) {
  await page.evaluate((t) => {
    const r = document.getElementById('player-seek');
    r.value = String(t);
    r.dispatchEvent(new Event('input', { bubbles: true }));
  }, ms);
}

/** What the last seek fed the decoder, of the whole console→visitor stream. */
async function seekCost(page) {
  const d = await page.locator('#player').evaluate((el) => ({ ...el.dataset }));
  return { fed: Number(d.seekBytes), total: Number(d.streamBytes), keys: Number(d.keyPoints) };
}

async function matchesScreendump(page, png) {
  let cmp;
  for (let i = 0; i < 10; i++) {
    cmp = await compareWithScreenshot(page, gw, '#player-screen canvas', png);
    if (cmp.width === cmp.shotWidth && cmp.height === cmp.shotHeight && cmp.badBlocks <= cmp.blocks * 0.01) break;
    await sleep(500);
  }
  console.log(`replayed frame vs screendump: ${JSON.stringify(cmp)}`);
  assert.equal(cmp.width, cmp.shotWidth, 'replay and screendump widths');
  assert.equal(cmp.height, cmp.shotHeight, 'replay and screendump heights');
  assert.ok(cmp.badBlocks <= cmp.blocks * 0.01, `blocks differing: ${cmp.badBlocks} of ${cmp.blocks}; page errors: ${JSON.stringify(page.errors)}`);
  assert.ok(cmp.meanDiff < 2, `mean block difference ${cmp.meanDiff}`);
  assert.ok(cmp.blackBadBlocks > 20 * Math.max(cmp.badBlocks, 1), `a blank canvas would score close: ${JSON.stringify(cmp)}`);
}

test('a recorded session plays back in the admin console as the guest showed it', { timeout: 300_000 }, async () => {
  const link = await createLink(gw, { record: true });
  assert.equal(link.record, true);

  // The visitor: told before the console connects, then types into the real guest.
  const visitor = await newPage(browser);
  await openShare(visitor, link.url);
  assert.equal(await visitor.locator('#recorded-badge').isVisible(), true);
  await waitForSerial(gw, 'VMGW-GUEST-READY', 120_000);
  await sleep(1000);
  await waitForScreen(visitor);
  await visitor.click('#screen canvas');
  await typeKeys(visitor, 'echo recorded in chromium > /dev/ttyS0\n');
  await waitForSerial(gw, 'recorded in chromium', 30_000);
  await sleep(1500);
  await shot(visitor, 'rec-1-visitor');
  assert.deepEqual(visitor.errors, []);
  // The session ends; the guest's screen as QEMU has it at that moment.
  await visitor.context().close();
  const finalPng = await screendump(gw);

  // The recording is complete in the index.
  let rec;
  for (let i = 0; i < 100 && !rec; i++) {
    const r = await admin(gw, 'GET', `/api/v1/recordings?link=${link.id}`);
    rec = r.body?.find?.((x) => x.status === 'complete');
    if (!rec) await sleep(200);
  }
  assert.ok(rec, 'a complete recording');
  assert.equal(rec.console, 'vnc');
  // Kept with the screenshots, for a look at what was recorded.
  await copyFile(join(gw.dataDir, 'recordings', `${rec.id}.vmrec`), join(ARTIFACTS, 'rec-vnc.vmrec'));

  // The admin console: the audit view lists the session and links to its recording.
  const page = await newPage(browser);
  await page.goto(`${gw.info.admin_url}/`);
  await page.fill('#login-token', gw.info.admin_token);
  await page.click('#login-submit');
  await page.locator(`#rec-body tr[data-recording-id="${rec.id}"]`).waitFor();
  await page.fill('#af-link', link.id);
  await page.selectOption('#af-kind', 'session_started');
  await page.click('#af-apply');
  const row = page.locator('#audit-body tr[data-kind="session_started"]');
  await row.waitFor();
  assert.equal(await row.count(), 1);
  const play = row.locator(`button.play-recording[data-recording-id="${rec.id}"]`);
  assert.equal(await play.count(), 1);
  await shot(page, 'rec-2-audit');
  await play.click();

  // The player: it loads and plays; then straight to the end.
  const dlg = page.locator(`#player[open][data-recording-id="${rec.id}"]`);
  await dlg.waitFor();
  const duration = Number(await page.locator('#player').getAttribute('data-duration'));
  assert.ok(duration > 1000, `duration ${duration} ms`);
  await page.locator('#player-screen canvas').first().waitFor();
  // Straight to the end: from the last key point, not through the whole stream.
  await seek(page, duration);
  const toEnd = await seekCost(page);
  console.log(`seek to the end: ${JSON.stringify(toEnd)}`);
  assert.ok(toEnd.keys >= 3, `key points: ${toEnd.keys}`);
  assert.ok(toEnd.fed > 0 && toEnd.fed < toEnd.total / 2, `the seek fed ${toEnd.fed} of ${toEnd.total} bytes`);
  await sleep(1000);
  await shot(page, 'rec-3-replayed-end');
  await matchesScreendump(page, finalPng);

  // Seek back into the middle: from the key point before it, not from the start; then
  // play at 4×.
  await seek(page, Math.floor(duration / 2));
  const toMiddle = await seekCost(page);
  console.log(`seek back to the middle: ${JSON.stringify(toMiddle)}`);
  assert.ok(toMiddle.fed > 0 && toMiddle.fed < toMiddle.total / 2, `the seek fed ${toMiddle.fed} of ${toMiddle.total} bytes`);
  const at = Number(await page.locator('#player').getAttribute('data-time'));
  assert.ok(Math.abs(at - Math.floor(duration / 2)) <= 1, `position ${at} of ${duration}`);
  const mid = await canvasStats(page, '#player-screen canvas');
  assert.ok(mid.width > 0, 'a frame in the middle');
  await shot(page, 'rec-4-middle');
  await page.selectOption('#player-speed', '4');
  if ((await page.locator('#player').getAttribute('data-playing')) !== 'true') await page.click('#player-play');
  await page.waitForFunction((t) => Number(document.getElementById('player').dataset.time) > t, at, { timeout: 30_000 });
  await page.click('#player-play'); // pause
  // And forward to the end again (past key points: from the last one): the same final
  // frame.
  await seek(page, duration);
  const again = await seekCost(page);
  assert.ok(again.fed < again.total / 2, `the seek fed ${again.fed} of ${again.total} bytes`);
  await sleep(1000);
  await matchesScreendump(page, finalPng);

  // Right at the last key point: the decoder is given the key point's full update
  // alone (with the prefix), and shows the screen.
  const file = new Uint8Array(await readFile(join(gw.dataDir, 'recordings', `${rec.id}.vmrec`)));
  const keyTimes = parseRecording(file.buffer.slice(file.byteOffset, file.byteOffset + file.byteLength))
    .records.filter((r) => r.kind === KIND.KEY).map((r) => r.t);
  await seek(page, Math.ceil(keyTimes[keyTimes.length - 1]));
  const atKey = await seekCost(page);
  let shown;
  for (let i = 0; i < 10; i++) {
    shown = await canvasStats(page, '#player-screen canvas');
    if (shown.lit > 150 && shown.colors > 1) break;
    await sleep(300);
  }
  console.log(`seek to the last key point: ${JSON.stringify(atKey)} ${JSON.stringify(shown)}`);
  assert.ok(atKey.fed < atKey.total / 4, `the seek fed ${atKey.fed} of ${atKey.total} bytes`);
  assert.ok(shown.lit > 150 && shown.colors > 1, `the screen at the last key point: ${JSON.stringify(shown)}; page errors: ${JSON.stringify(page.errors)}`);

  // A recording made before key points (format version 1, no key records) still plays:
  // the same file rewritten so, in place; a seek to the end decodes the whole stream.
  await page.click('#player-close');
  const path = join(gw.dataDir, 'recordings', `${rec.id}.vmrec`);
  const v2 = new Uint8Array(await readFile(path));
  const { records } = parseRecording(v2.buffer.slice(v2.byteOffset, v2.byteOffset + v2.byteLength));
  const keep = records.filter((r) => r.kind !== KIND.KEY);
  assert.ok(keep.length < records.length, 'the recording had key points');
  const parts = [Buffer.from('VMGWREC\x01', 'latin1')];
  for (let i = 0; i < keep.length; i++) {
    const next = records.indexOf(keep[i]) + 1;
    const end = next < records.length ? records[next].offset : v2.length;
    parts.push(Buffer.from(v2.subarray(keep[i].offset, end)));
  }
  await writeFile(path, Buffer.concat(parts));
  await play.click();
  await dlg.waitFor();
  await page.locator('#player-screen canvas').first().waitFor();
  await seek(page, duration);
  const old = await seekCost(page);
  console.log(`version 1 file, seek to the end: ${JSON.stringify(old)}`);
  assert.equal(old.keys, 0);
  assert.ok(old.fed > old.total / 2, `the seek fed ${old.fed} of ${old.total} bytes`);
  await sleep(1000);
  await matchesScreendump(page, finalPng);
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('a raw console recording replays as text, with seeking', { timeout: 120_000 }, async () => {
  // A raw console: a TCP echo server, registered as a target.
  const echo = createServer((s) => s.on('data', (d) => s.write(d)));
  await new Promise((r) => echo.listen(0, '127.0.0.1', r));
  const port = echo.address().port;
  try {
    const t = await admin(gw, 'POST', '/api/v1/targets', { name: 'echo', kind: 'raw', address: `127.0.0.1:${port}` });
    assert.equal(t.status, 201, JSON.stringify(t.body));
    const link = await createLink(gw, { vm: 'echo', console: 'raw', record: true });
    // A visitor's browser speaks to it for a while: 16 lines, 400 ms apart.
    const visitor = await newPage(browser);
    await visitor.goto(`${gw.info.public_url}/s/`);
    const echoed = await visitor.evaluate(async (token) => {
      const r = await fetch('/s/session', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ token }) });
      const s = await r.json();
      const ws = new WebSocket(`wss://${location.host}${s.ws_path}`, ['binary']);
      ws.binaryType = 'arraybuffer';
      let got = '';
      ws.onmessage = (e) => { got += new TextDecoder().decode(e.data); };
      await new Promise((res, rej) => { ws.onopen = res; ws.onerror = rej; });
      for (let i = 0; i < 16; i++) {
        ws.send(new TextEncoder().encode(`line ${String(i).padStart(2, '0')}\r\n`));
        await new Promise((res) => setTimeout(res, 400));
      }
      ws.close();
      return got;
    }, link.token);
    assert.match(echoed, /line 15/);
    await visitor.context().close();
    let rec;
    for (let i = 0; i < 100 && !rec; i++) {
      const r = await admin(gw, 'GET', `/api/v1/recordings?link=${link.id}`);
      rec = r.body?.find?.((x) => x.status === 'complete');
      if (!rec) await sleep(200);
    }
    assert.ok(rec, 'a complete recording');

    const page = await newPage(browser);
    await page.goto(`${gw.info.admin_url}/`);
    await page.fill('#login-token', gw.info.admin_token);
    await page.click('#login-submit');
    await page.locator(`#rec-body tr[data-recording-id="${rec.id}"] button`, { hasText: 'Play' }).click();
    await page.locator(`#player[open][data-recording-id="${rec.id}"]`).waitFor();
    const duration = Number(await page.locator('#player').getAttribute('data-duration'));
    assert.ok(duration >= 5000, `duration ${duration}`);
    const text = () => page.locator('#player-screen pre.replay-text').textContent();
    await seek(page, duration);
    const all = await text();
    for (let i = 0; i < 16; i++) assert.ok(all.includes(`line ${String(i).padStart(2, '0')}`), all);
    // Back into the middle: only what was shown by then.
    await seek(page, Math.floor(duration / 2));
    const mid = await text();
    assert.ok(mid.includes('line 00') && !mid.includes('line 15'), mid);
    assert.ok(all.startsWith(mid), 'the middle is a prefix of the end');
    await seek(page, duration);
    assert.equal(await text(), all);
    await shot(page, 'rec-5-raw');
    assert.deepEqual(page.errors, []);
    await page.context().close();
  } finally {
    echo.close();
  }
});
