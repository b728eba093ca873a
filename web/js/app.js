// app.js — the web app's start: who is logged in (or the login form), the
// feed into the store, the alerts in view, and the views by URL hash
// (#/pool, #/new, #/sessions, #/sessions/ID).
import { api, Feed } from './api.js';
import { store, apply, listen } from './store.js';
import { el, ago, say } from './ui.js';
import { poolView } from './pool.js';
import { newSessionView, sessionView, sessionsView } from './sessions.js';

const main = document.getElementById('main');
const alertsBox = document.getElementById('alerts');
const feedStatus = document.getElementById('feed-status');
let view = null;

function go(hash) {
  if (location.hash === hash) route(); else location.hash = hash;
}

function route() {
  if (view) view.destroy();
  const hash = location.hash || '#/pool';
  const m = hash.match(/^#\/sessions\/(.+)$/);
  for (const a of document.querySelectorAll('nav a')) {
    a.toggleAttribute('aria-current', hash.startsWith(a.getAttribute('href')) && !(m && a.dataset.nav !== 'sessions'));
  }
  let id = null;
  try { id = m && decodeURIComponent(m[1]); } catch (e) { id = null; } // a malformed hash
  if (id) view = sessionView(main, id);
  else if (hash === '#/new') view = newSessionView(main, go);
  else if (hash === '#/sessions') view = sessionsView(main);
  else view = poolView(main);
}

function renderAlerts() {
  const order = { error: 0, warning: 1 };
  const list = [...store.alerts].sort((a, b) => order[a.severity] - order[b.severity] || b.since_ns - a.since_ns);
  if (!list.length) { alertsBox.replaceChildren(); return; }
  const shown = list.slice(0, 8);
  alertsBox.replaceChildren(el('details', { open: list.some((a) => a.severity === 'error') },
    el('summary', {}, `${list.length} alert${list.length > 1 ? 's' : ''}`),
    el('ul', {}, ...shown.map((a) => el('li', { class: `alert alert-${a.severity}`, 'data-kind': a.kind },
      el('strong', {}, a.kind.replaceAll('_', ' ')), ` ${a.message} (${ago(a.since_ns)})`))),
    list.length > shown.length ? el('p', {}, `and ${list.length - shown.length} more`) : ''));
}

function loginForm(message) {
  const status = el('p', { role: 'status', class: 'status' }, message || '');
  const token = el('input', { id: 'token', type: 'password', autocomplete: 'current-password', required: true });
  const form = el('form', {
    id: 'login',
    onsubmit: async (e) => {
      e.preventDefault();
      try {
        await api('POST', '/login', { token: token.value });
        token.value = '';
        window.msrsStore = store; // for bench/bench_gateway.py
boot();
      } catch (err) { say(status, err.message, true); }
    },
  }, el('div', { class: 'field' }, el('label', { for: 'token' }, 'Operator token'), token,
    el('small', {}, 'msrs operators token NAME --role viewer|operator|admin')),
  el('button', { type: 'submit' }, 'Log in'));
  main.replaceChildren(el('h2', {}, 'Log in'), form, status);
}

async function boot() {
  try {
    store.me = await api('GET', '/me');
  } catch (e) {
    feedStatus.textContent = '';
    loginForm(e.status === 401 ? '' : e.message);
    return;
  }
  document.getElementById('who').textContent = `${store.me.name} (${store.me.role})`;
  const logout = document.getElementById('logout');
  logout.hidden = !store.me.auth_required;
  logout.onclick = async () => { await api('POST', '/logout'); location.reload(); };
  listen((what) => {
    if (view) view.update(what);
    if (what.alerts) renderAlerts();
  });
  const feed = new Feed(apply, (text, ok) => {
    feedStatus.textContent = text;
    feedStatus.classList.toggle('error', !ok);
    // a feed refused because the login expired: back to the login form
    if (!ok) api('GET', '/me').catch((e) => { if (e.status === 401) location.reload(); });
  });
  feed.start();
  window.addEventListener('hashchange', route);
  route();
  setInterval(renderAlerts, 10000); // the "ago" of each alert
}

window.msrsStore = store; // for bench/bench_gateway.py
boot();
