// The admin web console (admin listener, `/`): the same admin API that scripts use,
// with the bearer token kept in sessionStorage. VMs and their power, guest IPs, share
// links (create, copy, QR code, revoke) and live sessions (kill).

import QRCode from 'qrcode';
import { $, h, fetchJSON, secondsUntil, formatDuration, formatDate } from './lib/util.js';
import { LAYOUTS } from './lib/layouts.gen.js';
import { setupAudit, refreshRecordings } from './admin-audit.js';

const TOKEN_KEY = 'vmgw.adminToken';
const REFRESH_MS = 5000;
const IP_REFRESH_MS = 30000;
const SHOT_REFRESH_MS = 10000;

const st = {
  token: sessionStorage.getItem(TOKEN_KEY) ?? '',
  vms: [],
  links: [],
  sessions: [],
  ips: new Map(), // vm name -> {at, list|null, error}
  shots: new Map(), // vm name -> {at, url (object URL of the PNG), pending}
  timer: null,
  busy: new Set(), // "vm:action" while a power action runs
  loading: false,
};

// ---------------------------------------------------------------------------------
// API

class ApiError extends Error {
  constructor(status, body) {
    super(body?.message ?? body?.error ?? (status ? `HTTP ${status}` : 'the admin API is unreachable'));
    this.status = status;
    this.body = body;
  }
}

async function api(method, path, body) {
  const r = await fetchJSON(path, { method, body, headers: { Authorization: `Bearer ${st.token}` } });
  if (r.status === 401) {
    signOut('The token was refused. Sign in again.');
    throw new ApiError(401, r.body);
  }
  if (!r.ok) throw new ApiError(r.status, r.body);
  return r.body;
}

// ---------------------------------------------------------------------------------
// Sign in / out

async function signIn(e) {
  e.preventDefault();
  const token = $('login-token').value.trim();
  const err = $('login-error');
  if (!token) {
    err.textContent = 'Enter the admin token.';
    return;
  }
  $('login-submit').disabled = true;
  const r = await fetchJSON('/api/v1/vms', { headers: { Authorization: `Bearer ${token}` } });
  $('login-submit').disabled = false;
  if (r.status === 401 || r.status === 403) {
    err.textContent = 'That token is not valid.';
    $('login-token').setAttribute('aria-invalid', 'true');
    return;
  }
  if (!r.ok) {
    err.textContent = r.status ? `The gateway answered HTTP ${r.status}.` : 'Cannot reach the gateway.';
    return;
  }
  st.token = token;
  sessionStorage.setItem(TOKEN_KEY, token);
  $('login-token').value = '';
  err.textContent = '';
  showApp();
}

function signOut(message = '') {
  st.token = '';
  sessionStorage.removeItem(TOKEN_KEY);
  clearTimeout(st.timer);
  $('app').hidden = true;
  $('login').hidden = false;
  $('login-error').textContent = message;
  $('login-token').focus();
}

function showApp() {
  $('login').hidden = true;
  $('app').hidden = false;
  refresh();
  refreshRecordings(true);
}

// ---------------------------------------------------------------------------------
// Refresh

async function refresh() {
  clearTimeout(st.timer);
  if (!st.token) return;
  st.loading = true;
  try {
    const [vms, links, sessions] = await Promise.all([
      api('GET', '/api/v1/vms'),
      api('GET', '/api/v1/links'),
      api('GET', '/api/v1/sessions'),
    ]);
    st.vms = Array.isArray(vms) ? vms : [];
    st.links = Array.isArray(links) ? links : [];
    st.sessions = Array.isArray(sessions) ? sessions : [];
    $('app-error').hidden = true;
    $('refresh-state').textContent = `Updated ${new Date().toLocaleTimeString()}`;
    renderVMs();
    renderLinks();
    renderSessions();
    fillVmSelect();
    refreshIPs();
    refreshShots();
  } catch (err) {
    if (err.status === 401) return;
    $('app-error').textContent = `Could not load: ${err.message}`;
    $('app-error').hidden = false;
  } finally {
    st.loading = false;
  }
  if (!document.hidden) st.timer = setTimeout(refresh, REFRESH_MS);
}

document.addEventListener('visibilitychange', () => {
  if (!document.hidden && st.token) refresh();
});

function toast(text, ms = 4000) {
  const t = $('toast');
  t.textContent = text;
  t.hidden = false;
  clearTimeout(toast.t);
  toast.t = setTimeout(() => { t.hidden = true; }, ms);
}

// ---------------------------------------------------------------------------------
// VMs

const STATE_BADGE = { running: 'badge-ok', stopped: 'badge-danger', paused: 'badge-warn', other: 'badge-warn' };
const ACTIONS = [
  { action: 'start', label: 'Start', when: ['stopped'], cls: 'primary' },
  { action: 'shutdown', label: 'Shut down', when: ['running'], confirm: 'Ask the guest of “{vm}” to shut down?' },
  { action: 'poweroff', label: 'Power off', when: ['running', 'paused', 'other'], cls: 'danger', confirm: 'Power “{vm}” off at once? Unsaved work in the guest is lost.' },
  { action: 'reset', label: 'Reset', when: ['running'], confirm: 'Reset “{vm}”? Unsaved work in the guest is lost.' },
  { action: 'suspend', label: 'Suspend', when: ['running'] },
  { action: 'resume', label: 'Resume', when: ['paused'], cls: 'primary' },
];

function vmName(vm) {
  return vm?.spec?.name ?? vm?.name ?? '';
}

function renderVMs() {
  const box = $('vms');
  // Not while the admin is choosing in a VM's menu (a re-render would close it).
  if (box.contains(document.activeElement) && document.activeElement.tagName === 'SELECT') return;
  if (!st.vms.length) {
    box.replaceChildren(h('p', { class: 'muted', text: 'No VMs are defined.' }));
    return;
  }
  box.replaceChildren(...st.vms.map(renderVM));
}

function renderVM(vm) {
  const name = vmName(vm);
  const spec = vm.spec ?? {};
  const state = vm.state ?? 'other';
  const consoles = spec.console === 'both' ? ['vnc', 'spice'] : spec.console === 'spice' ? ['spice'] : ['vnc'];
  const ipInfo = st.ips.get(name);
  let ipText = '';
  if (state !== 'running') ipText = '';
  else if (!ipInfo) ipText = 'Guest IPs: …';
  else if (ipInfo.list?.length) ipText = `Guest IPs: ${ipInfo.list.map((a) => `${a.address}${a.prefix !== undefined ? `/${a.prefix}` : ''} (${a.interface})`).join(', ')}`;
  else if (ipInfo.error) ipText = `Guest IPs: ${ipInfo.error}`;
  else ipText = 'Guest IPs: none reported';

  const details = [
    spec.vcpus ? `${spec.vcpus} vCPU` : '',
    spec.memory_mib ? `${spec.memory_mib} MiB` : '',
    spec.console ? `console ${spec.console.toUpperCase()}` : '',
    Array.isArray(spec.nics) && spec.nics.length ? `NICs ${spec.nics.map((n) => n.model ?? '?').join(', ')}` : '',
  ].filter(Boolean).join(' · ');

  const actions = ACTIONS.filter((a) => a.when.includes(state)).map((a) =>
    h('button', {
      type: 'button',
      class: `small ${a.cls ?? 'secondary'}`,
      'data-action': a.action,
      disabled: st.busy.has(`${name}:${a.action}`),
      'aria-label': `${a.label} ${name}`,
      text: st.busy.has(`${name}:${a.action}`) ? `${a.label}…` : a.label,
      onclick: () => vmAction(name, a),
    }),
  );
  const consoleButtons = consoles.map((c) =>
    h('button', {
      type: 'button',
      class: 'small secondary',
      'data-console': c,
      'aria-label': `Open the ${c.toUpperCase()} console of ${name}`,
      title: 'Opens a 1-hour link in a new tab',
      text: consoles.length > 1 ? `${c.toUpperCase()} console` : 'Console',
      onclick: () => openConsole(name, c),
    }),
  );
  return h('article', { class: 'vm-card', 'data-vm': name, 'data-state': state, 'aria-label': `VM ${name}` },
    h('div', { class: 'vm-head' },
      h('h3', { class: 'vm-title', text: name }),
      h('span', { class: `badge ${STATE_BADGE[state] ?? ''}`, 'data-role': 'state', text: state }),
    ),
    h('p', { class: 'vm-details muted small', text: details }),
    state === 'running' && st.shots.get(name)?.url
      ? h('img', { class: 'vm-thumb', src: st.shots.get(name).url, alt: `Screen of ${name}`, 'data-role': 'screen' })
      : null,
    vm.exit_reason && state === 'stopped' ? h('p', { class: 'vm-details muted small', text: `Last stop: ${vm.exit_reason}` }) : null,
    ipText ? h('p', { class: 'vm-ips small', text: ipText }) : null,
    keyboardLayoutField(name, spec.keyboard_layout ?? null),
    h('div', { class: 'vm-actions' }, ...actions, ...consoleButtons,
      h('button', {
        type: 'button',
        class: 'small secondary',
        'data-console': 'serial',
        'aria-label': `Open the serial console of ${name}`,
        title: 'The serial port in a text terminal; opens a 1-hour link in a new tab',
        text: 'Serial console',
        onclick: () => openConsole(name, 'serial'),
      }),
      h('button', { type: 'button', class: 'small ghost', text: 'Share…', 'aria-label': `Create a share link for ${name}`, onclick: () => prefillLink(name, consoles[0]) })),
  );
}

/**
 * The guest's keyboard layout: the console pages type "type text" and the on-screen
 * keys for it. Changing it applies to consoles opened (or reconnected) afterwards.
 */
function keyboardLayoutField(name, current) {
  const id = `kbd-${name}`;
  const select = h('select', {
    id,
    class: 'small',
    'data-role': 'keyboard-layout',
    onchange: async (e) => {
      const value = e.target.value || null;
      e.target.disabled = true;
      try {
        await api('PATCH', `/api/v1/vms/${encodeURIComponent(name)}`, { keyboard_layout: value });
        toast(value ? `Keyboard layout of ${name}: ${LAYOUTS[value].label}.` : `Keyboard layout of ${name} cleared (US assumed).`);
      } catch (err) {
        if (err.status !== 401) toast(`Could not set the keyboard layout of ${name}: ${err.message}`, 6000);
      } finally {
        e.target.blur();
        refresh();
      }
    },
  },
  h('option', { value: '', text: 'Not set (English, US)' }),
  ...Object.entries(LAYOUTS).map(([k, l]) => h('option', { value: k, text: `${l.label} (${k})`, selected: k === current })));
  return h('p', { class: 'vm-kbd small' },
    h('label', { for: id, title: 'The layout the guest uses: “Type text” and the on-screen keys of its consoles type for it', text: 'Guest keyboard: ' }),
    select);
}

async function vmAction(name, a) {
  if (a.confirm && !window.confirm(a.confirm.replace('{vm}', name))) return;
  const key = `${name}:${a.action}`;
  st.busy.add(key);
  renderVMs();
  try {
    await api('POST', `/api/v1/vms/${encodeURIComponent(name)}/actions/${a.action}`);
    toast(`${a.label}: done for ${name}.`);
    st.ips.delete(name);
  } catch (err) {
    if (err.status !== 401) toast(`${a.label} failed for ${name}: ${err.message}`, 6000);
  } finally {
    st.busy.delete(key);
    refresh();
  }
}

async function refreshIPs() {
  const now = Date.now();
  for (const vm of st.vms) {
    const name = vmName(vm);
    if (vm.state !== 'running') {
      st.ips.delete(name);
      continue;
    }
    const cur = st.ips.get(name);
    if (cur && (cur.pending || now - cur.at < IP_REFRESH_MS)) continue;
    st.ips.set(name, { ...(cur ?? {}), pending: true, at: now });
    fetchJSON(`/api/v1/vms/${encodeURIComponent(name)}/ip`, { headers: { Authorization: `Bearer ${st.token}` } }).then((r) => {
      let entry;
      if (r.ok && Array.isArray(r.body)) entry = { list: r.body };
      else if (r.status === 409) entry = { error: 'guest agent not running' };
      else if (r.status === 404) entry = { error: 'not available from this gateway' };
      else entry = { error: r.body?.message ?? `HTTP ${r.status}` };
      st.ips.set(name, { ...entry, at: Date.now(), pending: false });
      renderVMs();
    });
  }
}

/** Screen thumbnails of running VMs (the screenshot API, refreshed every 10 s). */
function refreshShots() {
  const now = Date.now();
  for (const [name, shot] of st.shots) {
    if (!st.vms.some((vm) => vmName(vm) === name && vm.state === 'running')) {
      if (shot.url) URL.revokeObjectURL(shot.url);
      st.shots.delete(name);
    }
  }
  for (const vm of st.vms) {
    const name = vmName(vm);
    if (vm.state !== 'running') continue;
    const cur = st.shots.get(name);
    if (cur && (cur.pending || now - cur.at < SHOT_REFRESH_MS)) continue;
    st.shots.set(name, { ...(cur ?? {}), pending: true, at: now });
    fetch(`/api/v1/vms/${encodeURIComponent(name)}/screenshot`, {
      headers: { Authorization: `Bearer ${st.token}` },
      cache: 'no-store',
    })
      .then(async (r) => (r.ok && r.headers.get('content-type') === 'image/png' ? r.blob() : null))
      .catch(() => null)
      .then((blob) => {
        const old = st.shots.get(name);
        if (old?.url && blob) URL.revokeObjectURL(old.url);
        st.shots.set(name, { url: blob ? URL.createObjectURL(blob) : old?.url, at: Date.now(), pending: false });
        renderVMs();
      });
  }
}

/** Opens the VM's console in a new tab through a short admin link. */
async function openConsole(name, kind) {
  // Open the tab now (inside the click) so popup blockers allow it; point it at the
  // link once the API made one.
  const tab = window.open('about:blank', '_blank');
  try {
    const link = await api('POST', '/api/v1/links', { vm: name, console: kind, ttl_seconds: 3600, note: 'admin console', allow_power: true });
    if (tab) {
      tab.opener = null;
      tab.location.href = link.url;
    } else {
      showCreated(link, '');
      toast('Pop-ups are blocked: the console link is shown under "Create a share link".', 6000);
    }
    refresh();
  } catch (err) {
    tab?.close();
    if (err.status !== 401) toast(`Could not open the console: ${err.message}`, 6000);
  }
}

// ---------------------------------------------------------------------------------
// Create a link

function fillVmSelect() {
  const sel = $('lf-vm');
  const cur = sel.value;
  const names = st.vms.map(vmName);
  const existing = [...sel.options].map((o) => o.value);
  if (names.join('\n') !== existing.join('\n')) {
    sel.replaceChildren(...names.map((n) => h('option', { value: n, text: n })));
    if (names.includes(cur)) sel.value = cur;
  }
}

function prefillLink(name, kind) {
  $('lf-vm').value = name;
  $('lf-console').value = kind;
  $('lf-note').focus();
  $('create-title').scrollIntoView({ behavior: 'smooth', block: 'start' });
}

function toRfc3339(localValue) {
  const d = new Date(localValue);
  if (Number.isNaN(d.getTime())) return null;
  return d.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

function generatePassword() {
  const alphabet = 'abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789';
  const bytes = crypto.getRandomValues(new Uint8Array(14));
  return [...bytes].map((b) => alphabet[b % alphabet.length]).join('');
}

async function createLink(e) {
  e.preventDefault();
  const err = $('lf-error');
  err.textContent = '';
  const body = { vm: $('lf-vm').value, console: $('lf-console').value };
  if (!body.vm) {
    err.textContent = 'Choose a VM.';
    return;
  }
  const mode = document.querySelector('input[name="lf-exp"]:checked').value;
  if (mode === 'ttl') {
    const n = Number($('lf-ttl').value);
    if (!Number.isFinite(n) || n <= 0) {
      err.textContent = 'The lifetime must be a positive number.';
      $('lf-ttl').focus();
      return;
    }
    body.ttl_seconds = Math.round(n * Number($('lf-ttl-unit').value));
  } else {
    const at = toRfc3339($('lf-expires').value);
    if (!at) {
      err.textContent = 'Choose the expiry date and time.';
      $('lf-expires').focus();
      return;
    }
    if (Date.parse(at) <= Date.now()) {
      err.textContent = 'The expiry must be in the future.';
      return;
    }
    body.expires_at = at;
  }
  if ($('lf-start').value) {
    const nb = toRfc3339($('lf-start').value);
    if (!nb) {
      err.textContent = 'The start time is not valid.';
      return;
    }
    body.not_before = nb;
  }
  const password = $('lf-password').value;
  if (password) body.password = password;
  for (const [id, key] of [['lf-uses', 'max_uses'], ['lf-viewers', 'max_viewers']]) {
    const v = $(id).value.trim();
    if (v) {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1) {
        err.textContent = `${key === 'max_uses' ? 'Max. uses' : 'Max. viewers'} must be a whole number of at least 1.`;
        $(id).focus();
        return;
      }
      body[key] = n;
    }
  }
  body.view_only = $('lf-viewonly').checked;
  body.allow_power = $('lf-power').checked;
  body.clipboard = $('lf-clipboard').value;
  if ($('lf-record').checked) body.record = true;
  const note = $('lf-note').value.trim();
  if (note) body.note = note;

  $('lf-submit').disabled = true;
  try {
    const link = await api('POST', '/api/v1/links', body);
    showCreated(link, password);
    $('lf-password').value = '';
    $('lf-note').value = '';
    refresh();
  } catch (ex) {
    if (ex.status !== 401) err.textContent = `Not created: ${ex.message}`;
  } finally {
    $('lf-submit').disabled = false;
  }
}

/** How the clipboard policies read in the admin console. */
const CLIPBOARD_LABELS = { to_guest: 'paste in', from_guest: 'copy out', both: 'both ways', none: 'none' };

function showCreated(link, password) {
  $('created').hidden = false;
  $('created').dataset.linkId = link.id ?? '';
  $('created-url').value = link.url ?? '';
  const parts = [`Expires ${formatDate(link.expires_at)}.`];
  if (link.not_before) parts.push(`Opens ${formatDate(link.not_before)}.`);
  if (password) parts.push('Send the password separately from the link.');
  if (link.view_only) parts.push('View only.');
  if (link.clipboard && link.clipboard !== 'none') parts.push(`Clipboard: ${CLIPBOARD_LABELS[link.clipboard] ?? link.clipboard}.`);
  $('created-info').textContent = parts.join(' ');
  $('created-qr').hidden = true;
  $('created-qr').replaceChildren();
  $('created-qr-btn').setAttribute('aria-expanded', 'false');
  $('created-url').focus();
  $('created-url').select();
}

async function copyCreated() {
  const url = $('created-url').value;
  try {
    await navigator.clipboard.writeText(url);
    toast('Link copied.');
  } catch {
    $('created-url').select();
    toast('Press Ctrl+C to copy the selected link.');
  }
}

async function toggleQR() {
  const box = $('created-qr');
  const show = box.hidden;
  $('created-qr-btn').setAttribute('aria-expanded', String(show));
  if (!show) {
    box.hidden = true;
    return;
  }
  const canvas = h('canvas', { role: 'img', 'aria-label': 'QR code of the share link' });
  await QRCode.toCanvas(canvas, $('created-url').value, { margin: 2, width: 256, errorCorrectionLevel: 'M' });
  box.replaceChildren(canvas);
  box.hidden = false;
}

// ---------------------------------------------------------------------------------
// Links and sessions

function linkStatus(l) {
  if (l.revoked) return { key: 'revoked', label: 'revoked', cls: 'badge-danger' };
  if (secondsUntil(l.expires_at) <= 0) return { key: 'expired', label: 'expired', cls: 'badge-danger' };
  if (l.not_before && secondsUntil(l.not_before) > 0) return { key: 'later', label: 'not open yet', cls: 'badge-warn' };
  if (l.max_uses && l.uses >= l.max_uses) return { key: 'used', label: 'used up', cls: 'badge-warn' };
  return { key: 'active', label: 'active', cls: 'badge-ok' };
}

function renderLinks() {
  const showOld = !$('links-hide-old').checked;
  const links = [...st.links]
    .sort((a, b) => String(b.created_at ?? '').localeCompare(String(a.created_at ?? '')))
    .filter((l) => showOld || ['active', 'later', 'used'].includes(linkStatus(l).key) || (l.live_sessions ?? 0) > 0);
  $('links-empty').hidden = links.length > 0;
  $('links-body').replaceChildren(...links.map((l) => {
    const s = linkStatus(l);
    const left = secondsUntil(l.expires_at);
    const badges = [h('span', { class: `badge ${s.cls}`, text: s.label })];
    if (l.view_only) badges.push(h('span', { class: 'badge badge-info', text: 'view only' }));
    if (l.has_password) badges.push(h('span', { class: 'badge', text: 'password' }));
    if (l.allow_power) badges.push(h('span', { class: 'badge', text: 'power' }));
    if (l.clipboard && l.clipboard !== 'none') badges.push(h('span', { class: 'badge', text: `clipboard ${CLIPBOARD_LABELS[l.clipboard] ?? l.clipboard}` }));
    return h('tr', { 'data-link-id': l.id },
      h('td', { 'data-label': 'Link' },
        h('div', { class: 'cell-title', text: l.note || '(no note)' }),
        h('code', { class: 'muted small', text: l.id })),
      h('td', { 'data-label': 'VM', text: `${l.vm} · ${String(l.console ?? '').toUpperCase()}` }),
      h('td', { 'data-label': 'Expires', title: formatDate(l.expires_at), text: left > 0 ? `in ${formatDuration(left)}` : formatDate(l.expires_at) }),
      h('td', { 'data-label': 'Uses', text: `${l.uses ?? 0}${l.max_uses ? ` / ${l.max_uses}` : ''}` }),
      h('td', { 'data-label': 'Live', text: `${l.live_sessions ?? 0}${l.max_viewers ? ` / ${l.max_viewers}` : ''}` }),
      h('td', { 'data-label': 'Status' }, h('div', { class: 'badges' }, ...badges)),
      h('td', { class: 'actions' },
        l.revoked ? null : h('button', { type: 'button', class: 'small danger', 'aria-label': `Revoke link ${l.note || l.id}`, text: 'Revoke', onclick: () => revokeLink(l) })),
    );
  }));
}

async function revokeLink(l) {
  const live = l.live_sessions ?? 0;
  const msg = `Revoke the link “${l.note || l.id}”?${live ? ` It ends ${live} live session(s) now.` : ''} This cannot be undone.`;
  if (!window.confirm(msg)) return;
  try {
    await api('DELETE', `/api/v1/links/${encodeURIComponent(l.id)}`);
    toast('Link revoked.');
  } catch (err) {
    if (err.status !== 401) toast(`Revoke failed: ${err.message}`, 6000);
  }
  refresh();
}

function humanBytes(n) {
  const v = Number(n) || 0;
  if (v < 1024) return `${v} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let x = v;
  let i = -1;
  do {
    x /= 1024;
    i++;
  } while (x >= 1024 && i < units.length - 1);
  return `${x.toFixed(x < 10 ? 1 : 0)} ${units[i]}`;
}

function renderSessions() {
  const notes = new Map(st.links.map((l) => [l.id, l.note || l.id]));
  $('sessions-empty').hidden = st.sessions.length > 0;
  $('sessions-body').replaceChildren(...st.sessions.map((s) => {
    const since = -secondsUntil(s.started_at);
    return h('tr', { 'data-session-id': s.id, 'data-link-id': s.link_id },
      h('td', { 'data-label': 'Session' }, h('code', { class: 'small', text: s.id })),
      h('td', { 'data-label': 'VM', text: s.vm ?? '' }),
      h('td', { 'data-label': 'Link', text: notes.get(s.link_id) ?? s.link_id ?? '' }),
      h('td', { 'data-label': 'Client', text: s.client ?? '' }),
      h('td', { 'data-label': 'Since', title: formatDate(s.started_at), text: Number.isNaN(since) ? '' : `${formatDuration(since)} ago` }),
      h('td', { 'data-label': 'Traffic', text: `↓ ${humanBytes(s.bytes_to_client)} · ↑ ${humanBytes(s.bytes_to_console)}` }),
      h('td', { class: 'actions' },
        h('button', { type: 'button', class: 'small danger', 'aria-label': `Kill session ${s.id}`, text: 'Kill', onclick: () => killSession(s) })),
    );
  }));
}

async function killSession(s) {
  if (!window.confirm(`End the session ${s.id} of ${s.client ?? 'a visitor'} now?`)) return;
  try {
    await api('DELETE', `/api/v1/sessions/${encodeURIComponent(s.id)}`);
    toast('Session ended.');
  } catch (err) {
    if (err.status !== 401) toast(`Kill failed: ${err.message}`, 6000);
  }
  refresh();
}

// ---------------------------------------------------------------------------------

function init() {
  $('login-form').addEventListener('submit', signIn);
  $('login-token').addEventListener('input', () => $('login-token').setAttribute('aria-invalid', 'false'));
  $('btn-logout').addEventListener('click', () => signOut(''));
  $('btn-refresh').addEventListener('click', () => refresh());
  $('link-form').addEventListener('submit', createLink);
  $('lf-genpw').addEventListener('click', () => {
    $('lf-password').value = generatePassword();
  });
  $('lf-expires').addEventListener('focus', () => {
    document.querySelector('input[name="lf-exp"][value="date"]').checked = true;
  });
  $('lf-ttl').addEventListener('focus', () => {
    document.querySelector('input[name="lf-exp"][value="ttl"]').checked = true;
  });
  $('created-copy').addEventListener('click', copyCreated);
  $('created-qr-btn').addEventListener('click', toggleQR);
  $('links-hide-old').addEventListener('change', renderLinks);
  setupAudit({ api, toast, token: () => st.token });
  if (st.token) showApp();
  else {
    $('login').hidden = false;
    $('login-token').focus();
  }
}

init();
