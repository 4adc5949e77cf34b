// The page's fixes to spice-html5's SpiceConn (src/console/spice-fixes.js), no browser
// needed: spice-html5's own RSA-OAEP encryption and SpiceConn against a real 1024-bit key
// (the size spice-server uses), decrypted with OpenSSL (node:crypto) as spice-server does.
//
// spice-html5 sends a ciphertext whose first byte is 0 one byte short and pads it at the
// end, so the server cannot decrypt it and refuses the channel with PERMISSION_DENIED
// (seen as a channel "closed by the console", 4010, in the browser tests). The page pads
// it at the front. And a channel refused before it authenticated (view-only inputs) must
// not throw from its connect timer afterwards.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync, privateDecrypt, constants } from 'node:crypto';
import { padTicket, installSpiceFixes, TICKET_BYTES } from '../src/console/spice-fixes.js';

// spice-html5's bignum code reads `navigator` when it loads.
globalThis.navigator ??= { appName: 'node' };
const { rsa_encrypt: rsaEncrypt, create_rsa_from_mb: rsaFromDer } = await import('@spice-project/spice-html5/src/ticket.js');
const { SpiceConn } = await import('@spice-project/spice-html5/src/spiceconn.js');

const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 1024 });
// spice-server sends its key as SubjectPublicKeyInfo DER, 162 bytes (SPICE_TICKET_PUBKEY_BYTES).
const der = publicKey.export({ type: 'spki', format: 'der' });
const key = rsaFromDer(new Uint8Array(der).buffer, 0);

/** What `send_ticket` puts on the wire, through a stand-in WebSocket. */
function wire(sendTicket, ticket) {
  let sent = null;
  sendTicket.call({ ws: { send: (mb) => { sent = new Uint8Array(mb); } } }, ticket);
  return sent;
}

/** The server's side: the password, or null when it cannot decrypt the ticket. */
function decrypt(sent) {
  try {
    const data = Buffer.from(sent.subarray(4));
    return privateDecrypt({ key: privateKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha1' }, data).toString('latin1');
  } catch {
    return null;
  }
}

test('spice-html5 sends a ciphertext that starts with a zero byte one byte short; the page pads it in front', () => {
  assert.equal(der.length, 162);
  const original = SpiceConn.prototype.send_ticket;
  // One ciphertext in about 256 starts with 0: find one (the chance of not finding one in
  // 20,000 tries is below 1e-30).
  let short = null;
  for (let i = 0; i < 20_000 && !short; i++) {
    const t = rsaEncrypt(key, '\0');
    if (t.length < TICKET_BYTES) short = t;
  }
  assert.ok(short, 'no ciphertext with a leading zero byte in 20,000');
  assert.equal(short.length, TICKET_BYTES - 1);

  // As spice-html5 sends it: 4 + 128 bytes, the missing byte added at the end: refused.
  const broken = wire(original, short);
  assert.equal(broken.length, 4 + TICKET_BYTES);
  assert.equal(decrypt(broken), null, 'spice-html5 itself now pads the ticket right: the page fix can go');

  installSpiceFixes(SpiceConn);
  installSpiceFixes(SpiceConn); // idempotent: padded once
  const sent = wire(SpiceConn.prototype.send_ticket, short);
  assert.equal(sent.length, 4 + TICKET_BYTES);
  assert.deepEqual([...sent.subarray(0, 5)], [1, 0, 0, 0, 0], 'mechanism SPICE, then the leading zero');
  assert.equal(decrypt(sent), '\0');
});

test('every ticket the page sends decrypts', () => {
  installSpiceFixes(SpiceConn);
  let shortOnes = 0;
  for (let i = 0; i < 2000; i++) {
    const t = rsaEncrypt(key, '\0');
    if (t.length < TICKET_BYTES) shortOnes++;
    assert.equal(decrypt(wire(SpiceConn.prototype.send_ticket, t)), '\0', `ticket ${i}`);
  }
  // Full tickets are left as they are.
  const full = new Array(TICKET_BYTES).fill(7);
  assert.equal(padTicket(full), full);
  assert.equal(padTicket(null), null);
  assert.deepEqual(padTicket([1, 2], 4), [0, 0, 1, 2]);
  assert.ok(shortOnes < 100, `${shortOnes} short tickets in 2000`);
});

test('a channel whose WebSocket closed before it authenticated does not time out afterwards', () => {
  // Before the fix: spice-html5 reports the timeout, and a channel without an error
  // handler (every one but main) throws it from the timer.
  const withWs = (readyState) => ({ ws: { readyState }, log_err() {} });
  installSpiceFixes(SpiceConn);
  const timeout = SpiceConn.prototype.handle_timeout;
  // Still connecting (CONNECTING 0, OPEN 1): reported as before.
  for (const state of [0, 1]) {
    const conn = Object.assign(Object.create(SpiceConn.prototype), withWs(state));
    assert.throws(() => timeout.call(conn), /Connection timed out/);
    let reported = null;
    conn.onerror = (e) => { reported = e; };
    timeout.call(conn);
    assert.match(String(reported), /Connection timed out/);
  }
  // Closing, closed, cleaned up: nothing.
  for (const conn of [withWs(2), withWs(3), { ws: undefined }]) {
    const c = Object.assign(Object.create(SpiceConn.prototype), conn);
    assert.doesNotThrow(() => timeout.call(c));
  }
});
