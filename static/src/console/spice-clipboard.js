// The clipboard over the SPICE guest agent (VDAgent), for spice-html5's main channel,
// which has the agent's plumbing (start, tokens, message queue) but no clipboard. Added
// to one SpiceMainConn instance, not to the library:
//   - announces VD_AGENT_CAP_CLIPBOARD_BY_DEMAND besides spice-html5's own capabilities;
//   - reassembles the agent's messages (spice-server cuts them into 2048-byte
//     AGENT_DATA chunks; spice-html5 reads every chunk as a whole message);
//   - guest copies: its GRAB (UTF-8 text) → our REQUEST → its CLIPBOARD → onGuestText;
//   - visitor pastes: our GRAB → the guest's REQUEST → our CLIPBOARD with the text.
// The gateway enforces the link's policy on every one of these messages (what a
// direction may not carry arrives as a message of type 0, which is ignored here).

import { Constants } from '@spice-project/spice-html5/src/enums.js';

const VD = {
  CLIPBOARD: 4,
  ANNOUNCE_CAPABILITIES: 6,
  CLIPBOARD_GRAB: 7,
  CLIPBOARD_REQUEST: 8,
  CLIPBOARD_RELEASE: 9,
};
const CAP = { MOUSE_STATE: 0, MONITORS_CONFIG: 1, REPLY: 2, CLIPBOARD_BY_DEMAND: 5 };
const UTF8_TEXT = 1;
const HEADER = 20;
/** The largest agent message followed here (the gateway's default clipboard limit is 1 MiB). */
const MAX_MESSAGE = 4 * 1024 * 1024;

/** Raw bytes in the shape spice-html5's marshalling expects. */
class Raw {
  constructor(bytes) {
    this.bytes = bytes;
  }

  buffer_size() {
    return this.bytes.length;
  }

  to_buffer(a, at = 0) {
    new Uint8Array(a, at, this.bytes.length).set(this.bytes);
  }
}

function u32s(...words) {
  const b = new Uint8Array(words.length * 4);
  const dv = new DataView(b.buffer);
  words.forEach((w, i) => dv.setUint32(i * 4, w >>> 0, true));
  return b;
}

/**
 * Adds the clipboard to `sc` (a SpiceMainConn just constructed, before its main
 * channel is initialised). `onGuestText(text)` gets what the guest copies. Returns
 * `{ paste(text) }`.
 */
export function addClipboard(sc, { onGuestText }) {
  let pending = null; // the message being reassembled: { type, size, data: Uint8Array, got }
  let toSend = null; // what the visitor pasted, until the guest asks for it
  let agent = false; // whether the guest's agent announced itself on this console

  const send = (type, bytes) => sc.send_agent_message(type, new Raw(bytes));

  sc.announce_agent_capabilities = function announce(request) {
    const caps = (1 << CAP.MOUSE_STATE) | (1 << CAP.MONITORS_CONFIG) | (1 << CAP.REPLY)
      | (1 << CAP.CLIPBOARD_BY_DEMAND);
    send(VD.ANNOUNCE_CAPABILITIES, u32s(request, caps));
  };

  const onMessage = (type, data) => {
    const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
    const word = (at) => (data.byteLength >= at + 4 ? dv.getUint32(at, true) : -1);
    switch (type) {
      case VD.ANNOUNCE_CAPABILITIES:
        agent = true;
        if (word(0) > 0) sc.announce_agent_capabilities(0);
        break;
      case VD.CLIPBOARD_GRAB: {
        // The guest copied something: ask for it if it has text.
        for (let at = 0; at + 4 <= data.byteLength; at += 4) {
          if (word(at) === UTF8_TEXT) {
            send(VD.CLIPBOARD_REQUEST, u32s(UTF8_TEXT));
            break;
          }
        }
        break;
      }
      case VD.CLIPBOARD:
        if (word(0) === UTF8_TEXT) {
          const text = new TextDecoder().decode(data.subarray(4)).replace(/\0+$/, '');
          onGuestText?.(text);
        }
        break;
      case VD.CLIPBOARD_REQUEST:
        // The guest pastes what the visitor gave it.
        if (word(0) === UTF8_TEXT && toSend !== null) {
          const body = new Uint8Array(4 + toSend.length);
          body.set(u32s(UTF8_TEXT), 0);
          body.set(toSend, 4);
          send(VD.CLIPBOARD, body);
        }
        break;
      default:
        // Capabilities' replies, monitors, the gateway's fillers (type 0): nothing to do.
        break;
    }
  };

  const onChunk = (buf) => {
    const chunk = new Uint8Array(buf);
    if (pending === null) {
      if (chunk.length < HEADER) return;
      const dv = new DataView(buf);
      const type = dv.getUint32(4, true);
      const size = dv.getUint32(16, true);
      if (size > MAX_MESSAGE) {
        pending = { type: 0, size, data: null, got: 0 };
      } else {
        pending = { type, size, data: new Uint8Array(size), got: 0 };
      }
      const body = chunk.subarray(HEADER, HEADER + size);
      pending.data?.set(body, 0);
      pending.got = body.length;
    } else {
      const n = Math.min(chunk.length, pending.size - pending.got);
      pending.data?.set(chunk.subarray(0, n), pending.got);
      pending.got += n;
    }
    if (pending.got >= pending.size) {
      const { type, data } = pending;
      pending = null;
      if (data) onMessage(type, data);
    }
  };

  const original = sc.process_channel_message;
  sc.process_channel_message = function process(msg) {
    if (msg.type === Constants.SPICE_MSG_MAIN_AGENT_DATA) {
      onChunk(msg.data);
      return true;
    }
    if (msg.type === Constants.SPICE_MSG_MAIN_AGENT_DISCONNECTED
      || msg.type === Constants.SPICE_MSG_MAIN_AGENT_CONNECTED
      || msg.type === Constants.SPICE_MSG_MAIN_AGENT_CONNECTED_TOKENS) {
      pending = null;
    }
    return original.call(this, msg);
  };

  return {
    /** Whether a clipboard agent answered (a VM with both consoles has it on VNC only). */
    get agent() {
      return agent;
    },
    /** Offers `text` to the guest's clipboard (the gateway drops it unless the link allows). */
    paste(text) {
      toSend = new TextEncoder().encode(text);
      send(VD.CLIPBOARD_GRAB, u32s(UTF8_TEXT));
    },
  };
}
