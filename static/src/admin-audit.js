// The admin console's audit trail (filters, paging, JSON lines export) and recordings
// (list, download, delete, play). Uses the admin API only: /api/v1/audit and
// /api/v1/recordings.

import { $, h, formatDate } from './lib/util.js';

const KINDS = ['link_created', 'link_redeemed', 'redeem_refused', 'password_failure', 'locked_out',
  'session_started', 'session_ended', 'link_revoked', 'session_killed', 'admin_token_created',
  'admin_token_revoked', 'admin_auth_failure', 'signing_key_rotated', 'signing_key_removed',
  'target_created', 'target_deleted', 'vm_action', 'recording_stopped', 'recording_deleted'];
const PAGE = 50;

const ctx = { api: null, toast: null, token: null };
const audit = { cursors: [], before: null, last: [] };
let player = null;

function bytes(n) {
  if (!Number.isFinite(n)) return '';
  const u = ['B', 'KiB', 'MiB', 'GiB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${u[i]}`;
}

function toRfc3339(local) {
  if (!local) return '';
  const d = new Date(local);
  return Number.isNaN(d.getTime()) ? '' : d.toISOString();
}

/** The query string of the audit filters (without paging). */
function auditFilters() {
  const q = new URLSearchParams();
  const put = (k, v) => { if (v) q.set(k, v); };
  put('link', $('af-link').value.trim());
  put('vm', $('af-vm').value.trim());
  put('kind', $('af-kind').value);
  put('client', $('af-client').value.trim());
  put('since', toRfc3339($('af-since').value));
  put('until', toRfc3339($('af-until').value));
  return q;
}

async function loadAudit() {
  const q = auditFilters();
  q.set('limit', String(PAGE));
  if (audit.before !== null) q.set('before', String(audit.before));
  let rows;
  try {
    rows = await ctx.api('GET', `/api/v1/audit?${q}`);
  } catch (err) {
    if (err.status !== 401) ctx.toast(`Audit: ${err.message}`, 6000);
    return;
  }
  audit.last = Array.isArray(rows) ? rows : [];
  $('audit-empty').hidden = audit.last.length > 0;
  $('audit-body').replaceChildren(...audit.last.map((e) => h('tr', { 'data-audit-id': String(e.id), 'data-kind': e.kind },
    h('td', { 'data-label': 'Time', text: formatDate(e.at) }),
    h('td', { 'data-label': 'Kind', text: e.kind }),
    h('td', { 'data-label': 'Link' }, e.link_id ? h('code', { class: 'small', text: e.link_id }) : ''),
    h('td', { 'data-label': 'Session' }, e.session_id ? h('code', { class: 'small', text: e.session_id }) : ''),
    h('td', { 'data-label': 'Client', text: e.client ?? '' }),
    h('td', { 'data-label': 'Detail', class: 'detail', text: e.detail ?? '' }),
    h('td', { 'data-label': 'Recording' }, e.recording_id
      ? h('button', { type: 'button', class: 'small secondary play-recording', 'data-recording-id': e.recording_id, text: 'Play', onclick: () => openPlayer(e.recording_id) })
      : ''),
  )));
  $('audit-newer').disabled = audit.cursors.length === 0;
  $('audit-older').disabled = audit.last.length < PAGE;
  $('audit-page').textContent = `page ${audit.cursors.length + 1}`;
}

async function exportAudit() {
  // The matching events (newest first, at most 10000) as one JSON-lines file.
  const q = auditFilters();
  q.set('format', 'jsonl');
  q.set('limit', '10000');
  const r = await fetch(`/api/v1/audit?${q}`, { headers: { Authorization: `Bearer ${ctx.token()}` } });
  if (!r.ok) return ctx.toast(`Export failed: HTTP ${r.status}`, 6000);
  save(await r.blob(), 'audit.jsonl');
}

function save(blob, name) {
  const url = URL.createObjectURL(blob);
  const a = h('a', { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

async function fetchFile(id) {
  const r = await fetch(`/api/v1/recordings/${encodeURIComponent(id)}/file`, { headers: { Authorization: `Bearer ${ctx.token()}` } });
  if (!r.ok) {
    let msg = `HTTP ${r.status}`;
    try {
      const b = await r.json();
      msg = b.error === 'recording_elsewhere' ? `the file is on gateway ${b.gateway}: open that gateway's admin console` : (b.message ?? b.error ?? msg);
    } catch { /* not JSON */ }
    throw new Error(msg);
  }
  return r.arrayBuffer();
}

export async function refreshRecordings(withAudit = false) {
  let recs;
  try {
    recs = await ctx.api('GET', '/api/v1/recordings');
  } catch (err) {
    if (err.status !== 401) ctx.toast(`Recordings: ${err.message}`, 6000);
    return;
  }
  recs = Array.isArray(recs) ? recs : [];
  $('rec-empty').hidden = recs.length > 0;
  $('rec-body').replaceChildren(...recs.map((r) => h('tr', { 'data-recording-id': r.id },
    h('td', { 'data-label': 'Started', text: formatDate(r.started_at) }),
    h('td', { 'data-label': 'VM', text: r.vm }),
    h('td', { 'data-label': 'Console', text: r.channel ? `${r.console}/${r.channel}` : r.console }),
    h('td', { 'data-label': 'Link' }, h('code', { class: 'small', text: r.link_id })),
    h('td', { 'data-label': 'Gateway', text: r.gateway }),
    h('td', { 'data-label': 'Status', title: r.detail ?? '', text: r.status }),
    h('td', { 'data-label': 'Size', text: bytes(r.bytes) }),
    h('td', { class: 'actions' },
      h('button', { type: 'button', class: 'small primary', text: 'Play', onclick: () => openPlayer(r.id) }),
      h('button', { type: 'button', class: 'small secondary', text: 'Download', onclick: () => download(r) }),
      h('button', { type: 'button', class: 'small danger', text: 'Delete', onclick: () => remove(r) })),
  )));
  if (withAudit) loadAudit();
}

async function download(r) {
  try {
    save(new Blob([await fetchFile(r.id)]), r.file);
  } catch (err) {
    ctx.toast(`Download failed: ${err.message}`, 6000);
  }
}

async function remove(r) {
  if (!window.confirm(`Delete the recording of session ${r.session_id}?`)) return;
  try {
    await ctx.api('DELETE', `/api/v1/recordings/${encodeURIComponent(r.id)}`);
    ctx.toast('Recording deleted.');
  } catch (err) {
    if (err.status !== 401) ctx.toast(`Delete failed: ${err.message}`, 6000);
  }
  refreshRecordings();
}

function clock(ms) {
  const s = Math.floor(ms / 1000);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
}

function updatePlayer(p) {
  $('player-seek').max = String(Math.ceil(p.duration));
  $('player-seek').value = String(Math.floor(p.time));
  $('player-time').textContent = `${clock(p.time)} / ${clock(p.duration)}${p.tail !== 'clean' ? ` (cut: ${p.tail})` : ''}`;
  $('player-play').textContent = p.playing ? 'Pause' : 'Play';
  $('player').dataset.time = String(Math.floor(p.time));
  $('player').dataset.playing = String(p.playing);
  // What the last seek cost (bytes fed to the decoder), of how much, and the key points.
  $('player').dataset.seekBytes = String(p.seekBytes ?? 0);
  $('player').dataset.streamBytes = String(p.outputBytes ?? 0);
  $('player').dataset.keyPoints = String(p.keyPoints?.length ?? 0);
}

export async function openPlayer(id) {
  closePlayer();
  let buf;
  try {
    buf = await fetchFile(id);
  } catch (err) {
    return ctx.toast(`Cannot play: ${err.message}`, 8000);
  }
  const { Player } = await import('./player.js');
  const dlg = $('player');
  dlg.dataset.recordingId = id;
  if (!dlg.open) dlg.showModal();
  player = new Player($('player-screen'), buf, updatePlayer);
  dlg.dataset.duration = String(Math.ceil(player.duration));
  $('player-title').textContent = `Recording of ${player.meta.vm ?? ''} (${player.meta.console ?? ''}${player.meta.channel ? `/${player.meta.channel}` : ''}), ${formatDate(player.meta.started_at)}`;
  // The session's time line: its events, and when the visitor's messages (input, screen
  // update requests) reached the console.
  const marks = [...player.events.map((e) => ({ t: e.t, text: e.ev?.event === 'end' ? `session ended (${e.ev.reason})` : `recording stopped (${e.ev?.reason ?? '?'})` }))];
  const bursts = [];
  for (const t of player.inputs) if (!bursts.length || t - bursts[bursts.length - 1] > 2000) bursts.push(t);
  for (const t of bursts.slice(0, 200)) marks.push({ t, text: 'visitor messages' });
  marks.sort((a, b) => a.t - b.t);
  $('player-timeline').replaceChildren(...marks.map((m) => h('li', {},
    h('button', { type: 'button', class: 'ghost small', text: `${clock(m.t)} ${m.text}`, onclick: () => player?.seek(m.t) }))));
  updatePlayer(player);
  player.play();
}

function closePlayer() {
  player?.destroy();
  player = null;
  const dlg = $('player');
  if (dlg.open) dlg.close();
}

/** Wires the panels; `api` and `toast` are the admin console's. */
export function setupAudit({ api, toast, token }) {
  Object.assign(ctx, { api, toast, token });
  $('af-kind').append(...KINDS.map((k) => h('option', { value: k, text: k })));
  $('audit-form').addEventListener('submit', (e) => {
    e.preventDefault();
    audit.cursors = [];
    audit.before = null;
    loadAudit();
  });
  $('audit-older').addEventListener('click', () => {
    const last = audit.last[audit.last.length - 1];
    if (!last) return;
    audit.cursors.push(audit.before);
    audit.before = last.id;
    loadAudit();
  });
  $('audit-newer').addEventListener('click', () => {
    if (!audit.cursors.length) return;
    audit.before = audit.cursors.pop();
    loadAudit();
  });
  $('af-export').addEventListener('click', exportAudit);
  $('rec-refresh').addEventListener('click', () => refreshRecordings(true));
  $('player-close').addEventListener('click', closePlayer);
  $('player').addEventListener('close', () => { player?.destroy(); player = null; });
  $('player-play').addEventListener('click', () => (player?.playing ? player.pause() : player?.play()));
  $('player-speed').addEventListener('change', (e) => player?.setSpeed(Number(e.target.value)));
  $('player-seek').addEventListener('input', (e) => player?.seek(Number(e.target.value)));
}
