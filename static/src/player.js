// The admin console's recording player: play, pause, seek, speed 1×/2×/4× and the
// session's time line. VNC recordings are rendered by noVNC fed the recorded
// console→visitor stream through a WebSocket-like channel; raw and serial recordings
// are replayed as text; SPICE recordings show their time line and traffic.
//
// Seeking (docs/recordings.md): RFB decoding keeps state across messages (zlib streams
// of ZRLE/Zlib, the previous frame for CopyRect and incremental updates), so a decoder
// cannot start just anywhere. VNC recordings have key points written by the gateway
// (full screen updates, with the ServerInit and zlib dictionaries in effect there): a
// seek starts a fresh decoder at the nearest key point at or before the target (when
// that is not the current position's own stretch going forward), installs the
// dictionaries into noVNC's inflaters and decodes from there to the target at full
// speed. Without a key point (recordings made before them), forward seeks decode from
// here and backward ones from the start. Text (raw/serial) replays keep key points of
// their own (the text and the position every KEY_EVERY_MS of recording, taken as the
// replay passes them). `seekBytes` is what the last seek fed the decoder.

import RFB from '@novnc/novnc';
// noVNC's own copy of pako (its inflaters' functions), for the dictionaries of key points.
import { inflateInit2, inflateSetDictionary } from '../node_modules/@novnc/novnc/vendor/pako/lib/zlib/inflate.js';
import { KIND, eventOf, keyOf, parseRecording } from './recording.js';

/** noVNC's inflater of RFB encoding `encoding` (6 Zlib, 16 ZRLE) in `rfb`, or null. */
function inflaterOf(rfb, encoding) {
  const dec = rfb?._decoders?.[encoding];
  if (encoding === 16) return dec?._inflator ?? null;
  if (encoding === 6) return dec?._zlib ?? null;
  return null;
}

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
    // Stream offset of each output record, and the key points (VNC), by time.
    let off = 0;
    this.outputAt = this.output.map((r) => { const at = off; off += r.payload.length; return at; });
    this.outputBytes = off;
    this.keyPoints = this.meta.console === 'vnc'
      ? records.filter((r) => r.kind === KIND.KEY).map((r) => ({ t: r.t, key: keyOf(r) })).filter((k) => k.key)
        .sort((a, b) => a.t - b.t)
      : [];
    this.seekBytes = 0; // bytes the last seek fed the decoder
    this.fed = 0;
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
      // The channel closed at once (inside disconnect()), before noVNC armed its
      // disconnect timer, which would fire 3 s later to log "Disconnection timed out".
      clearTimeout(this.rfb._disconnTimer);
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
      this.fed += r.payload.length;
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

  /** The nearest VNC key point at or before `t` (ms), or null. */
  keyAt(t) {
    let k = null;
    for (const c of this.keyPoints) if (c.t <= t) k = c;
    return k;
  }

  /**
   * A fresh decoder started at key point `k`: the prefix it points to (handshake and
   * ServerInit), noVNC's zlib inflaters continued from the key point's dictionaries,
   * then the stream from the key point's offset.
   */
  startAt(k) {
    const { offset, prefix, dictionaries } = k.key;
    // The output record holding the offset.
    let lo = 0;
    let hi = this.output.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.outputAt[mid] <= offset) lo = mid; else hi = mid - 1;
    }
    const r = this.output[lo];
    const within = offset - (this.outputAt[lo] ?? 0);
    if (!r || within < 0 || within > r.payload.length) return false;
    this.reset();
    for (const { encoding, dict } of dictionaries) {
      const inf = inflaterOf(this.rfb, encoding);
      if (!inf) continue; // an encoding noVNC does not decode (not negotiated)
      inflateInit2(inf.strm, -15);
      if (dict.length && inflateSetDictionary(inf.strm, dict) !== 0) throw new Error('cannot set a zlib dictionary');
    }
    // The version alone first: noVNC's handshake stops after the ProtocolVersion step
    // until the next message, and then runs up to ServerInit and stops again, leaving
    // what follows in that message unread until another message comes. So the rest of
    // the handshake comes as a message of its own, and the update as the next one.
    this.channel.push(prefix.subarray(0, 12));
    this.channel.push(prefix.subarray(12));
    this.channel.push(r.payload.subarray(within));
    this.fed += prefix.length + r.payload.length - within;
    this.pos = lo + 1;
    this.time = k.t;
    return true;
  }

  /**
   * Moves to time `t` (ms). VNC: from the nearest key point at or before `t` when going
   * back, or going forward past a key point; else from here (forward) or the start.
   */
  seek(t) {
    t = Math.max(0, Math.min(t, this.duration));
    this.fed = 0;
    const k = this.kind === 'vnc' ? this.keyAt(t) : null;
    if (k && (t < this.time || k.t > this.time)) {
      if (!this.startAt(k)) this.reset();
    } else if (t < this.time && !this.restoreKey(t)) this.reset();
    this.feedTo(t);
    this.seekBytes = this.fed;
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
