// Line icons as SVG elements (no icon font, no emoji: they render everywhere and
// need no inline style). Each icon is a list of SVG path data on a 24×24 grid.

const PATHS = {
  info: ['M12 3a9 9 0 1 0 0 18a9 9 0 1 0 0-18z', 'M12 11v6', 'M12 7.5v.5'],
  lock: ['M6 11h12v9H6z', 'M8.5 11V8a3.5 3.5 0 0 1 7 0v3', 'M12 15v2'],
  stop: ['M12 3a9 9 0 1 0 0 18a9 9 0 1 0 0-18z', 'M5.6 5.6l12.8 12.8'],
  clock: ['M12 3a9 9 0 1 0 0 18a9 9 0 1 0 0-18z', 'M12 7v5l3 2'],
  power: ['M12 3v9', 'M7 6a8 8 0 1 0 10 0'],
  warn: ['M12 3l10 18H2z', 'M12 10v5', 'M12 18v.5'],
  ok: ['M12 3a9 9 0 1 0 0 18a9 9 0 1 0 0-18z', 'M8 12.5l2.5 2.5L16 9.5'],
};

const NS = 'http://www.w3.org/2000/svg';

/** An <svg> icon element, or null for an unknown name. */
export function icon(name) {
  const paths = PATHS[name];
  if (!paths) return null;
  const svg = document.createElementNS(NS, 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('class', `icon icon-${name}`);
  for (const d of paths) {
    const p = document.createElementNS(NS, 'path');
    p.setAttribute('d', d);
    svg.append(p);
  }
  return svg;
}
