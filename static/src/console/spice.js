// The SPICE console: spice-html5's SpiceMainConn. Each SPICE channel is its own
// WebSocket to the same ws_path; the gateway tells them apart by the link message.
// The main channel's WebSocket close code carries the gateway's reason.

import { SpiceMainConn } from '@spice-project/spice-html5/src/main.js';
import { SpiceConn } from '@spice-project/spice-html5/src/spiceconn.js';
import { SpiceMiniData, SpiceMsgcKeyDown, SpiceMsgcKeyUp } from '@spice-project/spice-html5/src/spicemsg.js';
import { Constants } from '@spice-project/spice-html5/src/enums.js';
import { SCANCODES } from '../lib/keys.js';
import { textToKeyEvents, DEFAULT_LAYOUT } from '../lib/layouts.js';
import { addClipboard } from './spice-clipboard.js';
import { installSpiceFixes } from './spice-fixes.js';

// spice-html5 sends about one ticket in 256 one byte short (the server then refuses that
// channel), and a refused channel throws from its connect timer 30 s later: see
// spice-fixes.js.
installSpiceFixes(SpiceConn);

let seq = 0;

export class SpiceConsole {
  constructor(target, o) {
    this.kind = 'spice';
    this.target = target;
    this.o = o;
    this.sc = null;
    this.closed = false;
    this.connected = false;
    this.scaleMode = 'fit';
    this.screenId = `spice-screen-${++seq}`;
    this._observer = null;
    this.layout = o.layout ?? DEFAULT_LAYOUT; // the guest's keyboard layout
  }

  connect() {
    this.target.replaceChildren();
    const screen = document.createElement('div');
    screen.id = this.screenId;
    screen.className = 'spice-screen';
    this.target.append(screen);
    this.screen = screen;
    let opened = false;
    this.sc = new SpiceMainConn({
      uri: this.o.url,
      screen_id: this.screenId,
      // QEMU's SPICE server runs without a ticket behind the gateway; the visitor's
      // password was checked by the gateway itself.
      password: '',
      onerror: (e) => {
        this.lastError = String(e?.message ?? e ?? '');
      },
      onsuccess: () => {
        this.connected = true;
        this.o.onConnect?.();
      },
    });
    // The clipboard over the guest agent (the gateway enforces the link's policy).
    this.clip = addClipboard(this.sc, { onGuestText: (text) => this.o.onClipboard?.(text) });
    const ws = this.sc.ws;
    ws.addEventListener('open', () => { opened = true; });
    ws.addEventListener('close', (e) => {
      const info = { code: e.code, reason: e.reason, clean: e.wasClean, opened };
      setTimeout(() => this._finish(info), 0);
    });
    // The display channel adds its canvas later: watch for it to scale and focus it.
    this._observer = new MutationObserver(() => this.applyScale());
    this._observer.observe(screen, { childList: true });
    this._onResize = () => this.applyScale();
    window.addEventListener('resize', this._onResize);
    if (this.o.viewOnly) {
      // Belt and braces: the gateway refuses the inputs channel of view-only links.
      screen.classList.add('view-only');
    }
  }

  _finish(info) {
    if (this.closed) return;
    this.closed = true;
    this.connected = false;
    this._teardown();
    this.o.onClose?.(info);
  }

  _teardown() {
    this._observer?.disconnect();
    window.removeEventListener('resize', this._onResize);
    try {
      this.sc?.stop();
    } catch {
      /* already stopped */
    }
  }

  disconnect() {
    this.closed = true;
    this._teardown();
  }

  get canvas() {
    return this.screen?.querySelector('canvas');
  }

  get supportsResize() {
    return false;
  }

  focus() {
    this.canvas?.focus({ preventScroll: true });
  }

  setScale(mode) {
    this.scaleMode = mode === 'remote' ? 'fit' : mode;
    this.applyScale();
  }

  /**
   * Scales with a CSS transform, not width/height: spice-html5 takes mouse positions
   * from offsetX/offsetY, which are in the element's untransformed coordinates, so
   * pointer positions stay right at any scale.
   */
  applyScale() {
    const c = this.canvas;
    if (!c || !this.screen) return;
    const w = c.width;
    const hgt = c.height;
    this.screen.style.height = '';
    if (this.scaleMode === 'fit' && w && hgt) {
      const box = this.target.getBoundingClientRect();
      const s = Math.min(box.width / w, box.height / hgt);
      c.style.transformOrigin = '0 0';
      c.style.transform = `scale(${s})`;
      this.screen.style.width = `${Math.floor(w * s)}px`;
      this.screen.style.height = `${Math.floor(hgt * s)}px`;
      this.target.classList.add('fit');
    } else {
      c.style.transform = '';
      this.screen.style.width = `${w}px`;
      this.screen.style.height = `${hgt}px`;
      this.target.classList.remove('fit');
    }
  }

  _send(scancode, down) {
    const inputs = this.sc?.inputs;
    if (!inputs || inputs.state !== 'ready' || this.o.viewOnly) return;
    const ext = scancode > 0xff;
    const low = ext ? scancode & 0xff : scancode;
    const key = down ? new SpiceMsgcKeyDown() : new SpiceMsgcKeyUp();
    // spice-html5's encoding: plain codes as is (| 0x80 on release), extended ones as
    // 0xE0 followed by the code byte.
    key.code = ext ? 0xe0 | ((low | (down ? 0 : 0x80)) << 8) : low | (down ? 0 : 0x80);
    const msg = new SpiceMiniData();
    msg.build_msg(down ? Constants.SPICE_MSGC_INPUTS_KEY_DOWN : Constants.SPICE_MSGC_INPUTS_KEY_UP, key);
    inputs.send_msg(msg);
  }

  /** Whether the guest's clipboard agent answered on this console. */
  get clipboardAgent() {
    return !!this.clip?.agent;
  }

  /** Offers `text` to the guest's clipboard (the gateway drops it unless the link allows). */
  clipboardPaste(text) {
    if (!this.o.viewOnly) this.clip?.paste(text);
  }

  ctrlAltDel() {
    this.comboScan([SCANCODES.Control, SCANCODES.Alt, SCANCODES.Delete]);
  }

  comboScan(codes) {
    for (const c of codes) this._send(c, true);
    for (const c of [...codes].reverse()) this._send(c, false);
  }

  /** `[{keysym, code, scancode}]` as for VNC; SPICE uses the scancodes. */
  combo(keys) {
    this.comboScan(keys.map((k) => k.scancode).filter(Boolean));
  }

  key(_keysym, _code, down, scancode) {
    if (scancode) this._send(scancode, down);
  }

  /** Which characters of a text the guest's layout cannot type. */
  untypeable(text) {
    return textToKeyEvents(text, this.layout).missing;
  }

  /**
   * Types text as scancodes for the guest's keyboard layout; characters the layout
   * cannot type are left out.
   * @returns {Promise<string[]>} the characters that could not be typed
   */
  async typeText(text, { signal } = {}) {
    const { events, missing } = textToKeyEvents(text, this.layout);
    for (const e of events) {
      if (signal?.aborted || !this.connected) break;
      this._send(e.scancode, e.down);
      // SPICE key events reach the guest's PS/2 queue without flow control: pace
      // them (after each release) or a slow guest drops some.
      if (!e.down) await new Promise((r) => setTimeout(r, 15));
    }
    return missing;
  }
}
