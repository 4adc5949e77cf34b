// The admin console's recording player: play, pause, seek, speed 1×/2×/4× and the
// session's time line. VNC recordings are rendered by noVNC fed the recorded
// console→visitor stream through a WebSocket-like channel; raw and serial recordings
// are replayed as text; SPICE recordings show their time line and traffic.
//
// Seeking (docs/recordings.md): RFB decoding keeps state across messages (zlib streams
// of ZRLE/Tight, the previous frame for CopyRect and incremental updates), so a decoder
// cannot start mid-stream. A seek forward decodes from the current position to the
// target at full speed, without the recorded pacing; a seek backward restarts the
// decoder from the start at full speed. Text (raw/serial) replays keep key points (the
// text and the position every KEY_EVERY_MS of recording), so a seek backward starts
// from the nearest one. The record index (time → record) is built once.

import RFB from '@novnc/novnc';
import { KIND, eventOf, parseRecording } from './recording.js';

/** A WebSocket-like channel noVNC reads the recorded stream from (what it sends is dropped). */
class ReplayChannel {
  constructor() {
    this.binaryType = 'arraybuffer';
    this.protocol = 'binary';
    this.readyState = 'open';
    this.onopen = null;
    this.onmessage = null;
    this.onerror = null;
    this.onclose = null;
  }

  send() {}

  close() {
    if (this.readyState === 'closed') return;
    this.readyState = 'closed';
    this.onclose?.({ code: 1000, reason: 'replay', wasClean: true });
  }

  push(bytes) {
    if (this.readyState !== 'open' || !this.onmessage) return;
    this.onmessage({ data: bytes.slice().buffer });
  }
}

// Strips terminal escape sequences for the plain-text view of raw/serial recordings.
const KEY_EVERY_MS = 5000;
const ESC = /\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>78DEHMcn]|\r/g;

export class Player {
  /**
   * @param {HTMLElement} screen where the console is drawn
   * @param {ArrayBuffer} buf the recording file
   * @param {(p: Player) => void} onUpdate called when the position or state changes
   */
  constructor(screen, buf, onUpdate) {
    this.screen = screen;
    this.onUpdate = onUpdate;
    const { meta, records, tail, duration } = parseRecording(buf);
    this.meta = meta ?? {};
    this.tail = tail;
    this.duration = duration;
    this.records = records;
    // The index: every console→visitor record in time order, with its time.
    this.output = records.filter((r) => r.kind === KIND.TO_CLIENT);
    this.inputs = records.filter((r) => r.kind === KIND.TO_CONSOLE).map((r) => r.t);
    this.events = records.filter((r) => r.kind === KIND.EVENT).map((r) => ({ t: r.t, ev: eventOf(r) }));
    this.kind = this.meta.console === 'vnc' ? 'vnc' : this.meta.console === 'spice' ? 'spice' : 'text';
    this.pos = 0; // records of `output` fed
    this.time = 0; // ms
    this.speed = 1;
    this.playing = false;
    this.raf = null;
    this.keys = []; // text key points {t, pos, text}, ascending
    this.reset();
  }

  /** A fresh decoder at time 0. */
  reset() {
    this.stopDecoder();
    this.pos = 0;
    this.time = 0;
    this.screen.replaceChildren();
    if (this.kind === 'vnc') {
      this.channel = new ReplayChannel();
      this.rfb = new RFB(this.screen, this.channel, { shared: true });
      this.rfb.viewOnly = true;
      this.rfb.scaleViewport = true;
      this.rfb.background = 'rgb(17, 17, 17)';
    } else {
      this.text = document.createElement('pre');
      this.text.className = 'replay-text';
      this.textDecoder = new TextDecoder();
      this.bytesOut = 0;
      this.screen.append(this.text);
    }
  }

  stopDecoder() {
    if (this.rfb) {
      try { this.rfb.disconnect(); } catch { /* already gone */ }
      this.rfb = null;
    }
    this.channel?.close();
    this.channel = null;
  }

  /** Feeds every output record up to time `t` (ms) at once. */
  feedTo(t) {
    let textChunk = '';
    while (this.pos < this.output.length && this.output[this.pos].t <= t) {
      const r = this.output[this.pos++];
      if (this.kind === 'vnc') this.channel?.push(r.payload);
      else if (this.kind === 'text') textChunk += this.textDecoder.decode(r.payload, { stream: true });
      else this.bytesOut += r.payload.length;
    }
    if (textChunk) {
      this.text.textContent += textChunk.replace(ESC, '');
      // Keep the view bounded: the last 200000 characters.
      if (this.text.textContent.length > 250000) this.text.textContent = this.text.textContent.slice(-200000);
      this.text.scrollTop = this.text.scrollHeight;
    }
    if (this.kind === 'spice') this.text.textContent = `SPICE ${this.meta.channel ?? ''} channel: ${this.bytesOut} bytes from the console so far`;
    this.time = Math.min(t, this.duration);
    const lastKey = this.keys.length ? this.keys[this.keys.length - 1].t : 0;
    if (this.kind === 'text' && this.time >= lastKey + KEY_EVERY_MS) {
      this.keys.push({ t: this.time, pos: this.pos, text: this.text.textContent });
    }
  }

  /** Back to the nearest text key point at or before `t`; false if there is none. */
  restoreKey(t) {
    let k = null;
    for (const c of this.keys) if (c.t <= t) k = c;
    if (!k || this.kind !== 'text') return false;
    this.pos = k.pos;
    this.time = k.t;
    this.textDecoder = new TextDecoder();
    this.text.textContent = k.text;
    return true;
  }

  /** Moves to time `t` (ms): forward from here, or from the start when going back. */
  seek(t) {
    t = Math.max(0, Math.min(t, this.duration));
    if (t < this.time && !this.restoreKey(t)) this.reset();
    this.feedTo(t);
    if (this.playing) this.anchor();
    this.onUpdate?.(this);
  }

  anchor() {
    this.wallStart = performance.now();
    this.timeStart = this.time;
  }

  play() {
    if (this.playing) return;
    if (this.time >= this.duration) this.seek(0);
    this.playing = true;
    this.anchor();
    const tick = () => {
      if (!this.playing) return;
      const t = this.timeStart + (performance.now() - this.wallStart) * this.speed;
      this.feedTo(t);
      if (t >= this.duration) {
        this.playing = false;
        this.onUpdate?.(this);
        return;
      }
      this.onUpdate?.(this);
      this.raf = setTimeout(tick, 40);
    };
    tick();
  }

  pause() {
    this.playing = false;
    clearTimeout(this.raf);
    this.onUpdate?.(this);
  }

  setSpeed(s) {
    this.speed = s;
    if (this.playing) this.anchor();
  }

  destroy() {
    this.pause();
    this.stopDecoder();
    this.screen.replaceChildren();
  }
}
