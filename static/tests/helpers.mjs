// Test helpers: a real gateway (`gateway demo --json`), a headless Chromium driven by
// playwright-core (Debian's /usr/bin/chromium; no browser download), and small
// probes (canvas pixels, the VM's serial log, the admin API).

import { spawn } from 'node:child_process';
import { mkdtemp, mkdir, readFile, rm, copyFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

export const STATIC_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const REPO_DIR = resolve(STATIC_DIR, '..');
export const ARTIFACTS = join(REPO_DIR, 'test-artifacts', 'browser');

const GATEWAY_BIN = resolve(STATIC_DIR, process.env.VMGW_GATEWAY_BIN ?? '../target/debug/gateway');
const CHROMIUM = process.env.VMGW_CHROMIUM ?? '/usr/bin/chromium';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Starts `gateway demo --json` on free ports with a fresh data directory and waits for
 * its one JSON line. `stop()` sends SIGINT and waits for the exit (SIGKILL after 30 s).
 * Options: `config`, a configuration file (`gateway --config FILE demo`: e.g. `[proxy]`
 * and `public_url` for a reverse proxy in front); `publicListen`, the public listener;
 * `demoArgs`, more `gateway demo` arguments (e.g. `['--vm-console', 'spice']`).
 */
export async function startGateway({ config, publicListen = '127.0.0.1:0', demoArgs = [] } = {}) {
  if (!existsSync(GATEWAY_BIN)) {
    throw new Error(`gateway binary not found at ${GATEWAY_BIN} (build it, or set VMGW_GATEWAY_BIN)`);
  }
  if (!existsSync(join(STATIC_DIR, 'dist', 'share.html'))) {
    throw new Error('static/dist is not built: run static/build.sh first');
  }
  const dataDir = await mkdtemp(join(tmpdir(), 'vmgw-browser-'));
  const proc = spawn(
    GATEWAY_BIN,
    [
      ...(config ? ['--config', config] : []),
      'demo', '--json', '--data-dir', dataDir, '--public-listen', publicListen, '--admin-listen', '127.0.0.1:0',
      ...demoArgs,
    ],
    {
      cwd: REPO_DIR,
      env: { ...process.env, VMGW_STATIC_DIR: join(STATIC_DIR, 'dist') },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let stderr = '';
  proc.stderr.on('data', (d) => {
    stderr = (stderr + d.toString()).slice(-20000);
  });
  const exited = new Promise((r) => proc.once('exit', (code, sig) => r({ code, sig })));
  const lines = createInterface({ input: proc.stdout });
  const info = await new Promise((resolveInfo, reject) => {
    const timer = setTimeout(() => reject(new Error(`gateway did not print its JSON line within 180 s\n${stderr}`)), 180_000);
    lines.on('line', (line) => {
      const t = line.trim();
      if (!t.startsWith('{')) return;
      try {
        const j = JSON.parse(t);
        clearTimeout(timer);
        resolveInfo(j);
      } catch {
        /* not our line */
      }
    });
    exited.then(({ code, sig }) => {
      clearTimeout(timer);
      reject(new Error(`gateway exited early (code ${code}, signal ${sig})\n${stderr}`));
    });
  });
  let stopped = false;
  return {
    info,
    dataDir,
    proc,
    stderr: () => stderr,
    serialLog: () => join(dataDir, 'run', info.vm, 'serial.log'),
    async stop() {
      if (stopped) return;
      stopped = true;
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill('SIGINT');
        const t = setTimeout(() => proc.kill('SIGKILL'), 30_000);
        await exited;
        clearTimeout(t);
      }
      await rm(dataDir, { recursive: true, force: true }).catch(() => {});
    },
  };
}

/** Admin API call with the demo's admin token. Resolves to `{status, body}`. */
export async function admin(gw, method, path, body) {
  const resp = await fetch(`${gw.info.admin_url}${path}`, {
    method,
    headers: {
      Authorization: `Bearer ${gw.info.admin_token}`,
      ...(body ? { 'Content-Type': 'application/json' } : {}),
    },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await resp.text();
  let parsed = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = text;
  }
  return { status: resp.status, body: parsed };
}

/** Creates a share link through the admin API; throws unless 201. */
export async function createLink(gw, fields) {
  const r = await admin(gw, 'POST', '/api/v1/links', { vm: gw.info.vm, console: 'vnc', ttl_seconds: 900, ...fields });
  if (r.status !== 201) throw new Error(`creating a link failed: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

export async function launchBrowser() {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--ignore-certificate-errors',
    ],
  });
}

// The browser logs every 4xx/5xx answer as a console error without its URL; HTTP
// errors are checked by URL instead (below), so those lines are dropped here.
const EXPECTED_NOISE = [/Failed to load resource: the server responded with a status of/];

// HTTP errors that are part of normal operation: the first exchange of a password
// link (401), refusals the page explains (403, 429), no guest agent (409).
const EXPECTED_HTTP = [
  [401, /\/s\/session$/],
  [401, /\/s\/status\/[^/]+$/], // cookie gone: the page re-opens the session
  [401, /\/api\/v1\/vms$/], // the admin test signs in with a wrong token first
  [403, /\/s\/(session|status\/[^/]+)$/],
  [429, /\/s\/session$/],
  [409, /\/api\/v1\/vms\/[^/]+\/ip$/],
];

/** A page that records uncaught errors and unexpected console errors. */
export async function newPage(browser, { viewport = { width: 1280, height: 800 }, ...opts } = {}) {
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport, ...opts });
  const page = await context.newPage();
  page.errors = [];
  page.on('pageerror', (e) => page.errors.push(`pageerror: ${e.message}`));
  page.on('response', (r) => {
    const status = r.status();
    if (status < 400) return;
    const path = new URL(r.url()).pathname;
    if (EXPECTED_HTTP.some(([st, re]) => st === status && re.test(path))) return;
    page.errors.push(`HTTP ${status} ${r.request().method()} ${path}`);
  });
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    const text = m.text();
    if (EXPECTED_NOISE.some((re) => re.test(text))) return;
    page.errors.push(`console.error: ${text}`);
  });
  // Any CSP violation is a bug in our pages or in how we use the libraries.
  await page.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => {
      console.error(`CSP violation: ${e.violatedDirective} blocked ${e.blockedURI || 'inline'} at ${e.sourceFile}:${e.lineNumber}`);
    });
  });
  return page;
}

/** Saves a screenshot under <repo>/test-artifacts/browser/. */
export async function shot(page, name) {
  await mkdir(ARTIFACTS, { recursive: true });
  const path = join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path });
  return path;
}

/**
 * Copies an artifact screenshot to static/screenshot-console.png (for the README) when
 * that file is missing or VMGW_UPDATE_SCREENSHOT=1, so that test runs do not keep
 * changing a committed file.
 */
export async function keepForReadme(path) {
  const dest = join(STATIC_DIR, 'screenshot-console.png');
  if (existsSync(dest) && process.env.VMGW_UPDATE_SCREENSHOT !== '1') return;
  await copyFile(path, dest);
}

/**
 * Statistics of the console canvas: how many sampled pixels are not (near) black and
 * how many distinct colours there are. `selector` picks the canvas.
 */
export async function canvasStats(page, selector = '#screen canvas') {
  return page.evaluate((sel) => {
    const canvases = [...document.querySelectorAll(sel)].filter((c) => c.width > 0 && c.height > 0);
    // The biggest canvas is the screen (noVNC may add a small cursor canvas).
    const c = canvases.sort((a, b) => b.width * b.height - a.width * a.height)[0];
    if (!c) return { width: 0, height: 0, lit: 0, colors: 0 };
    const ctx = c.getContext('2d');
    const { data } = ctx.getImageData(0, 0, c.width, c.height);
    let lit = 0;
    const colors = new Set();
    for (let i = 0; i < data.length; i += 4 * 7) {
      const [r, g, b] = [data[i], data[i + 1], data[i + 2]];
      if (r + g + b > 90) lit++;
      if (colors.size < 64) colors.add((r << 16) | (g << 8) | b);
    }
    return { width: c.width, height: c.height, lit, colors: colors.size };
  }, selector);
}

/** Waits until the console canvas shows something (text on the VM's screen). */
export async function waitForScreen(page, selector = '#screen canvas', timeout = 60_000) {
  const until = Date.now() + timeout;
  let last;
  while (Date.now() < until) {
    last = await canvasStats(page, selector);
    if (last.width > 0 && last.lit > 150 && last.colors > 1) return last;
    await sleep(500);
  }
  throw new Error(`the console canvas stayed blank: ${JSON.stringify(last)}`);
}

/** Reads the VM's serial log ('' while it does not exist). */
export async function serial(gw) {
  try {
    return await readFile(gw.serialLog(), 'utf8');
  } catch {
    return '';
  }
}

export async function waitForSerial(gw, needle, timeout = 60_000) {
  const until = Date.now() + timeout;
  while (Date.now() < until) {
    if ((await serial(gw)).includes(needle)) return;
    await sleep(300);
  }
  throw new Error(`"${needle}" did not appear in the serial log within ${timeout} ms`);
}

// US layout: characters typed with Shift, as the key that carries them.
const SHIFTED = { '>': 'Period', '<': 'Comma', '|': 'Backslash', '_': 'Minus', ':': 'Semicolon', '"': 'Quote', '!': 'Digit1', '?': 'Slash' };

/**
 * Types text with real key events into the focused element (the console canvas),
 * pressing Shift for the characters that need it, like a person would.
 */
export async function typeKeys(page, text, delay = 40) {
  for (const ch of text) {
    if (ch === '\n') await page.keyboard.press('Enter');
    else if (SHIFTED[ch]) await page.keyboard.press(`Shift+${SHIFTED[ch]}`);
    else if (ch >= 'A' && ch <= 'Z') await page.keyboard.press(`Shift+Key${ch}`);
    else await page.keyboard.press(ch === ' ' ? 'Space' : ch);
    await sleep(delay);
  }
}

/** Opens a share URL and answers the password prompt when one is given. */
export async function openShare(page, url, password) {
  await page.goto(url);
  if (password !== undefined) {
    await page.locator('#pw-input').waitFor({ state: 'visible' });
    await page.fill('#pw-input', password);
    await page.click('#pw-submit');
  }
  await page.locator('#console[data-connected="true"]').waitFor({ timeout: 60_000 });
}

/** The VM's screen as QEMU renders it (the admin API's screenshot): a PNG Buffer. */
export async function screendump(gw) {
  const resp = await fetch(`${gw.info.admin_url}/api/v1/vms/${gw.info.vm}/screenshot`, {
    headers: { Authorization: `Bearer ${gw.info.admin_token}` },
  });
  if (resp.status !== 200) throw new Error(`screenshot: ${resp.status} ${await resp.text()}`);
  if (resp.headers.get('content-type') !== 'image/png') throw new Error('screenshot is not a PNG');
  return Buffer.from(await resp.arrayBuffer());
}

/**
 * Compares the console canvas with the VM's screen as QEMU renders it (the admin API's
 * screenshot, a QMP screendump). Both are cut into 8×8 blocks of mean luminance: lossy
 * VNC encodings (noVNC asks for JPEG) blur edges but keep blocks close. Returns sizes,
 * the mean block difference, how many blocks differ by more than 24 levels, and the same
 * two figures against an all-black image (what a blank canvas would score).
 */
export async function compareWithScreenshot(page, gw, selector = '#screen canvas', shotPng = null) {
  const png = (shotPng ?? await screendump(gw)).toString('base64');
  return page.evaluate(async ({ sel, png }) => {
    const canvases = [...document.querySelectorAll(sel)].filter((c) => c.width > 0 && c.height > 0);
    const c = canvases.sort((a, b) => b.width * b.height - a.width * a.height)[0];
    const img = new Image();
    img.src = `data:image/png;base64,${png}`;
    await img.decode();
    const ref = document.createElement('canvas');
    ref.width = img.naturalWidth;
    ref.height = img.naturalHeight;
    ref.getContext('2d').drawImage(img, 0, 0);
    const out = { width: c.width, height: c.height, shotWidth: ref.width, shotHeight: ref.height };
    if (c.width !== ref.width || c.height !== ref.height) return out;
    const a = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    const b = ref.getContext('2d').getImageData(0, 0, ref.width, ref.height).data;
    const blocks = (data) => {
      const res = [];
      for (let by = 0; by + 8 <= c.height; by += 8) {
        for (let bx = 0; bx + 8 <= c.width; bx += 8) {
          let sum = 0;
          for (let y = by; y < by + 8; y++) {
            for (let x = bx; x < bx + 8; x++) {
              const i = (y * c.width + x) * 4;
              sum += 0.299 * data[i] + 0.587 * data[i + 1] + 0.114 * data[i + 2];
            }
          }
          res.push(sum / 64);
        }
      }
      return res;
    };
    const ba = blocks(a);
    const bb = blocks(b);
    const score = (x, y) => {
      let total = 0;
      let bad = 0;
      for (let i = 0; i < x.length; i++) {
        const d = Math.abs(x[i] - y[i]);
        total += d;
        if (d > 24) bad++;
      }
      return { mean: total / x.length, bad };
    };
    const same = score(ba, bb);
    const black = score(ba, ba.map(() => 0));
    return { ...out, blocks: ba.length, meanDiff: same.mean, badBlocks: same.bad, blackMeanDiff: black.mean, blackBadBlocks: black.bad };
  }, { sel: selector, png });
}

/** A test file's `gateway demo` and browser, started together (for its `before`). */
export async function startGatewayAndBrowser(opts) {
  const [gw, browser] = await Promise.all([startGateway(opts), launchBrowser()]);
  return { gw, browser };
}

/** Stops what [`startGatewayAndBrowser`] started (for its `after`); either may be unset. */
export async function stopGatewayAndBrowser(gw, browser) {
  await browser?.close();
  await gw?.stop();
}
