// The visitor's page at /s/#<token>: exchanges the token (and the password) for a
// session cookie, explains every refusal in plain words, and runs the console (noVNC
// for VNC links, spice-html5 for SPICE links, an xterm.js terminal for serial and raw
// links) with its toolbar. Reconnects by itself
// after network blips while the link is valid; stops for good on revoke, expiry or kill.

import { $, h, fetchJSON, secondsUntil, formatDuration, formatDate, formatWhen, sleep } from './lib/util.js';
import { icon } from './lib/icons.js';
import { SPECIAL_KEYS, MODIFIERS, ctrlAltF, charToKey } from './lib/keys.js';
import { resolveLayout, layoutLabel, strokesFor, scancodeToCode, SCAN } from './lib/layouts.js';

// ---------------------------------------------------------------------------------
// State

const state = {
  token: '',
  password: null, // kept in memory only, to re-open a session without asking again
  session: null, // the 200 answer of POST /s/session
  console: null, // VncConsole | SpiceConsole
  consoleModule: null,
  final: false, // a final message is shown: no more reconnects
  backoff: 0, // reconnect attempt number since the last good connection
  failedOpens: 0, // WebSockets that closed before opening, in a row
  everConnected: false,
  reconnectTimer: null,
  pollTimer: null,
  tickTimer: null,
  scale: readPref('scale', 'fit'),
  latched: new Set(), // on-screen Ctrl/Alt/Win latched for the next key
  typeConfirmed: '', // the text whose untypeable characters the visitor was told of
};

const ui = {};

function readPref(k, dflt) {
  try {
    return localStorage.getItem(`vmgw.${k}`) ?? dflt;
  } catch {
    return dflt;
  }
}
function writePref(k, v) {
  try {
    localStorage.setItem(`vmgw.${k}`, v);
  } catch {
    /* private mode */
  }
}

// ---------------------------------------------------------------------------------
// Messages: the gate (before the console) and the overlay (over the console)

/**
 * Shows a message where the visitor is: on the gate page before the console was
 * shown, over the console afterwards.
 * @param {object} m
 * @param {string} m.title
 * @param {string} [m.text]
 * @param {string} [m.detail]
 * @param {string} [m.icon] a key of ICONS ('wait' shows a spinner)
 * @param {Array<{label: string, onClick: () => void, primary?: boolean, id?: string}>} [m.actions]
 * @param {() => void} [m.tick] called every second while shown (live countdowns)
 * @param {string} [m.kind] data-kind on the card, for tests and styling
 * @param {boolean} [m.password] show the password form (gate only)
 */
function showMessage(m) {
  clearInterval(state.tickTimer);
  const inConsole = !ui.console.hidden;
  const prefix = inConsole ? 'overlay' : 'gate';
  const root = inConsole ? ui.overlay : ui.gate;
  const iconEl = $(`${prefix}-icon`);
  const iconName = m.icon ?? 'info';
  iconEl.replaceChildren(...(iconName === 'wait' ? [] : [icon(iconName)].filter(Boolean)));
  iconEl.classList.toggle('spinner', iconName === 'wait');
  iconEl.dataset.icon = iconName;
  $(`${prefix}-title`).textContent = m.title;
  $(`${prefix}-text`).textContent = m.text ?? '';
  if (!inConsole) $('gate-detail').textContent = m.detail ?? '';
  const actions = $(`${prefix}-actions`);
  actions.replaceChildren(
    ...(m.actions ?? []).map((a) =>
      h('button', { type: 'button', class: a.primary ? 'primary' : 'secondary', id: a.id, onclick: a.onClick, text: a.label }),
    ),
  );
  root.dataset.kind = m.kind ?? '';
  if (inConsole) {
    ui.overlay.hidden = false;
  } else {
    ui.pwForm.hidden = !m.password;
  }
  if (m.tick) {
    m.tick();
    state.tickTimer = setInterval(m.tick, 1000);
  }
  const focusTarget = m.password ? ui.pwInput : actions.querySelector('button.primary');
  if (focusTarget) setTimeout(() => focusTarget.focus(), 0);
}

function hideOverlay() {
  clearInterval(state.tickTimer);
  ui.overlay.hidden = true;
  ui.overlay.dataset.kind = '';
}

/** A message after which nothing reconnects by itself. */
function showFinal(m) {
  state.final = true;
  clearTimers();
  state.console?.disconnect();
  setConnBadge('ended', 'Disconnected');
  showMessage({ icon: 'stop', ...m });
}

function clearTimers() {
  clearTimeout(state.reconnectTimer);
  clearTimeout(state.pollTimer);
  state.reconnectTimer = null;
  state.pollTimer = null;
}

function toast(text, ms = 3500) {
  ui.toast.textContent = text;
  ui.toast.hidden = false;
  clearTimeout(toast.t);
  toast.t = setTimeout(() => { ui.toast.hidden = true; }, ms);
}

// Refusal texts, by the gateway's `reason`.
const REFUSALS = {
  expired: { title: 'This link has expired', text: 'The link is no longer valid. Ask the person who shared it for a new one.', kind: 'expired', icon: 'clock' },
  revoked: { title: 'This link was revoked', text: 'The person who shared this link has withdrawn it. Ask them for a new one if you still need access.', kind: 'revoked' },
  exhausted: { title: 'This link has been used up', text: 'It could be opened only a limited number of times, and all of them have been used. Ask for a new link.', kind: 'exhausted' },
  invalid_token: { title: 'This link is not valid', text: 'The address may be incomplete or mistyped. Open the link exactly as you received it.', kind: 'invalid' },
  killed: { title: 'Your session was ended', text: 'An administrator ended this console session.', kind: 'killed' },
  protocol_error: { title: 'The connection failed', text: 'The console sent or received something unexpected, and the gateway closed the connection.', kind: 'protocol' },
};

// ---------------------------------------------------------------------------------
// Token exchange

function readToken() {
  let t = location.hash.replace(/^#/, '').trim();
  try {
    t = decodeURIComponent(t);
  } catch {
    /* keep as is */
  }
  return t;
}

/**
 * POST /s/session. `interactive` is true when the visitor just typed the password.
 * @returns {Promise<boolean>} true when a session was opened
 */
async function exchange({ interactive = false } = {}) {
  const body = { token: state.token };
  if (state.password !== null) body.password = state.password;
  if (interactive) setPwBusy(true);
  const r = await fetchJSON('/s/session', { method: 'POST', body });
  if (interactive) setPwBusy(false);
  const reason = r.body?.reason ?? '';

  if (r.ok && r.body?.link_id) {
    state.session = r.body;
    return true;
  }
  if (r.status === 401) {
    if (reason === 'invalid_token') return showFinal(REFUSALS.invalid_token), false;
    if (reason === 'wrong_password' && state.password !== null) {
      state.password = null;
      askPassword('Wrong password. Check it and try again.');
      return false;
    }
    state.password = null;
    askPassword('');
    return false;
  }
  if (r.status === 403) {
    if (reason === 'not_yet_valid') return notYetValid(r.body?.opens_at), false;
    if (reason === 'viewers_full') return viewersFull(), false;
    return showFinal(REFUSALS[reason] ?? { title: 'Access refused', text: `The gateway refused this link (${reason || 'no reason given'}).` }), false;
  }
  if (r.status === 429) {
    lockedOut(reason, Number(r.body?.retry_after ?? r.headers.get('Retry-After') ?? 30));
    return false;
  }
  if (r.status === 503) {
    const wait = Math.max(1, Number(r.body?.retry_after ?? r.headers.get('Retry-After') ?? 1));
    showMessage({ icon: 'wait', title: 'The gateway is busy', text: `Trying again in ${wait} s…`, kind: 'busy' });
    await sleep(wait * 1000);
    return exchange({ interactive: false });
  }
  if (r.status === 400 || r.status === 413) {
    if (state.password !== null) {
      state.password = null;
      askPassword('That password cannot be right (it is too long or malformed).');
      return false;
    }
    return showFinal(REFUSALS.invalid_token), false;
  }
  // Network failure or a server error: offer a retry, keep the password.
  showMessage({
    icon: 'warn',
    title: r.status === 0 ? 'Cannot reach the gateway' : 'The gateway had a problem',
    text: r.status === 0 ? 'Check your network connection, then try again.' : `It answered with HTTP ${r.status}. Try again in a moment.`,
    kind: 'network',
    actions: [{ label: 'Try again', primary: true, onClick: () => openLink() }],
  });
  return false;
}

function askPassword(error) {
  ui.console.hidden = true;
  ui.gate.hidden = false;
  showMessage({ icon: 'lock', title: 'This console is protected', text: 'Enter the password you were given with the link.', password: true, kind: error ? 'wrong-password' : 'password' });
  ui.pwError.textContent = error;
  ui.pwInput.setAttribute('aria-invalid', error ? 'true' : 'false');
  ui.pwInput.disabled = false;
  ui.pwSubmit.disabled = false;
  ui.pwInput.select();
}

function setPwBusy(busy) {
  ui.pwSubmit.disabled = busy;
  ui.pwSubmit.textContent = busy ? 'Checking…' : 'Open console';
}

function lockedOut(reason, retryAfter) {
  const until = new Date(Date.now() + Math.max(1, retryAfter) * 1000);
  const lockout = reason === 'locked_out';
  ui.console.hidden = true;
  ui.gate.hidden = false;
  const hadForm = !ui.pwForm.hidden || state.password !== null || lockout;
  state.password = null;
  showMessage({
    icon: 'lock',
    title: lockout ? 'Too many wrong passwords' : 'Too many attempts',
    kind: lockout ? 'locked-out' : 'rate-limited',
    password: hadForm,
    tick: () => {
      const left = (until - Date.now()) / 1000;
      if (left <= 0) {
        $('gate-text').textContent = 'You can try again now.';
        ui.pwError.textContent = '';
        ui.pwInput.disabled = false;
        ui.pwSubmit.disabled = false;
        clearInterval(state.tickTimer);
        if (!hadForm) openLink();
        return;
      }
      $('gate-text').textContent = lockout
        ? `This link is locked for a while to protect it. You can try again at ${formatWhen(until)} (in ${formatDuration(left)}).`
        : `Please wait a moment. You can try again at ${formatWhen(until)} (in ${formatDuration(left)}).`;
    },
  });
  if (hadForm) {
    ui.pwError.textContent = '';
    ui.pwInput.value = '';
    ui.pwInput.disabled = true;
    ui.pwSubmit.disabled = true;
  }
}

function notYetValid(opensAt) {
  const at = Date.parse(opensAt ?? '');
  const known = !Number.isNaN(at);
  showFinal({
    icon: 'clock',
    title: 'This link is not open yet',
    kind: 'not-yet-valid',
    text: known ? `It opens on ${formatDate(opensAt)}.` : 'It opens later. Try again at the time you were given.',
  });
  // Not really final: open by itself when the time comes.
  state.final = false;
  if (known) {
    showMessage({
      icon: 'clock',
      title: 'This link is not open yet',
      kind: 'not-yet-valid',
      text: `It opens on ${formatDate(opensAt)}.`,
      tick: () => {
        const left = (at - Date.now()) / 1000;
        $(`${ui.console.hidden ? 'gate' : 'overlay'}-text`).textContent =
          left > 0 ? `It opens on ${formatDate(opensAt)} (in ${formatDuration(left)}). This page will open the console by itself then.` : 'Opening…';
        if (left <= -1) {
          clearInterval(state.tickTimer);
          openLink();
        }
      },
    });
  }
}

function viewersFull() {
  showMessage({
    icon: 'stop',
    title: 'No viewer slot is free',
    text: 'The most people allowed on this console at the same time are already connected. Try again when someone leaves.',
    kind: 'viewers-full',
    actions: [{ label: 'Try again', primary: true, onClick: () => (state.session ? reconnectNow() : openLink()) }],
  });
}

// ---------------------------------------------------------------------------------
// Opening the link

async function openLink() {
  state.final = false;
  clearTimers();
  showMessage({ icon: 'wait', title: 'Opening the console…', kind: 'opening' });
  if (await exchange()) await startConsole();
}

async function onPasswordSubmit(e) {
  e.preventDefault();
  const pw = ui.pwInput.value;
  if (!pw) {
    ui.pwError.textContent = 'Enter the password.';
    ui.pwInput.setAttribute('aria-invalid', 'true');
    ui.pwInput.focus();
    return;
  }
  if (new TextEncoder().encode(pw).length > 128) {
    ui.pwError.textContent = 'That password is too long (at most 128 bytes).';
    return;
  }
  ui.pwError.textContent = '';
  state.password = pw;
  if (await exchange({ interactive: true })) {
    ui.pwInput.value = '';
    await startConsole();
  }
}

// ---------------------------------------------------------------------------------
// The console

async function startConsole() {
  const s = state.session;
  const terminal = isTerminal(s.console);
  if (s.console !== 'vnc' && s.console !== 'spice' && !terminal) {
    showFinal({ title: 'This console cannot be shown here', text: `The link is for a "${s.console}" console, which a browser cannot display.`, kind: 'unsupported' });
    return;
  }
  document.title = `${s.vm} — console`;
  ui.vmName.textContent = s.vm;
  ui.viewOnlyBadge.hidden = !s.view_only;
  // Said before the console connects: everything shown and typed is recorded.
  ui.recordedBadge.hidden = !s.recorded;
  if (s.recorded) toast('This session is recorded: what you see and type is kept.', 6000);
  ui.console.classList.toggle('is-view-only', !!s.view_only);
  for (const b of [ui.btnKeys, ui.btnOsk, ui.btnType]) b.disabled = !!s.view_only;
  // A terminal has no screen to scale and no Ctrl+Alt+Del; it has a screen-reader mode.
  for (const el of [ui.btnKeys.parentElement, ui.btnOsk, $('scale-wrap')]) el.hidden = terminal;
  ui.btnSr.hidden = !terminal;
  ui.console.classList.toggle('is-terminal', terminal);
  ui.powerWrap.hidden = !s.allow_power;
  setupClipboardPanel();
  ui.gate.hidden = true;
  ui.console.hidden = false;
  startCountdown();
  try {
    state.consoleModule = terminal
      ? await import('./console/terminal.js')
      : s.console === 'vnc' ? await import('./console/vnc.js') : await import('./console/spice.js');
  } catch (err) {
    showFinal({ title: 'The console could not load', text: 'Reload the page to try again.', kind: 'load-error' });
    console.error(err);
    return;
  }
  checkAndConnect();
}

/** Asks the gateway how the link and the VM are, then connects or explains. */
async function checkAndConnect({ afterClose = null, reexchanged = false } = {}) {
  if (state.final) return;
  clearTimers();
  const s = state.session;
  const r = await fetchJSON(`/s/status/${encodeURIComponent(s.link_id)}`);
  if (state.final) return;
  const reason = r.body?.reason ?? '';
  if (r.status === 200 && r.body) {
    Object.assign(s, {
      expires_at: r.body.expires_at ?? s.expires_at,
      allow_power: r.body.allow_power ?? s.allow_power,
      view_only: r.body.view_only ?? s.view_only,
      keyboard_layout: r.body.keyboard_layout === undefined ? s.keyboard_layout : r.body.keyboard_layout,
      clipboard: r.body.clipboard ?? s.clipboard,
    });
    ui.powerWrap.hidden = !s.allow_power;
    const vm = r.body.vm_state;
    const full = r.body.max_viewers != null && r.body.viewers >= r.body.max_viewers;
    if ((vm === 'running' || vm === 'unknown' || vm === undefined) && full && !(afterClose && afterClose.opened)) {
      scheduleReconnect({
        title: 'No viewer slot is free',
        text: `This link allows ${r.body.max_viewers} viewer${r.body.max_viewers === 1 ? '' : 's'} at a time and all are in use. The page keeps trying.`,
        kind: 'viewers-full',
      });
      return;
    }
    if (vm === 'running' || vm === 'unknown' || vm === undefined) {
      if (afterClose && !afterClose.opened && ++state.failedOpens >= 3) {
        // The upgrade keeps being refused although link and VM are fine: most often
        // every viewer slot is taken, or the console socket is busy.
        scheduleReconnect({
          title: 'Cannot open the console right now',
          text: 'The link and the VM are fine, but the console refused the connection. All viewer slots may be taken.',
          kind: 'refused',
        });
        return;
      }
      connect();
      return;
    }
    vmNotRunning(vm);
    return;
  }
  if (r.status === 401) {
    if (reexchanged) {
      scheduleReconnect({ title: 'Reconnecting…', text: 'The session could not be renewed.', kind: 'reconnecting' });
      return;
    }
    // The session cookie is gone or stale: open a new one with the token still in
    // the address (and the password from memory); asks only if it is really needed.
    if (await exchange()) {
      ui.gate.hidden = true;
      ui.console.hidden = false;
      checkAndConnect({ afterClose, reexchanged: true });
    }
    return;
  }
  if (r.status === 403 && REFUSALS[reason]) {
    showFinal(REFUSALS[reason]);
    return;
  }
  if (r.status === 404 || r.status === 405) {
    // A gateway without the status endpoint: just try the console.
    connect();
    return;
  }
  if (r.status === 403 && reason === 'not_yet_valid') {
    notYetValid(r.body?.opens_at);
    return;
  }
  // Network down or gateway restarting: try again with backoff.
  scheduleReconnect({
    title: 'Connection lost',
    text: r.status === 0 ? 'The network or the gateway is unreachable.' : `The gateway answered HTTP ${r.status}.`,
    kind: 'reconnecting',
  });
}

function vmNotRunning(vm) {
  const s = state.session;
  setConnBadge('off', vm === 'paused' ? 'Paused' : 'VM off');
  const canStart = s.allow_power && vm === 'stopped';
  const words = {
    stopped: 'The virtual machine is switched off.',
    paused: 'The virtual machine is paused.',
    other: 'The virtual machine is not running right now.',
  };
  showMessage({
    icon: 'power',
    title: 'The VM is not running',
    text: `${words[vm] ?? words.other} ${canStart ? 'You can switch it on.' : 'The console connects by itself when it runs again.'}`,
    kind: 'vm-off',
    actions: canStart ? [{ label: 'Power on', primary: true, id: 'power-on', onClick: powerOn }] : [],
  });
  state.pollTimer = setTimeout(() => checkAndConnect(), 3000);
}

async function powerOn() {
  clearTimers();
  const btn = document.getElementById('power-on');
  if (btn) btn.disabled = true;
  showMessage({ icon: 'wait', title: 'Switching the VM on…', text: 'The console appears as soon as the VM runs.', kind: 'powering-on' });
  const r = await power('start');
  if (r) state.pollTimer = setTimeout(() => checkAndConnect(), 1500);
}

async function power(action) {
  const s = state.session;
  const r = await fetchJSON(`/s/power/${encodeURIComponent(s.link_id)}`, { method: 'POST', body: { action } });
  if (r.ok) return r.body ?? {};
  const reason = r.body?.reason ?? r.body?.message ?? '';
  if (r.status === 403 && reason === 'power_not_allowed') {
    s.allow_power = false;
    ui.powerWrap.hidden = true;
    toast('This link does not allow power actions.');
  } else if (r.status === 403 && REFUSALS[reason]) {
    showFinal(REFUSALS[reason]);
  } else if (r.status === 401) {
    if (await exchange()) return power(action);
  } else {
    toast(r.status === 409 ? 'The VM cannot do that right now.' : `Power action failed (${r.status || 'network error'}).`);
    if (!ui.overlay.hidden) checkAndConnect();
  }
  return null;
}

function wsURL(path) {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${proto}//${location.host}${path}`;
}

function connect() {
  if (state.final) return;
  state.console?.disconnect();
  ui.screen.replaceChildren();
  ui.desktopName.textContent = '';
  setConnBadge('connecting', 'Connecting…');
  const s = state.session;
  if (state.everConnected) {
    showMessage({ icon: 'wait', title: 'Reconnecting…', kind: 'reconnecting' });
  } else {
    showMessage({ icon: 'wait', title: 'Connecting to the console…', kind: 'connecting' });
  }
  const Ctor = isTerminal(s.console)
    ? state.consoleModule.TerminalConsole
    : s.console === 'vnc' ? state.consoleModule.VncConsole : state.consoleModule.SpiceConsole;
  const c = new Ctor(ui.screen, {
    url: wsURL(s.ws_path),
    viewOnly: !!s.view_only,
    layout: resolveLayout(s.keyboard_layout),
    screenReader: readPref('screenReader', 'off') === 'on',
    onConnect: () => {
      if (state.console !== c) return;
      state.backoff = 0;
      state.failedOpens = 0;
      state.everConnected = true;
      ui.console.dataset.connected = 'true';
      setConnBadge('ok', 'Connected');
      hideOverlay();
      c.setScale(state.scale);
      setTimeout(updateScaleOptions, 800);
      if (!s.view_only) c.focus();
    },
    onClipboard: (text) => {
      if (state.console !== c) return;
      onGuestClipboard(text);
    },
    onDesktopName: (name) => {
      // From the VM: text only.
      ui.desktopName.textContent = name;
      ui.desktopName.title = name;
    },
    onClose: (info) => {
      if (state.console !== c) return;
      ui.console.dataset.connected = 'false';
      onConsoleClosed(info);
    },
  });
  state.console = c;
  try {
    c.connect();
  } catch (err) {
    console.warn('console connect failed', err);
    onConsoleClosed({ code: 1006, reason: '', opened: false });
  }
}

function onConsoleClosed(info) {
  if (state.final) return;
  const { code } = info;
  switch (code) {
    case 4001:
      return showFinal(REFUSALS.revoked);
    case 4002:
      return showFinal(REFUSALS.expired);
    case 4003:
      return showFinal(REFUSALS.killed);
    case 4008:
      setConnBadge('ended', 'Disconnected');
      return showMessage({
        icon: 'clock',
        title: 'Disconnected after a while without activity',
        text: 'The console was idle for too long.',
        kind: 'idle',
        actions: [{ label: 'Reconnect', primary: true, onClick: reconnectNow }],
      });
    case 4009:
      setConnBadge('ended', 'Disconnected');
      return viewersFull();
    case 4010:
      // The VM stopped or rebooted: look, then offer power-on or reconnect.
      setConnBadge('connecting', 'Console closed');
      showMessage({ icon: 'wait', title: 'The console closed', text: 'The VM may be restarting. Checking…', kind: 'console-closed' });
      state.pollTimer = setTimeout(() => checkAndConnect({ afterClose: { ...info, opened: true } }), 1000);
      return;
    case 4011:
      return showFinal({ title: 'This link is view only', text: 'The console refused input from this view-only link.', kind: 'view-only' });
    case 4012:
      return showFinal({ title: 'The session ended', text: 'This session is recorded, and the recording could not go on (for example the recordings storage is full), so the session was ended.', kind: 'recording-failed' });
    case 1008:
      return showFinal(REFUSALS.protocol_error);
    default:
      break;
  }
  // Clock says the link is over: do not try again.
  if (secondsUntil(state.session.expires_at) <= 0) return showFinal(REFUSALS.expired);
  setConnBadge('connecting', 'Reconnecting…');
  const restarting = code === 1001;
  scheduleReconnect({
    title: restarting ? 'The gateway is restarting' : 'Connection lost',
    text: restarting ? 'Reconnecting as soon as it is back.' : 'Reconnecting by itself; no need to enter the password again.',
    kind: 'reconnecting',
    afterClose: info,
  });
}

function scheduleReconnect({ title, text, kind, afterClose = null }) {
  if (state.final) return;
  clearTimers();
  const delays = [1, 2, 4, 8, 15, 30];
  const wait = delays[Math.min(state.backoff, delays.length - 1)];
  state.backoff++;
  const at = Date.now() + wait * 1000;
  showMessage({
    icon: 'wait',
    title,
    kind,
    actions: [{ label: 'Reconnect now', primary: true, onClick: reconnectNow }],
    tick: () => {
      const left = Math.max(0, Math.ceil((at - Date.now()) / 1000));
      $('overlay-text').textContent = `${text} Next try in ${left} s.`;
    },
  });
  state.reconnectTimer = setTimeout(() => checkAndConnect({ afterClose }), wait * 1000);
}

function reconnectNow() {
  if (state.final) return;
  clearTimers();
  state.failedOpens = 0;
  showMessage({ icon: 'wait', title: 'Reconnecting…', kind: 'reconnecting' });
  checkAndConnect();
}

function setConnBadge(kind, text) {
  ui.connBadge.textContent = text;
  ui.connBadge.dataset.state = kind;
}

// ---------------------------------------------------------------------------------
// Countdown until the link expires

function startCountdown() {
  clearInterval(startCountdown.t);
  const update = () => {
    const s = state.session;
    if (!s) return;
    const left = secondsUntil(s.expires_at);
    if (Number.isNaN(left)) {
      ui.countdown.textContent = '';
      return;
    }
    if (left <= 0) {
      ui.countdown.textContent = 'Link expired';
      ui.countdown.dataset.level = 'over';
      // The gateway closes the console with "expired"; if that close is lost, end
      // the session here a little later.
      if (!state.final && left < -5) showFinal(REFUSALS.expired);
      return;
    }
    ui.countdown.textContent = `${formatDuration(left)} left`;
    ui.countdown.title = `This link expires on ${formatDate(s.expires_at)}`;
    ui.countdown.dataset.level = left < 300 ? 'warn' : left < 3600 ? 'soon' : '';
  };
  update();
  startCountdown.t = setInterval(update, 1000);
}

// ---------------------------------------------------------------------------------
// Toolbar

/** Serial and raw links are byte streams, shown in a terminal. */
function isTerminal(kind) {
  return kind === 'serial' || kind === 'raw';
}

function setupToolbar() {
  // Keys menu.
  const fkeys = $('fkeys');
  for (let n = 1; n <= 12; n++) {
    fkeys.append(h('button', { type: 'button', role: 'menuitem', 'data-fkey': String(n), 'aria-label': `Ctrl+Alt+F${n}`, text: `F${n}` }));
  }
  setupMenu(ui.btnKeys, $('keys-menu'), (item) => {
    if (item.dataset.combo === 'cad') state.console?.ctrlAltDel();
    else if (item.dataset.fkey) state.console?.combo(ctrlAltF(Number(item.dataset.fkey)));
    state.console?.focus();
  });
  setupMenu($('btn-power'), $('power-menu'), async (item) => {
    const action = item.dataset.power;
    const words = { shutdown: 'Ask the guest to shut down?', reset: 'Reset the VM? Unsaved work in it is lost.', poweroff: 'Power the VM off at once? Unsaved work in it is lost.' };
    if (!window.confirm(words[action])) return;
    const r = await power(action);
    if (r) toast(action === 'shutdown' ? 'Shutdown requested.' : action === 'reset' ? 'The VM is resetting.' : 'The VM was powered off.');
  });

  // Scaling.
  ui.scale.value = state.scale === 'remote' ? 'fit' : state.scale;
  ui.scale.addEventListener('change', () => {
    state.scale = ui.scale.value;
    writePref('scale', state.scale);
    state.console?.setScale(state.scale);
  });

  // Full screen.
  if (!document.fullscreenEnabled) {
    ui.btnFullscreen.hidden = true;
  }
  ui.btnFullscreen.addEventListener('click', async () => {
    try {
      if (document.fullscreenElement) await document.exitFullscreen();
      else await ui.console.requestFullscreen({ navigationUI: 'hide' });
    } catch {
      toast('Full screen is not available here.');
    }
  });
  document.addEventListener('fullscreenchange', () => {
    const on = !!document.fullscreenElement;
    ui.btnFullscreen.setAttribute('aria-pressed', String(on));
    ui.btnFullscreen.querySelector('.tb-label').textContent = on ? 'Exit full screen' : 'Full screen';
    setTimeout(() => state.console?.applyScale?.(), 100);
  });

  // Screen-reader mode of the terminal (remembered).
  const srOn = () => readPref('screenReader', 'off') === 'on';
  ui.btnSr.setAttribute('aria-pressed', String(srOn()));
  ui.btnSr.addEventListener('click', () => {
    const on = !srOn();
    writePref('screenReader', on ? 'on' : 'off');
    ui.btnSr.setAttribute('aria-pressed', String(on));
    state.console?.setScreenReader?.(on);
    toast(on ? 'Screen-reader mode on.' : 'Screen-reader mode off.');
  });

  // On-screen keyboard and extra keys.
  setupKeyRow();
  ui.btnOsk.addEventListener('click', () => {
    const show = ui.keyrow.hidden;
    ui.keyrow.hidden = !show;
    ui.btnOsk.setAttribute('aria-pressed', String(show));
    if (show) ui.oskInput.focus();
    else state.console?.focus();
    setTimeout(() => state.console?.applyScale?.(), 50);
  });

  // Type text.
  ui.btnType.addEventListener('click', () => {
    $('type-note').textContent = '';
    state.typeConfirmed = '';
    $('type-layout').textContent = layoutLabel(resolveLayout(state.session?.keyboard_layout));
    ui.typeDialog.showModal();
    ui.typeText.focus();
  });
  $('type-cancel').addEventListener('click', () => ui.typeDialog.close());
  $('type-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const text = ui.typeText.value;
    if (!text) {
      $('type-note').textContent = 'Nothing to type.';
      return;
    }
    if (!state.console?.connected) {
      $('type-note').textContent = 'The console is not connected.';
      return;
    }
    // Characters the guest's layout has no keys for are named first; a second press
    // types the rest.
    const missing = state.console.untypeable(text);
    if (missing.length && state.typeConfirmed !== text) {
      state.typeConfirmed = text;
      $('type-note').textContent = `${cannotType(missing)} Press “Type it” again to type the rest without them.`;
      return;
    }
    ui.typeDialog.close();
    state.console.focus();
    const left = await state.console.typeText(text);
    ui.typeText.value = '';
    toast(left.length ? `Typed, without ${left.length} character(s): ${quoteChars(left)}.` : 'Typed.');
  });
}

/** The characters the guest's layout cannot type, in words. */
function cannotType(chars) {
  const layout = layoutLabel(state.console?.layout ?? resolveLayout(state.session?.keyboard_layout));
  return `The keyboard layout ${layout} has no keys for ${quoteChars(chars)}.`;
}

function quoteChars(chars) {
  return chars.map((c) => (c === ' ' ? '“ ”' : `“${c}” (U+${c.codePointAt(0).toString(16).toUpperCase().padStart(4, '0')})`)).join(', ');
}

// ---------------------------------------------------------------------------------
// The clipboard panel. The gateway enforces the link's policy; the panel only shows
// what it allows: `from_guest` (text copied in the VM appears here), `to_guest` (text
// pasted here goes to the VM's clipboard), both or none.

function clipboardPolicy() {
  const s = state.session;
  if (s.console !== 'vnc' && s.console !== 'spice') return 'none';
  return s.clipboard ?? 'none';
}

function setupClipboardPanel() {
  const p = clipboardPolicy();
  const from = p === 'from_guest' || p === 'both';
  const to = p === 'to_guest' || p === 'both';
  $('btn-clip').hidden = !from && !to;
  $('clip-from').hidden = !from;
  $('clip-to').hidden = !to;
  $('clip-policy').textContent = {
    both: 'This link shares the clipboard both ways (VNC and SPICE consoles). The VM needs a clipboard agent (spice-vdagent).',
    from_guest: 'Text copied in the VM appears here. This link does not allow pasting into the VM\'s clipboard.',
    to_guest: 'Text you paste here goes to the VM\'s clipboard. This link does not let text copied in the VM out.',
  }[p] ?? '';
  $('clip-dialog').dataset.policy = p;
}

async function onGuestClipboard(text) {
  state.guestClipboard = text;
  $('clip-guest').value = text;
  // Into the visitor's own clipboard where the browser lets a page write without a
  // gesture (it mostly does not: then the panel's button does it).
  try {
    await navigator.clipboard?.writeText(text);
    toast('Text copied in the VM is in your clipboard (and in the clipboard panel).');
  } catch {
    toast('Text copied in the VM is in the clipboard panel.');
  }
}

function setupClipboardControls() {
  $('btn-clip').addEventListener('click', () => {
    // SPICE: the guest's agent speaks on the SPICE console only on SPICE-only VMs.
    const c = state.console;
    $('clip-note').textContent = c?.kind === 'spice' && c.connected && !c.clipboardAgent
      ? 'No clipboard agent answers on this SPICE console (a VM with both VNC and SPICE has its clipboard on VNC).'
      : '';
    $('clip-guest').value = state.guestClipboard ?? '';
    $('clip-dialog').showModal();
    (clipboardPolicy() === 'from_guest' ? $('clip-copy') : $('clip-send')).focus();
  });
  $('clip-close').addEventListener('click', () => $('clip-dialog').close());
  $('clip-copy').addEventListener('click', async () => {
    const text = $('clip-guest').value;
    try {
      await navigator.clipboard.writeText(text);
      $('clip-note').textContent = 'Copied to your clipboard.';
    } catch {
      $('clip-guest').select();
      $('clip-note').textContent = 'Your browser does not let the page copy: press Ctrl+C.';
    }
  });
  $('clip-go').addEventListener('click', () => {
    const text = $('clip-send').value;
    if (!text) {
      $('clip-note').textContent = 'Nothing to send.';
      return;
    }
    if (!state.console?.connected || !state.console.clipboardPaste) {
      $('clip-note').textContent = 'The console is not connected.';
      return;
    }
    state.console.clipboardPaste(text);
    $('clip-note').textContent = 'Sent. Paste it in the VM as usual (e.g. Ctrl+V).';
  });
}

/** A toolbar button with a popup menu of buttons. */
function setupMenu(button, menu, onPick) {
  const close = () => {
    menu.hidden = true;
    button.setAttribute('aria-expanded', 'false');
  };
  button.addEventListener('click', (e) => {
    e.stopPropagation();
    const open = menu.hidden;
    for (const m of document.querySelectorAll('.menu')) m.hidden = true;
    menu.hidden = !open;
    button.setAttribute('aria-expanded', String(open));
    if (open) menu.querySelector('button')?.focus();
  });
  menu.addEventListener('click', (e) => {
    const item = e.target.closest('button');
    if (!item) return;
    close();
    onPick(item);
  });
  menu.addEventListener('keydown', (e) => {
    const items = [...menu.querySelectorAll('button')];
    const i = items.indexOf(document.activeElement);
    if (e.key === 'Escape') {
      close();
      button.focus();
    } else if (e.key === 'ArrowDown' || e.key === 'ArrowRight') {
      items[(i + 1) % items.length].focus();
      e.preventDefault();
    } else if (e.key === 'ArrowUp' || e.key === 'ArrowLeft') {
      items[(i - 1 + items.length) % items.length].focus();
      e.preventDefault();
    }
  });
  document.addEventListener('click', (e) => {
    if (!menu.hidden && !menu.contains(e.target)) close();
  });
}

function setupKeyRow() {
  const row = ui.keyrow;
  const mods = Object.entries(MODIFIERS).map(([name, k]) =>
    h('button', { type: 'button', class: 'key key-mod', 'data-mod': name, 'aria-pressed': 'false', text: k.label }),
  );
  const keys = Object.entries(SPECIAL_KEYS).map(([name, k]) =>
    h('button', { type: 'button', class: 'key', 'data-key': name, 'aria-label': name, text: k.label }),
  );
  row.prepend(...mods, ...keys);
  // Keep the focus (and so the phone's keyboard) in the input while tapping keys.
  row.addEventListener('pointerdown', (e) => {
    if (e.target.closest('button')) e.preventDefault();
  });
  row.addEventListener('click', (e) => {
    const b = e.target.closest('button');
    if (!b) return;
    if (b.dataset.mod) {
      const on = !state.latched.has(b.dataset.mod);
      if (on) state.latched.add(b.dataset.mod);
      else state.latched.delete(b.dataset.mod);
      b.setAttribute('aria-pressed', String(on));
      return;
    }
    pressWithLatched(SPECIAL_KEYS[b.dataset.key]);
  });
  const input = ui.oskInput;
  input.addEventListener('keydown', (e) => {
    const special = { Backspace: 'Backspace', Enter: 'Enter', Tab: 'Tab', Escape: 'Escape', ArrowLeft: 'ArrowLeft', ArrowRight: 'ArrowRight', ArrowUp: 'ArrowUp', ArrowDown: 'ArrowDown', Delete: 'Delete' }[e.key];
    if (special) {
      e.preventDefault();
      pressWithLatched(SPECIAL_KEYS[special]);
    }
  });
  input.addEventListener('input', () => {
    const text = input.value;
    input.value = '';
    if (!text || !state.console) return;
    if (state.latched.size && [...text].length === 1) {
      const key = latchedKey(text);
      if (key) {
        pressWithLatched(key);
        return;
      }
    }
    state.console.typeText(text).then((left) => {
      if (left.length) toast(cannotType(left));
    });
  });
}

/**
 * One character as keys to press with the latched modifiers: on the guest's layout
 * (its key and its Shift/AltGr) when the console takes scancodes, else as a keysym.
 */
function latchedKey(ch) {
  const c = state.console;
  const strokes = c?.kind === 'spice' || c?.scancodes ? strokesFor(ch, c.layout) : null;
  if (strokes?.length === 1) {
    const s = strokes[0];
    const keys = [];
    if (s.shift) keys.push({ keysym: 0xffe1, code: 'ShiftLeft', scancode: SCAN.ShiftLeft });
    if (s.altgr) keys.push({ keysym: 0xfe03, code: 'AltRight', scancode: SCAN.AltRight });
    keys.push({ keysym: s.keysym, code: scancodeToCode(s.scancode), scancode: s.scancode });
    return keys;
  }
  if (c?.kind === 'spice' || c?.scancodes) return null;
  const k = charToKey(ch);
  return k ? [{ keysym: k.keysym, code: null, scancode: null }] : null;
}

/** Presses a key (or `[keys]`, in order) with the latched modifiers. */
function pressWithLatched(key) {
  const c = state.console;
  if (!c) return;
  const mods = [...state.latched].map((m) => MODIFIERS[m]);
  c.combo([...mods, ...(Array.isArray(key) ? key : [key])]);
  state.latched.clear();
  for (const b of ui.keyrow.querySelectorAll('.key-mod')) b.setAttribute('aria-pressed', 'false');
}

function updateScaleOptions() {
  const opt = ui.scale.querySelector('option[value="remote"]');
  const ok = !!state.console?.supportsResize;
  opt.disabled = !ok;
  opt.hidden = state.console?.kind === 'spice';
  opt.title = ok ? '' : 'The VM does not support resizing its screen from here';
  if (!ok && ui.scale.value === 'remote') {
    ui.scale.value = 'fit';
    state.console?.setScale('fit');
  } else if (ok && state.scale === 'remote' && ui.scale.value !== 'remote') {
    ui.scale.value = 'remote';
    state.console?.setScale('remote');
  }
}

// ---------------------------------------------------------------------------------

function init() {
  for (const id of ['gate', 'console', 'overlay', 'screen', 'toast', 'keyrow', 'countdown', 'vm-name', 'desktop-name', 'view-only-badge', 'recorded-badge', 'conn-badge',
    'pw-form', 'pw-input', 'pw-error', 'pw-submit', 'pw-show', 'btn-keys', 'btn-osk', 'btn-type', 'btn-sr', 'btn-fullscreen', 'power-wrap', 'osk-input', 'type-dialog', 'type-text']) {
    ui[id.replace(/-(\w)/g, (_, c) => c.toUpperCase())] = $(id);
  }
  ui.scale = $('scale-select');
  ui.pwForm.addEventListener('submit', onPasswordSubmit);
  ui.pwShow.addEventListener('click', () => {
    const show = ui.pwInput.type === 'password';
    ui.pwInput.type = show ? 'text' : 'password';
    ui.pwShow.textContent = show ? 'Hide' : 'Show';
    ui.pwShow.setAttribute('aria-pressed', String(show));
    ui.pwInput.focus();
  });
  ui.pwInput.addEventListener('input', () => {
    ui.pwError.textContent = '';
    ui.pwInput.setAttribute('aria-invalid', 'false');
  });
  setupToolbar();
  setupClipboardControls();
  window.addEventListener('online', () => {
    if (state.reconnectTimer) reconnectNow();
  });
  window.addEventListener('hashchange', () => location.reload());

  state.token = readToken();
  if (!state.token) {
    showFinal({
      title: 'This link is incomplete',
      text: 'The address has no access code after the “#”. Open the link exactly as you received it.',
      kind: 'no-token',
    });
    return;
  }
  openLink();
}

init();
