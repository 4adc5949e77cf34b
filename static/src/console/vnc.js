// The VNC console: noVNC's RFB class on a WebSocket that we open ourselves, so that
// the gateway's close code and reason (revoked, expired, killed, ...) are known.
// The gateway already did the RFB security handshake with QEMU and offers "None".

import RFB from '@novnc/novnc';
import { textToSteps } from '../lib/keys.js';
import { textToKeyEvents, scancodeToCode, DEFAULT_LAYOUT } from '../lib/layouts.js';

export class VncConsole {
  /**
   * @param {HTMLElement} target the element noVNC fills with its canvas
   * @param {object} o
   * @param {string} o.url wss:// URL of the console
   * @param {boolean} o.viewOnly
   * @param {(info: {code: number, reason: string, opened: boolean, clean: boolean}) => void} o.onClose
   * @param {() => void} o.onConnect
   * @param {(name: string) => void} o.onDesktopName
   */
  constructor(target, o) {
    this.kind = 'vnc';
    this.target = target;
    this.o = o;
    this.rfb = null;
    this.ws = null;
    this.closed = false;
    this.connected = false;
    this.scaleMode = 'fit';
    this.layout = o.layout ?? DEFAULT_LAYOUT; // the guest's keyboard layout
  }

  connect() {
    const ws = new WebSocket(this.o.url, ['binary']);
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    let opened = false;
    ws.addEventListener('open', () => { opened = true; });
    // Our listener is registered before noVNC's, so it sees the close event first;
    // we report it after noVNC has handled it (next task) to keep one ordering.
    ws.addEventListener('close', (e) => {
      const info = { code: e.code, reason: e.reason, clean: e.wasClean, opened };
      setTimeout(() => this._finish(info), 0);
    });
    const rfb = new RFB(this.target, ws, { shared: true, wsProtocols: ['binary'] });
    this.rfb = rfb;
    rfb.viewOnly = !!this.o.viewOnly;
    rfb.focusOnClick = true;
    rfb.showDotCursor = true;
    rfb.background = 'rgb(17, 17, 17)';
    this.applyScale();
    rfb.addEventListener('connect', () => {
      this.connected = true;
      this.o.onConnect?.();
    });
    rfb.addEventListener('desktopname', (e) => this.o.onDesktopName?.(String(e.detail.name ?? '')));
    // Text the guest copied (only when the link lets it out: the gateway removes it
    // otherwise). Text only: it is shown in a textarea, never as HTML.
    rfb.addEventListener('clipboard', (e) => this.o.onClipboard?.(String(e.detail?.text ?? '')));
    rfb.addEventListener('credentialsrequired', () => {
      // The gateway offers security type None; being asked for credentials means
      // something in between is wrong. Do not prompt the visitor for a VNC password.
      rfb.disconnect();
    });
    rfb.addEventListener('securityfailure', (e) => {
      this.securityFailure = String(e.detail?.reason ?? '');
    });
    rfb.addEventListener('disconnect', () => {
      // The socket's close event (above) carries the code; this covers the case where
      // noVNC ends the session itself without a close frame from the gateway.
      setTimeout(() => this._finish({ code: this.ws?.readyState === WebSocket.CLOSED ? 1006 : 1000, reason: '', clean: false, opened: this.connected }), 50);
    });
  }

  _finish(info) {
    if (this.closed) return;
    this.closed = true;
    this.connected = false;
    this.o.onClose?.(info);
  }

  /** Ends the connection without reporting a close (we initiated it). */
  disconnect() {
    if (this.closed) return;
    this.closed = true;
    try {
      this.rfb?.disconnect();
    } catch {
      /* already gone */
    }
  }

  focus() {
    this.rfb?.focus({ preventScroll: true });
  }

  get canvas() {
    return this.target.querySelector('canvas');
  }

  /** Whether the server accepts desktop size changes (ExtendedDesktopSize). */
  get supportsResize() {
    // noVNC keeps this private; it is set once the server announced the encoding.
    return !!this.rfb?._supportsSetDesktopSize;
  }

  /** 'fit' (scale to the window), 'native' (1:1, scroll), 'remote' (resize the guest). */
  setScale(mode) {
    this.scaleMode = mode;
    this.applyScale();
  }

  applyScale() {
    if (!this.rfb) return;
    this.rfb.scaleViewport = this.scaleMode === 'fit';
    this.rfb.clipViewport = false;
    this.rfb.resizeSession = this.scaleMode === 'remote';
  }

  /** Offers `text` to the guest's clipboard (the gateway drops it unless the link allows). */
  clipboardPaste(text) {
    this.rfb?.clipboardPasteFrom(text);
  }

  ctrlAltDel() {
    this.rfb?.sendCtrlAltDel();
  }

  /** Presses keys in order and releases them in reverse: `[{keysym, code}]`. */
  combo(keys) {
    if (!this.rfb) return;
    for (const k of keys) this.rfb.sendKey(k.keysym, k.code, true);
    for (const k of [...keys].reverse()) this.rfb.sendKey(k.keysym, k.code, false);
  }

  key(keysym, code, down) {
    this.rfb?.sendKey(keysym, code ?? null, down);
  }

  /**
   * Whether QEMU takes key events as scancodes (its extended key event): then keys are
   * typed for the guest's layout. Other VNC servers get keysyms (they map them).
   */
  get scancodes() {
    // noVNC keeps this private; it is set once the server announced the encoding.
    return !!this.rfb?._qemuExtKeyEventSupported;
  }

  /**
   * Types text as keystrokes on the guest's keyboard layout, paced so the guest keeps
   * up. Characters the layout cannot type are left out.
   * @returns {Promise<string[]>} the characters that could not be typed
   */
  async typeText(text, { signal } = {}) {
    if (!this.scancodes) return this._typeKeysyms(text, signal);
    const { events, missing } = textToKeyEvents(text, this.layout);
    for (let i = 0; i < events.length; i++) {
      if (signal?.aborted || !this.connected) break;
      const e = events[i];
      this.rfb.sendKey(e.keysym, scancodeToCode(e.scancode), e.down);
      // A short pause every few events: QEMU's keyboard queue is small.
      if (i % 8 === 7) await new Promise((r) => setTimeout(r, 12));
    }
    return missing;
  }

  /** Which characters of a text cannot be typed here. */
  untypeable(text) {
    return this.scancodes ? textToKeyEvents(text, this.layout).missing : textToSteps(text).missing;
  }

  async _typeKeysyms(text, signal) {
    const { steps, missing } = textToSteps(text);
    for (let i = 0; i < steps.length; i++) {
      if (signal?.aborted || !this.connected) break;
      const [keysym, down] = steps[i];
      this.rfb.sendKey(keysym, null, down);
      if (i % 8 === 7) await new Promise((r) => setTimeout(r, 12));
    }
    return missing;
  }

  set viewOnly(v) {
    if (this.rfb) this.rfb.viewOnly = !!v;
  }
}
