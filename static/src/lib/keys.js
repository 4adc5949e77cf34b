// Keyboard helpers for the console toolbar: named keysyms, key combinations, and
// "type text" as keysyms for VNC servers that take no scancodes (QEMU does: then the
// guest's layout is used, see layouts.js). Keysyms come from noVNC's tables; nothing
// here talks to a socket.

import KeyTable from 'novnc-core/input/keysym.js';
import keysyms from 'novnc-core/input/keysymdef.js';

export { KeyTable };

// Characters that need Shift on a US keyboard (what a keysym-only server most likely
// maps keysyms with); such servers do not press Shift for us.
const SHIFTED = new Set('~!@#$%^&*()_+{}|:"<>?'.split(''));

/**
 * One character as the keys to press: `{ keysym, shift }`, or null when the character
 * cannot be typed (control characters other than newline and tab).
 * @param {string} ch a single code point
 */
export function charToKey(ch) {
  if (ch === '\n' || ch === '\r') return { keysym: KeyTable.XK_Return, shift: false };
  if (ch === '\t') return { keysym: KeyTable.XK_Tab, shift: false };
  const cp = ch.codePointAt(0);
  if (cp < 0x20 || cp === 0x7f) return null;
  const keysym = keysyms.lookup(cp);
  if (!keysym) return null;
  const shift = (ch >= 'A' && ch <= 'Z') || SHIFTED.has(ch);
  return { keysym, shift };
}

/**
 * The key presses for a text: an array of `[keysym, down]` steps. "\r\n" counts as
 * one Return. Characters that cannot be typed are left out and listed (once each).
 * @returns {{steps: Array<[number, boolean]>, missing: string[]}}
 */
export function textToSteps(text) {
  const steps = [];
  const missing = [];
  const normalized = text.replace(/\r\n?/g, '\n');
  for (const ch of normalized) {
    const k = charToKey(ch);
    if (!k) {
      if (!missing.includes(ch)) missing.push(ch);
      continue;
    }
    if (k.shift) steps.push([KeyTable.XK_Shift_L, true]);
    steps.push([k.keysym, true], [k.keysym, false]);
    if (k.shift) steps.push([KeyTable.XK_Shift_L, false]);
  }
  return { steps, missing };
}

/** The special keys of the on-screen key row and the "Keys" menu. */
export const SPECIAL_KEYS = {
  Escape: { keysym: KeyTable.XK_Escape, code: 'Escape', label: 'Esc' },
  Tab: { keysym: KeyTable.XK_Tab, code: 'Tab', label: 'Tab' },
  Enter: { keysym: KeyTable.XK_Return, code: 'Enter', label: 'Enter' },
  Backspace: { keysym: KeyTable.XK_BackSpace, code: 'Backspace', label: '⌫' },
  ArrowLeft: { keysym: KeyTable.XK_Left, code: 'ArrowLeft', label: '←' },
  ArrowUp: { keysym: KeyTable.XK_Up, code: 'ArrowUp', label: '↑' },
  ArrowDown: { keysym: KeyTable.XK_Down, code: 'ArrowDown', label: '↓' },
  ArrowRight: { keysym: KeyTable.XK_Right, code: 'ArrowRight', label: '→' },
  Home: { keysym: KeyTable.XK_Home, code: 'Home', label: 'Home' },
  End: { keysym: KeyTable.XK_End, code: 'End', label: 'End' },
  PageUp: { keysym: KeyTable.XK_Prior, code: 'PageUp', label: 'PgUp' },
  PageDown: { keysym: KeyTable.XK_Next, code: 'PageDown', label: 'PgDn' },
  Delete: { keysym: KeyTable.XK_Delete, code: 'Delete', label: 'Del' },
};

export const MODIFIERS = {
  Control: { keysym: KeyTable.XK_Control_L, code: 'ControlLeft', label: 'Ctrl' },
  Alt: { keysym: KeyTable.XK_Alt_L, code: 'AltLeft', label: 'Alt' },
  Meta: { keysym: KeyTable.XK_Super_L, code: 'MetaLeft', label: 'Win' },
};

/** Ctrl+Alt+Fn as a list of `{keysym, code}`, pressed in order and released in reverse. */
export function ctrlAltF(n) {
  return [
    MODIFIERS.Control,
    MODIFIERS.Alt,
    { keysym: KeyTable.XK_F1 + (n - 1), code: `F${n}`, scancode: SCANCODES.F[n - 1] },
  ];
}

// ---- PC/AT set-1 scancodes (for SPICE, whose inputs channel takes scancodes) ----

export const SCANCODES = {
  Shift: 0x2a,
  Control: 0x1d,
  Alt: 0x38,
  Meta: 0xe05b,
  Escape: 0x01,
  Tab: 0x0f,
  Enter: 0x1c,
  Backspace: 0x0e,
  Delete: 0xe053,
  ArrowLeft: 0xe04b,
  ArrowUp: 0xe048,
  ArrowDown: 0xe050,
  ArrowRight: 0xe04d,
  Home: 0xe047,
  End: 0xe04f,
  PageUp: 0xe049,
  PageDown: 0xe051,
  F: [0x3b, 0x3c, 0x3d, 0x3e, 0x3f, 0x40, 0x41, 0x42, 0x43, 0x44, 0x57, 0x58],
};

for (const [name, k] of Object.entries(SPECIAL_KEYS)) k.scancode = SCANCODES[name];
for (const [name, k] of Object.entries(MODIFIERS)) k.scancode = SCANCODES[name];
