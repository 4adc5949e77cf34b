// The guest's keyboard layout, for "type text" and the on-screen keyboard: which key
// (PC scancode) and which modifiers type each character on that layout. The console
// sends these keys as a keyboard would (QEMU's extended key events for VNC, scancodes
// for SPICE), so the guest's own layout turns them into the characters. Characters the
// layout cannot type are reported, never sent as some other key.
//
// The tables (layouts.gen.js) come from the X keyboard database; see
// static/tools/keyboard-layouts.sh. Characters that are not on a key are typed with a
// dead key and a base letter when the result is a Latin-1 letter (é = ´ then e), and
// ^ ` ~ as their dead key then Space: compositions every OS's default tables agree on.

import KeyTable from 'novnc-core/input/keysym.js';
import keysyms from 'novnc-core/input/keysymdef.js';
import XtScancode from 'novnc-core/input/xtscancodes.js';
import { LAYOUTS } from './layouts.gen.js';

export { LAYOUTS };

/** The layout assumed when a VM names none (what QEMU and most guests default to). */
export const DEFAULT_LAYOUT = 'en-us';

export const SCAN = {
  ShiftLeft: 0x2a,
  AltRight: 0xe038,
  Enter: 0x1c,
  Tab: 0x0f,
  Space: 0x39,
};

const COMBINING = {
  dead_grave: '\u0300',
  dead_acute: '\u0301',
  dead_circumflex: '\u0302',
  dead_tilde: '\u0303',
  dead_diaeresis: '\u0308',
  dead_cedilla: '\u0327',
};
// X keysyms of the dead keys (keysymdef.h; noVNC's table has none of them).
const DEAD_KEYSYM = {
  dead_grave: 0xfe50,
  dead_acute: 0xfe51,
  dead_circumflex: 0xfe52,
  dead_tilde: 0xfe53,
  dead_diaeresis: 0xfe57,
  dead_cedilla: 0xfe5b,
};
const SPACING = { '^': 'dead_circumflex', '`': 'dead_grave', '~': 'dead_tilde' };

const CODE_OF = new Map(Object.entries(XtScancode).map(([code, sc]) => [sc, code]));

/** The `KeyboardEvent.code` of a PC scancode (what noVNC's sendKey takes). */
export function scancodeToCode(scancode) {
  return CODE_OF.get(scancode) ?? null;
}

/** A layout's name as the visitor reads it: "German (de)". */
export function layoutLabel(name) {
  const l = LAYOUTS[name];
  return l ? `${l.label} (${name})` : name;
}

/** The known layout for a name, else the default. */
export function resolveLayout(name) {
  return name && Object.hasOwn(LAYOUTS, name) ? name : DEFAULT_LAYOUT;
}

const compiled = new Map();

/**
 * A layout as lookup tables: character -> stroke, dead key name -> stroke, where a
 * stroke is `{scancode, shift, altgr, keysym}`. The lowest level wins (a character on
 * a plain key is never typed with AltGr).
 */
function compile(name) {
  let c = compiled.get(name);
  if (c) return c;
  const chars = new Map();
  const dead = new Map();
  const keys = LAYOUTS[resolveLayout(name)].keys;
  for (let level = 0; level < 4; level++) {
    for (const [scancode, ...levels] of keys) {
      const sym = levels[level];
      if (!sym) continue;
      const stroke = { scancode, shift: (level & 1) === 1, altgr: (level & 2) === 2 };
      if (sym.startsWith('dead_')) {
        if (!dead.has(sym)) dead.set(sym, { ...stroke, keysym: DEAD_KEYSYM[sym] });
      } else if (!chars.has(sym)) {
        chars.set(sym, { ...stroke, keysym: keysyms.lookup(sym.codePointAt(0)) });
      }
    }
  }
  chars.set('\n', { scancode: SCAN.Enter, shift: false, altgr: false, keysym: KeyTable.XK_Return });
  chars.set('\t', { scancode: SCAN.Tab, shift: false, altgr: false, keysym: KeyTable.XK_Tab });
  c = { chars, dead };
  compiled.set(name, c);
  return c;
}

/** The strokes that type one character on a layout, or null when it cannot be typed. */
export function strokesFor(ch, layout) {
  const { chars, dead } = compile(layout);
  const direct = chars.get(ch);
  if (direct) return [direct];
  const space = chars.get(' ');
  if (SPACING[ch] && dead.has(SPACING[ch]) && space) return [dead.get(SPACING[ch]), space];
  const cp = ch.codePointAt(0);
  if (cp >= 0xc0 && cp <= 0xff) {
    const parts = [...ch.normalize('NFD')];
    if (parts.length === 2) {
      const name = Object.keys(COMBINING).find((k) => COMBINING[k] === parts[1]);
      const base = chars.get(parts[0]);
      if (name && dead.has(name) && base) return [dead.get(name), base];
    }
  }
  return null;
}

/**
 * A text as key events on a layout: `{events: [{scancode, keysym, down}], missing}`,
 * where `missing` lists (once each) the characters the layout cannot type; they are
 * left out. "\r\n" and "\r" count as one Return.
 */
export function textToKeyEvents(text, layout) {
  const events = [];
  const missing = [];
  for (const ch of text.replace(/\r\n?/g, '\n')) {
    const strokes = strokesFor(ch, layout);
    if (!strokes) {
      if (!missing.includes(ch)) missing.push(ch);
      continue;
    }
    for (const s of strokes) events.push(...strokeEvents(s));
  }
  return { events, missing };
}

/** One stroke as events: modifiers down, key down and up, modifiers up. */
export function strokeEvents(s) {
  const mods = [];
  if (s.shift) mods.push({ scancode: SCAN.ShiftLeft, keysym: KeyTable.XK_Shift_L });
  if (s.altgr) mods.push({ scancode: SCAN.AltRight, keysym: KeyTable.XK_ISO_Level3_Shift });
  return [
    ...mods.map((m) => ({ ...m, down: true })),
    { scancode: s.scancode, keysym: s.keysym, down: true },
    { scancode: s.scancode, keysym: s.keysym, down: false },
    ...mods.reverse().map((m) => ({ ...m, down: false })),
  ];
}

/** Characters of a text the layout cannot type (each once). */
export function untypeable(text, layout) {
  return textToKeyEvents(text, layout).missing;
}
