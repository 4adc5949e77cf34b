// The text console (serial and raw links): xterm.js on a WebSocket we open ourselves,
// so that the gateway's close code and reason are known. Bytes in both directions, as
// they are: the gateway sends the VM's recent output first, then live output; input of
// a view-only link is dropped by the gateway (and not sent by this page).
//
// xterm.js's styles come from its CSS file, bundled into share.css; the few rules it
// computes at run time go into constructed style sheets (see the CSP patch in
// build.mjs), so the page keeps its strict `style-src 'self'`.

import { Terminal } from '@xterm/xterm';
import { FitAddon } from '@xterm/addon-fit';

export class TerminalConsole {
  /**
   * @param {HTMLElement} target the element the terminal fills
   * @param {object} o
   * @param {string} o.url wss:// URL of the console
   * @param {boolean} o.viewOnly
   * @param {boolean} [o.screenReader] start in screen-reader mode
   * @param {(info: {code: number, reason: string, opened: boolean, clean: boolean}) => void} o.onClose
   * @param {() => void} o.onConnect
   */
  constructor(target, o) {
    this.kind = 'terminal';
    this.target = target;
    this.o = o;
    this.ws = null;
    this.term = null;
    this.fit = null;
    this.closed = false;
    this.connected = false;
    this.resizeObserver = null;
    this.encoder = new TextEncoder();
  }

  connect() {
    const box = document.createElement('div');
    box.className = 'terminal-box';
    this.target.replaceChildren(box);
    const term = new Terminal({
      convertEol: false,
      cursorBlink: !this.o.viewOnly,
      disableStdin: !!this.o.viewOnly,
      scrollback: 5000,
      screenReaderMode: !!this.o.screenReader,
      fontFamily: 'ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace',
      fontSize: 15,
      theme: { background: '#111111' },
    });
    this.term = term;
    // For tests and assistive tooling: the terminal of this console.
    this.target.terminal = term;
    this.fit = new FitAddon();
    term.loadAddon(this.fit);
    term.open(box);
    this.applyScale();
    this.resizeObserver = new ResizeObserver(() => this.applyScale());
    this.resizeObserver.observe(this.target);
    // Ctrl+Shift+C copies the selection (Ctrl+C is the guest's interrupt); the
    // browser's own copy (menu, Cmd+C) works on the selection too.
    term.attachCustomKeyEventHandler((e) => {
      if (e.type === 'keydown' && e.ctrlKey && e.shiftKey && e.code === 'KeyC' && term.hasSelection()) {
        navigator.clipboard?.writeText(term.getSelection()).catch(() => {});
        return false;
      }
      return true;
    });
    if (!this.o.viewOnly) {
      term.onData((d) => this._send(this.encoder.encode(d)));
      term.onBinary((d) => this._send(Uint8Array.from(d, (c) => c.charCodeAt(0) & 0xff)));
    }

    const ws = new WebSocket(this.o.url, ['binary']);
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    let opened = false;
    ws.addEventListener('open', () => {
      opened = true;
      this.connected = true;
      this.o.onConnect?.();
    });
    ws.addEventListener('message', (e) => {
      if (e.data instanceof ArrayBuffer) term.write(new Uint8Array(e.data));
    });
    ws.addEventListener('close', (e) => {
      this._finish({ code: e.code, reason: e.reason, clean: e.wasClean, opened });
    });
  }

  _send(bytes) {
    if (this.ws?.readyState === WebSocket.OPEN && bytes.length) this.ws.send(bytes);
  }

  _finish(info) {
    if (this.closed) return;
    this.closed = true;
    this.connected = false;
    this.resizeObserver?.disconnect();
    this.term?.options && (this.term.options.disableStdin = true);
    this.o.onClose?.(info);
  }

  /** Ends the connection without reporting a close (we initiated it). */
  disconnect() {
    if (this.closed) return;
    this.closed = true;
    this.connected = false;
    this.resizeObserver?.disconnect();
    try {
      this.ws?.close();
    } catch {
      /* already gone */
    }
    this.term?.dispose();
  }

  focus() {
    this.term?.focus();
  }

  /** The terminal always fits the window (a serial line has no size to negotiate). */
  get supportsResize() {
    return false;
  }

  setScale() {
    this.applyScale();
  }

  applyScale() {
    if (!this.fit || !this.target.isConnected || this.target.clientWidth === 0) return;
    try {
      this.fit.fit();
    } catch {
      /* not laid out yet */
    }
  }

  /** Screen-reader mode (xterm's accessibility tree of the terminal's text). */
  setScreenReader(on) {
    if (this.term) this.term.options.screenReaderMode = !!on;
  }

  ctrlAltDel() {}

  /** Special keys as the terminal sequences they stand for. */
  combo(keys) {
    const seq = keys.map((k) => TERMINAL_KEYS[k.code] ?? '').join('');
    if (seq && !this.o.viewOnly) this._send(this.encoder.encode(seq));
  }

  key() {}

  /** Types text as input: new lines press Enter (carriage return). */
  async typeText(text) {
    if (this.o.viewOnly) return 0;
    this._send(this.encoder.encode(text.replace(/\r?\n/g, '\r')));
    return 0;
  }
}

// What the on-screen special keys send on a terminal.
const TERMINAL_KEYS = {
  Escape: '\x1b',
  Tab: '\t',
  Enter: '\r',
  Backspace: '\x7f',
  Delete: '\x1b[3~',
  ArrowUp: '\x1b[A',
  ArrowDown: '\x1b[B',
  ArrowRight: '\x1b[C',
  ArrowLeft: '\x1b[D',
  Home: '\x1b[H',
  End: '\x1b[F',
  PageUp: '\x1b[5~',
  PageDown: '\x1b[6~',
};
