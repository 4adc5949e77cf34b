// Small shared helpers: DOM lookup, JSON over fetch, human dates and durations.
// Every string that reaches the page goes through textContent (never innerHTML).

/** `document.getElementById` that fails loudly when the page and script disagree. */
export function $(id) {
  const el = document.getElementById(id);
  if (!el) throw new Error(`missing element #${id}`);
  return el;
}

/** Creates an element with text content and attributes (no HTML parsing). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k in el && typeof v !== 'string') el[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/**
 * Fetches JSON. Resolves to `{status, ok, body, headers}` whatever the status; a
 * network failure resolves to `{status: 0, ok: false, body: null, error}`.
 */
export async function fetchJSON(url, { method = 'GET', body, headers = {}, signal } = {}) {
  const init = { method, headers: { Accept: 'application/json', ...headers }, signal, credentials: 'same-origin', cache: 'no-store' };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers['Content-Type'] = 'application/json';
  }
  let resp;
  try {
    resp = await fetch(url, init);
  } catch (error) {
    if (error && error.name === 'AbortError') throw error;
    return { status: 0, ok: false, body: null, headers: new Headers(), error };
  }
  let parsed = null;
  const text = await resp.text().catch(() => '');
  if (text) {
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = { message: text.slice(0, 300) };
    }
  }
  return { status: resp.status, ok: resp.ok, body: parsed, headers: resp.headers };
}

/** Seconds until an RFC 3339 time (negative when past), or NaN. */
export function secondsUntil(rfc3339) {
  const t = Date.parse(rfc3339);
  return Number.isNaN(t) ? NaN : (t - Date.now()) / 1000;
}

/** "2 d 3 h", "3 h 04 min", "12 min", "45 s". */
export function formatDuration(totalSeconds) {
  let s = Math.max(0, Math.floor(totalSeconds));
  const d = Math.floor(s / 86400);
  s -= d * 86400;
  const hrs = Math.floor(s / 3600);
  s -= hrs * 3600;
  const min = Math.floor(s / 60);
  const sec = s - min * 60;
  if (d > 0) return hrs ? `${d} d ${hrs} h` : `${d} d`;
  if (hrs > 0) return `${hrs} h ${String(min).padStart(2, '0')} min`;
  if (min >= 10) return `${min} min`;
  if (min > 0) return `${min} min ${String(sec).padStart(2, '0')} s`;
  return `${sec} s`;
}

const dateFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });
const timeFmt = new Intl.DateTimeFormat(undefined, { timeStyle: 'medium' });

/** A local, human date and time for an RFC 3339 string ("" when invalid). */
export function formatDate(rfc3339) {
  const t = Date.parse(rfc3339);
  return Number.isNaN(t) ? '' : dateFmt.format(new Date(t));
}

/** Local date+time when the day differs from today, else the time alone. */
export function formatWhen(date) {
  const now = new Date();
  return date.toDateString() === now.toDateString() ? timeFmt.format(date) : dateFmt.format(date);
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
