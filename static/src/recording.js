// Reads a session recording (docs/recordings.md): 8-byte magic "VMGWREC" + version (1 or 2), then
// records `len:u32le crc:u32le body`, body = `kind:u8 t_us:u64le payload`, CRC-32/IEEE
// of the body. Reading stops at the first incomplete or bad record: everything before
// it is valid (a file cut by a crash reads up to its last complete record).

export const KIND = { META: 1, TO_CLIENT: 2, TO_CONSOLE: 3, EVENT: 4, KEY: 5 };
const MAGIC = [0x56, 0x4d, 0x47, 0x57, 0x52, 0x45, 0x43];
const VERSIONS = [1, 2];
const MAX_PAYLOAD = 1 << 20;

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[i] = c >>> 0;
  }
  return t;
})();

export function crc32(bytes) {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/**
 * Parses a recording.
 * @param {ArrayBuffer} buf
 * @returns {{meta: object|null, records: {kind:number, t:number, payload:Uint8Array, offset:number}[], tail: 'clean'|'truncated'|'corrupt', duration: number}}
 *   `t` and `duration` in milliseconds.
 */
export function parseRecording(buf) {
  const bytes = new Uint8Array(buf);
  for (let i = 0; i < MAGIC.length; i++) {
    if (bytes[i] !== MAGIC[i]) throw new Error('not a recording (bad magic)');
  }
  if (!VERSIONS.includes(bytes[MAGIC.length])) throw new Error('not a recording (unknown version)');
  const view = new DataView(buf);
  const records = [];
  let at = MAGIC.length + 1;
  let tail = 'clean';
  while (at < bytes.length) {
    if (at + 8 > bytes.length) { tail = 'truncated'; break; }
    const len = view.getUint32(at, true);
    const crc = view.getUint32(at + 4, true);
    if (len < 9 || len > 9 + MAX_PAYLOAD) { tail = 'corrupt'; break; }
    if (at + 8 + len > bytes.length) { tail = 'truncated'; break; }
    const body = bytes.subarray(at + 8, at + 8 + len);
    if (crc32(body) !== crc) { tail = 'corrupt'; break; }
    const kind = body[0];
    if (kind < 1 || kind > 5) { tail = 'corrupt'; break; }
    const tUs = Number(view.getBigUint64(at + 9, true));
    records.push({ kind, t: tUs / 1000, payload: body.subarray(9), offset: at });
    at += 8 + len;
  }
  let meta = null;
  if (records[0]?.kind === KIND.META) {
    try { meta = JSON.parse(new TextDecoder().decode(records[0].payload)); } catch { meta = null; }
  }
  const duration = records.length ? records[records.length - 1].t : 0;
  return { meta, records, tail, duration };
}

/** The JSON of an event record (or null). */
export function eventOf(rec) {
  try { return JSON.parse(new TextDecoder().decode(rec.payload)); } catch { return null; }
}

/**
 * A key point record's payload (VNC): where in the console→visitor stream a fresh
 * decoder may start, what it is fed first, and the zlib dictionaries it continues from.
 * @returns {{offset: number, prefix: Uint8Array, dictionaries: {encoding: number, dict: Uint8Array}[]}|null}
 */
export function keyOf(rec) {
  const p = rec.payload;
  const v = new DataView(p.buffer, p.byteOffset, p.byteLength);
  try {
    let at = 0;
    const offset = Number(v.getBigUint64(at, true)); at += 8;
    const n = v.getUint32(at, true); at += 4;
    if (at + n > p.length) return null;
    const prefix = p.subarray(at, at + n); at += n;
    const count = v.getUint8(at); at += 1;
    const dictionaries = [];
    for (let i = 0; i < count; i++) {
      const encoding = v.getInt32(at, true); at += 4;
      const len = v.getUint32(at, true); at += 4;
      if (len > 32768 || at + len > p.length) return null;
      dictionaries.push({ encoding, dict: p.subarray(at, at + len) }); at += len;
    }
    return at === p.length ? { offset, prefix, dictionaries } : null;
  } catch {
    return null;
  }
}
