// Two fixes to spice-html5's SpiceConn, which every channel (main, display, inputs,
// cursor, ...) inherits from; installed once by the SPICE console.
//
// 1. The ticket. Every SPICE channel authenticates with a ticket: the password (empty behind the
// gateway) RSA-OAEP-encrypted with the server's 1024-bit key, sent as exactly 128 bytes.
// spice-html5 (ticket.js `rsa_encrypt`) turns the ciphertext into bytes through its hex
// digits, so a ciphertext whose first byte is 0 (about one in 256) comes out one byte
// short, and `SpiceLinkAuthTicket` then pads it with a zero at the END: the server gets
// another number, its decryption fails, and it answers SPICE_LINK_ERR_PERMISSION_DENIED
// and closes the channel (which the gateway relays as 4010 console_closed). So about one
// page load in a hundred lost a channel at random, the main one included.
//
// The fix: big-endian numbers are padded at the front.
//
// 2. The connect timeout. Each channel arms a 30-second timer when it opens its
// WebSocket and clears it once authenticated. A channel that ends before (the inputs
// channel of a view-only link, which the gateway refuses with 4011) keeps it, and 30 s
// later it throws "Connection timed out." from the timer (channels other than main have
// no error handler): an uncaught error on a page that works. A channel whose WebSocket
// has already closed has nothing left to time out.

/** `SPICE_TICKET_KEY_PAIR_LENGTH / 8`: the ticket's size on the wire. */
export const TICKET_BYTES = 128;

/**
 * The ciphertext `ticket` (bytes, most significant first, possibly with its leading
 * zero bytes left out) as the `size` bytes the server decrypts: zeros in front.
 * Anything that is not a shorter array is returned as it is.
 */
export function padTicket(ticket, size = TICKET_BYTES) {
  if (!ticket || ticket.length >= size) return ticket;
  return [...new Array(size - ticket.length).fill(0), ...ticket];
}

const INSTALLED = Symbol('vmgw-spice-fixes');

/**
 * Installs both fixes on spice-html5's `SpiceConn` (idempotent): `send_ticket` pads the
 * ticket at the front, and `handle_timeout` does nothing once the channel's WebSocket
 * is closing or closed.
 */
export function installSpiceFixes(SpiceConn) {
  const proto = SpiceConn.prototype;
  if (proto[INSTALLED]) return;
  const send = proto.send_ticket;
  proto.send_ticket = function sendTicket(ticket) {
    return send.call(this, padTicket(ticket));
  };
  const timedOut = proto.handle_timeout;
  proto.handle_timeout = function handleTimeout() {
    // WebSocket.CLOSING = 2, CLOSED = 3; `ws` is gone after cleanup().
    if (!this.ws || this.ws.readyState >= 2) return undefined;
    return timedOut.call(this);
  };
  proto[INSTALLED] = true;
}
