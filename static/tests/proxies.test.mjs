// The share page and the console behind real reverse proxies: Debian's nginx
// (terminating TLS, X-Forwarded-For, WebSocket upgrade) and HAProxy (TCP mode, PROXY
// protocol v2) in front of `gateway --config FILE demo`. The browser opens the share
// link through the proxy and gets the VM's screen drawn; the audit log names the
// browser's address, not the proxy's (the proxies connect to the gateway from
// 127.0.0.2, the only address the gateway trusts). nginx and haproxy must be installed
// (scripts/setup.sh): these tests fail, never skip, without them.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, writeFile, readFile, rm } from 'node:fs/promises';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startGateway, launchBrowser, newPage, shot, openShare, waitForScreen, admin, sleep } from './helpers.mjs';

const PROXY_SIDE = '127.0.0.2';

let browser;
before(async () => {
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});

function tool(name) {
  for (const dir of [...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/usr/local/sbin', '/sbin']) {
    const p = join(dir, name);
    if (dir && existsSync(p)) return p;
  }
  throw new Error(`${name} is not installed: run scripts/setup.sh (it installs Debian's nginx and haproxy)`);
}

/** A free loopback port (bound and released). */
function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function canConnect(port) {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** Runs a proxy until `stop()`; resolves once it accepts connections on `port`. */
async function runProxy(name, args, port, dir, log) {
  const proc = spawn(tool(name), args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const keep = (d) => {
    output = (output + d.toString()).slice(-20000);
  };
  proc.stdout.on('data', keep);
  proc.stderr.on('data', keep);
  const exited = new Promise((r) => proc.once('exit', (code, sig) => r({ code, sig })));
  const stop = async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGKILL');
      await exited;
    }
    await rm(dir, { recursive: true, force: true }).catch(() => {});
  };
  const until = Date.now() + 10_000;
  while (!(await canConnect(port))) {
    if (proc.exitCode !== null || proc.signalCode !== null || Date.now() > until) {
      await stop();
      throw new Error(`${name} did not start listening on ${port}:\n${output}`);
    }
    await sleep(50);
  }
  return { stop, log, output: () => output };
}

/** nginx terminating TLS on `port` (the gateway's own certificate will do). */
async function startNginx(port, gw, gatewayPort) {
  const dir = await mkdtemp(join(tmpdir(), 'vmgw-nginx-'));
  const tls = join(gw.dataDir, 'tls');
  const conf = `daemon off;
master_process off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log info;
events { worker_connections 256; }
http {
    access_log ${dir}/access.log;
    client_body_temp_path ${dir}/body;
    proxy_temp_path ${dir}/proxy;
    fastcgi_temp_path ${dir}/fastcgi;
    uwsgi_temp_path ${dir}/uwsgi;
    scgi_temp_path ${dir}/scgi;
    map $http_upgrade $connection_upgrade {
        default upgrade;
        ''      close;
    }
    server {
        listen 127.0.0.1:${port} ssl;
        ssl_certificate ${tls}/self-signed.crt;
        ssl_certificate_key ${tls}/self-signed.key;
        location / {
            proxy_pass https://127.0.0.1:${gatewayPort};
            proxy_bind ${PROXY_SIDE};
            proxy_ssl_verify off;
            proxy_ssl_server_name on;
            proxy_ssl_name localhost;
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto https;
            proxy_read_timeout 300s;
        }
    }
}
`;
  await writeFile(join(dir, 'nginx.conf'), conf);
  return runProxy('nginx', ['-e', join(dir, 'error.log'), '-p', dir, '-c', join(dir, 'nginx.conf')], port, dir, join(dir, 'error.log'));
}

/** HAProxy in TCP mode on `port`, sending PROXY protocol v2 to the gateway. */
async function startHaproxy(port, gatewayPort) {
  const dir = await mkdtemp(join(tmpdir(), 'vmgw-haproxy-'));
  const conf = `global
    maxconn 256
defaults
    mode tcp
    timeout connect 5s
    timeout client 300s
    timeout server 300s
frontend visitors
    bind 127.0.0.1:${port}
    default_backend gateway
backend gateway
    source ${PROXY_SIDE}
    server gw 127.0.0.1:${gatewayPort} send-proxy-v2
`;
  await writeFile(join(dir, 'haproxy.cfg'), conf);
  return runProxy('haproxy', ['-db', '-f', join(dir, 'haproxy.cfg')], port, dir);
}

/**
 * A demo gateway configured for a proxy on `proxyPort` (its public URL, so links and
 * the allowed WebSocket origin are the proxy's), the proxy started by `start`, the share
 * link opened through it in Chromium, and the console drawn.
 */
async function consoleThrough(name, proxySettings, start) {
  tool(name);
  const [proxyPort, gatewayPort] = [await freePort(), await freePort()];
  const cfgDir = await mkdtemp(join(tmpdir(), 'vmgw-proxycfg-'));
  const config = join(cfgDir, 'gateway.toml');
  await writeFile(
    config,
    `public_url = "https://127.0.0.1:${proxyPort}"\n[proxy]\ntrusted = ["${PROXY_SIDE}/32"]\n${proxySettings}`,
  );
  let gw;
  let proxy;
  try {
    gw = await startGateway({ config, publicListen: `127.0.0.1:${gatewayPort}` });
    assert.equal(new URL(gw.info.share_url).port, String(proxyPort), 'the link points at the proxy');
    proxy = await start(proxyPort, gw, gatewayPort);
    const page = await newPage(browser);
    const sockets = [];
    page.on('websocket', (ws) => sockets.push(ws.url()));
    await openShare(page, gw.info.share_url, gw.info.password);
    const stats = await waitForScreen(page);
    assert.ok(stats.width >= 640, `canvas ${stats.width}x${stats.height}`);
    await shot(page, `proxy-${name}-console`);
    assert.ok(
      sockets.length > 0 && sockets.every((u) => new URL(u).port === String(proxyPort)),
      `the console WebSocket went through ${name}: ${sockets}`,
    );
    assert.deepEqual(page.errors, []);
    await page.context().close();
    const { status, body } = await admin(gw, 'GET', '/api/v1/audit');
    assert.equal(status, 200);
    const redeemed = body.filter((e) => e.kind === 'link_redeemed');
    assert.ok(redeemed.length > 0, `no redemption audited: ${JSON.stringify(body)}`);
    for (const e of redeemed) {
      assert.equal(e.client, '127.0.0.1', `the browser's address, not the proxy's: ${JSON.stringify(e)}`);
    }
  } catch (e) {
    if (proxy) e.message += `\n--- ${name} output ---\n${proxy.output()}`;
    if (gw) e.message += `\n--- gateway stderr ---\n${gw.stderr()}`;
    if (proxy?.log) e.message += `\n--- ${name} log ---\n${await readFile(proxy.log, 'utf8').catch(() => '')}`;
    throw e;
  } finally {
    await proxy?.stop();
    await gw?.stop();
    await rm(cfgDir, { recursive: true, force: true }).catch(() => {});
  }
}

test('the share page and console work through nginx (TLS, X-Forwarded-For, WebSocket upgrade)', { timeout: 150_000 }, async () => {
  await consoleThrough('nginx', 'client_header = "x-forwarded-for"\n', (port, gw, gatewayPort) => startNginx(port, gw, gatewayPort));
});

test('the share page and console work through HAProxy (TCP, PROXY protocol v2)', { timeout: 150_000 }, async () => {
  await consoleThrough('haproxy', 'protocol = true\nclient_header = "none"\n', (port, _gw, gatewayPort) => startHaproxy(port, gatewayPort));
});
